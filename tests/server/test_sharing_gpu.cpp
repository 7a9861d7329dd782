// Sharing the GPU with other processes, on the real device. This test process never creates
// a CUDA context of its own: NVML would count it as another process.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <cmath>
#include <filesystem>
#include <thread>

#include "engine/synth.h"
#include "server/daemon_process.h"
#include "testutil.h"

using namespace orcd;
using namespace orcd::test;
using namespace std::chrono_literals;

#define REQUIRE_NVIDIA_GPU()                                                   \
  do {                                                                         \
    std::string why_;                                                          \
    if (!nvidia_smi_sees_gpu(&why_)) GTEST_SKIP() << "no NVIDIA GPU: " << why_; \
  } while (0)

namespace {

nlohmann::json health(int port, int* status = nullptr) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(10);
  auto r = c.Get("/health");
  if (!r) {
    std::fprintf(stderr, "[ sharing ] GET /health on port %d failed: %s\n", port, httplib::to_string(r.error()).c_str());
    return {};
  }
  if (status) *status = r->status;
  return nlohmann::json::parse(r->body);
}

// Polls /health until its status is `want`; returns the seconds it took, or -1.
double wait_status(int port, const std::string& want, std::chrono::seconds timeout) {
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < timeout) {
    if (health(port).value("status", "") == want) return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::this_thread::sleep_for(50ms);
  }
  return -1;
}

// A gauge's value from /metrics (NaN when absent).
double metric(int port, const std::string& series) {
  httplib::Client c("127.0.0.1", port);
  auto r = c.Get("/metrics");
  if (!r) return NAN;
  const auto at = r->body.find("\n" + series + " ");
  return at == std::string::npos ? NAN : std::stod(r->body.substr(at + series.size() + 2));
}

}  // namespace

TEST(SharingGpu, LiveHeadroomFallsWhenAnotherProcessAllocatesAndComesBack) {
  REQUIRE_NVIDIA_GPU();
  const std::string dir = temp_dir();
  const std::string model = synth_tiny_qwen2(dir);
  Daemon d;
  ASSERT_TRUE(d.start({"--model", model, "--port", "0", "--gpu-poll-secs", "0.2"})) << d.log();
  const std::string series = "vram_headroom_bytes{gpu=\"0\"}";
  double before = NAN;
  for (int i = 0; i < 100 && !(before > 0); ++i, std::this_thread::sleep_for(50ms)) before = metric(d.port, series);
  ASSERT_GT(before, 0) << d.log();
  ChildProcess hog;
  hog.spawn(ORCD_VRAM_HOG, {"4096", "120"});  // 4 GiB
  ASSERT_TRUE(hog.wait_for_log("holding", 60s)) << hog.log();
  constexpr double GiB = 1024.0 * 1024 * 1024;
  double during = before;
  for (int i = 0; i < 100 && before - during < 3.5 * GiB; ++i, std::this_thread::sleep_for(50ms)) during = metric(d.port, series);
  std::printf("[ sharing ] vram_headroom_bytes %.2f GiB -> %.2f GiB with 4 GiB held by another process\n", before / GiB, during / GiB);
  EXPECT_GE(before - during, 3.5 * GiB);  // the hog's 4 GiB and its context, give or take the driver
  EXPECT_LE(before - during, 5.0 * GiB);
  EXPECT_GE(metric(d.port, "gpu_other_processes{gpu=\"0\"}"), 1);
  const pid_t hog_pid = hog.pid();
  hog.stop(SIGTERM);
  for (int i = 0; i < 200 && nvidia_smi_used_mib(hog_pid) >= 0; ++i) std::this_thread::sleep_for(50ms);
  double after = during;
  for (int i = 0; i < 100 && before - after > 0.5 * GiB; ++i, std::this_thread::sleep_for(50ms)) after = metric(d.port, series);
  EXPECT_LE(std::abs(before - after), 0.5 * GiB) << "before " << before << ", after " << after;
  EXPECT_EQ(d.stop(SIGTERM), 0);
  std::filesystem::remove_all(dir);
}

TEST(SharingGpu, AHogThatLeavesTooLittleMakesTheLoadFail) {
  REQUIRE_NVIDIA_GPU();
  const std::string dir = temp_dir();
  const std::string model = synth_tiny_qwen2(dir);
  // A 0.5B model with a 32k context needs about 770 MiB. The hog leaves 900 MiB: enough for the
  // daemon's CUDA context (a few hundred MiB), not for the model as well.
  SynthOptions so;
  so.preset = "qwen2.5-0.5b";
  so.scheme = "q4_k_m";
  so.vocab_path = testdata("tokenizer/qwen2-vocab.gguf");
  so.out_path = dir + "/q05.gguf";
  write_synthetic_model(so);
  ChildProcess hog;
  hog.spawn(ORCD_VRAM_HOG, {"-900", "120"});
  ASSERT_TRUE(hog.wait_for_log("holding", 60s)) << hog.log();
  Daemon d;
  EXPECT_FALSE(d.start({"--model", so.out_path, "--port", "0", "--ctx-size", "32768", "--reserved-vram", "0"}, 60s));
  const std::string log = d.log();
  EXPECT_NE(log.find("\"code\":\"POOL_UNAVAILABLE\""), std::string::npos) << log;
  EXPECT_NE(log.find("\"reason\":\"insufficient_vram\""), std::string::npos) << log;
  EXPECT_NE(log.find("\"needed_bytes\""), std::string::npos) << log;
  EXPECT_NE(log.find("\"suggestions\""), std::string::npos) << log;
  EXPECT_NE(log.find(std::to_string(hog.pid())), std::string::npos) << "the refusal names the other process";
  hog.stop(SIGTERM);
  std::filesystem::remove_all(dir);
}

