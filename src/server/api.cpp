#include "server/api.h"

#include <cmath>
#include <ctime>
#include <optional>

#include "common/text.h"

namespace orcd {

nlohmann::json ApiError::to_json() const {
  nlohmann::json j = {{"error", ascii_lower(code)}, {"code", code}, {"message", message}};
  if (!field.empty()) j["field"] = field;
  for (const auto& [k, v] : extra.items()) j[k] = v;
  return j;
}

std::string sse_frame(std::string_view event, const nlohmann::json& data) {
  std::string s;
  if (!event.empty()) s += "event: " + std::string(event) + "\n";
  // dump() escapes newlines inside strings, so the payload is always one data line.
  s += "data: " + data.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n\n";
  return s;
}

bool json_depth_within(std::string_view body, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

namespace {

ApiError bad(const std::string& field, const std::string& rule) { return ApiError{400, "INVALID_REQUEST", field + " " + rule, field, {}}; }

// Names what the client sent without repeating it.
std::string got(const nlohmann::json& v) { return std::string(", got ") + (v.is_number() ? "an out-of-range number" : std::string("a value of type ") + v.type_name()); }

// Each reader leaves `out` untouched when the key is absent or null.
std::optional<ApiError> number_in(const nlohmann::json& j, const char* key, float lo, float hi, float& out, bool lo_open = false) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  const auto& v = j[key];
  const std::string range = std::string(lo_open ? "(" : "[") + std::to_string(lo).substr(0, 4) + ", " + std::to_string(hi).substr(0, 4) + "]";
  if (!v.is_number()) return bad(key, "must be a number in " + range + got(v));
  const double d = v.get<double>();
  if (!std::isfinite(d) || d < lo || d > hi || (lo_open && d <= lo)) return bad(key, "must be a number in " + range + got(v));
  out = static_cast<float>(d);
  return std::nullopt;
}

std::optional<ApiError> int_in(const nlohmann::json& j, const char* key, int64_t lo, int64_t hi, int& out) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  const auto& v = j[key];
  if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi)) || v.get<int64_t>() < lo ||
      v.get<int64_t>() > hi)
    return bad(key, "must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi) + got(v));
  out = static_cast<int>(v.get<int64_t>());
  return std::nullopt;
}

std::optional<ApiError> read_seed(const nlohmann::json& j, SamplingParams& s, uint64_t fresh) {
  s.seed = fresh;
  if (!j.contains("seed") || j["seed"].is_null()) return std::nullopt;
  const auto& v = j["seed"];
  if (v.is_number_unsigned()) s.seed = v.get<uint64_t>();
  else if (v.is_number_integer() && v.get<int64_t>() >= 0) s.seed = static_cast<uint64_t>(v.get<int64_t>());
  else return bad("seed", "must be an integer from 0 to 18446744073709551615" + got(v));
  return std::nullopt;
}

std::optional<ApiError> read_stop(const nlohmann::json& j, std::vector<std::string>& out) {
  if (!j.contains("stop") || j["stop"].is_null()) return std::nullopt;
  const auto& v = j["stop"];
  if (v.is_string()) {
    if (v.get<std::string>().empty() || v.get<std::string>().size() > 256) return bad("stop", "strings must hold 1 to 256 bytes");
    out = {v.get<std::string>()};
    return std::nullopt;
  }
  if (!v.is_array() || v.size() > 4) return bad("stop", "must be a string or an array of at most 4 strings" + got(v));
  for (const auto& s : v) {
    if (!s.is_string() || s.get<std::string>().empty() || s.get<std::string>().size() > 256)
      return bad("stop", "must hold only strings of 1 to 256 bytes");
    out.push_back(s.get<std::string>());
  }
  return std::nullopt;
}

std::optional<nlohmann::json> parse_object(std::string_view body, ApiError& err) {
  if (!json_depth_within(body, kMaxJsonDepth)) {
    err = ApiError{400, "INVALID_JSON", "the request body nests arrays or objects deeper than " + std::to_string(kMaxJsonDepth) + " levels", "", {}};
    return std::nullopt;
  }
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded()) {
    err = ApiError{400, "INVALID_JSON", "the request body is not valid JSON", "", {}};
    return std::nullopt;
  }
  if (!j.is_object()) {
    err = ApiError{400, "INVALID_JSON", "the request body must be a JSON object", "", {}};
    return std::nullopt;
  }
  return j;
}

