#include "server/server.h"

#include <httplib.h>

#include <random>

#include "common/cuda_check.h"
#include "tokenizer/vocab.h"
#include "vram/device_allocator.h"

namespace orcd {

std::string_view worker_state_name(WorkerState s) {
  switch (s) {
    case WorkerState::loading: return "loading";
    case WorkerState::healthy: return "healthy";
    case WorkerState::unhealthy: return "unhealthy";
    case WorkerState::paused: return "paused";
    case WorkerState::stopping: return "stopping";
  }
  return "unknown";
}

void Job::emit(std::string name, nlohmann::json data) {
  {
    std::lock_guard lock(mu_);
    const bool terminal = name == "end" || name == "error";
    events_.push_back({std::move(name), std::move(data)});
    if (terminal) done_ = true;
  }
  cv_.notify_all();
}

bool Job::next(Event& out, std::chrono::milliseconds wait) {
  std::unique_lock lock(mu_);
  if (!cv_.wait_for(lock, wait, [&] { return !events_.empty(); })) return false;
  out = std::move(events_.front());
  events_.pop_front();
  return true;
}

namespace {

std::string iso_now() {
  const auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void send_json(httplib::Response& res, int status, const nlohmann::json& j) {
  res.status = status;
  res.set_content(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "application/json");
}

// OpenAI says "length" when generation ran out of room, "stop" otherwise.
std::string openai_finish_reason(const nlohmann::json& stop_reason) {
  return stop_reason == "max_tokens" || stop_reason == "context_full" ? "length" : "stop";
}

void send_error(httplib::Response& res, const ApiError& e) {
  if (e.extra.contains("retry_after")) res.set_header("Retry-After", std::to_string(e.extra["retry_after"].get<int>()));
  send_json(res, e.http_status, e.to_json());
}

}  // namespace

WorkerServer::WorkerServer(WorkerConfig cfg, Narrator& log, Metrics& metrics)
    : cfg_(std::move(cfg)), log_(log), metrics_(metrics), http_(std::make_unique<httplib::Server>()), seed_state_(std::random_device{}()) {
  seed_state_ = (seed_state_ << 32) ^ std::random_device{}();
  metrics_.gauge("orcd_vram_bytes", "VRAM held by this worker, by purpose");
  metrics_.counter("orcd_residency_checks_total", "VRAM residency verifications run");
  metrics_.counter("orcd_residency_failures_total", "Residency verifications that found memory outside VRAM");
  metrics_.counter("orcd_requests_total", "Requests by outcome");
  metrics_.counter("orcd_tokens_generated_total", "Tokens generated");
  metrics_.histogram("orcd_time_to_first_token_seconds", "From arrival to the first generated text",
                     {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30});
  metrics_.histogram("orcd_token_latency_seconds", "Decode time per generated token",
                     {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1});
  metrics_.gauge("orcd_queue_depth", "Requests waiting behind the running one");
  metrics_.gauge("orcd_uptime_seconds", "Seconds since the worker started");
  metrics_.gauge("orcd_worker_healthy", "1 when the worker accepts jobs");
  install_routes();
}

WorkerServer::~WorkerServer() {
  request_shutdown("destroyed");
  if (gpu_thread_.joinable()) gpu_thread_.join();
  if (residency_thread_.joinable()) residency_thread_.join();
}

uint64_t WorkerServer::fresh_seed() {
  std::lock_guard lock(seed_mu_);
  seed_state_ += 0x9E3779B97F4A7C15ull;
  uint64_t z = seed_state_;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void WorkerServer::set_state(WorkerState s, const std::string& reason) {
  WorkerState old;
  {
    std::lock_guard lock(mu_);  // the reason changes with the state, never after it
    state_reason_ = reason;
    old = state_.exchange(s);
  }
  metrics_.set("orcd_worker_healthy", s == WorkerState::healthy ? 1 : 0);
  if (old != s)
    log_.log(s == WorkerState::unhealthy ? LogLevel::critical : LogLevel::info, "state", "worker",
             std::string("worker is now ") + std::string(worker_state_name(s)) + (reason.empty() ? "" : ": " + reason),
             {{"from", worker_state_name(old)}, {"to", worker_state_name(s)}});
}

void WorkerServer::set_backend(std::unique_ptr<InferenceBackend> backend, WorkerState s) {
  {
    std::lock_guard lock(mu_);
    backend_ = std::move(backend);
    last_residency_ = ResidencyReport{};
  }
  update_vram_metrics();
  set_state(s);
}

std::unique_ptr<InferenceBackend> WorkerServer::take_backend(WorkerState new_state, const std::string& reason) {
  set_state(new_state, reason);
  cancel_all(std::string("worker is ") + std::string(worker_state_name(new_state)));
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return running_ == nullptr; });
  auto b = std::move(backend_);
  lock.unlock();
  update_vram_metrics();
  return b;
}

void WorkerServer::update_vram_metrics() {
  std::map<std::string, uint64_t> by;
  {
    std::lock_guard lock(mu_);
    if (backend_) by = backend_->vram_breakdown();
  }
  for (const char* p : {"weights", "kv_cache", "workspace", "logits"}) metrics_.set("orcd_vram_bytes", {{"purpose", p}}, static_cast<double>(by[p]));
}

int WorkerServer::bind() {
  http_->set_payload_max_length(cfg_.max_body_bytes);
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
      if (auto r = self.Get("/v1/models")) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

void WorkerServer::request_shutdown(const std::string& why) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  set_state(WorkerState::stopping, why);
  cancel_all("worker is shutting down");
  cv_.notify_all();
  // Let open streams deliver their final event, then stop the listener (from another thread:
  // this may run inside an HTTP handler).
  std::thread([this] {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      {
        std::lock_guard lock(mu_);
        if (!running_ && queue_.empty() && open_streams_ == 0) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    http_->stop();
  }).detach();
}

void WorkerServer::cancel_all(const std::string& reason) {
  std::deque<std::shared_ptr<Job>> dropped;
  {
    std::lock_guard lock(mu_);
    dropped.swap(queue_);
    if (running_) {
      running_->cancel_reason = reason;
      running_->cancel = true;
    }
  }
  for (auto& j : dropped) {
    metrics_.inc("orcd_requests_total", {{"outcome", "cancelled"}});
    j->emit("error", {{"code", "CANCELLED"}, {"message", reason}});
  }
  metrics_.set("orcd_queue_depth", 0);
  cv_.notify_all();
}

std::optional<ApiError> WorkerServer::state_error_locked() const {
  if (stopping_) return ApiError{503, "SHUTTING_DOWN", "the worker is shutting down", "", {}};
  const WorkerState s = state_.load();
  if (s == WorkerState::paused)
    return ApiError{503, "WORKER_PAUSED", "the worker gave the GPU back to other programs: " + state_reason_, "", {{"retry_after", 30}}};
  if (s == WorkerState::unhealthy)
    return ApiError{503, "WORKER_UNHEALTHY", "the worker is unhealthy: " + state_reason_, "", {}};
  if (s != WorkerState::healthy || !backend_) return ApiError{503, "LOADING", "the model is not loaded yet", "", {{"retry_after", 5}}};
  return std::nullopt;
}

std::optional<ApiError> WorkerServer::admit(const std::shared_ptr<Job>& job) {
  std::lock_guard lock(mu_);
  if (auto e = state_error_locked()) return e;
  if (auto it = active_.find(job->spec.job_id); it != active_.end() && !it->second.expired())
    return ApiError{409, "DUPLICATE_JOB", "job_id " + job->spec.job_id + " is already queued or running", "job_id", {}};
  if (running_ && static_cast<int>(queue_.size()) >= cfg_.queue_size)
    return ApiError{503, "QUEUE_FULL", "the queue holds " + std::to_string(queue_.size()) + " requests (queue_size); try again later", "",
                    {{"retry_after", 2}}};
  queue_.push_back(job);
  active_[job->spec.job_id] = job;
  metrics_.set("orcd_queue_depth", static_cast<double>(queue_.size()));
  cv_.notify_all();
  return std::nullopt;
}

void WorkerServer::gpu_loop() {
  while (true) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping
      job = queue_.front();
      queue_.pop_front();
      running_ = job;
      metrics_.set("orcd_queue_depth", static_cast<double>(queue_.size()));
    }
    run_job(job);
    {
      std::lock_guard lock(mu_);
      running_ = nullptr;
      active_.erase(job->spec.job_id);
    }
    cv_.notify_all();
  }
}

