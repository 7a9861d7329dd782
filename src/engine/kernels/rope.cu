// Rotary position embedding for q and k, fused with storing k and v into the f16 KV cache.
#include <algorithm>

#include "common/cuda_check.h"
#include "engine/kernels/common.cuh"
#include "engine/kernels/kernels.h"
#include "engine/kernels/launch.cuh"
#include "engine/kernels/rope.cuh"

namespace orcd {
namespace {

__device__ __forceinline__ void rotate(float* head, int i, int pos, const RopeParams& p) {
  const int half = p.rope_dims / 2;
  const int a = p.neox ? i : 2 * i;
  const int b = p.neox ? i + half : 2 * i + 1;
  const float2 cs = kern::rope_cos_sin(i, pos, p);
  const float x0 = head[a], x1 = head[b];
  head[a] = x0 * cs.x - x1 * cs.y;
  head[b] = x0 * cs.y + x1 * cs.x;
}

// One block per (token, head): query heads rotate q; KV heads rotate k and then store that
// head's k and v into the cache. A thread per rotating pair keeps the block to one round.
__global__ void rope_store_kernel(float* q, float* k, const float* __restrict__ v, __half* k_cache, __half* v_cache, int start_pos,
                                  RopeParams p) {
  kern::wait_for_producer();
  kern::allow_consumer();
  const int t = blockIdx.x, head = blockIdx.y;
  const int pos = start_pos + (p.pos_dev ? *p.pos_dev : 0) + t;
  const int pairs = p.rope_dims / 2;
  const int hd = p.head_dim;
  if (head < p.n_heads) {
    float* qh = q + (static_cast<int64_t>(t) * p.n_heads + head) * hd;
    for (int j = threadIdx.x; j < pairs; j += blockDim.x) rotate(qh, j, pos, p);
    return;
  }
  const int kvh = head - p.n_heads;
  const int kv_dim = p.n_kv_heads * hd;
  float* kh = k + static_cast<int64_t>(t) * kv_dim + kvh * hd;
  for (int j = threadIdx.x; j < pairs; j += blockDim.x) rotate(kh, j, pos, p);
  __syncthreads();
  const float* vh = v + static_cast<int64_t>(t) * kv_dim + kvh * hd;
  __half* kc = k_cache + static_cast<int64_t>(pos) * kv_dim + kvh * hd;
  __half* vc = v_cache + static_cast<int64_t>(pos) * kv_dim + kvh * hd;
  for (int i = threadIdx.x; i < hd; i += blockDim.x) {
    kc[i] = __float2half(kh[i]);
    vc[i] = __float2half(vh[i]);
  }
}

}  // namespace

void launch_rope_store_kv(float* q, float* k, const float* v, __half* k_cache, __half* v_cache, int n_tokens, int start_pos,
                          const RopeParams& p, cudaStream_t stream) {
  if (n_tokens == 0) return;
  const int threads = std::min(256, std::max(32, (p.head_dim + 31) / 32 * 32));
  kern::launch_pdl(rope_store_kernel, dim3(n_tokens, p.n_heads + p.n_kv_heads), threads, 0, stream, q, k, v, k_cache, v_cache, start_pos,
                   p);
}

}  // namespace orcd
