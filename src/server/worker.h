// The worker's life cycle: preflight, the admission ledger, provisioning a remote model,
// loading, serving, pausing for other GPU programs and resuming, state callbacks, and a
// graceful drain. `worker-orcd serve` only turns flags into a WorkerConfig and runs this; tests
// run it against a fake GPU.
#pragma once
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "server/backend.h"
#include "server/config.h"
#include "server/metrics.h"
#include "server/narrator.h"
#include "server/server.h"
#include "vram/nvml.h"

namespace orcd {

// What the worker needs of its GPU. CudaGpu is the real one.
class GpuAccess {
 public:
  struct Memory {
    uint64_t free_bytes = 0, total_bytes = 0;
  };
  virtual ~GpuAccess() = default;
  // Makes the device current and creates the CUDA context; the reason when it cannot.
  virtual std::optional<std::string> open(int device) = 0;
  virtual std::string name() const = 0;
  // Free and total bytes of the whole card (NVML when it is there, so no context is needed).
  virtual std::optional<Memory> memory() = 0;
  // Other processes on the GPU; nullptr without NVML.
  virtual std::shared_ptr<GpuProcessLister> processes() = 0;
  virtual std::shared_ptr<InferenceBackend> load(const std::string& model_path, const EngineOptions& opt) = 0;
  // Paused: the model is gone; give back the CUDA context as well, so nothing of this process
  // holds device memory. The next load creates it again.
  virtual void release_context() = 0;
};

std::unique_ptr<GpuAccess> make_cuda_gpu();

class Worker {
 public:
  Worker(WorkerConfig cfg, Narrator& log, Metrics& metrics, std::unique_ptr<GpuAccess> gpu);
  ~Worker();
  // Runs until stopped. 0 after a clean stop, 1 when it could not start, 3 after a device
  // failure no call recovers from (so a supervisor restarts the process).
  int run();
  // From a signal or another thread: drain (finish in-flight work for drain_secs) or stop now.
  void stop(bool drain, const std::string& why);
  // Set once serving; tests read its port.
  WorkerServer* server() { return server_.get(); }
  std::atomic<int> bound_port{0};

 private:
  int fail(const std::string& stage, const std::string& message, const nlohmann::json& body = nullptr);
  bool provision();
  std::shared_ptr<InferenceBackend> load();
  void on_state(WorkerState s, const std::string& reason);
  void telemetry_loop();
  nlohmann::json others_json();

  WorkerConfig cfg_;
  Narrator& log_;
  Metrics& metrics_;
  std::unique_ptr<GpuAccess> gpu_;
  std::shared_ptr<GpuProcessLister> lister_;
  std::unique_ptr<class AdmissionLedger> ledger_;
  std::unique_ptr<class StateNotifier> notifier_;
  std::unique_ptr<WorkerServer> server_;
  uint64_t headroom_ = 0, total_ = 0;
  std::string address_;

  std::mutex mu_;  // others_, stop flag, condition
  std::condition_variable cv_;
  std::vector<GpuProcess> others_;
  bool telemetry_stop_ = false;
  std::atomic<bool> stop_requested_{false};
  std::thread fatal_stop_;  // asks the server to stop after a device failure; joined by run()
};

}  // namespace orcd
