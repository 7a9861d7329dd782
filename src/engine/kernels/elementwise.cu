// RMSNorm and the element-wise steps between the matrix products.
#include "common/cuda_check.h"
#include "engine/kernels/common.cuh"
#include "engine/kernels/kernels.h"

namespace orcd {
namespace {

// Outputs as float, or as f16 for the tensor-core prefill (which then needs no separate pass).
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }

template <class Out>
__global__ void rmsnorm_kernel(const float* __restrict__ x, const float* __restrict__ w, Out* __restrict__ out, int dim, float eps) {
  __shared__ float scratch[32];
  const float* xr = x + static_cast<int64_t>(blockIdx.x) * dim;
  Out* orow = out + static_cast<int64_t>(blockIdx.x) * dim;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  ss = kern::block_sum(ss, scratch);
  const float inv = rsqrtf(ss / dim + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) store(orow + i, xr[i] * inv * w[i]);
}

__global__ void add_bias_kernel(float* x, const float* __restrict__ bias, int64_t n, int dim) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] += bias[i % dim];
}

__global__ void add_kernel(float* x, const float* __restrict__ y, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] += y[i];
}

template <class Out>
__global__ void swiglu_kernel(const float* __restrict__ g, const float* __restrict__ u, Out* __restrict__ out, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) {
    const float gv = g[i];
    store(out + i, gv / (1.0f + expf(-gv)) * u[i]);
  }
}

__global__ void to_half_kernel(const float* __restrict__ x, __half* __restrict__ out, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __float2half_rn(x[i]);
}

}  // namespace

void launch_to_half(const float* x, __half* out, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  to_half_kernel<<<kern::ceil_div(n, 256), 256, 0, stream>>>(x, out, n);
  CUDA_CHECK_LAUNCH();
}

void launch_rmsnorm(const float* x, const float* weight, float* out, int n_rows, int dim, float eps, cudaStream_t stream) {
  if (n_rows == 0) return;
  rmsnorm_kernel<<<n_rows, 256, 0, stream>>>(x, weight, out, dim, eps);
  CUDA_CHECK_LAUNCH();
}

void launch_rmsnorm(const float* x, const float* weight, __half* out, int n_rows, int dim, float eps, cudaStream_t stream) {
  if (n_rows == 0) return;
  rmsnorm_kernel<<<n_rows, 256, 0, stream>>>(x, weight, out, dim, eps);
  CUDA_CHECK_LAUNCH();
}

void launch_add_bias(float* x, const float* bias, int n_rows, int dim, cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(n_rows) * dim;
  if (n == 0) return;
  add_bias_kernel<<<kern::ceil_div(n, 256), 256, 0, stream>>>(x, bias, n, dim);
  CUDA_CHECK_LAUNCH();
}

void launch_add(float* x, const float* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  add_kernel<<<kern::ceil_div(n, 256), 256, 0, stream>>>(x, y, n);
  CUDA_CHECK_LAUNCH();
}

void launch_swiglu(const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  swiglu_kernel<<<kern::ceil_div(n, 256), 256, 0, stream>>>(gate, up, out, n);
  CUDA_CHECK_LAUNCH();
}

void launch_swiglu(const float* gate, const float* up, __half* out, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  swiglu_kernel<<<kern::ceil_div(n, 256), 256, 0, stream>>>(gate, up, out, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace orcd
