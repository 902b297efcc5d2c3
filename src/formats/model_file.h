// The selfcond model file (".scm"): one little-endian file, memory-mapped, zero-copy.
// Full spec with rationale: docs/model-format.md. This header is the single definition.
//
//   offset 0             FileHeader (256 bytes): magic, version, config, section offsets, hash
//   tensor_index_offset  TensorEntry[n_tensors] (128 bytes each)
//   tokenizer_offset     tokenizer blob (format owned by src/formats/tokenizer.h:
//   Tokenizer::Serialize) each tensor's data   at a 64-byte-aligned offset (so SIMD loads from the
//   mmap are aligned)
//
// content_hash = SHA-256 of the whole file with the 32 hash bytes set to zero. It identifies
// the model: expert tables store it and are refused by a model with another hash.
//
// Tensor names follow the checkpoint (ggml gpt-2 style), without the "transformer." prefix:
//   wte.q / wte.scale / wte.row_sum   I8P (vocab, d)  token embedding = tied LM head (int8)
//   lm_head.q / .scale / .row_sum     I8P (vocab, d)  only when the LM head is NOT tied
//   wpe                               F32 (n_ctx, d)
//   h.{i}.ln_1.weight / .bias         F32 (d)
//   h.{i}.attn.c_attn.q/.scale/.row_sum/.bias   I8P (3d, d), F32 (n_pad), I32 (n_pad), F32 (3d)
//   h.{i}.attn.c_proj.*               I8P (d, d)
//   h.{i}.ln_2.weight / .bias         F32 (d)
//   h.{i}.mlp.c_fc.*                  I8P (d_ff, d)
//   h.{i}.mlp.c_proj.*                I8P (d, d_ff)
//   ln_f.weight / ln_f.bias           F32 (d)
// With --weights int4 the four linears of every block are 4-bit instead (wte / lm_head stay int8):
//   h.{i}.<linear>.q / .scale / .bias  I4 (n, k), BF16 (n, k / 32), F32 (n)   blockwise (32
//   columns)
// (files written before blockwise int4 have per-channel scales: .scale F32 (n); still read)
// Optional float copies (converter --keep-float; used by the f32 path instead of dequantizing):
//   wte.weight, lm_head.weight, h.{i}.<linear>.weight   F32 (n, k) output-major
#ifndef SELFCOND_MODEL_FILE_H_
#define SELFCOND_MODEL_FILE_H_

#include <array>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "util/file_util.h"
#include "util/sha256.h"

namespace selfcond {

inline constexpr char kModelMagic[8] = {'S', 'E', 'L', 'F', 'C', 'N', 'D', '1'};
inline constexpr uint32_t kModelVersion = 2;  // written for the Llama family; GPT-2 files stay 1
inline constexpr uint32_t kModelVersionGpt2 = 1;
inline constexpr uint64_t kTensorAlign = 64;

enum class DType : uint32_t {
  kF32 = 0,
  kI32 = 1,
  kI8Packed = 2,  // int8, layout of kernels::PackedIndex; shape = (n, k) logical
  kI4 = 3,        // int4, row-major (n, k / 2) bytes: column 2j in the low nibble of byte j,
                  // 2j + 1 in the high nibble; each nibble holds q + 8 (q in [-8, 7])
  kBF16 = 4,      // bfloat16 (the upper half of a float32): the block scales of blockwise int4
};

// Architectures a model file holds (docs/model-format.md).
enum class Arch : uint32_t {
  kGpt2 = 0,   // GPT-2: LayerNorm, learned positions, fused c_attn, GELU MLP
  kLlama = 1,  // the Llama family: RMSNorm, RoPE, grouped-query attention, SwiGLU MLP
};
// Which Hugging Face architecture a Llama-family file came from (informational: they share
// one forward pass, told apart by the flags and dimensions below).
enum class HfFamily : uint32_t { kGpt2 = 0, kLlama = 1, kQwen2 = 2, kMistral = 3 };
enum class RopeScaling : uint32_t { kNone = 0, kLlama3 = 1, kLinear = 2 };
// Bias flags of the Llama family's linear layers.
inline constexpr uint32_t kQkvBias = 1;  // q_proj, k_proj, v_proj (Qwen2; Llama attention_bias)
inline constexpr uint32_t kOutBias = 2;  // o_proj (Llama attention_bias)
inline constexpr uint32_t kMlpBias = 4;  // gate_proj, up_proj, down_proj (Llama mlp_bias)

struct ModelConfig {
  // Every version's header (the 36 bytes of version 1).
  uint32_t n_layer = 0;
  uint32_t n_embd = 0;  // d
  uint32_t n_head = 0;
  uint32_t n_ctx = 0;  // n_positions (GPT-2), max_position_embeddings (Llama family)
  uint32_t vocab_size = 0;
  uint32_t n_inner = 0;  // d_ff (4 * d when the HF config says null); intermediate_size
  uint32_t eos_token_id = 50256;
  float layer_norm_eps = 1e-5f;  // GPT-2's LayerNorm epsilon, or the Llama family's rms_norm_eps
  uint32_t tied_lm_head = 1;
  // Version 2 (the Llama family). A version-1 (GPT-2) file reads as arch kGpt2 with
  // n_head_kv = n_head and head_dim = n_embd / n_head.
  Arch arch = Arch::kGpt2;
  uint32_t n_head_kv = 0;  // key/value heads (grouped-query attention)
  uint32_t head_dim = 0;   // per head (may differ from n_embd / n_head)
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling = RopeScaling::kNone;
  float rope_factor = 1.0f;            // llama3 and linear
  float rope_low_freq_factor = 1.0f;   // llama3
  float rope_high_freq_factor = 4.0f;  // llama3
  uint32_t rope_original_ctx = 0;      // llama3: original_max_position_embeddings
  uint32_t flags = 0;                  // kQkvBias | kOutBias | kMlpBias
  HfFamily family = HfFamily::kGpt2;

