// selfcond bench: speed and memory as JSON.
//
// Every (model, precision) runs in its own child process so that load time and peak RSS are
// that configuration's alone; within it, 1 thread and all cores are measured back to back so
// that their ratio is taken under the same machine load.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "experts/dataset.h"
#include "experts/rank.h"
#include "experts/responses.h"
#include "formats/model_file.h"
#include "kernels/kernels.h"
#include "model/generate.h"
#include "tools/convert.h"
#include "tools/synthetic_checkpoint.h"
#include "util/file_util.h"
#include "util/json.h"

namespace selfcond::cli {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}
double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct BenchParams {
  int prompt_tokens = 128;
  int decode_tokens = 128;
  int repeats = 3;
  std::vector<int> threads;
  std::string rank_concept;  // set: measure ranking on it (and not generation)
  // The session's KV cache: positions (-1: prompt + decoded tokens, as `selfcond generate`
  // sizes it; 0: the model's context) and element type.
  int session_ctx = -1;
  bool kv_f16 = false;
};

// The prompt of a measurement: prompt_n token ids spread over the vocabulary.
std::vector<int32_t> BenchPrompt(const ModelConfig& c, int prompt_n) {
  std::vector<int32_t> prompt(prompt_n);
  for (int i = 0; i < prompt_n; ++i) prompt[i] = (i * 7919 + 13) % static_cast<int>(c.vocab_size);
  return prompt;
}

// Greedy generation at `threads` threads through the library's driver, p.repeats times: Start
// prefills the prompt; each Next samples a token and runs it (the last Next only samples:
// decode_n forward passes). Sets the session's facts on *out; null when it cannot run.
json::Value MeasureGenerationRun(const Model& model, Precision prec,
                                 const kernels::Backend* backend, const BenchParams& p, int threads,
                                 const std::vector<int32_t>& prompt, int decode_n,
                                 const std::string& label, json::Value* out) {
  const int prompt_n = static_cast<int>(prompt.size());
  ThreadPool pool(threads);
  SessionOptions so;
  so.precision = prec;
  so.pool = &pool;
  so.backend = backend;
  so.n_ctx = p.session_ctx < 0 ? prompt_n + decode_n : p.session_ctx;
  so.kv_type = p.kv_f16 ? SessionOptions::KvType::kF16 : SessionOptions::KvType::kF32;
  auto session = Session::Create(model, so);
  if (!session.ok()) return json::Value::Null();
  out->Set("engine", json::Value::String((*session)->engine_name()));
  out->Set("session_ctx", json::Value::Number((*session)->n_ctx()));
  out->Set("kv_type", json::Value::String(p.kv_f16 ? "f16" : "f32"));
  out->Set("kv_cache_alloc_mib", json::Value::Number((*session)->kv_cache_bytes() / 1048576.0));
  GenerateOptions go;
  go.max_new_tokens = decode_n + 1;
  go.sampling.temperature = 0;
  go.stop_at_eos = false;
  std::vector<double> prefill, decode;
  for (int r = 0; r < p.repeats; ++r) {
    auto t1 = Clock::now();
    auto gen = Generation::Start(**session, prompt, go);
    if (!gen.ok()) break;
    prefill.push_back(prompt_n / Since(t1));
    auto t2 = Clock::now();
    while (!(*gen)->done()) {
      if (!(*gen)->Next().ok()) break;
    }
    decode.push_back(decode_n / Since(t2));
  }
  if (prefill.empty() || decode.empty()) return json::Value::Null();
  json::Value run = json::Value::Object();
  run.Set("threads", json::Value::Number(pool.size()));
  run.Set("prefill_tok_s", json::Value::Number(Median(prefill)));
  run.Set("decode_tok_s", json::Value::Number(Median(decode)));
  std::fprintf(stderr, "  %-17s %-4s %-10s %d thread(s): prefill %8.1f tok/s, decode %7.1f tok/s\n",
               label.c_str(), prec == Precision::kInt8 ? "int8" : "f32", (*session)->engine_name(),
               pool.size(), Median(prefill), Median(decode));
  return run;
}

// Next to a ranking, in the same process: a 128-token prefill with the same pool (one session on
// all its threads; the ranking runs one single-threaded session per thread instead). 0 if it
// cannot run.
double Prefill128(const Model& model, Precision prec, ThreadPool* pool) {
  SessionOptions so;
  so.precision = prec;
  so.pool = pool;
  so.n_ctx = 128;
  auto s = Session::Create(model, so);
  if (!s.ok()) return 0;
  const std::vector<int32_t> ids = BenchPrompt(model.config(), 128);
  std::vector<double> ts;
  for (int rep = 0; rep < 5; ++rep) {
    (*s)->Reset();
    auto t = Clock::now();
    if (!(*s)->Forward(ids, Session::Logits::kNone).ok()) break;
    ts.push_back(Since(t));
  }
  return ts.empty() ? 0 : 128 / Median(ts);
}

