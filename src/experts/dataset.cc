#include "experts/dataset.h"

#include <sys/stat.h>

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "util/csv.h"
#include "util/file_util.h"
#include "util/json.h"
#include "util/numpy_random.h"

namespace selfcond {
namespace {

void Truncate(std::vector<std::string>* v, int max_sentences) {
  if (max_sentences > 0 && v->size() > static_cast<size_t>(max_sentences)) v->resize(max_sentences);
}

absl::StatusOr<Dataset> Finish(Dataset ds, const DatasetOptions& opts) {
  // Validate everything (not only the kept prefix) so that a broken file is reported even when
  // a small max_sentences is used for a quick run.
  absl::Status st = ValidateDataset(ds);
  if (!st.ok()) return st;
  if (opts.max_sentences > 0) {
    KeepFirst(&ds, opts.max_sentences);
    // The kept prefix must still tell the concept apart (the first sentences of both classes
    // may be the same even when the whole file's are not).
    if (st = ValidateDataset(ds); !st.ok()) {
      return absl::Status(st.code(), absl::StrCat(st.message(), " (in the first ",
                                                  opts.max_sentences, " of each class)"));
    }
  }
  return ds;
}

bool IsBlank(std::string_view line) {
  for (char c : line)
    if (!absl::ascii_isspace(static_cast<unsigned char>(c))) return false;
  return true;
}

// Splits text into lines (LF or CRLF), calling fn(line_number starting at 1, line).
template <typename Fn>
absl::Status ForEachLine(std::string_view text, Fn fn) {
  int line_no = 0;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    ++line_no;
    absl::Status st = fn(line_no, line);
    if (!st.ok()) return st;
    start = end + 1;
  }
  return absl::OkStatus();
}

absl::Status CheckLineUtf8(std::string_view what, int line_no, std::string_view line) {
  int64_t bad = FindInvalidUtf8(line);
  if (bad >= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        std::string(what), "line ", line_no, ": invalid UTF-8 at byte ", bad, " of the line"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ReadSentenceLines(std::string_view text,
                                                           std::string_view what) {
  std::vector<std::string> out;
  absl::Status st = ForEachLine(text, [&](int line_no, std::string_view line) -> absl::Status {
    if (IsBlank(line) || line[0] == '#') return absl::OkStatus();
    absl::Status u = CheckLineUtf8(what, line_no, line);
    if (!u.ok()) return u;
    out.emplace_back(line);
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  return out;
}

std::string FileStem(const std::string& path) {
  size_t slash = path.find_last_of("/\\");
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  size_t dot = name.find_last_of('.');
  if (dot != std::string::npos && dot > 0) name.resize(dot);
  return name;
}

absl::Status Annotate(const absl::Status& st, const std::string& path) {
  return absl::Status(st.code(), absl::StrCat(path, ": ", st.message()));
}

}  // namespace

int64_t FindInvalidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return static_cast<int64_t>(i);  // continuation byte, C0/C1 overlong lead, or > F4
    }
    if (i + len > n) return static_cast<int64_t>(i);
    for (int k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return static_cast<int64_t>(i);
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return static_cast<int64_t>(i);
    }
    i += len;
  }
  return -1;
}

void KeepFirst(Dataset* ds, int max_sentences) {
  Truncate(&ds->positive, max_sentences);
  Truncate(&ds->negative, max_sentences);
}

void SampleLikeMlSelfcond(Dataset* ds, int per_class, uint32_t seed) {
  if (per_class <= 0) return;
  NumpyRandomState rng(seed);
  for (std::vector<std::string>* v : {&ds->negative, &ds->positive}) {
    if (static_cast<size_t>(per_class) >= v->size()) continue;
    std::vector<std::string> kept;
    kept.reserve(per_class);
    for (int64_t i : rng.ChoiceWithoutReplacement(static_cast<int64_t>(v->size()), per_class)) {
      kept.push_back(std::move((*v)[static_cast<size_t>(i)]));
    }
    *v = std::move(kept);
  }
}

absl::Status ValidateDataset(const Dataset& ds) {
  for (int cls = 0; cls < 2; ++cls) {
    const auto& v = cls == 0 ? ds.positive : ds.negative;
    const char* name = cls == 0 ? "positive" : "negative";
    if (v.empty()) return absl::InvalidArgumentError(absl::StrCat("no ", name, " sentences"));
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i].empty()) {
        return absl::InvalidArgumentError(absl::StrCat(name, " sentence ", i, " is empty"));
      }
      int64_t bad = FindInvalidUtf8(v[i]);
      if (bad >= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, " sentence ", i, ": invalid UTF-8 at byte ", bad));
      }
    }
  }
  // The same sentences on both sides separate nothing: every unit would get AP 0.5.
  if (ds.positive.size() == ds.negative.size()) {
    std::vector<std::string_view> p(ds.positive.begin(), ds.positive.end());
    std::vector<std::string_view> n(ds.negative.begin(), ds.negative.end());
    std::sort(p.begin(), p.end());
    std::sort(n.begin(), n.end());
    if (p == n) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the positive and negative sentences are the same ", p.size(),
          " sentences: nothing tells the concept apart (every unit would get AP 0.5)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Dataset> ParseConceptJson(std::string_view text, const DatasetOptions& opts) {
  auto doc = json::Parse(text);
  if (!doc.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("concept dataset is not valid JSON: ", doc.status().message()));
  }
  if (!doc->is_object()) return absl::InvalidArgumentError("concept dataset: not a JSON object");
  Dataset ds;
  auto concept = doc->GetString("concept");
  if (!concept.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("concept dataset: ", concept.status().message()));
  }
  ds.concept = *std::move(concept);
  // ml-selfcond requires "group"; we accept its absence (user-made files) but not a non-string.
  for (auto [key, dst] : {std::pair<const char*, std::string*>{"group", &ds.group},
                          std::pair<const char*, std::string*>{"source", &ds.source}}) {
    const json::Value* v = doc->Find(key);
    if (v == nullptr || v->is_null()) continue;
    if (!v->is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("concept dataset: key \"", key, "\" is not a string"));
    }
    *dst = v->as_string();
  }
  const json::Value* sentences = doc->Find("sentences");
  if (sentences == nullptr) {
    return absl::InvalidArgumentError("concept dataset: missing key \"sentences\"");
  }
  if (!sentences->is_object()) {
    return absl::InvalidArgumentError("concept dataset: \"sentences\" is not an object");
  }
  for (const auto& [key, value] : sentences->members()) {
    if (key != "positive" && key != "negative") {
      return absl::InvalidArgumentError(
          absl::StrCat("concept dataset: unknown key \"sentences.", std::string(key),
                       "\" (expected \"positive\" and \"negative\")"));
    }
  }
  for (const char* cls : {"positive", "negative"}) {
    const json::Value* arr = sentences->Find(cls);
    if (arr == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("concept dataset: missing key \"sentences.", cls, "\""));
    }
    if (!arr->is_array()) {
      return absl::InvalidArgumentError(
          absl::StrCat("concept dataset: \"sentences.", cls, "\" is not an array"));
    }
    auto& dst = cls[0] == 'p' ? ds.positive : ds.negative;
    dst.reserve(arr->items().size());
    for (size_t i = 0; i < arr->items().size(); ++i) {
      const json::Value& s = arr->items()[i];
      if (!s.is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat("concept dataset: sentences.", cls, "[", i, "] is not a string"));
      }
      dst.emplace_back(s.as_string());
    }
  }
  auto out = Finish(std::move(ds), opts);
  if (!out.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("concept dataset: ", out.status().message()));
  }
  return out;
}

