// What the HTTP layer needs from an inference engine. The daemon uses EngineBackend; CPU tests
// drive the same server through a scripted fake.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "engine/chat_template.h"
#include "engine/generate.h"
#include "vram/vram_tracker.h"

namespace orcd {

class InferenceEngine;

struct BackendInfo {
  std::string model_path, model_name, quant_kind, tokenizer_kind, architecture;
  int vocab_size = 0, context_length = 0, device = 0;
  std::string sm;  // e.g. "sm_90"
  int cuda_runtime_version = 0;
  ChatFormat chat_format = ChatFormat::none;
};

class InferenceBackend {
 public:
  virtual ~InferenceBackend() = default;
  virtual const BackendInfo& info() const = 0;
  // Token count of a prompt as generate() will see it; throws TokenizerError on bad input.
  virtual size_t count_tokens(std::string_view prompt) const = 0;
  // Runs on the server's single GPU thread.
  virtual GenerateResult generate(const GenerateRequest& req, const std::function<bool(std::string_view)>& on_piece) = 0;
  virtual std::map<std::string, uint64_t> vram_breakdown() const = 0;
  virtual uint64_t vram_bytes() const = 0;
  virtual ResidencyReport verify_residency() = 0;
};

std::unique_ptr<InferenceBackend> make_engine_backend(std::unique_ptr<InferenceEngine> engine);

// GGUF's general.file_type as llama.cpp names it (e.g. 15 -> "Q4_K_M"); else the type holding
// most of the weight bytes.
std::string quant_kind_name(int64_t file_type, const std::string& dominant_type);

}  // namespace orcd
