// selfcond rank, and the --experts option of generate.
#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "experts/dataset.h"
#include "experts/expert_table.h"
#include "experts/rank.h"
#include "util/file_util.h"

namespace selfcond::cli {

absl::StatusOr<Forcing> BuildForcingFromArgs(const Model& model,
                                             const std::vector<std::string>& specs,
                                             const std::string& forcing_value, bool only_last_token,
                                             bool allow_unhashed) {
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
    auto t = LoadExpertTable(path);
    if (!t.ok()) return t.status();  // names the path
    if (auto st = CheckCompatible(*t, model, allow_unhashed); !st.ok()) {
      return absl::Status(st.code(), absl::StrCat("expert table ", path, ": ", st.message()));
    }
    if (k > static_cast<int64_t>(t->units.size())) {
      return absl::OutOfRangeError(absl::StrCat("--experts ", specs[i], ": the table holds only ",
                                                t->units.size(), " units"));
    }
    tables[i] = std::move(*t);
    sources.push_back({&tables[i], k});
  }
  return BuildForcing(sources, *value, only_last_token, UnitSpace(model.config()));
}

const CommandSpec& RankSpec() {
  static const CommandSpec s{
      "rank",
      "selfcond rank --concept FILE --out TABLE [--model M] [options]",
      "Rank every unit of the model as an expert for a concept: run positive and negative\n"
      "sentences, max-pool each unit's response over the sentence's tokens, and score it by\n"
      "average precision. --concept takes ml-selfcond JSON or '+ '/'- ' prefixed lines;\n"
      "--positive/--negative take one sentence per line. --out x.csv writes ml-selfcond's\n"
      "expertise.csv, anything else the native JSON table.",
      {{"model", "M", "model file (default: the demo model)"},
       {"concept", "FILE", "concept dataset (JSON or +/- lines)"},
       {"positive", "FILE", "positive sentences, one per line (with --negative)"},
       {"negative", "FILE", "negative sentences, one per line (with --positive)"},
       {"name", "NAME", "concept name (plain files; default: the file name)"},
       {"out", "TABLE", "output table (.json native, .csv ml-selfcond)"},
       {"max-sentences", "N", "use at most N sentences per class (default: all)"},
       {"top", "N", "store only the N best units (default: all)"},
       {"precision", "int8|f32", "arithmetic (default int8)"},
       {"threads", "N", "threads (default: all cores)"},
       NoVerifyFlag(),
       CopyModelFlag()},
      0,
      0};
  return s;
}

absl::Status RunRank(const Args& args) {
  auto out = args.Required("out");
  if (!out.ok()) return out.status();
  // Before any work: the table must not replace an input, and its directory must be writable.
  if (auto st = CheckOutputPath(*out, {args.Get("concept"), args.Get("positive"),
                                       args.Get("negative"), args.Get("model")});
      !st.ok()) {
    return st;
  }
  auto max_sentences = args.GetInt("max-sentences", 0, 0, 1 << 30);
  auto threads = args.GetInt("threads", 0, 0, 256);
  auto top = args.GetInt("top", 0, 0, 1 << 30);
  for (const auto* st : {&max_sentences.status(), &threads.status(), &top.status()}) {
    if (!st->ok()) return *st;
  }
  DatasetOptions dopts;
  dopts.max_sentences = *max_sentences;
  absl::StatusOr<Dataset> data;
  if (args.Has("concept")) {
    if (args.Has("positive") || args.Has("negative")) {
      return absl::InvalidArgumentError("give either --concept or --positive/--negative");
    }
    data = LoadDataset(args.Get("concept"), dopts);
  } else if (args.Has("positive") && args.Has("negative")) {
    data = LoadSentenceFiles(args.Get("positive"), args.Get("negative"),
                             args.Get("name", "concept"), dopts);
  } else {
    return absl::InvalidArgumentError("--concept FILE (or --positive and --negative) is required");
  }
  if (!data.ok()) return data.status();
  if (args.Has("name")) data->concept = args.Get("name");
  auto prec = ParsePrecision(args.Get("precision", "int8"));
  if (!prec.ok()) return prec.status();
  auto model = Model::Load(args.Get("model", DefaultModelPath()), ModelLoadOptions(args, *prec));
  if (!model.ok()) return model.status();
  ThreadPool pool(*threads);
  RankOptions ro;
  ro.precision = *prec;
  ro.pool = &pool;
  ro.top_n = *top;
  Progress progress("rank");
  ro.progress = [&](int done, int total) {
    progress.Update(static_cast<double>(done) / total,
                    absl::StrCat(done, "/", total, " sentences"));
    return true;
  };
  auto t0 = std::chrono::steady_clock::now();
  auto table = RankConcept(**model, *data, ro);
  if (!table.ok()) return table.status();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int n = static_cast<int>(data->positive.size() + data->negative.size());
  progress.Done(absl::StrCat(n, " sentences, ", static_cast<int>(n / secs), " sentences/s"));
  if (table->num_truncated > 0) {
    std::fprintf(stderr,
                 "warning: %d sentences longer than the context (%u tokens) were truncated\n",
                 table->num_truncated, (*model)->config().n_ctx);
  }
  const bool csv = out->size() >= 4 && out->substr(out->size() - 4) == ".csv";
  absl::Status st =
      csv ? WriteFile(*out, ExportExpertiseCsv(*table)) : SaveExpertTable(*table, *out);
  if (!st.ok()) return st;
  std::printf("concept %s: %zu positive, %zu negative sentences; wrote %s\n", data->concept.c_str(),
              data->positive.size(), data->negative.size(), out->c_str());
  std::printf("top units:\n");
  for (size_t i = 0; i < std::min<size_t>(10, table->units.size()); ++i) {
    const auto& u = table->units[i];
    std::printf("  %-34s unit %5d  ap %.4f  on_p50 %8.4f  on_p90 %8.4f  off_mean %8.4f\n",
                u.layer_name().c_str(), u.unit, u.ap, u.on_p50, u.on_p90, u.off_mean);
  }
  return absl::OkStatus();
}

}  // namespace selfcond::cli
