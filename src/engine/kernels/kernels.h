// Host-side launchers for the engine's kernels; each lives beside its kernel in <family>.cu.
// All pointers are device pointers; all launches go on `stream` and are checked at launch.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "gguf/ggml_types.h"

namespace orcd {

// A weight matrix as stored in VRAM: `rows` rows of `cols` elements in GGML format `type`.
struct QMatrix {
  const void* data = nullptr;
  GgmlType type = GgmlType::F32;
  int64_t rows = 0, cols = 0;
  size_t row_bytes = 0;
};

bool matmul_supports(GgmlType t);

// out[t][r] = sum_i W[r][i] * x[t][i] for t < n_tokens (x: n_tokens x cols, out: n_tokens x rows).
void launch_matmul(const QMatrix& w, const float* x, int n_tokens, float* out, cudaStream_t stream);
// out[t] = dequantized row ids[t] of `table` (an embedding lookup).
void launch_get_rows(const QMatrix& table, const int32_t* ids, int n, float* out, cudaStream_t stream);
// Whole matrix dequantized to float (tests, and the CPU-side reference checks).
void launch_dequantize(const QMatrix& w, float* out, cudaStream_t stream);

// out[t] = x[t] / rms(x[t]) * weight, rows of `dim`.
void launch_rmsnorm(const float* x, const float* weight, float* out, int n_rows, int dim, float eps, cudaStream_t stream);

// x[t][i] += bias[i]
void launch_add_bias(float* x, const float* bias, int n_rows, int dim, cudaStream_t stream);
// x[i] += y[i]
void launch_add(float* x, const float* y, int64_t n, cudaStream_t stream);
// out[t][i] = silu(gate[t][i]) * up[t][i]
void launch_swiglu(const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream);

struct RopeParams {
  int n_heads, n_kv_heads, head_dim;
  int rope_dims;      // leading dims of each head that rotate (usually head_dim)
  float freq_base;
  float freq_scale;   // 1 / linear scaling factor
  bool neox;          // NEOX pairs (i, i + d/2); otherwise adjacent pairs (2i, 2i + 1)
  const float* freq_factors = nullptr;  // Llama 3.1-style per-pair divisors (rope_freqs.weight)
};
// Rotates q and k of tokens at positions start_pos.. in place, then stores k and v (f16) into
// the layer's cache rows at those positions. Cache layout: [position][kv_head][head_dim].
void launch_rope_store_kv(float* q, float* k, const float* v, __half* k_cache, __half* v_cache, int n_tokens, int start_pos,
                          const RopeParams& p, cudaStream_t stream);

struct AttentionParams {
  int n_heads, n_kv_heads, head_dim;
  int start_pos;  // position of the first query token
  int n_tokens;   // query tokens; token t sees cache positions 0..start_pos + t
};
// Causal grouped-query attention over the f16 cache. q/out: n_tokens x n_heads x head_dim.
// `scratch` holds attention_scratch_floats(p) floats (partial results of the sequence split).
void launch_attention(const float* q, const __half* k_cache, const __half* v_cache, float* out, float* scratch,
                      const AttentionParams& p, cudaStream_t stream);
size_t attention_scratch_floats(int max_tokens, int n_heads, int head_dim, int max_ctx);

}  // namespace orcd
