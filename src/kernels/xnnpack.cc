// XNNPACK as the GEMM engine (see xnnpack.h for the design).
#include "kernels/xnnpack.h"

#include <xnnpack.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif
#if !defined(SELFCOND_WASM)
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <tuple>

#include "absl/strings/str_cat.h"

// XNNPACK's unsigned-activation variant of the same dynamically quantized operator (qdu8:
// activations quantized to uint8 with a zero point). It is the one that reaches XNNPACK's
// AVX-512 VNNI / AVX-VNNI kernels on x86 (the qd8 operator does not); XNNPACK's own subgraph
// API switches to it the same way. Declared in XNNPACK's src/xnnpack/internal.h, exported by
// the library.
extern "C" {
enum xnn_status xnn_create_convert_nc_f32_qdu8(uint32_t flags, xnn_operator_t* convert_op_out);
enum xnn_status xnn_reshape_convert_nc_f32_qdu8(xnn_operator_t convert_op, size_t batch_size,
                                                size_t channels, size_t input_stride,
                                                size_t output_stride, pthreadpool_t threadpool);
enum xnn_status xnn_setup_convert_nc_f32_qdu8(xnn_operator_t convert_op, const float* input,
                                              uint8_t* output, float* row_sum,
                                              struct xnn_quantization_params* quantization_params);
enum xnn_status xnn_create_fully_connected_nc_qdu8_f32_qc8w(
    size_t input_channels, size_t output_channels, size_t input_stride, size_t output_stride,
    const float* kernel_scale, const int8_t* kernel, const float* bias, float output_min,
    float output_max, uint32_t flags, xnn_weights_cache_t weights_cache,
    xnn_operator_t* fully_connected_op_out);
enum xnn_status xnn_reshape_fully_connected_nc_qdu8_f32_qc8w(xnn_operator_t fully_connected_op,
                                                             size_t batch_size,
                                                             size_t* workspace_size,
                                                             pthreadpool_t threadpool);
enum xnn_status xnn_setup_fully_connected_nc_qdu8_f32_qc8w(
    xnn_operator_t fully_connected_op, const int8_t* input, float* output, void* workspace,
    const struct xnn_quantization_params* quantization_params);
enum xnn_status xnn_create_fully_connected_nc_qdu8_f32_qc4w(
    size_t input_channels, size_t output_channels, size_t input_stride, size_t output_stride,
    uint8_t kernel_zero_point, const float* kernel_scale, const void* kernel, const float* bias,
    float output_min, float output_max, uint32_t flags, xnn_weights_cache_t weights_cache,
    xnn_operator_t* fully_connected_op_out);
enum xnn_status xnn_reshape_fully_connected_nc_qdu8_f32_qc4w(xnn_operator_t fully_connected_op,
                                                             size_t batch_size,
                                                             size_t* workspace_size,
                                                             pthreadpool_t threadpool);
enum xnn_status xnn_setup_fully_connected_nc_qdu8_f32_qc4w(
    xnn_operator_t fully_connected_op, const uint8_t* input, float* output, void* workspace,
    const struct xnn_quantization_params* quantization_params);
enum xnn_status xnn_create_fully_connected_nc_qdu8_f32_qb4w(
    size_t input_channels, size_t output_channels, size_t input_stride, size_t output_stride,
    size_t block_size, uint8_t kernel_zero_point, const uint16_t* kernel_scale, const void* kernel,
    const float* bias, float output_min, float output_max, uint32_t flags,
    xnn_weights_cache_t weights_cache, xnn_operator_t* fully_connected_op_out);
enum xnn_status xnn_reshape_fully_connected_nc_qdu8_f32_qb4w(xnn_operator_t fully_connected_op,
                                                             size_t batch_size,
                                                             size_t* workspace_size,
                                                             pthreadpool_t threadpool);
enum xnn_status xnn_setup_fully_connected_nc_qdu8_f32_qb4w(
    xnn_operator_t fully_connected_op, const int8_t* input, float* output, void* workspace,
    const struct xnn_quantization_params* quantization_params);
}

