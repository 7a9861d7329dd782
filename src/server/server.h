// The worker's HTTP daemon: one model, one GPU thread, a bounded queue in front of it.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "server/api.h"
#include "server/backend.h"
#include "server/config.h"
#include "server/metrics.h"
#include "server/narrator.h"

namespace httplib {
class Server;
}

namespace orcd {

enum class WorkerState { loading, healthy, unhealthy, paused, stopping };
std::string_view worker_state_name(WorkerState s);

// One request's life: the GPU thread pushes events, the HTTP thread streams them out.
struct Job {
  JobSpec spec;
  std::atomic<bool> cancel{false};
  std::string cancel_reason = "cancelled by request";
  std::chrono::steady_clock::time_point enqueued = std::chrono::steady_clock::now();

  struct Event {
    std::string name;  // started, token, end, error
    nlohmann::json data;
  };
  void emit(std::string name, nlohmann::json data);
  // Waits up to `wait` for the next event; false on timeout.
  bool next(Event& out, std::chrono::milliseconds wait);
  bool finished() const { return done_.load(); }
  GenerateResult result;  // complete once `finished()`

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> events_;
  std::atomic<bool> done_{false};
};

class WorkerServer {
 public:
  WorkerServer(WorkerConfig cfg, Narrator& log, Metrics& metrics);
  ~WorkerServer();

  // Installs the loaded model (state becomes healthy) or removes it (nullptr: paused/unloaded).
  void set_backend(std::unique_ptr<InferenceBackend> backend, WorkerState state = WorkerState::healthy);
  // Moves to new_state (with its reason, so /health never shows the state without it), cancels
  // and waits for the running job, and hands the backend over.
  std::unique_ptr<InferenceBackend> take_backend(WorkerState new_state, const std::string& reason = "");
  void set_state(WorkerState s, const std::string& reason = "");
  WorkerState state() const { return state_.load(); }

  int bind();       // binds host:port (0 = any free port) and returns the port
  void serve();     // blocks until shutdown; starts the GPU and residency threads
  // True once serve() accepts connections (it has answered a request to itself).
  bool wait_until_listening(std::chrono::milliseconds timeout);
  void request_shutdown(const std::string& why);  // safe from any thread
  int port() const { return port_; }

  // Runs a residency check now; marks the worker unhealthy on a violation.
  ResidencyReport check_residency();
  // Adds fields (e.g. other GPU processes) to /health; the callback runs per request.
  void set_health_extra(std::function<nlohmann::json()> f) { health_extra_ = std::move(f); }
  Metrics& metrics() { return metrics_; }

 private:
  void install_routes();
  void gpu_loop();
  void residency_loop();
  void run_job(const std::shared_ptr<Job>& job);
  std::optional<ApiError> admit(const std::shared_ptr<Job>& job);
  std::optional<ApiError> state_error_locked() const;  // why no job can run now, if so
  void cancel_all(const std::string& reason);
  nlohmann::json health_json(int* http_status);
  void update_vram_metrics();
  uint64_t fresh_seed();

  WorkerConfig cfg_;
  Narrator& log_;
  Metrics& metrics_;
  std::unique_ptr<httplib::Server> http_;
  int port_ = 0;
  std::atomic<WorkerState> state_{WorkerState::loading};
  std::string state_reason_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  std::unique_ptr<InferenceBackend> backend_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::shared_ptr<Job> running_;
  std::map<std::string, std::weak_ptr<Job>> active_;
  bool stopping_ = false;
  ResidencyReport last_residency_;
  std::chrono::steady_clock::time_point last_check_{};
  std::atomic<int> open_streams_{0};
  std::function<nlohmann::json()> health_extra_;

  std::thread gpu_thread_, residency_thread_;
  std::mutex seed_mu_;
  uint64_t seed_state_;
};

}  // namespace orcd