// Ranking the concept at each thread count (top 100 kept), with the prefill next to it.
json::Value MeasureRankingRuns(const Model& model, Precision prec, const BenchParams& p,
                               const Dataset& data) {
  json::Value rank = json::Value::Array();
  const int n = static_cast<int>(data.positive.size() + data.negative.size());
  // Tokens the ranking runs (each sentence cut to the context, as the ranking does).
  int64_t tokens = 0;
  for (const auto* side : {&data.positive, &data.negative}) {
    for (const std::string& s : *side) {
      tokens += std::min<int64_t>(model.tokenizer().Encode(s).size(), model.config().n_ctx);
    }
  }
  for (int threads : p.threads) {
    ThreadPool pool(threads);
    RankOptions ro;
    ro.precision = prec;
    ro.pool = &pool;
    ro.top_n = 100;
    Progress progress(absl::StrCat("  rank ", pool.size(), "t"));
    ro.progress = [&](int done, int total) {
      progress.Update(double(done) / total);
      return true;
    };
    auto t1 = Clock::now();
    auto table = RankConcept(model, data, ro);
    const double secs = Since(t1);
    progress.Done(absl::StrCat(static_cast<int>(n / secs), " sentences/s"));
    if (!table.ok()) continue;
    json::Value r = json::Value::Object();
    r.Set("threads", json::Value::Number(pool.size()));
    r.Set("sentences", json::Value::Number(n));
    r.Set("total_s", json::Value::Number(secs));
    r.Set("sentences_per_s", json::Value::Number(n / secs));
    r.Set("tokens", json::Value::Number(static_cast<double>(tokens)));
    r.Set("tokens_per_s", json::Value::Number(tokens / secs));
    if (const double pf = Prefill128(model, prec, &pool); pf > 0) {
      r.Set("prefill128_tok_s", json::Value::Number(pf));
      r.Set("ranking_over_prefill128", json::Value::Number(tokens / secs / pf));
      std::fprintf(stderr, "  rank %dt: %.0f tok/s ranking, %.0f tok/s prefill (128)\n",
                   pool.size(), tokens / secs, pf);
    }
    rank.Push(std::move(r));
  }
  return rank;
}

// Runs in the child: measures one model at one precision on one engine ("xnnpack", or a
// hand-written backend's name); returns a JSON object. One child measures either generation
// (runs) or ranking, never both (see BenchCommand).
json::Value MeasureModel(const std::string& label, const std::string& path, Precision prec,
                         const std::string& engine, const BenchParams& p) {
  json::Value out = json::Value::Object();
  out.Set("model", json::Value::String(label));
  out.Set("precision", json::Value::String(prec == Precision::kInt8 ? "int8" : "f32"));
  const kernels::Backend* backend = engine == "xnnpack" ? nullptr : kernels::BackendByName(engine);
  auto t0 = Clock::now();
  Model::LoadOptions lo;
  lo.need_float = prec == Precision::kF32;
  // A hand-written backend reads the file's int8 weights: no XNNPACK copy in its memory.
  lo.xnnpack = backend == nullptr;
  auto model = Model::Load(path, lo);
  if (!model.ok()) {
    out.Set("error", json::Value::String(std::string(model.status().message())));
    return out;
  }
  out.Set("load_ms", json::Value::Number(Since(t0) * 1000));
  out.Set("file_mib", json::Value::Number((*model)->file_bytes() / 1048576.0));
  const ModelConfig& c = (*model)->config();
  const int prompt_n = std::min<int>(p.prompt_tokens, c.n_ctx - 1);
  const int decode_n = std::min<int>(p.decode_tokens, c.n_ctx - prompt_n);
  out.Set("prompt_tokens", json::Value::Number(prompt_n));
  out.Set("decode_tokens", json::Value::Number(decode_n));
  if (!p.rank_concept.empty()) {
    if (auto data = LoadDataset(p.rank_concept); data.ok()) {
      out.Set("ranking", MeasureRankingRuns(**model, prec, p, *data));
      out.Set("ranking_concept", json::Value::String(p.rank_concept));
    }
  } else {
    const std::vector<int32_t> prompt = BenchPrompt(c, prompt_n);
    json::Value runs = json::Value::Array();
    for (int threads : p.threads) {
      json::Value run =
          MeasureGenerationRun(**model, prec, backend, p, threads, prompt, decode_n, label, &out);
      if (!run.is_null()) runs.Push(std::move(run));
    }
    out.Set("runs", std::move(runs));
    // Memory against the bar "peak RSS <= 1.15 x the model file + the KV cache actually used".
    const double kv_mib = 2.0 * c.n_layer * (prompt_n + decode_n) * c.kv_dim() *
                          (p.kv_f16 ? 2 : sizeof(float)) / 1048576.0;
    out.Set("kv_cache_used_mib", json::Value::Number(kv_mib));
    out.Set("rss_bound_mib",
            json::Value::Number(1.15 * (*model)->file_bytes() / 1048576.0 + kv_mib));
    if ((*model)->xnn() != nullptr) {
      out.Set("xnnpack_packed_mib",
              json::Value::Number((*model)->xnn()->packed_bytes() / 1048576.0));
    }
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  out.Set("peak_rss_mib", json::Value::Number(ru.ru_maxrss / 1024.0));
  return out;
}

// Forks, measures in the child, returns the child's JSON.
absl::StatusOr<json::Value> MeasureInChild(const std::string& label, const std::string& path,
                                           Precision prec, const std::string& engine,
                                           const BenchParams& p) {
  int fds[2];
  if (pipe(fds) != 0) return absl::InternalError("pipe failed");
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    close(fds[0]);
    std::string s = MeasureModel(label, path, prec, engine, p).Dump();
    size_t off = 0;
    while (off < s.size()) {
      ssize_t w = write(fds[1], s.data() + off, s.size() - off);
      if (w <= 0) break;
      off += static_cast<size_t>(w);
    }
    close(fds[1]);
    _exit(0);
  }
  close(fds[1]);
  std::string s;
  char buf[4096];
  for (ssize_t r; (r = read(fds[0], buf, sizeof(buf))) > 0;) s.append(buf, static_cast<size_t>(r));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat("benchmark of ", label, " crashed"));
  }
  return json::Parse(s);
}

