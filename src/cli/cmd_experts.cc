// selfcond rank, and the --experts option of generate.
#include <sys/stat.h>

#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "experts/dataset.h"
#include "experts/expert_table.h"
#include "experts/rank.h"
#include "experts/responses.h"
#include "util/file_util.h"

namespace selfcond::cli {

std::vector<FlagSpec> UnitChoiceFlags() {
  return {
      {"metric", "STAT",
       "rank the units by this statistic instead of AP: ap, on_p50, on_p90, off_mean or gap\n"
       "(on_p50 - off_mean)"},
      {"rank-offset", "N", "a rank window: force the units ranked N..N+K-1 (default 0)"},
      {"random-units", "SEED", "control: K units drawn at random (seeded) instead of the top K"},
      {"layers", "L,L,..", "only units of these blocks (0-based; default all)"}};
}

absl::StatusOr<UnitChoice> ParseUnitChoice(const Args& args) {
  UnitChoice c;
  if (args.Has("metric")) {
    auto m = ParseUnitMetric(args.Get("metric"));
    if (!m.ok()) return m.status();
    c.metric = *m;
  }
  auto offset = args.GetInt("rank-offset", 0, 0, 1 << 30);
  if (!offset.ok()) return offset.status();
  c.offset = *offset;
  if (args.Has("random-units")) {
    auto seed = args.GetInt("random-units", 0, 0, 2147483647);
    if (!seed.ok()) return seed.status();
    c.random = true;
    c.seed = static_cast<uint64_t>(*seed);
    if (c.offset > 0 || args.Has("metric")) {
      return absl::InvalidArgumentError(
          "--random-units draws units at random: it cannot be combined with --rank-offset or "
          "--metric");
    }
  }
  if (args.Has("layers")) {
    const std::string spec = args.Get("layers");
    for (absl::string_view part :
         absl::StrSplit(absl::string_view(spec.data(), spec.size()), ',')) {
      int layer;
      if (!absl::SimpleAtoi(part, &layer) || layer < 0) {
        return absl::InvalidArgumentError(absl::StrCat("--layers: '",
                                                       std::string(part.data(), part.size()),
                                                       "' is not a block index (want e.g. 0,2)"));
      }
      c.layers.push_back(layer);
    }
  }
  return c;
}

std::string UnitChoiceCommand(const UnitChoice& c) {
  std::string s;
  if (c.metric != UnitChoice::Metric::kAp)
    absl::StrAppend(&s, " --metric ", UnitMetricName(c.metric));
  if (c.offset > 0) absl::StrAppend(&s, " --rank-offset ", c.offset);
  if (c.random) absl::StrAppend(&s, " --random-units ", c.seed);
  if (!c.layers.empty()) absl::StrAppend(&s, " --layers ", absl::StrJoin(c.layers, ","));
  return s;
}

absl::StatusOr<Forcing> BuildForcingFromArgs(const Engine& engine,
                                             const std::vector<std::string>& specs,
                                             const std::string& forcing_value, bool only_last_token,
                                             bool allow_unhashed, const UnitChoice& choice) {
  auto value = ParseForcingValue(forcing_value);
  if (!value.ok()) return value.status();
  std::vector<ExpertTable> tables(specs.size());
  std::vector<ForcingSource> sources;
  for (size_t i = 0; i < specs.size(); ++i) {
    // TABLE[:K]; a path may itself contain ':' so only a trailing ":<digits>" is K.
    std::string path = specs[i];
    int64_t k = 50;
    if (size_t colon = path.rfind(':'); colon != std::string::npos) {
      int64_t parsed;
      if (absl::SimpleAtoi(path.substr(colon + 1), &parsed)) {
        if (parsed < 0) {
          return absl::OutOfRangeError(absl::StrCat("--experts ", specs[i], ": K must be >= 0"));
        }
        k = parsed;
        path = path.substr(0, colon);
      }
    }
    auto t = engine.LoadTable(path, allow_unhashed);
    if (!t.ok()) {
      // "T:abc": a K that is not a number (no file is named that way, the table T is).
      const size_t colon = path.rfind(':');
      if (t.status().code() == absl::StatusCode::kNotFound && colon != std::string::npos) {
        struct stat st;
        if (::stat(path.substr(0, colon).c_str(), &st) == 0) {
          return absl::InvalidArgumentError(absl::StrCat(
              "--experts ", specs[i], ": '", path.substr(colon + 1),
              "' is not a number of units (expected TABLE:K with K an integer >= 0, or "
              "TABLE:auto)"));
        }
      }
      return t.status();  // names the path
    }
    if (k > static_cast<int64_t>(t->units.size())) {
      return absl::OutOfRangeError(absl::StrCat("--experts ", specs[i], ": the table holds only ",
                                                t->units.size(), " units"));
    }
    tables[i] = std::move(*t);
    sources.push_back({&tables[i], k, choice});
  }
  return engine.MakeForcing(sources, *value, only_last_token);
}

const CommandSpec& RankSpec() {
  static const CommandSpec s{
      "rank",
      "selfcond rank --concept FILE [--concept FILE ...] --out TABLE [--out TABLE ...]\n"
      "              [--responses R.scr] [--model M] [options]",
      "Rank every unit of the model as an expert for a concept: run positive and negative\n"
      "sentences, max-pool each unit's response over the sentence's tokens, and score it by\n"
      "average precision. --concept takes ml-selfcond JSON or '+ '/'- ' prefixed lines;\n"
      "--positive/--negative take one sentence per line. --out x.csv writes ml-selfcond's\n"
      "expertise.csv, anything else the native JSON table. Several --concept: each distinct\n"
      "sentence of all of them runs once (one --out per concept, in order, or --out-dir).\n"
      "--responses: rank from stored responses (selfcond responses) without running the model.\n"
      "A .csv output also gets ml-selfcond's expertise_info.json in its directory, so that\n"
      "ExpertiseResult.load reads the directory (name the table expertise.csv).\n"
      "--compat ml-selfcond: prepare the sentences as ml-selfcond does, to compare tables unit\n"
      "by unit with its own: a seeded random subset of at most 1000 sentences per class (numpy\n"
      "RandomState(1234), as ml-selfcond draws it; --max-sentences N sets the 1000), each padded\n"
      "with EOS to 128 tokens and max-pooled over all 128 positions (the pads attend to the\n"
      "sentence only, as under ml-selfcond's attention mask), sentences over 128 tokens dropped.\n"
      "Precision: ml-selfcond runs float32. --precision f32 computes in float32 with the file's\n"
      "float weights only when the model was converted with --keep-float; on an int8-only file\n"
      "it runs the dequantized int8 weights, so its table is the int8 model's, not the original's\n"
      "(docs/experts.md: the top-50 agreement with the float reference holds for --keep-float).",
      WithModelFlags(
          {{"concept", "FILE", "concept dataset (JSON or +/- lines)", true},
           {"positive", "FILE", "positive sentences, one per line (with --negative)"},
           {"negative", "FILE", "negative sentences, one per line (with --positive)"},
           {"name", "NAME", "concept name (plain files; default: the file name)"},
           {"out", "TABLE", "output table (.json native, .csv ml-selfcond); one per concept", true},
           {"out-dir", "DIR", "write each concept's table as DIR/<concept>.json"},
           {"responses", "R.scr", "stored pooled responses to rank from (selfcond responses)"},
           {"max-sentences", "N",
            "use at most N sentences per class: the first N (default: all);\n"
            "with --compat, a seeded random N (default 1000)"},
           {"compat", "MODE", "ml-selfcond: pad to 128 tokens, drop longer, seeded subset"},
           {"top", "N", "store only the N best units (default: all)"},
           {"max-memory", "MIB",
            "memory the pooled responses (sentences x units x 4 bytes) may take (default:\n"
            "half the machine's memory)"}}),
      0,
      0};
  return s;
}

const CommandSpec& ResponsesSpec() {
  static const CommandSpec s{
      "responses",
      "selfcond responses --concept FILE [--concept FILE ...] --out R.scr [--model M]",
      "Run every distinct sentence of the concept datasets through the model once and store\n"
      "each one's max-pooled unit responses (docs/responses-format.md), with the model's\n"
      "hash, so that `selfcond rank --responses R.scr --concept ...` ranks any concept over\n"
      "these sentences without running the model again.",
      WithModelFlags({{"concept", "FILE", "concept dataset (JSON or +/- lines)", true},
                      {"out", "R.scr", "output file"},
                      {"max-sentences", "N", "use at most N sentences per class (default: all)"}}),
      0,
      0};
  return s;
}

namespace {

// The concepts of --concept (repeatable) or --positive/--negative.
absl::StatusOr<std::vector<Dataset>> DatasetsFromArgs(const Args& args, int max_sentences) {
  DatasetOptions dopts;
  dopts.max_sentences = max_sentences;
  std::vector<Dataset> out;
  if (args.Has("concept")) {
    if (args.Has("positive") || args.Has("negative")) {
      return absl::InvalidArgumentError("give either --concept or --positive/--negative");
    }
    for (const std::string& path : args.GetAll("concept")) {
      auto d = LoadDataset(path, dopts);
      if (!d.ok()) return d.status();
      out.push_back(std::move(*d));
    }
  } else if (args.Has("positive") && args.Has("negative")) {
    auto d = LoadSentenceFiles(args.Get("positive"), args.Get("negative"),
                               args.Get("name", "concept"), dopts);
    if (!d.ok()) return d.status();
    out.push_back(std::move(*d));
  } else {
    return absl::InvalidArgumentError("--concept FILE (or --positive and --negative) is required");
  }
  if (args.Has("name")) {
    if (out.size() != 1) return absl::InvalidArgumentError("--name needs a single concept");
    out[0].concept = args.Get("name");
  }
  return out;
}

// Every input path of a rank/responses command (an output must not replace one of them).
std::vector<std::string> InputPaths(const Args& args) {
  std::vector<std::string> in = args.GetAll("concept");
  for (const char* f : {"positive", "negative", "model", "responses"}) in.push_back(args.Get(f));
  return in;
}

// A file name for a concept's table in --out-dir: its name with path separators replaced.
std::string TableFileName(const std::string& concept) {
  std::string name = concept.empty() ? "concept" : concept;
  for (char& c : name)
    if (c == '/' || c == '\\' || c == '\0') c = '_';
  if (name == "." || name == "..") name = "concept";
  return name + ".json";
}

// What rank and responses run on: the engine (the model loaded for --precision, a pool of
// `threads`) and ranking options for that precision.
struct RankRuntime {
  std::shared_ptr<Engine> engine;
  RankOptions options;
};

absl::StatusOr<RankRuntime> LoadRankRuntime(const Args& args, int threads) {
  auto prec = ParsePrecision(args.Get("precision", "int8"));
  if (!prec.ok()) return prec.status();
  auto engine =
      Engine::Load(args.Get("model", DefaultModelPath()), EngineLoadOptions(args, *prec, threads));
  if (!engine.ok()) return engine.status();
  RankRuntime rt;
  rt.engine = std::move(*engine);
  rt.options = rt.engine->OnPool(rt.options);
  rt.options.precision = *prec;
  return rt;
}

RankOptions::Progress ProgressCallback(Progress& progress) {
  return [&progress](int done, int total) {
    progress.Update(static_cast<double>(done) / total,
                    absl::StrCat(done, "/", total, " sentences"));
    return true;
  };
}

}  // namespace

namespace {

// Where a .csv table's expertise_info.json goes: beside it (ml-selfcond keeps one concept per
// directory: dir/expertise.csv and dir/expertise_info.json).
std::string InfoJsonPath(const std::string& csv) {
  const size_t slash = csv.find_last_of('/');
  return slash == std::string::npos ? "expertise_info.json"
                                    : csv.substr(0, slash + 1) + "expertise_info.json";
}

bool IsCsv(const std::string& out) {
  return out.size() >= 4 && out.substr(out.size() - 4) == ".csv";
}

}  // namespace

absl::Status RunRank(const Args& args) {
  auto max_sentences = args.GetInt("max-sentences", 0, 0, 1 << 30);
  auto threads = args.GetInt("threads", 0, 0, 256);
  auto top = args.GetInt("top", 0, 0, 1 << 30);
  for (const auto* st : {&max_sentences.status(), &threads.status(), &top.status()}) {
    if (!st->ok()) return *st;
  }
  const bool compat = args.Has("compat");
  if (compat) {
    if (args.Get("compat") != "ml-selfcond") {
      return absl::InvalidArgumentError(absl::StrCat("unknown --compat mode '", args.Get("compat"),
                                                     "' (the only mode is ml-selfcond)"));
    }
    if (args.Has("responses")) {
      return absl::InvalidArgumentError(
          "--compat ml-selfcond pools over padded sentences: it runs the model and cannot rank "
          "from --responses");
    }
  }
  // Before any work (even reading the datasets): no table may replace an input or another
  // table, and every directory must be writable.
  std::vector<std::string> outs = args.GetAll("out");
  if (args.Has("out-dir") && !outs.empty()) {
    return absl::InvalidArgumentError("give either --out or --out-dir");
  }
  auto check_outputs = [&]() -> absl::Status {
    for (size_t i = 0; i < outs.size(); ++i) {
      if (std::count(outs.begin(), outs.end(), outs[i]) > 1) {
        return absl::InvalidArgumentError(absl::StrCat("output '", outs[i], "' is named twice"));
      }
      if (auto st = CheckOutputPath(outs[i], InputPaths(args)); !st.ok()) return st;
    }
    return absl::OkStatus();
  };
  if (auto st = check_outputs(); !st.ok()) return st;
  // Compat mode draws its random subset from the whole dataset (in RankConcept).
  auto data = DatasetsFromArgs(args, compat ? 0 : *max_sentences);
  if (!data.ok()) return data.status();
  // One output per concept: --out in order, or --out-dir/<concept>.json.
  if (args.Has("out-dir")) {
    for (const Dataset& d : *data)
      outs.push_back(args.Get("out-dir") + "/" + TableFileName(d.concept));
    if (auto st = check_outputs(); !st.ok()) return st;
  }
  // expertise_info.json beside each .csv table, unless two tables share the directory.
  std::vector<std::string> info_paths(outs.size());
  for (size_t i = 0; i < outs.size(); ++i) {
    if (!IsCsv(outs[i])) continue;
    int same_dir = 0;
    for (const std::string& o : outs)
      same_dir += IsCsv(o) && InfoJsonPath(o) == InfoJsonPath(outs[i]);
    if (same_dir > 1) {
      std::fprintf(stderr,
                   "note: %s not written: several .csv tables share its directory (ml-selfcond "
                   "keeps one concept per directory)\n",
                   InfoJsonPath(outs[i]).c_str());
      continue;
    }
    info_paths[i] = InfoJsonPath(outs[i]);
    if (auto st = CheckOutputPath(info_paths[i], InputPaths(args)); !st.ok()) return st;
  }
  if (outs.size() != data->size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        data->size(), " concept(s) need as many --out (got ", outs.size(), "), or --out-dir"));
  }
  auto rt = LoadRankRuntime(args, *threads);
  if (!rt.ok()) return rt.status();
  const Engine& engine = *rt->engine;
  const Model& model = engine.model();
  RankOptions& ro = rt->options;
  ro.top_n = *top;
  auto max_memory = args.GetInt("max-memory", 0, 1, 1 << 30);
  if (!max_memory.ok()) return max_memory.status();
  ro.max_memory = static_cast<size_t>(*max_memory) << 20;
  if (compat) {
    ro.compat.enabled = true;
    if (*max_sentences > 0) ro.compat.per_class = *max_sentences;
  }
  Progress progress("rank");
  ro.progress = ProgressCallback(progress);
  auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<std::vector<ExpertTable>> tables;
  if (args.Has("responses")) {
    auto store = ResponseStore::Load(args.Get("responses"));
    if (!store.ok()) return store.status();
    std::vector<ExpertTable> ts;
    for (const Dataset& d : *data) {
      auto t = store->Rank(model, d, ro);
      if (!t.ok()) return t.status();
      ts.push_back(std::move(*t));
    }
    tables = std::move(ts);
  } else if (data->size() == 1) {
    auto t = engine.Rank((*data)[0], ro);
    if (!t.ok()) return t.status();
    tables = std::vector<ExpertTable>{};
    tables->push_back(std::move(*t));
  } else {
    tables = engine.RankAll(*data, ro);
  }
  if (!tables.ok()) return tables.status();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int n = 0;
  for (const ExpertTable& t : *tables) n += t.num_positive + t.num_negative;
  progress.Done(absl::StrCat(n, " labeled sentences in ", absl::SixDigits(secs), " s"));
  for (size_t i = 0; i < tables->size(); ++i) {
    const ExpertTable& table = (*tables)[i];
    const Dataset& d = (*data)[i];
    if (table.num_truncated > 0) {
      std::fprintf(stderr,
                   "warning: %d sentences of %s longer than the context (%u tokens) were "
                   "truncated\n",
                   table.num_truncated, d.concept.c_str(), model.config().n_ctx);
    }
    if (table.num_dropped > 0) {
      std::fprintf(stderr,
                   "note: %d sentences of %s longer than %d tokens were dropped (ml-selfcond "
                   "mode)\n",
                   table.num_dropped, d.concept.c_str(), table.compat_seq_len);
    }
    const std::string& out = outs[i];
    const bool csv = IsCsv(out);
    const std::string csv_text = csv ? ExportExpertiseCsv(table) : std::string();
    absl::Status st = csv ? WriteFile(out, csv_text) : SaveExpertTable(table, out);
    if (!st.ok()) return st;
    if (!info_paths[i].empty()) {
      // Written after the CSV and tied to it by its hash: a reader that finds a sidecar of
      // another (or older) CSV beside it ignores that sidecar instead of mixing the two.
      if (st = WriteFile(info_paths[i], ExportExpertiseInfoJson(table, csv_text)); !st.ok()) {
        return st;
      }
    }
    std::printf("concept %s: %d positive, %d negative sentences%s; wrote %s%s%s\n",
                d.concept.c_str(), table.num_positive, table.num_negative,
                table.compat.empty() ? "" : " (ml-selfcond mode)", out.c_str(),
                info_paths[i].empty() ? "" : " and ", info_paths[i].c_str());
    if (!info_paths[i].empty() && out.substr(out.find_last_of('/') + 1) != "expertise.csv") {
      std::fprintf(stderr,
                   "note: ml-selfcond's ExpertiseResult.load reads <dir>/expertise.csv; this "
                   "table is named %s\n",
                   out.c_str());
    }
    std::printf("top units:\n");
    for (size_t k = 0; k < std::min<size_t>(10, table.units.size()); ++k) {
      const auto& u = table.units[k];
      std::printf("  %-34s unit %5d  ap %.4f  on_p50 %8.4f  on_p90 %8.4f  off_mean %8.4f\n",
                  table.layer_name(u).c_str(), u.unit, u.ap, u.on_p50, u.on_p90, u.off_mean);
    }
  }
  return absl::OkStatus();
}

