#include "server/server.h"

#include <random>

#include "common/cuda_check.h"
#include "vram/device_allocator.h"

namespace orcd {

std::string_view worker_state_name(WorkerState s) {
  switch (s) {
    case WorkerState::loading: return "loading";
    case WorkerState::healthy: return "healthy";
    case WorkerState::paused: return "paused";
    case WorkerState::draining: return "draining";
    case WorkerState::unhealthy: return "unhealthy";
    case WorkerState::stopping: return "stopping";
  }
  return "unknown";
}

bool is_terminal(WorkerState s) { return s == WorkerState::unhealthy || s == WorkerState::stopping; }

namespace {

std::string iso_now() {
  const auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

HttpLimits http_limits(const WorkerConfig& c) {
  HttpLimits l;
  l.max_header_bytes = c.max_header_bytes;
  l.max_header_count = static_cast<size_t>(c.max_header_count);
  l.request_deadline = std::chrono::milliseconds(static_cast<int64_t>(c.request_read_timeout_secs * 1000));
  return l;
}

}  // namespace

WorkerServer::WorkerServer(WorkerConfig cfg, Narrator& log, Metrics& metrics)
    : cfg_(std::move(cfg)),
      log_(log),
      metrics_(metrics),
      http_(std::make_unique<GuardedHttpServer>(http_limits(cfg_))),
      queue_(static_cast<size_t>(cfg_.queue_size)),
      seed_state_(std::random_device{}()) {
  seed_state_ = (seed_state_ << 32) ^ std::random_device{}();
  limits_.max_prompt_bytes = cfg_.max_prompt_bytes;
  limits_.default_timeout_secs = cfg_.timeout_secs;
  limits_.max_timeout_secs = std::max(cfg_.timeout_secs, 3600);
  metrics_.gauge("orcd_vram_bytes", "VRAM held by this worker, by purpose");
  metrics_.counter("orcd_residency_checks_total", "VRAM residency verifications run");
  metrics_.counter("orcd_residency_failures_total", "Residency verifications that found memory outside VRAM");
  metrics_.counter("orcd_requests_total", "Requests by outcome");
  metrics_.counter("orcd_http_rejections_total", "Requests refused before routing, by reason");
  metrics_.counter("orcd_tokens_generated_total", "Tokens generated");
  metrics_.histogram("orcd_time_to_first_token_seconds", "From arrival to the first generated text",
                     {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30});
  metrics_.histogram("orcd_token_latency_seconds", "Decode time per generated token",
                     {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1});
  metrics_.gauge("orcd_queue_depth", "Requests waiting behind the running one");
  metrics_.gauge("orcd_uptime_seconds", "Seconds since the worker started");
  metrics_.gauge("orcd_worker_healthy", "1 when the worker accepts jobs");
  metrics_.gauge("orcd_worker_state", "1 for the worker's current state, by state");
  install_guards();
  install_routes();
}

WorkerServer::~WorkerServer() {
  request_shutdown("destroyed");
  for (std::thread* t : {&drainer_, &stopper_, &gpu_thread_, &residency_thread_})
    if (t->joinable()) t->join();
}

uint64_t WorkerServer::fresh_seed() {
  std::lock_guard lock(seed_mu_);
  seed_state_ += 0x9E3779B97F4A7C15ull;
  uint64_t z = seed_state_;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Ids the server hands out come from the OS's random source, never from the seed sequence that
// /execute reports, so one client cannot predict another's id.
std::string WorkerServer::new_job_id(JobKind kind) {
  thread_local std::random_device rd;
  static const char* hex = "0123456789abcdef";
  std::string id = kind == JobKind::chat ? "chatcmpl-" : kind == JobKind::completion ? "cmpl-" : "job-";
  for (int i = 0; i < 8; ++i) {
    const uint32_t r = rd();
    for (int k = 0; k < 4; ++k) id += hex[(r >> (8 * k)) & 15];
  }
  return id;
}

void WorkerServer::on_state_change(std::function<void(WorkerState, const std::string&)> f) {
  std::lock_guard order(listener_mu_);
  state_listener_ = std::move(f);
}

void WorkerServer::set_health_extra(std::function<nlohmann::json()> f) {
  std::lock_guard lock(mu_);
  health_extra_ = std::move(f);
}

bool WorkerServer::set_state(WorkerState s, const std::string& reason) {
  std::lock_guard order(listener_mu_);
  WorkerState old;
  {
    std::lock_guard lock(mu_);  // the reason changes with the state, never after it
    old = state_.load();
    if (is_terminal(old) && s != old) return false;
    if (old == WorkerState::draining && s != WorkerState::draining && !is_terminal(s)) return false;
    state_reason_ = reason;
    state_ = s;
  }
  metrics_.set("orcd_worker_healthy", s == WorkerState::healthy ? 1 : 0);
  for (WorkerState k : {WorkerState::loading, WorkerState::healthy, WorkerState::paused, WorkerState::draining, WorkerState::unhealthy,
                        WorkerState::stopping})
    metrics_.set("orcd_worker_state", {{"state", std::string(worker_state_name(k))}}, k == s ? 1 : 0);
  if (old != s) {
    log_.log(s == WorkerState::unhealthy ? LogLevel::critical : LogLevel::info, "state", "worker",
             std::string("worker is now ") + std::string(worker_state_name(s)) + (reason.empty() ? "" : ": " + reason),
             {{"from", worker_state_name(old)}, {"to", worker_state_name(s)}});
    if (state_listener_) state_listener_(s, reason);
  }
  return true;
}

void WorkerServer::set_backend(std::shared_ptr<InferenceBackend> backend, WorkerState s) {
  {
    std::lock_guard lock(mu_);
    backend_ = std::move(backend);
    last_residency_.reset();
  }
  update_vram_metrics();
  set_state(s);
}

std::shared_ptr<InferenceBackend> WorkerServer::backend() const {
  std::lock_guard lock(mu_);
  return backend_;
}

std::shared_ptr<InferenceBackend> WorkerServer::take_backend(WorkerState new_state, const std::string& reason) {
  set_state(new_state, reason);
  queue_.cancel_all(std::string("worker is ") + std::string(worker_state_name(state())));
  queue_.wait_idle(std::chrono::steady_clock::time_point::max());
  std::shared_ptr<InferenceBackend> b;
  {
    std::lock_guard lock(mu_);
    b = std::move(backend_);
  }
  // A request thread may still be tokenizing with it; the caller frees it only after them.
  while (b && b.use_count() > 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  update_vram_metrics();
  return b;
}

std::map<std::string, uint64_t> WorkerServer::vram_breakdown() const {
  const auto b = backend();
  return b ? b->vram_breakdown() : std::map<std::string, uint64_t>{};
}

void WorkerServer::update_vram_metrics() {
  std::map<std::string, uint64_t> by = vram_breakdown();
  for (const char* p : {"weights", "kv_cache", "workspace", "logits"}) metrics_.set("orcd_vram_bytes", {{"purpose", p}}, static_cast<double>(by[p]));
}

int WorkerServer::bind() {
  http_->set_keep_alive_timeout(5);
  http_->new_task_queue = [] { return new httplib::ThreadPool(32); };
  port_ = cfg_.port == 0 ? http_->bind_to_any_port(cfg_.host) : (http_->bind_to_port(cfg_.host, cfg_.port) ? cfg_.port : -1);
  if (port_ < 0) throw std::runtime_error("cannot listen on " + cfg_.host + ":" + std::to_string(cfg_.port) + " (port in use or address invalid)");
  return port_;
}

void WorkerServer::serve() {
  gpu_thread_ = std::thread([this] { gpu_loop(); });
  residency_thread_ = std::thread([this] { residency_loop(); });
  http_->listen_after_bind();
  request_shutdown("listener stopped");
  gpu_thread_.join();
  residency_thread_.join();
}

bool WorkerServer::wait_until_listening(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const std::string host = cfg_.host == "0.0.0.0" || cfg_.host == "::" ? "127.0.0.1" : cfg_.host;
  while (std::chrono::steady_clock::now() < deadline) {
    if (http_->is_running()) {
      httplib::Client self(host, port_);
      self.set_connection_timeout(1);
      if (auto r = self.Get("/livez")) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

void WorkerServer::drain(std::chrono::duration<double> grace, const std::string& why) {
  if (!set_state(WorkerState::draining, why)) {
    if (state() != WorkerState::draining) request_shutdown(why);  // terminal already: just stop
    return;
  }
  std::lock_guard lock(mu_);
  if (stopping_ || drainer_.joinable()) return;
  drainer_ = std::thread([this, grace, why] {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(grace);
    const bool finished = queue_.wait_idle(deadline);
    log_.info("drain", "worker", finished ? "in-flight work finished" : "drain time is up: cancelling what is left",
              {{"drain_secs", grace.count()}});
    request_shutdown(why);
  });
}

void WorkerServer::request_shutdown(const std::string& why) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  std::lock_guard once(stopper_mu_);
  if (state() != WorkerState::unhealthy) set_state(WorkerState::stopping, why);
  queue_.cancel_all("worker is shutting down");
  cv_.notify_all();
  // Let open streams deliver their final event, then stop the listener (from another thread:
  // this may run inside an HTTP handler).
  stopper_ = std::thread([this] {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline && !(queue_.idle() && open_streams_ == 0))
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    queue_.close();
    http_->stop();
  });
}

std::optional<ApiError> WorkerServer::state_error() const {
  std::lock_guard lock(mu_);
  if (stopping_) return ApiError{503, "SHUTTING_DOWN", "the worker is shutting down", "", {{"retry_after", 5}}};
  switch (state_.load()) {
    case WorkerState::healthy:
      if (backend_) return std::nullopt;
      [[fallthrough]];
    case WorkerState::loading: return ApiError{503, "LOADING", "the model is not loaded yet", "", {{"retry_after", 5}}};
    case WorkerState::paused:
      return ApiError{503, "WORKER_PAUSED", "the worker gave the GPU back to other programs: " + state_reason_, "", {{"retry_after", 30}}};
    case WorkerState::draining: return ApiError{503, "SHUTTING_DOWN", "the worker is draining and takes no new work", "", {{"retry_after", 5}}};
    case WorkerState::unhealthy: return ApiError{503, "WORKER_UNHEALTHY", "the worker is unhealthy: " + state_reason_, "", {}};
    case WorkerState::stopping: return ApiError{503, "SHUTTING_DOWN", "the worker is shutting down", "", {{"retry_after", 5}}};
  }
  return std::nullopt;
}

bool WorkerServer::ready() const { return !state_error().has_value(); }

void WorkerServer::gpu_loop() {
  while (auto job = queue_.pop()) {
    metrics_.set("orcd_queue_depth", static_cast<double>(queue_.depth()));
    run_job(job);
    queue_.finish(job);
  }
}

void WorkerServer::run_job(const std::shared_ptr<Job>& job) {
  const JobSpec& s = job->spec;
  auto end_cancelled = [&](size_t n) {
    const bool late = job->past_deadline();
    metrics_.inc("orcd_requests_total", {{"outcome", late ? "deadline" : "cancelled"}});
    const std::string why = late ? "the request's deadline (timeout_secs = " + std::to_string(s.timeout_secs) + ") passed" : job->cancel_reason();
    job->emit(EventKind::error, {{"code", late ? "DEADLINE_EXCEEDED" : "CANCELLED"}, {"message", why}, {"tokens_out", n}});
    log_.info("cancel", "job", "generation ended early: " + why, {{"tokens_out", n}}, s.job_id);
  };
  const std::shared_ptr<InferenceBackend> b = backend();
  if (!b || job->cancelled() || job->past_deadline()) {
    if (!b) job->cancel("the model was unloaded");
    return end_cancelled(0);
  }
  const auto t0 = std::chrono::steady_clock::now();
  job->emit(EventKind::started, {{"job_id", s.job_id}, {"model", b->info().model_name}, {"seed", s.sampling.seed}, {"started_at", iso_now()}});
  log_.info("start", "job", "generation started",
            cfg_.log_prompts ? nlohmann::json{{"prompt", s.prompt}, {"seed", s.sampling.seed}} : nlohmann::json{{"seed", s.sampling.seed}},
            s.job_id);
  GenerateRequest req;
  req.prompt = s.prompt;
  req.prompt_ids = job->prompt_ids;
  req.max_tokens = s.max_tokens;
  req.sampling = s.sampling;
  req.stop = s.stop;
  req.cancel = job->cancel_flag();
  int piece_index = 0;
  bool first = true;
  GenerateResult result;
  auto fail = [&](const char* code, const std::string& what) {
    metrics_.inc("orcd_requests_total", {{"outcome", "error"}});
    log_.error("generate", "job", what, {{"code", code}}, s.job_id);
    job->emit(EventKind::error, {{"code", code}, {"message", what}});
  };
  try {
    result = b->generate(req, [&](std::string_view piece) {
      if (first) {
        metrics_.observe("orcd_time_to_first_token_seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - job->enqueued).count());
        first = false;
      }
      job->emit(EventKind::token, {{"t", piece}, {"i", piece_index++}});
      if (job->past_deadline()) job->cancel("deadline exceeded");
      return !job->cancelled();
    });
  } catch (const PromptTooLongError& e) {
    return fail("CONTEXT_EXCEEDED", e.what());
  } catch (const VramOomError& e) {
    return fail("VRAM_OOM", e.what());
  } catch (const std::exception& e) {
    fail(dynamic_cast<const CudaError*>(&e) ? "CUDA_ERROR" : "INTERNAL", e.what());
    if (b->device_lost()) {
      device_lost_ = true;
      set_state(WorkerState::unhealthy, std::string("the GPU failed and cannot recover: ") + e.what());
    }
    return;
  }
  const GenerateResult& r = result;
  const size_t n = r.output_ids.size();
  metrics_.inc("orcd_tokens_generated_total", {}, static_cast<double>(n));
  if (n > 1)
    for (size_t k = 1; k < n; ++k) metrics_.observe("orcd_token_latency_seconds", r.decode_ms / 1e3 / static_cast<double>(n - 1));
  if (r.stop_reason == StopReason::cancelled) return end_cancelled(n);
  const double tps = r.decode_ms > 0 && n > 1 ? (n - 1) / (r.decode_ms / 1e3) : 0.0;
  metrics_.inc("orcd_requests_total", {{"outcome", "ok"}});
  nlohmann::json fields = {{"tokens_out", n}, {"stop_reason", stop_reason_name(r.stop_reason)}, {"tokens_per_second", tps},
                           {"elapsed_ms", std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count()}};
  if (cfg_.log_prompts) fields["output"] = r.text;
  log_.info("finish", "job", "generation finished", fields, s.job_id);
  // Counted and logged before the client can see the end.
  job->emit(EventKind::end, {{"tokens_out", n},
                             {"stop_reason", stop_reason_name(r.stop_reason)},
                             {"prompt_tokens", r.prompt_ids.size()},
                             {"decode_time_ms", r.decode_ms},
                             {"ttft_ms", r.ttft_ms},
                             {"tokens_per_second", tps}});
}

void WorkerServer::residency_loop() {
  const auto interval = std::chrono::duration<double>(cfg_.residency_check_secs);
  while (true) {
    {
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, interval, [&] { return stopping_; })) return;
    }
    check_residency();
  }
}

ResidencyReport WorkerServer::check_residency() {
  ResidencyReport r;
  const auto b = backend();
  if (!b) return r;
  r = b->verify_residency();
  {
    std::lock_guard lock(mu_);
    last_residency_ = r;
    last_check_ = std::chrono::steady_clock::now();
  }
  metrics_.inc("orcd_residency_checks_total");
  if (!r.resident) {
    metrics_.inc("orcd_residency_failures_total");
    for (const auto& v : r.violations) log_.log(LogLevel::critical, "verify", "vram", "residency violation: " + v, {{"allocation", v}});
    set_state(WorkerState::unhealthy, "VRAM residency violated (" + std::to_string(r.violations.size()) + " allocations outside device memory)");
  }
  return r;
}

nlohmann::json WorkerServer::health_json(int* http_status) {
  nlohmann::json j;
  const WorkerState s = state_.load();
  std::function<nlohmann::json()> extra_fields;
  {
    std::lock_guard lock(mu_);  // consistent with state_reason_
    extra_fields = health_extra_;
    j["status"] = worker_state_name(s);
    j["worker_id"] = cfg_.worker_id;
    // Unknown until the first check has run: never claimed before it.
    j["resident"] = last_residency_ ? nlohmann::json(last_residency_->resident) : nlohmann::json(nullptr);
    if (!state_reason_.empty()) j["reason"] = state_reason_;
    if (last_residency_ && !last_residency_->violations.empty()) j["residency_violations"] = last_residency_->violations;
    j["last_check_secs"] = last_residency_ ? nlohmann::json(std::chrono::duration<double>(std::chrono::steady_clock::now() - last_check_).count())
                                           : nlohmann::json(nullptr);
  }
  j["memory_architecture"] = "vram-only";
  j["worker_type"] = "worker-orcd";
  j["ready"] = ready();
  j["uptime_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  j["queue_depth"] = queue_.depth();
  const auto running = queue_.running_id();
  j["running_job"] = running ? nlohmann::json(*running) : nlohmann::json(nullptr);
  if (const auto b = backend()) {
    const BackendInfo& i = b->info();
    j["model"] = i.model_name;
    j["model_path"] = i.model_path;
    j["quant_kind"] = i.quant_kind;
    j["tokenizer_kind"] = i.tokenizer_kind;
    j["chat_template"] = chat_format_name(chat_format());
    j["vocab_size"] = i.vocab_size;
    j["context_length"] = i.context_length;
    j["sm"] = i.sm;
    j["cuda_runtime_version"] = i.cuda_runtime_version;
    j["gpu"] = i.device;
    j["vram_bytes_used"] = b->vram_bytes();
    j["vram_breakdown"] = b->vram_breakdown();
  } else {
    j["model"] = cfg_.model;
    j["vram_bytes_used"] = 0;
    j["vram_breakdown"] = nlohmann::json::object();
  }
  if (extra_fields) {
    const nlohmann::json extra = extra_fields();  // kept alive: items() only refers to it
    for (const auto& [k, v] : extra.items()) j[k] = v;
  }
  // The process works in every state but these; /readyz says whether it takes jobs.
  *http_status = is_terminal(s) ? 503 : 200;
  return j;
}

ChatFormat WorkerServer::chat_format() const {
  const auto b = backend();
  return effective_chat_format(chat_format_from_name(cfg_.chat_template), b ? b->info().chat_format : ChatFormat::none);
}

}  // namespace orcd
