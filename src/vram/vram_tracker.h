// Every byte of VRAM the worker holds is recorded here with its purpose. The tracker is what
// /health, /metrics and the residency monitor read.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace orcd {

enum class VramPurpose { weights, kv_cache, workspace, logits, cublas, other };
std::string_view vram_purpose_name(VramPurpose p);

struct VramAllocation {
  const void* ptr = nullptr;
  size_t bytes = 0;
  VramPurpose purpose = VramPurpose::other;
  std::string description;
};

struct ResidencyReport {
  bool resident = true;   // every allocation is device memory with no host mapping
  size_t checked = 0;
  std::vector<std::string> violations;  // one line per offending allocation
};

class VramTracker {
 public:
  void record(const void* ptr, size_t bytes, VramPurpose purpose, std::string description);
  void forget(const void* ptr);

  size_t total_bytes() const;
  size_t count() const;
  std::map<VramPurpose, size_t> bytes_by_purpose() const;
  std::vector<VramAllocation> snapshot() const;
  std::string report() const;  // human-readable: totals then one line per purpose

  // Asks CUDA about every live pointer: it must be device memory with no host pointer.
  // Managed, pinned/mapped host or unregistered memory is a violation.
  ResidencyReport verify_residency() const;

 private:
  mutable std::mutex mu_;
  std::map<const void*, VramAllocation> live_;
};

}  // namespace orcd
