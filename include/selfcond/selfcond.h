/* selfcond: self-conditioning of GPT-2 language models on device. The C API (C99).
 *
 * Every binding (Python, Swift, Kotlin, Rust, ...) wraps this header; it has no C++ or Abseil
 * types. Handles are opaque; every fallible call returns a selfcond_status and, on error,
 * leaves a message for the calling thread in selfcond_last_error().
 *
 * Objects and threads
 *   selfcond_model    Immutable after loading: the weights, held once in memory. Any number of
 *                     sessions and rankings on any threads may share one model. Free it last.
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
#define SELFCOND_VERSION_MINOR 9
#define SELFCOND_VERSION_PATCH 0

/* "0.9.0": the library's version (may differ from the header's if linked dynamically). */
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

/* ---- models ------------------------------------------------------------------------------ */

typedef struct selfcond_model selfcond_model;

typedef struct {
  int verify_hash; /* 1: recompute the file's SHA-256 and refuse a mismatch (slower loads) */
  int need_f32;    /* 1: also prepare float weights, for sessions with precision f32 */
} selfcond_model_params;

/* Defaults: verify_hash 1 (integrity by default: a corrupt or tampered file is refused with
 * SELFCOND_DATA_LOSS; 0 skips the SHA-256 pass for a trusted file, see the README for its
 * measured cost), need_f32 0. params may be NULL for the defaults. */
SELFCOND_API selfcond_model_params selfcond_model_default_params(void);

/* A selfcond model file (.scm, written by `selfcond convert`). */
SELFCOND_API selfcond_status selfcond_model_load_file(const char* path,
                                                      const selfcond_model_params* params,
                                                      selfcond_model** out);
/* The same from bytes in memory (copied: the caller may free data after the call). */
SELFCOND_API selfcond_status selfcond_model_load_memory(const void* data, size_t size,
                                                        const selfcond_model_params* params,
                                                        selfcond_model** out);
SELFCOND_API void selfcond_model_free(selfcond_model* model);

typedef struct {
  const char* name; /* e.g. "gpt2" */
  const char* hash; /* SHA-256 of the weights, hex; expert tables name it */
  int n_layer, n_embd, n_head, n_ctx, n_inner, vocab_size;
  int eos_id;
  int64_t num_units; /* units of the four linear layers of every block (the unit space) */
} selfcond_model_info;
/* Strings point into the model. */
SELFCOND_API void selfcond_model_get_info(const selfcond_model* model, selfcond_model_info* out);

/* Token ids of text. Writes up to capacity ids to out (out may be NULL with capacity 0) and
 * the total count to *n_tokens (call again with a larger buffer if it exceeds capacity). */
SELFCOND_API selfcond_status selfcond_tokenize(const selfcond_model* model, const char* text,
                                               int32_t* out, size_t capacity, size_t* n_tokens);
/* The text of token ids, as a new string (selfcond_string_free). */
SELFCOND_API selfcond_status selfcond_detokenize_to_string(const selfcond_model* model,
                                                           const int32_t* ids, size_t n,
                                                           char** out);
/* ml-selfcond's name of unit `unit_id` (0 <= unit_id < num_units): its layer, e.g.
 * "transformer.h.3.mlp.c_fc:0", and its index in that layer. */
SELFCOND_API selfcond_status selfcond_unit_to_string(const selfcond_model* model, int64_t unit_id,
                                                     char** layer_name, int* unit_in_layer);

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
} selfcond_experts_info;
SELFCOND_API void selfcond_experts_get_info(const selfcond_experts* experts,
                                            selfcond_experts_info* out);

typedef struct {
  int64_t unit_id; /* in the model's unit space */
  int site;        /* layer * 4 + kind (0 attn.c_attn, 1 attn.c_proj, 2 mlp.c_fc, 3 mlp.c_proj) */
  int unit;        /* index within the site's layer */
  float ap, on_p50, on_p90, off_mean;
} selfcond_expert_unit;
/* The rank-th unit (0 = best AP). */
SELFCOND_API selfcond_status selfcond_experts_get_unit(const selfcond_experts* experts,
                                                       int64_t rank, selfcond_expert_unit* out);

