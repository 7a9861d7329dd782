#include "server/api.h"

#include <cmath>
#include <optional>

namespace orcd {

nlohmann::json ApiError::to_json() const {
  std::string snake;
  for (char c : code) snake += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  nlohmann::json j = {{"error", snake}, {"code", code}, {"message", message}};
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

namespace {

ApiError bad(const std::string& field, const std::string& rule) { return ApiError{400, "INVALID_REQUEST", field + " " + rule, field, {}}; }

// Each reader returns an error message (empty when fine) and leaves `out` untouched if absent.
std::optional<ApiError> number_in(const nlohmann::json& j, const char* key, float lo, float hi, float& out, bool lo_open = false) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  const auto& v = j[key];
  const std::string range = std::string(lo_open ? "(" : "[") + std::to_string(lo).substr(0, 4) + ", " + std::to_string(hi).substr(0, 4) + "]";
  if (!v.is_number()) return bad(key, "must be a number in " + range);
  const double d = v.get<double>();
  if (!std::isfinite(d) || d < lo || d > hi || (lo_open && d <= lo)) return bad(key, "must be a number in " + range + ", got " + v.dump());
  out = static_cast<float>(d);
  return std::nullopt;
}

std::optional<ApiError> int_at_least(const nlohmann::json& j, const char* key, int64_t lo, int& out) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  const auto& v = j[key];
  if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > (1 << 30))
    return bad(key, "must be an integer >= " + std::to_string(lo) + ", got " + v.dump());
  out = static_cast<int>(v.get<int64_t>());
  return std::nullopt;
}

std::optional<ApiError> read_seed(const nlohmann::json& j, SamplingParams& s, uint64_t fresh) {
  s.seed = fresh;
  if (!j.contains("seed") || j["seed"].is_null()) return std::nullopt;
  const auto& v = j["seed"];
  if (v.is_number_unsigned()) s.seed = v.get<uint64_t>();
  else if (v.is_number_integer() && v.get<int64_t>() >= 0) s.seed = static_cast<uint64_t>(v.get<int64_t>());
  else return bad("seed", "must be an integer from 0 to 18446744073709551615, got " + v.dump());
  return std::nullopt;
}

std::optional<ApiError> read_stop(const nlohmann::json& j, std::vector<std::string>& out) {
  if (!j.contains("stop") || j["stop"].is_null()) return std::nullopt;
  const auto& v = j["stop"];
  if (v.is_string()) {
    if (v.get<std::string>().empty()) return bad("stop", "strings must not be empty");
    out = {v.get<std::string>()};
    return std::nullopt;
  }
  if (!v.is_array() || v.size() > 4) return bad("stop", "must be a string or an array of at most 4 strings");
  for (const auto& s : v) {
    if (!s.is_string() || s.get<std::string>().empty()) return bad("stop", "must hold only non-empty strings");
    out.push_back(s.get<std::string>());
  }
  return std::nullopt;
}

std::optional<nlohmann::json> parse_object(std::string_view body, ApiError& err) {
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

std::optional<ApiError> read_sampling(const nlohmann::json& j, SamplingParams& s) {
  if (auto e = number_in(j, "temperature", 0, 2, s.temperature)) return e;
  if (auto e = number_in(j, "top_p", 0, 1, s.top_p)) return e;
  if (auto e = number_in(j, "min_p", 0, 1, s.min_p)) return e;
  if (auto e = number_in(j, "repetition_penalty", 0, 10, s.repetition_penalty, true)) return e;
  if (auto e = int_at_least(j, "top_k", 0, s.top_k)) return e;
  return std::nullopt;
}

}  // namespace

std::variant<JobSpec, ApiError> parse_execute(std::string_view body, uint64_t fresh_seed) {
  ApiError err;
  auto j = parse_object(body, err);
  if (!j) return err;
  JobSpec spec;
  spec.kind = JobKind::execute;
  if (!j->contains("job_id") || !(*j)["job_id"].is_string() || (*j)["job_id"].get<std::string>().empty())
    return bad("job_id", "must be a non-empty string");
  spec.job_id = (*j)["job_id"].get<std::string>();
  if (spec.job_id.size() > 256) return bad("job_id", "must be at most 256 characters");
  if (!j->contains("prompt") || !(*j)["prompt"].is_string() || (*j)["prompt"].get<std::string>().empty())
    return bad("prompt", "must be a non-empty string");
  spec.prompt = (*j)["prompt"].get<std::string>();
  if (auto e = int_at_least(*j, "max_tokens", 1, spec.max_tokens)) return *e;
  if (auto e = read_sampling(*j, spec.sampling)) return *e;
  if (auto e = read_stop(*j, spec.stop)) return *e;
  if (auto e = read_seed(*j, spec.sampling, fresh_seed)) return *e;
  return spec;
}

std::variant<JobSpec, ApiError> parse_openai(std::string_view body, bool chat, ChatFormat format, uint64_t fresh_seed) {
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
  spec.max_tokens = chat ? 0 : 16;  // chat: 0 = until the end of the context
  if (chat) {
    if (!j->contains("messages") || !(*j)["messages"].is_array() || (*j)["messages"].empty())
      return bad("messages", "must be a non-empty array of {role, content}");
    std::vector<ChatMessage> msgs;
    for (const auto& m : (*j)["messages"]) {
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") || !m["content"].is_string())
        return bad("messages", "entries must be objects with string role and content");
      msgs.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    }
    try {
      spec.prompt = apply_chat_template(format, msgs);
    } catch (const std::invalid_argument& e) {
      return bad("messages", e.what());
    }
  } else {
    if (!j->contains("prompt") || !(*j)["prompt"].is_string() || (*j)["prompt"].get<std::string>().empty())
      return bad("prompt", "must be a non-empty string (arrays of prompts are not supported)");
    spec.prompt = (*j)["prompt"].get<std::string>();
  }
  if (j->contains("n") && !((*j)["n"].is_number_integer() && (*j)["n"].get<int64_t>() == 1)) return bad("n", "must be 1");
  if (j->contains("max_completion_tokens")) {
    if (auto e = int_at_least(*j, "max_completion_tokens", 1, spec.max_tokens)) return *e;
  }
  if (auto e = int_at_least(*j, "max_tokens", 1, spec.max_tokens)) return *e;
  if (auto e = read_sampling(*j, spec.sampling)) return *e;
  if (j->contains("frequency_penalty") || j->contains("presence_penalty")) {
    // Not supported: say so rather than silently ignore a setting that changes the output.
    for (const char* k : {"frequency_penalty", "presence_penalty"})
      if (j->contains(k) && !(*j)[k].is_null() && !((*j)[k].is_number() && (*j)[k].get<double>() == 0.0))
        return bad(k, "is not supported; use repetition_penalty");
  }
  if (auto e = read_stop(*j, spec.stop)) return *e;
  if (auto e = read_seed(*j, spec.sampling, fresh_seed)) return *e;
  spec.stream = j->contains("stream") && (*j)["stream"].is_boolean() && (*j)["stream"].get<bool>();
  if (j->contains("stream") && !(*j)["stream"].is_boolean() && !(*j)["stream"].is_null()) return bad("stream", "must be true or false");
  return spec;
}

}  // namespace orcd
