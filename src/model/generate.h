// Sampling and the generation driver (used by every frontend: CLI, WASM bindings, C API).
#ifndef SELFCOND_GENERATE_H_
#define SELFCOND_GENERATE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "model/model.h"

namespace selfcond {

struct SamplingOptions {
  float temperature = 1.0f;  // 0: greedy (argmax)
  int top_k = 0;             // 0: off
  float top_p = 1.0f;        // 1: off
  uint64_t seed = 0;
};

// Checks ranges: temperature >= 0 and finite, top_k >= 0, 0 < top_p <= 1.
absl::Status ValidateSampling(const SamplingOptions& o);

// A deterministic sampler: the same seed and logits give the same tokens on every platform
// (PCG32 random numbers, double-precision softmax, candidates walked in (logit desc, id asc)
// order).
class Sampler {
 public:
  explicit Sampler(const SamplingOptions& o);
  int32_t Sample(absl::Span<const float> logits);

 private:
  uint32_t NextU32();
  double NextUniform();  // [0, 1)
  SamplingOptions o_;
  uint64_t state_, inc_;
  std::vector<int32_t> idx_;  // (vocab) scratch
  std::vector<double> p_;     // (vocab) scratch: weights by token id
};

struct GenerateOptions {
  int max_new_tokens = 50;
  SamplingOptions sampling;
  bool stop_at_eos = true;
  // Continue the session's context instead of starting over: the prompt's tokens go after
  // those in the session's cache (the template prefix only when the cache is empty; an empty
  // prompt continues from the last position's logits), and the last new token is run too, so
  // that the cache holds the whole text for the next generation with keep_context.
  bool keep_context = false;
  // Generation stops when the text holds one of these (the text up to it is given, the stop
  // string and what follows it are not). Text that may begin one is held back until it cannot.
  std::vector<std::string> stop_strings;
  // Repetition penalty (as llama.cpp's repeat_penalty): the logit of every token among the last
  // repeat_last_n of the prompt and the new tokens is divided by it when positive, multiplied
  // when negative. 1: off. repeat_last_n -1: all of them.
  float repeat_penalty = 1.0f;
  int repeat_last_n = 64;
};
// Checks ranges: GenerateOptions' sampling, max_new_tokens >= 0, stop strings (at most
// kMaxStopStrings, each non-empty valid UTF-8 of at most kMaxStopStringBytes), repeat_penalty
// finite and > 0, repeat_last_n >= -1.
inline constexpr size_t kMaxStopStrings = 64;
inline constexpr size_t kMaxStopStringBytes = 1024;
absl::Status ValidateGenerate(const GenerateOptions& o);

struct GenerateResult {
  std::vector<int32_t> tokens;  // new tokens only
  std::string text;             // their decoded text (up to a stop string)
  enum class Stop {
    kMaxTokens,
    kEos,
    kContextFull,
    kCancelled,
    kStopString
  } stop = Stop::kMaxTokens;
  int prompt_tokens = 0;
};

// Streams text pieces as they become complete UTF-8; return false from on_text to cancel.
using OnText = std::function<bool(const std::string& piece)>;

// Streams bytes of tokens out as whole, valid UTF-8 (a token may end mid-character): bytes that
// start a character are held back until a later token completes it; a byte that cannot start or
// continue a character becomes U+FFFD, as Hugging Face's decoders replace it. Every piece is
// valid UTF-8, so a caller can hand each one to a string API (Java, JS, Python) as it comes.
class Utf8Stream {
 public:
  // Appends bytes; returns the text that became complete.
  std::string Push(const std::string& bytes);
  // The end of the stream: a held-back incomplete character becomes U+FFFD ("" if none).
  std::string Flush();

