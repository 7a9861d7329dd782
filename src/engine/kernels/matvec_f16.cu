// Decode-time matrix-vector products for F16 weights on float activations. Nothing to dequantize:
// the kernel only has to keep enough 16-byte weight loads in flight to run at the memory's speed,
// so each lane issues all its loads of an iteration (several rows, several column steps) before
// it uses any of them. The weights stream past L1, so the activation vector stays there.
#include <cuda_fp16.h>

#include "common/cuda_check.h"
#include "engine/kernels/common.cuh"
#include "engine/kernels/kernels.h"
#include "engine/kernels/launch.cuh"
#include "engine/kernels/matvec_jobs.cuh"

namespace orcd {
namespace {

using kern::kWarp;
constexpr int kWarpsPerBlock = 4;
constexpr int kColsPerLoad = 8;  // halves in 16 bytes
constexpr int kLoadsInFlight = 8;

struct F16Job {
  const __half* w;
  int64_t ld;  // halves between rows
  int rows;
  float* out;
  const float* bias;
};
struct F16Jobs {
  F16Job job[3];
  int n;
};

// Each weight is read once a token: not kept in L1 (no_allocate), where it would evict the
// activations that every row reads. Measured (docs/perf-log.md, step 48): the F16 8B went
// from 163 to 178 tok/s; an L2 evict-first policy or a 256-byte L2 prefetch beside it did not help.
__device__ __forceinline__ uint4 load_streaming(const __half* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

__device__ __forceinline__ float dot8(uint4 w, const float* x) {
  const float4 x0 = *reinterpret_cast<const float4*>(x), x1 = *reinterpret_cast<const float4*>(x + 4);
  const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&w.x)), b = __half22float2(*reinterpret_cast<const __half2*>(&w.y));
  const float2 c = __half22float2(*reinterpret_cast<const __half2*>(&w.z)), d = __half22float2(*reinterpret_cast<const __half2*>(&w.w));
  return a.x * x0.x + a.y * x0.y + b.x * x0.z + b.y * x0.w + c.x * x1.x + c.y * x1.y + d.x * x1.z + d.y * x1.w;
}

// Each warp computes kRows consecutive rows of one matrix (of both in swiglu mode).
template <MatvecMode kMode, int kRows>
__global__ void __launch_bounds__(kWarp* kWarpsPerBlock) matvec_f16_kernel(F16Jobs jobs, const float* __restrict__ x, int cols, MatvecTail tail) {
  constexpr int kMats = kMode == MatvecMode::swiglu ? 2 : 1;
  constexpr int kSteps = kLoadsInFlight / (kMats * kRows) > 0 ? kLoadsInFlight / (kMats * kRows) : 1;
  int r = (blockIdx.x * kWarpsPerBlock + threadIdx.y) * kRows;
  const F16Job J = kern::job_of_row<kMode>(jobs, r);
  const __half* const w[2] = {J.w, jobs.job[1].w};  // w[1]: the up matrix in swiglu mode
  const bool live = r < J.rows;
  const int n_cols = live ? cols : 0;  // a warp past the end still takes part in the epilogue
  const int lane = threadIdx.x;
  float acc[kMats][kRows] = {};
  constexpr int kChunk = kWarp * kColsPerLoad;  // columns a warp covers per step
  uint4 v[kMats][kRows][kSteps];
  auto fetch = [&](int c0) {
#pragma unroll
    for (int m = 0; m < kMats; ++m)
#pragma unroll
      for (int i = 0; i < kRows; ++i)
#pragma unroll
        for (int s = 0; s < kSteps; ++s) {
          const int c = c0 + s * kChunk;
          v[m][i][s] = c < cols ? load_streaming(w[m] + (r + i) * J.ld + c) : make_uint4(0, 0, 0, 0);
        }
  };
  // The weights do not depend on earlier kernels: the first step's loads are issued before
  // waiting for the previous kernel, so that they overlap its last blocks.
  int c0 = lane * kColsPerLoad;
  if (c0 < n_cols) fetch(c0);
  kern::wait_for_producer();
  for (; c0 < n_cols; c0 += kSteps * kChunk) {
    if (c0 != lane * kColsPerLoad) fetch(c0);
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      const int c = c0 + s * kChunk;
      if (c >= cols) break;
#pragma unroll
      for (int m = 0; m < kMats; ++m)
#pragma unroll
        for (int i = 0; i < kRows; ++i) acc[m][i] += dot8(v[m][i][s], x + c);
    }
  }
  kern::allow_consumer();
  kern::finish_rows<kMode, kWarpsPerBlock, kRows>(acc, J, r, live, Q8Act{}, tail, kern::NormInParts{});  // no norm tails (check_matvec_tail)
}

}  // namespace