// Whether `path` is a readable model file (header and tensor table only: cheap, no packing).
bool ModelFileOk(const std::string& path) {
  auto f = MappedFile::Open(path);
  return f.ok() && ParseModelFile(f->bytes()).ok();
}

// The four GPT-2 sizes (Radford et al. 2019; all with vocabulary 50257 and context 1024):
// bench writes each shape with random weights, so speed and memory are measured without a
// download. Medium is the paper's model.
struct Gpt2Size {
  const char* name;
  uint32_t n_layer, n_embd, n_head;
};
constexpr Gpt2Size kGpt2Sizes[] = {{"small", 12, 768, 12},
                                   {"medium", 24, 1024, 16},
                                   {"large", 36, 1280, 20},
                                   {"xl", 48, 1600, 25}};

std::string ShapedLabel(const Gpt2Size& size) {
  return absl::StrCat("gpt2-", size.name, "-shaped");
}

// A GPT-2-shaped model (random weights), written once by the tests' checkpoint writer and
// converted (and converted with --weights int4 too when int4); cached in work_dir as
// <label>.scm and <label>-int4.scm. The float32 checkpoint (6.2 GB for XL) is deleted after.
absl::StatusOr<std::string> Gpt2Shaped(const std::string& work_dir, const std::string& vocab_dir,
                                       const Gpt2Size& size, bool int4) {
  const std::string label = ShapedLabel(size);
  const std::string out = work_dir + "/" + label + ".scm";
  const std::string out4 = work_dir + "/" + label + "-int4.scm";
  if (ModelFileOk(out) && (!int4 || ModelFileOk(out4))) return out;
  const std::string ckpt = work_dir + "/" + label + "-hf";
  std::filesystem::create_directories(ckpt);
  SyntheticCheckpointOptions so;
  so.n_layer = size.n_layer;
  so.n_embd = size.n_embd;
  so.n_head = size.n_head;
  so.n_ctx = 1024;
  so.vocab_size = 50257;
  so.n_inner = 4 * size.n_embd;
  so.tokenizer_dir = vocab_dir;
  so.seed = 1;
  std::fprintf(stderr, "writing the %s checkpoint to %s\n", label.c_str(), ckpt.c_str());
  if (auto st = WriteSyntheticCheckpoint(ckpt, so); !st.ok()) return st;
  ConvertOptions co;
  if (!ModelFileOk(out)) {
    Progress progress("convert " + label);
    co.model_name = label + " (random weights)";
    if (auto st = ConvertCheckpoint(ckpt, out, co, [&](float f) { progress.Update(f); });
        !st.ok()) {
      return st;
    }
    progress.Done();
  }
  if (int4 && !ModelFileOk(out4)) {
    co.weights = WeightBits::kInt4;
    co.model_name = label + " int4 (random weights)";
    Progress p4("convert " + label + " --weights int4");
    if (auto st = ConvertCheckpoint(ckpt, out4, co, [&](float f) { p4.Update(f); }); !st.ok()) {
      return st;
    }
    p4.Done();
  }
  std::filesystem::remove_all(ckpt);
  return out;
}

