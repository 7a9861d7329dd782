#include "engine/weight_layout.h"

#include <cstring>
#include <stdexcept>

namespace orcd {

WeightLayout device_layout(GgmlType type, int64_t cols) {
  if (type == GgmlType::Q6_K && cols % (256 * kQ6kGroupBlocks) == 0) return WeightLayout::q6_k_groups8;
  return WeightLayout::ggml;
}

void to_device_layout(WeightLayout layout, std::span<const uint8_t> src, std::span<uint8_t> dst) {
  if (src.size() != dst.size()) throw std::invalid_argument("to_device_layout: sizes differ");
  if (layout == WeightLayout::ggml) {
    std::memcpy(dst.data(), src.data(), src.size());
    return;
  }
  if (src.size() % kQ6kGroupBytes != 0) throw std::invalid_argument("to_device_layout: Q6_K data is not whole groups of 8 blocks");
  for (size_t g = 0; g < src.size(); g += kQ6kGroupBytes)
    for (int j = 0; j < kQ6kGroupBlocks; ++j) {
      const uint8_t* b = src.data() + g + 210 * j;
      std::memcpy(dst.data() + g + kQ6kBodyBytes * j, b, kQ6kBodyBytes);
      std::memcpy(dst.data() + g + kQ6kGroupBlocks * kQ6kBodyBytes + 2 * j, b + kQ6kBodyBytes, 2);
    }
}

}  // namespace orcd