/* ---- sessions and generation ------------------------------------------------------------- */

typedef struct selfcond_session selfcond_session;

typedef enum { SELFCOND_INT8 = 0, SELFCOND_F32 = 1 } selfcond_precision;
typedef enum { SELFCOND_KV_F32 = 0, SELFCOND_KV_F16 = 1 } selfcond_kv_type;

typedef struct {
  selfcond_precision precision; /* f32 needs a model loaded with need_f32 */
  int threads;                  /* threads for this session's forward pass; <= 0: cores */
  int n_ctx;                    /* positions of the KV cache; 0: the model's context */
  selfcond_kv_type kv_type;     /* F16 halves the KV cache */
} selfcond_session_params;
/* Defaults: int8, 1 thread, the model's context, float KV cache. */
SELFCOND_API selfcond_session_params selfcond_session_default_params(void);

/* The model must outlive the session. params may be NULL. */
SELFCOND_API selfcond_status selfcond_session_create(const selfcond_model* model,
                                                     const selfcond_session_params* params,
                                                     selfcond_session** out);
SELFCOND_API void selfcond_session_free(selfcond_session* session);

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
 * (only_last_token = 1). The session copies what it needs. n_sources = 0 clears the forcing. */
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
  int stop_at_eos;    /* default 1 */
} selfcond_generate_params;
SELFCOND_API selfcond_generate_params selfcond_generate_default_params(void);

typedef enum {
  SELFCOND_STOP_MAX_TOKENS = 0,
  SELFCOND_STOP_EOS = 1,
  SELFCOND_STOP_CONTEXT_FULL = 2,
  SELFCOND_STOP_CANCELLED = 3
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

/* Tokenizes prompt, prefills it into the session (from position 0) and generates. callback
 * and result may be NULL. */
SELFCOND_API selfcond_status selfcond_generate(selfcond_session* session, const char* prompt,
                                               const selfcond_generate_params* params,
                                               selfcond_token_callback callback, void* user_data,
                                               selfcond_generate_result* result);

/* ---- ranking a concept ------------------------------------------------------------------- */

/* Called with sentences done so far and their total; return 0 to cancel (the call then fails
 * with SELFCOND_CANCELLED). */
typedef int (*selfcond_progress_callback)(int done, int total, void* user_data);

typedef struct {
  selfcond_precision precision;
  int threads;       /* sentences run in parallel, one session per thread; <= 0: cores */
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
/* Validates and tokenizes the sentences. The model must outlive the ranking. */
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

/* Each sentence's response of every unit, max-pooled over its tokens (unlabeled sentences):
 * out receives n_sentences rows of num_units floats (selfcond_model_info), row-major. Uses
 * params' precision, threads and max_sentences (the first N). */
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
/* The concept's steering vector for block `layer` (out: n_embd floats): the mean over positive
 * sentences of each sentence's mean residual stream after the block, minus the same over the
 * negatives. threads <= 0: every core. */
SELFCOND_API selfcond_status selfcond_steering_vector(const selfcond_model* model,
                                                      const selfcond_dataset* dataset, int layer,
                                                      int threads, float* out, size_t n);
/* A bag-of-words logit bias from the dataset: its max_words highest log-odds words (words of 3+
 * letters in at least 3 positive sentences), the single-token forms " word" / " Word" of each
 * biased by beta. Writes up to capacity (token, bias) pairs; *n_out receives how many there are
 * (call with capacity 0 to size the arrays). */
SELFCOND_API selfcond_status selfcond_concept_logit_bias(const selfcond_model* model,
                                                         const selfcond_dataset* dataset,
                                                         int max_words, float beta, int32_t* tokens,
                                                         float* bias, size_t capacity,
                                                         size_t* n_out);

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