namespace selfcond::kernels::xnn {

namespace {

// int8 weights with uint8 activations (qdu8) where the CPU has VNNI dot products; signed int8
// activations (qd8) elsewhere. SELFCOND_XNNPACK_QD8=1 forces qd8 (for comparisons).
bool UseUnsignedActivations() {
  static const bool qdu8 = [] {
    const char* force = std::getenv("SELFCOND_XNNPACK_QD8");
    if (force != nullptr && *force == '1') return false;
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512vnni")) return true;
    // AVX-VNNI (CPUID.(EAX=7, ECX=1):EAX bit 4); not every compiler's __builtin_cpu_supports
    // knows it. The AVX2 check stands for the OS saving the ymm state.
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __builtin_cpu_supports("avx2") && __get_cpuid_count(7, 1, &a, &b, &c, &d) != 0 &&
           (a & (1u << 4)) != 0;
#else
    return false;
#endif
  }();
  return qdu8;
}

absl::Status XnnError(xnn_status st, const char* what) {
  if (st == xnn_status_out_of_memory) {
    return absl::ResourceExhaustedError(absl::StrCat("XNNPACK: out of memory in ", what));
  }
  return absl::InternalError(
      absl::StrCat("XNNPACK: ", what, " failed (status ", static_cast<int>(st), ")"));
}

// 64-byte aligned memory (XNNPACK's packed weights and workspaces want XNN_ALLOCATION_ALIGNMENT).
struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<void, AlignedFree>;
AlignedBuffer AlignedAlloc(size_t bytes) {
  bytes = (bytes + 63) / 64 * 64;
  return AlignedBuffer(std::aligned_alloc(64, bytes == 0 ? 64 : bytes));
}

// What a weights-cache provider returns for "not in the cache" (XNNPACK's XNN_CACHE_NOT_FOUND,
// which its public header does not export).
constexpr size_t kNotFound = SIZE_MAX;

}  // namespace

bool Available() {
  static const bool ok = xnn_initialize(/*allocator=*/nullptr) == xnn_status_success;
  return ok;
}

// ---- the weights cache: one arena for all matrices (a buffer per matrix past its bound) --------
//
// XNNPACK looks packed weights up by (seed, kernel pointer, bias pointer, fingerprint). At packing
// time the int8 kernel is a temporary row-major copy (the file holds selfcond's own packed
// layout), so the entry is stored under a stable pointer instead (`alias_from` -> `alias_to`, the
// file's int8 data); sessions pass that stable pointer, which XNNPACK never reads on a cache hit.
// After Finalize, a miss cannot allocate (reserve_space returns null), so a wrong key is an error
// instead of a silent repack.
struct PackedWeights::Cache {
  using Key = std::tuple<uint32_t, const void*, const void*, uint32_t>;
  struct Entry {
    AlignedBuffer owned;  // null when the entry lives in the arena
    void* ptr = nullptr;
    size_t size = 0;
    Key key{};
  };
  std::mutex mu;
  std::map<Key, size_t> index;  // key -> position in entries
  std::vector<Entry> entries;   // immutable after Finalize (read without the lock)
  AlignedBuffer pending_owned;  // reserved by reserve_space, not yet inserted ...
  void* pending = nullptr;      // ... (or a block of the arena)
  size_t pending_size = 0;
  // One mapping for all packed matrices when the model gives a size bound (PackedWeights::Create):
  // it is advised to use transparent huge pages, which cuts TLB misses when decoding streams
  // every weight once per token, and only what is written becomes resident.
  uint8_t* arena = nullptr;
  size_t arena_cap = 0, arena_used = 0;
  const void* alias_from = nullptr;
  const void* alias_to = nullptr;
  bool finalized = false;
  size_t last = kNotFound;  // the entry the last look_up_or_insert returned
  xnn_weights_cache_provider provider{};

