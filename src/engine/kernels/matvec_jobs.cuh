// What the decode mat-vec kernels share: the job choice (launches take up to three matrices of
// one type and width with their rows concatenated, q/k/v, or a gate and an up matrix) and the
// epilogue with its tail (MatvecTail: RoPE and the cache store).
#pragma once
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

// The end of every decode mat-vec kernel, reached by all threads of the block (kWarps warps of
// kRows rows each; `live`: the warp's rows exist): the warp's sums reduced and written per mode
// or handed to the RoPE tail; in swiglu mode with `hq` set (32 rows a block, all live), the
// block's outputs also quantized for the next product.
template <MatvecMode kMode, int kWarps, int kRows, int kMats, class Job>
__device__ __forceinline__ void finish_rows(const float (&acc)[kMats][kRows], const Job& J, int r, bool live, const Q8Act& hq,
                                            const MatvecTail& tail) {
  constexpr int kBlockRows = kWarps * kRows;
  const int lane = threadIdx.x;
  float res[kRows];
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    float a = warp_sum(acc[0][i]);
    const float a2 = kMode == MatvecMode::swiglu ? warp_sum(acc[kMats - 1][i]) : 0.0f;
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
