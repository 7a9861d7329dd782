// `worker-orcd serve`: validate, check the GPU, admit, load, listen, say ready; on SIGTERM or
// SIGINT stop taking jobs, cancel the running one, free VRAM and exit 0.
#include <CLI/CLI.hpp>
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fmt/format.h>
#include <thread>

#include "cli/commands.h"
#include "engine/device.h"
#include "engine/engine.h"
#include "gguf/gguf.h"
#include "server/gpu_sharing.h"
#include "server/provision.h"
#include "server/server.h"
#include "vram/admission_ledger.h"
#include "vram/nvml.h"

#include <cuda_runtime_api.h>

namespace orcd::cli {

namespace {

constexpr const char* kDefaultModelFile = "qwen2.5-0.5b-instruct-q4_k_m.gguf";

// $WORKER_ORCD_MODEL, else the reference model in the model cache.
std::string default_model_path() {
  if (const char* m = std::getenv("WORKER_ORCD_MODEL"); m && *m) return m;
  return (std::filesystem::path(default_model_cache_dir()) / kDefaultModelFile).string();
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
  // Flags are read into a second config; each one given replaces the file's value.
  auto f = std::make_shared<WorkerConfig>();
  auto overrides = std::make_shared<std::vector<std::function<void(WorkerConfig&)>>>();
  auto option = [&]<class V>(const char* name, V WorkerConfig::*member, const char* help) {
    CLI::Option* opt = cmd->add_option(name, (*f).*member, help);
    overrides->push_back([opt, f, member](WorkerConfig& c) {
      if (*opt) c.*member = (*f).*member;
    });
  };
  option("--model,-m", &WorkerConfig::model, "GGUF file (default: $WORKER_ORCD_MODEL or the cache's Qwen2.5-0.5B-Instruct Q4_K_M)");
  option("--gpu-device", &WorkerConfig::gpu_device, "CUDA device index");
  option("--port", &WorkerConfig::port, "TCP port (0: any free port)");
  option("--host", &WorkerConfig::host, "Address to listen on");
  option("--worker-id", &WorkerConfig::worker_id, "Worker id reported in health and the ready callback");
  option("--ctx-size,-c", &WorkerConfig::ctx_size, "Context length (default: the model's, at most 4096)");
  option("--callback-url", &WorkerConfig::callback_url, "POST a ready message here once serving");
  option("--queue-size", &WorkerConfig::queue_size, "Requests that may wait behind the running one");
  option("--residency-check-secs", &WorkerConfig::residency_check_secs, "Seconds between VRAM residency checks");
  option("--log-format", &WorkerConfig::log_format, "json or text");
  option("--max-body-bytes", &WorkerConfig::max_body_bytes, "Largest request body accepted");
  option("--model-sha256", &WorkerConfig::model_sha256, "Expected SHA-256 of a model given by URL");
  option("--model-cache-dir", &WorkerConfig::model_cache_dir, "Where models given by URL are downloaded");
  option("--allow-shared-gpu", &WorkerConfig::allow_shared_gpu, "false: refuse to start beside other GPU processes");
  option("--auto-pause", &WorkerConfig::auto_pause_for_contention, "Give the GPU back while other processes use it");
  option("--gpu-poll-secs", &WorkerConfig::gpu_poll_secs, "Seconds between checks for other GPU processes");
  option("--contention-grace-secs", &WorkerConfig::contention_grace_secs, "How long others must stay (or stay away) before pausing (resuming)");
  // A switch rather than an option taking a value, and an optional member: added by hand.
  CLI::Option* log_prompts = cmd->add_flag("--log-prompts", f->log_prompts, "Log prompts and outputs (off by default)");
  overrides->push_back([log_prompts](WorkerConfig& c) {
    if (*log_prompts) c.log_prompts = true;
  });
  auto reserved = std::make_shared<uint64_t>(0);
  CLI::Option* rv = cmd->add_option("--reserved-vram", *reserved, "Bytes of VRAM never used (default max(10% of total, 2 GiB))");
  overrides->push_back([rv, reserved](WorkerConfig& c) {
    if (*rv) c.reserved_system_vram = *reserved;
  });
  return [o, overrides] {
    WorkerConfig& c = o->cfg;
    if (!o->config_file.empty()) c.load_toml(o->config_file);
    for (const auto& apply : *overrides) apply(c);
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
    const bool remote = is_model_url(c.model);
    if (!remote && !std::filesystem::exists(c.model))
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
    if (cudaSetDevice(c.gpu_device) != cudaSuccess || cudaFree(nullptr) != cudaSuccess) {
      const cudaError_t err = cudaGetLastError();
      const InsufficientVramError e(fmt::format("INSUFFICIENT_VRAM: cannot create a CUDA context on GPU {} ({}); {} of {} bytes are free. "
                                                "Try: close other programs that use this GPU.",
                                                c.gpu_device, cudaGetErrorName(err), d.free_bytes, d.total_bytes),
                                    0, d.free_bytes, 0);
      const auto j = vram_refusal_json(e, c.gpu_device, "POOL_UNAVAILABLE", 30, {{"stage", "cuda_context"}});
      log.error("admit", "gpu", e.what(), j);
      fmt::print(stderr, "worker-orcd: {}\n{}\n", e.what(), j.dump(2));
      return 1;
    }
    log.info("preflight", "gpu", fmt::format("GPU {} {} (sm_{}{}): {} of {} bytes free", d.index, d.name, d.sm_major, d.sm_minor, d.free_bytes, d.total_bytes),
             {{"gpu", d.index}, {"free_bytes", d.free_bytes}, {"total_bytes", d.total_bytes}});

    // Other processes on our GPU, through NVML when the driver's library can be loaded.
    char pci[32] = {0};
    std::string nvml_why = "cudaDeviceGetPCIBusId failed";
    std::unique_ptr<GpuProcessLister> nvml;
    if (cudaDeviceGetPCIBusId(pci, sizeof pci, c.gpu_device) == cudaSuccess) nvml = open_nvml(pci, &nvml_why);
    if (!nvml)
      log.warn("nvml", "gpu", "NVML is not available (" + nvml_why + "); other GPU processes cannot be seen, carrying on with CUDA's free-memory figures");
    const bool nvml_ok = nvml != nullptr;
    std::vector<GpuProcess> others;
    if (nvml)
      if (auto l = nvml->list(static_cast<uint32_t>(getpid()))) others = *l;
    auto describe = [](const std::vector<GpuProcess>& ps) {
      nlohmann::json j = nlohmann::json::array();
      for (const auto& p : ps) j.push_back({{"pid", p.pid}, {"used_bytes", p.used_bytes}, {"kind", p.graphics ? "graphics" : "compute"}});
      return j;
    };
    if (!c.allow_shared_gpu && !others.empty()) {
      const std::string msg = fmt::format("POOL_UNAVAILABLE: allow_shared_gpu = false and {} other process(es) use GPU {}; refusing to start. "
                                          "Stop them or allow sharing.", others.size(), c.gpu_device);
      log.error("admit", "gpu", msg, {{"code", "POOL_UNAVAILABLE"}, {"other_processes", describe(others)}});
      fmt::print(stderr, "worker-orcd: {}\n", msg);
      return 1;
    }

    // Admission ledger for this GPU: every load reserves first.
    size_t free_b = 0, total_b = 0;
    cudaSetDevice(c.gpu_device);
    cudaMemGetInfo(&free_b, &total_b);
    const uint64_t headroom = headroom_bytes(total_b, c.reserved_system_vram ? &*c.reserved_system_vram : nullptr);
    const int dev = c.gpu_device;
    AdmissionLedger ledger(dev, total_b, headroom, [dev] {
      size_t free_now = 0, total_now = 0;
      cudaSetDevice(dev);
      cudaMemGetInfo(&free_now, &total_now);
      return static_cast<uint64_t>(free_now);
    });

    // A model given by URL: size it from its header, refuse before downloading if it cannot fit.
    if (remote) {
      try {
        const RemoteModelHeader head = fetch_model_header(c.model);
        const ModelConfig mc = ModelConfig::from_gguf(*head.header);
        const int n_ctx = c.ctx_size > 0 ? c.ctx_size : std::min(mc.n_ctx_train, 4096);
        const VramPlan plan = plan_vram(*head.header, mc, n_ctx, std::min(c.max_batch_tokens, n_ctx));
        log.info("provision", c.model, fmt::format("remote model: {} bytes, needs {} of VRAM", head.file_size, plan.breakdown()),
                 {{"file_bytes", head.file_size}, {"needed_bytes", plan.total()}, {"sha256", head.sha256}});
        try {
          ledger.reserve(plan.total(), "model " + c.model);  // released at once: this only asks
        } catch (const InsufficientVramError& e) {
          const auto j = vram_refusal_json(e, dev, "INSUFFICIENT_VRAM", 30, {{"model", c.model}, {"downloaded", false}, {"plan", plan.breakdown()}});
          log.error("provision", c.model, std::string("refused before download: ") + e.what(), j);
          fmt::print(stderr, "worker-orcd: refused before download: {}\n{}\n", e.what(), j.dump(2));
          return 1;
        }
        DownloadOptions dl;
        dl.cache_dir = c.model_cache_dir;
        dl.expected_sha256 = c.model_sha256;
        int last_dl = -1;
        dl.progress = [&](uint64_t done, uint64_t total) {
          const int pct = static_cast<int>(100 * done / std::max<uint64_t>(total, 1));
          if (pct / 5 != last_dl / 5) log.info("download", c.model, fmt::format("downloading: {}%", pct), {{"bytes", done}, {"total_bytes", total}});
          last_dl = pct;
        };
        c.model = download_model(c.model, head, dl);
        log.info("download", c.model, "model ready in the cache", {{"path", c.model}});
      } catch (const std::exception& e) {
        log.error("provision", c.model, e.what());
        fmt::print(stderr, "worker-orcd: {}\n", e.what());
        return 1;
      }
    }

    WorkerServer server(c, log, metrics);
    const Labels gpu_label = {{"gpu", std::to_string(dev)}};
    metrics.counter("vram_allocation_failures_total", "VRAM admissions refused or allocations failed, by reason");
    metrics.gauge("vram_utilization_percent", "Share of the GPU's memory in use by all processes");
    metrics.gauge("vram_headroom_bytes", "VRAM this worker never uses");
    metrics.counter("concurrent_allocation_attempts_total", "Reservations attempted on the admission ledger");
    metrics.gauge("gpu_other_processes", "Other processes with a context on our GPU");
    metrics.gauge("worker_paused", "1 while the worker has given the GPU back");
    metrics.set("vram_headroom_bytes", gpu_label, static_cast<double>(headroom));
    metrics.set("worker_paused", 0);
    std::mutex others_mu;
    server.set_health_extra([&] {
      std::lock_guard lock(others_mu);
      uint64_t used = 0;
      for (const auto& p : others) used += p.used_bytes;
      return nlohmann::json{{"vram_headroom_bytes", headroom},
                            {"nvml", nvml_ok},
                            {"other_processes", {{"count", others.size()}, {"used_bytes", used}, {"list", describe(others)}}}};
    });

    // 3 + 4. Admit and load (the ledger refuses before anything is allocated).
    EngineOptions eo;
    eo.device = c.gpu_device;
    eo.n_ctx = c.ctx_size;
    eo.max_batch_tokens = c.max_batch_tokens;
    eo.reserved_vram = c.reserved_system_vram;
    eo.ledger = &ledger;
    int last = -1;
    eo.progress = [&](uint64_t done, uint64_t total) {
      const int pct = static_cast<int>(100 * done / std::max<uint64_t>(total, 1));
      if (pct / 10 != last / 10) log.info("load", c.model, fmt::format("loading weights: {}%", pct), {{"bytes", done}, {"total_bytes", total}});
      last = pct;
    };
    auto load = [&]() -> std::unique_ptr<InferenceEngine> {
      const LedgerStats before = ledger.stats();
      try {
        auto e = InferenceEngine::load(c.model, eo);
        metrics.inc("concurrent_allocation_attempts_total", {}, static_cast<double>(ledger.stats().attempts - before.attempts));
        return e;
      } catch (const InsufficientVramError&) {
        metrics.inc("concurrent_allocation_attempts_total", {}, static_cast<double>(ledger.stats().attempts - before.attempts));
        metrics.inc("vram_allocation_failures_total", {{"reason", "insufficient_vram"}});
        throw;
      } catch (const VramOomError&) {
        metrics.inc("vram_allocation_failures_total", {{"reason", "cuda_oom"}});
        throw;
      }
    };
    std::unique_ptr<InferenceEngine> engine;
    try {
      engine = load();
    } catch (const InsufficientVramError& e) {
      const auto j = vram_refusal_json(e, c.gpu_device, "INSUFFICIENT_VRAM", 30, {{"model", c.model}, {"other_processes", describe(others)}});
      log.error("admit", c.model, e.what(), j);
      fmt::print(stderr, "worker-orcd: {}\n{}\n", e.what(), j.dump(2));
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
    std::thread serving([&] { server.serve(); });
    if (!server.wait_until_listening(std::chrono::seconds(10))) {
      log.error("listen", c.host, "the HTTP server did not start accepting connections");
      server.request_shutdown("listener failed");
      serving.join();
      return 1;
    }
    const std::string address = c.host + ":" + std::to_string(bound);
    log.info("ready", "worker", "ready: serving " + c.model + " on " + address,
             {{"worker_id", c.worker_id}, {"address", address}, {"port", bound}, {"vram_bytes", vram}, {"memory_architecture", "vram-only"}});
    if (!c.callback_url.empty())
      post_ready(c.callback_url,
                 {{"worker_id", c.worker_id}, {"model", c.model}, {"vram_bytes", vram}, {"address", address}, {"memory_architecture", "vram-only"}},
                 log);

    // Sharing the GPU: watch for other processes; pause and resume, or warn.
    std::unique_ptr<GpuSharingMonitor> monitor;
    if (nvml) {
      const SharingMode mode = !c.allow_shared_gpu ? SharingMode::dedicated : c.auto_pause_for_contention ? SharingMode::auto_pause : SharingMode::warn;
      GpuSharingMonitor::Callbacks calls;
      calls.on_observe = [&](const std::vector<GpuProcess>& ps) {
        {
          std::lock_guard lock(others_mu);
          others = ps;
        }
        metrics.set("gpu_other_processes", gpu_label, static_cast<double>(ps.size()));
        size_t free_now = 0, total_now = 0;
        cudaSetDevice(dev);
        if (cudaMemGetInfo(&free_now, &total_now) == cudaSuccess && total_now > 0)
          metrics.set("vram_utilization_percent", gpu_label, 100.0 * (total_now - free_now) / total_now);
      };
      calls.on_pause = [&](const std::vector<GpuProcess>& ps) {
        log.warn("pause", "gpu", fmt::format("{} other process(es) on GPU {} for {}s: pausing and freeing VRAM", ps.size(), dev, c.contention_grace_secs),
                 {{"other_processes", describe(ps)}});
        std::string pids;
        for (const auto& p : ps) pids += (pids.empty() ? "" : ", ") + std::to_string(p.pid);
        const std::string why = "other processes use GPU " + std::to_string(dev) + " (pid " + pids + ")";
        server.take_backend(WorkerState::paused, why).reset();  // cancels the running job, frees weights and KV
        metrics.set("worker_paused", 1);
        log.info("pause", "gpu", "paused; VRAM released", {{"vram_bytes", 0}});
      };
      calls.on_resume = [&]() -> bool {
        log.info("resume", "gpu", fmt::format("GPU {} free for {}s: reloading", dev, c.contention_grace_secs));
        server.set_state(WorkerState::loading, "reloading after pause");
        try {
          auto e = load();
          const uint64_t v = e->tracker().total_bytes();
          server.set_backend(make_engine_backend(std::move(e)));
          metrics.set("worker_paused", 0);
          log.info("resume", "worker", "resumed", {{"vram_bytes", v}});
          return true;
        } catch (const InsufficientVramError& e) {
          server.set_state(WorkerState::paused, std::string("resume refused: ") + e.what());
          log.warn("resume", c.model, e.what(), vram_refusal_json(e, dev, "POOL_UNAVAILABLE"));
        } catch (const std::exception& e) {
          server.set_state(WorkerState::paused, std::string("resume failed: ") + e.what());
          log.error("resume", c.model, e.what());
        }
        return false;
      };
      calls.on_warn = [&](const std::vector<GpuProcess>& ps, bool appeared) {
        if (appeared)
          log.warn("share", "gpu", fmt::format("{} other process(es) appeared on GPU {}", ps.size(), dev), {{"other_processes", describe(ps)}});
        else
          log.info("share", "gpu", fmt::format("GPU {} has no other processes again", dev));
      };
      monitor = std::make_unique<GpuSharingMonitor>(std::move(nvml), mode, std::chrono::duration<double>(c.gpu_poll_secs),
                                                    std::chrono::duration<double>(c.contention_grace_secs), std::move(calls));
      monitor->start();
    }

    std::thread signals([&] {
      int sig = 0;
      sigwait(&stop_signals, &sig);
      if (sig == SIGTERM || sig == SIGINT) {
        log.info("signal", "worker", std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") + ", shutting down");
        server.request_shutdown(sig == SIGTERM ? "SIGTERM" : "SIGINT");
      }
    });
    serving.join();
    if (monitor) monitor->stop();
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
