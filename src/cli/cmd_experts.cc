// selfcond rank, and the --experts option of generate.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
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

std::vector<FlagSpec> UnitChoiceFlags::Flags() {
  return {Text(&metric, "metric", "STAT",
               "rank the units by this statistic instead of AP: ap, on_p50, on_p90, off_mean or\n"
               "gap (on_p50 - off_mean)"),
          Int(&rank_offset, "rank-offset", "N", "a rank window: force the units ranked N..N+K-1", 0,
              1 << 30),
          Int(&random_units, "random-units", "SEED",
              "control: K units drawn at random (seeded) instead of the top K", 0, 2147483647)
              .ShowDefault(""),
          Text(&layers, "layers", "L,L,..", "only units of these blocks (0-based; default all)")};
}

absl::StatusOr<UnitChoice> UnitChoiceFlags::Parse(const Args& args) const {
  UnitChoice c;
  if (!metric.empty()) {
    auto m = ParseUnitMetric(metric);
    if (!m.ok()) return m.status();
    c.metric = *m;
  }
  c.offset = rank_offset;
  if (args.Has("random-units")) {
    c.random = true;
    c.seed = static_cast<uint64_t>(random_units);
    if (c.offset > 0 || !metric.empty()) {
      return absl::InvalidArgumentError(
          "--random-units draws units at random: it cannot be combined with --rank-offset or "
          "--metric");
    }
  }
  if (!layers.empty()) {
    for (absl::string_view part :
         absl::StrSplit(absl::string_view(layers.data(), layers.size()), ',')) {
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

namespace {

// The concept datasets of rank and responses: --concept (repeatable) or --positive/--negative.
struct ConceptFlags {
  std::vector<std::string> concept;
  std::string concepts_from, positive, negative, name;
  int max_sentences = 0;

  std::vector<FlagSpec> Flags(const char* max_sentences_help) {
    return {
        Texts(&concept, "concept", "FILE", "concept dataset (JSON or +/- lines)"),
        Text(&concepts_from, "concepts-from", "DIR",
             "every concept of an ml-selfcond data folder: DIR/concept_list.csv (group,concept)\n"
             "and DIR/<group>/<concept>.json (with or instead of --concept)"),
        Text(&positive, "positive", "FILE", "positive sentences, one per line (with --negative)"),
        Text(&negative, "negative", "FILE", "negative sentences, one per line (with --positive)"),
        Text(&name, "name", "NAME", "concept name (plain files; default: the file name)"),
        Int(&max_sentences, "max-sentences", "N", max_sentences_help, 0, 1 << 30)
            .ShowDefault("all")};
  }

  absl::StatusOr<std::vector<Dataset>> Load(int keep_first) const {
    DatasetOptions dopts;
    dopts.max_sentences = keep_first;
    std::vector<Dataset> out;
    std::vector<std::string> files = concept;
    if (!concepts_from.empty()) {
      auto listed = ConceptListFiles(concepts_from);
      if (!listed.ok()) return listed.status();
      files.insert(files.end(), listed->begin(), listed->end());
    }
    if (!files.empty()) {
      if (!positive.empty() || !negative.empty()) {
        return absl::InvalidArgumentError(
            "give either --concept / --concepts-from or --positive/--negative");
      }
      for (const std::string& path : files) {
        auto d = LoadDataset(path, dopts);
        if (!d.ok()) return d.status();
        out.push_back(std::move(*d));
      }
    } else if (!positive.empty() && !negative.empty()) {
      auto d = LoadSentenceFiles(positive, negative, name.empty() ? "concept" : name, dopts);
      if (!d.ok()) return d.status();
      out.push_back(std::move(*d));
    } else {
      return absl::InvalidArgumentError(
          "--concept FILE, --concepts-from DIR or --positive and --negative is required");
    }
    if (!name.empty()) {
      if (out.size() != 1) return absl::InvalidArgumentError("--name needs a single concept");
      out[0].concept = name;
    }
    return out;
  }

  // Every input path (an output must not replace one of them).
  std::vector<std::string> Inputs(const ModelFlags& m, const std::string& responses) const {
    std::vector<std::string> in = concept;
    if (!concepts_from.empty()) {
      if (auto listed = ConceptListFiles(concepts_from); listed.ok()) {
        in.insert(in.end(), listed->begin(), listed->end());
      }
    }
    for (const std::string* f : {&positive, &negative, &m.model, &responses}) in.push_back(*f);
    return in;
  }
};

// A file name for a concept's table in --out-dir: its name with path separators replaced.
std::string TableFileName(const std::string& concept) {
  std::string name = concept.empty() ? "concept" : concept;
  for (char& c : name)
    if (c == '/' || c == '\\' || c == '\0') c = '_';
  if (name == "." || name == "..") name = "concept";
  return name + ".json";
}

RankOptions::Progress ProgressCallback(Progress& progress) {
  return [&progress](int done, int total) {
    progress.Update(static_cast<double>(done) / total,
                    absl::StrCat(done, "/", total, " sentences"));
    return true;
  };
}

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

// ---- rank -------------------------------------------------------------------------------------

struct RankCommand {
  ModelFlags m;
  ConceptFlags concepts;
  std::vector<std::string> out;
  std::string out_dir, responses, compat;
  int top = 0;
  int max_memory = 0;

  CommandSpec Spec() {
    std::vector<FlagSpec> own = concepts.Flags(
        "use at most N sentences per class: the first N; with --compat, a seeded random N\n"
        "(default 1000)");
    for (FlagSpec f :
         {Texts(&out, "out", "TABLE",
                "output table (.json native, .csv ml-selfcond); one per concept"),
          Text(&out_dir, "out-dir", "DIR", "write each concept's table as DIR/<concept>.json"),
          Text(&responses, "responses", "R.scr",
               "stored pooled responses to rank from (selfcond responses)"),
          Text(&compat, "compat", "MODE",
               "ml-selfcond: pad to 128 tokens, drop longer, seeded subset"),
          Int(&top, "top", "N", "store only the N best units", 0, 1 << 30).ShowDefault("all"),
          Int(&max_memory, "max-memory", "MIB",
              "memory the pooled responses (sentences x units x 4 bytes) may take", 1, 1 << 30)
              .ShowDefault("half the machine's memory")}) {
      own.push_back(std::move(f));
    }
    return {
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
        "RandomState(1234), as ml-selfcond draws it; --max-sentences N sets the 1000), each "
        "padded\n"
        "with EOS to 128 tokens and max-pooled over all 128 positions (the pads attend to the\n"
        "sentence only, as under ml-selfcond's attention mask), sentences over 128 tokens "
        "dropped.\n"
        "Precision: ml-selfcond runs float32. --precision f32 computes in float32 with the file's\n"
        "float weights only when the model was converted with --keep-float; on an int8-only file\n"
        "it runs the dequantized int8 weights, so its table is the int8 model's, not the "
        "original's\n"
        "(docs/experts.md: the top-50 agreement with the float reference holds for --keep-float).",
        m.Around(std::move(own)),
        0,
        0};
  }

  // The outputs, checked before any work: no table may replace an input or another table, and
  // every directory must be writable.
  absl::Status CheckOutputs(const std::vector<std::string>& outs) const {
    for (size_t i = 0; i < outs.size(); ++i) {
      if (std::count(outs.begin(), outs.end(), outs[i]) > 1) {
        return absl::InvalidArgumentError(absl::StrCat("output '", outs[i], "' is named twice"));
      }
      if (auto st = CheckOutputPath(outs[i], concepts.Inputs(m, responses)); !st.ok()) return st;
    }
    return absl::OkStatus();
  }

  // expertise_info.json beside each .csv table, unless two tables share the directory.
  absl::StatusOr<std::vector<std::string>> InfoPaths(const std::vector<std::string>& outs) const {
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
      if (auto st = CheckOutputPath(info_paths[i], concepts.Inputs(m, responses)); !st.ok()) {
        return st;
      }
    }
    return info_paths;
  }

  absl::StatusOr<std::vector<ExpertTable>> RankAll(const Engine& engine,
                                                   const std::vector<Dataset>& data,
                                                   const RankOptions& ro) const {
    if (!responses.empty()) {
      auto store = ResponseStore::Load(responses);
      if (!store.ok()) return store.status();
      std::vector<ExpertTable> ts;
      for (const Dataset& d : data) {
        auto t = store->Rank(engine.model(), d, ro);
        if (!t.ok()) return t.status();
        ts.push_back(std::move(*t));
      }
      return ts;
    }
    if (data.size() == 1) {
      auto t = engine.Rank(data[0], ro);
      if (!t.ok()) return t.status();
      return std::vector<ExpertTable>{std::move(*t)};
    }
    return engine.RankAll(data, ro);
  }

  static absl::Status WriteTable(const ExpertTable& table, const Dataset& d, const std::string& out,
                                 const std::string& info_path, uint32_t n_ctx) {
    if (table.num_truncated > 0) {
      std::fprintf(stderr,
                   "warning: %d sentences of %s longer than the context (%u tokens) were "
                   "truncated\n",
                   table.num_truncated, d.concept.c_str(), n_ctx);
    }
    if (table.num_dropped > 0) {
      std::fprintf(stderr,
                   "note: %d sentences of %s longer than %d tokens were dropped (ml-selfcond "
                   "mode)\n",
                   table.num_dropped, d.concept.c_str(), table.compat_seq_len);
    }
    const bool csv = IsCsv(out);
    const std::string csv_text = csv ? ExportExpertiseCsv(table) : std::string();
    absl::Status st = csv ? WriteFile(out, csv_text) : SaveExpertTable(table, out);
    if (!st.ok()) return st;
    if (!info_path.empty()) {
      // Written after the CSV and tied to it by its hash: a reader that finds a sidecar of
      // another (or older) CSV beside it ignores that sidecar instead of mixing the two.
      if (st = WriteFile(info_path, ExportExpertiseInfoJson(table, csv_text)); !st.ok()) return st;
    }
    std::printf("concept %s: %d positive, %d negative sentences%s; wrote %s%s%s\n",
                d.concept.c_str(), table.num_positive, table.num_negative,
                table.compat.empty() ? "" : " (ml-selfcond mode)", out.c_str(),
                info_path.empty() ? "" : " and ", info_path.c_str());
    if (!info_path.empty() && out.substr(out.find_last_of('/') + 1) != "expertise.csv") {
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
    return absl::OkStatus();
  }

  absl::Status Run(const Args&) {
    const bool ml_compat = !compat.empty();
    if (ml_compat && compat != "ml-selfcond") {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown --compat mode '", compat, "' (the only mode is ml-selfcond)"));
    }
    if (ml_compat && !responses.empty()) {
      return absl::InvalidArgumentError(
          "--compat ml-selfcond pools over padded sentences: it runs the model and cannot rank "
          "from --responses");
    }
    std::vector<std::string> outs = out;
    if (!out_dir.empty() && !outs.empty()) {
      return absl::InvalidArgumentError("give either --out or --out-dir");
    }
    if (auto st = CheckOutputs(outs); !st.ok()) return st;
    // Compat mode draws its random subset from the whole dataset (in RankConcept).
    auto data = concepts.Load(ml_compat ? 0 : concepts.max_sentences);
    if (!data.ok()) return data.status();
    // One output per concept: --out in order, or --out-dir/<concept>.json.
    if (!out_dir.empty()) {
      for (const Dataset& d : *data) outs.push_back(out_dir + "/" + TableFileName(d.concept));
      if (auto st = CheckOutputs(outs); !st.ok()) return st;
    }
    auto info_paths = InfoPaths(outs);
    if (!info_paths.ok()) return info_paths.status();
    if (outs.size() != data->size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          data->size(), " concept(s) need as many --out (got ", outs.size(), "), or --out-dir"));
    }
    auto engine = m.Load();
    if (!engine.ok()) return engine.status();
    RankOptions ro = (*engine)->OnPool({});
    ro.precision = m.prec();
    ro.top_n = top;
    ro.max_memory = static_cast<size_t>(max_memory) << 20;
    if (ml_compat) {
      ro.compat.enabled = true;
      if (concepts.max_sentences > 0) ro.compat.per_class = concepts.max_sentences;
    }
    Progress progress("rank");
    ro.progress = ProgressCallback(progress);
    const auto t0 = std::chrono::steady_clock::now();
    auto tables = RankAll(**engine, *data, ro);
    if (!tables.ok()) return tables.status();
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    int n = 0;
    for (const ExpertTable& t : *tables) n += t.num_positive + t.num_negative;
    progress.Done(absl::StrCat(n, " labeled sentences in ", absl::SixDigits(secs), " s"));
    for (size_t i = 0; i < tables->size(); ++i) {
      if (auto st = WriteTable((*tables)[i], (*data)[i], outs[i], (*info_paths)[i],
                               (*engine)->model().config().n_ctx);
          !st.ok()) {
        return st;
      }
    }
    return absl::OkStatus();
  }
};

// ---- responses --------------------------------------------------------------------------------

struct ResponsesCommand {
  ModelFlags m;
  ConceptFlags concepts;
  std::string out;

  CommandSpec Spec() {
    std::vector<FlagSpec> own = concepts.Flags("use at most N sentences per class");
    own.push_back(Text(&out, "out", "R.scr", "output file").Required());
    return {"responses",
            "selfcond responses --concept FILE [--concept FILE ...] --out R.scr [--model M]",
            "Run every distinct sentence of the concept datasets through the model once and store\n"
            "each one's max-pooled unit responses (docs/responses-format.md), with the model's\n"
            "hash, so that `selfcond rank --responses R.scr --concept ...` ranks any concept over\n"
            "these sentences without running the model again.",
            m.Around(std::move(own)),
            0,
            0};
  }

  absl::Status Run(const Args&) {
    if (auto st = CheckOutputPath(out, concepts.Inputs(m, "")); !st.ok()) return st;
    auto data = concepts.Load(concepts.max_sentences);
    if (!data.ok()) return data.status();
    std::vector<std::string> all;
    for (const Dataset& d : *data) {
      all.insert(all.end(), d.positive.begin(), d.positive.end());
      all.insert(all.end(), d.negative.begin(), d.negative.end());
    }
    auto engine = m.Load();
    if (!engine.ok()) return engine.status();
    RankOptions ro = (*engine)->OnPool({});
    ro.precision = m.prec();
    Progress progress("responses");
    ro.progress = ProgressCallback(progress);
    auto store = ResponseStore::Compute((*engine)->model(), all, ro);
    if (!store.ok()) return store.status();
    progress.Done(absl::StrCat(store->num_sentences(), " distinct sentences"));
    if (auto st = store->Save(out); !st.ok()) return st;
    std::printf("wrote %s: %lld distinct sentences (of %zu) x %lld units, %.1f MiB\n", out.c_str(),
                static_cast<long long>(store->num_sentences()), all.size(),
                static_cast<long long>(store->num_units()),
                store->num_sentences() * store->num_units() * 4.0 / 1048576.0);
    return absl::OkStatus();
  }
};

}  // namespace

int RankMain(int argc, char** argv) { return Main<RankCommand>(argc, argv); }
int ResponsesMain(int argc, char** argv) { return Main<ResponsesCommand>(argc, argv); }

}  // namespace selfcond::cli
