// Internal: the accessor of every backend compiled into this build (used by dispatch.cc and the
// tests). Each accessor returns a pointer to a static Backend and never fails; whether the CPU
// can RUN it is decided in dispatch.cc (AvailableBackends), so only call a backend's functions
// after checking that it is in AvailableBackends().
#ifndef SELFCOND_KERNELS_BACKENDS_H_
#define SELFCOND_KERNELS_BACKENDS_H_

#include <cfloat>
#include <cstdint>

#include "kernels/kernels.h"

namespace selfcond::kernels {

// ---- The quantization rule (docs/kernels.md), shared so every backend's tail loop matches ----
// A row with max|x| = amax (NaN ignored, +-inf counted as FLT_MAX) gets scale = amax / 127
// (one IEEE float division); q = clamp(nearbyint(x / scale), -127, 127) in the default
// round-to-nearest-even mode, with NaN -> 0. A row whose scale is 0 (all zero, or so small that
// amax / 127 underflows) gets q = 0. SIMD backends must produce the same bits: x / scale is a
// correctly rounded division everywhere, and cvtps/nearest rounding is round-half-even.

// These helpers are `static` (internal linkage) on purpose, and call compiler builtins rather
// than std::fabs / std::nearbyint: avx2.cc and avx512vnni.cc are compiled with -mavx2 / -mavx512*,
// and an inline function with external linkage (or a std template) emitted out of line there
// could be picked by the linker for the baseline files too, i.e. AVX code running on a CPU that
// dispatch.cc decided cannot run it. The same rule applies to everything in those two files:
// no std templates, no external-linkage inline functions (e.g. PackedIndex) in them.

// amax update that ignores NaN (the comparison is false) and keeps inf (clamped later).
static inline float AbsMaxStep(float amax, float x) {
  const float a = __builtin_fabsf(x);
  return a > amax ? a : amax;
}

// Row scale from amax; inf is clamped to FLT_MAX so the scale stays finite.
static inline float ScaleFromAbsMax(float amax) {
  return (amax > FLT_MAX ? FLT_MAX : amax) / 127.0f;
}

// One value, given a nonzero finite scale.
static inline int8_t QuantizeOne(float x, float scale) {
  float v = x / scale;
  if (!(v == v)) v = 0.0f;  // NaN
  v = v < -127.0f ? -127.0f : (v > 127.0f ? 127.0f : v);
  return static_cast<int8_t>(__builtin_nearbyintf(v));
}

// scalar.cc (always compiled). Same object as ScalarBackend().
const Backend* ScalarBackendPtr();

#if defined(__x86_64__) || defined(_M_X64)
// avx2.cc: needs AVX2 + FMA.
const Backend* Avx2Backend();
// avx512vnni.cc: needs AVX-512 F/BW/VL/VNNI (+ AVX2/FMA for its f32 path).
const Backend* Avx512VnniBackend();
#endif

#if defined(SELFCOND_WASM)
// wasm_simd128.cc: needs -msimd128 (the whole WASM build is compiled with it).
const Backend* WasmSimd128Backend();
#endif

}  // namespace selfcond::kernels

#endif  // SELFCOND_KERNELS_BACKENDS_H_