std::optional<ApiError> read_prompt(const nlohmann::json& j, const RequestLimits& limits, std::string& out, const char* hint) {
  if (!j.contains("prompt") || !j["prompt"].is_string() || j["prompt"].get<std::string>().empty())
    return bad("prompt", std::string("must be a non-empty string") + hint);
  if (j["prompt"].get_ref<const std::string&>().size() > limits.max_prompt_bytes)
    return ApiError{413, "PROMPT_TOO_LARGE", "prompt is larger than max_prompt_bytes (" + std::to_string(limits.max_prompt_bytes) + ")", "prompt", {}};
  out = j["prompt"].get<std::string>();
  return std::nullopt;
}

std::optional<ApiError> read_common(const nlohmann::json& j, JobSpec& spec, uint64_t fresh_seed, const RequestLimits& limits) {
  if (auto e = number_in(j, "temperature", 0, 2, spec.sampling.temperature)) return e;
  if (auto e = number_in(j, "top_p", 0, 1, spec.sampling.top_p)) return e;
  if (auto e = number_in(j, "min_p", 0, 1, spec.sampling.min_p)) return e;
  if (auto e = number_in(j, "repetition_penalty", 0, 10, spec.sampling.repetition_penalty, true)) return e;
  if (auto e = int_in(j, "top_k", 0, 1 << 30, spec.sampling.top_k)) return e;
  if (auto e = read_stop(j, spec.stop)) return e;
  if (auto e = read_seed(j, spec.sampling, fresh_seed)) return e;
  spec.timeout_secs = limits.default_timeout_secs;
  if (auto e = int_in(j, "timeout_secs", 1, limits.max_timeout_secs, spec.timeout_secs)) return e;
  return std::nullopt;
}

}  // namespace

std::variant<JobSpec, ApiError> parse_execute(std::string_view body, uint64_t fresh_seed, const RequestLimits& limits) {
  ApiError err;
  auto j = parse_object(body, err);
  if (!j) return err;
  JobSpec spec;
  spec.kind = JobKind::execute;
  if (!j->contains("job_id") || !(*j)["job_id"].is_string() || (*j)["job_id"].get<std::string>().empty())
    return bad("job_id", "must be a non-empty string");
  spec.job_id = (*j)["job_id"].get<std::string>();
  if (spec.job_id.size() > 256) return bad("job_id", "must be at most 256 characters");
  if (auto e = read_prompt(*j, limits, spec.prompt, "")) return *e;
  if (auto e = int_in(*j, "max_tokens", 1, 1 << 30, spec.max_tokens)) return *e;
  if (auto e = read_common(*j, spec, fresh_seed, limits)) return *e;
  return spec;
}

std::variant<JobSpec, ApiError> parse_openai(std::string_view body, bool chat, ChatFormat format, uint64_t fresh_seed, const RequestLimits& limits) {
  ApiError err;
  auto j = parse_object(body, err);
  if (!j) return err;
  JobSpec spec;
  spec.kind = chat ? JobKind::chat : JobKind::completion;
  // OpenAI's defaults: plain sampling at temperature 1 with no truncation.
  spec.sampling.temperature = 1.0f;
  spec.sampling.top_p = 1.0f;
  spec.sampling.top_k = 0;
  spec.sampling.min_p = 0.0f;
  spec.max_tokens = 16;  // completions: OpenAI's default; chat: the server's default_max_tokens
  spec.max_tokens_given = !chat;
  if (chat) {
    if (!j->contains("messages") || !(*j)["messages"].is_array() || (*j)["messages"].empty() || (*j)["messages"].size() > 4096)
      return bad("messages", "must be an array of 1 to 4096 {role, content} objects");
    std::vector<ChatMessage> msgs;
    size_t bytes = 0;
    for (const auto& m : (*j)["messages"]) {
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") || !m["content"].is_string())
        return bad("messages", "entries must be objects with string role and content");
      bytes += m["content"].get_ref<const std::string&>().size();
      msgs.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    }
    if (bytes > limits.max_prompt_bytes)
      return ApiError{413, "PROMPT_TOO_LARGE", "the messages are larger than max_prompt_bytes (" + std::to_string(limits.max_prompt_bytes) + ")",
                      "messages", {}};
    try {
      spec.prompt = apply_chat_template(format, msgs);
    } catch (const std::invalid_argument& e) {
      return bad("messages", e.what());
    }
  } else {
    if (auto e = read_prompt(*j, limits, spec.prompt, " (arrays of prompts are not supported)")) return *e;
  }
  if (j->contains("n") && !((*j)["n"].is_number_integer() && (*j)["n"].get<int64_t>() == 1)) return bad("n", "must be 1");
  for (const char* k : {"max_completion_tokens", "max_tokens"})
    if (j->contains(k) && !(*j)[k].is_null()) {
      if (auto e = int_in(*j, k, 1, 1 << 30, spec.max_tokens)) return *e;
      spec.max_tokens_given = true;
    }
  // Not supported: say so rather than silently ignore a setting that changes the output.
  for (const char* k : {"frequency_penalty", "presence_penalty"})
    if (j->contains(k) && !(*j)[k].is_null() && !((*j)[k].is_number() && (*j)[k].get<double>() == 0.0))
      return bad(k, "is not supported; use repetition_penalty");
  if (auto e = read_common(*j, spec, fresh_seed, limits)) return *e;
  if (j->contains("stream") && !(*j)["stream"].is_boolean() && !(*j)["stream"].is_null()) return bad("stream", "must be true or false");
  spec.stream = j->contains("stream") && (*j)["stream"].is_boolean() && (*j)["stream"].get<bool>();
  return spec;
}

