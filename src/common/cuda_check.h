// One error path for CUDA: every runtime call goes through CUDA_CHECK, which throws a CudaError
// carrying the call, the place and CUDA's own name for the failure.
#pragma once
#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace orcd {

class CudaError : public std::runtime_error {
 public:
  CudaError(cudaError_t code, const std::string& what) : std::runtime_error(what), code_(code) {}
  cudaError_t code() const { return code_; }
  bool is_out_of_memory() const { return code_ == cudaErrorMemoryAllocation; }

 private:
  cudaError_t code_;
};

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line);

}  // namespace orcd

#define CUDA_CHECK(call)                                                               \
  do {                                                                                 \
    const cudaError_t orcd_err_ = (call);                                              \
    if (orcd_err_ != cudaSuccess) ::orcd::throw_cuda_error(orcd_err_, #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: reports bad launch configurations at the launch site.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
