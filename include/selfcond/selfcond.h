/* selfcond: self-conditioning of language models (GPT-2, the Llama family) on device. The C API
 * (C99).
 *
 * This header is selfcond's one boundary: a 1:1 projection of the library's Engine
 * (src/engine/engine.h). Every binding wraps it: Python (python/selfcond/_capi.py) and the
 * WebAssembly build's JavaScript (web/lib/engine/capi.js, web/lib/capi.d.ts) are generated
 * from it by scripts/gen_bindings.py, so a field added to a params struct reaches them without
 * hand-written code. It has no C++ or Abseil types. Handles are opaque; every fallible call
 * returns a selfcond_status and, on error, leaves a message for the calling thread in
 * selfcond_last_error().
 *
 * Conventions the generator relies on: a params struct selfcond_X_params has
 * selfcond_X_default_params(); an array field `const T* name` is followed by its length
 * `size_t n_name`.
 *
 * Objects and threads
 *   selfcond_model    Immutable after loading: the weights, held once in memory, and one thread
 *                     pool (selfcond_model_params.threads). Any number of sessions and rankings
 *                     on any threads may share one model. Every object made from a model keeps
 *                     it alive: selfcond_model_free may come first, the memory goes with the
 *                     last object.
 *   selfcond_session  One KV cache and one forcing setting. Use a session from one thread at a
 *                     time (one session per thread); different sessions run concurrently.
 *   selfcond_experts  An expert table (a concept's units ranked by AP). Read-only after it is
 *                     made: may be shared by threads and sessions. A session copies the units it
 *                     forces, so a table may be freed while a session still uses its forcing.
 *   selfcond_ranking  One concept ranking in progress; like a session, one thread at a time.
 * Callbacks run on the calling thread, before the call returns. Strings are UTF-8 and
 * NUL-terminated unless a length is given. Strings returned by selfcond_*_to_string are owned
 * by the caller (selfcond_string_free); other returned strings live as long as their object.
 *
 * Typical use (demo/c/main.c is a complete program):
 *   selfcond_model* m;  selfcond_model_load_file("model.scm", NULL, &m);
 *   selfcond_session* s; selfcond_session_create(m, NULL, &s);
 *   selfcond_experts* e; selfcond_experts_load_file(m, "football.json", &e);
 *   selfcond_forcing_source src = {e, 50};
 *   selfcond_session_set_forcing(s, &src, 1, SELFCOND_FORCE_ON_P50, 0);
 *   selfcond_generate(s, "Once upon a time", NULL, on_token, user, NULL);
 */
#ifndef SELFCOND_SELFCOND_H_
#define SELFCOND_SELFCOND_H_

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#if defined(SELFCOND_BUILDING_LIBRARY)
#define SELFCOND_API __declspec(dllexport)
#else
#define SELFCOND_API
#endif
#else
#define SELFCOND_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define SELFCOND_VERSION_MAJOR 0
#define SELFCOND_VERSION_MINOR 11
#define SELFCOND_VERSION_PATCH 0

/* "0.11.0": the library's version (may differ from the header's if linked dynamically). */
SELFCOND_API const char* selfcond_version(void);

/* ---- errors ------------------------------------------------------------------------------ */

typedef enum {
  SELFCOND_OK = 0,
  SELFCOND_INVALID_ARGUMENT = 1,    /* a bad option, malformed input file or text */
  SELFCOND_NOT_FOUND = 2,           /* a missing file */
  SELFCOND_OUT_OF_RANGE = 3,        /* e.g. a prompt longer than the context */
  SELFCOND_FAILED_PRECONDITION = 4, /* e.g. an expert table made for another model */
  SELFCOND_DATA_LOSS = 5,           /* corrupt or truncated file, hash mismatch */
  SELFCOND_RESOURCE_EXHAUSTED = 6,  /* out of memory */
  SELFCOND_CANCELLED = 7,           /* a callback asked to stop */
  SELFCOND_INTERNAL = 8,            /* anything else (a bug: please report) */
  SELFCOND_UNIMPLEMENTED = 9
} selfcond_status;

/* The message of the last failed call on this thread ("" if none). Valid until the next call
 * on this thread. */
SELFCOND_API const char* selfcond_last_error(void);
/* "INVALID_ARGUMENT", ... */
SELFCOND_API const char* selfcond_status_name(selfcond_status status);

/* Frees a string returned by a selfcond_*_to_string function. NULL is ignored. */
SELFCOND_API void selfcond_string_free(char* s);

/* ---- logging ----------------------------------------------------------------------------- */

