// Pinned host buffer used only while a model loads, to copy weights from the page cache to VRAM
// in bounded chunks. This is the one place pinned host memory exists; it is freed before the
// model is ready, so no live tensor ever sits in host memory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>

#include <cuda_runtime_api.h>

namespace orcd {

class StagingUploader {
 public:
  explicit StagingUploader(size_t chunk_bytes = 64u << 20);
  ~StagingUploader();
  StagingUploader(const StagingUploader&) = delete;
  StagingUploader& operator=(const StagingUploader&) = delete;

  // Copies `bytes` from host `src` (e.g. an mmap'd file) to device `dst`, two chunks in flight.
  void upload(void* dst, const uint8_t* src, size_t bytes);
  void finish();  // waits for outstanding copies

 private:
  size_t chunk_;
  uint8_t* pinned_[2] = {nullptr, nullptr};
  cudaEvent_t done_[2] = {nullptr, nullptr};
  cudaStream_t stream_ = nullptr;
  int next_ = 0;
};

}  // namespace orcd
