// TOML config with flag precedence rules, metrics exposition, narration format.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <fstream>

#include "server/config.h"
#include "server/refusal.h"
#include "server/metrics.h"
#include "server/narrator.h"
#include "testutil.h"

using namespace orcd;

namespace {
std::string write_tmp(const std::string& text) {
  const std::string p = test::temp_dir() + "/worker.toml";
  std::ofstream(p) << text;
  return p;
}
}  // namespace

TEST(Config, TomlOverridesDefaults) {
  WorkerConfig c;
  c.load_toml(write_tmp("model = \"/m.gguf\"\nport = 9001\nqueue_size = 3\nlog_format = \"text\"\nreserved_system_vram = 0\n"
                        "auto_pause_for_contention = true\ncontention_grace_secs = 2.5\n"));
  EXPECT_EQ(c.model, "/m.gguf");
  EXPECT_EQ(c.port, 9001);
  EXPECT_EQ(c.queue_size, 3);
  EXPECT_EQ(c.log_format, "text");
  ASSERT_TRUE(c.reserved_system_vram.has_value());
  EXPECT_EQ(*c.reserved_system_vram, 0u);
  EXPECT_TRUE(c.auto_pause_for_contention);
  EXPECT_DOUBLE_EQ(c.contention_grace_secs, 2.5);
  EXPECT_EQ(c.host, "127.0.0.1");  // untouched default
  EXPECT_NO_THROW(c.validate());
}

