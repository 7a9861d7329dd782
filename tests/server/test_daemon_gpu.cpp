// The real daemon on the GPU: start it, stream, cancel, health, metrics, bad requests, OpenAI
// chat, SIGTERM; and a residency violation planted in a real engine's tracker.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cuda_runtime_api.h>
#include <filesystem>
#include <fstream>
#include <atomic>
#include <mutex>
#include <thread>

#include "common/cuda_check.h"
#include "engine/engine.h"
#include "engine/synth.h"
#include "gpu.h"
#include "server/daemon_process.h"
#include "server/server.h"
#include "testutil.h"
#include "tokenizer/unicode.h"

using namespace orcd;
using namespace std::chrono_literals;

namespace {

using test::Daemon;
std::string synth_model(const std::string& dir) { return test::synth_tiny_qwen2(dir); }

size_t free_vram() {
  size_t f = 0, t = 0;
  CUDA_CHECK(cudaMemGetInfo(&f, &t));
  return f;
}

}  // namespace

TEST(DaemonGpu, ServesStreamsCancelsAndShutsDownCleanly) {
  ORCD_REQUIRE_GPU();
  const std::string dir = test::temp_dir();
  const std::string model = synth_model(dir);
  const size_t free_before = free_vram();
  // A callback receiver for the ready message.
  httplib::Server receiver;
  std::mutex got_mu;
  nlohmann::json ready_msg;
  receiver.Post("/ready", [&](const httplib::Request& req, httplib::Response& res) {
    std::lock_guard lock(got_mu);
    ready_msg = nlohmann::json::parse(req.body);
    res.status = 204;
  });
  const int receiver_port = receiver.bind_to_any_port("127.0.0.1");
  std::thread receiving([&] { receiver.listen_after_bind(); });
  struct StopReceiver {  // however the test ends, the receiver thread is stopped and joined
    httplib::Server& s;
    std::thread& t;
    ~StopReceiver() {
      s.stop();
      if (t.joinable()) t.join();
    }
  } stop_receiver{receiver, receiving};
  for (int i = 0; i < 200 && !receiver.is_running(); ++i) std::this_thread::sleep_for(5ms);
  Daemon d;
  ASSERT_TRUE(d.start({"--model", model, "--port", "0", "--ctx-size", "4096", "--reserved-vram", "0", "--residency-check-secs", "1",
                       "--worker-id", "gpu-test", "--callback-url", "http://127.0.0.1:" + std::to_string(receiver_port) + "/ready"}))
      << d.log();
  ASSERT_TRUE(d.wait_for_log("ready callback delivered", 10s)) << d.log();
  {
    std::lock_guard lock(got_mu);
    EXPECT_EQ(ready_msg["worker_id"], "gpu-test");
    EXPECT_EQ(ready_msg["memory_architecture"], "vram-only");
    EXPECT_EQ(ready_msg["model"], model);
    EXPECT_GT(ready_msg["vram_bytes"].get<uint64_t>(), 0u);
    EXPECT_EQ(ready_msg["address"], "127.0.0.1:" + std::to_string(d.port));
  }

  EXPECT_LT(free_vram() + (16u << 20), free_before);  // the daemon holds VRAM now
  httplib::Client c("127.0.0.1", d.port);
  c.set_read_timeout(20);

  // Stream a long generation, cancel it after some tokens, time the stop.
  std::fprintf(stderr, "[ daemon ] ready on port %d; streaming\n", d.port);
  std::thread canceller;
  struct Join {
    std::thread& t;
    ~Join() {
      if (t.joinable()) t.join();
    }
  } join_canceller{canceller};
  std::atomic<int> cancel_status{0};
  std::chrono::steady_clock::time_point cancel_sent, terminal_at;
  std::string body, text, terminal;
  int tokens = 0;
  bool utf8_ok = true;
  httplib::Request req;
  req.method = "POST";
  req.path = "/execute";
  req.body = R"({"job_id":"long","prompt":"Tell me a very long story about GPUs.","max_tokens":3000,"temperature":0.9,"seed":42})";
  req.set_header("Content-Type", "application/json");
  const int port = d.port;
  req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
    body.append(data, len);
    size_t pos;
    while ((pos = body.find("\n\n")) != std::string::npos) {
      const std::string frame = body.substr(0, pos);
      body.erase(0, pos + 2);
      const auto nl = frame.find('\n');
      if (nl == std::string::npos || !frame.starts_with("event: ")) continue;
      const std::string ev = frame.substr(7, nl - 7);
      const auto j = nlohmann::json::parse(frame.substr(nl + 7), nullptr, false);
      if (ev == "token") {
        const std::string t = j.value("t", "");
        utf8_ok &= !utf8_first_invalid(t).has_value();
        text += t;
        if (++tokens == 20)
          canceller = std::thread([&cancel_sent, &cancel_status, port] {
            cancel_sent = std::chrono::steady_clock::now();
            httplib::Client cc("127.0.0.1", port);
            auto r = cc.Post("/cancel", R"({"job_id":"long"})", "application/json");
            cancel_status = r ? r->status : -1;
          });
      }
      if (ev == "error" || ev == "end") {
        terminal_at = std::chrono::steady_clock::now();
        terminal = ev + " " + j.dump();
      }
    }
    return tokens < 5000;
  };
  httplib::Client sc("127.0.0.1", d.port);
  sc.set_read_timeout(20);
  const bool sent = sc.send(req);
  if (canceller.joinable()) canceller.join();
  std::fprintf(stderr, "[ daemon ] stream done: sent=%d tokens=%d cancel_status=%d terminal=%s\n", sent, tokens, cancel_status.load(),
               terminal.c_str());
  if (!sent || terminal.empty()) std::fprintf(stderr, "%s\n", d.log().c_str());
  ASSERT_TRUE(sent);
  EXPECT_EQ(cancel_status, 202);
  EXPECT_TRUE(terminal.starts_with("error")) << terminal;
  EXPECT_NE(terminal.find("CANCELLED"), std::string::npos) << terminal;
  EXPECT_TRUE(utf8_ok);
  EXPECT_GE(tokens, 20);
  const double stop_ms = std::chrono::duration<double, std::milli>(terminal_at - cancel_sent).count();
  std::printf("[ daemon ] cancel took effect after %.1f ms (%d tokens streamed)\n", stop_ms, tokens);
  EXPECT_LT(stop_ms, 100);

  // A full job, health, metrics, bad input, OpenAI chat.
  std::fprintf(stderr, "[ daemon ] short job\n");
  auto r = c.Post("/execute", R"({"job_id":"short","prompt":"Hello","max_tokens":8,"temperature":0})", "application/json");
  if (!r) std::fprintf(stderr, "[ daemon ] short job failed: %s\n%s\n", httplib::to_string(r.error()).c_str(), d.log().c_str());
  ASSERT_TRUE(r);
  EXPECT_NE(r->body.find("event: end"), std::string::npos);
  std::this_thread::sleep_for(1500ms);  // one residency check has run
  r = c.Get("/health");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto h = nlohmann::json::parse(r->body);
  EXPECT_EQ(h["resident"], true);
  EXPECT_EQ(h["tokenizer_kind"], "bpe");
  EXPECT_EQ(h["context_length"], 4096);
  EXPECT_EQ(h["sm"], "sm_90");
  EXPECT_GT(h["vram_breakdown"]["weights"].get<uint64_t>(), 0u);
  EXPECT_FALSE(h["last_check_secs"].is_null());
  r = c.Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_NE(r->body.find("orcd_requests_total{outcome=\"cancelled\"} 1"), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("orcd_requests_total{outcome=\"ok\"} 1"), std::string::npos);
  r = c.Post("/execute", R"({"job_id":"","prompt":"x"})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  r = c.Post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"Hi"}],"max_tokens":5,"temperature":0})", "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(nlohmann::json::parse(r->body)["usage"]["completion_tokens"].get<int>() <= 5, true);

  // SIGTERM: exit 0, everything given back.
  EXPECT_EQ(d.stop(SIGTERM), 0) << d.log();
  EXPECT_NE(d.log().find("all VRAM released"), std::string::npos);
  EXPECT_GE(free_vram() + (16u << 20), free_before);
  std::filesystem::remove_all(dir);
}

