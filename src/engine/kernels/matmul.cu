// Quantized matrix times activations. One warp per weight row; each warp reads its row once
// for a tile of up to kTile tokens, dequantizing in registers. Decode is the n_tokens = 1 case.
#include "common/cuda_check.h"
#include "engine/kernels/kernels.h"
#include "engine/kernels/launch.cuh"
#include "engine/kernels/quant.cuh"

namespace orcd {
namespace {

using kern::kWarp;
constexpr int kTile = 8;
constexpr int kRowsPerBlock = 4;

template <float (*DQ)(const uint8_t*, int64_t)>
__global__ void matmul_kernel(const uint8_t* __restrict__ w, size_t row_bytes, int64_t rows, int64_t cols,
                              const float* __restrict__ x, int n_tokens, float* __restrict__ out) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.y;
  const int t0 = blockIdx.y * kTile;
  if (r >= rows) return;
  const int nt = min(kTile, n_tokens - t0);
  const uint8_t* row = w + r * row_bytes;
  float acc[kTile] = {};
  for (int64_t i = threadIdx.x; i < cols; i += kWarp) {
    const float wv = DQ(row, i);
#pragma unroll
    for (int t = 0; t < kTile; ++t)
      if (t < nt) acc[t] += wv * x[(t0 + t) * cols + i];
  }
#pragma unroll
  for (int t = 0; t < kTile; ++t) {
    const float s = kern::warp_sum(acc[t]);
    if (threadIdx.x == 0 && t < nt) out[(t0 + t) * rows + r] = s;
  }
}

// The same product, eight consecutive weights per lane step (cols % 8 == 0): one scale decode
// per eight weights and 16-byte activation loads.
template <void (*DQ8)(const uint8_t*, int64_t, float*)>
__global__ void matmul8_kernel(const uint8_t* __restrict__ w, size_t row_bytes, int64_t rows, int64_t cols,
                               const float* __restrict__ x, int n_tokens, float* __restrict__ out) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.y;
  const int t0 = blockIdx.y * kTile;
  if (r >= rows) return;
  const int nt = min(kTile, n_tokens - t0);
  const uint8_t* row = w + r * row_bytes;
  float acc[kTile] = {};
  for (int64_t i0 = 8 * threadIdx.x; i0 < cols; i0 += 8 * kWarp) {
    float wv[8];
    DQ8(row, i0, wv);
#pragma unroll
    for (int t = 0; t < kTile; ++t) {
      if (t < nt) {
        const float4* xp = reinterpret_cast<const float4*>(x + (t0 + t) * cols + i0);
        const float4 a = xp[0], b = xp[1];
        acc[t] += wv[0] * a.x + wv[1] * a.y + wv[2] * a.z + wv[3] * a.w + wv[4] * b.x + wv[5] * b.y + wv[6] * b.z + wv[7] * b.w;
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kTile; ++t) {
    const float s = kern::warp_sum(acc[t]);
    if (threadIdx.x == 0 && t < nt) out[(t0 + t) * rows + r] = s;
  }
}

template <typename F>
void dispatch8(const QMatrix& w, F&& f) {
  if (w.layout == WeightLayout::q6_k_groups8) return f.template operator()<kern::dq8_q6_k<true>>();
  const GgmlType type = w.type;
  switch (type) {
    case GgmlType::F32: return f.template operator()<kern::dq8_f32>();
    case GgmlType::F16: return f.template operator()<kern::dq8_f16>();
    case GgmlType::BF16: return f.template operator()<kern::dq8_bf16>();
    case GgmlType::Q8_0: return f.template operator()<kern::dq8_q8_0>();
    case GgmlType::Q4_0: return f.template operator()<kern::dq8_q4_0>();
    case GgmlType::Q4_1: return f.template operator()<kern::dq8_q4_1>();
    case GgmlType::Q5_0: return f.template operator()<kern::dq8_q5_0>();
    case GgmlType::Q5_1: return f.template operator()<kern::dq8_q5_1>();
    case GgmlType::Q4_K: return f.template operator()<kern::dq8_q4_k>();
    case GgmlType::Q5_K: return f.template operator()<kern::dq8_q5_k>();
    case GgmlType::Q6_K: return f.template operator()<kern::dq8_q6_k<false>>();
    default:
      throw std::invalid_argument("tensor type " + std::string(ggml_type_name(type)) + " is not supported by the engine");
  }
}

// Grid (column tiles, tokens): a thread per element, so one row is a single round of loads.
template <float (*DQ)(const uint8_t*, int64_t)>
__global__ void get_rows_kernel(const uint8_t* __restrict__ w, size_t row_bytes, int64_t cols, const int32_t* __restrict__ ids,
                                float* __restrict__ out) {
  kern::wait_for_producer();
  kern::allow_consumer();
  const uint8_t* row = w + static_cast<int64_t>(ids[blockIdx.y]) * row_bytes;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < cols) out[blockIdx.y * cols + i] = DQ(row, i);
}

template <float (*DQ)(const uint8_t*, int64_t)>
__global__ void dequantize_kernel(const uint8_t* __restrict__ w, size_t row_bytes, int64_t cols, float* __restrict__ out) {
  const uint8_t* row = w + static_cast<int64_t>(blockIdx.x) * row_bytes;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) out[blockIdx.x * cols + i] = DQ(row, i);
}

