// The worker's life cycle on a fake GPU: refusals before loading, the headroom floor,
// max_model_size, probes during load, state callbacks in order, and a clean drain.
#include <gtest/gtest.h>
#include <httplib.h>

#include <filesystem>
#include <fstream>
#include <future>

#include "server/fake_backend.h"
#include "server/worker.h"
#include "testutil.h"
#include "vram/admission_ledger.h"

using namespace orcd;
using namespace std::chrono_literals;

namespace {

constexpr uint64_t GiB = 1ull << 30;

// A GPU of `total` bytes with `free` of them free; a load reserves `model_bytes` on the
// ledger, waits `load_time`, and returns a FakeBackend.
class FakeGpu : public GpuAccess {
 public:
  uint64_t total = 80 * GiB, model_bytes = 1 * GiB;
  std::atomic<uint64_t> free{80 * GiB};  // the telemetry thread reads it while a test changes it
  std::chrono::milliseconds load_time{0};
  std::atomic<int> loads{0}, releases{0};
  std::optional<std::string> open(int) override { return std::nullopt; }
  std::string name() const override { return "fake"; }
  std::optional<Memory> memory() override { return Memory{free.load(), total}; }
  std::shared_ptr<GpuProcessLister> processes() override { return nullptr; }
  std::shared_ptr<InferenceBackend> load(const std::string&, const EngineOptions& opt) override {
    ++loads;
    if (opt.vram_limit && model_bytes > opt.vram_limit)
      throw InsufficientVramError("POOL_UNAVAILABLE (insufficient VRAM): over max_model_size", model_bytes, opt.vram_limit, 0);
    Reservation r = opt.ledger->reserve(model_bytes, "model");
    std::this_thread::sleep_for(load_time);
    return std::make_shared<test::FakeBackend>();
  }
  void release_context() override { ++releases; }
};

// Receives state callbacks the way a pool manager would.
struct CallbackReceiver {
  httplib::Server svr;
  std::thread th;
  int port = 0;
  std::mutex mu;
  std::vector<nlohmann::json> bodies;
  CallbackReceiver() {
    svr.Post("/state", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard lock(mu);
      bodies.push_back(nlohmann::json::parse(req.body));
      res.status = 204;
    });
    port = svr.bind_to_any_port("127.0.0.1");
    th = std::thread([this] { svr.listen_after_bind(); });
    for (int i = 0; i < 200 && !svr.is_running(); ++i) std::this_thread::sleep_for(5ms);
  }
  ~CallbackReceiver() {
    svr.stop();
    th.join();
  }
  std::vector<std::string> states() {
    std::lock_guard lock(mu);
    std::vector<std::string> s;
    for (const auto& b : bodies) s.push_back(b["state"]);
    return s;
  }
};

struct WorkerRun {
  Narrator log{true};
  Metrics metrics;
  FakeGpu* gpu = nullptr;
  std::unique_ptr<Worker> worker;
  std::future<int> rc;
  std::string model;
  explicit WorkerRun(std::function<void(WorkerConfig&, FakeGpu&)> setup) {
    model = test::temp_dir() + "/model.gguf";
    std::ofstream(model) << "not read by the fake";
    WorkerConfig c;
    c.model = model;
    c.port = 0;
    c.worker_id = "w-fake";
    c.drain_secs = 5;
    auto g = std::make_unique<FakeGpu>();
    gpu = g.get();
    setup(c, *g);
    worker = std::make_unique<Worker>(c, log, metrics, std::move(g));
    rc = std::async(std::launch::async, [this] { return worker->run(); });
  }
  int port() {
    for (int i = 0; i < 400 && worker->bound_port == 0; ++i) {
      if (rc.wait_for(0ms) == std::future_status::ready) return 0;
      std::this_thread::sleep_for(5ms);
    }
    return worker->bound_port;
  }
  bool wait_status(int p, const std::string& status, std::chrono::milliseconds limit = 5s) {
    httplib::Client cl("127.0.0.1", p);
    for (auto t0 = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() - t0 < limit; std::this_thread::sleep_for(10ms))
      if (auto r = cl.Get("/health"); r && nlohmann::json::parse(r->body)["status"] == status) return true;
    return false;
  }
};

TEST(Worker, AModelThatDoesNotFitIsRefusedWithPoolUnavailableBeforeLoading) {
  WorkerRun run([](WorkerConfig&, FakeGpu& g) {
    g.free = 9 * GiB;  // 8 GiB headroom on 80 GiB leaves 1 GiB; the model needs 2
    g.model_bytes = 2 * GiB;
  });
  EXPECT_EQ(run.rc.get(), 1);
  EXPECT_EQ(run.metrics.value("vram_allocation_failures_total", {{"reason", "insufficient_vram"}}), 1);
  EXPECT_EQ(run.metrics.value("vram_allocation_failures_total", {{"reason", "cuda_error"}}), 0);
}