absl::Status RunResponses(const Args& args) {
  auto out = args.Required("out");
  if (!out.ok()) return out.status();
  auto max_sentences = args.GetInt("max-sentences", 0, 0, 1 << 30);
  auto threads = args.GetInt("threads", 0, 0, 256);
  for (const auto* st : {&max_sentences.status(), &threads.status()}) {
    if (!st->ok()) return *st;
  }
  if (auto st = CheckOutputPath(*out, InputPaths(args)); !st.ok()) return st;
  auto data = DatasetsFromArgs(args, *max_sentences);
  if (!data.ok()) return data.status();
  std::vector<std::string> all;
  for (const Dataset& d : *data) {
    all.insert(all.end(), d.positive.begin(), d.positive.end());
    all.insert(all.end(), d.negative.begin(), d.negative.end());
  }
  auto rt = LoadRankRuntime(args, *threads);
  if (!rt.ok()) return rt.status();
  const Model& model = rt->engine->model();
  RankOptions& ro = rt->options;
  Progress progress("responses");
  ro.progress = ProgressCallback(progress);
  auto store = ResponseStore::Compute(model, all, ro);
  if (!store.ok()) return store.status();
  progress.Done(absl::StrCat(store->num_sentences(), " distinct sentences"));
  if (auto st = store->Save(*out); !st.ok()) return st;
  std::printf("wrote %s: %lld distinct sentences (of %zu) x %lld units, %.1f MiB\n", out->c_str(),
              static_cast<long long>(store->num_sentences()), all.size(),
              static_cast<long long>(store->num_units()),
              store->num_sentences() * store->num_units() * 4.0 / 1048576.0);
  return absl::OkStatus();
}

}  // namespace selfcond::cli