typedef enum {
  SELFCOND_LOG_ERROR = 0, /* every failed call's message (as selfcond_last_error) */
  SELFCOND_LOG_WARN = 1,  /* e.g. a forcing that asked for more units than its table holds */
  SELFCOND_LOG_INFO = 2   /* models loaded, sessions created (sizes, backend, time) */
} selfcond_log_level;
/* Receives the library's log lines (message: one line, NUL-terminated, valid during the call),
 * on the thread whose call produced them. */
typedef void (*selfcond_log_callback)(selfcond_log_level level, const char* message,
                                      void* user_data);
/* Sends log lines to callback (e.g. Android's __android_log_write, os_log); NULL: none (the
 * default: the library never writes to stdout or stderr). Process-wide; set it before loading
 * models, not while other threads call the library. */
SELFCOND_API void selfcond_set_log_callback(selfcond_log_callback callback, void* user_data);

/* Called as long work goes, with work done and its total (sentences of a ranking, bytes of a
 * model load); return 0 to cancel (the call then fails with SELFCOND_CANCELLED; the measured
 * operations, selfcond_choose_k and selfcond_compare_methods, run to the end). */
typedef int (*selfcond_progress_callback)(int done, int total, void* user_data);

/* ---- models ------------------------------------------------------------------------------ */

typedef struct selfcond_model selfcond_model;

typedef struct {
  int verify_hash; /* 1: recompute the file's SHA-256 and refuse a mismatch (slower loads) */
  int need_f32;    /* 1: also prepare float weights, for sessions with precision f32 */
  int threads;     /* the model's thread pool (created when first used); <= 0: every core */
  int64_t max_memory_bytes; /* memory the model may hold (packed weights, float copies, a copy
                               of the file), checked before allocating: a load that needs more
                               fails with SELFCOND_RESOURCE_EXHAUSTED; 0: no limit */
  selfcond_progress_callback progress; /* the load's progress (per mille: total 1000: hashing
                                          and packing the weights); may cancel; NULL: none */
  void* progress_user_data;
} selfcond_model_params;

/* Defaults: verify_hash 1 (integrity by default: a corrupt or tampered file is refused with
 * SELFCOND_DATA_LOSS; 0 skips the SHA-256 pass for a trusted file, see the README for its
 * measured cost), need_f32 0, threads 0, no memory limit, no progress. params may be NULL for
 * the defaults. */
SELFCOND_API selfcond_model_params selfcond_model_default_params(void);

/* A selfcond model file (.scm, written by `selfcond convert`). */
SELFCOND_API selfcond_status selfcond_model_load_file(const char* path,
                                                      const selfcond_model_params* params,
                                                      selfcond_model** out);
/* The same from bytes in memory (copied: the caller may free data after the call). */
SELFCOND_API selfcond_status selfcond_model_load_memory(const void* data, size_t size,
                                                        const selfcond_model_params* params,
                                                        selfcond_model** out);
/* The same without a copy: data is a block from malloc (in the WebAssembly build, the module's
 * malloc) that the library takes over and frees, whether the load succeeds or not. What the
 * browser's worker uses: the file is in WebAssembly memory once, and its packed weights' part is
 * released after packing. */
SELFCOND_API selfcond_status selfcond_model_load_owned(void* data, size_t size,
                                                       const selfcond_model_params* params,
                                                       selfcond_model** out);
/* length bytes from offset of an open file (length 0: to its end): a model stored inside
 * another file, e.g. an uncompressed asset of an Android APK (AssetFileDescriptor's fd, start
 * offset and length). Mapped like selfcond_model_load_file when offset is a multiple of 64 (the
 * file's tensor alignment; Android's zipalign -p gives page-aligned uncompressed assets), else
 * read into memory. The descriptor is duplicated: the caller may close it after the call. Not
 * in the WebAssembly build. */
SELFCOND_API selfcond_status selfcond_model_load_fd(int fd, int64_t offset, int64_t length,
                                                    const selfcond_model_params* params,
                                                    selfcond_model** out);
/* The same from the caller's bytes, used in place without a copy (e.g. a buffer the app mapped
 * or an asset in memory): data must stay unchanged and valid until the model and everything
 * made from it are freed. Peak memory is the caller's bytes plus the packed weights (against
 * twice the file with selfcond_model_load_memory). */
SELFCOND_API selfcond_status selfcond_model_load_view(const void* data, size_t size,
                                                      const selfcond_model_params* params,
                                                      selfcond_model** out);
SELFCOND_API void selfcond_model_free(selfcond_model* model);

