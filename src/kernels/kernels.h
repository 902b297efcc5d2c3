// The ops layer: the one small interface every SIMD backend implements.
//
// The forward pass (src/model/gpt2.cc) calls only what is declared here; it never sees an #ifdef.
// Each backend lives in its own file (scalar.cc, avx2.cc, avx512vnni.cc, wasm_simd128.cc) and is
// tested against scalar.cc, the reference (tests/kernels_test.cc). The default int8 GEMM engine
// is XNNPACK (xnnpack.h), which has its own interface: it needs weights packed once per model.
//
// Conventions
// - A linear layer computes y(m, n) = x(m, k) . W(n, k)^T + bias(n)  (W is "output-major":
//   each output channel's k weights are one row). Hugging Face's Conv1D stores [in, out]; the
//   converter transposes.
// - int8 weights are symmetric per output channel: W[r][c] ~= q[r][c] * scale[r], q in [-127, 127]
//   (never -128, so sign tricks on int8 cannot overflow).
// - int8 activations are symmetric per row (per token): x[i][c] ~= xq[i][c] * xscale[i],
//   xscale = max|x[i]| / 127 (0 for an all-zero row), xq in [-127, 127].
// - int8 weights are stored PACKED so one SIMD load covers several output channels:
//     layout (n_pad / 16, k / 4, 16, 4):  byte (r, c) lives at
//     ((r / 16) * (k / 4) + c / 4) * 64 + (r % 16) * 4 + (c % 4)
//   n_pad = n rounded up to 16 (padding rows are zero, scale 0); k must be a multiple of 4.
//   This is the layout of the model file too (zero-copy mmap), see docs/model-format.md.
#ifndef SELFCOND_KERNELS_KERNELS_H_
#define SELFCOND_KERNELS_KERNELS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace selfcond::kernels {

inline constexpr int kRowBlock = 16;  // output channels per packed block
inline constexpr int kKGroup = 4;     // consecutive k per channel inside a block

inline int PaddedRows(int n) { return (n + kRowBlock - 1) / kRowBlock * kRowBlock; }
inline size_t PackedIndex(int r, int c, int k) {
  return (static_cast<size_t>(r / kRowBlock) * (k / kKGroup) + c / kKGroup) *
             (kRowBlock * kKGroup) +
         (r % kRowBlock) * kKGroup + (c % kKGroup);
}

// A packed int8 weight matrix (a view: it owns nothing).
struct PackedI8 {
  const int8_t* q = nullptr;         // (n_pad / 16, k / 4, 16, 4), see PackedIndex
  const float* scale = nullptr;      // (n_pad) per-output-channel scale; 0 on padding rows
  const int32_t* row_sum = nullptr;  // (n_pad) sum over c of q[r][c] (for u8 x s8 kernels)
  int n = 0;                         // output channels
  int k = 0;                         // input features, multiple of 4
  int n_pad = 0;                     // PaddedRows(n)
};

// A float weight matrix, row-major (n, k) (a view).
struct MatF32 {
  const float* w = nullptr;  // (n, k)
  int n = 0;
  int k = 0;
};

// One backend = one target's implementation of every op below. All functions are pure: they
// read their inputs and write their outputs, no state. Threads split work by calling the gemm
// with disjoint [n_begin, n_end) ranges (multiples of 16, except the last which may end at n).
struct Backend {
  const char* name;

  // xq(m, k), xscale(m) <- x(m, k): per-row symmetric int8 quantization (see above).
  void (*quantize_rows)(const float* x, int m, int k, int8_t* xq, float* xscale);

  // y(m, n)[:, n_begin:n_end] = (xq . q^T) * xscale[i] * scale[r] + bias[r]. bias may be null.
  // y has row stride ldy (>= n). int32 accumulation, exact for k < 2^17.
  void (*gemm_i8)(const PackedI8& w, const int8_t* xq, const float* xscale, int m,
                  const float* bias, float* y, int ldy, int n_begin, int n_end);

  // y(m, n)[:, n_begin:n_end] = x(m, k) . w^T + bias. bias may be null. Row stride ldy.
  void (*gemm_f32)(const MatF32& w, const float* x, int m, const float* bias, float* y, int ldy,
                   int n_begin, int n_end);
};

// The scalar reference backend (always available, the definition of correct).
const Backend& ScalarBackend();

// Every backend compiled in AND supported by this CPU, best first.
std::vector<const Backend*> AvailableBackends();

// The best available backend, or the one named by the SELFCOND_BACKEND environment variable.
const Backend& DefaultBackend();

// nullptr if unknown or unsupported on this CPU.
const Backend* BackendByName(const std::string& name);

// The available backend named by the SELFCOND_BACKEND environment variable, or nullptr (unset,
// unknown, unsupported, or "xnnpack", which is not a hand-written backend).
const Backend* BackendFromEnv();

// The value of the first "key : value" line of /proc/cpuinfo ("" when absent, and in WASM): what
// benchmarks record and the packed-weight cache keys on. Read line by line: /proc files report
// size 0, so a read sized by stat() gets nothing.
std::string CpuInfoField(const std::string& key);

// Helpers used by the converter and the tests (scalar, not hot).
// Quantizes a row-major float matrix w(n, k) into packed q / scale / row_sum buffers sized for
// n_pad rows. k must be a multiple of 4.
void QuantizePackWeights(const float* w, int n, int k, int8_t* q, float* scale, int32_t* row_sum);
// Computes row_sum(n_pad) from packed q.
void ComputeRowSums(const int8_t* q, int n_pad, int k, int32_t* row_sum);
// Dequantizes row r of a packed matrix into out(k) (used for the int8 token embedding).
void UnpackRow(const PackedI8& w, int r, float* out);

}  // namespace selfcond::kernels

#endif  // SELFCOND_KERNELS_KERNELS_H_
