// Writing the integer mat-vec's activation format (Q8Act, see kernels.h) from inside kernels.
#pragma once
#include "engine/kernels/common.cuh"
#include "engine/kernels/kernels.h"

namespace orcd::kern {

constexpr int kLoScale = 254;  // x = scale * (254 * hi + lo): lo carries what hi rounded off

// Called by all 32 lanes of a warp, lane j holding element i = 32 * block + j.
__device__ __forceinline__ void quantize_lane(float v, int64_t i, const Q8Act& q) {
  const float amax = warp_max(fabsf(v));
  const float s = amax / 127.0f;
  const float y = s > 0.0f ? v / s : 0.0f;
  const float h = rintf(y);
  const int hi = static_cast<int>(h), lo = static_cast<int>(rintf((y - h) * kLoScale));
  q.hi[i] = static_cast<int8_t>(hi);
  q.lo[i] = static_cast<int8_t>(lo);
  // The block's integer sum (exact in a float: |sum| < 2^21) serves the K-quants' min terms.
  const int sum = __reduce_add_sync(0xffffffffu, kLoScale * hi + lo);
  if (i % 32 == 0) {
    q.scale[i / 32] = s / kLoScale;
    q.sum[i / 32] = static_cast<float>(sum);
  }
}

}  // namespace orcd::kern
