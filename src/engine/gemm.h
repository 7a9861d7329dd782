// Prefill products on tensor cores through cuBLAS: out (+)= W x for a batch of tokens. W is
// dequantized to f16 one matrix at a time into a scratch buffer (F16 weights are used in place),
// x arrives as f16, accumulation is f32. cuBLAS gets its workspace from the engine's allocator,
// so it allocates no VRAM of its own during a product.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include "engine/kernels/kernels.h"

struct cublasContext;

namespace orcd {

class TensorCoreGemm {
 public:
  TensorCoreGemm(cudaStream_t stream, void* workspace, size_t workspace_bytes);
  ~TensorCoreGemm();
  TensorCoreGemm(const TensorCoreGemm&) = delete;
  TensorCoreGemm& operator=(const TensorCoreGemm&) = delete;

  // out[t][r] (+)= sum_i W[r][i] x16[t][i]; w16_scratch holds at least rows * cols halves.
  void run(const QMatrix& w, const __half* x16, int n_tokens, float* out, bool accumulate, __half* w16_scratch);

 private:
  cublasContext* handle_ = nullptr;
  cudaStream_t stream_;
};

}  // namespace orcd
