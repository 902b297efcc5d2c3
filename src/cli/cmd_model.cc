// selfcond convert / generate / ppl / inspect.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "experts/dataset.h"
#include "experts/expert_table.h"
#include "model/generate.h"
#include "model/units.h"
#include "tools/convert.h"
#include "util/file_util.h"

namespace selfcond::cli {
namespace {

// ---- convert ----------------------------------------------------------------------------

struct ConvertCommand {
  std::string weights = "int8";
  bool keep_float = false;
  std::string name;

  CommandSpec Spec() {
    return {
        "convert",
        "selfcond convert HF_DIR OUT [--weights int8|int4] [--keep-float] [--name NAME]",
        "Convert a Hugging Face checkpoint into a selfcond model file: GPT-2 (config.json,\n"
        "model.safetensors or pytorch_model.bin, single or sharded with an index, vocab.json,\n"
        "merges.txt) or the Llama family (LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM\n"
        "with tokenizer.json). pytorch_model.bin is read by a restricted unpickler that accepts\n"
        "tensors, storages and OrderedDict only and runs no code. To download a checkpoint from\n"
        "the Hugging Face hub and convert it in one step: selfcond pull.",
        {OneOf(&weights, "weights", {"int8", "int4"},
               "bits of the blocks' linear layers (per-channel scales; the embedding / LM head\n"
               "stays int8). int4 files run on the XNNPACK engine only."),
         Switch(&keep_float, "keep-float",
                "also store float32 weights (exact f32 path; ~4x larger file)"),
         Text(&name, "name", "NAME", "model name stored in the file (default: the directory)")},
        2,
        2};
  }

  absl::Status Run(const Args& args) {
    ConvertOptions opts;
    opts.keep_float = keep_float;
    opts.model_name = name;
    opts.weights = weights == "int4" ? WeightBits::kInt4 : WeightBits::kInt8;
    return ConvertAndReport(args.positional()[0], args.positional()[1], opts);
  }
};

// ---- generate ---------------------------------------------------------------------------

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

struct GenerateCommand {
  ModelFlags m;
  std::string prompt;
  int max_tokens = 50;
  double temperature = 1.0;
  int top_k = 0;
  double top_p = 1.0;
  int seed = 0;
  std::string kv_cache = "f32";
  int max_memory = 0;
  std::vector<std::string> experts;
  std::string concept_data;
  double auto_target = 0.5;
  double auto_ppl_budget = 2.0;
  std::string steer, bias;
  bool allow_unhashed = false;
  std::string forcing = "on_p50";
  bool only_last_token = false;
  UnitChoiceFlags choice;
  bool no_stop = false;
  bool stats = false;
  std::vector<std::string> stop_strings;
  double repeat_penalty = 1.0;
  int repeat_last_n = 64;

