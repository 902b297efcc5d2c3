// JavaScript bindings (embind) for the browser: one `Engine` object per loaded model.
//
// Everything long-running is a step function, so the JS side (a Web Worker) can stream results,
// report progress and cancel between steps without threads or callbacks into JS:
//   engine.load(bytes, {threads, precision})            -> {ok, error?}
//   engine.startGeneration(prompt, {...}) / step()      -> one token per step
//   engine.startRanking(concept, pos[], neg[], {...}) / rankStep(n) / finishRanking()
//   engine.addExpertTable(text) / exportExpertTable(id, fmt) / setForcing([{id, topK}], ...)
// Errors never throw: every fallible call returns a plain object with ok = false and error =
// the absl::Status text. The library API it wraps: src/gpt2.h, src/generate.h, src/experts/*.
#include <emscripten/bind.h>
#include <emscripten/val.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "experts/dataset.h"
#include "experts/expert_table.h"
#include "experts/expertise.h"
#include "experts/rank.h"
#include "model/generate.h"
#include "model/gpt2.h"
#include "kernels/kernels.h"
#include "kernels/xnnpack.h"
#include "util/parallel.h"
#include "model/units.h"

namespace selfcond {
namespace {

using emscripten::val;

val JsString(const std::string& s);  // below

val Ok() {
  val o = val::object();
  o.set("ok", true);
  return o;
}

val Error(const absl::Status& st) {
  val o = val::object();
  o.set("ok", false);
  o.set("error", JsString(st.ToString()));
  return o;
}

val Error(const std::string& msg) { return Error(absl::FailedPreconditionError(msg)); }

// opts[name] if it is a number / boolean / string, else the default (JS `undefined` or null).
double NumberOr(const val& opts, const char* name, double def) {
  if (opts.isUndefined() || opts.isNull()) return def;
  val v = opts[name];
  return v.isNumber() ? v.as<double>() : def;
}
bool BoolOr(const val& opts, const char* name, bool def) {
  if (opts.isUndefined() || opts.isNull()) return def;
  val v = opts[name];
  return v.isTrue() ? true : (v.isFalse() ? false : def);
}
std::string StringOr(const val& opts, const char* name, const std::string& def) {
  if (opts.isUndefined() || opts.isNull()) return def;
  val v = opts[name];
  return v.isString() ? v.as<std::string>() : def;
}

// A copy of n elements at p as a new JS typed array (the view into wasm memory is only valid
// until the next allocation may grow the memory, so never hand the view itself out).
template <typename T>
val CopyToJs(const char* type, const T* p, size_t n) {
  return val::global(type).new_(emscripten::typed_memory_view(n, p));
}

// UTF-8 bytes -> JS string. embind's own std::string conversion (Emscripten 3.1.6) decodes with
// a default TextDecoder, which drops a leading U+FEFF (BOM): a token " \uFEFF..." would lose it.
// The bytes are copied out first: TextDecoder refuses views of a SharedArrayBuffer (pthreads).
val JsString(const std::string& s) {
  val opts = val::object();
  opts.set("ignoreBOM", true);
  val decoder = val::global("TextDecoder").new_(val("utf-8"), opts);
  val bytes = val::global("Uint8Array")
                  .new_(emscripten::typed_memory_view(s.size(),
                                                      reinterpret_cast<const uint8_t*>(s.data())));
  return decoder.call<val>("decode", bytes);
}

// A JS array of strings -> std::vector<std::string> (UTF-16 -> UTF-8 by embind).
std::vector<std::string> StringVector(const val& arr) {
  std::vector<std::string> out;
  const int n = arr["length"].as<int>();
  out.reserve(n);
  for (int i = 0; i < n; ++i) out.push_back(arr[i].as<std::string>());
  return out;
}

const char* StopName(GenerateResult::Stop s) {
  switch (s) {
    case GenerateResult::Stop::kMaxTokens:
      return "max_tokens";
    case GenerateResult::Stop::kEos:
      return "eos";
    case GenerateResult::Stop::kContextFull:
      return "context_full";
    case GenerateResult::Stop::kCancelled:
      return "cancelled";
  }
  return "";
}

class Engine {
 public:
  Engine() = default;
  ~Engine() { Unload(); }

