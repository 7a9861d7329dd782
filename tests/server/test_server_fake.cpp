// The real WorkerServer over loopback HTTP, driven by a scripted backend (no GPU needed):
// streaming, cancel, disconnect, queue limits, bad input, OpenAI endpoints, health, shutdown.
#include <gtest/gtest.h>
#include <httplib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>
#include <sstream>
#include <thread>

#include "server/fake_backend.h"
#include "server/server.h"

using namespace orcd;
using orcd::test::FakeBackend;
using namespace std::chrono_literals;

namespace {


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
    if (configure) configure(cfg);
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
  // Waits until the fake has begun a job (a slow machine or a sanitizer may take a while), plus
  // one step of it.
  void wait_until_started() {
    for (int i = 0; i < 1000 && fake->started == 0; ++i) std::this_thread::sleep_for(5ms);
    std::this_thread::sleep_for(fake->delay.load() * 2);
  }
  // POSTs and reads the whole streamed body.
  Sse post_sse(const std::string& path, const std::string& body, int* status = nullptr) {
    auto r = client().Post(path.c_str(), body, "application/json");
    EXPECT_TRUE(r) << "request failed";
    if (!r) return {};
    if (status) *status = r->status;
    return parse_sse(r->body);
  }

  std::function<void(WorkerConfig&)> configure;
  Narrator log{true};
  Metrics metrics;
  std::unique_ptr<WorkerServer> server;
  FakeBackend* fake = nullptr;
  int port = 0;
  std::thread serving;
};

