// What the decode mat-vec kernels share: the job choice (launches take up to three matrices of
// one type and width with their rows concatenated, q/k/v, or a gate and an up matrix) and the
// epilogue with its tail (MatvecTail: RoPE and the cache store).
#pragma once
#include <cooperative_groups.h>

#include "engine/kernels/common.cuh"
#include "engine/kernels/kernels.h"
#include "engine/kernels/q8act.cuh"
#include "engine/kernels/rope.cuh"

namespace orcd::kern {

// The job holding launch row r, which becomes the row within that job. A warp's rows never
// straddle two jobs (each job's rows are a multiple of the rows a warp). In swiglu mode every
// row is in job 0, paired with the same row of job 1.
template <MatvecMode kMode, class Jobs>
__device__ __forceinline__ auto job_of_row(const Jobs& jobs, int& r) {
  auto J = jobs.job[0];  // constant indices only: a dynamic one would copy the parameters to the stack
  if constexpr (kMode != MatvecMode::swiglu) {
    if (r >= J.rows && jobs.n > 1) {
      r -= J.rows;
      J = jobs.job[1];
      if (r >= J.rows && jobs.n > 2) {
        r -= J.rows;
        J = jobs.job[2];
      }
    }
  }
  return J;
}

// The q/k/v tail: each warp's lane i takes its row i. Pairs (2j, 2j + 1) of a job sit in one
// block (jobs and blocks start at even rows), so a row finds its partner in shared memory.
template <int kWarps, int kRows>
__device__ __forceinline__ void rope_store_rows(const float (&res)[kRows], float* out, int r, bool live, const MatvecTail& t) {
  __shared__ float vals[kWarps * kRows];
  const int lane = threadIdx.x, local = threadIdx.y * kRows;
  if (lane == 0)
#pragma unroll
    for (int i = 0; i < kRows; ++i) vals[local + i] = res[i];
  __syncthreads();
  if (!live || lane >= kRows) return;
  const int row = r + lane;
  float v = vals[local + lane];
  const RopeParams& p = t.rope;
  const int pos = *p.pos_dev;
  const bool is_k = out == t.rope_k;
  if (out == t.rope_q || is_k) {
    const int d = row % p.head_dim;
    if (d < p.rope_dims) {
      const float partner = vals[(local + lane) ^ 1];
      const float2 cs = rope_cos_sin(d / 2, pos, p);
      v = d & 1 ? partner * cs.y + v * cs.x : v * cs.x - partner * cs.y;
    }
  }
  out[row] = v;
  const int64_t at = static_cast<int64_t>(pos) * p.n_kv_heads * p.head_dim + row;
  if (is_k) t.k_cache[at] = __float2half(v);
  else if (out == t.rope_v) t.v_cache[at] = __float2half(v);
}

// norm_in (NormPartials): the producer's sums of squares, up to kNormParts a lane, loaded once
// the producer is done and summed only in finish_rows, so that the loads do not hold up the
// weight fetches behind them (a warp stops at the first use of a load).
constexpr int kNormParts = 4;  // in registers for x of up to 4,096 elements; wider x reads the rest at the end
struct NormInParts {
  float v[kNormParts];
};
__device__ __forceinline__ NormInParts norm_in_load(const MatvecTail& t) {
  NormInParts p;
  const int n = t.norm_in.ss ? t.norm_in.dim / 32 : 0;
#pragma unroll
  for (int k = 0; k < kNormParts; ++k) {
    const int g = threadIdx.x + k * kWarp;
    p.v[k] = g < n ? t.norm_in.ss[g] : 0.0f;
  }
  return p;
}
__device__ __forceinline__ float norm_in_scale(const MatvecTail& t, const NormInParts& p) {
  if (!t.norm_in.ss) return 1.0f;
  float s = 0.0f;
#pragma unroll
  for (int k = 0; k < kNormParts; ++k) s += p.v[k];
  for (int g = threadIdx.x + kNormParts * kWarp; g < t.norm_in.dim / 32; g += kWarp) s += t.norm_in.ss[g];  // wider x
  return rsqrtf(warp_sum(s) / t.norm_in.dim + t.norm_in.eps);
}

// norm_out (NormPartials): the block's rows of the new x, handed to the first block of its
// cluster (32 rows a cluster), which quantizes x∘w and writes the 32 rows' sum of squares. The
// cluster barrier is the only wait: no block finishes the norm for the whole row (step 13 in
// docs/PERFORMANCE.md: a last block doing that was slower than the norm kernel).
template <int kRows>
__device__ __forceinline__ void emit_norm_rows(const float (&res)[kRows], const float (&w)[kRows], int r, bool live, const NormPartials& n) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  __shared__ float xw[kWarp], squares[kWarp];
  const cg::cluster_group cluster = cg::this_cluster();
  if (live && threadIdx.x == 0) {
    float* xw0 = cluster.map_shared_rank(xw, 0);
    float* sq0 = cluster.map_shared_rank(squares, 0);
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      const int at = (r + i) % kWarp;
      xw0[at] = res[i] * w[i];
      sq0[at] = res[i] * res[i];
    }
  }
  cluster.sync();
  if (cluster.block_rank() != 0 || threadIdx.y != 0) return;
  const int lane = threadIdx.x;
  const int64_t row = static_cast<int64_t>(r - r % kWarp) + lane;  // warp 0 of the cluster's first block: r is 32-aligned
  quantize_lane(xw[lane], row, n.q);
  const float ss = warp_sum(squares[lane]);
  if (lane == 0) n.ss[row / kWarp] = ss;