typedef struct {
  const char* name; /* e.g. "gpt2" */
  const char* hash; /* SHA-256 of the weights, hex; expert tables name it */
  int n_layer, n_embd, n_head, n_ctx, n_inner, vocab_size;
  int eos_id;        /* the first end-of-sequence token; -1 if none */
  int64_t num_units; /* units of the linear layers of every block (the unit space) */
  const char* arch;  /* "gpt2" | "llama" (the Llama family: Llama, Qwen2, Mistral, SmolLM) */
  int n_head_kv;     /* key/value heads (grouped-query attention; = n_head for GPT-2) */
  int head_dim;
  int bos_id;           /* the token the prompt template puts first; -1 if none (GPT-2) */
  int threads;          /* threads of the model's pool */
  int64_t file_bytes;   /* size of the model file */
  int64_t packed_bytes; /* the int8 weights repacked for the GEMM engine (XNNPACK) */
  int sites_per_layer;  /* linear layers of a block that hold units: 4 (GPT-2), 7 (Llama) */
} selfcond_model_info;
/* Strings point into the model. */
SELFCOND_API void selfcond_model_get_info(const selfcond_model* model, selfcond_model_info* out);

/* Build facts for bug reports and the UI, as a new JSON string (selfcond_string_free):
 * {"version", "backends": the GEMM engines available on this CPU, first the one int8 uses,
 *  "pthreads": threads available (false in the single-threaded WASM build), "cores"}. */
SELFCOND_API selfcond_status selfcond_build_info_to_string(char** out);

/* Token ids of text. Writes up to capacity ids to out (out may be NULL with capacity 0) and
 * the total count to *n_tokens (call again with a larger buffer if it exceeds capacity). */
SELFCOND_API selfcond_status selfcond_tokenize(const selfcond_model* model, const char* text,
                                               int32_t* out, size_t capacity, size_t* n_tokens);
/* The same with add_special = 1: the ids the model is given for a text on its own, with the
 * template's special tokens around it (Llama 3's <|begin_of_text|>; none for GPT-2). */
SELFCOND_API selfcond_status selfcond_tokenize_ex(const selfcond_model* model, const char* text,
                                                  int add_special, int32_t* out, size_t capacity,
                                                  size_t* n_tokens);
/* The text of token ids, as a new string (selfcond_string_free). */
SELFCOND_API selfcond_status selfcond_detokenize_to_string(const selfcond_model* model,
                                                           const int32_t* ids, size_t n,
                                                           char** out);
/* ml-selfcond's name of unit `unit_id` (0 <= unit_id < num_units): its layer, e.g.
 * "transformer.h.3.mlp.c_fc:0", and its index in that layer. */
SELFCOND_API selfcond_status selfcond_unit_to_string(const selfcond_model* model, int64_t unit_id,
                                                     char** layer_name, int* unit_in_layer);
/* The short name of a site kind (0 <= kind < sites_per_layer): "attn.c_attn", ... for GPT-2,
 * "self_attn.q_proj", ... for the Llama family. Static storage. */
SELFCOND_API const char* selfcond_site_kind_name(const selfcond_model* model, int kind);

/* ---- expert tables ----------------------------------------------------------------------- */

typedef struct selfcond_experts selfcond_experts;

/* A native JSON table or an ml-selfcond expertise.csv (detected from the content), checked
 * against the model: a table of another model (other hash or shape) is refused with
 * SELFCOND_FAILED_PRECONDITION, and so is a table without a model hash (an expertise.csv),
 * which nothing ties to this model; the _ex functions can allow those. */
SELFCOND_API selfcond_status selfcond_experts_load_file(const selfcond_model* model,
                                                        const char* path, selfcond_experts** out);
SELFCOND_API selfcond_status selfcond_experts_load_memory(const selfcond_model* model,
                                                          const char* text, size_t size,
                                                          selfcond_experts** out);
typedef struct {
  int allow_unhashed; /* 1: accept a table without model hash, checked for the model's shape only */
} selfcond_experts_params;
/* Defaults: allow_unhashed 0. params may be NULL for the defaults. */
SELFCOND_API selfcond_experts_params selfcond_experts_default_params(void);
SELFCOND_API selfcond_status selfcond_experts_load_file_ex(const selfcond_model* model,
                                                           const char* path,
                                                           const selfcond_experts_params* params,
                                                           selfcond_experts** out);
SELFCOND_API selfcond_status selfcond_experts_load_memory_ex(const selfcond_model* model,
                                                             const char* text, size_t size,
                                                             const selfcond_experts_params* params,
                                                             selfcond_experts** out);
SELFCOND_API void selfcond_experts_free(selfcond_experts* experts);

typedef enum { SELFCOND_TABLE_JSON = 0, SELFCOND_TABLE_CSV = 1 } selfcond_table_format;
/* Writes the table (JSON: selfcond's format; CSV: ml-selfcond's expertise.csv). The file is
 * written to a temporary name beside path and renamed into place. */
SELFCOND_API selfcond_status selfcond_experts_save(const selfcond_experts* experts,
                                                   const char* path, selfcond_table_format format);
SELFCOND_API selfcond_status selfcond_experts_to_string(const selfcond_experts* experts,
                                                        selfcond_table_format format, char** out);