// Model load time with the content-hash check (every command's default) and without
// (--no-verify), alternating, median of `repeats` each: the price of integrity by default.
// Then with a packed-weight cache (Model::LoadOptions::packed_cache_dir) in a fresh directory:
// the first load (packs and writes the cache) and a warm load (reads it), verified and not.
json::Value MeasureLoadVerify(const std::string& label, const std::string& path, int repeats,
                              const std::string& cache_dir) {
  json::Value out = json::Value::Object();
  out.Set("model", json::Value::String(label));
  std::vector<double> ms[2];
  for (int r = 0; r < std::max(1, repeats); ++r) {
    for (int verify = 0; verify < 2; ++verify) {
      Model::LoadOptions lo;
      lo.verify_hash = verify == 1;
      auto t0 = Clock::now();
      auto model = Model::Load(path, lo);
      if (!model.ok()) {
        out.Set("error", json::Value::String(std::string(model.status().message())));
        return out;
      }
      ms[verify].push_back(Since(t0) * 1000);
    }
  }
  for (auto& v : ms) std::sort(v.begin(), v.end());
  const double no = ms[0][ms[0].size() / 2], yes = ms[1][ms[1].size() / 2];
  out.Set("load_ms_no_verify", json::Value::Number(no));
  out.Set("load_ms_verify", json::Value::Number(yes));
  out.Set("verify_over_no_verify", json::Value::Number(no > 0 ? yes / no : 0));
  std::fprintf(stderr, "  load %-24s %8.1f ms verified, %8.1f ms --no-verify (x%.2f)\n",
               label.c_str(), yes, no, no > 0 ? yes / no : 0.0);
  // first (verified, empty cache), warm (verified), warm (--no-verify)
  std::vector<double> cached[3];
  for (int r = 0; r < std::max(1, repeats); ++r) {
    std::filesystem::remove_all(cache_dir);
    for (int i = 0; i < 3; ++i) {
      Model::LoadOptions lo;
      lo.verify_hash = i < 2;
      lo.packed_cache_dir = cache_dir;
      auto t0 = Clock::now();
      auto model = Model::Load(path, lo);
      const double t = Since(t0) * 1000;
      if (!model.ok()) {
        out.Set("error", json::Value::String(std::string(model.status().message())));
        return out;
      }
      const std::string& status = (*model)->packed_cache_status();
      if ((i == 0) != (status != "hit") || (i == 0 && !absl::EndsWith(status, ", saved"))) {
        out.Set("error", json::Value::String("packed-weight cache: " + status));
        return out;
      }
      cached[i].push_back(t);
    }
  }
  std::filesystem::remove_all(cache_dir);
  for (auto& v : cached) std::sort(v.begin(), v.end());
  const double first = cached[0][cached[0].size() / 2], warm = cached[1][cached[1].size() / 2],
               warm_no = cached[2][cached[2].size() / 2];
  out.Set("load_ms_packed_cache_first", json::Value::Number(first));
  out.Set("load_ms_packed_cache_warm", json::Value::Number(warm));
  out.Set("load_ms_packed_cache_warm_no_verify", json::Value::Number(warm_no));
  out.Set("warm_over_no_cache", json::Value::Number(yes > 0 ? warm / yes : 0));
  std::fprintf(stderr,
               "  load %-24s packed-weight cache: first %8.1f ms, warm %8.1f ms verified, "
               "%8.1f ms --no-verify\n",
               label.c_str(), first, warm, warm_no);
  return out;
}

// Several concepts ranked one by one and together (issue 13): wall time of each way, the
// labeled and distinct sentence counts.
absl::StatusOr<json::Value> MeasureMultiConcept(const std::string& model_path,
                                                const std::vector<std::string>& concepts,
                                                int threads) {
  auto model = Model::Load(model_path, {});
  if (!model.ok()) return model.status();
  std::vector<Dataset> data;
  for (const auto& c : concepts) {
    auto d = LoadDataset(c);
    if (!d.ok()) return d.status();
    data.push_back(std::move(*d));
  }
  ThreadPool pool(threads);
  RankOptions ro;
  ro.pool = &pool;
  int labeled = 0, distinct = 0;
  auto t0 = Clock::now();
  for (const Dataset& d : data) {
    auto t = RankConcept(**model, d, ro);
    if (!t.ok()) return t.status();
    labeled += static_cast<int>(d.positive.size() + d.negative.size());
  }
  const double separate = Since(t0);
  ro.progress = [&](int, int total) {
    distinct = total;
    return true;
  };
  t0 = Clock::now();
  auto together = RankConcepts(**model, data, ro);
  if (!together.ok()) return together.status();
  const double joint = Since(t0);
  json::Value out = json::Value::Object();
  json::Value names = json::Value::Array();
  for (const Dataset& d : data) names.Push(json::Value::String(d.concept));
  out.Set("concepts", std::move(names));
  out.Set("threads", json::Value::Number(pool.size()));
  out.Set("labeled_sentences", json::Value::Number(labeled));
  out.Set("distinct_sentences", json::Value::Number(distinct));
  out.Set("separately_s", json::Value::Number(separate));
  out.Set("together_s", json::Value::Number(joint));
  out.Set("together_over_separately", json::Value::Number(separate > 0 ? joint / separate : 0));
  std::fprintf(stderr, "  %zu concepts: separately %.2f s (%d sentences), together %.2f s (%d)\n",
               data.size(), separate, labeled, joint, distinct);
  return out;
}

