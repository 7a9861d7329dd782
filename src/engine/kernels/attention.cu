// Causal grouped-query attention over the f16 KV cache, split over the sequence: each block
// handles one (query token, head, split) and walks its positions in chunks with an online
// softmax; a second kernel merges the splits. Decode with few query heads gets many splits
// so long contexts still fill the GPU; prefill needs none.
#include <algorithm>

#include "common/cuda_check.h"
#include "engine/kernels/common.cuh"
#include "engine/kernels/kernels.h"

namespace orcd {
namespace {

constexpr int kThreads = 128;
constexpr int kChunk = 128;      // positions scored at a time
constexpr int kMaxHeadDim = 256;
constexpr int kDimsPerThread = kMaxHeadDim / kThreads;
constexpr int kMaxSplits = 32;

// partial layout per (token, head, split): [m, l, o[head_dim]]
__global__ void attention_split_kernel(const float* __restrict__ q, const __half* __restrict__ kc, const __half* __restrict__ vc,
                                       float* __restrict__ partial, AttentionParams p, int n_splits, int split_len) {
  __shared__ float qs[kMaxHeadDim];
  __shared__ float sc[kChunk];
  __shared__ float red[32];
  const int h = blockIdx.x, t = blockIdx.y, s = blockIdx.z;
  const int hd = p.head_dim;
  const int kv_dim = p.n_kv_heads * hd;
  const int kvh = h / (p.n_heads / p.n_kv_heads);
  const int n_kv = p.start_pos + t + 1;  // causal
  const int begin = s * split_len, end = min(n_kv, begin + split_len);
  const float scale = rsqrtf(static_cast<float>(hd));
  const float* qh = q + (static_cast<int64_t>(t) * p.n_heads + h) * hd;
  for (int d = threadIdx.x; d < hd; d += kThreads) qs[d] = qh[d] * scale;
  __syncthreads();

  float m = -INFINITY, l = 0.0f;
  float o[kDimsPerThread] = {};
  const int lane = threadIdx.x % kern::kWarp, warp = threadIdx.x / kern::kWarp;
  for (int c0 = begin; c0 < end; c0 += kChunk) {
    const int cn = min(kChunk, end - c0);
    for (int j = warp; j < cn; j += kThreads / kern::kWarp) {
      const __half* kr = kc + static_cast<int64_t>(c0 + j) * kv_dim + kvh * hd;
      float dot = 0.0f;
      for (int d = lane; d < hd; d += kern::kWarp) dot += qs[d] * __half2float(kr[d]);
      dot = kern::warp_sum(dot);
      if (lane == 0) sc[j] = dot;
    }
    __syncthreads();
    float cmax = -INFINITY;
    for (int j = threadIdx.x; j < cn; j += kThreads) cmax = fmaxf(cmax, sc[j]);
    cmax = kern::block_max(cmax, red);
    const float new_m = fmaxf(m, cmax);
    const float rescale = expf(m - new_m);  // 0 on the first chunk (m = -inf)
    float psum = 0.0f;
    for (int j = threadIdx.x; j < cn; j += kThreads) {
      const float e = expf(sc[j] - new_m);
      sc[j] = e;
      psum += e;
    }
    psum = kern::block_sum(psum, red);  // its barriers also publish sc[]
    l = l * rescale + psum;
    m = new_m;
#pragma unroll
    for (int k = 0; k < kDimsPerThread; ++k) {
      const int d = threadIdx.x + k * kThreads;
      if (d >= hd) break;
      float acc = o[k] * rescale;
      for (int j = 0; j < cn; ++j) acc += sc[j] * __half2float(vc[static_cast<int64_t>(c0 + j) * kv_dim + kvh * hd + d]);
      o[k] = acc;
    }
    __syncthreads();  // sc[] is rewritten by the next chunk
  }
  float* out = partial + ((static_cast<int64_t>(t) * p.n_heads + h) * n_splits + s) * (hd + 2);
  if (threadIdx.x == 0) {
    out[0] = m;
    out[1] = l;
  }
#pragma unroll
  for (int k = 0; k < kDimsPerThread; ++k) {
    const int d = threadIdx.x + k * kThreads;
    if (d < hd) out[2 + d] = o[k];
  }
}

__global__ void attention_combine_kernel(const float* __restrict__ partial, float* __restrict__ out, AttentionParams p, int n_splits) {
  const int h = blockIdx.x, t = blockIdx.y;
  const int hd = p.head_dim;
  const float* base = partial + (static_cast<int64_t>(t) * p.n_heads + h) * n_splits * (hd + 2);
  float m = -INFINITY;
  for (int s = 0; s < n_splits; ++s) m = fmaxf(m, base[s * (hd + 2)]);
  float l = 0.0f;
  for (int s = 0; s < n_splits; ++s) {
    const float ms = base[s * (hd + 2)];
    if (ms != -INFINITY) l += base[s * (hd + 2) + 1] * expf(ms - m);
  }
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float acc = 0.0f;
    for (int s = 0; s < n_splits; ++s) {
      const float ms = base[s * (hd + 2)];
      if (ms != -INFINITY) acc += base[s * (hd + 2) + 2 + d] * expf(ms - m);
    }
    out[(static_cast<int64_t>(t) * p.n_heads + h) * hd + d] = acc / l;
  }
}

int choose_splits(const AttentionParams& p) {
  const int max_kv = p.start_pos + p.n_tokens;
  const int blocks = p.n_heads * p.n_tokens;
  // Aim for about 512 blocks in flight (a few per SM on an H100), never a split under one chunk.
  int splits = std::max(1, 512 / std::max(1, blocks));
  splits = std::min({splits, kMaxSplits, kern::ceil_div(max_kv, kChunk)});
  return std::max(1, splits);
}

}  // namespace

size_t attention_scratch_floats(int max_tokens, int n_heads, int head_dim, int max_ctx) {
  // choose_splits keeps tokens * heads * splits under max(tokens * heads, 512 * 2).
  const size_t units = std::max<size_t>(static_cast<size_t>(max_tokens) * n_heads, 1024);
  (void)max_ctx;
  return units * (head_dim + 2);
}

void launch_attention(const float* q, const __half* k_cache, const __half* v_cache, float* out, float* scratch,
                      const AttentionParams& p, cudaStream_t stream) {
  if (p.n_tokens == 0) return;
  if (p.head_dim > kMaxHeadDim || p.n_heads % p.n_kv_heads != 0)
    throw std::invalid_argument("attention: head_dim " + std::to_string(p.head_dim) + " or head grouping not supported");
  const int splits = choose_splits(p);
  const int max_kv = p.start_pos + p.n_tokens;
  const int split_len = kern::ceil_div(kern::ceil_div(max_kv, splits), kChunk) * kChunk;
  attention_split_kernel<<<dim3(p.n_heads, p.n_tokens, splits), kThreads, 0, stream>>>(q, k_cache, v_cache, scratch, p, splits, split_len);
  CUDA_CHECK_LAUNCH();
  attention_combine_kernel<<<dim3(p.n_heads, p.n_tokens), 128, 0, stream>>>(scratch, out, p, splits);
  CUDA_CHECK_LAUNCH();
}

}  // namespace orcd