absl::StatusOr<Dataset> LoadConceptJson(const std::string& path, const DatasetOptions& opts) {
  auto text = ReadFile(path);
  if (!text.ok()) return text.status();
  auto ds = ParseConceptJson(*text, opts);
  if (!ds.ok()) return Annotate(ds.status(), path);
  return ds;
}

absl::StatusOr<Dataset> ParseLabeledLines(std::string_view text, const std::string& concept,
                                          const DatasetOptions& opts) {
  Dataset ds;
  ds.concept = concept;
  absl::Status st = ForEachLine(text, [&](int line_no, std::string_view line) -> absl::Status {
    if (IsBlank(line) || line[0] == '#') return absl::OkStatus();
    if (line.size() < 2 || (line[0] != '+' && line[0] != '-') || line[1] != ' ') {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_no,
                       ": expected \"+ \" (positive) or \"- \" (negative) before the sentence"));
    }
    std::string_view sentence = line.substr(2);
    if (sentence.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("line ", line_no, ": empty sentence"));
    }
    absl::Status u = CheckLineUtf8("", line_no, line);
    if (!u.ok()) return u;
    (line[0] == '+' ? ds.positive : ds.negative).emplace_back(sentence);
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  return Finish(std::move(ds), opts);
}

absl::StatusOr<Dataset> ParseSentenceLines(std::string_view positive_text,
                                           std::string_view negative_text,
                                           const std::string& concept, const DatasetOptions& opts) {
  Dataset ds;
  ds.concept = concept;
  auto pos = ReadSentenceLines(positive_text, "positives file, ");
  if (!pos.ok()) return pos.status();
  auto neg = ReadSentenceLines(negative_text, "negatives file, ");
  if (!neg.ok()) return neg.status();
  ds.positive = *std::move(pos);
  ds.negative = *std::move(neg);
  return Finish(std::move(ds), opts);
}

absl::StatusOr<Dataset> LoadSentenceFiles(const std::string& positive_path,
                                          const std::string& negative_path,
                                          const std::string& concept, const DatasetOptions& opts) {
  auto pos = ReadFile(positive_path);
  if (!pos.ok()) return pos.status();
  auto neg = ReadFile(negative_path);
  if (!neg.ok()) return neg.status();
  auto ds = ParseSentenceLines(*pos, *neg, concept, opts);
  if (!ds.ok()) {
    return Annotate(ds.status(), absl::StrCat(positive_path, " + ", negative_path));
  }
  return ds;
}