// The CPU this was measured on (machines of this kind differ: Zen 3 AVX2, Zen 4 AVX-512 VNNI).
json::Value MachineInfo() {
  json::Value machine = json::Value::Object();
  machine.Set("cores", json::Value::Number(ThreadPool::NumCores()));
  // x86 lists "flags", AArch64 "Features".
  const std::string model_name = kernels::CpuInfoField("model name");
  const std::string all =
      " " + kernels::CpuInfoField("flags") + " " + kernels::CpuInfoField("Features") + " ";
  std::string flags;
  for (const char* f : {"avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "asimddp", "i8mm"}) {
    if (all.find(std::string(" ") + f + " ") != std::string::npos) {
      flags += (flags.empty() ? "" : " ") + std::string(f);
    }
  }
  machine.Set("cpu", json::Value::String(model_name));
  machine.Set("cpu_flags", json::Value::String(flags));
  machine.Set("int8_engine", json::Value::String("xnnpack"));
  machine.Set("handwritten_backend", json::Value::String(kernels::DefaultBackend().name));
  return machine;
}

// DRAM read bandwidth in GB/s at `threads` threads (tools/read_bandwidth.c's loop, portable): each
// thread XORs its slice of a 256 MiB buffer (far larger than any cache) 4 times, best of 3. The
// bound of a memory-bound decode step, which reads every weight once per token: tok/s cannot
// exceed this / weight bytes (docs/kernels.md, "Decode against the read bandwidth").
double ReadBandwidthGBs(int threads) {
  constexpr size_t kWords = (size_t{256} << 20) / sizeof(uint64_t);
  constexpr int kPasses = 4;
  std::vector<uint64_t> buf(kWords, 1);  // written: resident before the timing
  std::vector<uint64_t> sink(static_cast<size_t>(threads));
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = Clock::now();
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        const size_t n = kWords / threads;
        const uint64_t* w = buf.data() + static_cast<size_t>(t) * n;
        uint64_t a = 0, b = 0, c = 0, d = 0;
        for (int pass = 0; pass < kPasses; ++pass) {
          for (size_t i = 0; i + 4 <= n; i += 4) {
            a ^= w[i];
            b ^= w[i + 1];
            c ^= w[i + 2];
            d ^= w[i + 3];
          }
        }
        sink[t] = a ^ b ^ c ^ d;
      });
    }
    for (auto& w : workers) w.join();
    best = std::max(best, kPasses * (kWords * sizeof(uint64_t)) / Since(t0) / 1e9);
  }
  volatile uint64_t keep = 0;
  for (uint64_t v : sink) keep = keep ^ v;
  return best;
}

// Each run of a model beside its read-bandwidth bound: a decode step of a GPT-2 or tied Llama
// file reads the whole file once (the linears and the embedding as LM head; the position row and
// the norms it also reads are in it; the KV cache it reads is not, < 2% at 256 positions for
// GPT-2 small), so bound = bandwidth at the run's thread count / file bytes.
void AddReadBound(const std::vector<std::pair<int, double>>& bandwidth, json::Value* model) {
  const json::Value* runs = model->Find("runs");
  const json::Value* file_mib = model->Find("file_mib");
  const json::Value* precision = model->Find("precision");
  // f32 runs read dequantized copies, not the file: no bound from its size.
  if (runs == nullptr || file_mib == nullptr || file_mib->as_number() <= 0 ||
      precision == nullptr || precision->as_string() != "int8") {
    return;
  }
  const double bytes = file_mib->as_number() * 1048576.0;
  json::Value out = json::Value::Array();
  for (json::Value run : runs->items()) {
    const int threads = static_cast<int>(run.Find("threads")->as_number());
    for (const auto& [t, gbs] : bandwidth) {
      if (t != threads) continue;
      const double bound = gbs * 1e9 / bytes;
      const double decode = run.Find("decode_tok_s")->as_number();
      run.Set("decode_read_bound_tok_s", json::Value::Number(bound));
      run.Set("decode_over_read_bound", json::Value::Number(decode / bound));
      std::fprintf(stderr,
                   "  %-24s %d thread(s): decode %7.1f tok/s = %3.0f%% of the read bound %7.1f\n",
                   std::string(model->Find("model")->as_string()).c_str(), threads, decode,
                   100 * decode / bound, bound);
    }
    out.Push(std::move(run));
  }
  model->Set("runs", std::move(out));
}

// A model under test: its label in the JSON and its file; big: measured on the engine's int8
// path only (XNNPACK), not on the hand-written kernels nor in f32 (GPT-2 XL in f32 is 6.2 GB
// and is not what a device runs).
struct Target {
  std::string label, path;
  bool big = false;
};

// Ratios within this run (the machine is shared: compare variants, not absolute numbers):
// int8 over f32, int4 over int8, and the hand-written kernels over XNNPACK (docs/kernels.md).
void AddRatios(const json::Value& models, const std::vector<Target>& targets, const BenchParams& p,
               const std::string& handwritten, json::Value* out) {
  json::Value& ratios = *out;
  auto rate_at = [&](const std::string& label, const std::string& prec, const std::string& engine,
                     int threads, const char* what) {
    for (const auto& m : models.items()) {
      const json::Value* e = m.Find("engine");
      if (m.Find("model")->as_string() != label || m.Find("precision")->as_string() != prec ||
          e == nullptr || (!engine.empty() && e->as_string() != engine)) {
        continue;
      }
      const json::Value* runs = m.Find("runs");
      if (runs == nullptr) continue;
      for (const auto& r : runs->items())
        if (r.Find("threads")->as_number() == threads) return r.Find(what)->as_number();
    }
    return 0.0;
  };
  for (const auto& t : targets) {
    const double i8 = rate_at(t.label, "int8", "xnnpack", 1, "decode_tok_s");
    const double f32 = rate_at(t.label, "f32", "", 1, "decode_tok_s");
    if (i8 > 0 && f32 > 0) {
      ratios.Set(t.label + ".decode_int8_over_f32_1thread", json::Value::Number(i8 / f32));
    }
    // The kernel decision (docs/kernels.md): hand-written / XNNPACK, per measure and for a whole
    // generation (prompt prefill + decoded tokens, wall time).
    for (int threads : p.threads) {
      const std::string sfx = absl::StrCat("_", threads, "thread");
      const std::string l4 = t.label + "-int4";
      for (const char* what : {"prefill_tok_s", "decode_tok_s"}) {
        const double i4 = rate_at(l4, "int8", "xnnpack", threads, what);
        const double i8x = rate_at(t.label, "int8", "xnnpack", threads, what);
        if (i4 > 0 && i8x > 0) {
          ratios.Set(
              absl::StrCat(t.label, ".", std::string(what).substr(0, std::string(what).find('_')),
                           "_int4_over_int8", sfx),
              json::Value::Number(i4 / i8x));
        }
      }
      double x[2], h[2];
      const char* what[2] = {"prefill_tok_s", "decode_tok_s"};
      for (int i = 0; i < 2; ++i) {
        x[i] = rate_at(t.label, "int8", "xnnpack", threads, what[i]);
        h[i] = rate_at(t.label, "int8", handwritten, threads, what[i]);
      }
      if (x[0] <= 0 || h[0] <= 0 || x[1] <= 0 || h[1] <= 0) continue;
      ratios.Set(t.label + ".prefill_" + handwritten + "_over_xnnpack" + sfx,
                 json::Value::Number(h[0] / x[0]));
      ratios.Set(t.label + ".decode_" + handwritten + "_over_xnnpack" + sfx,
                 json::Value::Number(h[1] / x[1]));
      const double tx = p.prompt_tokens / x[0] + p.decode_tokens / x[1];
      const double th = p.prompt_tokens / h[0] + p.decode_tokens / h[1];
      ratios.Set(t.label + ".generation_speed_" + handwritten + "_over_xnnpack" + sfx,
                 json::Value::Number(tx / th));
    }
  }
}