TEST(SharingGpu, AutoPauseFreesVramWhileAnotherProcessRunsAndResumesAfter) {
  REQUIRE_NVIDIA_GPU();
  const std::string dir = temp_dir();
  const std::string model = synth_tiny_qwen2(dir);
  const double grace = 1.0, poll = 0.5;
  Daemon d;
  ASSERT_TRUE(d.start({"--model", model, "--port", "0", "--ctx-size", "4096", "--reserved-vram", "0", "--auto-pause", "true",
                       "--gpu-poll-secs", "0.5", "--contention-grace-secs", "1"}))
      << d.log();
  ASSERT_EQ(health(d.port)["status"], "healthy") << d.log();
  // The test process has no CUDA context, so nothing else is on the GPU yet.
  ASSERT_EQ(health(d.port)["other_processes"]["count"], 0) << health(d.port).dump();
  const long used_before = nvidia_smi_used_mib(d.pid());

  ChildProcess hog;
  hog.spawn(ORCD_VRAM_HOG, {"256", "120"});
  ASSERT_TRUE(hog.wait_for_log("holding", 60s)) << hog.log();
  const double paused_after = wait_status(d.port, "paused", 10s);
  std::printf("[ sharing ] paused %.2f s after the other process held its VRAM (grace %.1f s, poll %.1f s); daemon VRAM %ld MiB -> %ld MiB\n",
              paused_after, grace, poll, used_before, nvidia_smi_used_mib(d.pid()));
  ASSERT_GE(paused_after, 0) << d.log();
  EXPECT_LE(paused_after, grace + 2 * poll + 0.5);
  int status = 0;
  auto h = health(d.port, &status);
  EXPECT_EQ(status, 200);  // alive and saying why it serves nothing; /readyz says it cannot take a job
  EXPECT_EQ(h["status"], "paused");
  EXPECT_EQ(h["ready"], false);
  EXPECT_EQ(h["vram_bytes_used"], 0);
  EXPECT_GE(h["other_processes"]["count"], 1);
  EXPECT_NE(h["reason"].get<std::string>().find(std::to_string(hog.pid())), std::string::npos) << h.dump();
  // Everything went back, the CUDA context too: the driver no longer lists the worker at all.
  EXPECT_GT(used_before, 0);
  EXPECT_EQ(nvidia_smi_used_mib(d.pid()), -1) << "before the pause: " << used_before << " MiB";
  httplib::Client c("127.0.0.1", d.port);
  EXPECT_EQ(c.Get("/readyz")->status, 503);
  auto r = c.Post("/execute", R"({"job_id":"p","prompt":"hi","max_tokens":2})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(nlohmann::json::parse(r->body)["code"], "WORKER_PAUSED");
  EXPECT_TRUE(r->has_header("Retry-After"));
  EXPECT_NE(c.Get("/metrics")->body.find("worker_paused 1"), std::string::npos);

  const pid_t hog_pid = hog.pid();
  hog.stop(SIGTERM);
  for (int i = 0; i < 200 && nvidia_smi_used_mib(hog_pid) >= 0; ++i) std::this_thread::sleep_for(50ms);
  const double resumed_after = wait_status(d.port, "healthy", 30s);
  std::printf("[ sharing ] healthy again %.2f s after the other process exited\n", resumed_after);
  ASSERT_GE(resumed_after, 0) << d.log();
  r = c.Post("/execute", R"({"job_id":"q","prompt":"hi","max_tokens":2})", "application/json");
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->body.find("event: end"), std::string::npos);
  EXPECT_EQ(d.stop(SIGTERM), 0);
  std::filesystem::remove_all(dir);
}

TEST(SharingGpu, DedicatedModeRefusesToStartBesideAnotherProcess) {
  REQUIRE_NVIDIA_GPU();
  const std::string dir = temp_dir();
  const std::string model = synth_tiny_qwen2(dir);
  ChildProcess hog;
  hog.spawn(ORCD_VRAM_HOG, {"64", "120"});
  ASSERT_TRUE(hog.wait_for_log("holding", 60s)) << hog.log();
  Daemon d;
  EXPECT_FALSE(d.start({"--model", model, "--port", "0", "--reserved-vram", "0", "--allow-shared-gpu", "false"}, 30s));
  EXPECT_NE(d.log().find("POOL_UNAVAILABLE"), std::string::npos) << d.log();
  EXPECT_NE(d.log().find(std::to_string(hog.pid())), std::string::npos) << d.log();
  const pid_t hog_pid = hog.pid();
  hog.stop(SIGTERM);
  // The driver lists an exited process for a moment; wait until it is gone.
  for (int i = 0; i < 200 && nvidia_smi_used_mib(hog_pid) >= 0; ++i) std::this_thread::sleep_for(50ms);
  // Without the other process it starts.
  Daemon d2;
  ASSERT_TRUE(d2.start({"--model", model, "--port", "0", "--reserved-vram", "0", "--allow-shared-gpu", "false"})) << d2.log();
  EXPECT_EQ(d2.stop(SIGTERM), 0);
  std::filesystem::remove_all(dir);
}