  Cache() {
    provider.context = this;
    provider.look_up = [](void* ctx, const xnn_weights_cache_look_up_key* key) -> size_t {
      auto* c = static_cast<Cache*>(ctx);
      std::lock_guard<std::mutex> lock(c->mu);
      auto it = c->index.find(c->KeyOf(key));
      return it == c->index.end() ? kNotFound : it->second;
    };
    provider.reserve_space = [](void* ctx, size_t n) -> void* {
      auto* c = static_cast<Cache*>(ctx);
      std::lock_guard<std::mutex> lock(c->mu);
      if (c->finalized) return nullptr;
      const size_t rounded = (n + 63) / 64 * 64;
      c->pending_owned.reset();
      if (c->arena != nullptr && c->arena_used + rounded <= c->arena_cap) {
        c->pending = c->arena + c->arena_used;
        c->arena_used += rounded;
      } else {
        c->pending_owned = AlignedAlloc(n);
        c->pending = c->pending_owned.get();
      }
      c->pending_size = n;
      return c->pending;
    };
    provider.look_up_or_insert = [](void* ctx, const xnn_weights_cache_look_up_key* key, void* ptr,
                                    size_t size) -> size_t {
      auto* c = static_cast<Cache*>(ctx);
      std::lock_guard<std::mutex> lock(c->mu);
      const Key k = c->KeyOf(key);
      if (auto it = c->index.find(k); it != c->index.end()) return c->last = it->second;
      if (ptr != c->pending || size > c->pending_size) return kNotFound;
      c->entries.push_back(Entry{std::move(c->pending_owned), c->pending, size, k});
      c->pending = nullptr;
      c->pending_size = 0;
      c->index[k] = c->entries.size() - 1;
      return c->last = c->entries.size() - 1;
    };
    provider.is_finalized = [](void* ctx) -> bool {
      auto* c = static_cast<Cache*>(ctx);
      std::lock_guard<std::mutex> lock(c->mu);
      return c->finalized;
    };
    provider.offset_to_addr = [](void* ctx, size_t offset) -> void* {
      auto* c = static_cast<Cache*>(ctx);
      return offset < c->entries.size() ? c->entries[offset].ptr : nullptr;
    };
    provider.delete_cache = [](void*) -> xnn_status { return xnn_status_success; };
    provider.alias_data = nullptr;
  }