typedef struct {
  const char* concept; /* points into the table */
  int64_t num_units;   /* units in the table (sorted by AP, best first) */
  int64_t total_units; /* units of the model */
  int num_positive, num_negative;
  const char* group;      /* "" when the table has none */
  const char* model_hash; /* the model it was ranked on; "" for a table without one */
  int num_truncated;      /* sentences cut to the model's context when ranking */
} selfcond_experts_info;
SELFCOND_API void selfcond_experts_get_info(const selfcond_experts* experts,
                                            selfcond_experts_info* out);

typedef struct {
  int64_t unit_id; /* in the model's unit space */
  int site;        /* GPT-2: layer * 4 + kind (0 attn.c_attn, 1 attn.c_proj, 2 mlp.c_fc,
                      3 mlp.c_proj); Llama family: layer * 7 + kind (q_proj, k_proj, v_proj,
                      o_proj, gate_proj, up_proj, down_proj) */
  int unit;        /* index within the site's layer */
  float ap, on_p50, on_p90, off_mean;
  int layer; /* the block: site / sites_per_layer (selfcond_model_info) */
  int kind;  /* the linear layer within the block: site % sites_per_layer */
} selfcond_expert_unit;
/* The rank-th unit (0 = best AP). */
SELFCOND_API selfcond_status selfcond_experts_get_unit(const selfcond_experts* experts,
                                                       int64_t rank, selfcond_expert_unit* out);
/* Units first .. first + capacity - 1 (fewer at the end of the table) into out; how many in
 * *n_out. */
SELFCOND_API selfcond_status selfcond_experts_get_units(const selfcond_experts* experts,
                                                        int64_t first, selfcond_expert_unit* out,
                                                        size_t capacity, size_t* n_out);

/* ---- sessions and generation ------------------------------------------------------------- */

typedef struct selfcond_session selfcond_session;

typedef enum { SELFCOND_INT8 = 0, SELFCOND_F32 = 1 } selfcond_precision;
typedef enum { SELFCOND_KV_F32 = 0, SELFCOND_KV_F16 = 1 } selfcond_kv_type;

typedef struct {
  selfcond_precision precision; /* f32 needs a model loaded with need_f32 */
  int threads;                  /* 1: the forward pass runs on the calling thread; any other
                                   value: on the model's thread pool (shared by the model's
                                   threaded sessions, which take turns in it) */
  int n_ctx;                    /* positions of the KV cache; 0: the model's context */
  selfcond_kv_type kv_type;     /* F16 halves the KV cache */
  int64_t max_memory_bytes;     /* memory the session may allocate (KV cache and scratch): a
                                   larger n_ctx fails with SELFCOND_RESOURCE_EXHAUSTED; 0: half
                                   the device's memory */
} selfcond_session_params;
/* Defaults: int8, 1 thread, the model's context (up to 8192), float KV cache, a budget of half
 * the device's memory. */
SELFCOND_API selfcond_session_params selfcond_session_default_params(void);

/* params may be NULL. The session keeps the model alive. */
SELFCOND_API selfcond_status selfcond_session_create(const selfcond_model* model,
                                                     const selfcond_session_params* params,
                                                     selfcond_session** out);
SELFCOND_API void selfcond_session_free(selfcond_session* session);

typedef struct {
  int n_ctx;              /* positions the KV cache holds */
  int n_past;             /* positions filled (the next token runs at this position) */
  int64_t kv_cache_bytes; /* memory of the KV cache */
  const char* backend;    /* what runs the linear layers: "xnnpack" (int8) or a hand-written
                             kernel set ("avx2", "avx512vnni", "wasm_simd128", "scalar") */
  int64_t forced_units;   /* units the forcing overwrites (distinct units of every source, a
                             top_k beyond its table counting the table's size); 0: none */
} selfcond_session_info;
/* Strings are static. */
SELFCOND_API void selfcond_session_get_info(const selfcond_session* session,
                                            selfcond_session_info* out);

/* Runs tokens at the session's next positions (after the n_past already in its KV cache, with
 * the session's forcing and steering) and writes the logits of the last one (vocab_size floats,
 * the logit bias added) to logits, which may be NULL; capacity is its length in floats. The
 * building block of an app's own loop (chat with a kept context, scoring, beam search). */
SELFCOND_API selfcond_status selfcond_session_eval(selfcond_session* session, const int32_t* tokens,
                                                   size_t n_tokens, float* logits, size_t capacity);
/* Forgets the KV cache (n_past = 0) and a pending abort; the forcing, steering and logit bias
 * stay. */