  // bytes: a Uint8Array (or ArrayBuffer view) holding a selfcond model file.
  // opts: {threads = 1, precision = "int8" | "f32", verifyHash = false}.
  val load(val bytes, val opts) {
    Unload();
    const size_t n = bytes["byteLength"].as<size_t>();
    std::string buf(n, '\0');
    // One memcpy-speed copy straight into wasm memory (TypedArray.set), not element by element.
    const val src = bytes["buffer"].isUndefined()
                        ? val::global("Uint8Array").new_(bytes)  // an ArrayBuffer
                        : val::global("Uint8Array").new_(bytes["buffer"], bytes["byteOffset"], n);
    val(emscripten::typed_memory_view(n, reinterpret_cast<uint8_t*>(buf.data())))
        .call<void>("set", src);
    auto precision = ParsePrecision(StringOr(opts, "precision", "int8"));
    if (!precision.ok()) return Error(precision.status());
    Model::LoadOptions lo;
    lo.verify_hash = BoolOr(opts, "verifyHash", false);
    lo.need_float = *precision == Precision::kF32;
    auto model = Model::FromBuffer(std::move(buf), lo);
    if (!model.ok()) return Error(model.status());
    const int threads = static_cast<int>(NumberOr(opts, "threads", 1));
    if (threads > 1) pool_ = std::make_unique<ThreadPool>(threads);
    SessionOptions so;
    so.precision = *precision;
    so.pool = pool_.get();
    auto session = Session::Create(**model, so);
    if (!session.ok()) return Error(session.status());
    precision_ = *precision;
    model_ = std::move(*model);
    session_ = std::move(*session);
    return Ok();
  }

  void Unload() {
    gen_.reset();
    rank_.reset();
    session_.reset();
    forcing_.reset();
    tables_.clear();
    model_.reset();
    pool_.reset();
  }

  bool loaded() const { return model_ != nullptr; }

  val info() const {
    if (!model_) return Error("no model loaded");
    const GPT2Config& c = model_->config();
    val o = Ok();
    o.set("name", model_->name());
    o.set("hash", model_->hash_hex());
    o.set("nLayer", c.n_layer);
    o.set("nEmbd", c.n_embd);
    o.set("nHead", c.n_head);
    o.set("nCtx", c.n_ctx);
    o.set("nInner", c.n_inner);
    o.set("vocabSize", c.vocab_size);
    o.set("eosId", model_->tokenizer().eos_id());
    o.set("numUnits", static_cast<double>(UnitSpace(c).num_units()));
    o.set("fileBytes", static_cast<double>(model_->file_bytes()));
    o.set("precision", std::string(precision_ == Precision::kF32 ? "f32" : "int8"));
    // What runs the linear layers: "xnnpack" (int8), or the hand-written kernels (f32 path).
    o.set("backend",
          std::string(session_ ? session_->engine_name() : kernels::DefaultBackend().name));
    o.set("threads", pool_ ? pool_->size() : 1);
    return o;
  }

  // -> Int32Array of token ids (empty without a model).
  val tokenize(const std::string& text) const {
    if (!model_) return val::global("Int32Array").new_(0);
    const std::vector<int32_t> ids = model_->tokenizer().Encode(text);
    return CopyToJs("Int32Array", ids.data(), ids.size());
  }

  // ids: any array-like of numbers.
  val detokenize(val ids) const {
    if (!model_) return val("");
    const std::vector<int32_t> v = emscripten::convertJSArrayToNumberVector<int32_t>(ids);
    return JsString(model_->tokenizer().Decode(v));
  }

  // ---- generation ---------------------------------------------------------------------------