TEST(Config, ErrorsNameTheKey) {
  auto msg = [](const std::string& toml) {
    WorkerConfig c;
    try {
      c.load_toml(write_tmp(toml));
      c.validate();
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(msg("prot = 1\n").find("unknown key 'prot'"), std::string::npos);
  EXPECT_NE(msg("port = \"80\"\n").find("'port' must be an integer"), std::string::npos);
  EXPECT_NE(msg("port = 70000\n").find("port"), std::string::npos);
  EXPECT_NE(msg("log_format = \"xml\"\n").find("log_format"), std::string::npos);
  EXPECT_NE(msg("queue_size = -1\n").find("queue_size"), std::string::npos);
  EXPECT_NE(msg("port = [\n").find("worker.toml"), std::string::npos);  // parse error with the file name
  EXPECT_NE(msg("callback_url = \"ftp://x\"\n").find("callback_url"), std::string::npos);
}

TEST(Config, TheSpecificationsWorkerTableLoads) {
  // The shared-GPU layout, as the specification documents it.
  WorkerConfig c;
  c.load_toml(write_tmp("[worker]\ngpu_device = 0\nallow_shared_gpu = true\nreserved_system_vram = 2147483648  # 2GB\n"
                        "auto_pause_for_gaming = true\nmax_model_size = 8589934592\n"));
  EXPECT_EQ(c.gpu_device, 0);
  EXPECT_TRUE(c.allow_shared_gpu);
  EXPECT_EQ(c.reserved_system_vram.value_or(0), 2147483648u);
  EXPECT_TRUE(c.auto_pause_for_contention);
  EXPECT_EQ(c.max_model_size, 8589934592u);
  EXPECT_NO_THROW(c.validate());
  // The dedicated layout, with flat keys beside the table.
  WorkerConfig d;
  d.load_toml(write_tmp("port = 9100\n[worker]\ngpu_device = 1  # Use second GPU\nallow_shared_gpu = false\n"));
  EXPECT_EQ(d.port, 9100);
  EXPECT_EQ(d.gpu_device, 1);
  EXPECT_FALSE(d.allow_shared_gpu);
  WorkerConfig e;
  EXPECT_THROW(e.load_toml(write_tmp("[worker]\nprot = 1\n")), ConfigError);
  EXPECT_THROW(e.load_toml(write_tmp("worker = 3\n")), ConfigError);
}

TEST(Config, KeysAndExposure) {
  WorkerConfig c;
  c.host = "0.0.0.0";
  EXPECT_THROW(c.validate(), ConfigError);  // reachable from other machines with no key
  c.allow_unauthenticated = true;
  EXPECT_NO_THROW(c.validate());
  c.allow_unauthenticated = false;
  const std::string dir = test::temp_dir();
  std::ofstream(dir + "/key") << "s3cret\n";
  ::chmod((dir + "/key").c_str(), 0600);
  c.api_key_file = dir + "/key";
  c.resolve_key_files();
  EXPECT_EQ(c.api_key, "s3cret");
  EXPECT_NO_THROW(c.validate());
  ::chmod((dir + "/key").c_str(), 0644);
  EXPECT_THROW(c.resolve_key_files(), ConfigError);  // readable by every user
  c.admin_api_key = "s3cret";
  EXPECT_THROW(c.validate(), ConfigError);  // the admin key must differ
  c.admin_api_key.clear();
  c.auth_exempt_routes.push_back("/shutdown");
  EXPECT_THROW(c.validate(), ConfigError);
  c.auth_exempt_routes.pop_back();
  c.chat_template = "jinja-of-my-own";
  EXPECT_THROW(c.validate(), ConfigError);
  c.chat_template = "llama3";
  EXPECT_NO_THROW(c.validate());
}

TEST(Metrics, RendersPrometheusText) {
  Metrics m;
  m.counter("c_total", "a counter");
  m.gauge("g", "a gauge");
  m.histogram("h_seconds", "a histogram", {0.1, 1});
  m.inc("c_total", {{"outcome", "ok"}});
  m.inc("c_total", {{"outcome", "ok"}}, 2);
  m.inc("c_total", {{"outcome", "say \"hi\""}});
  m.set("g", 4.5);
  m.observe("h_seconds", 0.05);
  m.observe("h_seconds", 0.5);
  m.observe("h_seconds", 5);
  const std::string t = m.render();
  EXPECT_NE(t.find("# TYPE c_total counter\n"), std::string::npos);
  EXPECT_NE(t.find("c_total{outcome=\"ok\"} 3\n"), std::string::npos);
  EXPECT_NE(t.find("c_total{outcome=\"say \\\"hi\\\"\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find("g 4.5\n"), std::string::npos);
  EXPECT_NE(t.find("h_seconds_bucket{le=\"0.10000000000000001\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find("h_seconds_bucket{le=\"1\"} 2\n"), std::string::npos);
  EXPECT_NE(t.find("h_seconds_bucket{le=\"+Inf\"} 3\n"), std::string::npos);
  EXPECT_NE(t.find("h_seconds_count 3\n"), std::string::npos);
  EXPECT_EQ(m.value("c_total", {{"outcome", "ok"}}), 3);
  EXPECT_THROW(m.inc("undeclared"), std::logic_error);
}

TEST(Narrator, JsonLinesAndText) {
  Narrator json(true), text(false);
  const auto line = json.format(LogLevel::warn, "reject", "job", "queue full", {{"code", "QUEUE_FULL"}}, "j-1");
  const auto j = nlohmann::json::parse(line);
  EXPECT_EQ(j["level"], "warn");
  EXPECT_EQ(j["actor"], "worker-orcd");
  EXPECT_EQ(j["action"], "reject");
  EXPECT_EQ(j["target"], "job");
  EXPECT_EQ(j["job_id"], "j-1");
  EXPECT_EQ(j["msg"], "queue full");
  EXPECT_EQ(j["fields"]["code"], "QUEUE_FULL");
  EXPECT_EQ(line.find('\n'), std::string::npos);
  const auto t = text.format(LogLevel::info, "ready", "worker", "serving", {}, "");
  EXPECT_NE(t.find(" info ready worker serving"), std::string::npos);
}

TEST(VramRefusal, JsonHasEveryFieldAPersonAndAMachineNeed) {
  const InsufficientVramError e("POOL_UNAVAILABLE (insufficient VRAM): model needs more", 5'000'000'000, 3'000'000'000, 2'147'483'648);
  const auto j = vram_refusal_json(e, 0, 30, {{"model", "/m.gguf"}});
  EXPECT_EQ(j["error"], "pool_unavailable");
  EXPECT_EQ(j["code"], "POOL_UNAVAILABLE");
  EXPECT_EQ(j["reason"], "insufficient_vram");
  EXPECT_EQ(j["needed_bytes"], 5'000'000'000u);
  EXPECT_EQ(j["free_bytes"], 3'000'000'000u);
  EXPECT_EQ(j["headroom_bytes"], 2'147'483'648u);
  EXPECT_EQ(j["gpu"], 0);
  EXPECT_EQ(j["retriable"], true);
  EXPECT_EQ(j["retry_after"], 30);
  EXPECT_EQ(j["details"]["model"], "/m.gguf");
  EXPECT_GE(j["suggestions"].size(), 4u);
}