struct BenchCommand {
  std::string model, out, work_dir = "/tmp/selfcond-bench";
  std::string vocab_dir = "../shared/models/selfcond-mini-30m";
  std::string int4_checkpoint = "../shared/models/selfcond-mini-30m";
  std::string rank_concept = "../shared/concepts/football.json", rank_concepts;
  std::string shapes = "small";
  bool json = false, no_small = false, no_f32 = false, no_kv = false, int4 = false;
  bool no_hostile = false, no_handwritten = false, no_load = false;
  int prompt_tokens = 128, decode_tokens = 128, repeats = 3, threads = 0;

  CommandSpec Spec() {
    return {
        "bench",
        "selfcond bench [--model M] [--json] [--out FILE] [options]",
        "Measure prefill and decode speed (tok/s), load time, peak RSS and file size, int8 and "
        "f32,\n"
        "at 1 thread and at all cores, for the model and for GPT-2-shaped models (random\n"
        "weights; small by default, --shapes for medium, large, xl); and ranking speed on a\n"
        "concept. Writes JSON (stdout with --json, or --out).",
        {Text(&model, "model", "M", "model file (default: the demo model)"),
         Switch(&json, "json", "print the JSON result to stdout"),
         Text(&out, "out", "FILE", "write the JSON result to FILE"),
         Int(&prompt_tokens, "prompt-tokens", "N", "prefill prompt length", 1, 1 << 16),
         Int(&decode_tokens, "decode-tokens", "N", "decoded tokens", 0, 1 << 16),
         Int(&repeats, "repeats", "N", "repeats per measurement, median reported", 1, 100),
         Int(&threads, "threads", "N", "the multi-threaded setting", 0, 256)
             .ShowDefault("all cores"),
         Switch(&no_small, "no-small", "skip the GPT-2-small-shaped model"),
         Text(&shapes, "shapes", "LIST",
              "GPT-2 shapes to measure (random weights, written once into --work-dir), a\n"
              "comma-separated subset of small, medium, large, xl ('none': none). Shapes other\n"
              "than small run on XNNPACK int8 only (and int4 with --int4). Writing XL's\n"
              "checkpoint takes 6.2 GB of disk for a while")
             .ShowDefault("small"),
         Switch(&no_f32, "no-f32", "skip the f32 path"),
         Switch(&no_kv, "no-kv",
                "skip the KV-cache memory comparison on the GPT-2-small-shaped model (session\n"
                "sized to the model's context vs prompt + decoded tokens, float32 vs float16)"),
         Switch(
             &int4, "int4",
             "also 4-bit versions of both models (convert --weights int4 of the demo\n"
             "checkpoint, --int4-checkpoint DIR, and of the GPT-2-small-shaped one), on XNNPACK"),
         Text(&int4_checkpoint, "int4-checkpoint", "DIR", "the checkpoint --int4 converts"),
         Switch(&no_load, "no-load",
                "skip the load-time measurements (verified, --no-verify, packed-weight cache;\n"
                "minutes for the big --shapes)"),
         Switch(&no_hostile, "no-hostile",
                "skip the load of a hostile 4,000-layer model file (written once into --work-dir)"),
         Switch(&no_handwritten, "no-handwritten",
                "skip int8 on the hand-written kernels (measured by default next to XNNPACK)"),
         Text(&rank_concepts, "rank-concepts", "A,B,...",
              "several concepts ranked separately (RankConcept each) and together (each distinct\n"
              "sentence once: RankConcepts), int8 on the model under test, at --threads"),
         Text(&rank_concept, "rank-concept", "FILE",
              "concept for the ranking benchmark ('none' to skip; skipped if missing)"),
         Text(&work_dir, "work-dir", "DIR", "where the GPT-2-small-shaped model is cached"),
         Text(&vocab_dir, "vocab-dir", "DIR", "vocab.json + merges.txt for it")},
        0,
        0};
  }

