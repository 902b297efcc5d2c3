// selfcond convert / generate / ppl / inspect.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "experts/dataset.h"
#include "experts/expert_table.h"
#include "experts/steer.h"
#include "model/generate.h"
#include "model/units.h"
#include "tools/convert.h"
#include "tools/paper_experiments.h"
#include "util/file_util.h"

namespace selfcond::cli {

// ---- convert ----------------------------------------------------------------------------

const CommandSpec& ConvertSpec() {
  static const CommandSpec s{
      "convert",
      "selfcond convert HF_DIR OUT [--weights int8|int4] [--keep-float] [--name NAME]",
      "Convert a Hugging Face GPT-2 checkpoint (config.json, model.safetensors or a sharded\n"
      "index, vocab.json, merges.txt) into a selfcond int8 model file.",
      {{"weights", "BITS",
        "int8 (default) or int4: bits of the blocks' linear layers (per-channel scales; the\n"
        "embedding / LM head stays int8). int4 files run on the XNNPACK engine only."},
       {"keep-float", "", "also store float32 weights (exact f32 path; ~4x larger file)"},
       {"name", "NAME", "model name stored in the file (default: the directory name)"}},
      2,
      2};
  return s;
}

absl::Status RunConvert(const Args& args) {
  ConvertOptions opts;
  opts.keep_float = args.Has("keep-float");
  opts.model_name = args.Get("name");
  auto bits = ParseWeightBits(args.Get("weights", "int8"));
  if (!bits.ok()) return bits.status();
  opts.weights = *bits;
  Progress progress("convert");
  auto st = ConvertCheckpoint(args.positional()[0], args.positional()[1], opts,
                              [&](float f) { progress.Update(f); });
  if (!st.ok()) {
    std::fprintf(stderr, "\n");
    return st;
  }
  progress.Done();
  Model::LoadOptions lo;
  lo.verify_hash = true;
  auto m = Model::Load(args.positional()[1], lo);
  if (!m.ok()) return m.status();
  std::printf("wrote %s (%.1f MiB, hash %s)\n", args.positional()[1].c_str(),
              (*m)->file_bytes() / 1048576.0, (*m)->hash_hex().c_str());
  return absl::OkStatus();
}

// ---- generate ---------------------------------------------------------------------------

const CommandSpec& GenerateSpec() {
  static const CommandSpec s{
      "generate",
      "selfcond generate --prompt P [--model M] [options]",
      "Generate a continuation of the prompt, streamed to stdout. With --experts, the top-K\n"
      "expert units of each table are forced to their on_p50 (or on_p90) value at every\n"
      "position (self-conditioning).",
      {{"model", "M", "model file (default: the demo model)"},
       {"prompt", "P", "the prompt text"},
       {"max-tokens", "N", "new tokens to generate (default 50)"},
       {"temperature", "T", "0 = greedy (default 1.0)"},
       {"top-k", "K", "sample among the K most likely tokens (default 0 = off)"},
       {"top-p", "P", "nucleus sampling mass (default 1.0 = off)"},
       {"seed", "S", "random seed (default 0); same seed, same text"},
       {"precision", "int8|f32", "arithmetic (default int8)"},
       {"threads", "N", "threads (default: all cores)"},
       {"kv-cache", "f32|f16", "KV cache element type (default f32; f16 halves its memory)"},
       {"max-memory", "MIB",
        "memory budget of the session (KV cache + scratch), refused before allocating if the\n"
        "context needs more (default: half the machine's memory)"},
       {"experts", "TABLE[:K|:auto]",
        "expert table and number of units to force (default K=50); :auto picks the smallest K\n"
        "whose continuations of calibration prompts mention the concept often enough\n"
        "(--auto-target) within a perplexity budget (--auto-ppl-budget), and prints why",
        true},
       {"concept-data", "C.json",
        "auto K: the concept's dataset; its log-odds words define a mention (default: the\n"
        "table's concept name)"},
       {"auto-target", "R", "auto K: share of calibration continuations to mention (default 0.5)"},
       {"auto-ppl-budget", "X", "auto K: perplexity at most X times the unforced (default 2)"},
       {"steer", "C.json:LAYER:ALPHA",
        "add ALPHA x the concept's steering vector (mean residual after block LAYER, positive\n"
        "minus negative sentences of dataset C.json) at every position"},
       {"bias", "C.json:BETA",
        "add BETA to the logits of the dataset's 20 highest log-odds words (single-token forms)"},
       AllowUnhashedFlag(),
       NoVerifyFlag(),
       CopyModelFlag(),
       {"forcing", "on_p50|on_p90", "forcing value (default on_p50)"},
       {"only-last-token", "", "force only at the last position of each step"},
       UnitChoiceFlags()[0],
       UnitChoiceFlags()[1],
       UnitChoiceFlags()[2],
       UnitChoiceFlags()[3],
       {"no-stop", "", "do not stop at <|endoftext|>"},
       {"stats", "", "print token counts and speed to stderr"}},
      0,
      0};
  return s;
}

namespace {

// "PATH:A:B" -> PATH, {A, B} (n trailing numbers; the path may contain ':').
absl::StatusOr<std::pair<std::string, std::vector<double>>> SplitSpec(const std::string& flag,
                                                                      const std::string& spec,
                                                                      int n, const char* want) {
  std::string path = spec;
  std::vector<double> nums(n);
  for (int i = n - 1; i >= 0; --i) {
    const size_t colon = path.rfind(':');
    if (colon == std::string::npos || !absl::SimpleAtod(path.substr(colon + 1), &nums[i]) ||
        !std::isfinite(nums[i])) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, " ", spec, ": want ", want));
    }
    path = path.substr(0, colon);
  }
  return std::make_pair(path, nums);
}

