// The device layouts of weights (weight_layout.h): which matrices take them, and that every
// byte of every block lands where the kernels read it.
#include <gtest/gtest.h>

#include <numeric>
#include <random>
#include <vector>

#include "engine/weight_layout.h"

using namespace orcd;

TEST(WeightLayout, OnlyQ6KRowsOfWholeGroupsAreRegrouped) {
  EXPECT_EQ(device_layout(GgmlType::Q6_K, 2048), WeightLayout::q6_k_groups8);
  EXPECT_EQ(device_layout(GgmlType::Q6_K, 14336), WeightLayout::q6_k_groups8);
  EXPECT_EQ(device_layout(GgmlType::Q6_K, 3584), WeightLayout::ggml);  // 14 blocks: not whole groups
  EXPECT_EQ(device_layout(GgmlType::Q6_K, 256), WeightLayout::ggml);
  EXPECT_EQ(device_layout(GgmlType::Q4_K, 4096), WeightLayout::ggml);
  EXPECT_EQ(device_layout(GgmlType::Q8_0, 4096), WeightLayout::ggml);
}

TEST(WeightLayout, Q6KGroupsKeepEveryBlockWhole) {
  const int rows = 3, blocks = 16;  // two groups a row
  std::vector<uint8_t> src(static_cast<size_t>(rows) * blocks * 210), dst(src.size());
  std::mt19937 rng(9);
  for (auto& b : src) b = static_cast<uint8_t>(rng());
  to_device_layout(WeightLayout::q6_k_groups8, src, dst);
  for (int r = 0; r < rows; ++r)
    for (int n = 0; n < blocks; ++n) {
      const uint8_t* block = src.data() + (static_cast<size_t>(r) * blocks + n) * 210;
      const uint8_t* group = dst.data() + static_cast<size_t>(r) * blocks * 210 + (n / 8) * kQ6kGroupBytes;
      const int j = n % 8;
      ASSERT_TRUE(std::equal(block, block + 208, group + 208 * j)) << "row " << r << " block " << n;
      ASSERT_EQ(group[1664 + 2 * j], block[208]);
      ASSERT_EQ(group[1664 + 2 * j + 1], block[209]);
    }
  // A permutation: the same multiset of bytes, and 16-byte aligned quants in every block.
  EXPECT_EQ(std::accumulate(src.begin(), src.end(), 0ull), std::accumulate(dst.begin(), dst.end(), 0ull));
  static_assert(kQ6kGroupBytes % 16 == 0 && kQ6kBodyBytes % 16 == 0);
}

TEST(WeightLayout, RefusesPartialGroupsAndMismatchedSizes) {
  std::vector<uint8_t> src(7 * 210), dst(7 * 210), small(10);
  EXPECT_THROW(to_device_layout(WeightLayout::q6_k_groups8, src, dst), std::invalid_argument);
  EXPECT_THROW(to_device_layout(WeightLayout::ggml, src, small), std::invalid_argument);
  to_device_layout(WeightLayout::ggml, src, dst);  // the file's layout is a plain copy
  EXPECT_EQ(src, dst);
}
