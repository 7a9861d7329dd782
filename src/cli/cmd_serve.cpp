// `worker-orcd serve`: flags and the TOML file become a WorkerConfig; the Worker does the rest.
// SIGTERM or SIGINT drains (in-flight work finishes for drain_secs); a second one stops at once.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <thread>

#include "cli/commands.h"
#include "server/provision.h"
#include "server/worker.h"

namespace orcd::cli {

Runner add_serve(CLI::App& app) {
  struct Opts {
    WorkerConfig cfg;
    std::string config_file;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("serve", "Load a model into VRAM and serve it over HTTP");
  cmd->add_option("--config", o->config_file, "TOML config file (flat keys or a [worker] table); flags override it");
  // Flags are read into a second config; each one given replaces the file's value.
  auto f = std::make_shared<WorkerConfig>();
  auto overrides = std::make_shared<std::vector<std::function<void(WorkerConfig&)>>>();
  auto option = [&]<class V>(const char* name, V WorkerConfig::*member, const char* help) {
    CLI::Option* opt = cmd->add_option(name, (*f).*member, help);
    overrides->push_back([opt, f, member](WorkerConfig& c) {
      if (*opt) c.*member = (*f).*member;
    });
  };
  auto flag = [&](const char* name, bool WorkerConfig::*member, const char* help) {
    CLI::Option* opt = cmd->add_flag(name, (*f).*member, help);
    overrides->push_back([opt, f, member](WorkerConfig& c) {
      if (*opt) c.*member = (*f).*member;
    });
  };
  option("--model,-m", &WorkerConfig::model, "GGUF file, https:// URL or hf:ORG/REPO/FILE (default: $WORKER_ORCD_MODEL or Qwen2.5-0.5B-Instruct Q4_K_M)");
  option("--gpu-device", &WorkerConfig::gpu_device, "CUDA device index");
  option("--port", &WorkerConfig::port, "TCP port (0: any free port)");
  option("--host", &WorkerConfig::host, "Address to listen on");
  option("--worker-id", &WorkerConfig::worker_id, "Worker id reported in health and callbacks");
  option("--ctx-size,-c", &WorkerConfig::ctx_size, "Context length (default: the model's, at most 4096)");
  option("--callback-url", &WorkerConfig::callback_url, "POST every state change (ready, paused, ...) here");
  option("--queue-size", &WorkerConfig::queue_size, "Requests that may wait behind the running one");
  option("--residency-check-secs", &WorkerConfig::residency_check_secs, "Seconds between VRAM residency checks");
  option("--log-format", &WorkerConfig::log_format, "json or text");
  option("--max-body-bytes", &WorkerConfig::max_body_bytes, "Largest request body accepted");
  option("--model-sha256", &WorkerConfig::model_sha256, "Expected SHA-256 of a remote model");
  option("--model-cache-dir", &WorkerConfig::model_cache_dir, "Where remote models are downloaded");
  option("--allow-shared-gpu", &WorkerConfig::allow_shared_gpu, "false: the GPU is dedicated (refuse to run beside other processes)");
  option("--auto-pause", &WorkerConfig::auto_pause_for_contention, "Give the GPU back while other processes use it");
  option("--gpu-poll-secs", &WorkerConfig::gpu_poll_secs, "Seconds between checks for other GPU processes");
  option("--contention-grace-secs", &WorkerConfig::contention_grace_secs, "How long others must stay (or stay away) before pausing (resuming)");
  option("--api-key-file", &WorkerConfig::api_key_file, "File holding the API key (Bearer token) for every route but health and metrics");
  option("--admin-api-key-file", &WorkerConfig::admin_api_key_file, "File holding the key for /shutdown");
  option("--timeout-secs", &WorkerConfig::timeout_secs, "A request's deadline unless it asks for less");
  option("--drain-secs", &WorkerConfig::drain_secs, "On SIGTERM, how long in-flight work may finish");
  option("--chat-template", &WorkerConfig::chat_template, "chatml, llama3, llama2, mistral or phi3 (default: the model's, else chatml)");
  option("--max-model-size", &WorkerConfig::max_model_size, "Refuse a model needing more VRAM than this many bytes");
  flag("--insecure-skip-hash", &WorkerConfig::insecure_skip_hash, "Download a remote model that has no hash to check");
  flag("--allow-http-downloads", &WorkerConfig::allow_http_downloads, "Allow http:// models and https -> http redirects");
  flag("--allow-unauthenticated", &WorkerConfig::allow_unauthenticated, "Listen beyond loopback without an API key");
  flag("--log-prompts", &WorkerConfig::log_prompts, "Log prompts and outputs (off by default)");
  // A key on the command line shows in `ps`; the environment does not.
  auto reserved = std::make_shared<uint64_t>(0);
  CLI::Option* rv = cmd->add_option("--reserved-vram", *reserved, "Bytes of VRAM never used (never below max(10% of total, 2 GiB) on a shared GPU)");
  overrides->push_back([rv, reserved](WorkerConfig& c) {
    if (*rv) c.reserved_system_vram = *reserved;
  });
  return [o, overrides] {
    WorkerConfig& c = o->cfg;
    try {
      if (!o->config_file.empty()) c.load_toml(o->config_file);
      for (const auto& apply : *overrides) apply(c);
      if (const char* k = std::getenv("WORKER_ORCD_API_KEY"); k && *k && c.api_key.empty()) c.api_key = k;
      if (const char* k = std::getenv("WORKER_ORCD_ADMIN_API_KEY"); k && *k && c.admin_api_key.empty()) c.admin_api_key = k;
      c.resolve_key_files();
      if (c.model.empty()) {
        const char* m = std::getenv("WORKER_ORCD_MODEL");
        c.model = m && *m ? m : kDefaultModelRef;
      }
      c.validate();
    } catch (const ConfigError& e) {
      fmt::print(stderr, "worker-orcd: {}\n", e.what());
      return 2;
    }
    if (c.worker_id.empty()) {
      char hn[256] = "host";
      gethostname(hn, sizeof hn - 1);
      c.worker_id = std::string("worker-") + hn + "-gpu" + std::to_string(c.gpu_device);
    }
    Narrator log(c.log_format == "json");
    Metrics metrics;

    // Block the stop signals in every thread; one thread waits for them.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    signal(SIGPIPE, SIG_IGN);

    Worker worker(c, log, metrics, make_cuda_gpu());
    std::atomic<bool> done{false};
    std::thread signals([&] {
      for (int n = 0; !done; ++n) {
        int sig = 0;
        sigwait(&stop_signals, &sig);
        if (done) break;
        const char* name = sig == SIGTERM ? "SIGTERM" : "SIGINT";
        log.info("signal", "worker", std::string("received ") + name + (n == 0 ? ", draining" : " again, stopping now"));
        worker.stop(n == 0, name);
      }
    });
    const int rc = worker.run();
    done = true;
    pthread_kill(signals.native_handle(), SIGTERM);  // wakes the signal thread if it still waits
    signals.join();
    return rc;
  };
}

}  // namespace orcd::cli
