// selfcond experiment football|gender: the paper's experiments as one reproducible command
// (library: src/tools/paper_experiments.h; report: scripts/paper_report.py).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <memory>
#include <string>
#include <tuple>
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
#include "kernels/kernels.h"
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
  const std::string name = kernels::CpuInfoField("model name");
  return name.empty() ? "unknown" : name;
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

struct ExperimentCommand {
  ModelFlags m;
  std::vector<std::string> experts;
  std::string out, ks;
  int seeds = 20, first_seed = 0, new_tokens = 30;
  double temperature = 1.0, top_p = 0.9;
  int top_k = -1;  // -1: the experiment's default (football 0 = off, gender 10)
  int examples = 4;
  std::string occupations;
  int max_occupations = 0, samples = 0, sample_tokens = 3, generate = 0;
  std::string forcing = "on_p50";
  bool only_last_token = false, per_layer = false, per_linear_layer = false, allow_unhashed = false;
  UnitChoiceFlags choice;
  std::string scorer_path, concept, methods, alphas, betas, gen_sentences;
  int steer_layer = -1;
  std::vector<std::string> prompt;
  std::string prompts;

  // Filled by Run: what every experiment shares.
  std::string which;
  std::string cmd;  // the command that reproduces the run, recorded in the results
  std::shared_ptr<Engine> engine;
  std::vector<std::string> table_paths;
  std::vector<ExpertTable> tables;
  std::unique_ptr<Model> scorer;
  std::vector<std::string> prompt_list;
  std::vector<int64_t> k_list;

  CommandSpec Spec() {
    std::vector<FlagSpec> own = {
        Texts(&experts, "experts", "TABLE",
              "football: one table (default demo/experts/football.json); gender: two (default\n"
              "demo/experts/woman.json, man.json)"),
        Text(&out, "out", "R.json", "results file (default: print the summary only)"),
        Text(&ks, "ks", "K,K,..",
             "numbers of experts to force (default football 0,10,20,50,100,200; gender\n"
             "0,1,3,10,30,60,100,300; compare 10,20,50,100)"),
        Int(&seeds, "seeds", "N", "football, compare: seeds per prompt", 1, 1 << 20),
        Int(&first_seed, "first-seed", "S", "football, compare: first seed", 0, 2147483647),
        Texts(&prompt, "prompt", "P", "football, compare: a prompt (default the 4 of the report)"),
        Text(&prompts, "prompts", "FILE", "football, compare: prompts, one per line"),
        Int(&new_tokens, "new-tokens", "N",
            "football, compare, gender --generate: tokens per continuation", 1, 1 << 16)
            .ShowDefault("30; gender 15, as ml-selfcond's generate_batch.py"),
        Real(&temperature, "temperature", "T", "sampling temperature", 1e-6, 100),
        Real(&top_p, "top-p", "P", "football, compare: nucleus mass", 1e-9, 1.0),
        Int(&top_k, "top-k", "K",
            "football, compare: sampler top-k (0 = off); gender: p restricted to the top K (0 =\n"
            "full softmax)",
            0, 1 << 30)
            .ShowDefault("football 0, gender 10"),
        Int(&examples, "examples", "N", "football: example continuations kept per k", 0, 1 << 20),
        Text(&gen_sentences, "gen-sentences", "DIR",
             "football, gender --generate: also write every continuation as ml-selfcond's\n"
             "gen_sentences CSVs in DIR (one per concept and prompt; its compute_frequency,\n"
             "compute_perplexity and compute_selfbleu scripts read them)"),
        Int(&generate, "generate", "N",
            "gender: also generate N continuations per prompt and condition (--new-tokens, top-k\n"
            "10, T=1, as ml-selfcond) for perplexity and Self-BLEU per k and at parity (slow)",
            0, 1 << 20),
        Text(&occupations, "occupations", "FILE",
             "gender: occupations.json (default ../shared/concepts/occupations.json)"),
        Int(&max_occupations, "max-occupations", "N", "gender: first N occupations per group", 0,
            1 << 20)
            .ShowDefault("all"),
        Int(&samples, "samples", "N",
            "gender: also sample N continuations per prompt and condition and count them as\n"
            "ml-selfcond does (a cross-check of the exact probabilities; slow)",
            0, 1 << 20),
        Int(&sample_tokens, "sample-tokens", "N", "gender: tokens per sampled continuation", 1,
            1 << 16),
        OneOf(&forcing, "forcing", {"on_p50", "on_p90", "off_mean", "zero"}, "forcing value"),
        Switch(&only_last_token, "only-last-token",
               "force only at the last position (default: every position)")};
    for (FlagSpec& f : choice.Flags()) own.push_back(std::move(f));
    for (FlagSpec f :
         {Switch(&per_layer, "per-layer",
                 "football: one run per block, forcing k units of that block only"),
          Switch(&per_linear_layer, "per-linear-layer",
                 "football: one run per linear layer (attn.c_attn, mlp.c_fc, ...), forcing its\n"
                 "top k units only, as ml-selfcond's generate_seq.py --per-layer"),
          Text(&scorer_path, "scorer", "MODEL",
               "football, compare: score prompt + continuation with this converted model\n"
               "(default: the experiment's model, unforced)"),
          Text(&concept, "concept", "C.json",
               "compare: the concept dataset (default ../shared/concepts/football.json)"),
          Text(&methods, "methods", "M,M,..", "compare: experts,steer,bias (default all three)"),
          Text(&alphas, "alphas", "A,A,..", "compare: steering strengths (default 1,2,4,8)"),
          Text(&betas, "betas", "B,B,..", "compare: logit bias strengths (default 2,4,6,8)"),
          Int(&steer_layer, "steer-layer", "L", "compare: block of the steering vector", 0, 1 << 20)
              .ShowDefault("n_layer / 2"),
          AllowUnhashedFlag(&allow_unhashed)}) {
      own.push_back(std::move(f));
    }
    return {
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
        m.Around(std::move(own)),
        1,
        1};
  }