  Key KeyOf(const xnn_weights_cache_look_up_key* key) const {
    const void* kernel = key->kernel == alias_from && alias_from ? alias_to : key->kernel;
    return Key{key->seed, kernel, key->bias, key->fingerprint_id};
  }
};

PackedWeights::PackedWeights() : cache_(std::make_unique<Cache>()) {}
PackedWeights::~PackedWeights() {
#if !defined(SELFCOND_WASM)
  if (cache_->arena != nullptr) munmap(cache_->arena, cache_->arena_cap);
#endif
}

absl::StatusOr<std::unique_ptr<PackedWeights>> PackedWeights::Create(size_t arena_bytes) {
  if (!Available()) return absl::UnavailableError("XNNPACK does not initialize on this CPU");
  std::unique_ptr<PackedWeights> w(new PackedWeights());
#if !defined(SELFCOND_WASM)
  if (arena_bytes > 0) {
    constexpr size_t kHuge = size_t{2} << 20;
    arena_bytes = (arena_bytes + kHuge - 1) / kHuge * kHuge;
    void* p = mmap(nullptr, arena_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p != MAP_FAILED) {
#if defined(MADV_HUGEPAGE)
      madvise(p, arena_bytes, MADV_HUGEPAGE);
#endif
      w->cache_->arena = static_cast<uint8_t*>(p);
      w->cache_->arena_cap = arena_bytes;
    }
  }
#else
  (void)arena_bytes;
#endif
  return w;
}

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Creates the FC operator of `spec` with the given kernel pointer (which may be the cache key
// only, never read on a hit).
xnn_status CreateFc(const LinearSpec& spec, const void* kernel, xnn_weights_cache_t cache,
                    xnn_operator_t* op) {
  // Our threads already yield when idle (src/util/parallel.cc); XNNPACK's must too, or spinning
  // workers steal the core the main thread needs on a busy 2-core machine.
  const uint32_t flags = XNN_FLAG_DONT_SPIN_WORKERS;
  const bool u8 = UseUnsignedActivations();
  if (spec.q8 != nullptr) {
    const auto* q = static_cast<const int8_t*>(kernel);
    return u8 ? xnn_create_fully_connected_nc_qdu8_f32_qc8w(spec.k, spec.n, spec.k, spec.n,
                                                            spec.q8->scale, q, spec.bias, -kInf,
                                                            kInf, flags, cache, op)
              : xnn_create_fully_connected_nc_qd8_f32_qc8w(spec.k, spec.n, spec.k, spec.n,
                                                           spec.q8->scale, q, spec.bias, -kInf,
                                                           kInf, flags, cache, op);
  }
  // int4: unsigned nibbles with zero point 8 (value = nibble - 8).
  if (spec.q4_block > 0) {
    // Blockwise (qb4w): one bfloat16 scale per q4_block columns of each output channel.
    return u8 ? xnn_create_fully_connected_nc_qdu8_f32_qb4w(
                    spec.k, spec.n, spec.k, spec.n, spec.q4_block, 8, spec.q4_bscale, kernel,
                    spec.bias, -kInf, kInf, flags, cache, op)
              : xnn_create_fully_connected_nc_qd8_f32_qb4w(
                    spec.k, spec.n, spec.k, spec.n, spec.q4_block, 8, spec.q4_bscale, kernel,
                    spec.bias, -kInf, kInf, flags, cache, op);
  }
  return u8 ? xnn_create_fully_connected_nc_qdu8_f32_qc4w(spec.k, spec.n, spec.k, spec.n, 8,
                                                          spec.q4_scale, kernel, spec.bias, -kInf,
                                                          kInf, flags, cache, op)
            : xnn_create_fully_connected_nc_qd8_f32_qc4w(spec.k, spec.n, spec.k, spec.n, 8,
                                                         spec.q4_scale, kernel, spec.bias, -kInf,
                                                         kInf, flags, cache, op);
}

}  // namespace

absl::StatusOr<int> PackedWeights::Add(const LinearSpec& spec) {
  if ((spec.q8 == nullptr) == (spec.q4 == nullptr) || spec.n <= 0 || spec.k <= 0) {
    return absl::InvalidArgumentError("XNNPACK linear: exactly one of int8 / int4 weights");
  }
  if (spec.q4 != nullptr &&
      (spec.q4_block > 0
           ? spec.q4_bscale == nullptr || spec.q4_block % 32 != 0 || spec.k % spec.q4_block != 0
           : spec.q4_scale == nullptr)) {
    return absl::InvalidArgumentError(
        "XNNPACK int4 linear: per-channel scales, or block scales with a block that is a multiple "
        "of 32 dividing k");
  }
  if (cache_->finalized) return absl::FailedPreconditionError("PackedWeights is finalized");
  const void* kernel = spec.q4;
  const void* key = spec.q4;
  std::vector<int8_t> rowmajor;
  if (spec.q8 != nullptr) {
    // selfcond's 16x4 packed layout -> XNNPACK's row-major (n, k), packed once and dropped.
    const PackedI8& w = *spec.q8;
    rowmajor.resize(static_cast<size_t>(w.n) * w.k + kExtraBytes);
    for (int r = 0; r < w.n; ++r) {
      int8_t* row = rowmajor.data() + static_cast<size_t>(r) * w.k;
      for (int c = 0; c < w.k; ++c) row[c] = w.q[PackedIndex(r, c, w.k)];
    }
    kernel = rowmajor.data();
    key = w.q;
    if (spec.after_read) spec.after_read();
  }
  cache_->alias_from = kernel;
  cache_->alias_to = key;
  xnn_operator_t op = nullptr;
  const xnn_status st = CreateFc(spec, kernel, &cache_->provider, &op);
  cache_->alias_from = cache_->alias_to = nullptr;
  cache_->pending_owned.reset();
  cache_->pending = nullptr;
  if (op != nullptr) xnn_delete_operator(op);
  if (st != xnn_status_success) return XnnError(st, "packing a fully-connected layer");
  if (cache_->last >= cache_->entries.size()) {
    return absl::InternalError("XNNPACK packed a layer without inserting it into the cache");
  }
  entry_of_.push_back(cache_->last);
  cache_->last = kNotFound;
  if (spec.q4 != nullptr && spec.after_read) spec.after_read();
  Keep(spec, key);
  return static_cast<int>(specs_.size()) - 1;
}

void PackedWeights::Keep(const LinearSpec& spec, const void* key) {
  specs_.push_back(spec);
  specs_.back().after_read = nullptr;
  if (spec.q4_block > 0) {
    // XNNPACK reads qb4w's block scales again whenever a session creates the operator (it checks
    // them before the cache look-up), so they must outlive the model's file bytes: keep a copy
    // (1/16 of the 4-bit weights' size).
    const size_t count = static_cast<size_t>(spec.n) * (spec.k / spec.q4_block);
    block_scales_.emplace_back(spec.q4_bscale, spec.q4_bscale + count);
    specs_.back().q4_bscale = block_scales_.back().data();
  }
  keys_.push_back(key);
}

// ---- the packed-weight cache file ------------------------------------------------------------
//
//   "SCXNNPK1"  u32 version (1)  u32 id bytes  id  u32 layers  u32 0  u64 checksum  u64 data bytes
//   layers x { u32 n, k, q4_block, kind (0 int8, 1 int4; | 0x100: keyed with its bias), seed,
//              fingerprint; u64 offset, size }
//   data: each layer's packed bytes at `offset` from the data start (64-byte aligned)
// The checksum covers every layer's bytes (CombineChecksum); the file is written to a temporary
// name and renamed, so a reader never sees half a file.

#ifndef SELFCOND_XNNPACK_COMMIT
#define SELFCOND_XNNPACK_COMMIT "unknown"
#endif

#if !defined(SELFCOND_WASM)
namespace {

constexpr char kPackMagic[8] = {'S', 'C', 'X', 'N', 'N', 'P', 'K', '1'};

// A fast 64-bit checksum (four multiply-xor lanes over 8-byte words): it only has to notice a
// damaged cache file, at memory speed.
uint64_t DataChecksum(const uint8_t* p, size_t n) {
  uint64_t h[4] = {0x9E3779B97F4A7C15ull, 0xC2B2AE3D27D4EB4Full, 0x165667B19E3779F9ull, n};
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int l = 0; l < 4; ++l) {
      uint64_t w;
      std::memcpy(&w, p + i + 8 * l, 8);
      h[l] = (h[l] ^ w) * 0x9E3779B97F4A7C15ull;
      h[l] ^= h[l] >> 29;
    }
  }
  for (; i < n; ++i) h[i % 4] = (h[i % 4] ^ p[i]) * 0x100000001B3ull;
  return (h[0] ^ (h[1] * 3) ^ (h[2] * 5) ^ (h[3] * 7)) * 0x9E3779B97F4A7C15ull;
}

