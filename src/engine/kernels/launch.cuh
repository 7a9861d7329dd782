// Kernel launches with programmatic stream serialization (see wait_for_producer in common.cuh),
// for kernels that call kern::wait_for_producer() first. Checked like any launch.
#pragma once
#include <cuda_runtime.h>

#include "common/cuda_check.h"

namespace orcd::kern {

struct LaunchShape {
  dim3 grid, block;
  size_t smem = 0;
  unsigned cluster = 1;  // blocks a thread-block cluster (sm_90), along x
};

template <typename... KArgs, typename... Args>
void launch_pdl(void (*kernel)(KArgs...), const LaunchShape& shape, cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attrs[2]{};
  attrs[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attrs[0].val.programmaticStreamSerializationAllowed = 1;
  attrs[1].id = cudaLaunchAttributeClusterDimension;
  attrs[1].val.clusterDim.x = shape.cluster;
  attrs[1].val.clusterDim.y = 1;
  attrs[1].val.clusterDim.z = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = shape.grid;
  cfg.blockDim = shape.block;
  cfg.dynamicSmemBytes = shape.smem;
  cfg.stream = stream;
  cfg.attrs = attrs;
  cfg.numAttrs = shape.cluster > 1 ? 2 : 1;
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<KArgs>(std::forward<Args>(args))...));
}

template <typename... KArgs, typename... Args>
void launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args&&... args) {
  launch_pdl(kernel, LaunchShape{grid, block, smem}, stream, std::forward<Args>(args)...);
}

}  // namespace orcd::kern