absl::StatusOr<Dataset> LoadDataset(const std::string& path, const DatasetOptions& opts) {
  auto text = ReadFile(path);
  if (!text.ok()) return text.status();
  size_t i = 0;
  while (i < text->size() && absl::ascii_isspace(static_cast<unsigned char>((*text)[i]))) ++i;
  if (i < text->size() && (*text)[i] == '[') {
    return absl::InvalidArgumentError(absl::StrCat(
        path,
        ": a JSON array is not a concept dataset: expected ml-selfcond's JSON object "
        "{\"concept\": ..., \"sentences\": {\"positive\": [...], \"negative\": [...]}} or "
        "lines starting with \"+ \" (positive) and \"- \" (negative)"));
  }
  absl::StatusOr<Dataset> ds = (i < text->size() && (*text)[i] == '{')
                                   ? ParseConceptJson(*text, opts)
                                   : ParseLabeledLines(*text, FileStem(path), opts);
  if (!ds.ok()) return Annotate(ds.status(), path);
  return ds;
}

absl::StatusOr<Dataset> DatasetFromVectors(const std::string& concept,
                                           std::vector<std::string> positive,
                                           std::vector<std::string> negative,
                                           const DatasetOptions& opts) {
  Dataset ds;
  ds.concept = concept;
  ds.positive = std::move(positive);
  ds.negative = std::move(negative);
  return Finish(std::move(ds), opts);
}

namespace {

bool PlainName(std::string_view s) {
  if (s.empty() || s == "." || s == "..") return false;
  for (char c : s)
    if (c == '/' || c == '\\' || c == '\0') return false;
  return true;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ParseConceptList(std::string_view text,
                                                          const std::string& dir) {
  const std::string label = dir + "/concept_list.csv";
  if (text.size() >= 3 && text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  if (const int64_t bad = FindInvalidUtf8(text); bad >= 0) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": invalid UTF-8 at byte ", bad));
  }
  // At most this many columns (ml-selfcond's has two): a row of commas fails at once.
  constexpr size_t kMaxColumns = 64;
  CsvReader reader(text);
  std::vector<std::string> fields;
  auto first = reader.Next(&fields, kMaxColumns);
  if (!first.ok())
    return absl::InvalidArgumentError(absl::StrCat(label, ": ", first.status().message()));
  if (!*first) {
    return absl::InvalidArgumentError(
        absl::StrCat(label, ": empty (want a header 'group,concept')"));
  }
  int group_col = -1, concept_col = -1;
  for (size_t i = 0; i < fields.size(); ++i) {
    const std::string f(absl::StripAsciiWhitespace(fields[i]));
    if (f == "group" && group_col < 0) group_col = static_cast<int>(i);
    if (f == "concept" && concept_col < 0) concept_col = static_cast<int>(i);
  }
  if (group_col < 0 || concept_col < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        label, ": the header must name the columns 'group' and 'concept' (ml-selfcond's layout)"));
  }
  std::vector<std::string> files;
  std::set<std::string> seen;
  for (int row = 1;; ++row) {
    auto more = reader.Next(&fields, kMaxColumns);
    if (!more.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": row ", row, ": ", more.status().message()));
    }
    if (!*more) break;
    if (fields.empty() || (fields.size() == 1 && absl::StripAsciiWhitespace(fields[0]).empty())) {
      continue;  // a blank line
    }
    const size_t need = static_cast<size_t>(std::max(group_col, concept_col)) + 1;
    if (fields.size() < need) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": row ", row, ": ", fields.size(), " fields, want at least ", need));
    }
    const std::string group(absl::StripAsciiWhitespace(fields[group_col]));
    const std::string concept(absl::StripAsciiWhitespace(fields[concept_col]));
    if (!PlainName(group) || !PlainName(concept)) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": row ", row, ": group '", group, "' and concept '", concept,
                       "' must be plain names (not empty, no '/', not '.' or '..')"));
    }
    if (!seen.insert(concept).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": row ", row, ": concept '", concept, "' is listed twice"));
    }
    files.push_back(absl::StrCat(dir, "/", group, "/", concept, ".json"));
  }
  if (files.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": lists no concept"));
  }
  return files;
}

absl::StatusOr<std::vector<std::string>> ConceptListFiles(const std::string& dir) {
  auto text = ReadFile(dir + "/concept_list.csv");
  if (!text.ok()) {
    return absl::NotFoundError(
        absl::StrCat("--concepts-from ", dir,
                     ": no concept_list.csv (ml-selfcond's layout: concept_list.csv "
                     "with columns group,concept and DIR/<group>/<concept>.json): ",
                     text.status().message()));
  }
  auto files = ParseConceptList(*text, dir);
  if (!files.ok()) return files.status();
  for (const std::string& f : *files) {
    struct stat st;
    if (stat(f.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
      return absl::NotFoundError(
          absl::StrCat(dir, "/concept_list.csv lists ", f, ", which is not a file"));
    }
  }
  return files;
}

}  // namespace selfcond
