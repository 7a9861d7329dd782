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
  q.hi[i] = static_cast<int8_t>(h);
  q.lo[i] = static_cast<int8_t>(rintf((y - h) * kLoScale));
  if (i % 32 == 0) q.scale[i / 32] = s / kLoScale;
}

}  // namespace orcd::kern