  int kv_dim() const { return static_cast<int>(n_head_kv * head_dim); }  // one K or V row
  int q_dim() const { return static_cast<int>(n_head * head_dim); }
};

#pragma pack(push, 1)
// The config as stored: bytes 56..91 of every header (version 1's whole config) ...
struct HeaderConfig {
  uint32_t n_layer, n_embd, n_head, n_ctx, vocab_size, n_inner, eos_token_id;
  float layer_norm_eps;
  uint32_t tied_lm_head;
};
// ... and bytes 184..227 of a version-2 header (reserved, zero, in version 1).
struct HeaderConfigV2 {
  uint32_t arch, n_head_kv, head_dim;
  float rope_theta;
  uint32_t rope_scaling;
  float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
  uint32_t rope_original_ctx, flags, family;
};
static_assert(sizeof(HeaderConfig) == 36 && sizeof(HeaderConfigV2) == 44, "header layout");

struct FileHeader {
  char magic[8];
  uint32_t version;       // 1: GPT-2; 2: any architecture (HeaderConfigV2 in use)
  uint32_t header_bytes;  // sizeof(FileHeader)
  uint64_t file_bytes;    // total file size: detects truncation
  uint8_t content_hash[32];
  HeaderConfig config;  // 36 bytes
  uint32_t n_tensors;
  uint64_t tensor_index_offset;
  uint64_t tokenizer_offset;
  uint64_t tokenizer_bytes;
  char model_name[64];     // NUL-padded, informational
  HeaderConfigV2 config2;  // version 2; zero in version 1
  uint8_t reserved[256 - 8 - 4 - 4 - 8 - 32 - 36 - 4 - 8 - 8 - 8 - 64 - 44];
};
static_assert(sizeof(FileHeader) == 256, "FileHeader is 256 bytes");

struct TensorEntry {
  char name[80];         // NUL-padded
  uint32_t dtype;        // DType
  uint32_t ndim;         // 1 or 2
  uint32_t shape[2];     // logical shape; I8P: (n, k); padded rows are implied
  uint64_t offset;       // from file start, multiple of kTensorAlign
  uint64_t nbytes;       // exact byte size (I8P: PaddedRows(n) * k)
  uint8_t reserved[16];  // zero
};
static_assert(sizeof(TensorEntry) == 128, "TensorEntry is 128 bytes");
#pragma pack(pop)

// ---- writing (converter) ------------------------------------------------------
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<uint32_t> shape;  // 1 or 2 dims
  std::vector<uint8_t> data;    // exactly the bytes to store
};

// Writes a complete model file (computes offsets, alignment and the content hash).
absl::Status WriteModelFile(const std::string& path, const ModelConfig& config,
                            const std::string& model_name, absl::Span<const uint8_t> tokenizer_blob,
                            const std::vector<TensorToWrite>& tensors);

