// The GEMM engine: every int8 (and int4) linear layer runs on XNNPACK's dynamically quantized
// fully-connected operator: `convert_nc_f32_qd8` quantizes each row of activations (asymmetric,
// one scale and zero point per token), `fully_connected_nc_qd8_f32_qc8w` (or `_qc4w`) multiplies
// by per-output-channel int8 (int4) weights and returns float, so the expert hooks see float
// outputs as before.
//
// Why two objects:
// - An XNNPACK operator holds per-call state (the pointers given to setup), so two threads can
//   never share one; but creating an operator repacks its weights (2-10 ms and a full copy of the
//   matrix per GPT-2-small layer). So the Model packs every matrix ONCE into PackedWeights (an
//   XNNPACK weights cache that we implement: one arena sized from an upper bound), and each Session
//   creates its own cheap operators that find their packed weights in it (`Operators`).
// - The file's copy of a matrix is not needed after packing: the Model tells the kernel to drop
//   those pages (see Model::Build), so each weight lives once in memory.
#ifndef SELFCOND_KERNELS_XNNPACK_H_
#define SELFCOND_KERNELS_XNNPACK_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/kernels.h"

namespace selfcond::kernels::xnn {

// True when XNNPACK is compiled in and initializes on this CPU (initializes it once).
bool Available();

// One linear layer's weights as handed to XNNPACK. Exactly one of q8 / q4 is set.
struct LinearSpec {
  const PackedI8* q8 = nullptr;     // int8, selfcond's packed layout (kernels.h)
  const uint8_t* q4 = nullptr;      // int4: (n, k / 2) row-major, low nibble first, zero point 8
  const float* q4_scale = nullptr;  // (n) per-channel scale of q4 (q4_block == 0)
  const uint16_t* q4_bscale = nullptr;  // (n, k / q4_block) bfloat16 block scales of q4 (qb4w)
  int q4_block = 0;                     // columns per block scale (a multiple of 32), or 0
  const float* bias = nullptr;          // (n) or null
  int n = 0;                            // output channels
  int k = 0;                            // input features
  // Called once XNNPACK no longer needs the weights above (before it allocates its packed copy),
  // e.g. to release the file's pages. May be empty.
  std::function<void()> after_read;
};

// The packed weights of every linear layer of one model (immutable after Finalize; shared by all
// sessions, read concurrently).
class PackedWeights {
 public:
  // arena_bytes: an upper bound of the packed size of everything that will be added (0: one
  // allocation per matrix). See UpperBoundPackedBytes.
  static absl::StatusOr<std::unique_ptr<PackedWeights>> Create(size_t arena_bytes = 0);
  // A generous upper bound of XNNPACK's packed size of an (n, k) matrix (its tiles are at most 64
  // channels wide and 16 deep, plus at most 64 bytes of per-channel extras).
  static size_t UpperBoundPackedBytes(int n, int k) {
    return (static_cast<size_t>(n) + 63) / 64 * 64 *
               ((static_cast<size_t>(k) + 63) / 64 * 64 + 64) +
           4096;
  }
  ~PackedWeights();
  PackedWeights(const PackedWeights&) = delete;
  PackedWeights& operator=(const PackedWeights&) = delete;

  // Packs one linear layer; returns its id (0, 1, ...). Not thread-safe; before Finalize.
  absl::StatusOr<int> Add(const LinearSpec& spec);
  // No more Add; sessions may create operators from now on.
  void Finalize();

  // The packed weights as a file, so that a later load of the same model on the same kind of
  // CPU skips packing (Model::LoadOptions::packed_cache_dir). `id` names everything the packed
  // bytes depend on besides the weights (PackingId() and the model's hash); LoadFrom refuses a
  // file whose id, layer count, shapes or (verify) checksum differ, so a stale or damaged file
  // means packing again, never wrong weights. Native only (UNIMPLEMENTED in WASM).
  absl::Status SaveTo(const std::string& path, const std::string& id) const;
  // specs: the same layers, in the same order, as were Added before SaveTo (their weights are
  // not read). Finalized on return.
  static absl::StatusOr<std::unique_ptr<PackedWeights>> LoadFrom(
      const std::string& path, const std::string& id, const std::vector<LinearSpec>& specs,
      bool verify);
  // What XNNPACK's packing depends on besides the weights: its commit, the operator variant
  // (qd8 / qdu8) and the CPU (model name and features from /proc/cpuinfo).
  static std::string PackingId();

  int num_linears() const { return static_cast<int>(specs_.size()); }
  const LinearSpec& spec(int id) const { return specs_[id]; }
  size_t packed_bytes() const;

  struct Cache;  // the weights-cache provider (xnnpack.cc)

 private:
  PackedWeights();
  void Keep(const LinearSpec& spec, const void* key);  // records an added (or loaded) layer
  std::vector<LinearSpec> specs_;
  std::vector<size_t> entry_of_;  // each linear's entry in the cache (Cache::entries)
  std::deque<std::vector<uint16_t>> block_scales_;  // copies of the qb4w specs' q4_bscale
  std::vector<const void*> keys_;  // the kernel pointer each linear is cached under
  std::unique_ptr<Cache> cache_;
  friend class Operators;
};

// One session's operators over a PackedWeights (not thread-safe: one per Session).
class Operators {
 public:
  static absl::StatusOr<std::unique_ptr<Operators>> Create(const PackedWeights& weights);
  ~Operators();
  Operators(const Operators&) = delete;
  Operators& operator=(const Operators&) = delete;

  // y(m, n) = x(m, k) . W^T + bias for linear `id`. `pool` is a pthreadpool_t or null.
  // x is read up to 128 bytes past its end (XNN_EXTRA_BYTES): callers allocate that slack.
  absl::Status Run(int id, const float* x, int m, float* y, void* pool);

 private:
  Operators() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Bytes XNNPACK may read past the end of an input buffer.
inline constexpr size_t kExtraBytes = 128;

}  // namespace selfcond::kernels::xnn

#endif  // SELFCOND_KERNELS_XNNPACK_H_