SELFCOND_API void selfcond_session_reset(selfcond_session* session);
/* Stops the call running on the session, from any thread: a prefill (selfcond_generate,
 * selfcond_generation_start, selfcond_session_eval) fails with SELFCOND_CANCELLED at the next
 * block boundary, leaving the KV cache as before that call; a generation past its prefill
 * ends with SELFCOND_STOP_CANCELLED. When no call runs, the next one on the session is the one
 * stopped (selfcond_session_reset drops the request). */
SELFCOND_API void selfcond_session_abort(selfcond_session* session);

typedef struct {
  const selfcond_experts* experts;
  int64_t top_k; /* the table's best top_k units */
} selfcond_forcing_source;
typedef enum {
  SELFCOND_FORCE_ON_P50 = 0, /* the paper's choice */
  SELFCOND_FORCE_ON_P90 = 1,
  SELFCOND_FORCE_OFF_MEAN = 2,
  SELFCOND_FORCE_ZERO = 3
} selfcond_forcing_value;
/* Forces the top experts of one or more tables (a unit in several tables gets the mean of
 * their values) at every position, or only at the last prompt position and the new tokens
 * (only_last_token = 1). The session copies what it needs. n_sources = 0 clears the forcing.
 * A top_k beyond its table's size forces the whole table (a SELFCOND_LOG_WARN line says so);
 * selfcond_session_info.forced_units tells how many units are forced. */
SELFCOND_API selfcond_status selfcond_session_set_forcing(selfcond_session* session,
                                                          const selfcond_forcing_source* sources,
                                                          size_t n_sources,
                                                          selfcond_forcing_value value,
                                                          int only_last_token);

typedef struct {
  int max_new_tokens; /* default 50 */
  float temperature;  /* 0: greedy; default 1 */
  int top_k;          /* 0: off */
  float top_p;        /* 1: off */
  uint64_t seed;      /* the same seed gives the same text on every platform */
  int stop_at_eos;    /* 1: stop at an end-of-sequence token (default) */
  int keep_context;   /* 1: continue the session's context: the prompt is appended after the
                         KV cache's n_past tokens (it may be "" to continue the last generation)
                         and the new tokens stay in the cache for the next call */
  const char* const* stop_strings; /* generation stops when the text holds one of these (the
                                      text before it is streamed; it and what follows are not) */
  size_t n_stop_strings;
  float repeat_penalty; /* llama.cpp's repetition penalty on the last repeat_last_n tokens of the
                           prompt and the new ones; 1: off (default) */
  int repeat_last_n;    /* default 64; -1: every token */
} selfcond_generate_params;
SELFCOND_API selfcond_generate_params selfcond_generate_default_params(void);

typedef enum {
  SELFCOND_STOP_MAX_TOKENS = 0,
  SELFCOND_STOP_EOS = 1,
  SELFCOND_STOP_CONTEXT_FULL = 2,
  SELFCOND_STOP_CANCELLED = 3,
  SELFCOND_STOP_STOP_STRING = 4 /* the text reached one of the stop strings */
} selfcond_stop;

/* Called for each new token (token >= 0) with the text that became complete UTF-8 (piece,
 * piece_len bytes, not NUL-terminated; may be empty: a token can end mid-character). The last
 * token's call also carries any remaining text. When generation ends without a new token (EOS
 * sampled, or max_new_tokens = 0) and text remains, there is one more call with token = -1.
 * Return nonzero to continue, 0 to stop: the generation then ends with SELFCOND_STOP_CANCELLED
 * (unless that was already the last token) and selfcond_generate still returns SELFCOND_OK. */
typedef int (*selfcond_token_callback)(int32_t token, const char* piece, size_t piece_len,
                                       void* user_data);

typedef struct {
  int prompt_tokens;
  int new_tokens;
  selfcond_stop stop;
} selfcond_generate_result;

/* Tokenizes prompt, prefills it into the session (from position 0, or after its n_past tokens
 * with keep_context) and generates. callback and result may be NULL. */
SELFCOND_API selfcond_status selfcond_generate(selfcond_session* session, const char* prompt,
                                               const selfcond_generate_params* params,
                                               selfcond_token_callback callback, void* user_data,
                                               selfcond_generate_result* result);

/* Generation in steps, for a UI that streams tokens, interleaves several generations or stops
 * between tokens (the browser's worker drives this). */
typedef struct selfcond_generation selfcond_generation;
/* Tokenizes prompt as selfcond_generate does and prefills it into the session from position 0,
 * or after its cache with keep_context (the slow part of a long prompt). The session is the
 * generation's until it is freed: do not use it meanwhile (selfcond_session_abort excepted). */
SELFCOND_API selfcond_status selfcond_generation_start(selfcond_session* session,
                                                       const char* prompt,
                                                       const selfcond_generate_params* params,
                                                       selfcond_generation** out);
