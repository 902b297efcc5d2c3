// JNI projection of the C API for org.selfcond.Native (java/src/main/java/org/selfcond).
//
// Why this shape: the C API is the one boundary (docs/architecture.md); this file only converts
// types and errors, one function per Native method, and never adds behaviour. Strings cross as
// UTF-8 byte arrays (JNI's GetStringUTFChars is "modified UTF-8", wrong outside the BMP). A
// failed C call throws org.selfcond.SelfcondException(status, selfcond_last_error()), which is
// per thread in the C API, so it is read on the thread that failed.
#include <jni.h>

#include <cstdint>
#include <string>
#include <vector>

#include "selfcond/selfcond.h"

namespace {

// Throws SelfcondException unless st is OK; returns true when it threw.
bool Check(JNIEnv* env, selfcond_status st) {
  if (st == SELFCOND_OK) return false;
  if (env->ExceptionCheck()) return true;  // a Java exception (a listener's) goes first
  jclass cls = env->FindClass("org/selfcond/SelfcondException");
  if (cls == nullptr) return true;
  jmethodID ctor = env->GetMethodID(cls, "<init>", "(ILjava/lang/String;)V");
  const char* msg = selfcond_last_error();
  jstring jmsg = env->NewStringUTF(msg != nullptr ? msg : "");
  jobject ex = env->NewObject(cls, ctor, static_cast<jint>(st), jmsg);
  if (ex != nullptr) env->Throw(static_cast<jthrowable>(ex));
  return true;
}

void ThrowIllegalArgument(JNIEnv* env, const char* msg) {
  jclass cls = env->FindClass("java/lang/IllegalArgumentException");
  if (cls != nullptr) env->ThrowNew(cls, msg);
}

// A Java byte[] (UTF-8) as a std::string (NUL-terminated by c_str()).
std::string Bytes(JNIEnv* env, jbyteArray a) {
  if (a == nullptr) return std::string();
  const jsize n = env->GetArrayLength(a);
  std::string s(static_cast<size_t>(n), '\0');
  env->GetByteArrayRegion(a, 0, n, reinterpret_cast<jbyte*>(s.data()));
  return s;
}

jbyteArray ToBytes(JNIEnv* env, const char* p, size_t n) {
  jbyteArray out = env->NewByteArray(static_cast<jsize>(n));
  if (out != nullptr && n > 0) {
    env->SetByteArrayRegion(out, 0, static_cast<jsize>(n), reinterpret_cast<const jbyte*>(p));
  }
  return out;
}

// A C string the library allocated (freed here).
jbyteArray TakeString(JNIEnv* env, char* s) {
  jbyteArray out = ToBytes(env, s, s != nullptr ? std::char_traits<char>::length(s) : 0);
  selfcond_string_free(s);
  return out;
}

// byte[][] -> strings and the char* array the C API takes.
struct StringArray {
  std::vector<std::string> strings;
  std::vector<const char*> ptrs;
};
bool ToStrings(JNIEnv* env, jobjectArray a, StringArray* out) {
  if (a == nullptr) return true;
  const jsize n = env->GetArrayLength(a);
  out->strings.reserve(static_cast<size_t>(n));
  for (jsize i = 0; i < n; ++i) {
    auto b = static_cast<jbyteArray>(env->GetObjectArrayElement(a, i));
    if (b == nullptr) {
      ThrowIllegalArgument(env, "a string is null");
      return false;
    }
    out->strings.push_back(Bytes(env, b));
    env->DeleteLocalRef(b);
  }
  for (const std::string& s : out->strings) out->ptrs.push_back(s.c_str());
  return true;
}

template <typename T>
T* Ptr(jlong p) {
  return reinterpret_cast<T*>(static_cast<intptr_t>(p));
}
jlong Handle(const void* p) { return static_cast<jlong>(reinterpret_cast<intptr_t>(p)); }

jlongArray Longs(JNIEnv* env, const std::vector<jlong>& v) {
  jlongArray out = env->NewLongArray(static_cast<jsize>(v.size()));
  if (out != nullptr) env->SetLongArrayRegion(out, 0, static_cast<jsize>(v.size()), v.data());
  return out;
}

// C strings as byte[][] (UTF-8, decoded in Java: names and concepts are user text).
jobjectArray Strings(JNIEnv* env, const std::vector<const char*>& v) {
  jobjectArray out =
      env->NewObjectArray(static_cast<jsize>(v.size()), env->FindClass("[B"), nullptr);
  for (size_t i = 0; out != nullptr && i < v.size(); ++i) {
    const char* s = v[i] != nullptr ? v[i] : "";
    jbyteArray b = ToBytes(env, s, std::char_traits<char>::length(s));
    env->SetObjectArrayElement(out, static_cast<jsize>(i), b);
    env->DeleteLocalRef(b);
  }
  return out;
}

selfcond_rank_params RankParams(jint precision, jint threads, jint max_sentences, jlong top_n) {
  selfcond_rank_params p = selfcond_rank_default_params();
  p.precision = static_cast<selfcond_precision>(precision);
  p.threads = threads;
  p.max_sentences = max_sentences;
  p.top_n = top_n;
  return p;
}

// The blocking rank's progress: calls the Java listener on the ranking's (the caller's) thread.
struct ProgressCall {
  JNIEnv* env;
  jobject listener;
  jmethodID method;
};
int OnProgress(int done, int total, void* user) {
  auto* c = static_cast<ProgressCall*>(user);
  const jboolean go = c->env->CallBooleanMethod(c->listener, c->method, done, total);
  return c->env->ExceptionCheck() ? 0 : (go ? 1 : 0);
}

}  // namespace

