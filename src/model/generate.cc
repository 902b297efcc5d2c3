#include "model/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "util/utf8.h"

namespace selfcond {

absl::Status ValidateSampling(const SamplingOptions& o) {
  if (!std::isfinite(o.temperature) || o.temperature < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be >= 0 (0 = greedy), got ", o.temperature));
  }
  if (o.top_k < 0)
    return absl::InvalidArgumentError(absl::StrCat("top-k must be >= 0, got ", o.top_k));
  if (!(o.top_p > 0 && o.top_p <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("top-p must be in (0, 1], got ", o.top_p));
  }
  return absl::OkStatus();
}

absl::Status ValidateGenerate(const GenerateOptions& o) {
  if (auto st = ValidateSampling(o.sampling); !st.ok()) return st;
  if (o.max_new_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max new tokens must be >= 0, got ", o.max_new_tokens));
  }
  if (o.stop_strings.size() > kMaxStopStrings) {
    return absl::InvalidArgumentError(
        absl::StrCat("stop strings: ", o.stop_strings.size(), " given, at most ", kMaxStopStrings));
  }
  for (size_t i = 0; i < o.stop_strings.size(); ++i) {
    const std::string& t = o.stop_strings[i];
    if (t.empty() || t.size() > kMaxStopStringBytes) {
      return absl::InvalidArgumentError(absl::StrCat("stop string ", i, " has ", t.size(),
                                                     " bytes (1 to ", kMaxStopStringBytes, ")"));
    }
    for (size_t j = 0; j < t.size();) {
      uint32_t cp = 0;
      const size_t len = DecodeUtf8(t, j, &cp);
      if (len == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("stop string ", i, " is not valid UTF-8 (byte ", j, ")"));
      }
      j += len;
    }
  }
  if (!std::isfinite(o.repeat_penalty) || o.repeat_penalty <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("repeat penalty must be > 0 (1 = off), got ", o.repeat_penalty));
  }
  if (o.repeat_last_n < -1) {
    return absl::InvalidArgumentError(
        absl::StrCat("repeat last n must be >= -1 (-1 = all tokens), got ", o.repeat_last_n));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingOptions& o) : o_(o) {
  // PCG32 (O'Neill), seeded like pcg32_srandom_r(seed, 54).
  state_ = 0;
  inc_ = (54u << 1) | 1u;
  NextU32();
  state_ += o.seed;
  NextU32();
}

uint32_t Sampler::NextU32() {
  uint64_t old = state_;
  state_ = old * 6364136223846793005ULL + inc_;
  uint32_t xorshifted = static_cast<uint32_t>(((old >> 18u) ^ old) >> 27u);
  uint32_t rot = static_cast<uint32_t>(old >> 59u);
  return (xorshifted >> rot) | (xorshifted << ((-rot) & 31));
}

double Sampler::NextUniform() {
  uint64_t hi = NextU32(), lo = NextU32();
  return static_cast<double>(((hi << 21) ^ lo) & ((1ULL << 53) - 1)) / 9007199254740992.0;
}

