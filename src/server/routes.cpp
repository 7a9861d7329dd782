// The daemon's routes, and the checks every request passes before one runs: Host, API key,
// Content-Type and Content-Encoding.
#include <httplib.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <charconv>

#include "common/text.h"
#include "server/server.h"
#include "tokenizer/vocab.h"

namespace orcd {

namespace {

void send_json(httplib::Response& res, int status, const nlohmann::json& j) {
  res.status = status;
  res.set_content(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  if (e.extra.contains("retry_after")) res.set_header("Retry-After", std::to_string(e.extra["retry_after"].get<int>()));
  send_json(res, e.http_status, e.to_json());
}

// Compares digests, so neither the key's bytes nor its length leak through timing.
bool same_secret(const std::string& given, const std::string& key) {
  unsigned char a[EVP_MAX_MD_SIZE], b[EVP_MAX_MD_SIZE];
  unsigned int na = 0, nb = 0;
  EVP_Digest(given.data(), given.size(), a, &na, EVP_sha256(), nullptr);
  EVP_Digest(key.data(), key.size(), b, &nb, EVP_sha256(), nullptr);
  return na == nb && CRYPTO_memcmp(a, b, na) == 0;
}

std::string bearer(const httplib::Request& req) {
  const std::string h = req.get_header_value("Authorization");
  if (h.size() > 7 && ascii_lower(h.substr(0, 7)) == "bearer ") return h.substr(7);
  return {};
}

// "host:port", "[v6]:port" or "host" -> the host, lowercased.
std::string host_of(const std::string& header) {
  if (header.starts_with("[")) return ascii_lower(header.substr(0, header.find(']') + 1));
  return ascii_lower(header.substr(0, header.find(':')));
}

}  // namespace

void WorkerServer::install_guards() {
  auto& svr = *http_;
  const bool loopback = is_loopback_host(cfg_.host);
  svr.set_pre_routing_handler([this, loopback](const httplib::Request& req, httplib::Response& res) {
    auto refuse = [&](const ApiError& e, const char* reason) {
      metrics_.inc("orcd_http_rejections_total", {{"reason", reason}});
      res.set_header("Connection", "close");
      close_after_response();
      send_error(res, e);
      return httplib::Server::HandlerResponse::Handled;
    };
    // A page in a browser can reach loopback; a rebound DNS name then arrives as its Host.
    if (req.has_header("Host") && (loopback || !cfg_.allowed_hosts.empty())) {
      const std::string h = host_of(req.get_header_value("Host"));
      bool ok = loopback && (h == "localhost" || h == "127.0.0.1" || h == "[::1]");
      for (const auto& a : cfg_.allowed_hosts) ok = ok || ascii_lower(a) == h;
      if (!ok) return refuse(ApiError{403, "FORBIDDEN_HOST", "the Host header names a host this worker does not serve (allowed_hosts)", "", {}}, "host");
    }
    const bool exempt = std::find(cfg_.auth_exempt_routes.begin(), cfg_.auth_exempt_routes.end(), req.path) != cfg_.auth_exempt_routes.end();
    if (req.path == "/shutdown") {
      if (cfg_.admin_api_key.empty() && !cfg_.api_key.empty())
        return refuse(ApiError{403, "FORBIDDEN", "shutdown over HTTP is disabled: set admin_api_key to allow it", "", {}}, "auth");
      if (!cfg_.admin_api_key.empty() && !same_secret(bearer(req), cfg_.admin_api_key)) {
        res.set_header("WWW-Authenticate", "Bearer");
        return refuse(ApiError{401, "UNAUTHORIZED", "this route takes the admin key: Authorization: Bearer <admin_api_key>", "", {}}, "auth");
      }
    } else if (!cfg_.api_key.empty() && !exempt && !same_secret(bearer(req), cfg_.api_key)) {
      res.set_header("WWW-Authenticate", "Bearer");
      return refuse(ApiError{401, "UNAUTHORIZED", "a valid API key is required: Authorization: Bearer <api_key>", "", {}}, "auth");
    }
    if (req.method == "POST") {
      const std::string ct = ascii_lower(req.get_header_value("Content-Type"));
      if (!ct.starts_with("application/json"))
        return refuse(ApiError{415, "UNSUPPORTED_MEDIA_TYPE", "POST bodies must be sent as Content-Type: application/json", "", {}}, "content_type");
      const std::string ce = ascii_lower(req.get_header_value("Content-Encoding"));
      const std::string te = ascii_lower(req.get_header_value("Transfer-Encoding"));
      if ((!ce.empty() && ce != "identity") || (!te.empty() && te != "chunked"))
        return refuse(ApiError{415, "UNSUPPORTED_ENCODING", "compressed request bodies are not accepted; send them uncompressed", "", {}},
                      "encoding");
      // A declared length over the limit is refused before a byte of the body is read.
      const std::string cl = req.get_header_value("Content-Length");
      uint64_t declared = 0;
      const auto [end, ec] = std::from_chars(cl.data(), cl.data() + cl.size(), declared);
      if (!cl.empty() && (ec != std::errc() || end != cl.data() + cl.size() || declared > cfg_.max_body_bytes))
        return refuse(ApiError{413, "PAYLOAD_TOO_LARGE", "the request body is larger than max_body_bytes (" + std::to_string(cfg_.max_body_bytes) + ")",
                               "", {}}, "body_size");
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });

  svr.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    switch (current_http_violation()) {
      case HttpViolation::header_too_large: res.status = 431; break;
      case HttpViolation::too_many_headers: res.status = 431; break;
      case HttpViolation::read_deadline: res.status = 408; break;
      case HttpViolation::body_too_large: res.status = 413; break;
      case HttpViolation::none: break;
    }
    std::string code = "HTTP_" + std::to_string(res.status), msg = "request failed";
    if (res.status == 404) code = "NOT_FOUND", msg = "no route for " + req.method + " " + req.path.substr(0, 128);
    if (res.status == 413) code = "PAYLOAD_TOO_LARGE", msg = "the request body is larger than max_body_bytes (" + std::to_string(cfg_.max_body_bytes) + ")";
    if (res.status == 431) code = "HEADERS_TOO_LARGE", msg = "the request head is larger than max_header_bytes or has more than max_header_count headers";
    if (res.status == 408) code = "REQUEST_TIMEOUT", msg = "the request was not received within request_read_timeout_secs";
    if (res.status >= 400 && res.status != 404) metrics_.inc("orcd_http_rejections_total", {{"reason", code}});
    res.set_content(ApiError{res.status, code, msg, "", {}}.to_json().dump(), "application/json");
  });
}

void WorkerServer::submit(httplib::Response& res, JobSpec spec) {
  auto reject = [&](const ApiError& e) {
    metrics_.inc("orcd_requests_total", {{"outcome", "rejected"}});
    send_error(res, e);
  };
  if (auto e = state_error()) return reject(*e);
  auto job = std::make_shared<Job>();
  int ctx = 0;
  std::string model;
  {
    std::shared_ptr<InferenceBackend> b = backend();  // tokenized outside every lock
    if (!b) return reject(ApiError{503, "LOADING", "the model is not loaded yet", "", {{"retry_after", 5}}});
    ctx = b->info().context_length;
    model = b->info().model_name;
    try {
      job->prompt_ids = b->tokenize(spec.prompt);
    } catch (const TokenizerError& e) {
      return reject(ApiError{400, "INVALID_REQUEST", e.what(), "prompt", {}});
    }
  }
  const int64_t prompt_tokens = static_cast<int64_t>(job->prompt_ids.size());
  if (!spec.max_tokens_given) spec.max_tokens = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(cfg_.default_max_tokens, ctx - prompt_tokens)));
  if (prompt_tokens + spec.max_tokens > ctx)
    return reject(ApiError{400, "CONTEXT_EXCEEDED",
                           "prompt tokens (" + std::to_string(prompt_tokens) + ") + max_tokens (" + std::to_string(spec.max_tokens) +
                               ") must not exceed the context (" + std::to_string(ctx) + ")",
                           "max_tokens", {{"prompt_tokens", prompt_tokens}, {"context_length", ctx}}});
  if (spec.job_id.empty()) spec.job_id = new_job_id(spec.kind);
  job->spec = spec;
  job->deadline = job->enqueued + std::chrono::seconds(spec.timeout_secs);
  if (auto e = queue_.push(job)) {
    log_.warn("reject", "job", e->message, {{"code", e->code}}, spec.job_id);
    return reject(*e);
  }
  metrics_.set("orcd_queue_depth", static_cast<double>(queue_.depth()));

  if (spec.stream) {
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    ++open_streams_;
    auto enc = std::make_shared<StreamEncoder>(spec.kind, spec.job_id, model);
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, job, enc](size_t, httplib::DataSink& sink) {
          JobEvent ev;
          if (!job->next(ev, std::chrono::milliseconds(100))) {
            if (job->past_deadline() && !job->cancelled()) queue_.cancel(job->spec.job_id, "deadline exceeded");
            return sink.is_writable();  // idle: keep waiting unless the client went away
          }
          const std::string out = enc->encode(ev);
          if (!out.empty() && !sink.write(out.data(), out.size())) return false;
          if (ev.terminal()) sink.done();
          return true;
        },
        [this, job](bool) {
          if (!job->finished()) queue_.cancel(job->spec.job_id, "client disconnected");  // its tokens would go nowhere
          --open_streams_;
        });
    return;
  }
  // Non-streaming: wait here for the terminal event, watching the deadline and the client.
  JobEvent ev;
  std::string text;
  auto next_check = std::chrono::steady_clock::now();
  while (true) {
    const bool got = job->next(ev, std::chrono::milliseconds(100));
    if (const auto now = std::chrono::steady_clock::now(); now >= next_check && !job->cancelled()) {
      next_check = now + std::chrono::milliseconds(100);
      if (job->past_deadline(now)) queue_.cancel(spec.job_id, "deadline exceeded");
      else if (current_client_gone()) queue_.cancel(spec.job_id, "client disconnected");
    }
    if (!got) continue;
    if (ev.kind == EventKind::token) text += ev.data["t"].get<std::string>();
    if (ev.kind == EventKind::error) return send_json(res, error_event_status(ev.data), {{"error", ev.data}});
    if (ev.kind == EventKind::end) break;
  }
  send_json(res, 200, openai_response(spec.kind, spec.job_id, model, text, ev.data));
}