#define JNI_FN(ret, name) extern "C" JNIEXPORT ret JNICALL Java_org_selfcond_Native_##name

JNI_FN(jstring, version)(JNIEnv* env, jclass) { return env->NewStringUTF(selfcond_version()); }

// selfcond_model_params from the Java Params' fields; the progress listener (may be null) is
// called on the loading (the caller's) thread through call.
static bool ModelParams(JNIEnv* env, jboolean verify, jint threads, jlong max_memory,
                        jobject listener, ProgressCall* call, selfcond_model_params* p) {
  *p = selfcond_model_default_params();
  p->verify_hash = verify ? 1 : 0;
  p->threads = threads;
  p->max_memory_bytes = max_memory;
  *call = {env, listener, nullptr};
  if (listener != nullptr) {
    call->method = env->GetMethodID(env->GetObjectClass(listener), "onProgress", "(II)Z");
    if (call->method == nullptr) return false;
    p->progress = OnProgress;
    p->progress_user_data = call;
  }
  return true;
}

JNI_FN(jlong, modelLoadFile)
(JNIEnv* env, jclass, jbyteArray path, jboolean verify, jint threads, jlong max_memory,
 jobject listener) {
  selfcond_model_params p;
  ProgressCall call;
  if (!ModelParams(env, verify, threads, max_memory, listener, &call, &p)) return 0;
  selfcond_model* m = nullptr;
  if (Check(env, selfcond_model_load_file(Bytes(env, path).c_str(), &p, &m))) return 0;
  return Handle(m);
}

JNI_FN(jlong, modelLoadFd)
(JNIEnv* env, jclass, jint fd, jlong offset, jlong length, jboolean verify, jint threads,
 jlong max_memory, jobject listener) {
  selfcond_model_params p;
  ProgressCall call;
  if (!ModelParams(env, verify, threads, max_memory, listener, &call, &p)) return 0;
  selfcond_model* m = nullptr;
  if (Check(env, selfcond_model_load_fd(fd, offset, length, &p, &m))) return 0;
  return Handle(m);
}

JNI_FN(jlong, modelLoadBytes)
(JNIEnv* env, jclass, jbyteArray data, jboolean verify, jint threads, jlong max_memory,
 jobject listener) {
  selfcond_model_params p;
  ProgressCall call;
  if (!ModelParams(env, verify, threads, max_memory, listener, &call, &p)) return 0;
  // The JVM may copy the array for Get*Elements anyway; load_memory copies what it keeps.
  jbyte* bytes = env->GetByteArrayElements(data, nullptr);
  selfcond_model* m = nullptr;
  const selfcond_status st =
      selfcond_model_load_memory(bytes, static_cast<size_t>(env->GetArrayLength(data)), &p, &m);
  env->ReleaseByteArrayElements(data, bytes, JNI_ABORT);
  if (Check(env, st)) return 0;
  return Handle(m);
}

JNI_FN(void, modelFree)(JNIEnv*, jclass, jlong m) { selfcond_model_free(Ptr<selfcond_model>(m)); }

