#include "server/gpu_sharing.h"

#include <unistd.h>

namespace orcd {

SharingAction ContentionPolicy::observe(size_t others, Clock::time_point now) {
  if (others > 0) {
    free_since_.reset();
    if (!busy_since_) busy_since_ = now;
  } else {
    busy_since_.reset();
    if (!free_since_) free_since_ = now;
  }
  if (mode_ == SharingMode::auto_pause || mode_ == SharingMode::dedicated) {
    // Dedicated: the operator said the GPU is not shared, so the worker never runs beside
    // another process; it stops at once and starts again after the grace period.
    const auto wait = mode_ == SharingMode::dedicated ? std::chrono::duration<double>(0) : grace_;
    if (!paused_ && busy_since_ && now - *busy_since_ >= wait) {
      paused_ = true;
      return SharingAction::pause;
    }
    if (paused_ && free_since_ && now - *free_since_ >= grace_) {
      paused_ = false;
      return SharingAction::resume;
    }
    return SharingAction::none;
  }
  // warn: report each change once.
  if (others > 0 && !others_reported_) {
    others_reported_ = true;
    return SharingAction::warn_appeared;
  }
  if (others == 0 && others_reported_) {
    others_reported_ = false;
    return SharingAction::warn_cleared;
  }
  return SharingAction::none;
}

void ContentionPolicy::resume_failed(Clock::time_point now) {
  paused_ = true;
  free_since_ = now;
}

GpuSharingMonitor::GpuSharingMonitor(std::shared_ptr<GpuProcessLister> lister, SharingMode mode, std::chrono::duration<double> interval,
                                     std::chrono::duration<double> grace, Callbacks cb)
    : lister_(std::move(lister)), policy_(mode, grace), interval_(interval), cb_(std::move(cb)) {}

GpuSharingMonitor::~GpuSharingMonitor() { stop(); }

void GpuSharingMonitor::start() { thread_ = std::thread([this] { loop(); }); }

void GpuSharingMonitor::stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void GpuSharingMonitor::loop() {
  const auto self = static_cast<uint32_t>(getpid());
  while (true) {
    {
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, interval_, [&] { return stop_; })) return;
    }
    const auto procs = lister_->list(self);
    if (!procs) {  // NVML hiccup: decide on the next poll
      if (cb_.on_poll_failed) cb_.on_poll_failed();
      continue;
    }
    if (cb_.on_observe) cb_.on_observe(*procs);
    const auto now = ContentionPolicy::Clock::now();
    switch (policy_.observe(procs->size(), now)) {
      case SharingAction::pause:
        if (cb_.on_pause) cb_.on_pause(*procs);
        break;
      case SharingAction::resume:
        if (cb_.on_resume && !cb_.on_resume()) policy_.resume_failed(now);
        break;
      case SharingAction::warn_appeared:
        if (cb_.on_warn) cb_.on_warn(*procs, true);
        break;
      case SharingAction::warn_cleared:
        if (cb_.on_warn) cb_.on_warn(*procs, false);
        break;
      case SharingAction::none:
        break;
    }
  }
}

}  // namespace orcd
