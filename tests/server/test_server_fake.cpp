// The real WorkerServer over loopback HTTP, driven by a scripted backend (no GPU needed):
// streaming, cancel, disconnect, queue limits, bad input, OpenAI endpoints, health, shutdown.
#include <gtest/gtest.h>
#include <httplib.h>

#include <future>
#include <sstream>
#include <thread>

#include "server/server.h"

using namespace orcd;
using namespace std::chrono_literals;

namespace {

// Emits the words of `script` one by one, `delay` apart, honouring max_tokens, stop strings
// and cancellation as the real engine does.
class FakeBackend : public InferenceBackend {
 public:
  std::string script = "alpha beta gamma delta epsilon zeta eta theta iota kappa";
  std::chrono::milliseconds delay{5};
  std::atomic<int> started{0}, cancelled{0};
  bool violate_residency = false;

  FakeBackend() {
    info_.model_name = "fake-model";
    info_.quant_kind = "Q4_K_M";
    info_.tokenizer_kind = "bpe";
    info_.vocab_size = 1000;
    info_.context_length = 64;
    info_.sm = "sm_90";
    info_.chat_format = ChatFormat::chatml;
  }
  const BackendInfo& info() const override { return info_; }
  size_t count_tokens(std::string_view prompt) const override {
    size_t n = 1;
    for (char c : prompt) n += c == ' ';
    return n;
  }
  GenerateResult generate(const GenerateRequest& req, const std::function<bool(std::string_view)>& on_piece) override {
    ++started;
    GenerateResult r;
    r.prompt_ids.assign(count_tokens(req.prompt), 1);
    std::istringstream words(script);
    std::string w;
    StopStringFilter stops(req.stop);
    r.stop_reason = StopReason::eos;
    while (words >> w) {
      std::this_thread::sleep_for(delay);
      if (req.cancel && *req.cancel) {
        ++cancelled;
        r.stop_reason = StopReason::cancelled;
        return r;
      }
      r.output_ids.push_back(7);
      const std::string piece = stops.push(" " + w);
      r.text += piece;
      if (!piece.empty() && !on_piece(piece)) {
        ++cancelled;
        r.stop_reason = StopReason::cancelled;
        return r;
      }
      if (stops.stopped()) {
        r.stop_reason = StopReason::stop_string;
        return r;
      }
      if (static_cast<int>(r.output_ids.size()) >= req.max_tokens) {
        r.stop_reason = StopReason::max_tokens;
        break;
      }
    }
    const std::string tail = stops.flush();
    if (!tail.empty()) on_piece(tail), r.text += tail;
    r.decode_ms = 1;
    return r;
  }
  std::map<std::string, uint64_t> vram_breakdown() const override { return {{"weights", 1000}, {"kv_cache", 200}}; }
  uint64_t vram_bytes() const override { return 1200; }
  ResidencyReport verify_residency() override {
    ResidencyReport r;
    r.checked = 2;
    if (violate_residency) {
      r.resident = false;
      r.violations = {"0x1 (200 bytes, kv_cache 'planted'): managed (unified) memory"};
    }
    return r;
  }

