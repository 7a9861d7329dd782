// How one request picks its tokens; the sampling kernels and the request parsers both use it.
#pragma once
#include <cstdint>

namespace orcd {

struct SamplingParams {
  float temperature = 0.8f;        // 0: greedy
  int top_k = 40;                  // 0: off
  float top_p = 0.95f;             // 1: off
  float min_p = 0.05f;             // 0: off
  float repetition_penalty = 1.0f; // 1: off
  int penalty_last_n = 64;         // tokens of history the penalty looks at
  uint64_t seed = 0;
};

}  // namespace orcd