TEST(DaemonGpu, RefusesAModelThatDoesNotFitAndSaysWhy) {
  ORCD_REQUIRE_GPU();
  const std::string dir = test::temp_dir();
  const std::string model = synth_model(dir);
  size_t f = 0, t = 0;
  CUDA_CHECK(cudaMemGetInfo(&f, &t));
  Daemon d;
  EXPECT_FALSE(d.start({"--model", model, "--port", "0", "--reserved-vram", std::to_string(t)}, 30s));
  const std::string log = d.log();
  EXPECT_NE(log.find("\"code\":\"POOL_UNAVAILABLE\""), std::string::npos) << log;
  EXPECT_NE(log.find("\"reason\":\"insufficient_vram\""), std::string::npos) << log;
  EXPECT_NE(log.find("needed_bytes"), std::string::npos) << log;
  EXPECT_NE(log.find("Try:"), std::string::npos) << log;
  std::filesystem::remove_all(dir);
}

TEST(DaemonGpu, PlantedManagedPointerMakesHealthReportNotResident) {
  ORCD_REQUIRE_GPU();
  const std::string dir = test::temp_dir();
  EngineOptions eo;
  eo.reserved_vram = 0;
  eo.dedicated_gpu = true;
  eo.n_ctx = 256;
  auto engine = InferenceEngine::load(synth_model(dir), eo);
  VramTracker& tracker = engine->tracker();
  WorkerConfig cfg;
  cfg.port = 0;
  Narrator log(true);
  Metrics metrics;
  WorkerServer server(cfg, log, metrics);
  server.set_backend(make_engine_backend(std::move(engine)));
  const int port = server.bind();
  std::thread serving([&] { server.serve(); });
  httplib::Client c("127.0.0.1", port);
  auto r = c.Get("/health?verify=1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(nlohmann::json::parse(r->body)["resident"], true);

  void* managed = nullptr;
  CUDA_CHECK(cudaMallocManaged(&managed, 1 << 20));
  tracker.record(managed, 1 << 20, VramPurpose::kv_cache, "planted managed buffer");
  r = c.Get("/health?verify=1");
  EXPECT_EQ(r->status, 503);
  const auto h = nlohmann::json::parse(r->body);
  EXPECT_EQ(h["resident"], false);
  EXPECT_EQ(h["status"], "unhealthy");
  r = c.Post("/execute", R"({"job_id":"x","prompt":"hi","max_tokens":2})", "application/json");
  EXPECT_EQ(nlohmann::json::parse(r->body)["code"], "WORKER_UNHEALTHY");
  tracker.forget(managed);
  cudaFree(managed);
  server.request_shutdown("test over");
  serving.join();
  std::filesystem::remove_all(dir);
}