  bool football() const { return which == "football"; }
  bool compare() const { return which == "compare"; }
  bool gender() const { return which == "gender"; }

  // Checks the combination of flags before anything is loaded.
  absl::Status Validate(const Args& args, const UnitChoice& units) {
    if (!football() && !gender() && !compare()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown experiment '", which, "' (want football, gender or compare)"));
    }
    if (!out.empty()) {
      if (auto st = CheckOutputPath(out, {m.model}); !st.ok()) return st;
    }
    if (compare() && (!units.is_default() || per_layer || per_linear_layer)) {
      return absl::InvalidArgumentError(
          "compare forces the top-k experts by AP: the unit-choice flags belong to football and "
          "gender");
    }
    if (!football() && !gender() && !gen_sentences.empty())
      return absl::InvalidArgumentError("--gen-sentences is a football or gender option");
    if (gender() && !gen_sentences.empty() && generate == 0)
      return absl::InvalidArgumentError("--gen-sentences with gender needs --generate N");
    if (!gender() && generate > 0)
      return absl::InvalidArgumentError("--generate is a gender option");
    if (gender() && !args.Has("new-tokens")) new_tokens = 15;
    if (!gen_sentences.empty()) {
      if (auto st = CheckOutputPath(gen_sentences + "/gen_sentences.csv", {}); !st.ok()) return st;
    }
    if (!football() && (per_layer || per_linear_layer))
      return absl::InvalidArgumentError("--per-layer and --per-linear-layer are football options");
    if (per_layer && per_linear_layer)
      return absl::InvalidArgumentError(
          "give --per-layer (blocks) or --per-linear-layer, not both");
    if (gender() && !scorer_path.empty()) {
      return absl::InvalidArgumentError("--scorer: gender scores no text");
    }
    if (top_k < 0) top_k = gender() ? 10 : 0;
    if (ks.empty()) {
      ks = football()  ? "0,10,20,50,100,200"
           : compare() ? "10,20,50,100"
                       : "0,1,3,10,30,60,100,300";
    }
    auto parsed = ParseKs(ks);
    if (!parsed.ok()) return parsed.status();
    k_list = std::move(*parsed);
    table_paths = experts;
    if (table_paths.empty()) {
      table_paths = gender() ? std::vector<std::string>{FindDefault("demo/experts/woman.json"),
                                                        FindDefault("demo/experts/man.json")}
                             : std::vector<std::string>{FindDefault("demo/experts/football.json")};
    }
    if (!gender() && table_paths.size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(which, " takes exactly one --experts table"));
    }
    (void)args;
    return absl::OkStatus();
  }

  absl::Status ReadPrompts() {
    prompt_list = prompt;
    if (prompts.empty()) return absl::OkStatus();
    auto text = ReadFile(prompts);
    if (!text.ok()) return text.status();
    for (absl::string_view line :
         absl::StrSplit(absl::string_view(text->data(), text->size()), '\n')) {
      line = absl::StripTrailingAsciiWhitespace(line);
      if (!line.empty()) prompt_list.emplace_back(line.data(), line.size());
    }
    if (prompt_list.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--prompts ", prompts, ": no prompts"));
    }
    return absl::OkStatus();
  }

  // The engine, the expert tables (checked against its model) and the scorer.
  absl::Status LoadInputs() {
    auto e = m.Load();
    if (!e.ok()) return e.status();
    engine = std::move(*e);
    for (const auto& p : table_paths) {
      auto t = LoadExpertTable(p);
      if (!t.ok()) return t.status();  // names the path
      if (auto st = CheckCompatible(*t, engine->model(), allow_unhashed); !st.ok()) {
        return absl::Status(st.code(), absl::StrCat("expert table ", p, ": ", st.message(),
                                                    " (re-rank with selfcond rank)"));
      }
      tables.push_back(std::move(*t));
    }
    if (!scorer_path.empty()) {
      Model::LoadOptions lo;
      lo.need_float = m.prec() == Precision::kF32;
      lo.verify_hash = !m.no_verify;
      lo.copy_to_memory = m.copy_model;
      auto s = Model::Load(scorer_path, lo);
      if (!s.ok()) {
        return absl::Status(s.status().code(),
                            absl::StrCat("--scorer ", scorer_path, ": ", s.status().message()));
      }
      scorer = std::move(*s);
    }
    return absl::OkStatus();
  }

  // The generation settings of football and compare (recorded in the command).
  void SetGrid(GenerationGrid& o) {
    if (!prompt_list.empty()) o.prompts = prompt_list;
    o.seeds = seeds;
    o.first_seed = static_cast<uint64_t>(first_seed);
    o.new_tokens = new_tokens;
    o.temperature = static_cast<float>(temperature);
    o.top_p = static_cast<float>(top_p);
    o.top_k = top_k;
    o.precision = m.prec();
    o.scorer = scorer.get();
    absl::StrAppend(&cmd, " --seeds ", o.seeds, " --first-seed ", o.first_seed, " --new-tokens ",
                    o.new_tokens, " --temperature ", o.temperature, " --top-p ", o.top_p,
                    " --top-k ", o.top_k);
    if (!prompts.empty()) {
      absl::StrAppend(&cmd, " --prompts ", Quoted(prompts));
    } else if (!prompt_list.empty()) {
      for (const auto& p : o.prompts) absl::StrAppend(&cmd, " --prompt ", json::Quote(p));
    }
    if (scorer) absl::StrAppend(&cmd, " --scorer ", Quoted(scorer_path));
  }

  absl::StatusOr<json::Value> RunCompare(const ExperimentProgress& on_progress) {
    const std::string concept_path =
        concept.empty() ? FindDefault("../shared/concepts/football.json") : concept;
    auto ds = LoadDataset(concept_path);
    if (!ds.ok()) return ds.status();
    CompareOptions o;
    o.ks = k_list;
    SetGrid(o);
    o.forcing = *ParseForcingValue(forcing);
    if (!methods.empty()) o.methods = absl::StrSplit(methods, ',');
    for (auto [flag, text, dst] :
         {std::tuple{"alphas", &alphas, &o.alphas}, std::tuple{"betas", &betas, &o.betas}}) {
      if (text->empty()) continue;
      auto v = ParseNumbers(flag, *text);
      if (!v.ok()) return v.status();
      *dst = *v;
    }
    if (steer_layer >= 0) o.steer_layer = steer_layer;
    absl::StrAppend(&cmd, " --concept ", Quoted(concept_path), " --methods ",
                    absl::StrJoin(o.methods, ","), " --alphas ", absl::StrJoin(o.alphas, ","),
                    " --betas ", absl::StrJoin(o.betas, ","));
    if (steer_layer >= 0) absl::StrAppend(&cmd, " --steer-layer ", o.steer_layer);
    auto r = engine->CompareMethods(tables[0], *ds, o, on_progress);
    if (!r.ok()) return r.status();
    std::printf("compare '%s': %zu prompts x %d seeds, %d new tokens; concept words:",
                r->concept.c_str(), o.prompts.size(), o.seeds, o.new_tokens);
    for (const auto& w : r->words) std::printf(" %s", w.word.c_str());
    std::printf("\n%-8s %9s %10s %10s %11s %10s\n", "method", "strength", "rate", "ppl",
                "scorer ppl", "self-bleu");
    for (const auto& p : r->run.points) {
      std::printf("%-8s %9g %9.1f%% %10.2f %11.2f %10.3f\n", p.method.c_str(), p.strength,
                  100 * p.mention_rate, p.ppl, p.scorer_ppl, p.self_bleu);
    }
    return CompareResultToJson(*r);
  }

  absl::StatusOr<json::Value> RunFootball(const UnitChoice& units,
                                          const ExperimentProgress& on_progress) {
    FootballExperimentOptions o;
    o.ks = k_list;
    SetGrid(o);
    o.choice = units;
    o.per_layer = per_layer;
    if (o.per_layer) absl::StrAppend(&cmd, " --per-layer");
    o.per_linear_layer = per_linear_layer;
    if (o.per_linear_layer) absl::StrAppend(&cmd, " --per-linear-layer");
    o.examples_per_k = examples;
    o.forcing = *ParseForcingValue(forcing);
    o.only_last_token = only_last_token;
    auto r = RunFootballExperiment(engine->model(), tables[0], o, engine->pool(), on_progress);
    if (!r.ok()) return r.status();
    std::printf("football: %zu prompts x %d seeds, %d new tokens, T=%g, top-p %g; experts %s\n",
                o.prompts.size(), o.seeds, o.new_tokens, o.temperature, o.top_p,
                table_paths[0].c_str());
    std::printf("units: %s\n", DescribeUnitChoice(o.choice, 0).c_str());
    const int w = o.per_linear_layer ? 30 : 5;
    std::printf("%*s %6s %10s %10s %10s %10s %11s %10s\n", w, "layer", "k", "mentions", "rate",
                "ppl", "mean ppl", "scorer ppl", "self-bleu");
    for (const auto& p : r->points) {
      const std::string where = !p.site.empty() ? p.site
                                : p.layer < 0   ? std::string("all")
                                                : std::to_string(p.layer);
      std::printf("%*s %6lld %5d/%-4d %9.1f%% %10.2f %10.2f %11.2f %10.3f\n", w, where.c_str(),
                  static_cast<long long>(p.k), p.mentions, p.samples, 100 * p.mention_rate, p.ppl,
                  p.mean_ppl, p.scorer_ppl, p.self_bleu);
    }
    if (!gen_sentences.empty()) {
      for (const NamedText& f : GenSentencesCsvs(*r, tables[0])) {
        const std::string path = absl::StrCat(gen_sentences, "/", f.name);
        if (auto st = WriteFile(path, f.text); !st.ok()) return st;
        std::printf("wrote %s\n", path.c_str());
      }
    }
    return FootballResultToJson(*r);
  }

  static void PrintGenderCurve(const GenderExperimentResult& r, const GenderCurve& c, int samples) {
    std::printf("  do(%s, k) on %-6s prompts:", c.concept.c_str(), c.group.c_str());
    for (size_t i = 0; i < c.ks.size(); ++i) {
      std::printf("  k=%lld %.3f/%.3f", static_cast<long long>(c.ks[i]), c.p_she[i], c.p_he[i]);
    }
    std::printf("\n");
    if (c.group == "all") {
      const size_t ci = static_cast<size_t>(&c - r.curves.data()) / 3;
      std::vector<double> pts;
      for (double x : r.parity[ci]) {
        if (!std::isnan(x)) pts.push_back(x);
      }
      std::sort(pts.begin(), pts.end());
      std::printf("        parity point reached in %zu/%zu contexts", pts.size(),
                  r.parity[ci].size());
      if (!pts.empty()) std::printf(", median k = %.1f", pts[pts.size() / 2]);
      std::printf("\n");
    }
    if (!c.sampled_she.empty()) {
      std::printf("        sampled (%d per prompt):", samples);
      for (size_t i = 0; i < c.ks.size(); ++i) {
        std::printf("  k=%lld %.3f/%.3f", static_cast<long long>(c.ks[i]), c.sampled_she[i],
                    c.sampled_he[i]);
      }
      std::printf("\n");
    }
  }

  absl::StatusOr<json::Value> RunGender(const UnitChoice& units,
                                        const ExperimentProgress& on_progress) {
    const std::string occ_path = occupations.empty() ? DefaultOccupations() : occupations;
    auto text = ReadFile(occ_path);
    if (!text.ok()) return text.status();
    auto occ = ParseOccupationPrompts(*text, max_occupations);
    if (!occ.ok()) {
      return absl::Status(occ.status().code(),
                          absl::StrCat(occ_path, ": ", occ.status().message()));
    }
    GenderExperimentOptions o;
    o.ks = k_list;
    o.temperature = static_cast<float>(temperature);
    o.sampler_top_k = top_k;
    o.samples = samples;
    o.sample_tokens = sample_tokens;
    o.generate = generate;
    o.new_tokens = new_tokens;
    o.forcing = *ParseForcingValue(forcing);
    o.only_last_token = only_last_token;
    o.precision = m.prec();
    o.choice = units;
    absl::StrAppend(&cmd, " --occupations ", Quoted(occ_path), " --temperature ", o.temperature,
                    " --top-k ", o.sampler_top_k);
    if (max_occupations > 0) absl::StrAppend(&cmd, " --max-occupations ", max_occupations);
    if (samples > 0) {
      absl::StrAppend(&cmd, " --samples ", samples, " --sample-tokens ", sample_tokens);
    }
    if (generate > 0) absl::StrAppend(&cmd, " --generate ", generate, " --new-tokens ", new_tokens);
    std::vector<const ExpertTable*> ptrs;
    for (const auto& t : tables) ptrs.push_back(&t);
    auto r =
        RunGenderExperiment(engine->model(), ptrs, std::move(*occ), o, engine->pool(), on_progress);
    if (!r.ok()) return r.status();
    std::printf("gender: %zu prompts; p(she,her) / p(he,his) of the next word (top-%d, T=%g)\n",
                r->prompts.size(), o.sampler_top_k, o.temperature);
    for (const auto& c : r->curves) PrintGenderCurve(*r, c, o.samples);
    json::Value js = GenderResultToJson(*r);
    for (size_t c = 0; c < r->concepts.size(); ++c) {
      const std::string& name = r->concepts[c];
      const json::Value* sc = js.Find("parity")->Find(name);
      const json::Value* ml = js.Find("parity_ml_selfcond")->Find(name);
      auto num = [](const json::Value* v, const char* k) {
        const json::Value* x = v->Find(k);
        return x && x->is_number() ? x->as_number() : std::nan("");
      };
      std::printf(
          "  parity of do(%s, k): selfcond (all contexts) %g/%g reached, median k %.1f; "
          "ml-selfcond (biased contexts) %g/%g, median k %.1f\n",
          name.c_str(), num(sc, "reached"), num(sc, "contexts"), num(sc, "median"),
          num(ml, "reached"), num(ml, "contexts"), num(ml, "median"));
      if (const json::Value* g = js.Find("generated"); g && g->Find(name)) {
        const json::Value* at = g->Find(name)->Find("at_parity_ml_selfcond");
        std::printf("    at parity (ml-selfcond): perplexity median %.2f, Self-BLEU median %.3f\n",
                    num(at->Find("ppl"), "median"), num(at->Find("self_bleu"), "median"));
      }
    }
    if (!gen_sentences.empty()) {
      std::vector<const ExpertTable*> tptr;
      for (const auto& t : tables) tptr.push_back(&t);
      for (const NamedText& f : GenSentencesCsvs(*r, tptr)) {
        const std::string path = absl::StrCat(gen_sentences, "/", f.name);
        if (auto st = WriteFile(path, f.text); !st.ok()) return st;
      }
      std::printf("wrote ml-selfcond gen_sentences CSVs in %s\n", gen_sentences.c_str());
    }
    return js;
  }

  // The run's record: the command, the machine, the model and the tables.
  json::Value Meta(double secs) const {
    const Model& model = engine->model();
    json::Value meta = json::Value::Object();
    meta.Set("command", json::Value::String(cmd));
    meta.Set("date_utc", json::Value::String(UtcNow()));
    meta.Set("seconds", json::Value::Number(secs));
    meta.Set("threads", json::Value::Number(engine->threads()));
    meta.Set("cores", json::Value::Number(ThreadPool::NumCores()));
    meta.Set("cpu", json::Value::String(CpuName()));
    meta.Set("backend", json::Value::String(kernels::DefaultBackend().name));
    meta.Set("model_path", json::Value::String(m.path()));
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
    return meta;
  }

  absl::Status Run(const Args& args) {
    which = args.positional()[0];
    auto units = choice.Parse(args);
    if (!units.ok()) return units.status();
    if (auto st = Validate(args, *units); !st.ok()) return st;
    if (auto st = ReadPrompts(); !st.ok()) return st;
    if (auto st = LoadInputs(); !st.ok()) return st;
    cmd = absl::StrCat("selfcond experiment ", which, " --model ", Quoted(m.path()));
    for (const auto& p : table_paths) absl::StrAppend(&cmd, " --experts ", Quoted(p));
    absl::StrAppend(&cmd, " --ks ", ks, UnitChoiceCommand(*units));
    Progress progress(absl::StrCat("experiment ", which));
    const ExperimentProgress on_progress = [&](int done, int total) {
      progress.Update(static_cast<double>(done) / total, absl::StrCat(done, "/", total));
    };
    const auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<json::Value> results = compare()    ? RunCompare(on_progress)
                                          : football() ? RunFootball(*units, on_progress)
                                                       : RunGender(*units, on_progress);
    if (!results.ok()) return results.status();
    progress.Done();
    if (args.Has("forcing")) absl::StrAppend(&cmd, " --forcing ", forcing);
    if (only_last_token) absl::StrAppend(&cmd, " --only-last-token");
    absl::StrAppend(&cmd, " --precision ", m.precision, " --threads ", engine->threads());
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    results->Set("meta", Meta(secs));
    std::fprintf(stderr, "%.1f s on %d threads\n", secs, engine->threads());
    if (!out.empty()) {
      if (auto st = WriteFile(out, results->Dump() + "\n"); !st.ok()) return st;
      std::printf("wrote %s\n", out.c_str());
    }
    return absl::OkStatus();
  }
};

}  // namespace

int ExperimentMain(int argc, char** argv) { return Main<ExperimentCommand>(argc, argv); }

}  // namespace selfcond::cli
