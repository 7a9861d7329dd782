// Admission for one GPU: a load (or, later, KV growth) reserves bytes before allocating, then
// commits or releases. Reservations are atomic, so concurrent loads never over-commit; each also
// checks the device's real free memory, since workers in other processes share the card.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

namespace orcd {

class AdmissionLedger;

// Holds reserved (then committed) bytes until destroyed.
class Reservation {
 public:
  Reservation() = default;
  Reservation(Reservation&& o) noexcept { *this = std::move(o); }
  Reservation& operator=(Reservation&& o) noexcept;
  ~Reservation() { release(); }
  void commit();   // the allocation succeeded: the bytes are now held, not pending
  void release();  // gives the bytes back (pending or committed)
  uint64_t bytes() const { return bytes_; }
  bool committed() const { return committed_; }

 private:
  friend class AdmissionLedger;
  AdmissionLedger* ledger_ = nullptr;
  uint64_t bytes_ = 0;
  bool committed_ = false;
};

struct LedgerStats {
  uint64_t total = 0, headroom = 0, committed = 0, pending = 0;
  uint64_t attempts = 0, refusals = 0;
};

class AdmissionLedger {
 public:
  // `device_free` reports the device's real free bytes now (cudaMemGetInfo, or a fake in tests).
  AdmissionLedger(int gpu, uint64_t total_bytes, uint64_t headroom_bytes, std::function<uint64_t()> device_free);

  // Throws InsufficientVramError (needed, free, headroom) when the bytes are not admissible.
  Reservation reserve(uint64_t bytes, const std::string& what);
  LedgerStats stats() const;
  uint64_t headroom() const { return headroom_; }
  int gpu() const { return gpu_; }

 private:
  friend class Reservation;
  void give_back(uint64_t bytes, bool committed);
  const int gpu_;
  const uint64_t total_, headroom_;
  std::function<uint64_t()> device_free_;
  mutable std::mutex mu_;
  uint64_t committed_ = 0, pending_ = 0, attempts_ = 0, refusals_ = 0;
};

// The VRAM a worker never uses: max(10% of total, 2 GiB), or reserved_system_vram when that is
// larger. A smaller reserve (0 included) is honoured only on a GPU the operator declared
// dedicated (allow_shared_gpu = false): a shared card always keeps the floor for its other users.
uint64_t headroom_floor(uint64_t total_bytes);
uint64_t headroom_bytes(uint64_t total_bytes, const uint64_t* reserved_system_vram, bool dedicated);

}  // namespace orcd