// The file's checksum: the layers' checksums folded in order (padding is not covered).
uint64_t CombineChecksum(uint64_t sum, uint64_t layer) {
  return (sum ^ layer) * 0x100000001B3ull + 0x9E3779B97F4A7C15ull;
}

struct PackRecord {
  uint32_t n, k, q4_block, kind, seed, fingerprint;
  uint64_t offset, size;
};

uint32_t KindOf(const LinearSpec& s) { return s.q4 != nullptr ? 1 : 0; }
constexpr uint32_t kKeyHasBias = 0x100;  // PackRecord::kind: XNNPACK's key includes the bias

}  // namespace
#endif  // !SELFCOND_WASM

std::string PackedWeights::PackingId() {
  // The first processor's identity and features (x86: model name + flags; ARM: CPU part +
  // Features); frequencies and core numbers vary between reads and do not change the kernels.
  const std::string cpu =
      absl::StrCat(CpuInfoField("vendor_id"), "|", CpuInfoField("model name"), "|",
                   CpuInfoField("flags"), "|", CpuInfoField("CPU implementer"), "|",
                   CpuInfoField("CPU part"), "|", CpuInfoField("Features"));
  return absl::StrCat("xnnpack=", SELFCOND_XNNPACK_COMMIT,
                      " variant=", UseUnsignedActivations() ? "qdu8" : "qd8", " cpu=", cpu);
}

#if !defined(SELFCOND_WASM)