// The calibration of --experts T:auto (engine/choose_k.h): returns T:K.
absl::StatusOr<std::string> AutoExperts(const Args& args, const Runtime& rt,
                                        const std::string& path, const UnitChoice& choice) {
  auto table = rt.engine->LoadTable(path, args.Has("allow-unhashed"));
  if (!table.ok()) return table.status();
  AutoKOptions o;
  auto target = args.GetDouble("auto-target", 0.5, 0.01, 1.0);
  auto budget = args.GetDouble("auto-ppl-budget", 2.0, 1.0, 1000.0);
  if (!target.ok()) return target.status();
  if (!budget.ok()) return budget.status();
  o.target_rate = *target;
  o.ppl_budget = *budget;
  o.choice = choice;
  auto forcing = ParseForcingValue(args.Get("forcing", "on_p50"));
  if (!forcing.ok()) return forcing.status();
  o.forcing = *forcing;
  auto precision = ParsePrecision(args.Get("precision", "int8"));
  if (!precision.ok()) return precision.status();
  o.precision = *precision;
  std::optional<Dataset> ds;
  if (args.Has("concept-data")) {
    auto loaded = LoadDataset(args.Get("concept-data"));
    if (!loaded.ok()) return loaded.status();
    ds = std::move(*loaded);
  }
  Progress progress("auto k");
  auto r = rt.engine->ChooseK(*table, ds ? &*ds : nullptr, o, [&](int done, int total) {
    progress.Update(static_cast<double>(done) / total, absl::StrCat(done, "/", total));
  });
  if (!r.ok()) return r.status();
  progress.Done();
  std::fprintf(stderr, "auto k: %s\n  calibration: %zu prompts x %d seeds, %d tokens; words: %s\n",
               r->reason.c_str(), o.prompts.size(), o.seeds, o.new_tokens,
               absl::StrJoin(r->words, " ").c_str());
  for (const auto& p : r->tried) {
    std::fprintf(stderr, "  k=%-4lld mentions %5.1f%%  ppl %.2f\n", static_cast<long long>(p.k),
                 100 * p.mention_rate, p.ppl);
  }
  return absl::StrCat(path, ":", r->k);
}

}  // namespace