  CommandSpec Spec() {
    std::vector<FlagSpec> own = {
        Text(&prompt, "prompt", "P", "the prompt text").Required(),
        Int(&max_tokens, "max-tokens", "N", "new tokens to generate", 0, 1 << 20),
        Real(&temperature, "temperature", "T", "0 = greedy", 0, 100),
        Int(&top_k, "top-k", "K", "sample among the K most likely tokens (0 = off)", 0, 1 << 30),
        Real(&top_p, "top-p", "P", "nucleus sampling mass (1 = off)", 1e-9, 1.0),
        Int(&seed, "seed", "S", "random seed; same seed, same text", 0, 2147483647),
        OneOf(&kv_cache, "kv-cache", {"f32", "f16"},
              "KV cache element type (f16 halves its memory)"),
        Int(&max_memory, "max-memory", "MIB",
            "memory budget of the session (KV cache + scratch), refused before allocating if the\n"
            "context needs more",
            1, 1 << 30)
            .ShowDefault("half the machine's memory"),
        Texts(&experts, "experts", "TABLE[:K|:auto]",
              "expert table and number of units to force (default K=50); :auto picks the smallest\n"
              "K whose continuations of calibration prompts mention the concept often enough\n"
              "(--auto-target) within a perplexity budget (--auto-ppl-budget), and prints why"),
        Text(&concept_data, "concept-data", "C.json",
             "auto K: the concept's dataset; its log-odds words define a mention (default: the\n"
             "table's concept name)"),
        Real(&auto_target, "auto-target", "R",
             "auto K: share of calibration continuations to mention", 0.01, 1.0),
        Real(&auto_ppl_budget, "auto-ppl-budget", "X",
             "auto K: perplexity at most X times the unforced", 1.0, 1000.0),
        Text(
            &steer, "steer", "C.json:LAYER:ALPHA",
            "add ALPHA x the concept's steering vector (mean residual after block LAYER, positive\n"
            "minus negative sentences of dataset C.json) at every position"),
        Text(&bias, "bias", "C.json:BETA",
             "add BETA to the logits of the dataset's 20 highest log-odds words (single-token "
             "forms)"),
        AllowUnhashedFlag(&allow_unhashed),
        OneOf(&forcing, "forcing", {"on_p50", "on_p90", "off_mean", "zero"}, "forcing value"),
        Switch(&only_last_token, "only-last-token",
               "force only at the last position of each step")};
    for (FlagSpec& f : choice.Flags()) own.push_back(std::move(f));
    own.push_back(Switch(&no_stop, "no-stop", "do not stop at an end-of-sequence token"));
    own.push_back(Texts(&stop_strings, "stop", "STR",
                        "stop when the text holds STR (repeatable; the text ends before it)"));
    own.push_back(
        Real(&repeat_penalty, "repeat-penalty", "X",
             "llama.cpp's repetition penalty on the last --repeat-last-n tokens (1 = off)", 0.01,
             100.0));
    own.push_back(Int(&repeat_last_n, "repeat-last-n", "N",
                      "tokens the repetition penalty looks back at (-1 = all)", -1, 1 << 20));
    own.push_back(Switch(&stats, "stats", "print token counts and speed to stderr"));
    return {"generate",
            "selfcond generate --prompt P [--model M] [options]",
            "Generate a continuation of the prompt, streamed to stdout. With --experts, the top-K\n"
            "expert units of each table are forced to their on_p50 (or on_p90) value at every\n"
            "position (self-conditioning).",
            m.Around(std::move(own)),
            0,
            0};
  }

  // The calibration of --experts T:auto (engine/choose_k.h): returns T:K.
  absl::StatusOr<std::string> AutoExperts(const Runtime& rt, const std::string& path,
                                          const UnitChoice& units) const {
    auto table = rt.engine->LoadTable(path, allow_unhashed);
    if (!table.ok()) return table.status();
    AutoKOptions o;
    o.target_rate = auto_target;
    o.ppl_budget = auto_ppl_budget;
    o.choice = units;
    o.forcing = *ParseForcingValue(forcing);
    o.precision = m.prec();
    std::optional<Dataset> ds;
    if (!concept_data.empty()) {
      auto loaded = LoadDataset(concept_data);
      if (!loaded.ok()) return loaded.status();
      ds = std::move(*loaded);
    }
    Progress progress("auto k");
    auto r = rt.engine->ChooseK(*table, ds ? &*ds : nullptr, o, [&](int done, int total) {
      progress.Update(static_cast<double>(done) / total, absl::StrCat(done, "/", total));
    });
    if (!r.ok()) return r.status();
    progress.Done();
    std::fprintf(stderr,
                 "auto k: %s\n  calibration: %zu prompts x %d seeds, %d tokens; words: %s\n",
                 r->reason.c_str(), o.prompts.size(), o.seeds, o.new_tokens,
                 absl::StrJoin(r->words, " ").c_str());
    for (const auto& p : r->tried) {
      std::fprintf(stderr, "  k=%-4lld mentions %5.1f%%  ppl %.2f\n", static_cast<long long>(p.k),
                   100 * p.mention_rate, p.ppl);
    }
    return absl::StrCat(path, ":", r->k);
  }

