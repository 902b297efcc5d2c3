#include "experts/steer.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "model/observers.h"
#include "util/parallel.h"

namespace selfcond {
namespace {

// The distinct lower-cased ASCII-letter words (>= 3 letters) of a sentence.
std::set<std::string> SentenceWords(const std::string& s) {
  std::set<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    if (!absl::ascii_isalpha(static_cast<unsigned char>(s[i]))) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < s.size() && absl::ascii_isalpha(static_cast<unsigned char>(s[j]))) ++j;
    // A word glued to other word characters (digits, '_', non-ASCII letters) is not a word.
    const bool glued_before = i > 0 && (static_cast<unsigned char>(s[i - 1]) >= 0x80 ||
                                        absl::ascii_isdigit(s[i - 1]) || s[i - 1] == '_');
    const bool glued_after = j < s.size() && (static_cast<unsigned char>(s[j]) >= 0x80 ||
                                              absl::ascii_isdigit(s[j]) || s[j] == '_');
    if (j - i >= 3 && !glued_before && !glued_after) {
      out.insert(absl::AsciiStrToLower(absl::string_view(s.data() + i, j - i)));
    }
    i = j;
  }
  return out;
}

// English function words (NLTK's stop-word list, lower-case, 3+ letters): on a small dataset
// they can still lean toward the positives ("and", "with" in recipes), and the unconditioned model
// writes them all the time, so they would make a useless concept rate and bias.
bool IsStopWord(const std::string& w) {
  static const std::set<std::string> kStop = {
      "about",   "above",   "after",  "again",   "against", "ain",       "all",        "and",
      "any",     "are",     "aren",   "because", "been",    "before",    "being",      "below",
      "between", "both",    "but",    "can",     "couldn",  "did",       "didn",       "does",
      "doesn",   "doing",   "don",    "down",    "during",  "each",      "few",        "for",
      "from",    "further", "had",    "hadn",    "has",     "hasn",      "have",       "haven",
      "having",  "her",     "here",   "hers",    "herself", "him",       "himself",    "his",
      "how",     "into",    "isn",    "its",     "itself",  "just",      "mightn",     "more",
      "most",    "mustn",   "myself", "needn",   "nor",     "not",       "now",        "off",
      "once",    "only",    "other",  "our",     "ours",    "ourselves", "out",        "over",
      "own",     "same",    "shan",   "she",     "should",  "shouldn",   "some",       "such",
      "than",    "that",    "the",    "their",   "theirs",  "them",      "themselves", "then",
      "there",   "these",   "they",   "this",    "those",   "through",   "too",        "under",
      "until",   "very",    "was",    "wasn",    "were",    "weren",     "what",       "when",
      "where",   "which",   "while",  "who",     "whom",    "why",       "will",       "with",
      "won",     "wouldn",  "you",    "your",    "yours",   "yourself",  "yourselves"};
  return kStop.count(w) > 0;
}

}  // namespace

std::vector<ConceptWord> ConceptWords(const Dataset& dataset, int max_words, int min_positive) {
  std::map<std::string, std::pair<int, int>> counts;  // word -> (positive, negative) sentences
  for (const auto& s : dataset.positive) {
    for (const auto& w : SentenceWords(s)) ++counts[w].first;
  }
  for (const auto& s : dataset.negative) {
    for (const auto& w : SentenceWords(s)) ++counts[w].second;
  }
  const double P = static_cast<double>(dataset.positive.size());
  const double N = static_cast<double>(dataset.negative.size());
  std::vector<ConceptWord> out;
  for (const auto& [word, pn] : counts) {
    if (pn.first < std::max(1, min_positive) || IsStopWord(word)) continue;
    const double p = pn.first, n = pn.second;
    const double lo = std::log((p + 1) / (P - p + 1)) - std::log((n + 1) / (N - n + 1));
    if (lo > 0) out.push_back({word, lo, pn.first, pn.second});  // more typical of positives
  }
  std::sort(out.begin(), out.end(), [](const ConceptWord& a, const ConceptWord& b) {
    return a.log_odds != b.log_odds ? a.log_odds > b.log_odds : a.word < b.word;
  });
  if (max_words >= 0 && out.size() > static_cast<size_t>(max_words)) out.resize(max_words);
  return out;
}

