#include "vram/device_allocator.h"

#include <cuda_runtime_api.h>

#include <algorithm>

#include "common/cuda_check.h"

namespace orcd {

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    reset();
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    owner_ = o.owner_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
    o.owner_ = nullptr;
  }
  return *this;
}

void DeviceBuffer::reset() {
  if (ptr_ && owner_) owner_->release(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
  owner_ = nullptr;
}

DeviceBuffer DeviceAllocator::alloc(size_t bytes, VramPurpose purpose, std::string description) {
  const size_t n = padded(bytes == 0 ? 1 : bytes);
  if (limit_ && tracker_->total_bytes() + n > limit_)
    throw VramOomError("VRAM_OOM: " + std::to_string(n) + " bytes for " + std::string(vram_purpose_name(purpose)) + " '" +
                           description + "' would pass this worker's VRAM limit of " + std::to_string(limit_) +
                           " bytes; held: " + tracker_->report(),
                       n, limit_ - std::min(limit_, tracker_->total_bytes()));
  CUDA_CHECK(cudaSetDevice(device_));
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, n);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    throw VramOomError("VRAM_OOM: cudaMalloc of " + std::to_string(n) + " bytes for " + std::string(vram_purpose_name(purpose)) +
                           " '" + description + "' failed; " + std::to_string(free_b) + " bytes free on device " +
                           std::to_string(device_) + "; held: " + tracker_->report(),
                       n, free_b);
  }
  CUDA_CHECK(err);
  tracker_->record(p, n, purpose, std::move(description));
  return DeviceBuffer(p, n, this);
}

void DeviceAllocator::release(void* p) {
  tracker_->forget(p);
  cudaSetDevice(device_);
  cudaFree(p);  // errors here (device lost) cannot be acted on; the tracker is already clean
}

}  // namespace orcd
