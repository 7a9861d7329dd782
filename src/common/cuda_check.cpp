#include "common/cuda_check.h"

namespace orcd {

void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  std::string where(file);
  if (auto slash = where.rfind("/src/"); slash != std::string::npos) where = where.substr(slash + 1);
  throw CudaError(err, std::string(cudaGetErrorName(err)) + " (" + cudaGetErrorString(err) + ") in " + call + " at " + where + ":" +
                           std::to_string(line));
}

}  // namespace orcd