  absl::Status ApplyExperts(const Args& args, Runtime& rt, Session::Conditioning& cond) const {
    auto units = choice.Parse(args);
    if (!units.ok()) return units.status();
    std::vector<std::string> specs = experts;
    for (auto& spec : specs) {
      if (spec.size() > 5 && spec.compare(spec.size() - 5, 5, ":auto") == 0) {
        auto resolved = AutoExperts(rt, spec.substr(0, spec.size() - 5), *units);
        if (!resolved.ok()) return resolved.status();
        spec = *resolved;
      }
    }
    auto f =
        BuildForcingFromArgs(*rt.engine, specs, forcing, only_last_token, allow_unhashed, *units);
    if (!f.ok()) return f.status();
    cond.forcing = std::move(*f);
    return absl::OkStatus();
  }

  absl::Status ApplySteering(Runtime& rt, Session::Conditioning& cond) const {
    auto spec = SplitSpec("steer", steer, 2, "C.json:LAYER:ALPHA (e.g. football.json:2:4)");
    if (!spec.ok()) return spec.status();
    const double layer = spec->second[0];
    if (layer != std::floor(layer) || layer < 0 || layer >= rt.model().config().n_layer) {
      return absl::OutOfRangeError(absl::StrCat("--steer: layer ", layer, " is not a block (0..",
                                                rt.model().config().n_layer - 1, ")"));
    }
    auto ds = LoadDataset(spec->first);
    if (!ds.ok()) return ds.status();
    Progress progress("steering vector");
    auto v = rt.engine->SteeringVector(*ds, static_cast<int>(layer), m.prec());
    if (!v.ok()) return v.status();
    progress.Done();
    cond.steering = ScaledSteering(static_cast<int>(layer), *v, spec->second[1]);
    std::fprintf(stderr, "steering: block %d, alpha %g, |v| = %.3f (%zu + %zu sentences)\n",
                 cond.steering.layer, spec->second[1], SteeringNorm(*v), ds->positive.size(),
                 ds->negative.size());
    return absl::OkStatus();
  }

  absl::Status ApplyBias(Runtime& rt, Session::Conditioning& cond) const {
    auto spec = SplitSpec("bias", bias, 1, "C.json:BETA (e.g. football.json:4)");
    if (!spec.ok()) return spec.status();
    auto ds = LoadDataset(spec->first);
    if (!ds.ok()) return ds.status();
    std::vector<ConceptWord> words;
    auto pairs = rt.engine->ConceptLogitBias(*ds, 20, static_cast<float>(spec->second[0]), &words);
    if (!pairs.ok()) return pairs.status();
    std::vector<std::string> names;
    for (const auto& w : words) names.push_back(w.word);
    std::fprintf(stderr, "logit bias: %+g on %zu tokens of: %s\n", spec->second[0], pairs->size(),
                 absl::StrJoin(names, " ").c_str());
    cond.logit_bias = std::move(*pairs);
    return absl::OkStatus();
  }

  // The session's conditioning from --experts (with the unit-choice flags and TABLE:auto),
  // --steer and --bias.
  absl::Status ApplyConditioning(const Args& args, Runtime& rt) const {
    Session::Conditioning cond = rt.session->conditioning();
    if (!experts.empty()) {
      if (auto st = ApplyExperts(args, rt, cond); !st.ok()) return st;
    }
    if (!steer.empty()) {
      if (auto st = ApplySteering(rt, cond); !st.ok()) return st;
    }
    if (!bias.empty()) {
      if (auto st = ApplyBias(rt, cond); !st.ok()) return st;
    }
    return rt.session->SetConditioning(std::move(cond));
  }

