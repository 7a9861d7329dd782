// One generation job: tokenize, prefill, decode until a stop condition, streaming whole UTF-8
// pieces to the caller as they complete.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "engine/sampling_params.h"

namespace orcd {

class InferenceEngine;

enum class StopReason { eos, stop_string, max_tokens, context_full, cancelled };
std::string_view stop_reason_name(StopReason r);

struct GenerateRequest {
  std::string prompt;               // raw text, or the chat prompt already templated
  std::vector<int32_t> prompt_ids;  // when set, the prompt already tokenized (prompt is then ignored)
  int max_tokens = 128;
  SamplingParams sampling;
  std::vector<std::string> stop;    // stop strings; the text ends before the first match
  bool add_bos = true;              // if the model asks for BOS
  const std::atomic<bool>* cancel = nullptr;  // checked before prefill and at every token
};

struct GenerateResult {
  std::vector<int32_t> prompt_ids, output_ids;
  std::string text;
  StopReason stop_reason = StopReason::max_tokens;
  double prefill_ms = 0, decode_ms = 0, ttft_ms = 0;
};

class PromptTooLongError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// `on_piece` receives text as it becomes final (never part of a stop string, never a split
// character); returning false cancels the job. Throws PromptTooLongError before any GPU work
// if the prompt does not leave room for one generated token.
GenerateResult generate(InferenceEngine& engine, const GenerateRequest& req,
                        const std::function<bool(std::string_view piece)>& on_piece = {});

// Holds back text that could still turn out to be the start of a stop string.
class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  // Returns the text now safe to emit; sets stopped() once a stop string is complete.
  std::string push(std::string_view text);
  std::string flush();  // at the end: whatever was held back
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace orcd