// Eight elements per thread, one 16-byte store (cols % 8 == 0).
template <void (*DQ8)(const uint8_t*, int64_t, float*)>
__global__ void dequantize_f16_kernel(const uint8_t* __restrict__ w, size_t row_bytes, int64_t cols, __half* __restrict__ out) {
  const uint8_t* row = w + static_cast<int64_t>(blockIdx.x) * row_bytes;
  for (int64_t i0 = 8 * static_cast<int64_t>(threadIdx.x); i0 < cols; i0 += 8 * blockDim.x) {
    float v[8];
    DQ8(row, i0, v);
    __align__(16) __half2 h[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) h[k] = __floats2half2_rn(v[2 * k], v[2 * k + 1]);
    *reinterpret_cast<uint4*>(out + blockIdx.x * cols + i0) = *reinterpret_cast<const uint4*>(h);
  }
}

// Calls f.template operator()<DQ>() with the dequantizer of `type`.
template <typename F>
void dispatch(const QMatrix& w, F&& f) {
  if (w.layout == WeightLayout::q6_k_groups8) return f.template operator()<kern::dq_q6_k<true>>();
  const GgmlType type = w.type;
  switch (type) {
    case GgmlType::F32: return f.template operator()<kern::dq_f32>();
    case GgmlType::F16: return f.template operator()<kern::dq_f16>();
    case GgmlType::BF16: return f.template operator()<kern::dq_bf16>();
    case GgmlType::Q8_0: return f.template operator()<kern::dq_q8_0>();
    case GgmlType::Q4_0: return f.template operator()<kern::dq_q4_0>();
    case GgmlType::Q4_1: return f.template operator()<kern::dq_q4_1>();
    case GgmlType::Q5_0: return f.template operator()<kern::dq_q5_0>();
    case GgmlType::Q5_1: return f.template operator()<kern::dq_q5_1>();
    case GgmlType::Q4_K: return f.template operator()<kern::dq_q4_k>();
    case GgmlType::Q5_K: return f.template operator()<kern::dq_q5_k>();
    case GgmlType::Q6_K: return f.template operator()<kern::dq_q6_k<false>>();
    default:
      throw std::invalid_argument("tensor type " + std::string(ggml_type_name(type)) + " is not supported by the engine");
  }
}

}  // namespace

bool matmul_supports(GgmlType t) {
  switch (t) {
    case GgmlType::F32: case GgmlType::F16: case GgmlType::BF16: case GgmlType::Q8_0: case GgmlType::Q4_0:
    case GgmlType::Q4_1: case GgmlType::Q5_0: case GgmlType::Q5_1: case GgmlType::Q4_K: case GgmlType::Q5_K:
    case GgmlType::Q6_K:
      return true;
    default:
      return false;
  }
}

void launch_matmul(const QMatrix& w, const float* x, int n_tokens, float* out, cudaStream_t stream) {
  const dim3 block(kWarp, kRowsPerBlock);
  const dim3 grid(kern::ceil_div(w.rows, kRowsPerBlock), kern::ceil_div(n_tokens, kTile));
  const auto* data = static_cast<const uint8_t*>(w.data);
  // 16-byte activation loads need rows of a multiple of 8 elements and aligned rows of x.
  const bool by8 = w.cols % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                   (w.type != GgmlType::F16 || (reinterpret_cast<uintptr_t>(data) % 16 == 0 && w.row_bytes % 16 == 0)) &&
                   (w.type != GgmlType::F32 || (reinterpret_cast<uintptr_t>(data) % 16 == 0 && w.row_bytes % 16 == 0));
  if (by8) {
    dispatch8(w, [&]<auto DQ8>() { matmul8_kernel<DQ8><<<grid, block, 0, stream>>>(data, w.row_bytes, w.rows, w.cols, x, n_tokens, out); });
  } else {
    dispatch(w, [&]<auto DQ>() { matmul_kernel<DQ><<<grid, block, 0, stream>>>(data, w.row_bytes, w.rows, w.cols, x, n_tokens, out); });
  }
  CUDA_CHECK_LAUNCH();
}

void launch_get_rows(const QMatrix& table, const int32_t* ids, int n, float* out, cudaStream_t stream) {
  if (n == 0) return;
  dispatch(table, [&]<auto DQ>() {
    kern::launch_pdl(get_rows_kernel<DQ>, dim3(kern::ceil_div(table.cols, 256), n), 256, 0, stream, static_cast<const uint8_t*>(table.data),
                     table.row_bytes, table.cols, ids, out);
  });
}

void launch_dequantize(const QMatrix& w, float* out, cudaStream_t stream) {
  dispatch(w, [&]<auto DQ>() {
    dequantize_kernel<DQ><<<static_cast<unsigned>(w.rows), 256, 0, stream>>>(static_cast<const uint8_t*>(w.data), w.row_bytes, w.cols, out);
  });
  CUDA_CHECK_LAUNCH();
}

void launch_dequantize_f16(const QMatrix& w, __half* out, cudaStream_t stream) {
  if (w.cols % 8 != 0) throw std::invalid_argument("dequantize_f16: rows of " + std::to_string(w.cols) + " elements (need a multiple of 8)");
  dispatch8(w, [&]<auto DQ8>() {
    dequantize_f16_kernel<DQ8><<<static_cast<unsigned>(w.rows), 256, 0, stream>>>(static_cast<const uint8_t*>(w.data), w.row_bytes, w.cols, out);
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace orcd