absl::Status ApplyConditioning(const Args& args, Runtime& rt) {
  auto choice = ParseUnitChoice(args);
  if (!choice.ok()) return choice.status();
  auto precision = ParsePrecision(args.Get("precision", "int8"));
  if (!precision.ok()) return precision.status();
  if (args.Has("experts")) {
    std::vector<std::string> specs = args.GetAll("experts");
    for (auto& spec : specs) {
      if (spec.size() > 5 && spec.compare(spec.size() - 5, 5, ":auto") == 0) {
        auto resolved = AutoExperts(args, rt, spec.substr(0, spec.size() - 5), *choice);
        if (!resolved.ok()) return resolved.status();
        spec = *resolved;
      }
    }
    auto f = BuildForcingFromArgs(*rt.engine, specs, args.Get("forcing", "on_p50"),
                                  args.Has("only-last-token"), args.Has("allow-unhashed"), *choice);
    if (!f.ok()) return f.status();
    Session::Conditioning cond = rt.session->conditioning();
    cond.forcing = std::move(*f);
    if (auto st = rt.session->SetConditioning(std::move(cond)); !st.ok()) return st;
  }
  if (args.Has("steer")) {
    auto spec =
        SplitSpec("steer", args.Get("steer"), 2, "C.json:LAYER:ALPHA (e.g. football.json:2:4)");
    if (!spec.ok()) return spec.status();
    const double layer = spec->second[0];
    if (layer != std::floor(layer) || layer < 0 || layer >= rt.model().config().n_layer) {
      return absl::OutOfRangeError(absl::StrCat("--steer: layer ", layer, " is not a block (0..",
                                                rt.model().config().n_layer - 1, ")"));
    }
    auto ds = LoadDataset(spec->first);
    if (!ds.ok()) return ds.status();
    Progress progress("steering vector");
    auto v = rt.engine->SteeringVector(*ds, static_cast<int>(layer), *precision);
    if (!v.ok()) return v.status();
    progress.Done();
    Session::Steering steering = ScaledSteering(static_cast<int>(layer), *v, spec->second[1]);
    std::fprintf(stderr, "steering: block %d, alpha %g, |v| = %.3f (%zu + %zu sentences)\n",
                 steering.layer, spec->second[1], SteeringNorm(*v), ds->positive.size(),
                 ds->negative.size());
    Session::Conditioning cond = rt.session->conditioning();
    cond.steering = std::move(steering);
    if (auto st = rt.session->SetConditioning(std::move(cond)); !st.ok()) return st;
  }
  if (args.Has("bias")) {
    auto spec = SplitSpec("bias", args.Get("bias"), 1, "C.json:BETA (e.g. football.json:4)");
    if (!spec.ok()) return spec.status();
    auto ds = LoadDataset(spec->first);
    if (!ds.ok()) return ds.status();
    std::vector<ConceptWord> words;
    auto bias_or =
        rt.engine->ConceptLogitBias(*ds, 20, static_cast<float>(spec->second[0]), &words);
    if (!bias_or.ok()) return bias_or.status();
    auto bias = std::move(*bias_or);
    std::vector<std::string> names;
    for (const auto& w : words) names.push_back(w.word);
    std::fprintf(stderr, "logit bias: %+g on %zu tokens of: %s\n", spec->second[0], bias.size(),
                 absl::StrJoin(names, " ").c_str());
    Session::Conditioning cond = rt.session->conditioning();
    cond.logit_bias = std::move(bias);
    if (auto st = rt.session->SetConditioning(std::move(cond)); !st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::Status RunGenerate(const Args& args) {
  auto prompt = args.Required("prompt");
  if (!prompt.ok()) return prompt.status();
  GenerateOptions g;
  auto max_tokens = args.GetInt("max-tokens", 50, 0, 1 << 20);
  auto temperature = args.GetDouble("temperature", 1.0, 0, 100);
  auto top_k = args.GetInt("top-k", 0, 0, 1 << 30);
  auto top_p = args.GetDouble("top-p", 1.0, 1e-9, 1.0);
  auto seed = args.GetInt("seed", 0, 0, 2147483647);
  auto threads = args.GetInt("threads", 0, 0, 256);
  auto max_memory = args.GetInt("max-memory", 0, 1, 1 << 30);
  for (const auto* st :
       {&max_tokens.status(), &temperature.status(), &top_k.status(), &top_p.status(),
        &seed.status(), &threads.status(), &max_memory.status()}) {
    if (!st->ok()) return *st;
  }
  g.max_new_tokens = *max_tokens;
  g.sampling.temperature = static_cast<float>(*temperature);
  g.sampling.top_k = *top_k;
  g.sampling.top_p = static_cast<float>(*top_p);
  g.sampling.seed = static_cast<uint64_t>(*seed);
  g.stop_at_eos = !args.Has("no-stop");
  // The session's KV cache holds what this generation needs: the prompt plus the new tokens.
  // (The tokenizer lives in the model file, so the model is loaded first and the session sized
  // then.)
  auto rt = LoadRuntime(args, *threads, -1);
  if (!rt.ok()) return rt.status();
  const auto ids = PromptTokens(rt->model().tokenizer(), *prompt);
  {
    const int want = static_cast<int>(std::min<size_t>(
        rt->model().config().n_ctx, ids.size() + static_cast<size_t>(g.max_new_tokens) + 1));
    auto sized =
        LoadRuntimeSession(*rt, args.Get("precision", "int8"), want, args.Get("kv-cache", "f32"),
                           args.Has("max-memory") ? *max_memory : 0);
    if (!sized.ok()) return sized;
  }
  if (auto st = ApplyConditioning(args, *rt); !st.ok()) return st;
  std::printf("%s", prompt->c_str());
  std::fflush(stdout);
  auto t0 = std::chrono::steady_clock::now();
  auto res = Generate(*rt->session, ids, g, [](const std::string& piece) {
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    return true;
  });
  std::printf("\n");
  if (!res.ok()) return res.status();
  if (res->stop == GenerateResult::Stop::kContextFull) {
    std::fprintf(stderr, "(stopped: the context of %u tokens is full)\n",
                 rt->model().config().n_ctx);
  }
  if (args.Has("stats")) {
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "prompt %d tokens, generated %zu tokens in %.3f s (%.1f tok/s)\n",
                 res->prompt_tokens, res->tokens.size(), secs, res->tokens.size() / secs);
  }
  return absl::OkStatus();
}

// ---- ppl ----------------------------------------------------------------------------------

const CommandSpec& PplSpec() {
  static const CommandSpec s{
      "ppl",
      "selfcond ppl --text-file F [--model M] [--precision int8|f32]",
      "Perplexity of a text file: <|endoftext|> + the text's tokens, in windows of the model's\n"
      "context, every token after the first predicted.",
      WithModelFlags({{"text-file", "F", "UTF-8 text"}}),
      0,
      0};
  return s;
}

absl::Status RunPpl(const Args& args) {
  auto path = args.Required("text-file");
  if (!path.ok()) return path.status();
  auto threads = args.GetInt("threads", 0, 0, 256);
  if (!threads.ok()) return threads.status();
  auto text = ReadFile(*path);
  if (!text.ok()) return text.status();
  auto rt = LoadRuntime(args, *threads);
  if (!rt.ok()) return rt.status();
  const std::vector<int32_t> ids = ScoringTokens(rt->model().tokenizer(), *text);
  Progress progress("ppl");
  auto r = Perplexity(*rt->session, ids, [&](float f) { progress.Update(f); });
  if (!r.ok()) return r.status();
  progress.Done();
  std::printf("perplexity %.4f (mean NLL %.5f nats over %lld tokens)\n", r->ppl, r->mean_nll,
              static_cast<long long>(r->predicted_tokens));
  return absl::OkStatus();
}

// ---- inspect ------------------------------------------------------------------------------

const CommandSpec& InspectSpec() {
  static const CommandSpec s{"inspect",
                             "selfcond inspect [--model M] [--no-verify]",
                             "Print a model file's config, sizes and content hash.",
                             {{"model", "M", "model file (default: the demo model)"},
                              {"verify", "", "recompute the SHA-256 content hash (the default)"},
                              NoVerifyFlag(),
                              CopyModelFlag(),
                              {"tensors", "", "list every tensor"}},
                             0,
                             0};
  return s;
}

absl::Status RunInspect(const Args& args) {
  Model::LoadOptions lo = ModelLoadOptions(args, Precision::kInt8);
  std::string path = args.Get("model", DefaultModelPath());
  auto m = Model::Load(path, lo);
  if (!m.ok()) return m.status();
  const ModelConfig& c = (*m)->config();
  const UnitSpace units(c);
  uint64_t params = 0;
  for (const auto& t : (*m)->file().tensors) {
    if (t.name.size() > 2 &&
        (t.name.substr(t.name.size() - 2) == ".q" || t.name == "wpe" ||
         t.name.find("ln_") != std::string::npos || t.name.find(".bias") != std::string::npos)) {
      uint64_t n = 1;
      for (uint32_t s : t.shape) n *= s;
      params += n;
    }
  }
  std::printf("file        %s\n", path.c_str());
  std::printf("name        %s\n", (*m)->name().c_str());
  std::printf("hash        %s%s\n", (*m)->hash_hex().c_str(),
              lo.verify_hash ? " (verified)" : " (stored; not verified)");
  std::printf("size        %.2f MiB\n", (*m)->file_bytes() / 1048576.0);
  std::printf("arch        %s (%s), tokenizer %s\n", ArchName(c.arch), FamilyName(c.family),
              (*m)->tokenizer().kind());
  std::printf(
      "config      n_layer %u, n_embd %u, n_head %u, n_ctx %u, vocab %u, n_inner %u, eps %g, %s LM "
      "head\n",
      c.n_layer, c.n_embd, c.n_head, c.n_ctx, c.vocab_size, c.n_inner, c.layer_norm_eps,
      c.tied_lm_head ? "tied" : "separate");
  if (c.arch != Arch::kGpt2) {
    const char* scaling[] = {"none", "llama3", "linear"};
    std::printf("attention   n_head_kv %u, head_dim %u, rope_theta %g, rope scaling %s%s%s%s\n",
                c.n_head_kv, c.head_dim, c.rope_theta,
                scaling[static_cast<uint32_t>(c.rope_scaling) % 3],
                (c.flags & kQkvBias) ? ", q/k/v bias" : "", (c.flags & kOutBias) ? ", o bias" : "",
                (c.flags & kMlpBias) ? ", MLP bias" : "");
  }
  std::printf("parameters  %.2fM\n", params / 1e6);
  std::printf("weights     %s per-channel%s\n",
              (*m)->has_int4() ? "int4 (blocks) + int8 (embedding)" : "int8",
              (*m)->has_float_copies() ? " + float32 copies" : "");
  std::printf("units       %lld (%d sites x %u blocks)\n",
              static_cast<long long>(units.num_units()), units.layout().kinds(), c.n_layer);
  std::printf("tensors     %zu\n", (*m)->file().tensors.size());
  if (args.Has("tensors")) {
    for (const auto& t : (*m)->file().tensors) {
      std::string shape;
      for (size_t i = 0; i < t.shape.size(); ++i)
        shape += (i ? "x" : "") + std::to_string(t.shape[i]);
      std::printf("  %-32s dtype %d  %-12s %llu bytes\n", t.name.c_str(), static_cast<int>(t.dtype),
                  shape.c_str(), static_cast<unsigned long long>(t.nbytes));
    }
  }
  return absl::OkStatus();
}

}  // namespace selfcond::cli