 private:
  std::string pending_;
};

// The generation driver: one generation, resumable token by token. Start() prefills the
// prompt (as one batch) into the Reset() session; each Next() samples one token, runs it through
// the model and returns it with the text that became complete UTF-8. The session's
// conditioning applies: forcing and steering in its forward pass, the logit bias to the logits
// each token is sampled from. Generate() below, the CLI,
// the WASM bindings and the C API all drive generation through this class; it is the only
// generation loop.
//
// A prompt that does not fit in the session's context (leaving room for one new token) is an
// error; generation stops with Stop::kContextFull when the context fills up (no sliding window:
// GPT-2's learned positions end at n_ctx). The session must outlive the Generation and must not
// be used for anything else until the generation is done or destroyed (destroying it cancels).
class Generation {
 public:
  static absl::StatusOr<std::unique_ptr<Generation>> Start(Session& session,
                                                           absl::Span<const int32_t> prompt,
                                                           const GenerateOptions& opts);
  struct Step {
    int32_t token = -1;  // the new token, or -1 (the step that found EOS or the token limit)
    std::string text;    // text that became complete (UTF-8; may be empty)
  };
  // The next token. After done(), returns an empty step.
  absl::StatusOr<Step> Next();
  // Stops here: done() with Stop::kCancelled; the undecoded UTF-8 tail is dropped.
  void Cancel();
  bool done() const { return done_; }
  const GenerateResult& result() const { return res_; }  // tokens and text so far, stop reason

 private:
  Generation(Session& session, const GenerateOptions& opts);
  void Finish(GenerateResult::Stop stop, std::string* text);

  // Text out of the UTF-8 stream, through the stop strings: appends `text` to what is held
  // back and moves to *out what can no longer be part of a stop string. True when a stop
  // string was found (*out then ends before it).
  bool PassStopStrings(const std::string& text, bool final, std::string* out);
  // Runs the new token through the model; an abort ends the generation (kCancelled).
  absl::Status RunToken(int32_t token);

  Session& session_;
  GenerateOptions opts_;
  Sampler sampler_;
  Utf8Stream stream_;
  std::string held_;              // text held back: it may begin a stop string
  std::vector<int32_t> history_;  // prompt and new tokens (the repetition penalty's window)
  GenerateResult res_;
  absl::Span<const float> logits_;  // (vocab) in the session's scratch; valid until Forward
  // The session's logit bias, applied here (the sampler's input), not in the forward pass.
  std::vector<std::pair<int32_t, float>> bias_;
  std::vector<float> biased_;  // (vocab) scratch: logits_ + bias_
  bool done_ = false;
};

// A whole generation: Start, then Next until done, streaming pieces to on_text (which may
// cancel by returning false).
absl::StatusOr<GenerateResult> Generate(Session& session, absl::Span<const int32_t> prompt,
                                        const GenerateOptions& opts, const OnText& on_text);

// The tokens a model is given for a prompt: the tokenizer's template prefix (Llama 3's
// <|begin_of_text|>, Llama 2's <s>; nothing for GPT-2) then the text's tokens. The one place
// every frontend turns a prompt into tokens.
std::vector<int32_t> PromptTokens(const Tokenizer& tokenizer, std::string_view prompt);
// The tokens perplexity scores a text with: the template prefix, or for a tokenizer without one
// (GPT-2) its end-of-text token as a start, then the text's tokens (each text token is then
// predicted, the first one included).
std::vector<int32_t> ScoringTokens(const Tokenizer& tokenizer, std::string_view text);

// Perplexity of a token sequence under the session's model (windows of n_ctx tokens, each
// window scored from scratch, as `selfcond ppl`). Returns exp(mean NLL) over predicted tokens.
struct PerplexityResult {
  double ppl = 0;
  double mean_nll = 0;
  int64_t predicted_tokens = 0;
};
absl::StatusOr<PerplexityResult> Perplexity(Session& session, absl::Span<const int32_t> tokens,
                                            const std::function<void(float)>& progress = nullptr);

}  // namespace selfcond

#endif  // SELFCOND_GENERATE_H_
