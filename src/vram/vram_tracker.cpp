#include "vram/vram_tracker.h"

#include <cuda_runtime_api.h>

#include <cstdio>

namespace orcd {

std::string_view vram_purpose_name(VramPurpose p) {
  switch (p) {
    case VramPurpose::weights: return "weights";
    case VramPurpose::kv_cache: return "kv_cache";
    case VramPurpose::workspace: return "workspace";
    case VramPurpose::logits: return "logits";
    case VramPurpose::cublas: return "cublas";
    case VramPurpose::other: return "other";
  }
  return "other";
}

void VramTracker::record(const void* ptr, size_t bytes, VramPurpose purpose, std::string description) {
  std::lock_guard lock(mu_);
  live_[ptr] = VramAllocation{ptr, bytes, purpose, std::move(description)};
}

void VramTracker::forget(const void* ptr) {
  std::lock_guard lock(mu_);
  live_.erase(ptr);
}

size_t VramTracker::total_bytes() const {
  std::lock_guard lock(mu_);
  size_t t = 0;
  for (const auto& [p, a] : live_) t += a.bytes;
  return t;
}

size_t VramTracker::count() const {
  std::lock_guard lock(mu_);
  return live_.size();
}

std::map<VramPurpose, size_t> VramTracker::bytes_by_purpose() const {
  std::lock_guard lock(mu_);
  std::map<VramPurpose, size_t> m;
  for (const auto& [p, a] : live_) m[a.purpose] += a.bytes;
  return m;
}

std::vector<VramAllocation> VramTracker::snapshot() const {
  std::lock_guard lock(mu_);
  std::vector<VramAllocation> v;
  v.reserve(live_.size());
  for (const auto& [p, a] : live_) v.push_back(a);
  return v;
}

std::string VramTracker::report() const {
  const auto by = bytes_by_purpose();
  char line[160];
  std::snprintf(line, sizeof line, "VRAM %.1f MiB in %zu allocations", total_bytes() / 1048576.0, count());
  std::string s = line;
  for (const auto& [purpose, bytes] : by) {
    std::snprintf(line, sizeof line, "; %s %.1f MiB", std::string(vram_purpose_name(purpose)).c_str(), bytes / 1048576.0);
    s += line;
  }
  return s;
}

ResidencyReport VramTracker::verify_residency() const {
  ResidencyReport r;
  for (const auto& a : snapshot()) {
    ++r.checked;
    cudaPointerAttributes attr{};
    const cudaError_t err = cudaPointerGetAttributes(&attr, a.ptr);
    std::string why;
    if (err != cudaSuccess) {
      cudaGetLastError();
      why = std::string("cudaPointerGetAttributes failed: ") + cudaGetErrorName(err);
    } else if (attr.type != cudaMemoryTypeDevice) {
      why = attr.type == cudaMemoryTypeManaged ? "managed (unified) memory"
          : attr.type == cudaMemoryTypeHost    ? "pinned host memory"
                                               : "not CUDA device memory (unregistered host memory)";
    } else if (attr.hostPointer != nullptr) {
      why = "device memory mapped into host address space";
    }
    if (!why.empty()) {
      r.resident = false;
      char buf[96];
      std::snprintf(buf, sizeof buf, "%p (%zu bytes, ", a.ptr, a.bytes);
      r.violations.push_back(std::string(buf) + std::string(vram_purpose_name(a.purpose)) + " '" + a.description + "'): " + why);
    }
  }
  return r;
}

}  // namespace orcd
