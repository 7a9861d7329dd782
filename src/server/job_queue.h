// Requests between the HTTP threads and the GPU thread: a job's event stream, its cancellation,
// and the bounded FIFO with one running job that a batching scheduler would replace.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "server/api.h"

namespace orcd {

// One request's life: the GPU thread emits events, the HTTP thread sends them on.
class Job {
 public:
  using Clock = std::chrono::steady_clock;
  JobSpec spec;
  std::vector<int32_t> prompt_ids;  // tokenized once, before admission
  Clock::time_point enqueued = Clock::now();
  Clock::time_point deadline = Clock::time_point::max();

  void emit(EventKind kind, nlohmann::json data);
  // Waits up to `wait` for the next event; false on timeout.
  bool next(JobEvent& out, std::chrono::milliseconds wait);
  bool finished() const { return done_.load(); }

  // The first reason given wins; later calls only confirm the cancellation.
  void cancel(const std::string& reason);
  bool cancelled() const { return cancel_.load(); }
  std::string cancel_reason() const;
  const std::atomic<bool>* cancel_flag() const { return &cancel_; }
  bool past_deadline(Clock::time_point now = Clock::now()) const { return now >= deadline; }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<JobEvent> events_;
  std::atomic<bool> done_{false}, cancel_{false};
  std::string cancel_reason_;
};

// FIFO of admitted jobs with at most one running. Every method is thread-safe.
class JobQueue {
 public:
  explicit JobQueue(size_t capacity) : capacity_(capacity) {}

  // Refuses a duplicate job id (409 DUPLICATE_JOB) or a full queue (503 QUEUE_FULL).
  std::optional<ApiError> push(std::shared_ptr<Job> job);
  // Blocks until a job is waiting (and returns it as running) or the queue is closed (nullptr).
  std::shared_ptr<Job> pop();
  void finish(const std::shared_ptr<Job>& job);  // the running job is done

  enum class CancelResult { not_found, cancelling, cancelled };
  // A queued job is removed and gets its terminal error here; a running one is flagged.
  CancelResult cancel(const std::string& job_id, const std::string& reason);
  void cancel_all(const std::string& reason);
  void close();  // pop() returns nullptr from now on
  // Waits until nothing is queued or running, or until `deadline`; true when idle.
  bool wait_idle(std::chrono::steady_clock::time_point deadline);

  size_t depth() const;
  std::optional<std::string> running_id() const;
  bool idle() const;

 private:
  const size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::shared_ptr<Job> running_;
  std::map<std::string, std::weak_ptr<Job>> active_;
  bool closed_ = false;
};

}  // namespace orcd