JNI_FN(jobjectArray, modelInfoStrings)(JNIEnv* env, jclass, jlong m) {
  selfcond_model_info i;
  selfcond_model_get_info(Ptr<selfcond_model>(m), &i);
  return Strings(env, {i.name, i.hash, i.arch});
}

JNI_FN(jlongArray, modelInfoNumbers)(JNIEnv* env, jclass, jlong m) {
  selfcond_model_info i;
  selfcond_model_get_info(Ptr<selfcond_model>(m), &i);
  return Longs(env, {i.n_layer, i.n_embd, i.n_head, i.n_ctx, i.n_inner, i.vocab_size, i.eos_id,
                     i.num_units, i.n_head_kv, i.head_dim, i.bos_id, i.threads, i.file_bytes,
                     i.packed_bytes, i.sites_per_layer});
}

JNI_FN(jintArray, tokenize)(JNIEnv* env, jclass, jlong m, jbyteArray text) {
  const std::string t = Bytes(env, text);
  auto* model = Ptr<selfcond_model>(m);
  size_t n = 0;  // a first call counts, the second fills
  if (Check(env, selfcond_tokenize(model, t.c_str(), nullptr, 0, &n))) return nullptr;
  std::vector<int32_t> ids(n);
  if (n > 0 && Check(env, selfcond_tokenize(model, t.c_str(), ids.data(), ids.size(), &n))) {
    return nullptr;
  }
  jintArray out = env->NewIntArray(static_cast<jsize>(n));
  if (out != nullptr) {
    env->SetIntArrayRegion(out, 0, static_cast<jsize>(n),
                           reinterpret_cast<const jint*>(ids.data()));
  }
  return out;
}

JNI_FN(jbyteArray, detokenize)(JNIEnv* env, jclass, jlong m, jintArray tokens) {
  const jsize n = tokens != nullptr ? env->GetArrayLength(tokens) : 0;
  std::vector<int32_t> ids(static_cast<size_t>(n));
  if (n > 0) env->GetIntArrayRegion(tokens, 0, n, reinterpret_cast<jint*>(ids.data()));
  char* s = nullptr;
  if (Check(env,
            selfcond_detokenize_to_string(Ptr<selfcond_model>(m), ids.data(), ids.size(), &s))) {
    return nullptr;
  }
  return TakeString(env, s);
}

JNI_FN(jbyteArray, unitName)(JNIEnv* env, jclass, jlong m, jlong unit, jintArray in_layer) {
  char* layer = nullptr;
  int index = 0;
  if (Check(env, selfcond_unit_to_string(Ptr<selfcond_model>(m), unit, &layer, &index))) {
    return nullptr;
  }
  const jint i = index;
  env->SetIntArrayRegion(in_layer, 0, 1, &i);
  return TakeString(env, layer);
}

JNI_FN(jlong, expertsLoadFile)(JNIEnv* env, jclass, jlong m, jbyteArray path, jboolean unhashed) {
  selfcond_experts_params p = selfcond_experts_default_params();
  p.allow_unhashed = unhashed ? 1 : 0;
  selfcond_experts* e = nullptr;
  if (Check(env, selfcond_experts_load_file_ex(Ptr<selfcond_model>(m), Bytes(env, path).c_str(), &p,
                                               &e))) {
    return 0;
  }
  return Handle(e);
}

JNI_FN(jlong, expertsParse)(JNIEnv* env, jclass, jlong m, jbyteArray text, jboolean unhashed) {
  selfcond_experts_params p = selfcond_experts_default_params();
  p.allow_unhashed = unhashed ? 1 : 0;
  const std::string t = Bytes(env, text);
  selfcond_experts* e = nullptr;
  if (Check(env,
            selfcond_experts_load_memory_ex(Ptr<selfcond_model>(m), t.data(), t.size(), &p, &e))) {
    return 0;
  }
  return Handle(e);
}

JNI_FN(void, expertsFree)(JNIEnv*, jclass, jlong e) {
  selfcond_experts_free(Ptr<selfcond_experts>(e));
}

JNI_FN(jobjectArray, expertsInfoStrings)(JNIEnv* env, jclass, jlong e) {
  selfcond_experts_info i;
  selfcond_experts_get_info(Ptr<selfcond_experts>(e), &i);
  return Strings(env, {i.concept, i.group, i.model_hash});
}