absl::StatusOr<std::vector<float>> ComputeSteeringVector(const Model& model, const Dataset& dataset,
                                                         int layer, Precision precision,
                                                         ThreadPool* pool) {
  const ModelConfig& c = model.config();
  if (layer < 0 || layer >= static_cast<int>(c.n_layer)) {
    return absl::OutOfRangeError(
        absl::StrCat("steering layer ", layer, " out of range [0, ", c.n_layer, ")"));
  }
  if (auto st = ValidateDataset(dataset); !st.ok()) return st;
  const size_t d = c.n_embd;
  std::vector<const std::string*> sentences;
  for (const auto& s : dataset.positive) sentences.push_back(&s);
  for (const auto& s : dataset.negative) sentences.push_back(&s);
  const size_t num_pos = dataset.positive.size();
  const int workers = pool ? std::max(1, pool->size()) : 1;
  // Per worker: the sums of per-sentence mean residuals, positives and negatives.
  std::vector<std::vector<double>> sum_pos(workers, std::vector<double>(d, 0.0));
  std::vector<std::vector<double>> sum_neg(workers, std::vector<double>(d, 0.0));
  SessionOptions so;
  so.precision = precision;
  auto st = ForEachWorkerSession(model, so, pool, [&](int w, Session& session) {
    std::vector<double> acc(d);
    for (size_t i = w; i < sentences.size(); i += workers) {
      // The template's prefix (BOS) runs first, outside the mean: it belongs to no sentence.
      const std::vector<int32_t>& prefix = model.tokenizer().prefix();
      std::vector<int32_t> ids = model.tokenizer().Encode(*sentences[i]);
      if (ids.size() + prefix.size() > c.n_ctx) ids.resize(c.n_ctx - prefix.size());
      if (ids.empty()) continue;  // ValidateDataset refuses empty sentences; kept for safety
      std::fill(acc.begin(), acc.end(), 0.0);
      session.Reset();
      if (!prefix.empty()) {
        if (auto p = session.Forward(prefix, Session::Logits::kNone); !p.ok()) return p.status();
      }
      ResidualSumObserver observer(layer, static_cast<int>(d), acc.data());
      session.SetObserver(&observer);
      auto fwd = session.Forward(ids, Session::Logits::kNone);
      session.SetObserver(nullptr);
      if (!fwd.ok()) return fwd.status();
      std::vector<double>& sum = i < num_pos ? sum_pos[w] : sum_neg[w];
      for (size_t j = 0; j < d; ++j) sum[j] += acc[j] / static_cast<double>(ids.size());
    }
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  std::vector<float> v(d);
  for (size_t j = 0; j < d; ++j) {
    double p = 0, n = 0;
    for (int w = 0; w < workers; ++w) {
      p += sum_pos[w][j];
      n += sum_neg[w][j];
    }
    v[j] = static_cast<float>(p / static_cast<double>(num_pos) -
                              n / static_cast<double>(dataset.negative.size()));
  }
  return v;
}

Session::Steering ScaledSteering(int layer, absl::Span<const float> vector, double alpha) {
  Session::Steering s;
  if (vector.empty()) return s;
  s.layer = layer;
  s.add.reserve(vector.size());
  for (float x : vector) s.add.push_back(static_cast<float>(alpha * x));
  return s;
}

double SteeringNorm(absl::Span<const float> vector) {
  double sq = 0;
  for (float x : vector) sq += static_cast<double>(x) * x;
  return std::sqrt(sq);
}

std::vector<int32_t> WordTokens(const Tokenizer& tokenizer, const std::string& form) {
  // GPT-2's byte-level BPE encodes " word" on its own exactly as inside a text. A
  // SentencePiece-style tokenizer.json would not (it prepends "▁" to the whole text): the form's
  // tokens there are those "a" + form adds to "a" alone.
  if (std::string_view(tokenizer.kind()) == "gpt2-bpe") return tokenizer.Encode(form);
  const std::vector<int32_t> anchor = tokenizer.Encode("a");
  std::vector<int32_t> ids = tokenizer.Encode("a" + form);
  if (ids.size() <= anchor.size() || !std::equal(anchor.begin(), anchor.end(), ids.begin())) {
    return {};  // the form merged with the anchor: no stand-alone token sequence
  }
  ids.erase(ids.begin(), ids.begin() + anchor.size());
  return ids;
}

std::vector<std::pair<int32_t, float>> WordLogitBias(const Tokenizer& tokenizer,
                                                     absl::Span<const ConceptWord> words,
                                                     float beta) {
  std::vector<std::pair<int32_t, float>> out;
  std::set<int32_t> seen;
  for (const auto& w : words) {
    std::string cap = w.word;
    if (!cap.empty()) cap[0] = absl::ascii_toupper(static_cast<unsigned char>(cap[0]));
    for (const std::string& form : {" " + w.word, " " + cap}) {
      const auto ids = WordTokens(tokenizer, form);
      if (ids.size() == 1 && seen.insert(ids[0]).second) out.push_back({ids[0], beta});
    }
  }
  return out;
}

absl::StatusOr<std::vector<std::pair<int32_t, float>>> ConceptLogitBias(
    const Tokenizer& tokenizer, const Dataset& dataset, int max_words, float beta,
    std::vector<ConceptWord>* words_out) {
  if (!std::isfinite(beta)) return absl::InvalidArgumentError("the logit bias must be finite");
  std::vector<ConceptWord> words = ConceptWords(dataset, max_words);
  if (words.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "concept '", dataset.concept,
        "' yields no concept words (words of 3+ letters in at least 3 positive sentences, more "
        "frequent there than in the negatives): a logit bias would bias nothing; use more "
        "positive sentences"));
  }
  auto bias = WordLogitBias(tokenizer, words, beta);
  if (bias.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "none of concept '", dataset.concept, "''s ", words.size(),
        " concept words is a single token of this model's tokenizer: a logit bias would bias "
        "nothing"));
  }
  if (words_out != nullptr) *words_out = std::move(words);
  return bias;
}

}  // namespace selfcond