absl::Status PackedWeights::SaveTo(const std::string& path, const std::string& id) const {
  if (!cache_->finalized) return absl::FailedPreconditionError("PackedWeights is not finalized");
  std::vector<PackRecord> records;
  uint64_t data = 0;
  for (size_t i = 0; i < specs_.size(); ++i) {
    const Cache::Entry& e = cache_->entries[entry_of_[i]];
    data = (data + 63) / 64 * 64;
    // XNNPACK keys some operators without their bias pointer: record which, since pointers
    // cannot be stored.
    const void* key_bias = std::get<2>(e.key);
    if (key_bias != nullptr && key_bias != specs_[i].bias) {
      return absl::InternalError("packed-weight cache: an entry keyed by an unknown bias");
    }
    const uint32_t kind = KindOf(specs_[i]) | (key_bias != nullptr ? kKeyHasBias : 0);
    records.push_back({static_cast<uint32_t>(specs_[i].n), static_cast<uint32_t>(specs_[i].k),
                       static_cast<uint32_t>(specs_[i].q4_block), kind, std::get<0>(e.key),
                       std::get<3>(e.key), data, e.size});
    data += e.size;
  }
  // Written layer by layer from the arena (no second copy of the weights while saving).
  auto bytes_of = [this](size_t i) {
    return static_cast<const uint8_t*>(cache_->entries[entry_of_[i]].ptr);
  };
  uint64_t sum = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    sum = CombineChecksum(sum, DataChecksum(bytes_of(i), records[i].size));
  }
  std::string head(kPackMagic, sizeof kPackMagic);
  auto put = [&head](const void* p, size_t n) { head.append(static_cast<const char*>(p), n); };
  const uint32_t version = 1, id_len = static_cast<uint32_t>(id.size()),
                 layers = static_cast<uint32_t>(records.size()), zero = 0;
  put(&version, 4);
  put(&id_len, 4);
  put(id.data(), id.size());
  put(&layers, 4);
  put(&zero, 4);
  put(&sum, 8);
  put(&data, 8);
  put(records.data(), records.size() * sizeof(PackRecord));
  head.resize((head.size() + 63) / 64 * 64, '\0');
  const std::string tmp = absl::StrCat(path, ".", getpid(), ".tmp");
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot write packed-weight cache ", tmp, ": ", std::strerror(errno)));
  }
  bool ok = std::fwrite(head.data(), 1, head.size(), f) == head.size();
  const char zeros[64] = {};
  uint64_t at = 0;
  for (size_t i = 0; ok && i < records.size(); ++i) {
    const size_t pad = records[i].offset - at;  // < 64: offsets are the sizes rounded up
    ok = std::fwrite(zeros, 1, pad, f) == pad &&
         std::fwrite(bytes_of(i), 1, records[i].size, f) == records[i].size;
    at = records[i].offset + records[i].size;
  }
  const bool closed = std::fclose(f) == 0;
  if (!ok || !closed || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::UnavailableError(absl::StrCat("cannot write packed-weight cache ", path));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<PackedWeights>> PackedWeights::LoadFrom(
    const std::string& path, const std::string& id, const std::vector<LinearSpec>& specs,
    bool verify) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return absl::NotFoundError(absl::StrCat("no packed-weight cache ", path));
  std::unique_ptr<FILE, int (*)(FILE*)> closer(f, &std::fclose);
  auto bad = [&path](const std::string& why) {
    return absl::DataLossError(absl::StrCat("packed-weight cache ", path, ": ", why));
  };
  auto get = [f](void* p, size_t n) { return std::fread(p, 1, n, f) == n; };
  char magic[8];
  uint32_t version = 0, id_len = 0, layers = 0, zero = 0;
  uint64_t sum = 0, data = 0;
  if (!get(magic, 8) || std::memcmp(magic, kPackMagic, 8) != 0) return bad("not a cache file");
  if (!get(&version, 4) || version != 1 || !get(&id_len, 4) || id_len != id.size()) {
    return bad("made by another version or for another model, CPU or XNNPACK");
  }
  std::string file_id(id_len, '\0');
  if (!get(file_id.data(), id_len) || file_id != id) {
    return bad("made for another model, CPU or XNNPACK");
  }
  if (!get(&layers, 4) || !get(&zero, 4) || !get(&sum, 8) || !get(&data, 8)) {
    return bad("truncated header");
  }
  if (layers != specs.size()) return bad("another number of layers");
  std::vector<PackRecord> records(layers);
  if (!get(records.data(), layers * sizeof(PackRecord))) return bad("truncated layer table");
  const uint64_t head =
      (8 + 4 + 4 + uint64_t{id_len} + 4 + 4 + 8 + 8 + uint64_t{layers} * sizeof(PackRecord) + 63) /
      64 * 64;
  struct stat st {};
  if (fstat(fileno(f), &st) != 0 || static_cast<uint64_t>(st.st_size) != head + data) {
    return bad("its size does not match its header");
  }
  for (uint32_t i = 0; i < layers; ++i) {
    const PackRecord& r = records[i];
    const LinearSpec& s = specs[i];
    if (r.n != static_cast<uint32_t>(s.n) || r.k != static_cast<uint32_t>(s.k) ||
        r.q4_block != static_cast<uint32_t>(s.q4_block) || (r.kind & ~kKeyHasBias) != KindOf(s)) {
      return bad(absl::StrCat("layer ", i, " has another shape or type"));
    }
    if (r.offset % 64 != 0 || r.offset > data || r.size > data - r.offset) {
      return bad(absl::StrCat("layer ", i, " lies outside the data"));
    }
  }
  // The bytes go into the anonymous arena (huge pages, like packing) rather than staying a file
  // mapping: decode streams them every token.
  auto w = Create(data);
  if (!w.ok()) return w.status();
  Cache& c = *(*w)->cache_;
  uint8_t* dst = c.arena;
  AlignedBuffer heap;
  if (dst == nullptr || c.arena_cap < data) {
    heap = AlignedAlloc(data);
    if (!heap) return absl::ResourceExhaustedError("packed-weight cache: out of memory");
    dst = static_cast<uint8_t*>(heap.get());
  }
  if (std::fseek(f, static_cast<long>(head), SEEK_SET) != 0 || !get(dst, data)) {
    return bad("cannot read its data");
  }
  if (verify) {
    uint64_t got = 0;
    for (const PackRecord& r : records) {
      got = CombineChecksum(got, DataChecksum(dst + r.offset, r.size));
    }
    if (got != sum) return bad("checksum mismatch");
  }
  c.arena_used = (data + 63) / 64 * 64;
  for (uint32_t i = 0; i < layers; ++i) {
    const LinearSpec& s = specs[i];
    const void* key = s.q8 != nullptr ? static_cast<const void*>(s.q8->q) : s.q4;
    const void* bias = (records[i].kind & kKeyHasBias) != 0 ? s.bias : nullptr;
    const Cache::Key k{records[i].seed, key, bias, records[i].fingerprint};
    Cache::Entry e;
    e.ptr = dst + records[i].offset;
    e.size = records[i].size;
    e.key = k;
    if (i == 0 && heap) e.owned = std::move(heap);  // the whole buffer, owned by entry 0
    c.entries.push_back(std::move(e));
    c.index[k] = c.entries.size() - 1;
    (*w)->entry_of_.push_back(c.entries.size() - 1);
    (*w)->Keep(s, key);
  }
  (*w)->Finalize();
  return w;
}