typedef struct {
  int32_t token;     /* the new token; -1 for the final call that only flushes text */
  const char* piece; /* text that became complete UTF-8 (not NUL-terminated; may be empty);
                        valid until the next call on the generation */
  size_t piece_len;
  int done; /* 1: the generation ended (stop says why); further calls report it again */
  selfcond_stop stop;
  int prompt_tokens, new_tokens;
} selfcond_generation_step;
/* Samples and runs one more token. After the end (or a cancel), reports done with token -1. */
SELFCOND_API selfcond_status selfcond_generation_next(selfcond_generation* generation,
                                                      selfcond_generation_step* out);
/* Ends the generation here: the next selfcond_generation_next reports done, stop CANCELLED. */
SELFCOND_API void selfcond_generation_cancel(selfcond_generation* generation);
SELFCOND_API void selfcond_generation_free(selfcond_generation* generation);

/* ---- ranking a concept ------------------------------------------------------------------- */

/* Ranking progress: selfcond_progress_callback (above) with sentences (or samples) done. */

typedef struct {
  selfcond_precision precision;
  int threads;       /* 1: the calling thread; any other value: sentences run in parallel on the
                        model's thread pool, one session per thread */
  int max_sentences; /* per class, the first N (0: all) */
  int64_t top_n;     /* keep the best N units in the table (0: all) */
} selfcond_rank_params;
/* Defaults: int8, 1 thread, all sentences, all units. */
SELFCOND_API selfcond_rank_params selfcond_rank_default_params(void);

/* Ranks every unit of the model as an expert for a concept: sentences about it (positive) and
 * not (negative), as arrays of UTF-8 strings. progress may be NULL. The same as
 * selfcond_ranking_start, _step until done, _finish. */
SELFCOND_API selfcond_status selfcond_rank(const selfcond_model* model, const char* concept,
                                           const char* const* positive, size_t n_positive,
                                           const char* const* negative, size_t n_negative,
                                           const selfcond_rank_params* params,
                                           selfcond_progress_callback progress, void* user_data,
                                           selfcond_experts** out);

/* A ranking in steps (for a UI that shows progress and can stop between steps). */
typedef struct selfcond_ranking selfcond_ranking;
/* Validates and tokenizes the sentences. The ranking keeps the model alive. */
SELFCOND_API selfcond_status selfcond_ranking_start(const selfcond_model* model,
                                                    const char* concept,
                                                    const char* const* positive, size_t n_positive,
                                                    const char* const* negative, size_t n_negative,
                                                    const selfcond_rank_params* params,
                                                    selfcond_ranking** out);
/* Runs up to n more sentences; *done and *total (either may be NULL) tell how far it is. */
SELFCOND_API selfcond_status selfcond_ranking_step(selfcond_ranking* ranking, int n, int* done,
                                                   int* total);
/* After every sentence ran: each sentence's max-pooled response of every unit, positives then
 * negatives, as (n_positive + n_negative) rows of num_units floats into out (row-major). */
SELFCOND_API selfcond_status selfcond_ranking_responses(const selfcond_ranking* ranking,
                                                        float* out);
/* After every sentence ran: the expert table. */
SELFCOND_API selfcond_status selfcond_ranking_finish(selfcond_ranking* ranking,
                                                     selfcond_experts** out);
/* Frees (and so cancels) a ranking. */
SELFCOND_API void selfcond_ranking_free(selfcond_ranking* ranking);
typedef struct {
  int done, total;   /* sentences run, of all */
  int num_truncated; /* sentences longer than the context, cut to it */
} selfcond_ranking_info;
SELFCOND_API void selfcond_ranking_get_info(const selfcond_ranking* ranking,
                                            selfcond_ranking_info* out);

/* Each sentence's response of every unit, max-pooled over its tokens (unlabeled sentences):
 * out receives n_sentences rows of num_units floats (selfcond_model_info), row-major. Uses
 * params' precision and threads. */
SELFCOND_API selfcond_status selfcond_pooled_responses(const selfcond_model* model,
                                                       const char* const* sentences,
                                                       size_t n_sentences,
                                                       const selfcond_rank_params* params,
                                                       selfcond_progress_callback progress,
                                                       void* user_data, float* out);

/* ---- concept datasets ------------------------------------------------------------------- */

/* A concept dataset file as `selfcond rank --concept` reads it: ml-selfcond JSON, or "+ " / "- "
 * prefixed lines (the concept is then the file's name without extension), validated (non-empty
 * UTF-8 sentences, both classes); max_sentences > 0 keeps the first N of each class. */
typedef struct selfcond_dataset selfcond_dataset;
SELFCOND_API selfcond_status selfcond_dataset_load(const char* path, int max_sentences,
                                                   selfcond_dataset** out);
