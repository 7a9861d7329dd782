// The rotary angle, shared by the RoPE kernel and the q/k/v mat-vec's epilogue.
#pragma once
#include "engine/kernels/kernels.h"

namespace orcd::kern {

// cos and sin of rotating pair i's angle at `pos`: pos * base^(-2i / rope_dims) * freq_scale,
// divided by the pair's frequency factor where the model has them.
__device__ __forceinline__ float2 rope_cos_sin(int i, int pos, const RopeParams& p) {
  float theta = pos * p.freq_scale * powf(p.freq_base, -2.0f * i / p.rope_dims);
  if (p.freq_factors) theta /= p.freq_factors[i];
  float s, c;
  sincosf(theta, &s, &c);
  return {c, s};
}

}  // namespace orcd::kern