#else

absl::Status PackedWeights::SaveTo(const std::string&, const std::string&) const {
  return absl::UnimplementedError("packed-weight cache files are native only");
}

absl::StatusOr<std::unique_ptr<PackedWeights>> PackedWeights::LoadFrom(
    const std::string&, const std::string&, const std::vector<LinearSpec>&, bool) {
  return absl::UnimplementedError("packed-weight cache files are native only");
}

#endif

void PackedWeights::Finalize() {
  std::lock_guard<std::mutex> lock(cache_->mu);
  cache_->finalized = true;
}

size_t PackedWeights::packed_bytes() const {
  size_t total = 0;
  for (const auto& e : cache_->entries) total += e.size;
  return total;
}

// ---- per-session operators -----------------------------------------------------------------

struct Operators::Impl {
  const PackedWeights* weights = nullptr;
  std::vector<xnn_operator_t> fc;       // one per linear
  std::vector<xnn_operator_t> convert;  // one per linear: f32 -> qd8, or qdu8 (int8 on VNNI)
  // Batch size and pool each operator was last reshaped for: decode calls every linear with
  // m = 1 again and again, and reshaping (tiling, workspace size) is skipped then.
  struct Shape {
    int m = -1;
    pthreadpool_t pool = nullptr;
  };
  std::vector<Shape> fc_shape, convert_shape;
  std::vector<int8_t> xq;                        // (m, k) + slack: quantized activations
  std::vector<xnn_quantization_params> qparams;  // (m) + XNN_EXTRA_QUANTIZATION_PARAMS
  AlignedBuffer workspace;
  size_t workspace_size = 0;

  ~Impl() {
    for (auto* ops : {&fc, &convert}) {
      for (xnn_operator_t op : *ops) {
        if (op != nullptr) xnn_delete_operator(op);
      }
    }
  }
};

Operators::~Operators() = default;

absl::StatusOr<std::unique_ptr<Operators>> Operators::Create(const PackedWeights& weights) {
  std::unique_ptr<Operators> ops(new Operators());
  ops->impl_ = std::make_unique<Impl>();
  Impl& im = *ops->impl_;
  im.weights = &weights;
  im.fc.assign(weights.num_linears(), nullptr);
  im.convert.assign(weights.num_linears(), nullptr);
  im.fc_shape.resize(weights.num_linears());
  im.convert_shape.resize(weights.num_linears());
  for (int i = 0; i < weights.num_linears(); ++i) {
    const LinearSpec& spec = weights.spec(i);
    xnn_status st = CreateFc(spec, weights.keys_[i], &weights.cache_->provider, &im.fc[i]);
    if (st != xnn_status_success) return XnnError(st, "creating a fully-connected operator");
    st = UseUnsignedActivations()
             ? xnn_create_convert_nc_f32_qdu8(XNN_FLAG_DONT_SPIN_WORKERS, &im.convert[i])
             : xnn_create_convert_nc_f32_qd8(XNN_FLAG_DONT_SPIN_WORKERS, &im.convert[i]);
    if (st != xnn_status_success) return XnnError(st, "creating the activation quantizer");
  }
  return ops;
}

