// The one way to get VRAM. Every allocation is cudaMalloc'd here, padded to 256 bytes and
// recorded in the VramTracker with its purpose; DeviceBuffer gives it back when it dies.
#pragma once
#include <cstddef>
#include <stdexcept>
#include <string>

#include "gguf/model_info.h"
#include "vram/vram_tracker.h"

namespace orcd {

// A device allocation failed: what was asked, what CUDA said was free, what we held.
class VramOomError : public std::runtime_error {
 public:
  VramOomError(const std::string& what, size_t requested, size_t free_bytes)
      : std::runtime_error(what), requested_(requested), free_(free_bytes) {}
  size_t requested() const { return requested_; }
  size_t free_bytes() const { return free_; }

 private:
  size_t requested_, free_;
};

class DeviceAllocator;

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { reset(); }

  void reset();
  void* get() const { return ptr_; }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }
  explicit operator bool() const { return ptr_ != nullptr; }

 private:
  friend class DeviceAllocator;
  DeviceBuffer(void* p, size_t b, DeviceAllocator* owner) : ptr_(p), bytes_(b), owner_(owner) {}
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  DeviceAllocator* owner_ = nullptr;
};

class DeviceAllocator {
 public:
  static constexpr size_t kAlign = kVramAllocAlign;  // what VRAM estimates pad to, too

  // `limit_bytes` caps what this allocator may hold in total (0: no cap beyond the device).
  DeviceAllocator(int device, VramTracker& tracker, size_t limit_bytes = 0)
      : device_(device), tracker_(&tracker), limit_(limit_bytes) {}
  DeviceAllocator(const DeviceAllocator&) = delete;
  DeviceAllocator& operator=(const DeviceAllocator&) = delete;

  // Throws VramOomError when CUDA has no room, CudaError for anything else.
  DeviceBuffer alloc(size_t bytes, VramPurpose purpose, std::string description);

  int device() const { return device_; }
  VramTracker& tracker() const { return *tracker_; }
  static size_t padded(size_t bytes) { return vram_padded(bytes); }

 private:
  friend class DeviceBuffer;
  void release(void* p);
  int device_;
  VramTracker* tracker_;
  size_t limit_;
};

}  // namespace orcd