  // opts: {maxNewTokens = 50, temperature = 1, topK = 0, topP = 1, seed = 0, stopAtEos = true}.
  // Tokenizes and prefills the prompt (the slow part for long prompts); then step() produces
  // one token per call. Mirrors Generate() in src/generate.cc token for token.
  val startGeneration(const std::string& prompt, val opts) {
    gen_.reset();
    if (!session_) return Error("no model loaded");
    GenerateOptions go;
    go.max_new_tokens = static_cast<int>(NumberOr(opts, "maxNewTokens", go.max_new_tokens));
    go.sampling.temperature = static_cast<float>(NumberOr(opts, "temperature", 1.0));
    go.sampling.top_k = static_cast<int>(NumberOr(opts, "topK", 0));
    go.sampling.top_p = static_cast<float>(NumberOr(opts, "topP", 1.0));
    go.sampling.seed = static_cast<uint64_t>(NumberOr(opts, "seed", 0));
    go.stop_at_eos = BoolOr(opts, "stopAtEos", true);
    if (auto st = ValidateSampling(go.sampling); !st.ok()) return Error(st);
    if (go.max_new_tokens < 0)
      return Error(absl::InvalidArgumentError("maxNewTokens must be >= 0"));
    const std::vector<int32_t> ids = model_->tokenizer().Encode(prompt);
    const uint32_t n_ctx = model_->config().n_ctx;
    if (ids.empty()) return Error(absl::InvalidArgumentError("empty prompt (no tokens)"));
    if (ids.size() >= n_ctx) {
      return Error(absl::OutOfRangeError(
          absl::StrCat("prompt is ", ids.size(), " tokens; the model's context is ", n_ctx)));
    }
    session_->Reset();
    auto logits = session_->Forward(ids, Session::Logits::kLast);
    if (!logits.ok()) return Error(logits.status());
    gen_ = std::make_unique<Generation>(go);
    gen_->logits = *logits;
    val o = Ok();
    o.set("promptTokens", static_cast<int>(ids.size()));
    return o;
  }

  // -> {ok, done, token (-1 if none), text (complete UTF-8, may be ""), stop ("" until done)}.
  val step() {
    if (!gen_) return Error("no generation in progress: call startGeneration first");
    Generation& g = *gen_;
    val o = Ok();
    int32_t token = -1;
    std::string text;
    if (!g.done) {
      if (g.produced >= g.opts.max_new_tokens) {
        g.Finish(GenerateResult::Stop::kMaxTokens, &text);
      } else {
        const int32_t next = g.sampler.Sample(g.logits);
        const Tokenizer& tok = model_->tokenizer();
        if (g.opts.stop_at_eos && next == tok.eos_id()) {
          g.Finish(GenerateResult::Stop::kEos, &text);
        } else {
          token = next;
          ++g.produced;
          text = g.stream.Push(tok.DecodeToken(next));
          if (g.produced == g.opts.max_new_tokens) {
            g.Finish(GenerateResult::Stop::kMaxTokens, &text);
          } else if (session_->pos() >= static_cast<int>(model_->config().n_ctx)) {
            g.Finish(GenerateResult::Stop::kContextFull, &text);
          } else {
            auto logits = session_->Forward({&next, 1}, Session::Logits::kLast);
            if (!logits.ok()) {
              gen_.reset();
              return Error(logits.status());
            }
            g.logits = *logits;
          }
        }
      }
    }
    o.set("done", g.done);
    o.set("token", token);
    o.set("text", JsString(text));
    o.set("stop", std::string(g.done ? StopName(g.stop) : ""));
    return o;
  }

  // ---- expert tables and forcing ------------------------------------------------------------

  // text: a native JSON table or an ml-selfcond expertise.csv. Checked against the loaded model.
  // -> {ok, id, concept, group, numUnits, totalUnits}
  val addExpertTable(const std::string& text) {
    if (!model_) return Error("no model loaded");
    const size_t first = text.find_first_not_of(" \t\r\n");
    auto table = (first != std::string::npos && text[first] == '{') ? ParseExpertTable(text)
                                                                    : ImportExpertiseCsv(text);
    if (!table.ok()) return Error(table.status());
    if (auto st = CheckCompatible(*table, *model_); !st.ok()) return Error(st);
    return AddTable(std::move(*table));
  }

