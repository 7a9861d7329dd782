// `worker-orcd serve`: validate, check the GPU, admit, load, listen, say ready; on SIGTERM or
// SIGINT stop taking jobs, cancel the running one, free VRAM and exit 0.
#include <CLI/CLI.hpp>
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>
#include <thread>

#include "cli/commands.h"
#include "engine/device.h"
#include "engine/engine.h"
#include "gguf/gguf.h"
#include "server/server.h"

namespace orcd::cli {

namespace {

constexpr const char* kDefaultModelFile = "qwen2.5-0.5b-instruct-q4_k_m.gguf";

// $WORKER_ORCD_MODEL, else the cache: $XDG_CACHE_HOME or ~/.cache, under worker-orcd/models.
std::string default_model_path() {
  if (const char* m = std::getenv("WORKER_ORCD_MODEL"); m && *m) return m;
  std::filesystem::path cache;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) cache = x;
  else if (const char* h = std::getenv("HOME"); h && *h) cache = std::filesystem::path(h) / ".cache";
  else cache = "/var/cache";
  return (cache / "worker-orcd" / "models" / kDefaultModelFile).string();
}

// POSTs the ready message; a callback that cannot be reached is logged, not fatal.
void post_ready(const std::string& url, const nlohmann::json& body, Narrator& log) {
  const auto scheme_end = url.find("://");
  const auto path_start = url.find('/', scheme_end + 3);
  const std::string base = url.substr(0, path_start);
  const std::string path = path_start == std::string::npos ? "/" : url.substr(path_start);
  httplib::Client cli(base);
  cli.set_connection_timeout(5);
  cli.set_read_timeout(5);
  auto r = cli.Post(path, body.dump(), "application/json");
  if (!r) log.error("callback", url, "ready callback failed: " + httplib::to_string(r.error()));
  else if (r->status >= 300) log.error("callback", url, "ready callback answered HTTP " + std::to_string(r->status));
  else log.info("callback", url, "ready callback delivered", {{"status", r->status}});
}

}  // namespace