void WorkerServer::install_routes() {
  auto& svr = *http_;
  // Every POST reads its body here, Content-Length or chunked, never past max_body_bytes.
  auto post = [this, &svr](const char* path, std::function<void(const httplib::Request&, httplib::Response&, const std::string&)> handle) {
    svr.Post(path, [this, handle](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
      auto body = read_body_limited(reader, cfg_.max_body_bytes);
      if (const int* status = std::get_if<int>(&body)) {
        res.status = *status;
        res.set_header("Connection", "close");
        return;  // the error handler writes the body
      }
      handle(req, res, std::get<std::string>(body));
    });
  };
  auto parsed = [this](httplib::Response& res, std::variant<JobSpec, ApiError> p) {
    if (auto* e = std::get_if<ApiError>(&p)) {
      metrics_.inc("orcd_requests_total", {{"outcome", "rejected"}});
      return send_error(res, *e);
    }
    submit(res, std::get<JobSpec>(std::move(p)));
  };

  post("/execute", [this, parsed](const httplib::Request&, httplib::Response& res, const std::string& body) {
    parsed(res, parse_execute(body, fresh_seed(), limits_));
  });
  post("/v1/completions", [this, parsed](const httplib::Request&, httplib::Response& res, const std::string& body) {
    parsed(res, parse_openai(body, false, chat_format(), fresh_seed(), limits_));
  });
  post("/v1/chat/completions", [this, parsed](const httplib::Request&, httplib::Response& res, const std::string& body) {
    parsed(res, parse_openai(body, true, chat_format(), fresh_seed(), limits_));
  });
  svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    nlohmann::json data = nlohmann::json::array();
    if (const auto b = backend()) data.push_back({{"id", b->info().model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "worker-orcd"}});
    send_json(res, 200, {{"object", "list"}, {"data", data}});
  });

  post("/cancel", [this](const httplib::Request&, httplib::Response& res, const std::string& body) {
    if (!json_depth_within(body, kMaxJsonDepth)) return send_error(res, ApiError{400, "INVALID_JSON", "the request body nests too deeply", "", {}});
    const auto j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("job_id") || !j["job_id"].is_string() || j["job_id"].get<std::string>().empty() ||
        j["job_id"].get<std::string>().size() > 256)
      return send_error(res, ApiError{400, "INVALID_REQUEST", "job_id must be a string of 1 to 256 characters", "job_id", {}});
    const std::string id = j["job_id"];
    const auto r = queue_.cancel(id, "cancelled by request");
    const char* status = r == JobQueue::CancelResult::cancelling ? "cancelling" : r == JobQueue::CancelResult::cancelled ? "cancelled" : "not_found";
    if (r == JobQueue::CancelResult::cancelled) metrics_.inc("orcd_requests_total", {{"outcome", "cancelled"}});
    metrics_.set("orcd_queue_depth", static_cast<double>(queue_.depth()));
    log_.info("cancel", "job", std::string("cancel requested (") + status + ")", {}, id);
    send_json(res, 202, {{"job_id", id}, {"status", status}});
  });

  svr.Get("/health", [this](const httplib::Request& req, httplib::Response& res) {
    if (req.has_param("verify")) check_residency();
    int status = 200;
    const auto j = health_json(&status);
    send_json(res, status, j);
  });
  svr.Get("/livez", [this](const httplib::Request&, httplib::Response& res) {
    const WorkerState s = state();
    send_json(res, s == WorkerState::unhealthy ? 503 : 200, {{"alive", s != WorkerState::unhealthy}, {"status", worker_state_name(s)}});
  });
  svr.Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
    const auto e = state_error();
    nlohmann::json j = {{"ready", !e}, {"status", worker_state_name(state())}};
    if (e) {
      j["code"] = e->code;
      if (e->extra.contains("retry_after")) res.set_header("Retry-After", std::to_string(e->extra["retry_after"].get<int>()));
    }
    send_json(res, e ? 503 : 200, j);
  });

  svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    metrics_.set("orcd_uptime_seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count());
    update_vram_metrics();
    res.set_content(metrics_.render(), "text/plain; version=0.0.4");
  });

  post("/shutdown", [this](const httplib::Request& req, httplib::Response& res, const std::string&) {
    const bool now = req.has_param("now");
    send_json(res, 202, {{"status", now ? "shutting_down" : "draining"}, {"drain_secs", now ? 0.0 : cfg_.drain_secs}});
    log_.info("shutdown", "worker", "shutdown requested over HTTP");
    if (now) request_shutdown("shutdown requested over HTTP");
    else drain(std::chrono::duration<double>(cfg_.drain_secs), "shutdown requested over HTTP");
  });
}

}  // namespace orcd