  // The models under test: --model, the GPT-2-shaped ones (--shapes), and with --int4 their
  // 4-bit versions (the demo checkpoint converted with --weights int4; XNNPACK's int8 path only).
  absl::Status BuildTargets(std::vector<Target>* targets, std::vector<Target>* int4_targets) {
    const std::string model_path = model.empty() ? DefaultModelPath() : model;
    targets->push_back({std::filesystem::path(model_path).stem().string(), model_path});
    std::vector<const Gpt2Size*> sizes;
    if (shapes != "none") {
      for (absl::string_view name : absl::StrSplit(shapes, ',')) {
        const Gpt2Size* found = nullptr;
        for (const Gpt2Size& z : kGpt2Sizes) {
          if (name == z.name) found = &z;
        }
        if (found == nullptr) {
          return absl::InvalidArgumentError(absl::StrCat("--shapes: unknown GPT-2 shape '", name,
                                                         "' (small, medium, large, xl or none)"));
        }
        if (no_small && found == &kGpt2Sizes[0]) continue;
        if (std::find(sizes.begin(), sizes.end(), found) == sizes.end()) sizes.push_back(found);
      }
    }
    if (!sizes.empty()) std::filesystem::create_directories(work_dir);
    for (const Gpt2Size* z : sizes) {
      auto path = Gpt2Shaped(work_dir, vocab_dir, *z, int4);
      if (!path.ok()) return path.status();
      targets->push_back({ShapedLabel(*z), *path, z != &kGpt2Sizes[0]});
    }
    if (!int4) return absl::OkStatus();
    std::filesystem::create_directories(work_dir);
    const std::string demo4 = work_dir + "/selfcond-mini-30m-int4.scm";
    if (!ModelFileOk(demo4)) {
      ConvertOptions co;
      co.weights = WeightBits::kInt4;
      co.model_name = "selfcond-mini-30m int4";
      if (auto st = ConvertCheckpoint(int4_checkpoint, demo4, co, nullptr); !st.ok()) return st;
    }
    int4_targets->push_back({(*targets)[0].label + "-int4", demo4});
    for (const Gpt2Size* z : sizes) {
      int4_targets->push_back(
          {ShapedLabel(*z) + "-int4", work_dir + "/" + ShapedLabel(*z) + "-int4.scm", true});
    }
    return absl::OkStatus();
  }

  // KV-cache memory (issue 8): the same generation on the GPT-2-small-shaped model with the
  // session's cache sized to the model's context (what every session allocated before), to the
  // work (prompt + decoded tokens, as `selfcond generate` does), and in float16. Each in a
  // process of its own: peak RSS is per process.
  absl::Status MeasureKv(const BenchParams& p, const Target& small, json::Value* kv_cache,
                         json::Value* ratios) {
    struct KvVariant {
      const char* name;
      int session_ctx;
      bool f16;
    };
    const KvVariant variants[] = {{"model_context_f32 (before)", 0, false},
                                  {"prompt_plus_decode_f32", -1, false},
                                  {"prompt_plus_decode_f16", -1, true}};
    double rss[3] = {0, 0, 0};
    for (int i = 0; i < 3; ++i) {
      BenchParams pp = p;
      pp.rank_concept.clear();
      pp.threads = {1};
      pp.repeats = 1;
      pp.session_ctx = variants[i].session_ctx;
      pp.kv_f16 = variants[i].f16;
      auto r = MeasureInChild(small.label, small.path, Precision::kInt8, "xnnpack", pp);
      if (!r.ok()) return r.status();
      r->Set("variant", json::Value::String(variants[i].name));
      if (const json::Value* v = r->Find("peak_rss_mib")) rss[i] = v->as_number();
      std::fprintf(stderr, "  kv cache %-27s peak RSS %7.1f MiB\n", variants[i].name, rss[i]);
      kv_cache->Push(std::move(*r));
    }
    if (rss[0] > 0 && rss[1] > 0 && rss[2] > 0) {
      ratios->Set("gpt2-small-shaped.peak_rss_kv_sized_over_model_context",
                  json::Value::Number(rss[1] / rss[0]));
      ratios->Set("gpt2-small-shaped.peak_rss_kv_f16_over_f32",
                  json::Value::Number(rss[2] / rss[1]));
    }
    return absl::OkStatus();
  }

  // Load cost: verified vs --no-verify for each model, and the hostile 4,000-layer file (issue
  // 9: its load took 61 s when tensor lookup scanned the table; it must stay under a second).
  absl::StatusOr<json::Value> MeasureLoads(const std::vector<Target>& targets) {
    json::Value loads = json::Value::Array();
    for (const auto& t : targets) {
      loads.Push(MeasureLoadVerify(t.label, t.path, repeats, work_dir + "/packed-cache"));
    }
    if (no_hostile) return loads;
    std::string hostile = work_dir + "/hostile-4000-layers.scm";
    if (!std::filesystem::exists(hostile)) {
      std::fprintf(stderr, "writing the hostile 4,000-layer model to %s\n", hostile.c_str());
      std::filesystem::create_directories(work_dir);
      auto w = WriteHostileModel(work_dir, HostileModel::kManyLayers);
      if (!w.ok()) return w.status();
      hostile = *w;
    }
    loads.Push(
        MeasureLoadVerify("hostile-4000-layers", hostile, repeats, work_dir + "/packed-cache"));
    return loads;
  }

