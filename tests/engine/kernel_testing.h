// Helpers shared by the kernel tests: device buffers, random weights in every GGML format, and
// float64 references.
#pragma once
#include <cuda_fp16.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "common/cuda_check.h"
#include "engine/cpu_reference.h"
#include "engine/kernels/kernels.h"
#include "vram/device_allocator.h"

namespace orcd::kt {

struct Gpu {
  VramTracker tracker;
  DeviceAllocator alloc{0, tracker};
  template <typename T>
  DeviceBuffer upload(const std::vector<T>& v) {
    DeviceBuffer b = alloc.alloc(v.size() * sizeof(T), VramPurpose::workspace, "test input");
    CUDA_CHECK(cudaMemcpy(b.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    return b;
  }
  // Weights of type t (whole rows of `cols` in GGML's layout) as the engine's loader puts them in
  // VRAM (weight_layout.h); as_matrix gives the matching layout.
  DeviceBuffer upload_weights(GgmlType t, int64_t cols, const std::vector<uint8_t>& host) {
    std::vector<uint8_t> dev(host.size());
    to_device_layout(device_layout(t, cols), host, dev);
    return upload(dev);
  }
  // A buffer of n floats filled with NaN, so unwritten outputs show up.
  DeviceBuffer poisoned(size_t n) {
    DeviceBuffer b = alloc.alloc(n * 4, VramPurpose::workspace, "test output");
    CUDA_CHECK(cudaMemset(b.get(), 0xFF, n * 4));
    return b;
  }
  template <typename T>
  std::vector<T> download(const DeviceBuffer& b, size_t n) {
    CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<T> v(n);
    CUDA_CHECK(cudaMemcpy(v.data(), b.get(), n * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }
};

inline std::mt19937& rng() {
  static std::mt19937 r(20261123);
  return r;
}
inline float uniform(float a, float b) { return std::uniform_real_distribution<float>(a, b)(rng()); }
inline std::vector<float> random_floats(size_t n, float a = -1, float b = 1) {
  std::vector<float> v(n);
  for (auto& x : v) x = uniform(a, b);
  return v;
}

inline void put_half(uint8_t* p, float f) {
  const __half h = __float2half(f);
  std::memcpy(p, &h, 2);
}

// Random bytes shaped as valid blocks: quant bits random, scale fields finite halves.
inline std::vector<uint8_t> random_blocks(GgmlType t, int64_t rows, int64_t cols) {
  const auto& tr = ggml_traits(t);
  const size_t row_bytes = ggml_row_bytes(t, cols);
  std::vector<uint8_t> v(rows * row_bytes);
  for (auto& b : v) b = static_cast<uint8_t>(rng()());
  if (t == GgmlType::F32) {
    for (size_t i = 0; i < v.size() / 4; ++i) {
      const float f = uniform(-2, 2);
      std::memcpy(v.data() + 4 * i, &f, 4);
    }
    return v;
  }
  if (t == GgmlType::F16) {
    for (size_t i = 0; i < v.size() / 2; ++i) put_half(v.data() + 2 * i, uniform(-2, 2));
    return v;
  }
  if (t == GgmlType::BF16) {
    for (size_t i = 0; i < v.size() / 2; ++i) {
      const float f = uniform(-2, 2);
      uint32_t u;
      std::memcpy(&u, &f, 4);
      const uint16_t h = static_cast<uint16_t>(u >> 16);
      std::memcpy(v.data() + 2 * i, &h, 2);
    }
    return v;
  }
  for (size_t b = 0; b < v.size() / tr.type_size; ++b) {
    uint8_t* blk = v.data() + b * tr.type_size;
    switch (t) {
      case GgmlType::Q8_0: case GgmlType::Q4_0: case GgmlType::Q5_0: put_half(blk, uniform(-0.05f, 0.05f)); break;
      case GgmlType::Q4_1: case GgmlType::Q5_1: put_half(blk, uniform(0, 0.05f)); put_half(blk + 2, uniform(-0.5f, 0)); break;
      case GgmlType::Q4_K: case GgmlType::Q5_K: put_half(blk, uniform(0, 0.01f)); put_half(blk + 2, uniform(0, 0.01f)); break;
      case GgmlType::Q6_K: put_half(blk + 208, uniform(-0.002f, 0.002f)); break;
      default: break;
    }
  }
  return v;
}

inline double rel_err(const std::vector<float>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;  // NaN-poisoned output left unwritten
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / den);
}

inline QMatrix as_matrix(const DeviceBuffer& b, GgmlType t, int64_t rows, int64_t cols) {
  return QMatrix{b.get(), t, rows, cols, ggml_row_bytes(t, cols), device_layout(t, cols)};
}

inline const GgmlType kQ8Types[] = {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

// W x in float64 over the dequantized stored weights.
inline std::vector<double> product64(GgmlType t, const std::vector<uint8_t>& w, int64_t rows, int64_t cols, const std::vector<float>& x) {
  const auto wf = ref::dequantize(t, w.data(), rows * cols);
  std::vector<double> y(rows);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < cols; ++i) y[r] += static_cast<double>(wf[r * cols + i]) * x[i];
  return y;
}

// A Q8Act buffer dequantizes to `want` within 1/64516 of each 32-block's largest magnitude, and
// holds each block's exact integer sum.
inline void expect_q8_holds(const std::vector<int8_t>& bytes, const std::vector<float>& want) {
  const size_t n = want.size();
  for (size_t b = 0; b < n / 32; ++b) {
    float scale;
    std::memcpy(&scale, bytes.data() + 2 * n + 4 * b, 4);
    double amax = 0;
    for (size_t i = 32 * b; i < 32 * b + 32; ++i) amax = std::max(amax, std::abs(static_cast<double>(want[i])));
    int64_t sum = 0;
    for (size_t i = 32 * b; i < 32 * b + 32; ++i) {
      ASSERT_LE(std::abs(scale * (254.0 * bytes[i] + bytes[n + i]) - want[i]), amax / 64516 * 1.01 + 1e-30) << "element " << i;
      sum += 254 * bytes[i] + bytes[n + i];
    }
    float stored_sum;  // the block's integer sum, for the K-quants' min terms
    std::memcpy(&stored_sum, bytes.data() + 2 * n + 4 * (n / 32) + 4 * b, 4);
    ASSERT_EQ(stored_sum, static_cast<float>(sum)) << "block " << b;
  }
}

}  // namespace orcd::kt
