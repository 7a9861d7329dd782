// The worker's HTTP daemon: one model, one GPU thread, a bounded queue in front of it, and the
// worker's state as health probes and pool managers see it.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "server/api.h"
#include "server/backend.h"
#include "server/config.h"
#include "server/http_guard.h"
#include "server/job_queue.h"
#include "server/metrics.h"
#include "server/narrator.h"

namespace orcd {

// unhealthy and stopping are terminal: nothing moves the worker out of them.
enum class WorkerState { loading, healthy, paused, draining, unhealthy, stopping };
std::string_view worker_state_name(WorkerState s);
bool is_terminal(WorkerState s);

class WorkerServer {
 public:
  WorkerServer(WorkerConfig cfg, Narrator& log, Metrics& metrics);
  ~WorkerServer();

  // Installs the loaded model and moves to `state` (unless the worker is already terminal).
  void set_backend(std::shared_ptr<InferenceBackend> backend, WorkerState state = WorkerState::healthy);
  // Moves to new_state (unless terminal), cancels and waits for the running job, and hands the
  // backend over once no request holds it.
  std::shared_ptr<InferenceBackend> take_backend(WorkerState new_state, const std::string& reason = "");
  // False (and nothing changes) when the worker is terminal, or draining and asked to serve.
  bool set_state(WorkerState s, const std::string& reason = "");
  WorkerState state() const { return state_.load(); }
  // A device failure no call recovers from: unhealthy for good; the owner exits non-zero.
  bool device_lost() const { return device_lost_.load(); }
  // Called after every state change, in order, outside the server's locks.
  void on_state_change(std::function<void(WorkerState, const std::string& reason)> f);

  int bind();    // binds host:port (0 = any free port) and returns the port
  void serve();  // blocks until shutdown; starts the GPU and residency threads
  bool wait_until_listening(std::chrono::milliseconds timeout);
  // Stops admitting, lets queued and running jobs finish for up to `grace`, cancels the rest,
  // then shuts down. Safe from any thread.
  void drain(std::chrono::duration<double> grace, const std::string& why);
  void request_shutdown(const std::string& why);  // cancels in-flight work at once
  int port() const { return port_; }

  // Runs a residency check now; marks the worker unhealthy on a violation.
  ResidencyReport check_residency();
  // Adds fields (e.g. other GPU processes) to /health; the callback runs per request.
  void set_health_extra(std::function<nlohmann::json()> f);
  Metrics& metrics() { return metrics_; }
  std::map<std::string, uint64_t> vram_breakdown() const;  // empty while no model is loaded
  // Whether a job could start now (/readyz).
  bool ready() const;

 private:
  void install_routes();
  void install_guards();
  void gpu_loop();
  void residency_loop();
  void run_job(const std::shared_ptr<Job>& job);
  std::optional<ApiError> state_error() const;  // why no job can be admitted now, if so
  void submit(httplib::Response& res, JobSpec spec);
  nlohmann::json health_json(int* http_status);
  void update_vram_metrics();
  std::shared_ptr<InferenceBackend> backend() const;
  ChatFormat chat_format() const;
  std::string new_job_id(JobKind kind);
  uint64_t fresh_seed();

  WorkerConfig cfg_;
  Narrator& log_;
  Metrics& metrics_;
  std::unique_ptr<GuardedHttpServer> http_;
  int port_ = 0;
  std::atomic<WorkerState> state_{WorkerState::loading};
  std::atomic<bool> device_lost_{false};
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  RequestLimits limits_;
  JobQueue queue_;

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  std::string state_reason_;
  std::shared_ptr<InferenceBackend> backend_;
  bool stopping_ = false;
  std::optional<ResidencyReport> last_residency_;  // none until the first check
  std::chrono::steady_clock::time_point last_check_{};
  std::function<nlohmann::json()> health_extra_;
  std::function<void(WorkerState, const std::string&)> state_listener_;
  std::mutex listener_mu_;  // state changes reach the listener one at a time, in order

  std::atomic<int> open_streams_{0};
  std::thread gpu_thread_, residency_thread_;
  std::thread drainer_, stopper_;  // started once each; joined by the destructor
  std::mutex stopper_mu_;
  std::mutex seed_mu_;
  uint64_t seed_state_;
};

}  // namespace orcd