#endif
}

// The end of every decode mat-vec kernel, reached by all threads of the block (kWarps warps of
// kRows rows each; `live`: the warp's rows exist): the warp's sums reduced, scaled by 1/rms for
// a norm_in tail, and written per mode or handed to the RoPE tail; in swiglu mode with `hq` set
// (32 rows a block, all live), the block's outputs also quantized for the next product; in
// accumulate mode with a norm_out tail, the next norm's input emitted. `in`: norm_in_load.
template <MatvecMode kMode, int kWarps, int kRows, int kMats, class Job>
__device__ __forceinline__ void finish_rows(const float (&acc)[kMats][kRows], const Job& J, int r, bool live, const Q8Act& hq,
                                            const MatvecTail& tail, const NormInParts& in) {
  constexpr int kBlockRows = kWarps * kRows;
  const int lane = threadIdx.x;
  float norm_w[kRows];  // loaded first, to arrive while the sums reduce
  if constexpr (kMode == MatvecMode::accumulate) {
#pragma unroll
    for (int i = 0; i < kRows; ++i) norm_w[i] = tail.norm_out.weight && live && lane == 0 ? tail.norm_out.weight[r + i] : 0.0f;
  }
  const float in_scale = norm_in_scale(tail, in);
  float res[kRows];
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    float a = warp_sum(acc[0][i]) * in_scale;
    const float a2 = kMode == MatvecMode::swiglu ? warp_sum(acc[kMats - 1][i]) * in_scale : 0.0f;
    if (live && J.bias) a += J.bias[r + i];
    if constexpr (kMode == MatvecMode::accumulate) res[i] = live ? J.out[r + i] + a : 0.0f;
    else if constexpr (kMode == MatvecMode::swiglu) res[i] = a / (1.0f + expf(-a)) * a2;
    else res[i] = a;
  }
  if constexpr (kMode == MatvecMode::store) {
    if (tail.rope_q) {
      rope_store_rows<kWarps, kRows>(res, J.out, r, live, tail);
      return;
    }
  }
  if (live && lane == 0)
#pragma unroll
    for (int i = 0; i < kRows; ++i) J.out[r + i] = res[i];
  if constexpr (kMode == MatvecMode::accumulate) {
    if (tail.norm_out.weight) emit_norm_rows<kRows>(res, norm_w, r, live, tail.norm_out);
  }
  if constexpr (kMode == MatvecMode::swiglu && kBlockRows == 32) {
    if (hq.hi) {
      __shared__ float outs[kBlockRows];
      if (lane == 0)
#pragma unroll
        for (int i = 0; i < kRows; ++i) outs[threadIdx.y * kRows + i] = res[i];
      __syncthreads();
      if (threadIdx.y == 0) quantize_lane(outs[lane], blockIdx.x * kBlockRows + lane, hq);
    }
  }
}

}  // namespace orcd::kern
