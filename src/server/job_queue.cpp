#include "server/job_queue.h"

namespace orcd {

void Job::emit(EventKind kind, nlohmann::json data) {
  {
    std::lock_guard lock(mu_);
    if (done_) return;  // one terminal event, then nothing
    events_.push_back({kind, std::move(data)});
    if (events_.back().terminal()) done_ = true;
  }
  cv_.notify_all();
}

bool Job::next(JobEvent& out, std::chrono::milliseconds wait) {
  std::unique_lock lock(mu_);
  if (!cv_.wait_for(lock, wait, [&] { return !events_.empty(); })) return false;
  out = std::move(events_.front());
  events_.pop_front();
  return true;
}

void Job::cancel(const std::string& reason) {
  std::lock_guard lock(mu_);
  if (cancel_reason_.empty()) cancel_reason_ = reason;
  cancel_ = true;
}

std::string Job::cancel_reason() const {
  std::lock_guard lock(mu_);
  return cancel_reason_;
}

std::optional<ApiError> JobQueue::push(std::shared_ptr<Job> job) {
  {
    std::lock_guard lock(mu_);
    if (closed_) return ApiError{503, "SHUTTING_DOWN", "the worker is shutting down", "", {{"retry_after", 5}}};
    const std::string& id = job->spec.job_id;
    if (auto it = active_.find(id); it != active_.end() && !it->second.expired())
      return ApiError{409, "DUPLICATE_JOB", "this job_id is already queued or running", "job_id", {}};
    if (running_ && queue_.size() >= capacity_)
      return ApiError{503, "QUEUE_FULL", "the queue holds " + std::to_string(queue_.size()) + " requests (queue_size); try again later", "",
                      {{"retry_after", 2}}};
    active_[id] = job;
    queue_.push_back(std::move(job));
  }
  cv_.notify_all();
  return std::nullopt;
}

std::shared_ptr<Job> JobQueue::pop() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return closed_ || !queue_.empty(); });
  if (closed_) return nullptr;
  running_ = queue_.front();
  queue_.pop_front();
  return running_;
}

void JobQueue::finish(const std::shared_ptr<Job>& job) {
  {
    std::lock_guard lock(mu_);
    if (running_ == job) running_ = nullptr;
    active_.erase(job->spec.job_id);
  }
  cv_.notify_all();
}

JobQueue::CancelResult JobQueue::cancel(const std::string& id, const std::string& reason) {
  std::shared_ptr<Job> queued;
  CancelResult result = CancelResult::not_found;
  {
    std::lock_guard lock(mu_);
    if (running_ && running_->spec.job_id == id) {
      running_->cancel(reason);
      result = CancelResult::cancelling;
    }
    for (auto it = queue_.begin(); it != queue_.end(); ++it)
      if ((*it)->spec.job_id == id) {
        queued = *it;
        queue_.erase(it);
        active_.erase(id);
        result = CancelResult::cancelled;
        break;
      }
  }
  if (queued) {
    queued->cancel(reason);
    queued->emit(EventKind::error, {{"code", queued->past_deadline() ? "DEADLINE_EXCEEDED" : "CANCELLED"}, {"message", reason + " (before it started)"}});
    cv_.notify_all();
  }
  return result;
}

void JobQueue::cancel_all(const std::string& reason) {
  std::deque<std::shared_ptr<Job>> dropped;
  {
    std::lock_guard lock(mu_);
    dropped.swap(queue_);
    for (const auto& j : dropped) active_.erase(j->spec.job_id);
    if (running_) running_->cancel(reason);
  }
  for (auto& j : dropped) {
    j->cancel(reason);
    j->emit(EventKind::error, {{"code", "CANCELLED"}, {"message", reason}});
  }
  cv_.notify_all();
}

void JobQueue::close() {
  {
    std::lock_guard lock(mu_);
    closed_ = true;
  }
  cv_.notify_all();
}

bool JobQueue::wait_idle(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(mu_);
  return cv_.wait_until(lock, deadline, [&] { return !running_ && queue_.empty(); });
}

size_t JobQueue::depth() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

std::optional<std::string> JobQueue::running_id() const {
  std::lock_guard lock(mu_);
  if (!running_) return std::nullopt;
  return running_->spec.job_id;
}

bool JobQueue::idle() const {
  std::lock_guard lock(mu_);
  return !running_ && queue_.empty();
}

}  // namespace orcd