  absl::Status Run(const Args& args) {
    GenerateOptions g;
    g.max_new_tokens = max_tokens;
    g.sampling.temperature = static_cast<float>(temperature);
    g.sampling.top_k = top_k;
    g.sampling.top_p = static_cast<float>(top_p);
    g.sampling.seed = static_cast<uint64_t>(seed);
    g.stop_at_eos = !no_stop;
    g.stop_strings = stop_strings;
    g.repeat_penalty = static_cast<float>(repeat_penalty);
    g.repeat_last_n = repeat_last_n;
    if (auto st = ValidateGenerate(g); !st.ok()) return st;
    // The session's KV cache holds what this generation needs: the prompt plus the new tokens.
    // (The tokenizer lives in the model file, so the model is loaded first and the session sized
    // then.)
    Runtime rt;
    auto engine = m.Load();
    if (!engine.ok()) return engine.status();
    rt.engine = std::move(*engine);
    const auto ids = PromptTokens(rt.model().tokenizer(), prompt);
    const int want = static_cast<int>(std::min<size_t>(
        rt.model().config().n_ctx, ids.size() + static_cast<size_t>(g.max_new_tokens) + 1));
    if (auto st = ResizeSession(rt, m.prec(), want, kv_cache, max_memory); !st.ok()) return st;
    if (auto st = ApplyConditioning(args, rt); !st.ok()) return st;
    std::printf("%s", prompt.c_str());
    std::fflush(stdout);
    auto t0 = std::chrono::steady_clock::now();
    auto res = Generate(*rt.session, ids, g, [](const std::string& piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      return true;
    });
    std::printf("\n");
    if (!res.ok()) return res.status();
    if (res->stop == GenerateResult::Stop::kStopString) {
      std::fprintf(stderr, "(stopped at a --stop string)\n");
    } else if (res->stop == GenerateResult::Stop::kContextFull) {
      std::fprintf(stderr, "(stopped: the context of %u tokens is full)\n",
                   rt.model().config().n_ctx);
    }
    if (stats) {
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "prompt %d tokens, generated %zu tokens in %.3f s (%.1f tok/s)\n",
                   res->prompt_tokens, res->tokens.size(), secs, res->tokens.size() / secs);
    }
    return absl::OkStatus();
  }
};

// ---- ppl ----------------------------------------------------------------------------------

struct PplCommand {
  ModelFlags m;
  std::string text_file;

  CommandSpec Spec() {
    return {"ppl",
            "selfcond ppl --text-file F [--model M] [--precision int8|f32]",
            "Perplexity of a text file: the template's start (<|endoftext|> for GPT-2, BOS for\n"
            "the Llama family) + the text's tokens, in windows of the model's context, every\n"
            "text token predicted.",
            m.Around({Text(&text_file, "text-file", "F", "UTF-8 text").Required()}),
            0,
            0};
  }

  absl::Status Run(const Args&) {
    auto text = ReadFile(text_file);
    if (!text.ok()) return text.status();
    auto rt = LoadRuntime(m, 0);
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
};

// ---- inspect ------------------------------------------------------------------------------

struct InspectCommand {
  std::string model;
  bool verify = false;
  bool no_verify = false;
  bool copy_model = false;
  bool tensors = false;

  CommandSpec Spec() {
    return {
        "inspect",
        "selfcond inspect [--model M] [--no-verify]",
        "Print a model file's config, sizes and content hash.",
        {Text(&model, "model", "M", "model file (default: the demo model)"),
         Switch(&verify, "verify", "recompute the SHA-256 content hash (the default)"),
         Switch(&no_verify, "no-verify", "skip recomputing the SHA-256 content hash"),
         Switch(&copy_model, "copy-model", "read the model file into memory instead of mapping it"),
         Switch(&tensors, "tensors", "list every tensor")},
        0,
        0};
  }

