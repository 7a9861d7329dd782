#include "server/worker.h"

#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>

#include "common/cuda_check.h"
#include "engine/model.h"
#include "engine/vram_plan.h"
#include "server/gpu_sharing.h"
#include "server/provision.h"
#include "server/refusal.h"
#include "server/state_notifier.h"
#include "vram/admission_ledger.h"
#include "vram/device_allocator.h"

namespace orcd {

namespace {

nlohmann::json describe(const std::vector<GpuProcess>& ps) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& p : ps) j.push_back({{"pid", p.pid}, {"used_bytes", p.used_bytes}, {"kind", p.graphics ? "graphics" : "compute"}});
  return j;
}

}  // namespace

Worker::Worker(WorkerConfig cfg, Narrator& log, Metrics& metrics, std::unique_ptr<GpuAccess> gpu)
    : cfg_(std::move(cfg)), log_(log), metrics_(metrics), gpu_(std::move(gpu)) {
  metrics_.counter("vram_allocation_failures_total", "VRAM admissions refused or allocations failed, by reason");
  for (const char* r : {"insufficient_vram", "cuda_error"}) metrics_.inc("vram_allocation_failures_total", {{"reason", r}}, 0);
  metrics_.gauge("vram_utilization_percent", "Share of the GPU's memory in use by all processes");
  metrics_.gauge("vram_headroom_bytes", "Bytes the worker could still admit: the budget (total less the reserve) minus what all processes use");
  metrics_.gauge("vram_reserved_bytes", "VRAM the worker never uses (reserved_system_vram or the floor)");
  metrics_.counter("concurrent_allocation_attempts_total", "Reservations attempted on the admission ledger");
  metrics_.gauge("gpu_other_processes", "Other processes with a context on our GPU (without NVML: 1 when memory beyond ours is in use)");
  metrics_.gauge("worker_paused", "1 while the worker has given the GPU back");
  metrics_.set("worker_paused", 0);
}

Worker::~Worker() {
  {
    std::lock_guard lock(mu_);
    telemetry_stop_ = true;
  }
  cv_.notify_all();
}

int Worker::fail(const std::string& stage, const std::string& message, const nlohmann::json& body) {
  log_.error(stage, "worker", message, body.is_null() ? nlohmann::json::object() : body);
  fmt::print(stderr, "worker-orcd: {}\n{}", message, body.is_null() ? "" : body.dump(2) + "\n");
  if (notifier_) notifier_->post({{"worker_id", cfg_.worker_id}, {"state", "failed"}, {"reason", message}, {"memory_architecture", "vram-only"},
                                  {"worker_type", "worker-orcd"}});
  return 1;
}

nlohmann::json Worker::others_json() {
  std::lock_guard lock(mu_);
  uint64_t used = 0;
  for (const auto& p : others_) used += p.used_bytes;
  return {{"count", others_.size()}, {"used_bytes", used}, {"list", describe(others_)}};
}

std::shared_ptr<InferenceBackend> Worker::load() {
  EngineOptions eo;
  eo.device = cfg_.gpu_device;
  eo.n_ctx = cfg_.ctx_size;
  eo.max_batch_tokens = cfg_.max_batch_tokens;
  eo.reserved_vram = cfg_.reserved_system_vram;
  eo.dedicated_gpu = !cfg_.allow_shared_gpu;
  eo.vram_limit = cfg_.max_model_size;
  eo.ledger = ledger_.get();
  int last = -1;
  eo.progress = [&](uint64_t done, uint64_t total) {
    const int pct = static_cast<int>(100 * done / std::max<uint64_t>(total, 1));
    if (pct / 10 != last / 10) log_.info("load", cfg_.model, fmt::format("loading weights: {}%", pct), {{"bytes", done}, {"total_bytes", total}});
    last = pct;
  };
  const LedgerStats before = ledger_->stats();
  auto attempts = [&] { metrics_.inc("concurrent_allocation_attempts_total", {}, static_cast<double>(ledger_->stats().attempts - before.attempts)); };
  try {
    auto b = gpu_->load(cfg_.model, eo);
    attempts();
    return b;
  } catch (const InsufficientVramError&) {
    attempts();
    metrics_.inc("vram_allocation_failures_total", {{"reason", "insufficient_vram"}});
    throw;
  } catch (const std::exception& e) {
    if (dynamic_cast<const CudaError*>(&e) || dynamic_cast<const VramOomError*>(&e))
      metrics_.inc("vram_allocation_failures_total", {{"reason", "cuda_error"}});
    throw;
  }
}