int32_t Sampler::Sample(absl::Span<const float> logits) {
  const int V = static_cast<int>(logits.size());
  // Greedy: argmax, lowest id on ties.
  if (o_.temperature == 0 || o_.top_k == 1) {
    int best = 0;
    for (int i = 1; i < V; ++i)
      if (logits[i] > logits[best]) best = i;
    return best;
  }
  idx_.resize(V);
  std::iota(idx_.begin(), idx_.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  // The candidates idx_[0, n) are walked from the most likely down (the order a seed's uniform
  // draw is read in) but sorted only as far as the walk goes: idx_[0, sorted) is in order, and
  // the order grows a chunk at a time (doubling). Sorting all 50,257 logits of GPT-2 cost ~6 ms
  // a token, several forward passes of the demo model.
  int n = V, sorted = 0;
  if (o_.top_k > 0 && o_.top_k < V) {
    n = sorted = o_.top_k;
    std::partial_sort(idx_.begin(), idx_.begin() + n, idx_.end(), by_logit);
  }
  auto ensure = [&](int rank) {  // idx_[0, rank] in order
    if (rank < sorted) return;
    const int upto = std::min(n, std::max(rank + 1, 2 * sorted + 64));
    std::partial_sort(idx_.begin() + sorted, idx_.begin() + upto, idx_.begin() + n, by_logit);
    sorted = upto;
  };
  int mx_at = 0;
  for (int i = 1; i < V; ++i)
    if (by_logit(i, mx_at)) mx_at = i;
  const double mx = logits[mx_at];
  // Weights by token id, summed in idx_ order (by rank for top-k, by id otherwise).
  p_.resize(V);
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    const int32_t t = idx_[i];
    sum += (p_[t] = std::exp((logits[t] - mx) / o_.temperature));
  }
  if (o_.top_p < 1) {
    // Keep the smallest prefix whose mass reaches top_p (at least one token).
    double cum = 0;
    int keep = n;
    for (int i = 0; i < n; ++i) {
      ensure(i);
      cum += p_[idx_[i]] / sum;
      if (cum >= o_.top_p) {
        keep = i + 1;
        break;
      }
    }
    n = keep;
    sum = 0;
    for (int i = 0; i < n; ++i) sum += p_[idx_[i]];
  }
  double r = NextUniform() * sum;
  for (int i = 0; i < n; ++i) {
    ensure(i);
    r -= p_[idx_[i]];
    if (r < 0) return idx_[i];
  }
  ensure(n - 1);
  return idx_[n - 1];
}

namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

// True when s (non-empty) is the start of a valid UTF-8 sequence that needs more bytes: a lead
// byte C2..F4 followed only by continuation bytes allowed in those positions.
bool IncompletePrefix(std::string_view s) {
  const unsigned char c = static_cast<unsigned char>(s[0]);
  const size_t need = (c >= 0xC2 && c <= 0xDF)   ? 2
                      : (c >= 0xE0 && c <= 0xEF) ? 3
                      : (c >= 0xF0 && c <= 0xF4) ? 4
                                                 : 0;
  if (need == 0 || s.size() >= need) return false;
  for (size_t i = 1; i < s.size(); ++i) {
    const unsigned char b = static_cast<unsigned char>(s[i]);
    unsigned char lo = 0x80, hi = 0xBF;
    if (i == 1) {  // the second byte's narrower ranges (no overlongs, surrogates, > U+10FFFF)
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    if (b < lo || b > hi) return false;
  }
  return true;
}

}  // namespace

std::string Utf8Stream::Push(const std::string& bytes) {
  pending_ += bytes;
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    uint32_t cp = 0;
    if (const size_t len = DecodeUtf8(pending_, i, &cp); len > 0) {
      out.append(pending_, i, len);
      i += len;
    } else if (IncompletePrefix(std::string_view(pending_).substr(i))) {
      break;  // held back until the next token completes it (or Flush)
    } else {
      out += kReplacement;  // a byte that cannot start or continue a character
      ++i;
    }
  }
  pending_.erase(0, i);
  return out;
}

std::string Utf8Stream::Flush() {
  // A held-back start of a character that no token completed.
  std::string out = pending_.empty() ? "" : kReplacement;
  pending_.clear();
  return out;
}

Generation::Generation(Session& session, const GenerateOptions& opts)
    : session_(session), opts_(opts), sampler_(opts.sampling) {}

absl::StatusOr<std::unique_ptr<Generation>> Generation::Start(Session& session,
                                                              absl::Span<const int32_t> prompt,
                                                              const GenerateOptions& opts) {
  if (auto st = ValidateGenerate(opts); !st.ok()) return st;
  const size_t n_ctx = session.n_ctx();
  const size_t past = opts.keep_context ? static_cast<size_t>(session.pos()) : 0;
  if (prompt.empty() && (past == 0 || session.last_logits().empty())) {
    return past == 0 ? absl::InvalidArgumentError("empty prompt (no tokens)")
                     : absl::FailedPreconditionError(
                           "nothing to continue from: the session's last call left no logits "
                           "(give text to append)");
  }
  if (past + prompt.size() >= n_ctx) {
    if (past == 0) {
      return absl::OutOfRangeError(absl::StrCat("prompt is ", prompt.size(),
                                                " tokens; the context is ", n_ctx, " (at most ",
                                                n_ctx - 1, " prompt tokens)"));
    }
    return absl::OutOfRangeError(absl::StrCat("context full: ", past, " tokens kept + ",
                                              prompt.size(), " new leave no room in the context",
                                              " of ", n_ctx, " (reset the session)"));
  }
  std::unique_ptr<Generation> g(new Generation(session, opts));
  g->res_.prompt_tokens = static_cast<int>(prompt.size());
  g->bias_ = session.conditioning().logit_bias;
  g->history_.assign(prompt.begin(), prompt.end());
  if (!opts.keep_context) session.Reset();
  if (prompt.empty()) {
    g->logits_ = session.last_logits();
  } else {
    auto logits = session.Forward(prompt, Session::Logits::kLast);
    if (!logits.ok()) return logits.status();
    g->logits_ = *logits;
  }
  return g;
}