/* A dataset from sentences in memory (a concept typed by the user), validated the same way. */
SELFCOND_API selfcond_status selfcond_dataset_create(const char* concept,
                                                     const char* const* positive, size_t n_positive,
                                                     const char* const* negative, size_t n_negative,
                                                     selfcond_dataset** out);
SELFCOND_API void selfcond_dataset_free(selfcond_dataset* dataset);
typedef struct {
  const char* concept; /* points into the dataset */
  const char* group;   /* "" when the file has none */
  size_t num_positive, num_negative;
} selfcond_dataset_info;
SELFCOND_API void selfcond_dataset_get_info(const selfcond_dataset* dataset,
                                            selfcond_dataset_info* out);
/* Sentence i of the positives (positive = 1) or negatives: NUL-terminated UTF-8 inside the
 * dataset, its byte length in *size (may be NULL); NULL when i is out of range. */
SELFCOND_API const char* selfcond_dataset_sentence(const selfcond_dataset* dataset, int positive,
                                                   size_t i, size_t* size);

/* ---- other steering methods (docs/paper-experiments.md, section 4) -------------------------- */

/* Adds alpha * vector (n = the model's n_embd floats) to the residual stream after block `layer`
 * at every position (activation addition). n = 0 (or vector NULL) clears it. Independent of the
 * forcing and the logit bias: all three may be set at once. */
SELFCOND_API selfcond_status selfcond_session_set_steering(selfcond_session* session, int layer,
                                                           const float* vector, size_t n,
                                                           float alpha);
/* Adds bias[i] to the logit of tokens[i] wherever the session computes logits. n = 0 clears. */
SELFCOND_API selfcond_status selfcond_session_set_logit_bias(selfcond_session* session,
                                                             const int32_t* tokens,
                                                             const float* bias, size_t n);
/* The concept's steering vector for block `layer` (-1: the middle block, n_layer / 2; out:
 * n_embd floats): the mean over positive sentences of each sentence's mean residual stream
 * after the block, minus the same over the negatives. Runs on the model's thread pool. */
SELFCOND_API selfcond_status selfcond_steering_vector(const selfcond_model* model,
                                                      const selfcond_dataset* dataset, int layer,
                                                      selfcond_precision precision, float* out,
                                                      size_t n);
/* A bag-of-words logit bias from the dataset: its max_words highest log-odds words (words of 3+
 * letters in at least 3 positive sentences), the single-token forms " word" / " Word" of each
 * biased by beta. Writes up to capacity (token, bias) pairs; *n_out receives how many there are
 * (call with capacity 0 to size the arrays). */
SELFCOND_API selfcond_status selfcond_concept_logit_bias(const selfcond_model* model,
                                                         const selfcond_dataset* dataset,
                                                         int max_words, float beta, int32_t* tokens,
                                                         float* bias, size_t capacity,
                                                         size_t* n_out);

/* The words of a list (e.g. from selfcond_concept_words), each single-token form " word" /
 * " Word" biased by beta: up to capacity (token, bias) pairs, how many in *n_out (call with
 * capacity 0 to size the arrays). Words without a single-token form are skipped. */
SELFCOND_API selfcond_status selfcond_word_logit_bias(const selfcond_model* model,
                                                      const char* const* words, size_t n_words,
                                                      float beta, int32_t* tokens, float* bias,
                                                      size_t capacity, size_t* n_out);
/* The dataset's words most typical of its positive sentences (log-odds), as a new JSON string
 * (selfcond_string_free): [{"word", "log_odds", "positive", "negative"}, ...], at most
 * max_words. */
SELFCOND_API selfcond_status selfcond_concept_words_to_string(const selfcond_dataset* dataset,
                                                              int max_words, char** out);

/* ---- the expert explorer ------------------------------------------------------------------ */

/* Where unit `unit_id` fires: its response at every token of text (tokenized as a ranking
 * sentence, cut to the context). Writes up to capacity token ids and values; the count in
 * *n_tokens (call with capacity 0 to size the arrays). */
SELFCOND_API selfcond_status selfcond_trace_unit(const selfcond_model* model, const char* text,
                                                 int64_t unit_id, selfcond_precision precision,
                                                 int32_t* tokens, float* values, size_t capacity,
                                                 size_t* n_tokens);

/* ---- measured conditioning: choose k, compare methods (docs/paper-experiments.md) ---------- */

/* The generations a measurement makes: every prompt with every seed, under each condition, and
 * how continuations are scored (concept words mentioned, perplexity under the unconditioned
 * model, Self-BLEU). */
typedef struct {
  const char* const* prompts; /* NULL: the grid's four default prompts */
  size_t n_prompts;
  int seeds; /* sampler seeds first_seed .. first_seed + seeds - 1 per prompt */
  uint64_t first_seed;
  int new_tokens; /* per continuation (EOS does not stop it) */
  float temperature, top_p;
  int top_k;
  selfcond_precision precision;
} selfcond_grid_params;