// Sends raw bytes on a fresh connection and returns what comes back before the server closes it
// (or `wait` passes).
std::string raw_exchange(int port, const std::string& bytes, std::chrono::milliseconds wait = 3000ms, bool close_early = false) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return "connect failed";
  for (size_t off = 0; off < bytes.size();) {
    const ssize_t n = ::send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  std::string out;
  if (!close_early) {
    timeval tv{static_cast<time_t>(wait.count() / 1000), static_cast<suseconds_t>((wait.count() % 1000) * 1000)};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[4096];
    ssize_t n;
    while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

int status_of(const std::string& response) { return response.size() > 12 && response.starts_with("HTTP/1.1 ") ? std::stoi(response.substr(9, 3)) : 0; }

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
  wait_until_started();
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
  fake->delay = 200ms;  // the first job runs a second, long enough for the others to queue
  std::vector<std::future<Sse>> running;
  for (int i = 0; i < 3; ++i)  // one runs, two wait (queue_size 2)
    running.push_back(std::async(std::launch::async, [this, i] {
      return post_sse("/execute", R"({"job_id":"q)" + std::to_string(i) + R"(","prompt":"x","max_tokens":5})");
    }));
  for (int i = 0; i < 500 && !(fake->started == 1 && metrics.value("orcd_queue_depth") == 2); ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(metrics.value("orcd_queue_depth"), 2);
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
  EXPECT_TRUE(j["resident"].is_null()) << "no residency check has run yet";
  EXPECT_EQ(nlohmann::json::parse(client().Get("/health?verify=1")->body)["resident"], true);
  j = nlohmann::json::parse(client().Get("/health")->body);
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

TEST_F(ServerTest, ImmediateShutdownEndsRunningStreamsAndStopsServing) {
  fake->delay = 20ms;
  std::string words;
  for (int i = 0; i < 200; ++i) words += "w ";
  fake->script = words;
  auto fut = std::async(std::launch::async, [&] { return post_sse("/execute", R"({"job_id":"sd","prompt":"x","max_tokens":60})"); });
  wait_until_started();
  auto r = client().Post("/shutdown?now=1", "", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 202);
  const auto s = fut.get();
  ASSERT_FALSE(s.events.empty());
  EXPECT_EQ(s.events.back().second["code"], "CANCELLED");
  serving.join();  // serve() returned
  serving = std::thread([] {});
  EXPECT_FALSE(client().Get("/health"));  // nothing listens any more
}

class SecuredServerTest : public ServerTest {
 protected:
  void SetUp() override {
    configure = [](WorkerConfig& c) {
      c.api_key = "k-user";
      c.admin_api_key = "k-admin";
    };
    start();
  }
  httplib::Result post_with(const char* path, const std::string& key, const std::string& body = R"({"job_id":"a","prompt":"x","max_tokens":1})") {
    auto c = client();
    httplib::Headers h;
    if (!key.empty()) h.emplace("Authorization", "Bearer " + key);
    return c.Post(path, h, body, "application/json");
  }
};

TEST_F(SecuredServerTest, EveryRouteButHealthAndMetricsNeedsTheKey) {
  auto r = post_with("/execute", "");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(nlohmann::json::parse(r->body)["code"], "UNAUTHORIZED");
  EXPECT_EQ(post_with("/execute", "k-wrong")->status, 401);
  EXPECT_EQ(post_with("/execute", "k-user-but-longer")->status, 401);
  EXPECT_EQ(post_with("/cancel", "", R"({"job_id":"a"})")->status, 401);
  EXPECT_EQ(client().Get("/v1/models")->status, 401);
  EXPECT_EQ(fake->started, 0);
  EXPECT_EQ(post_with("/execute", "k-user")->status, 200);
  EXPECT_EQ(fake->started, 1);
  for (const char* open : {"/health", "/metrics", "/livez", "/readyz"}) EXPECT_EQ(client().Get(open)->status, 200) << open;
  EXPECT_GE(metrics.value("orcd_http_rejections_total", {{"reason", "auth"}}), 5);
}

TEST_F(SecuredServerTest, ShutdownTakesTheAdminKeyOnly) {
  EXPECT_EQ(post_with("/shutdown", "", "{}")->status, 401);
  EXPECT_EQ(post_with("/shutdown", "k-user", "{}")->status, 401);
  EXPECT_EQ(server->state(), WorkerState::healthy);
  EXPECT_EQ(post_with("/shutdown", "k-admin", "{}")->status, 202);
  serving.join();
  serving = std::thread([] {});
}

TEST_F(ServerTest, PostsMustBeJsonUncompressedAndForThisHost) {
  auto c = client();
  auto r = c.Post("/shutdown", "", "text/plain");  // what a web page can send without a preflight
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 415);
  EXPECT_EQ(server->state(), WorkerState::healthy);
  r = c.Post("/execute", {{"Content-Encoding", "gzip"}}, "x", "application/json");
  EXPECT_EQ(r->status, 415);
  EXPECT_EQ(nlohmann::json::parse(r->body)["code"], "UNSUPPORTED_ENCODING");
  // A rebound DNS name reaches loopback with its own Host header.
  r = c.Get("/health", {{"Host", "evil.example:8080"}});
  EXPECT_EQ(r->status, 403);
  EXPECT_EQ(nlohmann::json::parse(r->body)["code"], "FORBIDDEN_HOST");
  EXPECT_EQ(c.Get("/health", {{"Host", "localhost:" + std::to_string(port)}})->status, 200);
  EXPECT_EQ(c.Get("/health", {{"Host", "[::1]:" + std::to_string(port)}})->status, 200);
  // A length that is not a number is refused before any body is read, and nothing breaks.
  const std::string bad = raw_exchange(port, "POST /execute HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                                             "Content-Length: 12abc\r\n\r\n{}");
  EXPECT_EQ(status_of(bad), 413) << bad.substr(0, 200);
  EXPECT_EQ(c.Get("/health")->status, 200);
}

TEST_F(ServerTest, ChunkedBodiesStopAtTheLimit) {
  std::string req = "POST /execute HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
  const std::string chunk(1000, ' ');
  for (int i = 0; i < 20; ++i) req += "3e8\r\n" + chunk + "\r\n";  // 20 KB of whitespace, over the 4 KB limit
  req += "0\r\n\r\n";
  const std::string resp = raw_exchange(port, req);
  EXPECT_EQ(status_of(resp), 413) << resp.substr(0, 200);
  // A small chunked body is accepted.
  const std::string body = R"({"job_id":"ch","prompt":"x","max_tokens":1})";
  char len[16];
  std::snprintf(len, sizeof len, "%zx", body.size());
  const std::string ok = raw_exchange(port, "POST /execute HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                                            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + std::string(len) + "\r\n" + body + "\r\n0\r\n\r\n");
  EXPECT_EQ(status_of(ok), 200) << ok.substr(0, 200);
  EXPECT_NE(ok.find("event: end"), std::string::npos);
}

TEST_F(ServerTest, HeaderFloodsAndHugeHeaderLinesAreCutOff) {
  std::string flood = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  for (int i = 0; i < 2000; ++i) flood += "X-" + std::to_string(i) + ": y\r\n";
  flood += "\r\n";
  const std::string a = raw_exchange(port, flood);
  EXPECT_TRUE(status_of(a) == 431 || a.empty()) << a.substr(0, 200);
  const std::string b = raw_exchange(port, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + std::string(1 << 20, 'a') + "\r\n\r\n");
  EXPECT_TRUE(status_of(b) == 431 || b.empty()) << b.substr(0, 200);
  EXPECT_EQ(client().Get("/health")->status, 200);  // still serving
}

class SlowClientTest : public ServerTest {
 protected:
  void SetUp() override {
    configure = [](WorkerConfig& c) { c.request_read_timeout_secs = 0.5; };
    start();
  }
};

TEST_F(SlowClientTest, ARequestNotReadInTimeIsDropped) {
  const auto t0 = std::chrono::steady_clock::now();
  // Half a head, then nothing (a slowloris client): the connection is closed at the deadline.
  const std::string r = raw_exchange(port, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1\r\n", 5000ms);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(s, 3.0);
  EXPECT_EQ(r.find("\"status\":\"healthy\""), std::string::npos);
  // A body that never completes: 408 or closed, well before the client's own 5 s.
  const std::string b = raw_exchange(port, "POST /execute HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", 5000ms);
  EXPECT_TRUE(status_of(b) == 408 || b.empty()) << b.substr(0, 200);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
  EXPECT_EQ(fake->started, 0);
}

TEST_F(ServerTest, NonStreamingRequestsAreCancelledWhenTheClientLeaves) {
  fake->delay = 20ms;
  std::string words;
  for (int i = 0; i < 200; ++i) words += "w ";
  fake->script = words;
  const std::string body = R"({"prompt":"x","max_tokens":60})";
  raw_exchange(port, "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: " +
                         std::to_string(body.size()) + "\r\n\r\n" + body, 0ms, /*close_early=*/true);
  for (int i = 0; i < 150 && fake->cancelled == 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(fake->cancelled, 1);
}

TEST_F(ServerTest, RequestsEndAtTheirDeadline) {
  fake->delay = 50ms;
  std::string words;
  for (int i = 0; i < 200; ++i) words += "w ";
  fake->script = words;
  auto r = client().Post("/v1/completions", R"({"prompt":"x","max_tokens":60,"timeout_secs":1})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504);
  EXPECT_EQ(nlohmann::json::parse(r->body)["error"]["code"], "DEADLINE_EXCEEDED");
  const auto s = post_sse("/execute", R"({"job_id":"dl","prompt":"x","max_tokens":60,"timeout_secs":1})");
  ASSERT_FALSE(s.events.empty());
  EXPECT_EQ(s.events.back().second["code"], "DEADLINE_EXCEEDED");
  EXPECT_EQ(metrics.value("orcd_requests_total", {{"outcome", "deadline"}}), 2);
}

class CappedChatTest : public ServerTest {
 protected:
  void SetUp() override {
    configure = [](WorkerConfig& c) {
      c.default_max_tokens = 3;
      c.max_prompt_bytes = 64;
    };
    start();
  }
};

TEST_F(CappedChatTest, ChatHasADefaultCapAndPromptsAreMeasuredBeforeTokenizing) {
  auto r = client().Post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"hi"}]})", "application/json");
  ASSERT_TRUE(r);
  const auto j = nlohmann::json::parse(r->body);
  EXPECT_EQ(j["usage"]["completion_tokens"], 3);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(fake->tokenized, 1);  // once, before admission; generate() reuses the ids
  r = client().Post("/execute", R"({"job_id":"big","prompt":")" + std::string(65, 'x') + R"("})", "application/json");
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(nlohmann::json::parse(r->body)["code"], "PROMPT_TOO_LARGE");
  EXPECT_EQ(fake->tokenized, 1);
}

TEST_F(ServerTest, ProbesAndTerminalStates) {
  EXPECT_EQ(client().Get("/readyz")->status, 200);
  // Paused: alive, not ready.
  auto b = server->take_backend(WorkerState::paused, "others on the GPU");
  auto r = client().Get("/readyz");
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(nlohmann::json::parse(r->body)["code"], "WORKER_PAUSED");
  EXPECT_EQ(client().Get("/livez")->status, 200);
  EXPECT_EQ(client().Get("/health")->status, 200);
  server->set_backend(std::move(b));
  EXPECT_EQ(client().Get("/readyz")->status, 200);
  // Unhealthy is terminal: neither a pause nor a new backend makes it serve again.
  EXPECT_TRUE(server->set_state(WorkerState::unhealthy, "test"));
  b = server->take_backend(WorkerState::paused, "others");
  EXPECT_EQ(server->state(), WorkerState::unhealthy);
  server->set_backend(std::move(b));
  EXPECT_EQ(server->state(), WorkerState::unhealthy);
  EXPECT_FALSE(server->set_state(WorkerState::healthy));
  EXPECT_EQ(client().Get("/readyz")->status, 503);
  EXPECT_EQ(client().Get("/livez")->status, 503);
  EXPECT_EQ(client().Get("/health")->status, 503);
}

TEST_F(ServerTest, StateChangesReachTheListenerInOrder) {
  std::mutex mu;
  std::vector<std::string> seen;
  server->on_state_change([&](WorkerState s, const std::string&) {
    std::lock_guard lock(mu);
    seen.emplace_back(worker_state_name(s));
  });
  auto b = server->take_backend(WorkerState::paused, "x");
  server->set_backend(std::move(b), WorkerState::loading);
  server->set_state(WorkerState::healthy);
  server->drain(std::chrono::duration<double>(5), "test");
  serving.join();
  serving = std::thread([] {});
  std::lock_guard lock(mu);
  EXPECT_EQ(seen, (std::vector<std::string>{"paused", "loading", "healthy", "draining", "stopping"}));
}

TEST_F(ServerTest, DrainFinishesRunningWorkAndTakesNoMore) {
  fake->delay = 20ms;
  auto fut = std::async(std::launch::async, [&] { return post_sse("/execute", R"({"job_id":"d1","prompt":"x","max_tokens":8})"); });
  wait_until_started();
  server->drain(std::chrono::duration<double>(10), "SIGTERM");
  auto r = client().Post("/execute", R"({"job_id":"d2","prompt":"x","max_tokens":1})", "application/json");
  if (r) {  // the listener may already be gone once the running job ended
    EXPECT_EQ(r->status, 503);
    EXPECT_EQ(client().Get("/readyz")->status, 503);
  }
  const auto s = fut.get();
  ASSERT_FALSE(s.events.empty());
  EXPECT_EQ(s.events.back().first, "end");  // finished, not cancelled
  EXPECT_EQ(s.events.back().second["tokens_out"], 8);
  serving.join();
  serving = std::thread([] {});
}

TEST_F(ServerTest, ADeviceThatCannotRecoverMakesTheWorkerUnhealthyForGood) {
  fake->break_device = true;
  const auto s = post_sse("/execute", R"({"job_id":"x","prompt":"x","max_tokens":2})");
  ASSERT_FALSE(s.events.empty());
  EXPECT_EQ(s.events.back().second["code"], "INTERNAL");
  EXPECT_TRUE(server->device_lost());
  EXPECT_EQ(server->state(), WorkerState::unhealthy);
  EXPECT_FALSE(server->set_state(WorkerState::paused));
}

TEST_F(ServerTest, UnknownChatTemplatesFallBackToChatMl) {
  auto b = server->take_backend(WorkerState::loading);
  auto* f = static_cast<FakeBackend*>(b.get());
  f->mutable_info().chat_format = ChatFormat::none;
  server->set_backend(std::move(b));
  auto r = client().Post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":1})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(nlohmann::json::parse(client().Get("/health")->body)["chat_template"], "chatml");
}

}  // namespace