 private:
  BackendInfo info_;
};

struct Sse {
  std::vector<std::pair<std::string, nlohmann::json>> events;
  std::string raw;
};

// Parses "event:"/"data:" frames out of a raw SSE body.
Sse parse_sse(const std::string& raw) {
  Sse s;
  s.raw = raw;
  std::istringstream in(raw);
  std::string line, event;
  while (std::getline(in, line)) {
    if (line.starts_with("event: ")) event = line.substr(7);
    else if (line.starts_with("data: ")) {
      const std::string d = line.substr(6);
      s.events.push_back({event, d == "[DONE]" ? nlohmann::json("[DONE]") : nlohmann::json::parse(d)});
      event.clear();
    }
  }
  return s;
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override { start(); }
  void start(int queue_size = 2) {
    WorkerConfig cfg;
    cfg.port = 0;
    cfg.queue_size = queue_size;
    cfg.max_body_bytes = 4096;
    cfg.worker_id = "w-test";
    server = std::make_unique<WorkerServer>(cfg, log, metrics);
    auto b = std::make_unique<FakeBackend>();
    fake = b.get();
    server->set_backend(std::move(b));
    port = server->bind();
    serving = std::thread([this] { server->serve(); });
  }
  void TearDown() override {
    server->request_shutdown("test over");
    serving.join();
  }
  httplib::Client client() {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(10);
    return c;
  }
  // POSTs and reads the whole streamed body.
  Sse post_sse(const std::string& path, const std::string& body, int* status = nullptr) {
    auto r = client().Post(path.c_str(), body, "application/json");
    EXPECT_TRUE(r) << "request failed";
    if (!r) return {};
    if (status) *status = r->status;
    return parse_sse(r->body);
  }

  Narrator log{true};
  Metrics metrics;
  std::unique_ptr<WorkerServer> server;
  FakeBackend* fake = nullptr;
  int port = 0;
  std::thread serving;
};

TEST_F(ServerTest, ExecuteStreamsStartedTokensAndExactlyOneEnd) {
  int status = 0;
  const auto s = post_sse("/execute", R"({"job_id":"a","prompt":"hello there","max_tokens":4,"seed":9})", &status);
  EXPECT_EQ(status, 200);
  ASSERT_GE(s.events.size(), 3u);
  EXPECT_EQ(s.events.front().first, "started");
  EXPECT_EQ(s.events.front().second["job_id"], "a");
  EXPECT_EQ(s.events.front().second["seed"], 9);
  EXPECT_EQ(s.events.front().second["model"], "fake-model");
  std::string text;
  int terminal = 0, index = 0;
  for (const auto& [name, data] : s.events) {
    if (name == "token") {
      EXPECT_EQ(data["i"], index++);
      text += data["t"].get<std::string>();
    }
    terminal += name == "end" || name == "error";
  }
  EXPECT_EQ(terminal, 1);
  EXPECT_EQ(text, " alpha beta gamma delta");
  const auto& end = s.events.back();
  EXPECT_EQ(end.first, "end");
  EXPECT_EQ(end.second["tokens_out"], 4);
  EXPECT_EQ(end.second["stop_reason"], "max_tokens");
  EXPECT_TRUE(end.second.contains("tokens_per_second"));
  EXPECT_TRUE(end.second.contains("decode_time_ms"));
  EXPECT_EQ(metrics.value("orcd_requests_total", {{"outcome", "ok"}}), 1);
  EXPECT_EQ(metrics.value("orcd_tokens_generated_total"), 4);
}

TEST_F(ServerTest, SeedIsGeneratedAndReportedWhenAbsent) {
  const auto a = post_sse("/execute", R"({"job_id":"s1","prompt":"x","max_tokens":1})");
  const auto b = post_sse("/execute", R"({"job_id":"s2","prompt":"x","max_tokens":1})");
  ASSERT_FALSE(a.events.empty());
  ASSERT_FALSE(b.events.empty());
  EXPECT_TRUE(a.events[0].second["seed"].is_number_unsigned());
  EXPECT_NE(a.events[0].second["seed"], b.events[0].second["seed"]);
}

TEST_F(ServerTest, BadRequestsGetJsonErrorsAndNothingBreaks) {
  auto c = client();
  auto r = c.Post("/execute", R"({"job_id":"b","prompt":"x","temperature":3})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  auto j = nlohmann::json::parse(r->body);
  EXPECT_EQ(j["field"], "temperature");
  r = c.Post("/execute", "{{{", "application/json");
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(nlohmann::json::parse(r->body)["code"], "INVALID_JSON");
  r = c.Post("/execute", std::string(10000, 'x'), "application/json");  // over max_body_bytes
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(nlohmann::json::parse(r->body)["code"], "PAYLOAD_TOO_LARGE");
  r = c.Get("/nope");
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(nlohmann::json::parse(r->body)["code"], "NOT_FOUND");
  // Prompt tokens + max_tokens past the context (64 in the fake).
  r = c.Post("/execute", R"({"job_id":"c","prompt":"a b c d e","max_tokens":60})", "application/json");
  EXPECT_EQ(r->status, 400);
  j = nlohmann::json::parse(r->body);
  EXPECT_EQ(j["code"], "CONTEXT_EXCEEDED");
  EXPECT_EQ(j["field"], "max_tokens");
  // Still serving.
  EXPECT_EQ(post_sse("/execute", R"({"job_id":"ok","prompt":"x","max_tokens":2})").events.back().first, "end");
}

TEST_F(ServerTest, CancelStopsAStreamWithinAHundredMilliseconds) {
  fake->delay = 20ms;
  fake->script = std::string(300, 'w');  // one long word stream
  std::string words;
  for (int i = 0; i < 200; ++i) words += "w ";
  fake->script = words;
  auto fut = std::async(std::launch::async, [&] { return post_sse("/execute", R"({"job_id":"long","prompt":"x","max_tokens":60})"); });
  std::this_thread::sleep_for(150ms);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = client().Post("/cancel", R"({"job_id":"long"})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 202);
  EXPECT_EQ(nlohmann::json::parse(r->body)["status"], "cancelling");
  const auto s = fut.get();
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(s.events.empty());
  EXPECT_EQ(s.events.back().first, "error");
  EXPECT_EQ(s.events.back().second["code"], "CANCELLED");
  EXPECT_LT(ms, 300);  // one 20 ms fake step plus delivery; generous for a loaded CI machine (the GPU test holds 100 ms)
  EXPECT_EQ(fake->cancelled, 1);
  // Idempotent: cancelling again or an unknown job is still 202.
  EXPECT_EQ(client().Post("/cancel", R"({"job_id":"long"})", "application/json")->status, 202);
  EXPECT_EQ(client().Post("/cancel", R"({"job_id":"never"})", "application/json")->status, 202);
  EXPECT_EQ(client().Post("/cancel", R"({})", "application/json")->status, 400);
}

TEST_F(ServerTest, ClientDisconnectCancelsItsJob) {
  fake->delay = 20ms;
  std::string words;
  for (int i = 0; i < 200; ++i) words += "w ";
  fake->script = words;
  httplib::Request req;
  req.method = "POST";
  req.path = "/execute";
  req.body = R"({"job_id":"gone","prompt":"x","max_tokens":60})";
  req.set_header("Content-Type", "application/json");
  int chunks = 0;
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 3; };  // hang up early
  auto c = client();
  c.send(req);
  for (int i = 0; i < 100 && fake->cancelled == 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(fake->cancelled, 1);
  EXPECT_EQ(post_sse("/execute", R"({"job_id":"next","prompt":"x","max_tokens":1})").events.back().first, "end");
}

TEST_F(ServerTest, QueueBeyondItsSizeGets503WithRetryAfter) {
  fake->delay = 80ms;  // the first job runs 400 ms, long enough for the others to queue
  std::vector<std::future<Sse>> running;
  for (int i = 0; i < 3; ++i) {  // one runs, two wait (queue_size 2)
    running.push_back(std::async(std::launch::async, [this, i] {
      return post_sse("/execute", R"({"job_id":"q)" + std::to_string(i) + R"(","prompt":"x","max_tokens":5})");
    }));
    std::this_thread::sleep_for(30ms);
  }
  auto r = client().Post("/execute", R"({"job_id":"q9","prompt":"x","max_tokens":5})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(nlohmann::json::parse(r->body)["code"], "QUEUE_FULL");
  EXPECT_TRUE(r->has_header("Retry-After"));
  // A duplicate of a queued job id is refused too.
  r = client().Post("/execute", R"({"job_id":"q2","prompt":"x","max_tokens":5})", "application/json");
  EXPECT_TRUE(r->status == 409 || r->status == 503);
  for (auto& f : running) EXPECT_EQ(f.get().events.back().first, "end");
}

TEST_F(ServerTest, OpenAiCompletionsChatAndModels) {
  auto c = client();
  auto r = c.Post("/v1/completions", R"({"model":"fake-model","prompt":"hi","max_tokens":2})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  auto j = nlohmann::json::parse(r->body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], " alpha beta");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 2);

  r = c.Post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":3,"stop":["gamma"]})", "application/json");
  j = nlohmann::json::parse(r->body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], " alpha beta ");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");

  const auto s = post_sse("/v1/chat/completions", R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":2,"stream":true})");
  ASSERT_GE(s.events.size(), 4u);
  EXPECT_EQ(s.events[0].second["object"], "chat.completion.chunk");
  EXPECT_EQ(s.events[0].second["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(s.events.back().second, "[DONE]");
  EXPECT_EQ(s.events[s.events.size() - 2].second["choices"][0]["finish_reason"], "length");

  r = c.Get("/v1/models");
  j = nlohmann::json::parse(r->body);
  EXPECT_EQ(j["data"][0]["id"], "fake-model");
}

TEST_F(ServerTest, HealthAndMetricsDescribeTheWorker) {
  auto r = client().Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  auto j = nlohmann::json::parse(r->body);
  EXPECT_EQ(j["status"], "healthy");
  EXPECT_EQ(j["resident"], true);
  EXPECT_EQ(j["memory_architecture"], "vram-only");
  EXPECT_EQ(j["quant_kind"], "Q4_K_M");
  EXPECT_EQ(j["vram_bytes_used"], 1200);
  EXPECT_EQ(j["vram_breakdown"]["kv_cache"], 200);
  for (const char* k : {"model", "last_check_secs", "tokenizer_kind", "vocab_size", "context_length", "uptime_seconds", "sm",
                        "cuda_runtime_version", "worker_id"})
    EXPECT_TRUE(j.contains(k)) << k;
  post_sse("/execute", R"({"job_id":"m","prompt":"x","max_tokens":2})");
  r = client().Get("/metrics");
  for (const char* name : {"orcd_vram_bytes{purpose=\"weights\"} 1000", "orcd_requests_total{outcome=\"ok\"} 1",
                           "orcd_tokens_generated_total 2", "orcd_time_to_first_token_seconds_count 1", "orcd_token_latency_seconds_count 1",
                           "orcd_queue_depth 0", "orcd_uptime_seconds", "orcd_residency_checks_total"})
    EXPECT_NE(r->body.find(name), std::string::npos) << name;
}

TEST_F(ServerTest, HealthIncludesInstalledExtras) {
  server->set_health_extra([] { return nlohmann::json{{"vram_headroom_bytes", 123}, {"other_processes", {{"count", 2}}}}; });
  auto r = client().Get("/health");
  ASSERT_TRUE(r);
  const auto j = nlohmann::json::parse(r->body);
  EXPECT_EQ(j["vram_headroom_bytes"], 123);
  EXPECT_EQ(j["other_processes"]["count"], 2);
  EXPECT_EQ(j["status"], "healthy");
}

TEST_F(ServerTest, ResidencyViolationMakesTheWorkerUnhealthy) {
  fake->violate_residency = true;
  auto r = client().Get("/health?verify=1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  auto j = nlohmann::json::parse(r->body);
  EXPECT_EQ(j["resident"], false);
  EXPECT_EQ(j["status"], "unhealthy");
  EXPECT_NE(j["residency_violations"][0].get<std::string>().find("planted"), std::string::npos);
  r = client().Post("/execute", R"({"job_id":"u","prompt":"x"})", "application/json");
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(nlohmann::json::parse(r->body)["code"], "WORKER_UNHEALTHY");
  EXPECT_EQ(metrics.value("orcd_residency_failures_total"), 1);
}

TEST_F(ServerTest, ShutdownEndsRunningStreamsAndStopsServing) {
  fake->delay = 20ms;
  std::string words;
  for (int i = 0; i < 200; ++i) words += "w ";
  fake->script = words;
  auto fut = std::async(std::launch::async, [&] { return post_sse("/execute", R"({"job_id":"sd","prompt":"x","max_tokens":60})"); });
  std::this_thread::sleep_for(100ms);
  auto r = client().Post("/shutdown", "", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 202);
  const auto s = fut.get();
  ASSERT_FALSE(s.events.empty());
  EXPECT_EQ(s.events.back().second["code"], "CANCELLED");
  serving.join();  // serve() returned
  serving = std::thread([] {});
  EXPECT_FALSE(client().Get("/health"));  // nothing listens any more
}

}  // namespace