  absl::Status Run(const Args&) {
    if (!out.empty()) {
      if (auto st = CheckOutputPath(out, {model}); !st.ok()) return st;
    }
    BenchParams p;
    p.prompt_tokens = prompt_tokens;
    p.decode_tokens = decode_tokens;
    p.repeats = repeats;
    const int all = threads > 0 ? threads : ThreadPool::NumCores();
    p.threads = {1};
    if (all > 1) p.threads.push_back(all);
    std::string rank = rank_concept;
    if (rank == "none" || !std::filesystem::exists(rank)) rank.clear();
    std::vector<Target> targets, int4_targets;
    if (auto st = BuildTargets(&targets, &int4_targets); !st.ok()) return st;

    json::Value result = json::Value::Object();
    json::Value machine = MachineInfo();
    std::vector<std::pair<int, double>> bandwidth;
    json::Value bw = json::Value::Object();
    for (int t : p.threads) {
      bandwidth.push_back({t, ReadBandwidthGBs(t)});
      bw.Set(absl::StrCat(t), json::Value::Number(bandwidth.back().second));
      std::fprintf(stderr, "  read bandwidth %d thread(s): %.1f GB/s\n", t,
                   bandwidth.back().second);
    }
    machine.Set("read_bandwidth_gb_s", std::move(bw));
    result.Set("machine", std::move(machine));
    // int8 runs on XNNPACK (the engine) and, for the per-target decision in docs/kernels.md, on
    // the best hand-written backend of this CPU; f32 on the hand-written kernels.
    const std::string handwritten = kernels::DefaultBackend().name;
    std::vector<std::pair<Precision, std::string>> configs = {{Precision::kInt8, "xnnpack"}};
    if (!no_handwritten && handwritten != "scalar")
      configs.push_back({Precision::kInt8, handwritten});
    if (!no_f32) configs.push_back({Precision::kF32, handwritten});
    json::Value models = json::Value::Array();
    BenchParams gen = p;
    gen.rank_concept.clear();
    for (const auto& t : targets) {
      for (const auto& [prec, engine] : configs) {
        if (t.big && (prec != Precision::kInt8 || engine != "xnnpack")) continue;
        auto r = MeasureInChild(t.label, t.path, prec, engine, gen);
        if (!r.ok()) return r.status();
        AddReadBound(bandwidth, &*r);
        models.Push(std::move(*r));
      }
    }
    for (const auto& t : int4_targets) {
      auto r = MeasureInChild(t.label, t.path, Precision::kInt8, "xnnpack", gen);
      if (!r.ok()) return r.status();
      AddReadBound(bandwidth, &*r);
      models.Push(std::move(*r));
    }
    json::Value kv_cache = json::Value::Array();
    json::Value ratios = json::Value::Object();
    const auto small = std::find_if(targets.begin(), targets.end(), [](const Target& t) {
      return t.label == ShapedLabel(kGpt2Sizes[0]);
    });
    if (small != targets.end() && !no_kv) {
      if (auto st = MeasureKv(p, *small, &kv_cache, &ratios); !st.ok()) return st;
    }
    // Ranking speed: the model under test, int8 (the shipped path), in a process of its own so
    // that its memory (sentences x units pooled responses) does not count as generation's.
    json::Value ranking = json::Value::Null();
    if (!rank.empty()) {
      BenchParams pp = p;
      pp.rank_concept = rank;
      auto r = MeasureInChild(targets[0].label, targets[0].path, Precision::kInt8, "xnnpack", pp);
      if (!r.ok()) return r.status();
      ranking = std::move(*r);
    }
    absl::StatusOr<json::Value> loads = json::Value::Null();
    if (!no_load) loads = MeasureLoads(targets);
    if (!loads.ok()) return loads.status();
    json::Value multi = json::Value::Null();
    if (!rank_concepts.empty()) {
      std::vector<std::string> concepts = absl::StrSplit(rank_concepts, ',');
      auto mc = MeasureMultiConcept(targets[0].path, concepts, all);
      if (!mc.ok()) return mc.status();
      multi = std::move(*mc);
    }
    AddRatios(models, targets, p, handwritten, &ratios);
    result.Set("models", std::move(models));
    result.Set("ratios", std::move(ratios));
    if (!kv_cache.items().empty()) result.Set("kv_cache", std::move(kv_cache));
    if (!loads->is_null()) result.Set("load", std::move(*loads));
    if (!multi.is_null()) result.Set("multi_concept", std::move(multi));
    if (!ranking.is_null()) result.Set("ranking", std::move(ranking));
    const std::string text = result.Dump();
    if (!out.empty()) {
      if (auto st = WriteFile(out, text + "\n"); !st.ok()) return st;
    }
    if (json || out.empty()) std::printf("%s\n", text.c_str());
    return absl::OkStatus();
  }
};

}  // namespace

int BenchMain(int argc, char** argv) { return Main<BenchCommand>(argc, argv); }

}  // namespace selfcond::cli
