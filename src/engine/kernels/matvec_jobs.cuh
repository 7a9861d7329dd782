// The job choice shared by the decode mat-vec kernels, whose launches take up to three matrices
// of one type and width with their rows concatenated (q/k/v), or a gate and an up matrix.
#pragma once
#include "engine/kernels/kernels.h"

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

}  // namespace orcd::kern