  // format: "json" (native) | "csv" (ml-selfcond expertise.csv). -> {ok, text}
  val exportExpertTable(int id, const std::string& format) const {
    auto it = tables_.find(id);
    if (it == tables_.end())
      return Error(absl::NotFoundError(absl::StrCat("no expert table ", id)));
    val o = Ok();
    if (format == "json") {
      o.set("text", JsString(SerializeExpertTable(it->second)));
    } else if (format == "csv") {
      o.set("text", JsString(ExportExpertiseCsv(it->second)));
    } else {
      return Error(absl::InvalidArgumentError(absl::StrCat("unknown format '", format, "'")));
    }
    return o;
  }

  // The best `count` units of a table as columns: {ok, layer: string[], site, unit, ap, onP50,
  // onP90, offMean} (typed arrays), for display.
  val expertUnits(int id, int count) const {
    auto it = tables_.find(id);
    if (it == tables_.end())
      return Error(absl::NotFoundError(absl::StrCat("no expert table ", id)));
    const std::vector<ExpertUnit>& u = it->second.units;
    const size_t n = std::min(u.size(), static_cast<size_t>(std::max(count, 0)));
    std::vector<int32_t> site(n), unit(n);
    std::vector<float> ap(n), p50(n), p90(n), off(n);
    val layer = val::array();
    for (size_t i = 0; i < n; ++i) {
      site[i] = u[i].site;
      unit[i] = u[i].unit;
      ap[i] = u[i].ap;
      p50[i] = u[i].on_p50;
      p90[i] = u[i].on_p90;
      off[i] = u[i].off_mean;
      layer.call<void>("push", u[i].layer_name());
    }
    val o = Ok();
    o.set("layer", layer);
    o.set("site", CopyToJs("Int32Array", site.data(), n));
    o.set("unit", CopyToJs("Int32Array", unit.data(), n));
    o.set("ap", CopyToJs("Float32Array", ap.data(), n));
    o.set("onP50", CopyToJs("Float32Array", p50.data(), n));
    o.set("onP90", CopyToJs("Float32Array", p90.data(), n));
    o.set("offMean", CopyToJs("Float32Array", off.data(), n));
    return o;
  }

  bool removeExpertTable(int id) { return tables_.erase(id) > 0; }

  // sources: [{id, topK}]; value: "on_p50" | "on_p90" | "off_mean" | "zero". Replaces the
  // current forcing (an empty list clears it). Applies to the next generation step.
  val setForcing(val sources, const std::string& value, bool only_last_token) {
    if (!session_) return Error("no model loaded");
    auto fv = ParseForcingValue(value);
    if (!fv.ok()) return Error(fv.status());
    std::vector<ForcingSource> src;
    const int n = sources["length"].as<int>();
    for (int i = 0; i < n; ++i) {
      const int id = static_cast<int>(NumberOr(sources[i], "id", -1));
      auto it = tables_.find(id);
      if (it == tables_.end())
        return Error(absl::NotFoundError(absl::StrCat("no expert table ", id)));
      src.push_back({&it->second, static_cast<int64_t>(NumberOr(sources[i], "topK", 0))});
    }
    auto forcing = BuildForcing(src, *fv, only_last_token, UnitSpace(model_->config()));
    if (!forcing.ok()) return Error(forcing.status());
    auto next = std::make_unique<Forcing>(std::move(*forcing));
    if (auto st = session_->SetForcing(next->empty() ? nullptr : next.get()); !st.ok()) {
      return Error(st);
    }
    forcing_ = std::move(next);  // the session points at it now; the old one is released
    return Ok();
  }

  void clearForcing() {
    if (session_) (void)session_->SetForcing(nullptr);
    forcing_.reset();
  }

  // ---- ranking a concept --------------------------------------------------------------------

