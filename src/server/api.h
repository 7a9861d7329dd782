// Request parsing and validation for /execute and the OpenAI-compatible endpoints, error
// bodies, and Server-Sent Events framing. Pure functions: tested without a GPU.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "engine/chat_template.h"
#include "engine/kernels/sampling.h"

namespace orcd {

struct ApiError {
  int http_status = 400;
  std::string code;     // INVALID_REQUEST, INVALID_JSON, QUEUE_FULL, INSUFFICIENT_VRAM, ...
  std::string message;  // says the rule that was broken
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
  SamplingParams sampling;
  std::vector<std::string> stop;
  bool stream = true;
  bool echo_usage = true;
};

// /execute: {job_id, prompt, max_tokens, temperature, top_p, top_k, min_p, repetition_penalty,
// stop, seed}. `fresh_seed` is used when no seed is given (and reported back).
std::variant<JobSpec, ApiError> parse_execute(std::string_view body, uint64_t fresh_seed);
// /v1/completions and /v1/chat/completions (OpenAI's field names and defaults).
std::variant<JobSpec, ApiError> parse_openai(std::string_view body, bool chat, ChatFormat format, uint64_t fresh_seed);

// "event: <event>\ndata: <json>\n\n"; with an empty event only the data line.
std::string sse_frame(std::string_view event, const nlohmann::json& data);

}  // namespace orcd