absl::Status Operators::Run(int id, const float* x, int m, float* y, void* pool) {
  Impl& im = *impl_;
  const LinearSpec& spec = im.weights->spec(id);
  auto* tp = static_cast<pthreadpool_t>(pool);
  const size_t k = spec.k;
  const size_t need = static_cast<size_t>(m) * k + kExtraBytes;
  if (im.xq.size() < need) im.xq.resize(need);
  if (im.qparams.size() < static_cast<size_t>(m) + XNN_EXTRA_QUANTIZATION_PARAMS) {
    im.qparams.resize(m + XNN_EXTRA_QUANTIZATION_PARAMS);
  }
  // Quantizing a few rows is cheaper than waking the pool.
  pthreadpool_t convert_tp = m >= 16 ? tp : nullptr;
  const bool u8 = UseUnsignedActivations();
  xnn_operator_t cv = im.convert[id];
  xnn_status st = xnn_status_success;
  if (im.convert_shape[id].m != m || im.convert_shape[id].pool != convert_tp) {
    st = u8 ? xnn_reshape_convert_nc_f32_qdu8(cv, m, k, k, k, convert_tp)
            : xnn_reshape_convert_nc_f32_qd8(cv, m, k, k, k, convert_tp);
    if (st != xnn_status_success) return XnnError(st, "reshaping the activation quantizer");
    im.convert_shape[id] = {m, convert_tp};
  }
  st = u8 ? xnn_setup_convert_nc_f32_qdu8(cv, x, reinterpret_cast<uint8_t*>(im.xq.data()),
                                          /*row_sum=*/nullptr, im.qparams.data())
          : xnn_setup_convert_nc_f32_qd8(cv, x, im.xq.data(), /*row_sum=*/nullptr,
                                         im.qparams.data());
  if (st != xnn_status_success) return XnnError(st, "setting up the activation quantizer");
  st = xnn_run_operator(cv, convert_tp);
  if (st != xnn_status_success) return XnnError(st, "quantizing activations");

  xnn_operator_t op = im.fc[id];
  if (im.fc_shape[id].m != m || im.fc_shape[id].pool != tp) {
    size_t workspace = 0;
    if (spec.q8 != nullptr) {
      st = u8 ? xnn_reshape_fully_connected_nc_qdu8_f32_qc8w(op, m, &workspace, tp)
              : xnn_reshape_fully_connected_nc_qd8_f32_qc8w(op, m, &workspace, tp);
    } else if (spec.q4_block > 0) {
      st = u8 ? xnn_reshape_fully_connected_nc_qdu8_f32_qb4w(op, m, &workspace, tp)
              : xnn_reshape_fully_connected_nc_qd8_f32_qb4w(op, m, &workspace, tp);
    } else {
      st = u8 ? xnn_reshape_fully_connected_nc_qdu8_f32_qc4w(op, m, &workspace, tp)
              : xnn_reshape_fully_connected_nc_qd8_f32_qc4w(op, m, &workspace, tp);
    }
    if (st != xnn_status_success) return XnnError(st, "reshaping a fully-connected operator");
    im.fc_shape[id] = {m, tp};
    if (workspace > im.workspace_size) {
      im.workspace = AlignedAlloc(workspace);
      if (!im.workspace) {
        im.workspace_size = 0;
        im.fc_shape.assign(im.fc_shape.size(), Impl::Shape{});
        return absl::ResourceExhaustedError("XNNPACK workspace: out of memory");
      }
      im.workspace_size = workspace;
    }
  }
  void* ws = im.workspace.get();
  const int8_t* xq = im.xq.data();
  const xnn_quantization_params* qp = im.qparams.data();
  if (spec.q8 != nullptr) {
    st = u8 ? xnn_setup_fully_connected_nc_qdu8_f32_qc8w(op, xq, y, ws, qp)
            : xnn_setup_fully_connected_nc_qd8_f32_qc8w(op, xq, y, ws, qp);
  } else if (spec.q4_block > 0) {
    st = u8 ? xnn_setup_fully_connected_nc_qdu8_f32_qb4w(op, xq, y, ws, qp)
            : xnn_setup_fully_connected_nc_qd8_f32_qb4w(op, xq, y, ws, qp);
  } else {
    st = u8 ? xnn_setup_fully_connected_nc_qdu8_f32_qc4w(op, reinterpret_cast<const uint8_t*>(xq),
                                                         y, ws, qp)
            : xnn_setup_fully_connected_nc_qd8_f32_qc4w(op, xq, y, ws, qp);
  }
  if (st != xnn_status_success) return XnnError(st, "setting up a fully-connected operator");
  st = xnn_run_operator(op, tp);
  if (st != xnn_status_success) return XnnError(st, "running a fully-connected operator");
  return absl::OkStatus();
}

}  // namespace selfcond::kernels::xnn