TEST(Worker, TheHeadroomFloorHoldsOnASharedGpuAndYieldsOnADedicatedOne) {
  // reserved_system_vram = 0 on a shared GPU keeps the 8 GiB floor: 9 GiB free admits 1 GiB.
  WorkerRun shared([](WorkerConfig& c, FakeGpu& g) {
    c.reserved_system_vram = 0;
    g.free = 9 * GiB;
    g.model_bytes = 2 * GiB;
  });
  EXPECT_EQ(shared.rc.get(), 1);
  // Declared dedicated (allow_shared_gpu = false), the same GPU admits it.
  WorkerRun dedicated([](WorkerConfig& c, FakeGpu& g) {
    c.reserved_system_vram = 0;
    c.allow_shared_gpu = false;
    g.free = 9 * GiB;
    g.model_bytes = 2 * GiB;
  });
  const int p = dedicated.port();
  ASSERT_GT(p, 0);
  EXPECT_TRUE(dedicated.wait_status(p, "healthy"));
  dedicated.worker->stop(false, "test");
  EXPECT_EQ(dedicated.rc.get(), 0);
}

TEST(Worker, MaxModelSizeRefusesALargerModel) {
  WorkerRun run([](WorkerConfig& c, FakeGpu& g) {
    c.max_model_size = GiB;
    g.model_bytes = 2 * GiB;
  });
  EXPECT_EQ(run.rc.get(), 1);
  EXPECT_EQ(run.metrics.value("vram_allocation_failures_total", {{"reason", "insufficient_vram"}}), 1);
}

TEST(Worker, ProbesDuringLoadCallbacksInOrderAndADrainOnStop) {
  CallbackReceiver cb;
  WorkerRun run([&](WorkerConfig& c, FakeGpu& g) {
    c.callback_url = "http://127.0.0.1:" + std::to_string(cb.port) + "/state";
    g.load_time = 600ms;
  });
  const int p = run.port();
  ASSERT_GT(p, 0);
  httplib::Client cl("127.0.0.1", p);
  // Listening while the model loads: alive, not ready, and no residency claimed.
  auto r = cl.Get("/readyz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(nlohmann::json::parse(r->body)["code"], "LOADING");
  EXPECT_EQ(cl.Get("/livez")->status, 200);
  ASSERT_TRUE(run.wait_status(p, "healthy"));
  EXPECT_EQ(cl.Get("/readyz")->status, 200);
  const auto h = nlohmann::json::parse(cl.Get("/health")->body);
  EXPECT_EQ(h["resident"], true);  // a check ran at ready
  EXPECT_FALSE(h["last_check_secs"].is_null());
  // Live headroom: budget (80 - 8 GiB) minus what is in use (0 here).
  for (int i = 0; i < 200 && run.metrics.value("vram_headroom_bytes", {{"gpu", "0"}}) == 0; ++i) std::this_thread::sleep_for(20ms);
  EXPECT_EQ(run.metrics.value("vram_headroom_bytes", {{"gpu", "0"}}), static_cast<double>(72 * GiB));
  run.gpu->free = 50 * GiB;  // another program takes 30 GiB
  for (int i = 0; i < 200 && run.metrics.value("vram_headroom_bytes", {{"gpu", "0"}}) != static_cast<double>(42 * GiB); ++i)
    std::this_thread::sleep_for(20ms);
  EXPECT_EQ(run.metrics.value("vram_headroom_bytes", {{"gpu", "0"}}), static_cast<double>(42 * GiB));
  EXPECT_EQ(run.metrics.value("gpu_other_processes", {{"gpu", "0"}}), 1);  // without NVML: memory beyond ours

  run.worker->stop(true, "SIGTERM");
  EXPECT_EQ(run.rc.get(), 0);
  EXPECT_EQ(cb.states(), (std::vector<std::string>{"ready", "draining", "stopping", "stopped"}));
  std::lock_guard lock(cb.mu);
  for (const auto& b : cb.bodies) {
    EXPECT_EQ(b["memory_architecture"], "vram-only");
    EXPECT_EQ(b["worker_type"], "worker-orcd");
    EXPECT_EQ(b["worker_id"], "w-fake");
  }
  EXPECT_EQ(cb.bodies[0]["capabilities"][0], "text-gen");
  EXPECT_EQ(cb.bodies[0]["vram_bytes"], 1200);
  EXPECT_LT(cb.bodies[0]["seq"].get<int>(), cb.bodies[1]["seq"].get<int>());
}

}  // namespace
