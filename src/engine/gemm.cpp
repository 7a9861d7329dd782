#include "engine/gemm.h"

#include <cublas_v2.h>

#include <string>

#include "common/cuda_check.h"

namespace orcd {
namespace {

void cublas_check(cublasStatus_t st, const char* call) {
  if (st == CUBLAS_STATUS_SUCCESS) return;
  // Allocation failures keep CUDA's out-of-memory code so callers treat them alike.
  const cudaError_t code = st == CUBLAS_STATUS_ALLOC_FAILED ? cudaErrorMemoryAllocation : cudaErrorUnknown;
  throw CudaError(code, std::string("cuBLAS call ") + call + " failed: " + cublasGetStatusString(st));
}

#define CUBLAS_CHECK(call) cublas_check((call), #call)

}  // namespace

TensorCoreGemm::TensorCoreGemm(cudaStream_t stream, void* workspace, size_t workspace_bytes) : stream_(stream) {
  CUBLAS_CHECK(cublasCreate(&handle_));
  try {
    CUBLAS_CHECK(cublasSetStream(handle_, stream));
    CUBLAS_CHECK(cublasSetWorkspace(handle_, workspace, workspace_bytes));
  } catch (...) {
    cublasDestroy(handle_);
    throw;
  }
}

TensorCoreGemm::~TensorCoreGemm() {
  if (handle_) cublasDestroy(handle_);
}

void TensorCoreGemm::run(const QMatrix& w, const __half* x16, int n_tokens, float* out, bool accumulate, __half* w16_scratch) {
  const __half* a = static_cast<const __half*>(w.data);
  if (w.type != GgmlType::F16 || reinterpret_cast<uintptr_t>(w.data) % 16 != 0 || w.row_bytes != static_cast<size_t>(w.cols) * 2) {
    launch_dequantize_f16(w, w16_scratch, stream_);
    a = w16_scratch;
  }
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  const int m = static_cast<int>(w.rows), k = static_cast<int>(w.cols);
  // Column-major view: W is k x m (lda k), x is k x n (ldb k), out is m x n (ldc m); out = W^T x.
  CUBLAS_CHECK(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, m, n_tokens, k, &alpha, a, CUDA_R_16F, k, x16, CUDA_R_16F, k, &beta, out,
                            CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace orcd