// Config sanity shared by the writer, the parser and the converter: every dimension in
// 1..2^20, n_embd and n_inner multiples of 4, eos_token_id < vocab_size, layer_norm_eps finite in
// (0, 1], tied_lm_head 0 or 1. GPT-2: n_embd % n_head == 0 (and head_dim, n_head_kv as derived).
// Llama family: n_head a multiple of n_head_kv, head_dim even and n_head * head_dim a multiple of
// 4, rope_theta and the scaling factors finite and positive, known scaling and flags.
absl::Status ValidateModelConfig(const ModelConfig& config);
// "gpt2" / "llama" and the Hugging Face family ("gpt2", "llama", "qwen2", "mistral").
const char* ArchName(Arch arch);
const char* FamilyName(HfFamily family);

// Exact byte size of a tensor of this dtype and shape (I8P: PaddedRows(n) * k), or an error
// when the combination is invalid (I8P needs 2 dims with k % 4 == 0; dims must be >= 1).
absl::StatusOr<uint64_t> TensorNBytes(DType dtype, absl::Span<const uint32_t> shape);

// Streaming writer: the tensor list (names, dtypes, shapes) is declared up front, then each
// tensor's bytes are appended in that order, so a converter holds one tensor at a time
// (gpt2-xl is 1.5B parameters). Writes to "<path>.tmp" and renames on Finish(); the
// destructor removes the temp file if Finish() was not reached.
class ModelFileWriter {
 public:
  struct Spec {
    std::string name;
    DType dtype;
    std::vector<uint32_t> shape;  // 1 or 2 dims
  };

  static absl::StatusOr<std::unique_ptr<ModelFileWriter>> Create(
      const std::string& path, const ModelConfig& config, const std::string& model_name,
      absl::Span<const uint8_t> tokenizer_blob, std::vector<Spec> specs);

  // The next tensor's bytes (size must be exactly its nbytes).
  absl::Status Append(absl::Span<const uint8_t> data);
  // All tensors appended: writes the content hash and moves the file into place.
  absl::Status Finish();
  // Content hash, valid after Finish().
  const std::array<uint8_t, 32>& content_hash() const { return hash_; }

  ~ModelFileWriter();
  ModelFileWriter(const ModelFileWriter&) = delete;
  ModelFileWriter& operator=(const ModelFileWriter&) = delete;

 private:
  ModelFileWriter() = default;
  absl::Status Write(const void* p, size_t n);  // writes and hashes
  absl::Status PadTo(uint64_t offset);

  std::unique_ptr<AtomicOutputFile> out_;
  std::vector<Spec> specs_;
  std::vector<uint64_t> offsets_;  // (n_tensors) file offset of each tensor
  std::vector<uint64_t> nbytes_;   // (n_tensors)
  size_t next_ = 0;                // index of the next tensor to append
  uint64_t pos_ = 0;               // bytes written so far
  std::unique_ptr<Sha256> sha_;
  std::array<uint8_t, 32> hash_{};
  bool finished_ = false;
};

// ---- reading (loader) --------------------------------------------------------
// A validated view of a model file image (the bytes are owned elsewhere: an mmap or a buffer).
struct TensorView {
  std::string name;
  DType dtype;
  std::vector<uint32_t> shape;
  const uint8_t* data;
  uint64_t nbytes;
};

struct ModelFileView {
  ModelConfig config;
  std::string model_name;
  uint8_t content_hash[32];
  absl::Span<const uint8_t> tokenizer_blob;
  std::vector<TensorView> tensors;
  // name -> position in tensors (filled by ParseModelFile): a lookup is O(1), so loading a file
  // with many tensors costs time linear in the file, not quadratic.
  std::unordered_map<std::string, size_t> index;

  // nullptr when absent.
  const TensorView* Find(const std::string& name) const;
  std::string HashHex() const;  // 64 lowercase hex chars
};

// Validates magic, version, sizes, offsets, alignment, dtype/shape consistency and config
// sanity; every failure is an InvalidArgument/DataLoss naming the problem. Does not check the
// content hash (see VerifyContentHash) nor the tensor set (the Model loader does).
absl::StatusOr<ModelFileView> ParseModelFile(absl::Span<const uint8_t> bytes);

// Recomputes SHA-256 and compares with the header. `hashed`, if set, is called with each chunk
// of the file once it is hashed (the loader drops a mapped file's pages there).
absl::Status VerifyContentHash(absl::Span<const uint8_t> bytes,
                               const std::function<void(const uint8_t*, size_t)>& hashed = {});

// For F32 tensors: an error naming the tensor and the first non-finite element. Other dtypes
// (int8 / int32 cannot be non-finite) are OK. Linear in the tensor size.
absl::Status CheckFinite(const TensorView& t);

}  // namespace selfcond

#endif  // SELFCOND_MODEL_FILE_H_