JNI_FN(jlongArray, expertsInfoNumbers)(JNIEnv* env, jclass, jlong e) {
  selfcond_experts_info i;
  selfcond_experts_get_info(Ptr<selfcond_experts>(e), &i);
  return Longs(env, {i.num_units, i.total_units, i.num_positive, i.num_negative, i.num_truncated});
}

JNI_FN(jdoubleArray, expertsUnit)(JNIEnv* env, jclass, jlong e, jlong rank) {
  selfcond_expert_unit u;
  if (Check(env, selfcond_experts_get_unit(Ptr<selfcond_experts>(e), rank, &u))) return nullptr;
  const jdouble v[9] = {static_cast<jdouble>(u.unit_id),
                        static_cast<jdouble>(u.site),
                        static_cast<jdouble>(u.unit),
                        static_cast<jdouble>(u.layer),
                        static_cast<jdouble>(u.kind),
                        u.ap,
                        u.on_p50,
                        u.on_p90,
                        u.off_mean};
  jdoubleArray out = env->NewDoubleArray(9);
  if (out != nullptr) env->SetDoubleArrayRegion(out, 0, 9, v);
  return out;
}

JNI_FN(jbyteArray, expertsToString)(JNIEnv* env, jclass, jlong e, jint format) {
  char* s = nullptr;
  if (Check(env, selfcond_experts_to_string(Ptr<selfcond_experts>(e),
                                            static_cast<selfcond_table_format>(format), &s))) {
    return nullptr;
  }
  return TakeString(env, s);
}

JNI_FN(jlong, sessionCreate)
(JNIEnv* env, jclass, jlong m, jint precision, jint threads, jint n_ctx, jint kv_type,
 jlong max_memory) {
  selfcond_session_params p = selfcond_session_default_params();
  p.max_memory_bytes = max_memory;
  p.precision = static_cast<selfcond_precision>(precision);
  p.threads = threads;
  p.n_ctx = n_ctx;
  p.kv_type = static_cast<selfcond_kv_type>(kv_type);
  selfcond_session* s = nullptr;
  if (Check(env, selfcond_session_create(Ptr<selfcond_model>(m), &p, &s))) return 0;
  return Handle(s);
}

JNI_FN(void, sessionFree)(JNIEnv*, jclass, jlong s) {
  selfcond_session_free(Ptr<selfcond_session>(s));
}

JNI_FN(void, sessionAbort)(JNIEnv*, jclass, jlong s) {
  selfcond_session_abort(Ptr<selfcond_session>(s));
}

JNI_FN(jlongArray, sessionInfo)(JNIEnv* env, jclass, jlong s) {
  selfcond_session_info i;
  selfcond_session_get_info(Ptr<selfcond_session>(s), &i);
  return Longs(env, {i.n_ctx, i.n_past, i.kv_cache_bytes, i.forced_units});
}

JNI_FN(void, sessionSetForcing)
(JNIEnv* env, jclass, jlong s, jlongArray experts, jlongArray top_k, jint value,
 jboolean only_last) {
  const jsize n = env->GetArrayLength(experts);
  std::vector<jlong> e(static_cast<size_t>(n)), k(static_cast<size_t>(n));
  if (n > 0) {
    env->GetLongArrayRegion(experts, 0, n, e.data());
    env->GetLongArrayRegion(top_k, 0, n, k.data());
  }
  std::vector<selfcond_forcing_source> src(static_cast<size_t>(n));
  for (size_t i = 0; i < src.size(); ++i) {
    src[i].experts = Ptr<const selfcond_experts>(e[i]);
    src[i].top_k = k[i];
  }
  Check(env, selfcond_session_set_forcing(Ptr<selfcond_session>(s), src.data(), src.size(),
                                          static_cast<selfcond_forcing_value>(value),
                                          only_last ? 1 : 0));
}

