// Sharing the GPU with other programs: what to do when other processes appear on our GPU.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "vram/nvml.h"

namespace orcd {

enum class SharingMode {
  dedicated,   // allow_shared_gpu = false: refuse to start beside others, pause at once if they come later
  auto_pause,  // give the GPU back while others use it, take it again when they are gone
  warn,        // only report them
};

enum class SharingAction { none, pause, resume, warn_appeared, warn_cleared };

// The decision logic alone, fed observations and a clock: easy to test.
class ContentionPolicy {
 public:
  using Clock = std::chrono::steady_clock;
  ContentionPolicy(SharingMode mode, std::chrono::duration<double> grace) : mode_(mode), grace_(grace) {}
  SharingAction observe(size_t other_processes, Clock::time_point now);
  bool paused() const { return paused_; }
  // A resume that failed (e.g. not enough VRAM): stay paused, try again after another grace period.
  void resume_failed(Clock::time_point now);

 private:
  SharingMode mode_;
  std::chrono::duration<double> grace_;
  bool paused_ = false, others_reported_ = false;
  std::optional<Clock::time_point> busy_since_, free_since_;
};

// Polls a process lister every `interval` and calls back on actions; `on_observe` sees every poll.
class GpuSharingMonitor {
 public:
  struct Callbacks {
    std::function<void(const std::vector<GpuProcess>&)> on_observe;
    std::function<void(const std::vector<GpuProcess>&)> on_pause;
    std::function<bool()> on_resume;  // false: resume failed, stay paused
    std::function<void(const std::vector<GpuProcess>&, bool appeared)> on_warn;
    std::function<void()> on_poll_failed;  // the lister could not say (NVML error)
  };
  GpuSharingMonitor(std::shared_ptr<GpuProcessLister> lister, SharingMode mode, std::chrono::duration<double> interval,
                    std::chrono::duration<double> grace, Callbacks cb);
  ~GpuSharingMonitor();
  void start();
  void stop();

 private:
  void loop();
  std::shared_ptr<GpuProcessLister> lister_;
  ContentionPolicy policy_;
  std::chrono::duration<double> interval_;
  Callbacks cb_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
};

}  // namespace orcd
