// JavaScript bindings (embind) for the browser: marshalling over the library, no model logic.
//
// The API mirrors the library's Model / Session split, so one copy of the weights serves every
// generation and the ranking (wasm memory only grows; each extra copy would stay for good):
//   const m = new Module.Model();  m.load(bytes, {threads, precision, verifyHash = true}) -> {ok}
//   m.info() / tokenize / detokenize / addExpertTable / exportExpertTable / expertUnits
//   m.startRanking(concept, pos[], neg[], {topN}) / rankStep(n) / finishRanking() -> a table
//   const {session} = m.createSession({nCtx, kvType});   // own KV cache and forcing
//   session.setForcing([{id, topK}], value, onlyLastToken) / clearForcing()
//   m.conceptWords / steeringVector / wordLogitBias / traceUnit / compareMethods and
//   session.setSteering / setLogitBias: the other steering methods and the expert explorer
//   session.startGeneration(prompt, {...}) / step() -> one token per call
// Everything long-running is a step function (Generation::Next, Ranking::Step), so the JS side
// (a Web Worker) streams, reports progress and cancels between calls. Errors never throw: every
// fallible call returns {ok: false, error: the absl::Status text}. Library: src/model/gpt2.h,
// src/model/generate.h, src/experts/rank.h, src/experts/expert_table.h.
#include <emscripten/bind.h>
#include <emscripten/heap.h>
#include <emscripten/val.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "experts/dataset.h"
#include "experts/expert_table.h"
#include "experts/rank.h"
#include "experts/steer.h"
#include "kernels/kernels.h"
#include "kernels/xnnpack.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/units.h"
#include "tools/paper_experiments.h"
#include "util/file_util.h"
#include "util/json.h"
#include "util/parallel.h"