bool matvec_f16_supports(const QMatrix& w) {
  return w.type == GgmlType::F16 && w.cols % kColsPerLoad == 0 && w.rows <= (1 << 30) && reinterpret_cast<uintptr_t>(w.data) % 16 == 0 &&
         w.row_bytes % 16 == 0;
}

void launch_matvec_f16(std::span<const MatvecJob> jobs, const float* x, MatvecMode mode, cudaStream_t stream, int rows_per_warp,
                       const MatvecTail* tail) {
  if (jobs.empty() || jobs.size() > 3) throw std::invalid_argument("matvec_f16: 1 to 3 matrices per launch");
  const MatvecTail t = tail ? *tail : MatvecTail{};
  check_matvec_tail(jobs, mode, t);
  if (t.norm_in.ss || t.norm_out.weight) throw std::invalid_argument("matvec_f16: norm tails run in the integer mat-vec only");
  if (mode == MatvecMode::swiglu && (jobs.size() != 2 || jobs[0].w.rows != jobs[1].w.rows))
    throw std::invalid_argument("matvec_f16: swiglu takes a gate and an up matrix of equal rows");
  if (reinterpret_cast<uintptr_t>(x) % 16 != 0) throw std::invalid_argument("matvec_f16: x must be 16-byte aligned");
  F16Jobs p{};
  int64_t rows = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    const QMatrix& w = jobs[i].w;
    if (w.cols != jobs[0].w.cols || !matvec_f16_supports(w))
      throw std::invalid_argument("matvec_f16: matrices of one launch must be F16 of one width, 16-byte aligned");
    p.job[i] = {static_cast<const __half*>(w.data), static_cast<int64_t>(w.row_bytes / 2), static_cast<int>(w.rows), jobs[i].out, jobs[i].bias};
    rows += w.rows;
  }
  p.n = static_cast<int>(jobs.size());
  if (mode == MatvecMode::swiglu) rows = jobs[0].w.rows;
  if (rows_per_warp == 0) {  // two rows a warp where they divide: more loads in flight per lane
    rows_per_warp = 2;
    for (const MatvecJob& j : jobs)
      if (j.w.rows % 2 != 0) rows_per_warp = 1;
  }
  if (rows_per_warp != 1 && rows_per_warp != 2) throw std::invalid_argument("matvec_f16: rows a warp must be 1 or 2");
  for (const MatvecJob& j : jobs)
    if (j.w.rows % rows_per_warp != 0) throw std::invalid_argument("matvec_f16: every matrix's rows must be a multiple of the rows a warp");
  const int cols = static_cast<int>(jobs[0].w.cols);
  auto run = [&]<MatvecMode kMode>() {
    const dim3 block(kWarp, kWarpsPerBlock);
    if (rows_per_warp == 2)
      kern::launch_pdl(matvec_f16_kernel<kMode, 2>, kern::ceil_div(rows, 2 * kWarpsPerBlock), block, 0, stream, p, x, cols, t);
    else
      kern::launch_pdl(matvec_f16_kernel<kMode, 1>, kern::ceil_div(rows, kWarpsPerBlock), block, 0, stream, p, x, cols, t);
  };
  if (mode == MatvecMode::store) run.template operator()<MatvecMode::store>();
  else if (mode == MatvecMode::accumulate) run.template operator()<MatvecMode::accumulate>();
  else run.template operator()<MatvecMode::swiglu>();
}

}  // namespace orcd
