// The wire: request parsing and validation for /execute and the OpenAI-compatible endpoints,
// error bodies, and the encoding of a job's events as SSE frames and OpenAI objects. Pure
// functions: tested without a GPU or a socket.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "engine/chat_template.h"
#include "engine/sampling_params.h"

namespace orcd {

struct ApiError {
  int http_status = 400;
  std::string code;     // INVALID_REQUEST, INVALID_JSON, QUEUE_FULL, POOL_UNAVAILABLE, ...
  std::string message;  // says the rule that was broken, never echoes the client's value
  std::string field;    // the request field, when one is at fault
  nlohmann::json extra = nlohmann::json::object();  // e.g. retry_after
  nlohmann::json to_json() const;
};

enum class JobKind { execute, completion, chat };

struct JobSpec {
  JobKind kind = JobKind::execute;
  std::string job_id;
  std::string prompt;  // text as the tokenizer sees it (chat already templated)
  int max_tokens = 256;
  bool max_tokens_given = true;  // false: the server picks (default_max_tokens, the context)
  SamplingParams sampling;
  std::vector<std::string> stop;
  bool stream = true;
  int timeout_secs = 600;  // from arrival to the last token
};

// What a request may ask for; the server's config fills it.
struct RequestLimits {
  size_t max_prompt_bytes = 256 << 10;  // checked before tokenizing
  int default_timeout_secs = 600;       // when the request gives no timeout_secs
  int max_timeout_secs = 3600;
};
constexpr int kMaxJsonDepth = 64;

// True when no array or object in `body` nests deeper than `max_depth` (strings are skipped).
// Checked before parsing, so no later step (dump, destruction) ever sees deep input.
bool json_depth_within(std::string_view body, int max_depth);

// /execute: {job_id, prompt, max_tokens, temperature, top_p, top_k, min_p, repetition_penalty,
// stop, seed, timeout_secs}. `fresh_seed` is used when no seed is given (and reported back).
std::variant<JobSpec, ApiError> parse_execute(std::string_view body, uint64_t fresh_seed, const RequestLimits& limits = {});
// /v1/completions and /v1/chat/completions (OpenAI's field names and defaults).
std::variant<JobSpec, ApiError> parse_openai(std::string_view body, bool chat, ChatFormat format, uint64_t fresh_seed,
                                             const RequestLimits& limits = {});

// "event: <event>\ndata: <json>\n\n"; with an empty event only the data line.
std::string sse_frame(std::string_view event, const nlohmann::json& data);

enum class EventKind { started, token, end, error };
std::string_view event_kind_name(EventKind k);

struct JobEvent {
  EventKind kind = EventKind::token;
  nlohmann::json data;
  bool terminal() const { return kind == EventKind::end || kind == EventKind::error; }
};

// The HTTP status a terminal error event maps to in a non-streaming answer.
int error_event_status(const nlohmann::json& error_data);

// One job's events as SSE text: /execute's named events, or OpenAI's chunks ending in [DONE].
class StreamEncoder {
 public:
  StreamEncoder(JobKind kind, std::string id, std::string model) : kind_(kind), id_(std::move(id)), model_(std::move(model)) {}
  std::string encode(const JobEvent& ev);

 private:
  JobKind kind_;
  std::string id_, model_;
  bool sent_role_ = false;
};

// A finished OpenAI job as one object (non-streaming); `end` is the end event's data.
nlohmann::json openai_response(JobKind kind, const std::string& id, const std::string& model, const std::string& text,
                               const nlohmann::json& end);

}  // namespace orcd
