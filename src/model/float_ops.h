// The float loops the forward passes call (model layer; src/model/float_ops.cc). Vectors are
// plain float arrays; n / d count floats.
#ifndef SELFCOND_MODEL_FLOAT_OPS_H_
#define SELFCOND_MODEL_FLOAT_OPS_H_

#include <cstddef>
#include <cstdint>

namespace selfcond::ops {

float Dot(const float* a, const float* b, int n);
void Axpy(float a, const float* x, float* y, int n);  // y += a x
// Attention over a cache, one call per head instead of one per head and position (a decode
// step of GPT-2 small made ~29k calls of 64 floats each at 100 positions: the calls, not the
// bytes, were the cost). Same arithmetic as the loops of Dot / Axpy they replace, so the same bits.
// out[t] = Dot(q, k + t * ldk, n) * scale for t < rows.
void DotRows(const float* q, const float* k, size_t ldk, int rows, int n, float scale, float* out);
// y(n) += sum over t < rows, in order, of a[t] * x[t * ldx ...].
void AxpyRows(const float* a, const float* x, size_t ldx, int rows, float* y, int n);
// The float16 KV cache: x rounded to IEEE half (saturating at +-65504), and the same two
// operations with a half operand.
void ToHalf(const float* x, uint16_t* y, int n);
float DotHalf(const float* a, const uint16_t* b, int n);
void AxpyHalf(float a, const uint16_t* x, float* y, int n);
// out(d) = LayerNorm(x) * w + b (GPT-2).
void LayerNorm(const float* x, const float* w, const float* b, int d, float eps, float* out);
// out(d) = x / sqrt(mean(x^2) + eps) * w (the Llama family's RMSNorm, as Hugging Face computes
// it in float32).
void RmsNorm(const float* x, const float* w, int d, float eps, float* out);
// GPT-2's "gelu_new" (tanh approximation), in place.
void GeluInPlace(float* x, size_t n);
// out[i] = silu(gate[i]) * up[i] (SwiGLU).
void SiluMul(const float* gate, const float* up, float* out, size_t n);
void AddInPlace(float* x, const float* y, size_t n);  // x += y

}  // namespace selfcond::ops

#endif  // SELFCOND_MODEL_FLOAT_OPS_H_