Runner add_serve(CLI::App& app) {
  struct Opts {
    WorkerConfig cfg;
    std::string config_file;
    bool log_text = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("serve", "Load a model into VRAM and serve it over HTTP");
  cmd->add_option("--config", o->config_file, "TOML config file; flags override it");
  // Flags are read into a second config and applied over the file's values when given.
  auto f = std::make_shared<WorkerConfig>();
  auto* model = cmd->add_option("--model,-m", f->model, "GGUF file (default: $WORKER_ORCD_MODEL or the cache's Qwen2.5-0.5B-Instruct Q4_K_M)");
  auto* gpu = cmd->add_option("--gpu-device", f->gpu_device, "CUDA device index");
  auto* port = cmd->add_option("--port", f->port, "TCP port (0: any free port)");
  auto* host = cmd->add_option("--host", f->host, "Address to listen on");
  auto* wid = cmd->add_option("--worker-id", f->worker_id, "Worker id reported in health and the ready callback");
  auto* ctx = cmd->add_option("--ctx-size,-c", f->ctx_size, "Context length (default: the model's, at most 4096)");
  auto* cb = cmd->add_option("--callback-url", f->callback_url, "POST a ready message here once serving");
  auto* qs = cmd->add_option("--queue-size", f->queue_size, "Requests that may wait behind the running one");
  auto* rc = cmd->add_option("--residency-check-secs", f->residency_check_secs, "Seconds between VRAM residency checks");
  auto* lf = cmd->add_option("--log-format", f->log_format, "json or text");
  auto* lp = cmd->add_flag("--log-prompts", f->log_prompts, "Log prompts and outputs (off by default)");
  auto* mb = cmd->add_option("--max-body-bytes", f->max_body_bytes, "Largest request body accepted");
  auto reserved = std::make_shared<uint64_t>(0);
  auto* rv = cmd->add_option("--reserved-vram", *reserved, "Bytes of VRAM never used (default max(10% of total, 2 GiB))");
  return [o, f, model, gpu, port, host, wid, ctx, cb, qs, rc, lf, lp, mb, rv, reserved] {
    WorkerConfig& c = o->cfg;
    if (!o->config_file.empty()) c.load_toml(o->config_file);
    if (*model) c.model = f->model;
    if (*gpu) c.gpu_device = f->gpu_device;
    if (*port) c.port = f->port;
    if (*host) c.host = f->host;
    if (*wid) c.worker_id = f->worker_id;
    if (*ctx) c.ctx_size = f->ctx_size;
    if (*cb) c.callback_url = f->callback_url;
    if (*qs) c.queue_size = f->queue_size;
    if (*rc) c.residency_check_secs = f->residency_check_secs;
    if (*lf) c.log_format = f->log_format;
    if (*lp) c.log_prompts = true;
    if (*mb) c.max_body_bytes = f->max_body_bytes;
    if (*rv) c.reserved_system_vram = *reserved;
    const bool defaulted = c.model.empty();
    if (defaulted) c.model = default_model_path();
    c.validate();
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

    // 1. Arguments and the model file.
    std::vector<std::string> problems;
    if (!std::filesystem::exists(c.model))
      problems.push_back(fmt::format("MODEL_NOT_FOUND: no model at {}. What to do: pass --model FILE.gguf, set WORKER_ORCD_MODEL, or place {} at that path.",
                                     c.model, defaulted ? "the reference model (Qwen2.5-0.5B-Instruct Q4_K_M)" : "the file you named"));
    // 2. The device.
    const GpuInventory inv = probe_gpus();
    if (inv.devices.empty())
      problems.push_back(fmt::format("NO_GPU: no usable CUDA device ({}). worker-orcd is VRAM-only by policy and never runs on the CPU; "
                                     "run it on a machine with an NVIDIA GPU and driver.", inv.error));
    else if (c.gpu_device >= static_cast<int>(inv.devices.size()))
      problems.push_back(fmt::format("NO_GPU: --gpu-device {} does not exist; this machine has {} device(s).", c.gpu_device, inv.devices.size()));
    if (!problems.empty()) {
      for (const auto& p : problems) {
        log.error("preflight", "worker", p);
        fmt::print(stderr, "worker-orcd: {}\n", p);
      }
      return 1;
    }
    const GpuDevice& d = inv.devices[c.gpu_device];
    log.info("preflight", "gpu", fmt::format("GPU {} {} (sm_{}{}): {} of {} bytes free", d.index, d.name, d.sm_major, d.sm_minor, d.free_bytes, d.total_bytes),
             {{"gpu", d.index}, {"free_bytes", d.free_bytes}, {"total_bytes", d.total_bytes}});

    WorkerServer server(c, log, metrics);
    // 3 + 4. Admit and load (InferenceEngine::load plans and refuses before allocating).
    EngineOptions eo;
    eo.device = c.gpu_device;
    eo.n_ctx = c.ctx_size;
    eo.max_batch_tokens = c.max_batch_tokens;
    eo.reserved_vram = c.reserved_system_vram;
    int last = -1;
    eo.progress = [&](uint64_t done, uint64_t total) {
      const int pct = static_cast<int>(100 * done / std::max<uint64_t>(total, 1));
      if (pct / 10 != last / 10) log.info("load", c.model, fmt::format("loading weights: {}%", pct), {{"bytes", done}, {"total_bytes", total}});
      last = pct;
    };
    std::unique_ptr<InferenceEngine> engine;
    try {
      engine = InferenceEngine::load(c.model, eo);
    } catch (const InsufficientVramError& e) {
      log.error("admit", c.model, e.what(), {{"code", "INSUFFICIENT_VRAM"}, {"needed_bytes", e.needed()}, {"free_bytes", e.free_bytes()},
                                               {"headroom_bytes", e.headroom()}, {"gpu", c.gpu_device}});
      fmt::print(stderr, "worker-orcd: {}\n", e.what());
      return 1;
    } catch (const std::exception& e) {
      log.error("load", c.model, e.what());
      fmt::print(stderr, "worker-orcd: {}\n", e.what());
      return 1;
    }
    const uint64_t vram = engine->tracker().total_bytes();
    server.set_backend(make_engine_backend(std::move(engine)));
    // 5. HTTP, then ready.
    int bound = 0;
    try {
      bound = server.bind();
    } catch (const std::exception& e) {
      log.error("listen", c.host, e.what());
      fmt::print(stderr, "worker-orcd: {}\n", e.what());
      return 1;
    }
    const std::string address = c.host + ":" + std::to_string(bound);
    log.info("ready", "worker", "ready: serving " + c.model + " on " + address,
             {{"worker_id", c.worker_id}, {"address", address}, {"port", bound}, {"vram_bytes", vram}, {"memory_architecture", "vram-only"}});
    if (!c.callback_url.empty())
      post_ready(c.callback_url,
                 {{"worker_id", c.worker_id}, {"model", c.model}, {"vram_bytes", vram}, {"address", address}, {"memory_architecture", "vram-only"}},
                 log);

    std::thread signals([&] {
      int sig = 0;
      sigwait(&stop_signals, &sig);
      if (sig == SIGTERM || sig == SIGINT) {
        log.info("signal", "worker", std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") + ", shutting down");
        server.request_shutdown(sig == SIGTERM ? "SIGTERM" : "SIGINT");
      }
    });
    server.serve();
    // Free VRAM before saying we are done.
    server.take_backend(WorkerState::stopping).reset();
    log.info("stopped", "worker", "stopped; all VRAM released");
    // Wake the signal thread if it is still waiting.
    pthread_kill(signals.native_handle(), SIGTERM);
    signals.join();
    return 0;
  };
}

}  // namespace orcd::cli
