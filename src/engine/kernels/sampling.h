// Token sampling on the GPU; the host only reads back the chosen id.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "engine/sampling_params.h"

namespace orcd {

// Applies the repetition penalty to `logits` in place (each distinct id in `history` once).
void launch_repetition_penalty(float* logits, const int32_t* history, int n_history, float penalty, cudaStream_t stream);

// Picks a token from `logits` (modified in place) and writes it to *out_token. Order:
// temperature, top-k, top-p, min-p, then a draw from the kept tokens with a counter-based RNG
// keyed by (seed, step): the same inputs give the same token on the same GPU, always.
// Temperature 0 is greedy: the highest logit, ties to the lowest id.
// out_token points at sample_buffer_bytes() of device memory, zeroed once before the first
// launch (the token first, then the greedy pick's partial results). With step_out, the token
// and next_pos are also written there as the decode graph's inputs {token, position}.
size_t sample_buffer_bytes();
void launch_sample(float* logits, int vocab, const SamplingParams& p, uint64_t step, int32_t* out_token, cudaStream_t stream,
                   int32_t* step_out = nullptr, int32_t next_pos = 0);

// The decode graph's inputs {token, position} written on the stream (a token the host holds;
// launch_sample writes a sampled one itself).
void launch_set_decode_step(int32_t token, int32_t pos, int32_t* step, cudaStream_t stream);

}  // namespace orcd