typedef struct {
  selfcond_grid_params grid; /* default: 3 seeds, 20 new tokens */
  const int64_t* candidates; /* the k tried, ascending; default 5 10 20 30 50 80 120 200 */
  size_t n_candidates;
  double target_rate; /* share of continuations that mention the concept; default 0.5 */
  double ppl_budget;  /* perplexity at most this times the unforced; default 2 */
  selfcond_forcing_value forcing;
} selfcond_choose_k_params;
SELFCOND_API selfcond_choose_k_params selfcond_choose_k_default_params(void);

typedef struct {
  int64_t k; /* the smallest tried k reaching target_rate within the budget; else the largest
                within the budget (0: none) */
  int met;   /* 1: k reaches the target */
} selfcond_choose_k_result;
/* How many of the table's experts to force (`generate --experts T:auto`): calibration
 * continuations under k = 0 and each candidate, the smallest k whose concept rate reaches the
 * target while their perplexity stays within the budget. A continuation mentions the concept
 * when it holds one of the dataset's log-odds words (dataset may be NULL: the table's concept
 * name is the word). report (may be NULL) receives a new JSON string (selfcond_string_free)
 * with the reason, the words and every k tried. Runs on the model's thread pool. */
SELFCOND_API selfcond_status selfcond_choose_k(const selfcond_model* model,
                                               const selfcond_experts* experts,
                                               const selfcond_dataset* dataset,
                                               const selfcond_choose_k_params* params,
                                               selfcond_progress_callback progress, void* user_data,
                                               selfcond_choose_k_result* result, char** report);

typedef struct {
  selfcond_grid_params grid; /* default: 20 seeds, 30 new tokens */
  const char* methods;       /* comma-separated, of experts, steer, bias; default all three */
  const int64_t* ks;         /* experts forced (top by AP); default 10 20 50 100 */
  size_t n_ks;
  const double* alphas; /* steering vector strengths; default 1 2 4 8 */
  size_t n_alphas;
  const double* betas; /* logit bias strengths; default 2 4 6 8 */
  size_t n_betas;
  int steer_layer;   /* the steering vector's block; -1: the middle one */
  int concept_words; /* log-odds words measuring the rate and making the bias; default 20 */
  selfcond_forcing_value forcing;
} selfcond_compare_params;
SELFCOND_API selfcond_compare_params selfcond_compare_default_params(void);
/* Expert forcing, a steering vector and a logit bias side by side on the same prompts and
 * seeds (`selfcond experiment compare`): the result as a new JSON string (selfcond_string_free;
 * the layout of docs/paper-experiments.md: concept words, one point per condition with its
 * concept rate, perplexity and Self-BLEU, example continuations). The table must be the
 * dataset's concept's. Runs on the model's thread pool. */
SELFCOND_API selfcond_status selfcond_compare_methods(const selfcond_model* model,
                                                      const selfcond_experts* experts,
                                                      const selfcond_dataset* dataset,
                                                      const selfcond_compare_params* params,
                                                      selfcond_progress_callback progress,
                                                      void* user_data, char** out);

/* ---- expertise from pooled responses (ranking split over processes or machines) --------- */

/* Each unit's statistics from its pooled responses, exactly as a ranking computes them:
 * responses holds n_sentences rows of n_units floats, row i starting at responses + i *
 * row_stride (so a column range of selfcond_pooled_responses' rows can be passed in place);
 * labels (n_sentences) are 1 for positive, 0 for negative (at least one of each). Writes n_units
 * values to each of ap, on_p50, on_p90 and off_mean. threads <= 0: all cores. */
SELFCOND_API selfcond_status selfcond_expertise(const float* responses, int64_t n_sentences,
                                                int64_t n_units, int64_t row_stride,
                                                const uint8_t* labels, int threads, float* ap,
                                                float* on_p50, float* on_p90, float* off_mean);

typedef struct {
  const char* concept; /* required */
  const char* group;   /* may be NULL */
  int num_positive, num_negative, num_truncated;
  selfcond_precision precision; /* the arithmetic the responses were computed in */
  int64_t top_n;                /* keep the best N units (0: all) */
} selfcond_table_info;

/* The expert table of the model from every unit's statistics (arrays of num_units values in
 * unit-id order, e.g. computed by selfcond_expertise in unit ranges and concatenated): the
 * same table selfcond_rank returns for the same responses. */
SELFCOND_API selfcond_status selfcond_experts_from_stats(const selfcond_model* model,
                                                         const selfcond_table_info* info,
                                                         const float* ap, const float* on_p50,
                                                         const float* on_p90, const float* off_mean,
                                                         selfcond_experts** out);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif /* SELFCOND_SELFCOND_H_ */