bool Generation::PassStopStrings(const std::string& text, bool final, std::string* out) {
  if (opts_.stop_strings.empty()) {
    *out += text;
    return false;
  }
  held_ += text;
  size_t found = std::string::npos;
  for (const std::string& t : opts_.stop_strings) found = std::min(found, held_.find(t));
  if (found != std::string::npos) {
    out->append(held_, 0, found);
    held_.clear();
    size_t cut = std::string::npos;  // the result's text ends before the stop string too
    for (const std::string& t : opts_.stop_strings) cut = std::min(cut, res_.text.find(t));
    if (cut != std::string::npos) res_.text.resize(cut);
    return true;
  }
  // Keep back the longest tail of the text that begins some stop string (it starts at a
  // character boundary: a stop string begins with a whole character).
  size_t keep = 0;
  if (!final) {
    for (const std::string& t : opts_.stop_strings) {
      for (size_t m = std::min(t.size() - 1, held_.size()); m > keep; --m) {
        if (held_.compare(held_.size() - m, m, t, 0, m) == 0) {
          keep = m;
          break;
        }
      }
    }
  }
  out->append(held_, 0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return false;
}

void Generation::Finish(GenerateResult::Stop stop, std::string* text) {
  done_ = true;
  res_.stop = stop;
  if (PassStopStrings(stream_.Flush(), /*final=*/true, text)) {
    res_.stop = GenerateResult::Stop::kStopString;
  }
}

void Generation::Cancel() {
  if (done_) return;
  done_ = true;
  res_.stop = GenerateResult::Stop::kCancelled;
}

absl::Status Generation::RunToken(int32_t token) {
  auto logits = session_.Forward({&token, 1}, Session::Logits::kLast);
  if (!logits.ok()) return logits.status();
  logits_ = *logits;
  return absl::OkStatus();
}

absl::StatusOr<Generation::Step> Generation::Next() {
  Step out;
  if (done_) return out;
  if (static_cast<int>(res_.tokens.size()) >= opts_.max_new_tokens) {
    Finish(GenerateResult::Stop::kMaxTokens, &out.text);
    return out;
  }
  if (!session_.CheckAbort().ok()) {  // selfcond_session_abort between tokens
    Cancel();
    return out;
  }
  const Tokenizer& tok = session_.model().tokenizer();
  absl::Span<const float> logits = logits_;
  const bool penalize = opts_.repeat_penalty != 1.0f && opts_.repeat_last_n != 0;
  if (!bias_.empty() || penalize) {
    biased_.assign(logits_.begin(), logits_.end());
    for (const auto& [token, b] : bias_) biased_[token] += b;
    if (penalize) {
      // Each distinct token of the window once (llama.cpp's repeat penalty).
      const size_t n = opts_.repeat_last_n < 0
                           ? history_.size()
                           : std::min<size_t>(history_.size(), opts_.repeat_last_n);
      std::vector<int32_t> window(history_.end() - n, history_.end());
      std::sort(window.begin(), window.end());
      window.erase(std::unique(window.begin(), window.end()), window.end());
      for (int32_t t : window) {
        float& l = biased_[t];
        l = l > 0 ? l / opts_.repeat_penalty : l * opts_.repeat_penalty;
      }
    }
    logits = biased_;
  }
  const int32_t next = sampler_.Sample(logits);
  const std::vector<int32_t>& eos = tok.eos_ids();  // Llama 3 instruct has three
  if (opts_.stop_at_eos && std::find(eos.begin(), eos.end(), next) != eos.end()) {
    Finish(GenerateResult::Stop::kEos, &out.text);
    return out;
  }
  out.token = next;
  res_.tokens.push_back(next);
  history_.push_back(next);
  const std::string bytes = tok.DecodeToken(next);
  res_.text += bytes;
  if (PassStopStrings(stream_.Push(bytes), /*final=*/false, &out.text)) {
    // The stop string's token stays in the cache when the context is kept (as it was sampled).
    if (opts_.keep_context && session_.pos() < session_.n_ctx()) {
      if (auto st = RunToken(next); !st.ok() && !absl::IsCancelled(st)) return st;
    }
    done_ = true;
    res_.stop = GenerateResult::Stop::kStopString;
    stream_.Flush();
    return out;
  }
  const bool last = static_cast<int>(res_.tokens.size()) == opts_.max_new_tokens;
  if (session_.pos() >= session_.n_ctx()) {
    Finish(GenerateResult::Stop::kContextFull, &out.text);
  } else if (last && !opts_.keep_context) {
    Finish(GenerateResult::Stop::kMaxTokens, &out.text);  // the last token need not run
  } else {
    if (auto st = RunToken(next); !st.ok()) {
      if (absl::IsCancelled(st)) {
        // Aborted during the token's forward pass: the token is not in the cache, so it is not
        // reported either (the result stays what the cache holds).
        res_.tokens.pop_back();
        res_.text.resize(res_.text.size() - bytes.size());
        Cancel();
        return Step();
      }
      done_ = true;
      return st;
    }
    if (last) Finish(GenerateResult::Stop::kMaxTokens, &out.text);
  }
  return out;
}

std::vector<int32_t> PromptTokens(const Tokenizer& tokenizer, std::string_view prompt) {
  std::vector<int32_t> ids = tokenizer.prefix();
  const std::vector<int32_t> body = tokenizer.Encode(prompt);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

std::vector<int32_t> ScoringTokens(const Tokenizer& tokenizer, std::string_view text) {
  std::vector<int32_t> ids = tokenizer.prefix();
  if (ids.empty() && tokenizer.eos_id() >= 0) ids.push_back(tokenizer.eos_id());
  const std::vector<int32_t> body = tokenizer.Encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

absl::StatusOr<GenerateResult> Generate(Session& session, absl::Span<const int32_t> prompt,
                                        const GenerateOptions& opts, const OnText& on_text) {
  auto gen = Generation::Start(session, prompt, opts);
  if (!gen.ok()) return gen.status();
  Generation& g = **gen;
  while (!g.done()) {
    auto step = g.Next();
    if (!step.ok()) return step.status();
    if (on_text && !step->text.empty() && !on_text(step->text)) g.Cancel();
  }
  return g.result();
}

absl::StatusOr<PerplexityResult> Perplexity(Session& session, absl::Span<const int32_t> tokens,
                                            const std::function<void(float)>& progress) {
  if (tokens.size() < 2) return absl::InvalidArgumentError("need at least 2 tokens for perplexity");
  const size_t T = session.n_ctx(), V = session.model().config().vocab_size;
  double nll = 0;
  int64_t count = 0;
  for (size_t start = 0; start + 1 < tokens.size(); start += T) {
    const size_t len = std::min(T, tokens.size() - start);
    if (len < 2) break;
    session.Reset();
    auto logits = session.Forward(tokens.subspan(start, len), Session::Logits::kAll);
    if (!logits.ok()) return logits.status();
    for (size_t i = 0; i + 1 < len; ++i) {
      const float* row = logits->data() + i * V;
      double mx = row[0];
      for (size_t j = 1; j < V; ++j) mx = std::max<double>(mx, row[j]);
      double sum = 0;
      for (size_t j = 0; j < V; ++j) sum += std::exp(row[j] - mx);
      nll += (std::log(sum) + mx) - row[tokens[start + i + 1]];
      ++count;
    }
    if (progress)
      progress(static_cast<float>(std::min(tokens.size(), start + len)) / tokens.size());
  }
  PerplexityResult r;
  r.predicted_tokens = count;
  r.mean_nll = nll / count;
  r.ppl = std::exp(r.mean_nll);
  return r;
}

}  // namespace selfcond