std::string_view event_kind_name(EventKind k) {
  switch (k) {
    case EventKind::started: return "started";
    case EventKind::token: return "token";
    case EventKind::end: return "end";
    case EventKind::error: return "error";
  }
  return "unknown";
}

int error_event_status(const nlohmann::json& e) {
  const std::string code = e.value("code", "");
  if (code == "CANCELLED") return 499;
  if (code == "DEADLINE_EXCEEDED") return 504;
  if (code == "POOL_UNAVAILABLE" || code == "SHUTTING_DOWN" || code == "WORKER_PAUSED") return 503;
  if (code == "CONTEXT_EXCEEDED" || code == "INVALID_REQUEST") return 400;
  return 500;
}

namespace {

// OpenAI says "length" when generation ran out of room, "stop" otherwise.
std::string openai_finish_reason(const nlohmann::json& end) {
  const std::string r = end.value("stop_reason", "");
  return r == "max_tokens" || r == "context_full" ? "length" : "stop";
}

nlohmann::json usage(const nlohmann::json& end) {
  const size_t p = end.value("prompt_tokens", size_t{0}), c = end.value("tokens_out", size_t{0});
  return {{"prompt_tokens", p}, {"completion_tokens", c}, {"total_tokens", p + c}};
}

}  // namespace

std::string StreamEncoder::encode(const JobEvent& ev) {
  if (kind_ == JobKind::execute) return sse_frame(event_kind_name(ev.kind), ev.data);
  const bool chat = kind_ == JobKind::chat;
  nlohmann::json chunk = {{"id", id_}, {"object", chat ? "chat.completion.chunk" : "text_completion"}, {"created", std::time(nullptr)}, {"model", model_}};
  switch (ev.kind) {
    case EventKind::started: return {};
    case EventKind::token:
      if (chat) {
        nlohmann::json delta = {{"content", ev.data["t"]}};
        if (!sent_role_) delta["role"] = "assistant", sent_role_ = true;
        chunk["choices"] = {{{"index", 0}, {"delta", delta}, {"finish_reason", nullptr}}};
      } else {
        chunk["choices"] = {{{"index", 0}, {"text", ev.data["t"]}, {"logprobs", nullptr}, {"finish_reason", nullptr}}};
      }
      return sse_frame("", chunk);
    case EventKind::end: {
      const std::string fr = openai_finish_reason(ev.data);
      chunk["choices"] = {chat ? nlohmann::json{{"index", 0}, {"delta", nlohmann::json::object()}, {"finish_reason", fr}}
                               : nlohmann::json{{"index", 0}, {"text", ""}, {"logprobs", nullptr}, {"finish_reason", fr}}};
      chunk["usage"] = usage(ev.data);
      return sse_frame("", chunk) + "data: [DONE]\n\n";
    }
    case EventKind::error: return sse_frame("", nlohmann::json{{"error", ev.data}}) + "data: [DONE]\n\n";
  }
  return {};
}

nlohmann::json openai_response(JobKind kind, const std::string& id, const std::string& model, const std::string& text, const nlohmann::json& end) {
  const bool chat = kind == JobKind::chat;
  const std::string fr = openai_finish_reason(end);
  nlohmann::json choice = chat ? nlohmann::json{{"index", 0}, {"message", {{"role", "assistant"}, {"content", text}}}, {"finish_reason", fr}}
                               : nlohmann::json{{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", fr}};
  return {{"id", id}, {"object", chat ? "chat.completion" : "text_completion"}, {"created", std::time(nullptr)},
          {"model", model}, {"choices", {choice}}, {"usage", usage(end)}};
}

}  // namespace orcd
