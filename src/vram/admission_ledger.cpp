#include "vram/admission_ledger.h"

#include <algorithm>
#include <cstdio>

#include "vram/vram_errors.h"

namespace orcd {

uint64_t headroom_floor(uint64_t total) { return std::max<uint64_t>(total / 10, 2ull << 30); }

uint64_t headroom_bytes(uint64_t total, const uint64_t* reserved, bool dedicated) {
  if (reserved && dedicated) return *reserved;
  return std::max(headroom_floor(total), reserved ? *reserved : 0);
}

Reservation& Reservation::operator=(Reservation&& o) noexcept {
  if (this != &o) {
    release();
    ledger_ = o.ledger_;
    bytes_ = o.bytes_;
    committed_ = o.committed_;
    o.ledger_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

void Reservation::commit() {
  if (!ledger_ || committed_) return;
  std::lock_guard lock(ledger_->mu_);
  ledger_->pending_ -= bytes_;
  ledger_->committed_ += bytes_;
  committed_ = true;
}

void Reservation::release() {
  if (!ledger_) return;
  ledger_->give_back(bytes_, committed_);
  ledger_ = nullptr;
  bytes_ = 0;
  committed_ = false;
}

AdmissionLedger::AdmissionLedger(int gpu, uint64_t total, uint64_t headroom, std::function<uint64_t()> device_free)
    : gpu_(gpu), total_(total), headroom_(headroom), device_free_(std::move(device_free)) {}

Reservation AdmissionLedger::reserve(uint64_t bytes, const std::string& what) {
  std::lock_guard lock(mu_);
  ++attempts_;
  const uint64_t budget = total_ > headroom_ ? total_ - headroom_ : 0;
  // Pending reservations are not allocated yet, so the device's free figure does not show them.
  const uint64_t free_now = device_free_();
  const uint64_t usable_now = free_now > headroom_ + pending_ ? free_now - headroom_ - pending_ : 0;
  const uint64_t room = std::min(budget > committed_ + pending_ ? budget - committed_ - pending_ : 0, usable_now);
  if (bytes > room) {
    ++refusals_;
    char msg[512];
    std::snprintf(msg, sizeof msg,
                  "POOL_UNAVAILABLE (insufficient VRAM): %s needs %.1f MiB but GPU %d can admit %.1f MiB (%.1f MiB free, %.1f MiB kept as headroom, "
                  "%.1f MiB held and %.1f MiB reserved by this worker)",
                  what.c_str(), bytes / 1048576.0, gpu_, room / 1048576.0, free_now / 1048576.0, headroom_ / 1048576.0,
                  committed_ / 1048576.0, pending_ / 1048576.0);
    throw InsufficientVramError(msg, bytes, free_now, headroom_);
  }
  pending_ += bytes;
  Reservation r;
  r.ledger_ = this;
  r.bytes_ = bytes;
  return r;
}

void AdmissionLedger::give_back(uint64_t bytes, bool committed) {
  std::lock_guard lock(mu_);
  (committed ? committed_ : pending_) -= bytes;
}

LedgerStats AdmissionLedger::stats() const {
  std::lock_guard lock(mu_);
  return {total_, headroom_, committed_, pending_, attempts_, refusals_};
}

}  // namespace orcd
