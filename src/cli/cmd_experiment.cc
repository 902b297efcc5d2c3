// selfcond experiment football|gender: the paper's experiments as one reproducible command
// (library: src/tools/paper_experiments.h; report: scripts/paper_report.py).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "experts/expert_table.h"
#include "tools/paper_experiments.h"
#include "util/file_util.h"
#include "util/json.h"
#include "util/parallel.h"

namespace selfcond::cli {
namespace {

// A path relative to the working directory or its parent (as DefaultModelPath does).
std::string FindDefault(const std::string& rel) {
  for (const std::string& p : {rel, "../" + rel}) {
    if (std::filesystem::exists(p)) return p;
  }
  return rel;
}

std::string DefaultOccupations() {
  std::vector<std::string> candidates;
  if (const char* d = std::getenv("SELFCOND_SHARED_DIR")) {
    candidates.push_back(std::string(d) + "/concepts/occupations.json");
  }
  candidates.push_back("../shared/concepts/occupations.json");
  candidates.push_back("../../shared/concepts/occupations.json");
  for (const auto& c : candidates) {
    if (std::filesystem::exists(c)) return c;
  }
  return "../shared/concepts/occupations.json";
}

absl::StatusOr<std::vector<int64_t>> ParseKs(const std::string& s) {
  std::vector<int64_t> ks;
  for (absl::string_view part : absl::StrSplit(absl::string_view(s.data(), s.size()), ',')) {
    int64_t k;
    if (!absl::SimpleAtoi(part, &k) || k < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--ks: '", std::string(part.data(), part.size()),
                       "' is not a non-negative integer (want e.g. 0,10,50)"));
    }
    ks.push_back(k);
  }
  if (ks.empty()) return absl::InvalidArgumentError("--ks is empty");
  return ks;
}

std::string CpuName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t c = line.find(':');
      if (c != std::string::npos) return line.substr(line.find_first_not_of(' ', c + 1));
    }
  }
  return "unknown";
}

std::string UtcNow() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string Quoted(const std::string& s) {
  return s.find_first_of(" \"'$") == std::string::npos ? s : json::Quote(s);
}

}  // namespace

const CommandSpec& ExperimentSpec() {
  static const CommandSpec s{
      "experiment",
      "selfcond experiment football|gender [--model M] [--experts TABLE] [--out R.json] [options]",
      "Run one of the paper's experiments (Suau et al. 2022) in-process and write its results\n"
      "as JSON (scripts/paper_report.py turns them into docs/paper-experiments.md).\n"
      "  football: continuations of 4 prompts x --seeds seeds with the top-k football experts\n"
      "    forced to on_p50 at every position; per k: share of continuations mentioning a\n"
      "    football word and their perplexity under the unconditioned model.\n"
      "  gender: ml-selfcond's occupation prompts ('The nurse said that'); per k and concept\n"
      "    (woman, man): probability that the next word is she/her vs he/his, from the\n"
      "    next-token distribution restricted to the sampler's top-k (10, as ml-selfcond).",
      {{"model", "M", "model file (default: the demo model)"},
       {"experts", "TABLE",
        "football: one table (default demo/experts/football.json); gender: two (default "
        "demo/experts/woman.json, man.json)",
        true},
       {"out", "R.json", "results file (default: print the summary only)"},
       {"ks", "K,K,..",
        "numbers of experts to force (default football 0,10,20,50,100,200; "
        "gender 0,20,50,100,200)"},
       {"seeds", "N", "football: seeds per prompt (default 20)"},
       {"first-seed", "S", "football: first seed (default 0)"},
       {"prompt", "P", "football: a prompt (default the 4 of the report)", true},
       {"new-tokens", "N", "football: tokens per continuation (default 30)"},
       {"temperature", "T", "sampling temperature (default 1.0)"},
       {"top-p", "P", "football: nucleus mass (default 0.9)"},
       {"top-k", "K",
        "football: sampler top-k (default 0 = off); gender: p restricted to the top K "
        "(default 10; 0 = full softmax)"},
       {"examples", "N", "football: example continuations kept per k (default 4)"},
       {"occupations", "FILE", "gender: occupations.json (default ../shared/concepts/...)"},
       {"max-occupations", "N", "gender: first N occupations per group (default all)"},
       {"samples", "N",
        "gender: also sample N continuations per prompt and condition and count them as "
        "ml-selfcond does (a cross-check of the exact probabilities; slow)"},
       {"sample-tokens", "N", "gender: tokens per sampled continuation (default 3)"},
       {"forcing", "on_p50|on_p90", "forcing value (default on_p50)"},
       {"only-last-token", "", "force only at the last position (default: every position)"},
       {"precision", "int8|f32", "arithmetic (default int8)"},
       {"threads", "N", "worker threads, one session each (default: all cores)"},
       AllowUnhashedFlag(),
       NoVerifyFlag(),
       CopyModelFlag()},
      1,
      1};
  return s;
}

