// What the HTTP layer needs from an inference engine. The daemon uses EngineBackend; CPU tests
// drive the same server through a scripted fake.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

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
  // The prompt's tokens as generate() takes them (BOS included); throws TokenizerError on bad
  // input. Called on HTTP threads, outside the server's locks.
  virtual std::vector<int32_t> tokenize(std::string_view prompt) const = 0;
  // Runs on the server's single GPU thread.
  virtual GenerateResult generate(const GenerateRequest& req, const std::function<bool(std::string_view)>& on_piece) = 0;
  virtual std::map<std::string, uint64_t> vram_breakdown() const = 0;
  virtual uint64_t vram_bytes() const = 0;
  virtual ResidencyReport verify_residency() = 0;
  // After a failure: true when the device is in a state no later call recovers from (a sticky
  // CUDA error), so the process must exit and be restarted.
  virtual bool device_lost() { return false; }
};

std::unique_ptr<InferenceBackend> make_engine_backend(std::unique_ptr<InferenceEngine> engine);

// GGUF's general.file_type as llama.cpp names it (e.g. 15 -> "Q4_K_M"); else the type holding
// most of the weight bytes.
std::string quant_kind_name(int64_t file_type, const std::string& dominant_type);

}  // namespace orcd
