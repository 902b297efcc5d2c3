// Two other ways to steer a model toward a concept, built from the same labeled dataset that
// expert ranking uses, so that the three methods can be compared in one runtime with the same
// hooks (a Session::Conditioning: forcing, steering, logit bias) on the same prompts and seeds:
//
//   - an additive steering vector (activation addition; contrastive activation addition): the
//     mean residual stream after one block over the positive sentences minus the same mean over
//     the negative sentences, added with strength alpha at every position;
//   - a bag-of-words logit bias: the words with the highest log-odds of appearing in a positive
//     rather than a negative sentence, each of their single-token forms biased by beta.
//
// The same log-odds words measure a continuation's "concept rate" for any custom concept
// (tools/paper_experiments.h), with no hand-written word list.
#ifndef SELFCOND_EXPERTS_STEER_H_
#define SELFCOND_EXPERTS_STEER_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "experts/dataset.h"
#include "model/model.h"

namespace selfcond {

class ThreadPool;

struct ConceptWord {
  std::string word;  // lower-case ASCII letters
  double log_odds;   // log-odds ratio, positive vs negative sentences (add-one smoothed)
  int positive = 0;  // positive sentences containing the word
  int negative = 0;  // negative sentences containing the word
};

// The words most typical of the positive sentences. Words are runs of ASCII letters (3 or more),
// lower-cased, counted once per sentence; a word's score is the smoothed log-odds ratio
//   log((p + 1) / (P - p + 1)) - log((n + 1) / (N - n + 1))
// (p of P positive and n of N negative sentences contain it). Words in fewer than min_positive
// positive sentences are skipped (rare words have unreliable odds), and so are words with a
// log-odds ratio <= 0 (no more typical of the positives than of the negatives) and English
// function words ("and", "with": NLTK's stop-word list). Sorted by score
// descending, then word; at most max_words.
std::vector<ConceptWord> ConceptWords(const Dataset& dataset, int max_words = 20,
                                      int min_positive = 3);

// The steering vector (n_embd) of block `layer`: the mean over positive sentences of each
// sentence's mean residual stream after that block (over its tokens, at most n_ctx), minus the
// same over the negative sentences. Sentences run on pool's threads (one Session each; null: the
// calling thread).
absl::StatusOr<std::vector<float>> ComputeSteeringVector(const Model& model, const Dataset& dataset,
                                                         int layer, Precision precision,
                                                         ThreadPool* pool);

// alpha * vector as a Session's steering after block `layer` (an empty vector: no steering). Every
// frontend scales here, in double, so the CLI, the C API and the browser add the same floats.
Session::Steering ScaledSteering(int layer, absl::Span<const float> vector, double alpha);
// The L2 norm of a steering vector (reported beside alpha, which multiplies it unnormalized).
double SteeringNorm(absl::Span<const float> vector);

// The tokens of a form like " word" as they appear inside a text (what a logit bias must
// target).
std::vector<int32_t> WordTokens(const Tokenizer& tokenizer, const std::string& form);

// The logit bias of a word list: for each word, the tokens " word" and " Word" (GPT-2's forms
// after a space) that are single tokens, each biased by beta. Words with no single-token form are
// skipped (biasing the first piece of a multi-token word produces fragments).
std::vector<std::pair<int32_t, float>> WordLogitBias(const Tokenizer& tokenizer,
                                                     absl::Span<const ConceptWord> words,
                                                     float beta);

// A concept's logit bias from its dataset: ConceptWords then WordLogitBias, with the words it
// used in *words (may be null). An error, not an empty bias, when the dataset yields no concept
// word or none of them is a single token: a bias on nothing would silently do nothing.
absl::StatusOr<std::vector<std::pair<int32_t, float>>> ConceptLogitBias(
    const Tokenizer& tokenizer, const Dataset& dataset, int max_words, float beta,
    std::vector<ConceptWord>* words = nullptr);

}  // namespace selfcond

#endif  // SELFCOND_EXPERTS_STEER_H_