absl::Status RunExperiment(const Args& args) {
  if (args.Has("out")) {
    if (auto st = CheckOutputPath(args.Get("out"), {args.Get("model")}); !st.ok()) return st;
  }
  const std::string which = args.positional()[0];
  if (which != "football" && which != "gender") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown experiment '", which, "' (want football or gender)"));
  }
  const bool football = which == "football";
  auto threads = args.GetInt("threads", 0, 0, 256);
  auto seeds = args.GetInt("seeds", 20, 1, 1 << 20);
  auto first_seed = args.GetInt("first-seed", 0, 0, 2147483647);
  auto new_tokens = args.GetInt("new-tokens", 30, 1, 1 << 16);
  auto temperature = args.GetDouble("temperature", 1.0, 1e-6, 100);
  auto top_p = args.GetDouble("top-p", 0.9, 1e-9, 1.0);
  auto top_k = args.GetInt("top-k", football ? 0 : 10, 0, 1 << 30);
  auto examples = args.GetInt("examples", 4, 0, 1 << 20);
  auto max_occ = args.GetInt("max-occupations", 0, 0, 1 << 20);
  auto samples = args.GetInt("samples", 0, 0, 1 << 20);
  auto sample_tokens = args.GetInt("sample-tokens", 3, 1, 1 << 16);
  for (const auto* st :
       {&threads.status(), &seeds.status(), &first_seed.status(), &new_tokens.status(),
        &temperature.status(), &top_p.status(), &top_k.status(), &examples.status(),
        &max_occ.status(), &samples.status(), &sample_tokens.status()}) {
    if (!st->ok()) return *st;
  }
  auto ks = ParseKs(args.Get("ks", football ? "0,10,20,50,100,200" : "0,20,50,100,200"));
  if (!ks.ok()) return ks.status();
  auto forcing = ParseForcingValue(args.Get("forcing", "on_p50"));
  if (!forcing.ok()) return forcing.status();
  auto precision = ParsePrecision(args.Get("precision", "int8"));
  if (!precision.ok()) return precision.status();

  std::vector<std::string> table_paths = args.GetAll("experts");
  if (table_paths.empty()) {
    if (football) {
      table_paths = {FindDefault("demo/experts/football.json")};
    } else {
      table_paths = {FindDefault("demo/experts/woman.json"), FindDefault("demo/experts/man.json")};
    }
  }
  if (football && table_paths.size() != 1) {
    return absl::InvalidArgumentError("football takes exactly one --experts table");
  }
  const std::string model_path = args.Get("model", DefaultModelPath());
  auto model = Model::Load(model_path, ModelLoadOptions(args, *precision));
  if (!model.ok()) return model.status();
  std::vector<ExpertTable> tables;
  for (const auto& p : table_paths) {
    auto t = LoadExpertTable(p);
    if (!t.ok()) return t.status();  // names the path
    if (auto st = CheckCompatible(*t, **model, args.Has("allow-unhashed")); !st.ok()) {
      return absl::Status(st.code(), absl::StrCat("expert table ", p, ": ", st.message(),
                                                  " (re-rank with selfcond rank)"));
    }
    tables.push_back(std::move(*t));
  }
  ThreadPool pool(*threads);

  // The command that reproduces this run, recorded in the results.
  std::string cmd = absl::StrCat("selfcond experiment ", which, " --model ", Quoted(model_path));
  for (const auto& p : table_paths) absl::StrAppend(&cmd, " --experts ", Quoted(p));
  absl::StrAppend(&cmd, " --ks ",
                  args.Get("ks", football ? "0,10,20,50,100,200" : "0,20,50,100,200"));

  json::Value results;
  Progress progress(absl::StrCat("experiment ", which));
  auto on_progress = [&](int done, int total) {
    progress.Update(static_cast<double>(done) / total, absl::StrCat(done, "/", total));
  };
  const auto t0 = std::chrono::steady_clock::now();
  if (football) {
    FootballExperimentOptions o;
    o.ks = *ks;
    if (args.Has("prompt")) o.prompts = args.GetAll("prompt");
    o.seeds = *seeds;
    o.first_seed = static_cast<uint64_t>(*first_seed);
    o.new_tokens = *new_tokens;
    o.temperature = static_cast<float>(*temperature);
    o.top_p = static_cast<float>(*top_p);
    o.top_k = *top_k;
    o.examples_per_k = *examples;
    o.forcing = *forcing;
    o.only_last_token = args.Has("only-last-token");
    o.precision = *precision;
    absl::StrAppend(&cmd, " --seeds ", o.seeds, " --first-seed ", o.first_seed, " --new-tokens ",
                    o.new_tokens, " --temperature ", o.temperature, " --top-p ", o.top_p,
                    " --top-k ", o.top_k);
    if (args.Has("prompt")) {
      for (const auto& p : o.prompts) absl::StrAppend(&cmd, " --prompt ", json::Quote(p));
    }
    auto r = RunFootballExperiment(**model, tables[0], o, &pool, on_progress);
    if (!r.ok()) return r.status();
    progress.Done();
    std::printf("football: %zu prompts x %d seeds, %d new tokens, T=%g, top-p %g; experts %s\n",
                o.prompts.size(), o.seeds, o.new_tokens, o.temperature, o.top_p,
                table_paths[0].c_str());
    std::printf("%6s %10s %10s %10s %10s\n", "k", "mentions", "rate", "ppl", "mean ppl");
    for (const auto& p : r->points) {
      std::printf("%6lld %5d/%-4d %9.1f%% %10.2f %10.2f\n", static_cast<long long>(p.k), p.mentions,
                  p.samples, 100 * p.mention_rate, p.ppl, p.mean_ppl);
    }
    results = FootballResultToJson(*r);
  } else {
    const std::string occ_path = args.Get("occupations", DefaultOccupations());
    auto text = ReadFile(occ_path);
    if (!text.ok()) return text.status();
    auto prompts = ParseOccupationPrompts(*text, *max_occ);
    if (!prompts.ok()) {
      return absl::Status(prompts.status().code(),
                          absl::StrCat(occ_path, ": ", prompts.status().message()));
    }
    GenderExperimentOptions o;
    o.ks = *ks;
    o.temperature = static_cast<float>(*temperature);
    o.sampler_top_k = *top_k;
    o.samples = *samples;
    o.sample_tokens = *sample_tokens;
    o.forcing = *forcing;
    o.only_last_token = args.Has("only-last-token");
    o.precision = *precision;
    absl::StrAppend(&cmd, " --occupations ", Quoted(occ_path), " --temperature ", o.temperature,
                    " --top-k ", o.sampler_top_k);
    if (*max_occ > 0) absl::StrAppend(&cmd, " --max-occupations ", *max_occ);
    if (*samples > 0) {
      absl::StrAppend(&cmd, " --samples ", *samples, " --sample-tokens ", *sample_tokens);
    }
    std::vector<const ExpertTable*> ptrs;
    for (const auto& t : tables) ptrs.push_back(&t);
    auto r = RunGenderExperiment(**model, ptrs, std::move(*prompts), o, &pool, on_progress);
    if (!r.ok()) return r.status();
    progress.Done();
    std::printf("gender: %zu prompts; p(she,her) / p(he,his) of the next word (top-%d, T=%g)\n",
                r->prompts.size(), o.sampler_top_k, o.temperature);
    for (const auto& c : r->curves) {
      std::printf("  do(%s, k) on %-6s prompts:", c.concept.c_str(), c.group.c_str());
      for (size_t i = 0; i < c.ks.size(); ++i) {
        std::printf("  k=%lld %.3f/%.3f", static_cast<long long>(c.ks[i]), c.p_she[i], c.p_he[i]);
      }
      std::printf("\n");
      if (!c.sampled_she.empty()) {
        std::printf("        sampled (%d per prompt):", o.samples);
        for (size_t i = 0; i < c.ks.size(); ++i) {
          std::printf("  k=%lld %.3f/%.3f", static_cast<long long>(c.ks[i]), c.sampled_she[i],
                      c.sampled_he[i]);
        }
        std::printf("\n");
      }
    }
    results = GenderResultToJson(*r);
  }
  if (args.Has("forcing")) absl::StrAppend(&cmd, " --forcing ", args.Get("forcing"));
  if (args.Has("only-last-token")) absl::StrAppend(&cmd, " --only-last-token");
  absl::StrAppend(&cmd, " --precision ", args.Get("precision", "int8"), " --threads ", pool.size());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  json::Value meta = json::Value::Object();
  meta.Set("command", json::Value::String(cmd));
  meta.Set("date_utc", json::Value::String(UtcNow()));
  meta.Set("seconds", json::Value::Number(secs));
  meta.Set("threads", json::Value::Number(pool.size()));
  meta.Set("cores", json::Value::Number(ThreadPool::NumCores()));
  meta.Set("cpu", json::Value::String(CpuName()));
  meta.Set("backend", json::Value::String(kernels::DefaultBackend().name));
  meta.Set("model_path", json::Value::String(model_path));
  meta.Set("model_name", json::Value::String((*model)->name()));
  meta.Set("model_hash", json::Value::String((*model)->hash_hex()));
  json::Value tmeta = json::Value::Array();
  for (size_t i = 0; i < tables.size(); ++i) {
    json::Value t = json::Value::Object();
    t.Set("path", json::Value::String(table_paths[i]));
    t.Set("concept", json::Value::String(tables[i].concept));
    t.Set("units_stored", json::Value::Number(static_cast<double>(tables[i].units.size())));
    t.Set("total_units", json::Value::Number(static_cast<double>(tables[i].total_units)));
    t.Set("num_positive", json::Value::Number(tables[i].num_positive));
    t.Set("num_negative", json::Value::Number(tables[i].num_negative));
    json::Value top = json::Value::Array();
    for (size_t j = 0; j < tables[i].units.size() && j < 5; ++j) {
      const ExpertUnit& u = tables[i].units[j];
      json::Value uv = json::Value::Object();
      uv.Set("layer", json::Value::String(u.layer_name()));
      uv.Set("unit", json::Value::Number(u.unit));
      uv.Set("ap", json::Value::Number(u.ap));
      uv.Set("on_p50", json::Value::Number(u.on_p50));
      top.Push(std::move(uv));
    }
    t.Set("top_units", std::move(top));
    tmeta.Push(std::move(t));
  }
  meta.Set("expert_tables", std::move(tmeta));
  results.Set("meta", std::move(meta));
  std::fprintf(stderr, "%.1f s on %d threads\n", secs, pool.size());
  if (args.Has("out")) {
    if (auto st = WriteFile(args.Get("out"), results.Dump() + "\n"); !st.ok()) return st;
    std::printf("wrote %s\n", args.Get("out").c_str());
  }
  return absl::OkStatus();
}

}  // namespace selfcond::cli