  static uint64_t Parameters(const Model& m) {
    uint64_t params = 0;
    for (const auto& t : m.file().tensors) {
      if (t.name.size() > 2 &&
          (t.name.substr(t.name.size() - 2) == ".q" || t.name == "wpe" ||
           t.name.find("ln_") != std::string::npos || t.name.find(".bias") != std::string::npos)) {
        uint64_t n = 1;
        for (uint32_t s : t.shape) n *= s;
        params += n;
      }
    }
    return params;
  }

  static void PrintConfig(const Model& m) {
    const ModelConfig& c = m.config();
    std::printf("arch        %s (%s), tokenizer %s\n", ArchName(c.arch), FamilyName(c.family),
                m.tokenizer().kind());
    std::printf(
        "config      n_layer %u, n_embd %u, n_head %u, n_ctx %u, vocab %u, n_inner %u, eps %g, %s "
        "LM head\n",
        c.n_layer, c.n_embd, c.n_head, c.n_ctx, c.vocab_size, c.n_inner, c.layer_norm_eps,
        c.tied_lm_head ? "tied" : "separate");
    if (c.arch != Arch::kGpt2) {
      const char* scaling[] = {"none", "llama3", "linear"};
      std::printf("attention   n_head_kv %u, head_dim %u, rope_theta %g, rope scaling %s%s%s%s\n",
                  c.n_head_kv, c.head_dim, c.rope_theta,
                  scaling[static_cast<uint32_t>(c.rope_scaling) % 3],
                  (c.flags & kQkvBias) ? ", q/k/v bias" : "",
                  (c.flags & kOutBias) ? ", o bias" : "", (c.flags & kMlpBias) ? ", MLP bias" : "");
    }
  }

  absl::Status Run(const Args&) {
    Model::LoadOptions lo;
    lo.verify_hash = !no_verify;
    lo.copy_to_memory = copy_model;
    const std::string path = model.empty() ? DefaultModelPath() : model;
    auto m = Model::Load(path, lo);
    if (!m.ok()) return m.status();
    const ModelConfig& c = (*m)->config();
    const UnitSpace units(c);
    std::printf("file        %s\n", path.c_str());
    std::printf("name        %s\n", (*m)->name().c_str());
    std::printf("hash        %s%s\n", (*m)->hash_hex().c_str(),
                lo.verify_hash ? " (verified)" : " (stored; not verified)");
    std::printf("size        %.2f MiB\n", (*m)->file_bytes() / 1048576.0);
    PrintConfig(**m);
    std::printf("parameters  %.2fM\n", Parameters(**m) / 1e6);
    std::printf("weights     %s per-channel%s\n",
                (*m)->has_int4() ? "int4 (blocks) + int8 (embedding)" : "int8",
                (*m)->has_float_copies() ? " + float32 copies" : "");
    std::printf("units       %lld (%d sites x %u blocks)\n",
                static_cast<long long>(units.num_units()), units.layout().kinds(), c.n_layer);
    std::printf("tensors     %zu\n", (*m)->file().tensors.size());
    if (tensors) {
      for (const auto& t : (*m)->file().tensors) {
        std::string shape;
        for (size_t i = 0; i < t.shape.size(); ++i)
          shape += (i ? "x" : "") + std::to_string(t.shape[i]);
        std::printf("  %-32s dtype %d  %-12s %llu bytes\n", t.name.c_str(),
                    static_cast<int>(t.dtype), shape.c_str(),
                    static_cast<unsigned long long>(t.nbytes));
      }
    }
    return absl::OkStatus();
  }
};

}  // namespace

int ConvertMain(int argc, char** argv) { return Main<ConvertCommand>(argc, argv); }
int GenerateMain(int argc, char** argv) { return Main<GenerateCommand>(argc, argv); }
int PplMain(int argc, char** argv) { return Main<PplCommand>(argc, argv); }
int InspectMain(int argc, char** argv) { return Main<InspectCommand>(argc, argv); }

}  // namespace selfcond::cli