void WorkerServer::run_job(const std::shared_ptr<Job>& job) {
  InferenceBackend* b = nullptr;
  {
    std::lock_guard lock(mu_);
    b = backend_.get();
  }
  const JobSpec& s = job->spec;
  if (!b || job->cancel) {
    metrics_.inc("orcd_requests_total", {{"outcome", "cancelled"}});
    job->emit("error", {{"code", "CANCELLED"}, {"message", job->cancel_reason}});
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  job->emit("started", {{"job_id", s.job_id}, {"model", b->info().model_name}, {"seed", s.sampling.seed}, {"started_at", iso_now()}});
  log_.info("start", "job", "generation started",
            cfg_.log_prompts ? nlohmann::json{{"prompt", s.prompt}, {"seed", s.sampling.seed}} : nlohmann::json{{"seed", s.sampling.seed}},
            s.job_id);
  GenerateRequest req;
  req.prompt = s.prompt;
  req.max_tokens = s.max_tokens;
  req.sampling = s.sampling;
  req.stop = s.stop;
  req.cancel = &job->cancel;
  int piece_index = 0;
  bool first = true;
  try {
    job->result = b->generate(req, [&](std::string_view piece) {
      if (first) {
        metrics_.observe("orcd_time_to_first_token_seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - job->enqueued).count());
        first = false;
      }
      job->emit("token", {{"t", piece}, {"i", piece_index++}});
      return !job->cancel.load();
    });
  } catch (const PromptTooLongError& e) {
    metrics_.inc("orcd_requests_total", {{"outcome", "error"}});
    job->emit("error", {{"code", "CONTEXT_EXCEEDED"}, {"message", e.what()}});
    return;
  } catch (const VramOomError& e) {
    metrics_.inc("orcd_requests_total", {{"outcome", "error"}});
    log_.error("generate", "job", e.what(), {}, s.job_id);
    job->emit("error", {{"code", "VRAM_OOM"}, {"message", e.what()}});
    return;
  } catch (const CudaError& e) {
    metrics_.inc("orcd_requests_total", {{"outcome", "error"}});
    log_.error("generate", "job", e.what(), {}, s.job_id);
    job->emit("error", {{"code", "CUDA_ERROR"}, {"message", e.what()}});
    // A sticky error leaves the context unusable: stop taking jobs.
    if (cudaGetLastError() != cudaSuccess || cudaDeviceSynchronize() != cudaSuccess) set_state(WorkerState::unhealthy, e.what());
    return;
  } catch (const std::exception& e) {
    metrics_.inc("orcd_requests_total", {{"outcome", "error"}});
    log_.error("generate", "job", e.what(), {}, s.job_id);
    job->emit("error", {{"code", "INTERNAL_ERROR"}, {"message", e.what()}});
    return;
  }
  const GenerateResult& r = job->result;
  const size_t n = r.output_ids.size();
  metrics_.inc("orcd_tokens_generated_total", {}, static_cast<double>(n));
  if (n > 1)
    for (size_t k = 1; k < n; ++k) metrics_.observe("orcd_token_latency_seconds", r.decode_ms / 1e3 / static_cast<double>(n - 1));
  if (r.stop_reason == StopReason::cancelled) {
    metrics_.inc("orcd_requests_total", {{"outcome", "cancelled"}});
    job->emit("error", {{"code", "CANCELLED"}, {"message", job->cancel_reason}, {"tokens_out", n}});
    log_.info("cancel", "job", "generation cancelled: " + job->cancel_reason, {{"tokens_out", n}}, s.job_id);
    return;
  }
  const double tps = r.decode_ms > 0 && n > 1 ? (n - 1) / (r.decode_ms / 1e3) : 0.0;
  metrics_.inc("orcd_requests_total", {{"outcome", "ok"}});
  nlohmann::json fields = {{"tokens_out", n}, {"stop_reason", stop_reason_name(r.stop_reason)}, {"tokens_per_second", tps},
                           {"elapsed_ms", std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count()}};
  if (cfg_.log_prompts) fields["output"] = r.text;
  log_.info("finish", "job", "generation finished", fields, s.job_id);
  // Counted and logged before the client can see the end.
  job->emit("end", {{"tokens_out", n},
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
  {
    std::lock_guard lock(mu_);
    if (backend_) r = backend_->verify_residency();
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
  std::lock_guard lock(mu_);
  const WorkerState s = state_.load();  // under the lock: consistent with state_reason_
  j["status"] = worker_state_name(s);
  j["worker_id"] = cfg_.worker_id;
  j["resident"] = last_residency_.resident;
  j["memory_architecture"] = "vram-only";
  j["uptime_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  j["last_check_secs"] = last_check_.time_since_epoch().count() == 0
                             ? nlohmann::json(nullptr)
                             : nlohmann::json(std::chrono::duration<double>(std::chrono::steady_clock::now() - last_check_).count());
  j["queue_depth"] = queue_.size();
  j["running_job"] = running_ ? nlohmann::json(running_->spec.job_id) : nlohmann::json(nullptr);
  if (!state_reason_.empty()) j["reason"] = state_reason_;
  if (!last_residency_.violations.empty()) j["residency_violations"] = last_residency_.violations;
  if (backend_) {
    const BackendInfo& i = backend_->info();
    j["model"] = i.model_name;
    j["model_path"] = i.model_path;
    j["quant_kind"] = i.quant_kind;
    j["tokenizer_kind"] = i.tokenizer_kind;
    j["vocab_size"] = i.vocab_size;
    j["context_length"] = i.context_length;
    j["sm"] = i.sm;
    j["cuda_runtime_version"] = i.cuda_runtime_version;
    j["gpu"] = i.device;
    j["vram_bytes_used"] = backend_->vram_bytes();
    j["vram_breakdown"] = backend_->vram_breakdown();
  } else {
    j["model"] = cfg_.model;
    j["vram_bytes_used"] = 0;
    j["vram_breakdown"] = nlohmann::json::object();
  }
  if (health_extra_) {
    const nlohmann::json extra = health_extra_();  // kept alive: items() only refers to it
    for (const auto& [k, v] : extra.items()) j[k] = v;
  }
  *http_status = s == WorkerState::healthy ? 200 : 503;
  return j;
}

void WorkerServer::install_routes() {
  auto& svr = *http_;

  // Streams a job's events until its terminal one. Returns once the provider is installed.
  auto stream = [this](httplib::Response& res, std::shared_ptr<Job> job, JobKind kind, std::string id, std::string model) {
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    ++open_streams_;
    res.set_chunked_content_provider(
        "text/event-stream",
        [job, kind, id, model, sent_role = false](size_t, httplib::DataSink& sink) mutable {
          Job::Event ev;
          if (!job->next(ev, std::chrono::milliseconds(100))) {
            return sink.is_writable();  // idle: keep waiting unless the client went away
          }
          std::string out;
          const bool terminal = ev.name == "end" || ev.name == "error";
          if (kind == JobKind::execute) {
            out = sse_frame(ev.name, ev.data);
          } else {
            const bool chat = kind == JobKind::chat;
            nlohmann::json chunk = {{"id", id}, {"object", chat ? "chat.completion.chunk" : "text_completion"},
                                    {"created", std::time(nullptr)}, {"model", model}};
            if (ev.name == "token") {
              if (chat) {
                nlohmann::json delta = {{"content", ev.data["t"]}};
                if (!sent_role) delta["role"] = "assistant", sent_role = true;
                chunk["choices"] = {{{"index", 0}, {"delta", delta}, {"finish_reason", nullptr}}};
              } else {
                chunk["choices"] = {{{"index", 0}, {"text", ev.data["t"]}, {"logprobs", nullptr}, {"finish_reason", nullptr}}};
              }
              out = sse_frame("", chunk);
            } else if (ev.name == "end") {
              const std::string fr = openai_finish_reason(ev.data["stop_reason"]);
              chunk["choices"] = {chat ? nlohmann::json{{"index", 0}, {"delta", nlohmann::json::object()}, {"finish_reason", fr}}
                                       : nlohmann::json{{"index", 0}, {"text", ""}, {"logprobs", nullptr}, {"finish_reason", fr}}};
              chunk["usage"] = {{"prompt_tokens", ev.data["prompt_tokens"]}, {"completion_tokens", ev.data["tokens_out"]},
                                {"total_tokens", ev.data["prompt_tokens"].get<size_t>() + ev.data["tokens_out"].get<size_t>()}};
              out = sse_frame("", chunk) + "data: [DONE]\n\n";
            } else if (ev.name == "error") {
              out = sse_frame("", nlohmann::json{{"error", ev.data}}) + "data: [DONE]\n\n";
            }
          }
          if (!out.empty() && !sink.write(out.data(), out.size())) return false;
          if (terminal) sink.done();
          return true;
        },
        [this, job](bool success) {
          if (!job->finished()) {  // the client went away mid-stream: its job is cancelled
            job->cancel_reason = "client disconnected";
            job->cancel = true;
          }
          (void)success;
          --open_streams_;
        });
  };

  // Common path for /execute and the OpenAI endpoints after parsing.
  auto submit = [this, stream](const httplib::Request&, httplib::Response& res, JobSpec spec) {
    std::shared_ptr<Job> job = std::make_shared<Job>();
    size_t prompt_tokens = 0;
    int ctx = 0;
    std::string model;
    {
      std::unique_lock lock(mu_);
      if (auto e = state_error_locked()) {  // loading, paused, unhealthy, shutting down
        lock.unlock();
        metrics_.inc("orcd_requests_total", {{"outcome", "rejected"}});
        return send_error(res, *e);
      }
      ctx = backend_->info().context_length;
      model = backend_->info().model_name;
      try {
        prompt_tokens = backend_->count_tokens(spec.prompt);
      } catch (const TokenizerError& e) {
        lock.unlock();
        metrics_.inc("orcd_requests_total", {{"outcome", "rejected"}});
        return send_error(res, ApiError{400, "INVALID_REQUEST", e.what(), "prompt", {}});
      }
    }
    if (spec.max_tokens == 0) spec.max_tokens = std::max(1, ctx - static_cast<int>(prompt_tokens));
    if (static_cast<int64_t>(prompt_tokens) + spec.max_tokens > ctx) {
      metrics_.inc("orcd_requests_total", {{"outcome", "rejected"}});
      return send_error(res, ApiError{400, "CONTEXT_EXCEEDED",
                                      "prompt tokens (" + std::to_string(prompt_tokens) + ") + max_tokens (" + std::to_string(spec.max_tokens) +
                                          ") must not exceed the context (" + std::to_string(ctx) + ")",
                                      "max_tokens", {{"prompt_tokens", prompt_tokens}, {"context_length", ctx}}});
    }
    if (spec.job_id.empty()) spec.job_id = (spec.kind == JobKind::chat ? "chatcmpl-" : "cmpl-") + std::to_string(fresh_seed() >> 16);
    job->spec = spec;
    if (auto e = admit(job)) {
      metrics_.inc("orcd_requests_total", {{"outcome", "rejected"}});
      log_.warn("reject", "job", e->message, {{"code", e->code}}, spec.job_id);
      return send_error(res, *e);
    }
    if (spec.stream) return stream(res, job, spec.kind, spec.job_id, model);
    // Non-streaming (OpenAI): wait for the terminal event here.
    Job::Event ev;
    std::string text;
    while (true) {
      if (!job->next(ev, std::chrono::milliseconds(200))) continue;
      if (ev.name == "token") text += ev.data["t"].get<std::string>();
      if (ev.name == "error") return send_json(res, ev.data["code"] == "CANCELLED" ? 499 : 500, {{"error", ev.data}});
      if (ev.name == "end") break;
    }
    const std::string fr = openai_finish_reason(ev.data["stop_reason"]);
    const bool chat = spec.kind == JobKind::chat;
    nlohmann::json choice = chat ? nlohmann::json{{"index", 0}, {"message", {{"role", "assistant"}, {"content", text}}}, {"finish_reason", fr}}
                                 : nlohmann::json{{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", fr}};
    send_json(res, 200,
              {{"id", spec.job_id}, {"object", chat ? "chat.completion" : "text_completion"}, {"created", std::time(nullptr)},
               {"model", model}, {"choices", {choice}},
               {"usage", {{"prompt_tokens", ev.data["prompt_tokens"]}, {"completion_tokens", ev.data["tokens_out"]},
                          {"total_tokens", ev.data["prompt_tokens"].get<size_t>() + ev.data["tokens_out"].get<size_t>()}}}});
  };

  svr.Post("/execute", [this, submit](const httplib::Request& req, httplib::Response& res) {
    auto parsed = parse_execute(req.body, fresh_seed());
    if (auto* e = std::get_if<ApiError>(&parsed)) {
      metrics_.inc("orcd_requests_total", {{"outcome", "rejected"}});
      return send_error(res, *e);
    }
    submit(req, res, std::get<JobSpec>(parsed));
  });

  auto openai = [this, submit](bool chat) {
    return [this, submit, chat](const httplib::Request& req, httplib::Response& res) {
      ChatFormat fmt = ChatFormat::none;
      {
        std::lock_guard lock(mu_);
        if (backend_) fmt = backend_->info().chat_format;
      }
      auto parsed = parse_openai(req.body, chat, fmt, fresh_seed());
      if (auto* e = std::get_if<ApiError>(&parsed)) {
        metrics_.inc("orcd_requests_total", {{"outcome", "rejected"}});
        return send_error(res, *e);
      }
      submit(req, res, std::get<JobSpec>(parsed));
    };
  };
  svr.Post("/v1/completions", openai(false));
  svr.Post("/v1/chat/completions", openai(true));
  svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    nlohmann::json data = nlohmann::json::array();
    std::lock_guard lock(mu_);
    if (backend_) data.push_back({{"id", backend_->info().model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "worker-orcd"}});
    send_json(res, 200, {{"object", "list"}, {"data", data}});
  });

  svr.Post("/cancel", [this](const httplib::Request& req, httplib::Response& res) {
    auto j = nlohmann::json::parse(req.body, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("job_id") || !j["job_id"].is_string() || j["job_id"].get<std::string>().empty())
      return send_error(res, ApiError{400, "INVALID_REQUEST", "job_id must be a non-empty string", "job_id", {}});
    const std::string id = j["job_id"];
    std::string status = "not_found";
    std::shared_ptr<Job> queued;
    {
      std::lock_guard lock(mu_);
      if (running_ && running_->spec.job_id == id) {
        running_->cancel_reason = "cancelled by request";
        running_->cancel = true;
        status = "cancelling";
      }
      for (auto it = queue_.begin(); it != queue_.end(); ++it)
        if ((*it)->spec.job_id == id) {
          queued = *it;
          queue_.erase(it);
          active_.erase(id);
          status = "cancelled";
          break;
        }
      metrics_.set("orcd_queue_depth", static_cast<double>(queue_.size()));
    }
    if (queued) {
      metrics_.inc("orcd_requests_total", {{"outcome", "cancelled"}});
      queued->emit("error", {{"code", "CANCELLED"}, {"message", "cancelled by request before it started"}});
    }
    log_.info("cancel", "job", "cancel requested (" + status + ")", {}, id);
    send_json(res, 202, {{"job_id", id}, {"status", status}});
  });

  svr.Get("/health", [this](const httplib::Request& req, httplib::Response& res) {
    if (req.has_param("verify")) check_residency();
    int status = 200;
    const auto j = health_json(&status);
    send_json(res, status, j);
  });

  svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    metrics_.set("orcd_uptime_seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count());
    update_vram_metrics();
    res.set_content(metrics_.render(), "text/plain; version=0.0.4");
  });

  svr.Post("/shutdown", [this](const httplib::Request&, httplib::Response& res) {
    send_json(res, 202, {{"status", "shutting_down"}});
    log_.info("shutdown", "worker", "shutdown requested over HTTP");
    request_shutdown("shutdown requested over HTTP");
  });

  svr.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string code = res.status == 404 ? "NOT_FOUND" : res.status == 413 ? "PAYLOAD_TOO_LARGE" : "HTTP_" + std::to_string(res.status);
    std::string msg = res.status == 404 ? "no route for " + req.method + " " + req.path
                    : res.status == 413 ? "the request body is larger than max_body_bytes"
                                        : "request failed";
    res.set_content(ApiError{res.status, code, msg, "", {}}.to_json().dump(), "application/json");
  });
}

}  // namespace orcd