JNI_FN(jlong, generationStart)
(JNIEnv* env, jclass, jlong s, jbyteArray prompt, jint max_new, jfloat temperature, jint top_k,
 jfloat top_p, jlong seed, jboolean stop_at_eos, jboolean keep_context, jobjectArray stops,
 jfloat repeat_penalty, jint repeat_last_n) {
  StringArray stop_strings;
  if (!ToStrings(env, stops, &stop_strings)) return 0;
  selfcond_generate_params p = selfcond_generate_default_params();
  p.keep_context = keep_context ? 1 : 0;
  p.stop_strings = stop_strings.ptrs.data();
  p.n_stop_strings = stop_strings.ptrs.size();
  p.repeat_penalty = repeat_penalty;
  p.repeat_last_n = repeat_last_n;
  p.max_new_tokens = max_new;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.seed = static_cast<uint64_t>(seed);
  p.stop_at_eos = stop_at_eos ? 1 : 0;
  selfcond_generation* g = nullptr;
  if (Check(env, selfcond_generation_start(Ptr<selfcond_session>(s), Bytes(env, prompt).c_str(), &p,
                                           &g))) {
    return 0;
  }
  return Handle(g);
}

JNI_FN(jbyteArray, generationNext)(JNIEnv* env, jclass, jlong g, jintArray state) {
  selfcond_generation_step step;
  if (Check(env, selfcond_generation_next(Ptr<selfcond_generation>(g), &step))) return nullptr;
  const jint st[5] = {step.token, step.done, static_cast<jint>(step.stop), step.prompt_tokens,
                      step.new_tokens};
  env->SetIntArrayRegion(state, 0, 5, st);
  return ToBytes(env, step.piece, step.piece_len);
}

JNI_FN(void, generationCancel)(JNIEnv*, jclass, jlong g) {
  selfcond_generation_cancel(Ptr<selfcond_generation>(g));
}

JNI_FN(void, generationFree)(JNIEnv*, jclass, jlong g) {
  selfcond_generation_free(Ptr<selfcond_generation>(g));
}

JNI_FN(jlong, rankingStart)
(JNIEnv* env, jclass, jlong m, jbyteArray concept, jobjectArray pos, jobjectArray neg,
 jint precision, jint threads, jint max_sentences, jlong top_n) {
  StringArray p, n;
  if (!ToStrings(env, pos, &p) || !ToStrings(env, neg, &n)) return 0;
  const selfcond_rank_params rp = RankParams(precision, threads, max_sentences, top_n);
  selfcond_ranking* r = nullptr;
  if (Check(env, selfcond_ranking_start(Ptr<selfcond_model>(m), Bytes(env, concept).c_str(),
                                        p.ptrs.data(), p.ptrs.size(), n.ptrs.data(), n.ptrs.size(),
                                        &rp, &r))) {
    return 0;
  }
  return Handle(r);
}

JNI_FN(jintArray, rankingStep)(JNIEnv* env, jclass, jlong r, jint n) {
  int done = 0, total = 0;
  if (Check(env, selfcond_ranking_step(Ptr<selfcond_ranking>(r), n, &done, &total))) return nullptr;
  const jint v[2] = {done, total};
  jintArray out = env->NewIntArray(2);
  if (out != nullptr) env->SetIntArrayRegion(out, 0, 2, v);
  return out;
}

JNI_FN(jlong, rankingFinish)(JNIEnv* env, jclass, jlong r) {
  selfcond_experts* e = nullptr;
  if (Check(env, selfcond_ranking_finish(Ptr<selfcond_ranking>(r), &e))) return 0;
  return Handle(e);
}

JNI_FN(void, rankingFree)(JNIEnv*, jclass, jlong r) {
  selfcond_ranking_free(Ptr<selfcond_ranking>(r));
}

JNI_FN(jlong, rank)
(JNIEnv* env, jclass, jlong m, jbyteArray concept, jobjectArray pos, jobjectArray neg,
 jint precision, jint threads, jint max_sentences, jlong top_n, jobject listener) {
  StringArray p, n;
  if (!ToStrings(env, pos, &p) || !ToStrings(env, neg, &n)) return 0;
  const selfcond_rank_params rp = RankParams(precision, threads, max_sentences, top_n);
  ProgressCall call{env, listener, nullptr};
  if (listener != nullptr) {
    call.method = env->GetMethodID(env->GetObjectClass(listener), "onProgress", "(II)Z");
    if (call.method == nullptr) return 0;
  }
  selfcond_experts* e = nullptr;
  if (Check(env, selfcond_rank(Ptr<selfcond_model>(m), Bytes(env, concept).c_str(), p.ptrs.data(),
                               p.ptrs.size(), n.ptrs.data(), n.ptrs.size(), &rp,
                               listener != nullptr ? OnProgress : nullptr, &call, &e))) {
    return 0;
  }
  return Handle(e);
}