  // opts: {maxSentences = 0 (all), topN = 0 (all units), group = ""}. Validates and tokenizes;
  // then rankStep(n) runs up to n more sentences, finishRanking() computes the table.
  // -> {ok, total, truncated}
  val startRanking(const std::string& concept, val positives, val negatives, val opts) {
    rank_.reset();
    if (!model_) return Error("no model loaded");
    DatasetOptions dso;
    dso.max_sentences = static_cast<int>(NumberOr(opts, "maxSentences", 0));
    auto ds = DatasetFromVectors(concept, StringVector(positives), StringVector(negatives), dso);
    if (!ds.ok()) return Error(ds.status());
    ds->group = StringOr(opts, "group", "");
    auto r = std::make_unique<Ranking>();
    r->top_n = static_cast<int64_t>(NumberOr(opts, "topN", 0));
    r->dataset = std::move(*ds);
    const int n_pos = static_cast<int>(r->dataset.positive.size());
    const int n_total = n_pos + static_cast<int>(r->dataset.negative.size());
    const size_t n_ctx = model_->config().n_ctx;
    r->tokens.resize(n_total);
    for (int i = 0; i < n_total; ++i) {
      const std::string& s = i < n_pos ? r->dataset.positive[i] : r->dataset.negative[i - n_pos];
      r->tokens[i] = model_->tokenizer().Encode(s);
      if (r->tokens[i].size() > n_ctx) {
        r->tokens[i].resize(n_ctx);
        ++r->pooled.num_truncated;
      }
    }
    r->pooled.num_sentences = n_total;
    r->pooled.num_units = UnitSpace(model_->config()).num_units();
    r->pooled.labels.assign(n_total, 0);
    std::fill(r->pooled.labels.begin(), r->pooled.labels.begin() + n_pos, 1);
    r->pooled.responses.resize(static_cast<size_t>(n_total) * r->pooled.num_units);
    // One single-threaded session per pool thread: sentences are independent.
    const int workers = pool_ ? pool_->size() : 1;
    for (int w = 0; w < workers; ++w) {
      SessionOptions so;
      so.precision = precision_;
      auto s = Session::Create(*model_, so);
      if (!s.ok()) return Error(s.status());
      r->sessions.push_back(std::move(*s));
    }
    rank_ = std::move(r);
    val o = Ok();
    o.set("total", n_total);
    o.set("truncated", rank_->pooled.num_truncated);
    return o;
  }

  // Runs up to max(count, 1) more sentences. -> {ok, done: sentences finished, total}
  val rankStep(int count) {
    if (!rank_) return Error("no ranking in progress: call startRanking first");
    Ranking& r = *rank_;
    const int total = static_cast<int>(r.pooled.num_sentences);
    const int end = std::min(total, r.next + std::max(count, 1));
    const int n_pos = static_cast<int>(r.dataset.positive.size());
    std::atomic<int> next{r.next};
    std::vector<absl::Status> errors(r.sessions.size());
    auto work = [&](int w) {
      for (int i; (i = next.fetch_add(1)) < end;) {
        float* row = r.pooled.responses.data() + static_cast<size_t>(i) * r.pooled.num_units;
        absl::Status st = PoolSentence(*r.sessions[w], r.tokens[i], row);
        if (!st.ok() && errors[w].ok()) {
          errors[w] = absl::Status(st.code(),
                                   absl::StrCat(i < n_pos ? "positive" : "negative", " sentence ",
                                                i < n_pos ? i : i - n_pos, ": ", st.message()));
        }
      }
    };
    const int workers = static_cast<int>(r.sessions.size());
    if (pool_ && workers > 1) {
      pool_->ParallelFor(workers, work);
    } else {
      work(0);
    }
    for (const absl::Status& st : errors) {
      if (!st.ok()) {
        rank_.reset();
        return Error(st);
      }
    }
    r.next = end;
    val o = Ok();
    o.set("done", end);
    o.set("total", total);
    return o;
  }

  // Computes every unit's expertise and stores the table (as addExpertTable does).
  // -> {ok, id, concept, ...} like addExpertTable.
  val finishRanking() {
    if (!rank_) return Error("no ranking in progress: call startRanking first");
    Ranking& r = *rank_;
    if (r.next < r.pooled.num_sentences) {
      return Error(absl::StrCat("ranking not finished: ", r.next, " of ", r.pooled.num_sentences,
                                " sentences done"));
    }
    auto ex = ComputeExpertise(r.pooled.responses, r.pooled.num_sentences, r.pooled.num_units,
                               r.pooled.labels, pool_.get());
    if (!ex.ok()) {
      rank_.reset();
      return Error(ex.status());
    }
    ExpertTable t =
        MakeExpertTable(model_->config(), ex->ap, ex->on_p50, ex->on_p90, ex->off_mean, r.top_n);
    t.concept = r.dataset.concept;
    t.group = r.dataset.group;
    t.model_hash = model_->hash_hex();
    t.model_name = model_->name();
    t.precision = precision_ == Precision::kF32 ? "f32" : "int8";
    t.num_positive = static_cast<int>(r.dataset.positive.size());
    t.num_negative = static_cast<int>(r.dataset.negative.size());
    t.num_truncated = r.pooled.num_truncated;
    rank_.reset();
    return AddTable(std::move(t));
  }

