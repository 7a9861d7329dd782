// The refusal every VRAM admission throws: what was needed, what was free, what is kept back.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

namespace orcd {

class InsufficientVramError : public std::runtime_error {
 public:
  InsufficientVramError(const std::string& what, uint64_t needed, uint64_t free_bytes, uint64_t headroom)
      : std::runtime_error(what), needed_(needed), free_(free_bytes), headroom_(headroom) {}
  uint64_t needed() const { return needed_; }
  uint64_t free_bytes() const { return free_; }
  uint64_t headroom() const { return headroom_; }

 private:
  uint64_t needed_, free_, headroom_;
};

}  // namespace orcd
