// Model shape from GGUF metadata, and the weights as they sit in VRAM.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/kernels/kernels.h"
#include "vram/device_allocator.h"

namespace orcd {

class GgufFile;

class ModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class Arch { llama, qwen2 };

struct ModelConfig {
  Arch arch = Arch::llama;
  std::string arch_name;
  int n_layers = 0, n_embd = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, n_ff = 0, n_vocab = 0;
  int n_ctx_train = 0;
  float rms_eps = 1e-5f;
  float rope_base = 10000.0f, rope_freq_scale = 1.0f;
  int rope_dims = 0;
  bool rope_neox = false;
  bool tied_embeddings = false;  // no output.weight: the LM head reuses token_embd
  bool qkv_bias = false;

  static ModelConfig from_gguf(const GgufFile& f);  // throws ModelError
  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
};

struct LayerWeights {
  const float* attn_norm = nullptr;
  QMatrix wq, wk, wv, wo;
  const float *bq = nullptr, *bk = nullptr, *bv = nullptr;
  const float* ffn_norm = nullptr;
  QMatrix w_gate, w_up, w_down;
};

struct ModelWeights {
  QMatrix tok_embd;
  const float* output_norm = nullptr;
  QMatrix output;
  const float* rope_freqs = nullptr;
  // NEOX models rotate dims (i, i + rope_dims / 2) of a head; their q and k rows (and biases)
  // are stored interleaved so that each rotating pair is two adjacent rows, which is what the
  // decode mat-vec's epilogue rotates. q.k is unchanged, as q and k move alike; RoPE then runs
  // with adjacent pairs.
  bool qk_rows_interleaved = false;
  std::vector<LayerWeights> layers;
  DeviceBuffer storage;  // every tensor lives in this one allocation
};

// Bytes the weights take in VRAM (each tensor padded to the allocator's alignment).
uint64_t weights_vram_bytes(const GgufFile& f);

using LoadProgress = std::function<void(uint64_t done_bytes, uint64_t total_bytes)>;

// Validates every tensor the architecture needs (names, shapes, supported types), then
// allocates and uploads. Throws ModelError before allocating anything if the file is unusable.
ModelWeights load_weights(const GgufFile& f, const ModelConfig& cfg, DeviceAllocator& alloc, const LoadProgress& progress);

}  // namespace orcd