namespace selfcond {
namespace {

using emscripten::val;

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

// opts[name] if it is a number / boolean / string, else the default (also for JS undefined/null).
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

// A copy of n elements at p as a new JS typed array (a view into wasm memory is only valid
// until the next allocation may grow the memory, so the view itself is never handed out).
template <typename T>
val CopyToJs(const char* type, const T* p, size_t n) {
  return val::global(type).new_(emscripten::typed_memory_view(n, p));
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

val NotFound(int table_id) {
  return Error(absl::NotFoundError(absl::StrCat("no expert table ", table_id)));
}

// One loaded model with what its sessions share: the thread pool and the expert tables. Held by
// shared_ptr so that a JS Session keeps it alive even if the JS Model is deleted first (embind
// objects are freed by hand, in any order).
struct Loaded {
  std::unique_ptr<ThreadPool> pool;  // null: single-threaded
  std::unique_ptr<Model> model;
  Precision precision = Precision::kInt8;
  std::map<int, ExpertTable> tables;
  int next_table_id = 1;

  const ExpertTable* table(int id) const {
    auto it = tables.find(id);
    return it == tables.end() ? nullptr : &it->second;
  }
};

// JS `Model`: one model file in wasm memory (copied in once), its expert tables, the ranking.
class JsModel {
 public:
  // bytes: a Uint8Array (or an ArrayBuffer) holding a selfcond model file.
  // opts: {threads = 1, precision = "int8" | "f32", verifyHash = true}. Replaces a model
  // loaded before (sessions created on it keep it alive until they are deleted). The content
  // hash is verified by default: a browser page loads files from URLs it does not control, and
  // a corrupted or truncated download must be refused, not run (verifyHash: false opts out;
  // web/README.md has the measured cost).
  val load(val bytes, val opts) {
    ranking_.reset();
    trace_session_.reset();
    m_.reset();
    auto precision = ParsePrecision(StringOr(opts, "precision", "int8"));
    if (!precision.ok()) return Error(precision.status());
    const size_t n = bytes["byteLength"].as<size_t>();
    // A malloc'd block (not a std::string): the model shrinks it in place once XNNPACK has
    // packed the weights, so their file copy does not stay in wasm memory.
    auto buf = HeapBuffer::Allocate(n);
    if (!buf.ok()) return Error(buf.status());
    // One memcpy-speed copy straight into wasm memory (TypedArray.set), not element by element.
    const val src = bytes["buffer"].isUndefined()
                        ? val::global("Uint8Array").new_(bytes)  // an ArrayBuffer
                        : val::global("Uint8Array").new_(bytes["buffer"], bytes["byteOffset"], n);
    val(emscripten::typed_memory_view(n, buf->data())).call<void>("set", src);
    Model::LoadOptions lo;
    lo.verify_hash = BoolOr(opts, "verifyHash", true);
    lo.need_float = *precision == Precision::kF32;
    auto model = Model::FromBuffer(std::move(*buf), lo);
    if (!model.ok()) return Error(model.status());
    auto m = std::make_shared<Loaded>();
    const int threads = static_cast<int>(NumberOr(opts, "threads", 1));
    if (threads > 1) m->pool = std::make_unique<ThreadPool>(threads);
    m->model = std::move(*model);
    m->precision = *precision;
    m_ = std::move(m);
    return Ok();
  }

  bool loaded() const { return m_ != nullptr; }

  val info() const {
    if (!m_) return Error("no model loaded");
    const Model& model = *m_->model;
    const ModelConfig& c = model.config();
    val o = Ok();
    o.set("name", model.name());
    o.set("hash", model.hash_hex());
    o.set("nLayer", c.n_layer);
    o.set("nEmbd", c.n_embd);
    o.set("nHead", c.n_head);
    o.set("nCtx", c.n_ctx);
    o.set("nInner", c.n_inner);
    o.set("vocabSize", c.vocab_size);
    o.set("eosId", model.tokenizer().eos_id());
    o.set("numUnits", static_cast<double>(UnitSpace(c).num_units()));
    o.set("fileBytes", static_cast<double>(model.file_bytes()));
    // XNNPACK's packed copy of the linears (the file's copy stays too: wasm memory cannot drop
    // pages, see MappedFile::DropPages).
    o.set("packedBytes", static_cast<double>(model.xnn() ? model.xnn()->packed_bytes() : 0));
    const bool f32 = m_->precision == Precision::kF32;
    o.set("precision", std::string(f32 ? "f32" : "int8"));
    // What runs the linear layers: "xnnpack" (int8), or the hand-written kernels (f32 path).
    o.set("backend", std::string(!f32 && model.xnn() ? "xnnpack" : kernels::DefaultBackend().name));
    o.set("threads", m_->pool ? m_->pool->size() : 1);
    return o;
  }

  // -> Int32Array of token ids (empty without a model).
  val tokenize(const std::string& text) const {
    if (!m_) return val::global("Int32Array").new_(0);
    const std::vector<int32_t> ids = m_->model->tokenizer().Encode(text);
    return CopyToJs("Int32Array", ids.data(), ids.size());
  }

  // ids: any array-like of numbers.
  val detokenize(val ids) const {
    if (!m_) return val("");
    const std::vector<int32_t> v = emscripten::convertJSArrayToNumberVector<int32_t>(ids);
    return JsString(m_->model->tokenizer().Decode(v));
  }

  // opts: {nCtx = 0 (the model's), kvType = "f32" | "f16"}. -> {ok, session} (a JS Session,
  // to be delete()d). Sessions share this model's weights and thread pool; the worker calls
  // them one at a time, so the pool is never used by two at once.
  val createSession(val opts) const;

  // ---- expert tables --------------------------------------------------------------------------

  // text: a native JSON table or an ml-selfcond expertise.csv, checked against the model.
  // opts: {allowUnhashed = false}: a table without model hash (an expertise.csv) is refused
  // unless allowed (then only the model's shape is checked).
  // -> {ok, id, concept, group, numUnits, totalUnits}
  val addExpertTable(const std::string& text, val opts) {
    if (!m_) return Error("no model loaded");
    auto table = ParseAnyExpertTable(text);
    if (!table.ok()) return Error(table.status());
    if (auto st = CheckCompatible(*table, *m_->model, BoolOr(opts, "allowUnhashed", false));
        !st.ok()) {
      return Error(st);
    }
    return AddTable(std::move(*table));
  }

  // format: "json" (native) | "csv" (ml-selfcond expertise.csv). -> {ok, text}
  val exportExpertTable(int id, const std::string& format) const {
    const ExpertTable* t = m_ ? m_->table(id) : nullptr;
    if (!t) return NotFound(id);
    val o = Ok();
    if (format == "json") {
      o.set("text", JsString(SerializeExpertTable(*t)));
    } else if (format == "csv") {
      o.set("text", JsString(ExportExpertiseCsv(*t)));
    } else {
      return Error(absl::InvalidArgumentError(absl::StrCat("unknown format '", format, "'")));
    }
    return o;
  }

  // The best `count` units of a table as columns, for display: {ok, layer: string[], site,
  // unit, ap, onP50, onP90, offMean} (typed arrays).
  val expertUnits(int id, int count) const {
    const ExpertTable* t = m_ ? m_->table(id) : nullptr;
    if (!t) return NotFound(id);
    const std::vector<ExpertUnit>& u = t->units;
    const size_t n = std::min(u.size(), static_cast<size_t>(std::max(count, 0)));
    std::vector<int32_t> site(n), unit(n), uid(n);
    std::vector<float> ap(n), p50(n), p90(n), off(n);
    val layer = val::array();
    const UnitSpace space(m_->model->config());
    for (size_t i = 0; i < n; ++i) {
      site[i] = u[i].site;
      unit[i] = u[i].unit;
      uid[i] = static_cast<int32_t>(space.UnitId(u[i].site, u[i].unit));
      ap[i] = u[i].ap;
      p50[i] = u[i].on_p50;
      p90[i] = u[i].on_p90;
      off[i] = u[i].off_mean;
      layer.call<void>("push", space.SiteName(u[i].site));
    }
    val o = Ok();
    o.set("layer", layer);
    o.set("site", CopyToJs("Int32Array", site.data(), n));
    o.set("unit", CopyToJs("Int32Array", unit.data(), n));
    o.set("id", CopyToJs("Int32Array", uid.data(), n));  // global unit ids (traceUnit)
    o.set("ap", CopyToJs("Float32Array", ap.data(), n));
    o.set("onP50", CopyToJs("Float32Array", p50.data(), n));
    o.set("onP90", CopyToJs("Float32Array", p90.data(), n));
    o.set("offMean", CopyToJs("Float32Array", off.data(), n));
    return o;
  }

  // Sessions forcing a table's units keep their own copy of the forcing.
  bool removeExpertTable(int id) { return m_ && m_->tables.erase(id) > 0; }

  // ---- ranking a concept (Ranking: one at a time per model) -----------------------------------

  // opts: {maxSentences = 0 (all), topN = 0 (all units), group = ""}. Tokenizes; then
  // rankStep(n) runs up to n more sentences and finishRanking() adds the table.
  // -> {ok, total, truncated}
  val startRanking(const std::string& concept, val positives, val negatives, val opts) {
    ranking_.reset();
    if (!m_) return Error("no model loaded");
    auto ds = DatasetFromVectors(concept, StringVector(positives), StringVector(negatives));
    if (!ds.ok()) return Error(ds.status());
    ds->group = StringOr(opts, "group", "");
    RankOptions ro;
    ro.precision = m_->precision;
    ro.pool = m_->pool.get();  // null: threads = 1, the calling thread
    ro.max_sentences = static_cast<int>(NumberOr(opts, "maxSentences", 0));
    ro.top_n = static_cast<int64_t>(NumberOr(opts, "topN", 0));
    auto r = Ranking::Start(*m_->model, std::move(*ds), ro);
    if (!r.ok()) return Error(r.status());
    ranking_ = std::move(*r);
    val o = Ok();
    o.set("total", ranking_->total());
    o.set("truncated", ranking_->num_truncated());
    return o;
  }

  // Runs up to max(count, 1) more sentences. -> {ok, done: sentences finished, total}
  val rankStep(int count) {
    if (!ranking_) return Error("no ranking in progress: call startRanking first");
    auto done = ranking_->Step(count);
    if (!done.ok()) {
      ranking_.reset();
      return Error(done.status());
    }
    val o = Ok();
    o.set("done", *done);
    o.set("total", ranking_->total());
    return o;
  }

  // Computes every unit's expertise and adds the table. -> like addExpertTable.
  val finishRanking() {
    if (!ranking_) return Error("no ranking in progress: call startRanking first");
    if (ranking_->done() < ranking_->total()) {
      return Error(absl::StrCat("ranking not finished: ", ranking_->done(), " of ",
                                ranking_->total(), " sentences done"));
    }
    auto t = ranking_->Finish();
    ranking_.reset();
    if (!t.ok()) return Error(t.status());
    return AddTable(std::move(*t));
  }

  void cancelRanking() { ranking_.reset(); }

  // ---- other steering methods and the expert explorer (experts/steer.h, docs/browser.md) ----

  // The dataset's most typical words: {ok, words: [{word, logOdds, positive, negative}]}.
  val conceptWords(val positive, val negative, int max_words) {
    auto ds = DatasetFromVectors("concept", StringVector(positive), StringVector(negative));
    if (!ds.ok()) return Error(ds.status());
    val words = val::array();
    for (const auto& w : ConceptWords(*ds, max_words)) {
      val o = val::object();
      o.set("word", w.word);
      o.set("logOdds", w.log_odds);
      o.set("positive", w.positive);
      o.set("negative", w.negative);
      words.call<void>("push", o);
    }
    val o = Ok();
    o.set("words", words);
    return o;
  }

  // The steering vector of block `layer`: {ok, vector: Float32Array (n_embd), layer, norm}.
  val steeringVector(val positive, val negative, int layer) {
    if (!m_) return Error("no model loaded");
    auto ds = DatasetFromVectors("concept", StringVector(positive), StringVector(negative));
    if (!ds.ok()) return Error(ds.status());
    auto v = ComputeSteeringVector(*m_->model, *ds, layer, m_->precision, m_->pool.get());
    if (!v.ok()) return Error(v.status());
    val o = Ok();
    o.set(
        "vector",
        val::global("Float32Array").new_(val(emscripten::typed_memory_view(v->size(), v->data()))));
    o.set("layer", layer);
    o.set("norm", SteeringNorm(*v));
    return o;
  }

  // The logit bias of words (strings): {ok, tokens: [ids], bias: [beta...]} over their
  // single-token forms " word" / " Word".
  val wordLogitBias(val words, double beta) {
    if (!m_) return Error("no model loaded");
    std::vector<ConceptWord> list;
    for (auto& w : StringVector(words)) list.push_back({std::move(w), 0, 0, 0});
    val tokens = val::array(), bias = val::array();
    for (const auto& [t, b] :
         WordLogitBias(m_->model->tokenizer(), list, static_cast<float>(beta))) {
      tokens.call<void>("push", t);
      bias.call<void>("push", b);
    }
    val o = Ok();
    o.set("tokens", tokens);
    o.set("bias", bias);
    return o;
  }

  // Where a unit fires: {ok, tokens: [text of each token], values: [its response at each]}.
  val traceUnit(const std::string& sentence, double unit_id) {
    if (!m_) return Error("no model loaded");
    if (!trace_session_ || trace_model_ != m_.get()) {
      SessionOptions so;
      so.precision = m_->precision;
      auto s = Session::Create(*m_->model, so);
      if (!s.ok()) return Error(s.status());
      trace_session_ = std::move(*s);
      trace_model_ = m_.get();
    }
    std::vector<int32_t> ids = m_->model->tokenizer().Encode(sentence);
    if (ids.size() > static_cast<size_t>(trace_session_->n_ctx()))
      ids.resize(trace_session_->n_ctx());
    auto trace = TraceUnit(*trace_session_, ids, static_cast<int64_t>(unit_id));
    if (!trace.ok()) return Error(trace.status());
    val tokens = val::array(), values = val::array();
    for (size_t i = 0; i < ids.size(); ++i) {
      tokens.call<void>("push",
                        JsString(m_->model->tokenizer().Decode(std::vector<int32_t>{ids[i]})));
      values.call<void>("push", (*trace)[i]);
    }
    val o = Ok();
    o.set("tokens", tokens);
    o.set("values", values);
    return o;
  }

  // The three methods side by side on a small grid (tools/paper_experiments.h
  // RunCompareExperiment): table `table_id` (the concept's experts), its sentences, opts:
  // {prompts, seeds, newTokens, ks, alphas, betas, layer}. -> {ok, json: CompareResultToJson}.
  // Blocking (a few seconds on the demo model).
  val compareMethods(int table_id, val positive, val negative, val opts) {
    if (!m_) return Error("no model loaded");
    const ExpertTable* t = m_->table(table_id);
    if (!t) return NotFound(table_id);
    auto ds = DatasetFromVectors(t->concept, StringVector(positive), StringVector(negative));
    if (!ds.ok()) return Error(ds.status());
    CompareOptions o;
    o.precision = m_->precision;
    if (!opts["prompts"].isUndefined()) o.prompts = StringVector(opts["prompts"]);
    o.seeds = static_cast<int>(NumberOr(opts, "seeds", 2));
    o.new_tokens = static_cast<int>(NumberOr(opts, "newTokens", 16));
    auto nums = [&](const char* key, auto* out) {
      if (opts.isUndefined() || opts.isNull() || opts[key].isUndefined()) return;
      out->clear();
      for (double x : emscripten::convertJSArrayToNumberVector<double>(opts[key])) {
        out->push_back(static_cast<typename std::decay_t<decltype(*out)>::value_type>(x));
      }
    };
    nums("ks", &o.ks);
    nums("alphas", &o.alphas);
    nums("betas", &o.betas);
    o.steer_layer = static_cast<int>(NumberOr(opts, "layer", -1));
    auto r = RunCompareExperiment(*m_->model, *t, *ds, o, m_->pool.get());
    if (!r.ok()) return Error(r.status());
    val out = Ok();
    out.set("json", JsString(CompareResultToJson(*r).Dump()));
    return out;
  }

 private:
  val AddTable(ExpertTable t) {
    const int id = m_->next_table_id++;
    val o = Ok();
    o.set("id", id);
    o.set("concept", t.concept);
    o.set("group", t.group);
    o.set("numUnits", static_cast<double>(t.units.size()));
    o.set("totalUnits", static_cast<double>(t.total_units));
    m_->tables.emplace(id, std::move(t));
    return o;
  }

  std::shared_ptr<Loaded> m_;
  std::unique_ptr<Ranking> ranking_;        // runs on *m_: declared after it, so destroyed first
  std::unique_ptr<Session> trace_session_;  // traceUnit's own session
  const Loaded* trace_model_ = nullptr;
};

// JS `Session`: one conversation with a model (KV cache, forcing) and its Generation.
class JsSession {
 public:
  JsSession(std::shared_ptr<Loaded> m, std::unique_ptr<Session> s)
      : m_(std::move(m)), session_(std::move(s)) {}

  // -> {ok, nCtx, kvCacheBytes, backend}
  val info() const {
    val o = Ok();
    o.set("nCtx", session_->n_ctx());
    o.set("kvCacheBytes", static_cast<double>(session_->kv_cache_bytes()));
    o.set("backend", std::string(session_->engine_name()));
    return o;
  }

  // sources: [{id, topK}] (ids of the model's tables); value: "on_p50" | "on_p90" | "off_mean"
  // | "zero". Replaces the session's forcing (an empty list clears it) from the next token on.
  val setForcing(val sources, const std::string& value, bool only_last_token) {
    auto fv = ParseForcingValue(value);
    if (!fv.ok()) return Error(fv.status());
    std::vector<ForcingSource> src;
    const int n = sources["length"].as<int>();
    for (int i = 0; i < n; ++i) {
      const int id = static_cast<int>(NumberOr(sources[i], "id", -1));
      const ExpertTable* t = m_->table(id);
      if (!t) return NotFound(id);
      src.push_back({t, static_cast<int64_t>(NumberOr(sources[i], "topK", 0))});
    }
    auto forcing = BuildForcing(src, *fv, only_last_token, UnitSpace(m_->model->config()));
    if (!forcing.ok()) return Error(forcing.status());
    Session::Conditioning cond = session_->conditioning();
    cond.forcing = std::move(*forcing);
    if (auto st = session_->SetConditioning(std::move(cond)); !st.ok()) return Error(st);
    return Ok();
  }

  void clearForcing() {
    Session::Conditioning cond = session_->conditioning();
    cond.forcing = Forcing();
    (void)session_->SetConditioning(std::move(cond));
  }

  // Adds alpha * vector (a Float32Array or array of n_embd numbers, Model.steeringVector) after
  // block `layer` at every position; an empty or missing vector clears it.
  val setSteering(int layer, val vector, double alpha) {
    std::vector<float> v;
    if (!vector.isUndefined() && !vector.isNull()) {
      v = emscripten::convertJSArrayToNumberVector<float>(vector);
    }
    Session::Conditioning cond = session_->conditioning();
    cond.steering = ScaledSteering(layer, v, alpha);
    if (auto s = session_->SetConditioning(std::move(cond)); !s.ok()) return Error(s);
    return Ok();
  }

  // Adds bias[i] to the logit of tokens[i] (Model.wordLogitBias); empty arrays clear it.
  val setLogitBias(val tokens, val bias) {
    const auto t = emscripten::convertJSArrayToNumberVector<int32_t>(tokens);
    const auto b = emscripten::convertJSArrayToNumberVector<float>(bias);
    if (t.size() != b.size())
      return Error(absl::InvalidArgumentError("tokens and bias differ in length"));
    std::vector<std::pair<int32_t, float>> pairs;
    for (size_t i = 0; i < t.size(); ++i) pairs.push_back({t[i], b[i]});
    Session::Conditioning cond = session_->conditioning();
    cond.logit_bias = std::move(pairs);
    if (auto s = session_->SetConditioning(std::move(cond)); !s.ok()) return Error(s);
    return Ok();
  }

  // opts: {maxNewTokens = 50, temperature = 1, topK = 0, topP = 1, seed = 0, stopAtEos = true}.
  // Prefills the prompt (the slow part for long prompts); then step() gives one token per call.
  // -> {ok, promptTokens}
  val startGeneration(const std::string& prompt, val opts) {
    gen_.reset();
    GenerateOptions go;
    go.max_new_tokens = static_cast<int>(NumberOr(opts, "maxNewTokens", go.max_new_tokens));
    go.sampling.temperature = static_cast<float>(NumberOr(opts, "temperature", 1.0));
    go.sampling.top_k = static_cast<int>(NumberOr(opts, "topK", 0));
    go.sampling.top_p = static_cast<float>(NumberOr(opts, "topP", 1.0));
    go.sampling.seed = static_cast<uint64_t>(NumberOr(opts, "seed", 0));
    go.stop_at_eos = BoolOr(opts, "stopAtEos", true);
    const std::vector<int32_t> ids = PromptTokens(m_->model->tokenizer(), prompt);
    auto gen = Generation::Start(*session_, ids, go);
    if (!gen.ok()) return Error(gen.status());
    gen_ = std::move(*gen);
    val o = Ok();
    o.set("promptTokens", static_cast<int>(ids.size()));
    return o;
  }

  // -> {ok, done, token (-1 if none), text (complete UTF-8, may be ""), stop ("" until done)}.
  val step() {
    if (!gen_) return Error("no generation in progress: call startGeneration first");
    auto s = gen_->Next();
    if (!s.ok()) {
      gen_.reset();
      return Error(s.status());
    }
    val o = Ok();
    o.set("done", gen_->done());
    o.set("token", s->token);
    o.set("text", JsString(s->text));
    o.set("stop", std::string(gen_->done() ? StopName(gen_->result().stop) : ""));
    return o;
  }

  // Ends the generation here (step() then reports done with stop "cancelled").
  void cancel() {
    if (gen_) gen_->Cancel();
  }

 private:
  // Destroyed bottom-up: the generation before the session it runs on, the session before the
  // model (and pool) it uses.
  std::shared_ptr<Loaded> m_;
  std::unique_ptr<Session> session_;
  std::unique_ptr<Generation> gen_;
};

val JsModel::createSession(val opts) const {
  if (!m_) return Error("no model loaded");
  SessionOptions so;
  so.precision = m_->precision;
  so.pool = m_->pool.get();
  so.n_ctx = static_cast<int>(NumberOr(opts, "nCtx", 0));
  const std::string kv = StringOr(opts, "kvType", "f32");
  if (kv != "f32" && kv != "f16") {
    return Error(absl::InvalidArgumentError(absl::StrCat("unknown kvType '", kv, "'")));
  }
  so.kv_type = kv == "f16" ? SessionOptions::KvType::kF16 : SessionOptions::KvType::kF32;
  auto s = Session::Create(*m_->model, so);
  if (!s.ok()) return Error(s.status());
  val o = Ok();
  o.set("session", val(JsSession(m_, std::move(*s))));  // JS owns it from here
  return o;
}

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

// The wasm memory's current size: it only grows, so this is the peak of everything allocated.
double HeapBytes() { return static_cast<double>(emscripten_get_heap_size()); }

}  // namespace
}  // namespace selfcond

EMSCRIPTEN_BINDINGS(selfcond) {
  using selfcond::JsModel;
  using selfcond::JsSession;
  emscripten::class_<JsModel>("Model")
      .constructor<>()
      .function("load", &JsModel::load)
      .function("loaded", &JsModel::loaded)
      .function("info", &JsModel::info)
      .function("tokenize", &JsModel::tokenize)
      .function("detokenize", &JsModel::detokenize)
      .function("createSession", &JsModel::createSession)
      .function("addExpertTable", &JsModel::addExpertTable)
      .function("exportExpertTable", &JsModel::exportExpertTable)
      .function("expertUnits", &JsModel::expertUnits)
      .function("removeExpertTable", &JsModel::removeExpertTable)
      .function("startRanking", &JsModel::startRanking)
      .function("rankStep", &JsModel::rankStep)
      .function("finishRanking", &JsModel::finishRanking)
      .function("cancelRanking", &JsModel::cancelRanking)
      .function("conceptWords", &JsModel::conceptWords)
      .function("steeringVector", &JsModel::steeringVector)
      .function("wordLogitBias", &JsModel::wordLogitBias)
      .function("traceUnit", &JsModel::traceUnit)
      .function("compareMethods", &JsModel::compareMethods);
  emscripten::class_<JsSession>("Session")
      .function("info", &JsSession::info)
      .function("setForcing", &JsSession::setForcing)
      .function("clearForcing", &JsSession::clearForcing)
      .function("setSteering", &JsSession::setSteering)
      .function("setLogitBias", &JsSession::setLogitBias)
      .function("startGeneration", &JsSession::startGeneration)
      .function("step", &JsSession::step)
      .function("cancel", &JsSession::cancel);
  emscripten::function("buildInfo", &selfcond::BuildInfo);
  emscripten::function("heapBytes", &selfcond::HeapBytes);
}
