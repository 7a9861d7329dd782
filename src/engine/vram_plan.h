// What a model needs in VRAM, computed before anything is allocated, and the refusal when it
// does not fit.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#include "vram/vram_errors.h"

namespace orcd {

class GgufFile;
struct ModelConfig;

struct VramPlan {
  uint64_t weights = 0, kv_cache = 0, workspace = 0, logits = 0;
  uint64_t total() const { return weights + kv_cache + workspace + logits; }
  std::string breakdown() const;
};

VramPlan plan_vram(const GgufFile& f, const ModelConfig& c, int n_ctx, int max_batch_tokens);

// Prefill chunks of at least this many tokens run their products on tensor cores (cuBLAS);
// shorter ones use the dequantizing matmul, single tokens the integer mat-vec.
constexpr int kGemmMinTokens = 8;
constexpr uint64_t kCublasWorkspaceBytes = 32ull << 20;  // cuBLAS's recommendation for Hopper

// Every workspace buffer of the engine, in bytes before padding; the plan and the engine's
// allocations both come from here so they cannot drift apart.
struct WorkspaceSizes {
  uint64_t x, xb, q, att, k, v, hb, hb2, att_scratch, ids, history;
  uint64_t xq;    // one token's quantized activations (integer mat-vec)
  uint64_t hq;    // the quantized SwiGLU product, written while xq is still being read
  uint64_t nq;    // a norm's input emitted by a residual product (NormPartials): x∘w quantized, then sums of squares
  uint64_t step;  // the decode graph's inputs: token id and position
  uint64_t x16, w16, gemm;  // tensor-core prefill: f16 activations, one f16 matrix, cuBLAS workspace (0 when unused)
  uint64_t total_padded() const;
};
WorkspaceSizes workspace_sizes(const ModelConfig& c, int n_ctx, int max_batch_tokens);


// Throws InsufficientVramError (code POOL_UNAVAILABLE, reason insufficient_vram) naming needed, free, headroom, device,
// model and the breakdown, with what to try.
void check_fits(const VramPlan& plan, uint64_t free_bytes, uint64_t headroom, int device, const std::string& model_path, int n_ctx);

}  // namespace orcd
