// How quantized weights sit in VRAM when that differs from the GGUF file's layout. Same bits,
// same bytes per row, rearranged at load so that the decode kernels can use 16-byte loads.
#pragma once
#include <cstdint>
#include <span>

#include "gguf/ggml_types.h"

namespace orcd {

enum class WeightLayout : uint8_t {
  ggml,           // as in the file
  q6_k_groups8,   // Q6_K: see below
};

// Q6_K blocks are 210 bytes (128 bytes of low bits, 64 of high bits, 16 scales, then the f16 d),
// so in GGML's layout no block after a row's first is 16-byte aligned. Grouped, each run of 8
// blocks of a row (1,680 bytes, 16-aligned) holds their first 208 bytes back to back, then
// their 8 d values: block j of a group has its quants at 208 j and its d at 1,664 + 2 j.
constexpr int kQ6kGroupBlocks = 8;
constexpr int kQ6kBodyBytes = 208;
constexpr int kQ6kGroupBytes = kQ6kGroupBlocks * 210;

// The layout the engine gives a matrix of this type and row length.
WeightLayout device_layout(GgmlType type, int64_t cols);

// Copies `src` (whole rows in GGML's layout) to `dst` in `layout`; sizes are equal.
void to_device_layout(WeightLayout layout, std::span<const uint8_t> src, std::span<uint8_t> dst);

}  // namespace orcd
