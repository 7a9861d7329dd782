#include "vram/staging.h"

#include <cstring>

#include "common/cuda_check.h"

namespace orcd {

StagingUploader::StagingUploader(size_t chunk_bytes) : chunk_(chunk_bytes) {
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  for (int i = 0; i < 2; ++i) {
    // Allowed here only: staging for uploads, freed in the destructor (see tests/vram/test_banned_calls).
    CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&pinned_[i]), chunk_));
    CUDA_CHECK(cudaEventCreateWithFlags(&done_[i], cudaEventDisableTiming));
  }
}

StagingUploader::~StagingUploader() {
  if (stream_) cudaStreamSynchronize(stream_);
  for (int i = 0; i < 2; ++i) {
    if (pinned_[i]) cudaFreeHost(pinned_[i]);
    if (done_[i]) cudaEventDestroy(done_[i]);
  }
  if (stream_) cudaStreamDestroy(stream_);
}

void StagingUploader::upload(void* dst, const uint8_t* src, size_t bytes) {
  auto* d = static_cast<uint8_t*>(dst);
  for (size_t off = 0; off < bytes; off += chunk_) {
    const size_t n = std::min(chunk_, bytes - off);
    const int slot = next_;
    next_ ^= 1;
    CUDA_CHECK(cudaEventSynchronize(done_[slot]));  // the copy that last used this slot is done
    std::memcpy(pinned_[slot], src + off, n);
    CUDA_CHECK(cudaMemcpyAsync(d + off, pinned_[slot], n, cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaEventRecord(done_[slot], stream_));
  }
}

void StagingUploader::finish() { CUDA_CHECK(cudaStreamSynchronize(stream_)); }

}  // namespace orcd