bool Worker::provision() {
  ProvisionOptions po;
  po.cache_dir = cfg_.model_cache_dir;
  po.expected_sha256 = cfg_.model_sha256;
  po.insecure_skip_hash = cfg_.insecure_skip_hash;
  po.allow_http = cfg_.allow_http_downloads;
  po.log = &log_;
  // Refuse before downloading: the header says what the model will need.
  po.admit = [&](const GgufFile& header) {
    const ModelConfig mc = ModelConfig::from_gguf(header);
    const int n_ctx = cfg_.ctx_size > 0 ? cfg_.ctx_size : std::min(mc.n_ctx_train, 4096);
    const VramPlan plan = plan_vram(header, mc, n_ctx, std::min(cfg_.max_batch_tokens, n_ctx));
    if (cfg_.max_model_size && plan.total() > cfg_.max_model_size)
      throw InsufficientVramError(fmt::format("POOL_UNAVAILABLE (insufficient VRAM): {} needs {} bytes ({}) but max_model_size is {}", cfg_.model,
                                              plan.total(), plan.breakdown(), cfg_.max_model_size),
                                  plan.total(), cfg_.max_model_size, 0);
    ledger_->reserve(plan.total(), "model " + cfg_.model);  // released at once: this only asks
  };
  try {
    cfg_.model = provision_model(cfg_.model, po);
    return true;
  } catch (const InsufficientVramError& e) {
    metrics_.inc("vram_allocation_failures_total", {{"reason", "insufficient_vram"}});
    fail("provision", std::string("refused before download: ") + e.what(), vram_refusal_json(e, cfg_.gpu_device, 30, {{"model", cfg_.model}, {"downloaded", false}}));
  } catch (const std::exception& e) {
    fail("provision", e.what());
  }
  return false;
}

void Worker::on_state(WorkerState s, const std::string& reason) {
  if (notifier_) {
    nlohmann::json body = {{"worker_id", cfg_.worker_id},
                           {"state", s == WorkerState::healthy ? "ready" : std::string(worker_state_name(s))},
                           {"reason", reason},
                           {"model", cfg_.model},
                           {"address", address_},
                           {"gpu_device", cfg_.gpu_device},
                           {"memory_architecture", "vram-only"},
                           {"worker_type", "worker-orcd"},
                           {"capabilities", {"text-gen", "openai", "sse", "cancel"}}};
    if (server_) {
      nlohmann::json breakdown = nlohmann::json::object();
      uint64_t bytes = 0;
      for (const auto& [k, v] : server_->vram_breakdown()) breakdown[k] = v, bytes += v;
      body["vram_bytes"] = bytes;
      body["vram_breakdown"] = breakdown;
    }
    notifier_->post(std::move(body));
  }
  if (s == WorkerState::unhealthy && server_ && server_->device_lost() && !fatal_stop_.joinable())
    fatal_stop_ = std::thread([this] { server_->request_shutdown("the GPU failed; exiting so a supervisor restarts the worker"); });
}

void Worker::telemetry_loop() {
  const Labels gpu_label = {{"gpu", std::to_string(cfg_.gpu_device)}};
  while (true) {
    {
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, std::chrono::duration<double>(cfg_.gpu_poll_secs), [&] { return telemetry_stop_; })) return;
    }
    if (server_ && server_->state() == WorkerState::paused && !lister_) continue;  // no NVML: CUDA would need a context
    const auto m = gpu_->memory();
    if (!m || m->total_bytes == 0) continue;
    const uint64_t used = m->total_bytes - m->free_bytes;
    const uint64_t budget = m->total_bytes > headroom_ ? m->total_bytes - headroom_ : 0;
    metrics_.set("vram_utilization_percent", gpu_label, 100.0 * static_cast<double>(used) / static_cast<double>(m->total_bytes));
    metrics_.set("vram_headroom_bytes", gpu_label, budget > used ? static_cast<double>(budget - used) : 0.0);
    if (!lister_) {
      // No process list without NVML: infer "someone else" from memory beyond ours and a context.
      const uint64_t ours = ledger_ ? ledger_->stats().committed : 0;
      metrics_.set("gpu_other_processes", gpu_label, used > ours + (768ull << 20) ? 1 : 0);
    }
  }
}

void Worker::stop(bool drain, const std::string& why) {
  stop_requested_ = true;
  if (!server_) return;
  if (drain) server_->drain(std::chrono::duration<double>(cfg_.drain_secs), why);
  else server_->request_shutdown(why);
}

