// Rotary position embedding for q and k, fused with storing k and v into the f16 KV cache.
#include "common/cuda_check.h"
#include "engine/kernels/common.cuh"
#include "engine/kernels/kernels.h"

namespace orcd {
namespace {

__device__ __forceinline__ void rotate(float* head, int i, int pos, const RopeParams& p) {
  // Pair i of the rotating dims: angle pos * base^(-2i / rope_dims) * freq_scale.
  const int half = p.rope_dims / 2;
  const int a = p.neox ? i : 2 * i;
  const int b = p.neox ? i + half : 2 * i + 1;
  float theta = pos * p.freq_scale * powf(p.freq_base, -2.0f * i / p.rope_dims);
  if (p.freq_factors) theta /= p.freq_factors[i];
  float s, c;
  sincosf(theta, &s, &c);
  const float x0 = head[a], x1 = head[b];
  head[a] = x0 * c - x1 * s;
  head[b] = x0 * s + x1 * c;
}

// One block per token; threads walk over (head, pair).
__global__ void rope_store_kernel(float* q, float* k, const float* __restrict__ v, __half* k_cache, __half* v_cache, int start_pos,
                                  RopeParams p) {
  const int t = blockIdx.x;
  const int pos = start_pos + (p.pos_dev ? *p.pos_dev : 0) + t;
  const int pairs = p.rope_dims / 2;
  float* qt = q + static_cast<int64_t>(t) * p.n_heads * p.head_dim;
  float* kt = k + static_cast<int64_t>(t) * p.n_kv_heads * p.head_dim;
  for (int j = threadIdx.x; j < p.n_heads * pairs; j += blockDim.x) rotate(qt + (j / pairs) * p.head_dim, j % pairs, pos, p);
  for (int j = threadIdx.x; j < p.n_kv_heads * pairs; j += blockDim.x) rotate(kt + (j / pairs) * p.head_dim, j % pairs, pos, p);
  __syncthreads();
  const int kv_dim = p.n_kv_heads * p.head_dim;
  const float* vt = v + static_cast<int64_t>(t) * kv_dim;
  __half* kc = k_cache + static_cast<int64_t>(pos) * kv_dim;
  __half* vc = v_cache + static_cast<int64_t>(pos) * kv_dim;
  for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) {
    kc[i] = __float2half(kt[i]);
    vc[i] = __float2half(vt[i]);
  }
}

}  // namespace

void launch_rope_store_kv(float* q, float* k, const float* v, __half* k_cache, __half* v_cache, int n_tokens, int start_pos,
                          const RopeParams& p, cudaStream_t stream) {
  if (n_tokens == 0) return;
  rope_store_kernel<<<n_tokens, 256, 0, stream>>>(q, k, v, k_cache, v_cache, start_pos, p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace orcd