  void cancelRanking() { rank_.reset(); }

 private:
  struct Generation {
    explicit Generation(const GenerateOptions& o) : opts(o), sampler(o.sampling) {}
    void Finish(GenerateResult::Stop s, std::string* text) {
      done = true;
      stop = s;
      *text += stream.Flush();
    }
    GenerateOptions opts;
    Sampler sampler;
    Utf8Stream stream;
    absl::Span<const float> logits;  // (vocab) into the session's scratch; valid until Forward
    int produced = 0;
    bool done = false;
    GenerateResult::Stop stop = GenerateResult::Stop::kMaxTokens;
  };

  struct Ranking {
    Dataset dataset;
    std::vector<std::vector<int32_t>> tokens;        // (num_sentences) positives first
    PooledResponses pooled;                          // responses (num_sentences, num_units)
    std::vector<std::unique_ptr<Session>> sessions;  // one per pool thread
    int next = 0;                                    // first sentence not yet run
    int64_t top_n = 0;
  };

  val AddTable(ExpertTable t) {
    const int id = next_table_id_++;
    val o = Ok();
    o.set("id", id);
    o.set("concept", t.concept);
    o.set("group", t.group);
    o.set("numUnits", static_cast<double>(t.units.size()));
    o.set("totalUnits", static_cast<double>(t.total_units));
    tables_.emplace(id, std::move(t));
    return o;
  }

  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Session> session_;  // generation; uses pool_ inside each GEMM
  Precision precision_ = Precision::kInt8;
  std::unique_ptr<Forcing> forcing_;  // what session_ points at (null: no forcing)
  std::map<int, ExpertTable> tables_;
  int next_table_id_ = 1;
  std::unique_ptr<Generation> gen_;
  std::unique_ptr<Ranking> rank_;
};

// Build facts for the UI and bug reports.
val BuildInfo() {
  val o = val::object();
  // XNNPACK first: it runs the int8 linears; the hand-written kernels run the f32 path.
  std::string names = kernels::xnn::Available() ? "xnnpack" : "";
  for (const kernels::Backend* b : kernels::AvailableBackends()) {
    names += std::string(names.empty() ? "" : ",") + b->name;
  }
  o.set("backends", names);
#if defined(__EMSCRIPTEN_PTHREADS__)
  o.set("pthreads", true);
#else
  o.set("pthreads", false);
#endif
  o.set("cores", ThreadPool::NumCores());
  return o;
}

}  // namespace
}  // namespace selfcond

EMSCRIPTEN_BINDINGS(selfcond) {
  using selfcond::Engine;
  emscripten::class_<Engine>("Engine")
      .constructor<>()
      .function("load", &Engine::load)
      .function("unload", &Engine::Unload)
      .function("loaded", &Engine::loaded)
      .function("info", &Engine::info)
      .function("tokenize", &Engine::tokenize)
      .function("detokenize", &Engine::detokenize)
      .function("startGeneration", &Engine::startGeneration)
      .function("step", &Engine::step)
      .function("addExpertTable", &Engine::addExpertTable)
      .function("exportExpertTable", &Engine::exportExpertTable)
      .function("expertUnits", &Engine::expertUnits)
      .function("removeExpertTable", &Engine::removeExpertTable)
      .function("setForcing", &Engine::setForcing)
      .function("clearForcing", &Engine::clearForcing)
      .function("startRanking", &Engine::startRanking)
      .function("rankStep", &Engine::rankStep)
      .function("finishRanking", &Engine::finishRanking)
      .function("cancelRanking", &Engine::cancelRanking);
  emscripten::function("buildInfo", &selfcond::BuildInfo);
}