int Worker::run() {
  if (!cfg_.callback_url.empty()) notifier_ = std::make_unique<StateNotifier>(cfg_.callback_url, log_);
  const bool remote = is_remote_model(cfg_.model);
  if (!remote && !std::filesystem::exists(cfg_.model))
    return fail("preflight", fmt::format("MODEL_NOT_FOUND: no model at {}. What to do: pass --model FILE.gguf, an https:// URL or hf:ORG/REPO/FILE, "
                                         "or set WORKER_ORCD_MODEL.", cfg_.model));
  if (auto why = gpu_->open(cfg_.gpu_device)) return fail("preflight", *why);
  lister_ = gpu_->processes();
  if (!lister_) log_.warn("nvml", "gpu", "NVML is not available; other GPU processes cannot be listed, carrying on with CUDA's memory figures");
  if (lister_)
    if (auto l = lister_->list(static_cast<uint32_t>(getpid()))) others_ = *l;
  if (!cfg_.allow_shared_gpu && !others_.empty()) {
    metrics_.inc("vram_allocation_failures_total", {{"reason", "insufficient_vram"}});
    return fail("admit", fmt::format("POOL_UNAVAILABLE: allow_shared_gpu = false and {} other process(es) use GPU {}; refusing to start. "
                                     "Stop them or allow sharing.", others_.size(), cfg_.gpu_device),
                {{"code", "POOL_UNAVAILABLE"}, {"other_processes", describe(others_)}});
  }
  const auto mem = gpu_->memory();
  if (!mem) return fail("preflight", "cannot read the memory of GPU " + std::to_string(cfg_.gpu_device));
  total_ = mem->total_bytes;
  headroom_ = headroom_bytes(total_, cfg_.reserved_system_vram ? &*cfg_.reserved_system_vram : nullptr, !cfg_.allow_shared_gpu);
  if (cfg_.reserved_system_vram && headroom_ != *cfg_.reserved_system_vram)
    log_.warn("config", "gpu", fmt::format("reserved_system_vram {} is below the floor for a shared GPU; keeping {} (set allow_shared_gpu = false "
                                           "to declare the GPU dedicated)", *cfg_.reserved_system_vram, headroom_));
  ledger_ = std::make_unique<AdmissionLedger>(cfg_.gpu_device, total_, headroom_, [this] {
    const auto m = gpu_->memory();
    return m ? m->free_bytes : 0;
  });
  metrics_.set("vram_reserved_bytes", {{"gpu", std::to_string(cfg_.gpu_device)}}, static_cast<double>(headroom_));
  log_.info("preflight", "gpu", fmt::format("GPU {} {}: {} of {} bytes free, {} kept as headroom", cfg_.gpu_device, gpu_->name(), mem->free_bytes,
                                            mem->total_bytes, headroom_),
            {{"gpu", cfg_.gpu_device}, {"free_bytes", mem->free_bytes}, {"total_bytes", mem->total_bytes}, {"headroom_bytes", headroom_}});
  if (remote && !provision()) return 1;

  // Listen first, so /livez, /readyz and /health answer while the model loads.
  server_ = std::make_unique<WorkerServer>(cfg_, log_, metrics_);
  server_->set_health_extra([this] {
    return nlohmann::json{{"vram_reserved_bytes", headroom_}, {"nvml", lister_ != nullptr}, {"other_processes", others_json()}};
  });
  try {
    bound_port = server_->bind();
  } catch (const std::exception& e) {
    return fail("listen", e.what());
  }
  address_ = cfg_.host + ":" + std::to_string(bound_port.load());
  server_->on_state_change([this](WorkerState s, const std::string& reason) { on_state(s, reason); });
  std::thread serving([this] { server_->serve(); });
  std::thread telemetry([this] { telemetry_loop(); });
  auto stop_telemetry = [&] {
    {
      std::lock_guard lock(mu_);
      telemetry_stop_ = true;
    }
    cv_.notify_all();
    telemetry.join();
  };
  auto finish = [&](int code) {
    server_->request_shutdown("stopping");
    serving.join();
    stop_telemetry();
    return code;
  };
  if (!server_->wait_until_listening(std::chrono::seconds(10))) return finish(fail("listen", "the HTTP server did not start accepting connections"));
  log_.info("listen", "worker", "listening on " + address_ + "; loading the model", {{"address", address_}});

  std::shared_ptr<InferenceBackend> backend;
  try {
    backend = load();
  } catch (const InsufficientVramError& e) {
    return finish(fail("admit", e.what(), vram_refusal_json(e, cfg_.gpu_device, 30, {{"model", cfg_.model}, {"other_processes", describe(others_)}})));
  } catch (const std::exception& e) {
    return finish(fail("load", e.what()));
  }
  const uint64_t vram = backend->vram_bytes();
  const auto detected = backend->info().chat_format;
  if (cfg_.chat_template.empty() && detected == ChatFormat::none)
    log_.warn("load", cfg_.model, "the model's chat template is not one the worker knows; chat requests use ChatML (set chat_template to choose)");
  server_->set_backend(std::move(backend), WorkerState::loading);
  server_->check_residency();  // /health reports residency from a real check, never before one
  if (!stop_requested_) server_->set_state(WorkerState::healthy);
  log_.info("ready", "worker", "ready: serving " + cfg_.model + " on " + address_,
            {{"worker_id", cfg_.worker_id}, {"address", address_}, {"port", bound_port.load()}, {"vram_bytes", vram}, {"memory_architecture", "vram-only"}});

  std::unique_ptr<GpuSharingMonitor> monitor;
  if (lister_) {
    const SharingMode mode = !cfg_.allow_shared_gpu ? SharingMode::dedicated : cfg_.auto_pause_for_contention ? SharingMode::auto_pause : SharingMode::warn;
    const Labels gpu_label = {{"gpu", std::to_string(cfg_.gpu_device)}};
    GpuSharingMonitor::Callbacks calls;
    calls.on_observe = [this, gpu_label](const std::vector<GpuProcess>& ps) {
      {
        std::lock_guard lock(mu_);
        others_ = ps;
      }
      metrics_.set("gpu_other_processes", gpu_label, static_cast<double>(ps.size()));
    };
    calls.on_poll_failed = [this] { log_.error("nvml", "gpu", "listing the processes on GPU " + std::to_string(cfg_.gpu_device) + " failed (NVML)"); };
    calls.on_pause = [this, mode](const std::vector<GpuProcess>& ps) {
      std::string pids;
      for (const auto& p : ps) pids += (pids.empty() ? "" : ", ") + std::to_string(p.pid);
      const std::string why = (mode == SharingMode::dedicated ? "allow_shared_gpu = false and other processes use GPU " : "other processes use GPU ") +
                              std::to_string(cfg_.gpu_device) + " (pid " + pids + ")";
      log_.log(mode == SharingMode::dedicated ? LogLevel::error : LogLevel::warn, "pause", "gpu", why + ": pausing and freeing VRAM",
               {{"other_processes", describe(ps)}});
      if (is_terminal(server_->state()) || server_->state() == WorkerState::draining) return;
      server_->take_backend(WorkerState::paused, why).reset();  // cancels the running job, frees weights and KV
      gpu_->release_context();
      metrics_.set("worker_paused", 1);
      log_.info("pause", "gpu", "paused; VRAM and the CUDA context released", {{"vram_bytes", 0}});
    };
    calls.on_resume = [this]() -> bool {
      if (server_->state() != WorkerState::paused) return true;
      log_.info("resume", "gpu", fmt::format("GPU {} free for {}s: reloading", cfg_.gpu_device, cfg_.contention_grace_secs));
      if (!server_->set_state(WorkerState::loading, "reloading after pause")) return true;
      try {
        if (auto why = gpu_->open(cfg_.gpu_device)) throw std::runtime_error(*why);
        auto b = load();
        const uint64_t v = b->vram_bytes();
        server_->set_backend(std::move(b), WorkerState::loading);
        server_->check_residency();
        server_->set_state(WorkerState::healthy);
        metrics_.set("worker_paused", 0);
        log_.info("resume", "worker", "resumed", {{"vram_bytes", v}});
        return true;
      } catch (const InsufficientVramError& e) {
        server_->set_state(WorkerState::paused, std::string("resume refused: ") + e.what());
        log_.warn("resume", cfg_.model, e.what(), vram_refusal_json(e, cfg_.gpu_device));
      } catch (const std::exception& e) {
        server_->set_state(WorkerState::paused, std::string("resume failed: ") + e.what());
        log_.error("resume", cfg_.model, e.what());
      }
      gpu_->release_context();
      return false;
    };
    calls.on_warn = [this](const std::vector<GpuProcess>& ps, bool appeared) {
      if (appeared)
        log_.warn("share", "gpu", fmt::format("{} other process(es) appeared on GPU {}", ps.size(), cfg_.gpu_device), {{"other_processes", describe(ps)}});
      else
        log_.info("share", "gpu", fmt::format("GPU {} has no other processes again", cfg_.gpu_device));
    };
    monitor = std::make_unique<GpuSharingMonitor>(lister_, mode, std::chrono::duration<double>(cfg_.gpu_poll_secs),
                                                  std::chrono::duration<double>(cfg_.contention_grace_secs), std::move(calls));
    monitor->start();
  }

  serving.join();
  if (fatal_stop_.joinable()) fatal_stop_.join();
  if (monitor) monitor->stop();
  stop_telemetry();
  const bool lost = server_->device_lost();
  // Free VRAM before saying we are done (a lost device frees nothing more).
  server_->take_backend(WorkerState::stopping).reset();
  if (notifier_) {
    notifier_->post({{"worker_id", cfg_.worker_id}, {"state", lost ? "failed" : "stopped"}, {"memory_architecture", "vram-only"},
                     {"worker_type", "worker-orcd"}, {"address", address_}});
    notifier_->flush(std::chrono::seconds(5));
  }
  log_.info("stopped", "worker", lost ? "stopped after a GPU failure" : "stopped; all VRAM released");
  return lost ? 3 : 0;
}

}  // namespace orcd
