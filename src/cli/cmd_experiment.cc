// selfcond experiment football|gender: the paper's experiments as one reproducible command
// (library: src/tools/paper_experiments.h; report: scripts/paper_report.py).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "experts/dataset.h"
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

absl::StatusOr<std::vector<double>> ParseNumbers(const std::string& flag, const std::string& s) {
  std::vector<double> out;
  for (absl::string_view part : absl::StrSplit(absl::string_view(s.data(), s.size()), ',')) {
    double x;
    if (!absl::SimpleAtod(part, &x) || !std::isfinite(x)) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": '",
                                                     std::string(part.data(), part.size()),
                                                     "' is not a number (want e.g. 2,4,8)"));
    }
    out.push_back(x);
  }
  return out;
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
      "selfcond experiment football|gender|compare [--model M] [--experts TABLE] [--out R.json]\n"
      "                    [options]",
      "Run one of the paper's experiments (Suau et al. 2022) in-process and write its results\n"
      "as JSON (scripts/paper_report.py turns them into docs/paper-experiments.md).\n"
      "  football: continuations of 4 prompts x --seeds seeds with the top-k football experts\n"
      "    forced to on_p50 at every position; per k: share of continuations mentioning a\n"
      "    football word and their perplexity under the unconditioned model.\n"
      "  gender: ml-selfcond's occupation prompts ('The nurse said that'); per k and concept\n"
      "    (woman, man): probability that the next word is she/her vs he/his, from the\n"
      "    next-token distribution restricted to the sampler's top-k (10, as ml-selfcond),\n"
      "    and each prompt's parity point (the k where the forced gender's pronouns catch up).\n"
      "  compare: expert forcing vs a steering vector vs a logit bias for the --concept dataset\n"
      "    (its table: --experts), each over a grid of strengths on the same prompts and seeds;\n"
      "    per setting: concept rate (the dataset's log-odds words), perplexity, Self-BLEU.\n"
      "Controls (football, gender): --random-units, --rank-offset, --layers, --per-layer,\n"
      "--metric. Perplexity is also scored by --scorer (default: the unforced model itself).",
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
       UnitChoiceFlags()[0],
       UnitChoiceFlags()[1],
       UnitChoiceFlags()[2],
       UnitChoiceFlags()[3],
       {"per-layer", "", "football: one run per block, forcing k units of that block only"},
       {"scorer", "MODEL",
        "football, compare: score prompt + continuation with this converted GPT-2 (default:\n"
        "the experiment's model, unforced)"},
       {"concept", "C.json",
        "compare: the concept dataset (default ../shared/concepts/football.json)"},
       {"methods", "M,M,..", "compare: experts,steer,bias (default all three)"},
       {"alphas", "A,A,..", "compare: steering strengths (default 1,2,4,8)"},
       {"betas", "B,B,..", "compare: logit bias strengths (default 2,4,6,8)"},
       {"steer-layer", "L", "compare: block of the steering vector (default n_layer / 2)"},
       {"prompts", "FILE", "football, compare: prompts, one per line (instead of --prompt)"},
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
  if (which != "football" && which != "gender" && which != "compare") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown experiment '", which, "' (want football, gender or compare)"));
  }
  const bool football = which == "football";
  const bool compare = which == "compare";
  auto choice = ParseUnitChoice(args);
  if (!choice.ok()) return choice.status();
  if (compare && (!choice->is_default() || args.Has("per-layer"))) {
    return absl::InvalidArgumentError(
        "compare forces the top-k experts by AP: the unit-choice flags belong to football and "
        "gender");
  }
  if (!football && args.Has("per-layer")) {
    return absl::InvalidArgumentError("--per-layer is a football option");
  }
  auto threads = args.GetInt("threads", 0, 0, 256);
  auto seeds = args.GetInt("seeds", 20, 1, 1 << 20);
  auto first_seed = args.GetInt("first-seed", 0, 0, 2147483647);
  auto new_tokens = args.GetInt("new-tokens", 30, 1, 1 << 16);
  auto temperature = args.GetDouble("temperature", 1.0, 1e-6, 100);
  auto top_p = args.GetDouble("top-p", 0.9, 1e-9, 1.0);
  auto top_k = args.GetInt("top-k", which == "gender" ? 10 : 0, 0, 1 << 30);
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
  const std::string default_ks = football  ? "0,10,20,50,100,200"
                                 : compare ? "10,20,50,100"
                                           : "0,1,3,10,30,60,100,300";
  auto ks = ParseKs(args.Get("ks", default_ks));
  if (!ks.ok()) return ks.status();
  auto forcing = ParseForcingValue(args.Get("forcing", "on_p50"));
  if (!forcing.ok()) return forcing.status();
  auto precision = ParsePrecision(args.Get("precision", "int8"));
  if (!precision.ok()) return precision.status();

  std::vector<std::string> table_paths = args.GetAll("experts");
  if (table_paths.empty()) {
    if (football || compare) {
      table_paths = {FindDefault("demo/experts/football.json")};
    } else {
      table_paths = {FindDefault("demo/experts/woman.json"), FindDefault("demo/experts/man.json")};
    }
  }
  if ((football || compare) && table_paths.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(which, " takes exactly one --experts table"));
  }
  std::vector<std::string> prompt_list = args.GetAll("prompt");
  if (args.Has("prompts")) {
    auto text = ReadFile(args.Get("prompts"));
    if (!text.ok()) return text.status();
    for (absl::string_view line :
         absl::StrSplit(absl::string_view(text->data(), text->size()), '\n')) {
      line = absl::StripTrailingAsciiWhitespace(line);
      if (!line.empty()) prompt_list.emplace_back(line.data(), line.size());
    }
    if (prompt_list.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--prompts ", args.Get("prompts"), ": no prompts"));
    }
  }
  const std::string model_path = args.Get("model", DefaultModelPath());
  auto engine = Engine::Load(model_path, EngineLoadOptions(args, *precision, *threads));
  if (!engine.ok()) return engine.status();
  const Model& model = (*engine)->model();
  std::vector<ExpertTable> tables;
  for (const auto& p : table_paths) {
    auto t = LoadExpertTable(p);
    if (!t.ok()) return t.status();  // names the path
    if (auto st = CheckCompatible(*t, model, args.Has("allow-unhashed")); !st.ok()) {
      return absl::Status(st.code(), absl::StrCat("expert table ", p, ": ", st.message(),
                                                  " (re-rank with selfcond rank)"));
    }
    tables.push_back(std::move(*t));
  }
  std::unique_ptr<Model> scorer;
  if (args.Has("scorer")) {
    if (which == "gender") return absl::InvalidArgumentError("--scorer: gender scores no text");
    auto m = Model::Load(args.Get("scorer"), ModelLoadOptions(args, *precision));
    if (!m.ok()) {
      return absl::Status(m.status().code(), absl::StrCat("--scorer ", args.Get("scorer"), ": ",
                                                          m.status().message()));
    }
    scorer = std::move(*m);
  }
  ThreadPool* pool = (*engine)->pool();

  // The command that reproduces this run, recorded in the results.
  std::string cmd = absl::StrCat("selfcond experiment ", which, " --model ", Quoted(model_path));
  for (const auto& p : table_paths) absl::StrAppend(&cmd, " --experts ", Quoted(p));
  absl::StrAppend(&cmd, " --ks ", args.Get("ks", default_ks));
  absl::StrAppend(&cmd, UnitChoiceCommand(*choice));

  json::Value results;
  Progress progress(absl::StrCat("experiment ", which));
  auto on_progress = [&](int done, int total) {
    progress.Update(static_cast<double>(done) / total, absl::StrCat(done, "/", total));
  };
  const auto t0 = std::chrono::steady_clock::now();
  auto set_grid = [&](GenerationGrid& o) {
    if (!prompt_list.empty()) o.prompts = prompt_list;
    o.seeds = *seeds;
    o.first_seed = static_cast<uint64_t>(*first_seed);
    o.new_tokens = *new_tokens;
    o.temperature = static_cast<float>(*temperature);
    o.top_p = static_cast<float>(*top_p);
    o.top_k = *top_k;
    o.precision = *precision;
    o.scorer = scorer.get();
    absl::StrAppend(&cmd, " --seeds ", o.seeds, " --first-seed ", o.first_seed, " --new-tokens ",
                    o.new_tokens, " --temperature ", o.temperature, " --top-p ", o.top_p,
                    " --top-k ", o.top_k);
    if (args.Has("prompts")) {
      absl::StrAppend(&cmd, " --prompts ", Quoted(args.Get("prompts")));
    } else if (!prompt_list.empty()) {
      for (const auto& p : o.prompts) absl::StrAppend(&cmd, " --prompt ", json::Quote(p));
    }
    if (scorer) absl::StrAppend(&cmd, " --scorer ", Quoted(args.Get("scorer")));
  };
  if (compare) {
    const std::string concept_path =
        args.Get("concept", FindDefault("../shared/concepts/football.json"));
    auto ds = LoadDataset(concept_path);
    if (!ds.ok()) return ds.status();
    CompareOptions o;
    o.ks = *ks;
    set_grid(o);
    o.forcing = *forcing;
    if (args.Has("methods")) {
      o.methods.clear();
      const std::string m = args.Get("methods");
      for (absl::string_view part : absl::StrSplit(absl::string_view(m.data(), m.size()), ',')) {
        o.methods.emplace_back(part.data(), part.size());
      }
    }
    for (auto [flag, out] : {std::pair{"alphas", &o.alphas}, std::pair{"betas", &o.betas}}) {
      if (!args.Has(flag)) continue;
      auto v = ParseNumbers(flag, args.Get(flag));
      if (!v.ok()) return v.status();
      *out = *v;
    }
    auto steer_layer = args.GetInt("steer-layer", -1, 0, 1 << 20);
    if (args.Has("steer-layer")) {
      if (!steer_layer.ok()) return steer_layer.status();
      o.steer_layer = *steer_layer;
    }
    absl::StrAppend(&cmd, " --concept ", Quoted(concept_path), " --methods ",
                    absl::StrJoin(o.methods, ","), " --alphas ", absl::StrJoin(o.alphas, ","),
                    " --betas ", absl::StrJoin(o.betas, ","));
    if (args.Has("steer-layer")) absl::StrAppend(&cmd, " --steer-layer ", o.steer_layer);
    auto r = (*engine)->CompareMethods(tables[0], *ds, o, on_progress);
    if (!r.ok()) return r.status();
    progress.Done();
    std::printf("compare '%s': %zu prompts x %d seeds, %d new tokens; concept words:",
                r->concept.c_str(), o.prompts.size(), o.seeds, o.new_tokens);
    for (const auto& w : r->words) std::printf(" %s", w.word.c_str());
    std::printf("\n%-8s %9s %10s %10s %11s %10s\n", "method", "strength", "rate", "ppl",
                "scorer ppl", "self-bleu");
    for (const auto& p : r->run.points) {
      std::printf("%-8s %9g %9.1f%% %10.2f %11.2f %10.3f\n", p.method.c_str(), p.strength,
                  100 * p.mention_rate, p.ppl, p.scorer_ppl, p.self_bleu);
    }
    results = CompareResultToJson(*r);
  } else if (football) {
    FootballExperimentOptions o;
    o.ks = *ks;
    set_grid(o);
    o.choice = *choice;
    o.per_layer = args.Has("per-layer");
    if (o.per_layer) absl::StrAppend(&cmd, " --per-layer");
    o.examples_per_k = *examples;
    o.forcing = *forcing;
    o.only_last_token = args.Has("only-last-token");
    auto r = RunFootballExperiment(model, tables[0], o, pool, on_progress);
    if (!r.ok()) return r.status();
    progress.Done();
    std::printf("football: %zu prompts x %d seeds, %d new tokens, T=%g, top-p %g; experts %s\n",
                o.prompts.size(), o.seeds, o.new_tokens, o.temperature, o.top_p,
                table_paths[0].c_str());
    std::printf("units: %s\n", DescribeUnitChoice(o.choice, 0).c_str());
    std::printf("%5s %6s %10s %10s %10s %10s %11s %10s\n", "layer", "k", "mentions", "rate", "ppl",
                "mean ppl", "scorer ppl", "self-bleu");
    for (const auto& p : r->points) {
      std::printf("%5s %6lld %5d/%-4d %9.1f%% %10.2f %10.2f %11.2f %10.3f\n",
                  p.layer < 0 ? "all" : std::to_string(p.layer).c_str(),
                  static_cast<long long>(p.k), p.mentions, p.samples, 100 * p.mention_rate, p.ppl,
                  p.mean_ppl, p.scorer_ppl, p.self_bleu);
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
    o.choice = *choice;
    absl::StrAppend(&cmd, " --occupations ", Quoted(occ_path), " --temperature ", o.temperature,
                    " --top-k ", o.sampler_top_k);
    if (*max_occ > 0) absl::StrAppend(&cmd, " --max-occupations ", *max_occ);
    if (*samples > 0) {
      absl::StrAppend(&cmd, " --samples ", *samples, " --sample-tokens ", *sample_tokens);
    }
    std::vector<const ExpertTable*> ptrs;
    for (const auto& t : tables) ptrs.push_back(&t);
    auto r = RunGenderExperiment(model, ptrs, std::move(*prompts), o, pool, on_progress);
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
      if (c.group == "all") {
        const size_t ci = static_cast<size_t>(&c - r->curves.data()) / 3;
        int reached = 0;
        std::vector<double> pts;
        for (double x : r->parity[ci]) {
          if (!std::isnan(x)) pts.push_back(x);
        }
        reached = static_cast<int>(pts.size());
        std::sort(pts.begin(), pts.end());
        std::printf("        parity point reached in %d/%zu contexts", reached,
                    r->parity[ci].size());
        if (!pts.empty()) std::printf(", median k = %.1f", pts[pts.size() / 2]);
        std::printf("\n");
      }
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
  absl::StrAppend(&cmd, " --precision ", args.Get("precision", "int8"), " --threads ",
                  (*engine)->threads());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  json::Value meta = json::Value::Object();
  meta.Set("command", json::Value::String(cmd));
  meta.Set("date_utc", json::Value::String(UtcNow()));
  meta.Set("seconds", json::Value::Number(secs));
  meta.Set("threads", json::Value::Number((*engine)->threads()));
  meta.Set("cores", json::Value::Number(ThreadPool::NumCores()));
  meta.Set("cpu", json::Value::String(CpuName()));
  meta.Set("backend", json::Value::String(kernels::DefaultBackend().name));
  meta.Set("model_path", json::Value::String(model_path));
  meta.Set("model_name", json::Value::String(model.name()));
  meta.Set("model_hash", json::Value::String(model.hash_hex()));
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
      uv.Set("layer", json::Value::String(tables[i].layer_name(u)));
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
  std::fprintf(stderr, "%.1f s on %d threads\n", secs, (*engine)->threads());
  if (args.Has("out")) {
    if (auto st = WriteFile(args.Get("out"), results.Dump() + "\n"); !st.ok()) return st;
    std::printf("wrote %s\n", args.Get("out").c_str());
  }
  return absl::OkStatus();
}

}  // namespace selfcond::cli
