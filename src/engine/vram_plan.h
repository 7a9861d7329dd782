// What a model needs in VRAM, computed before anything is allocated, and the refusal when it
// does not fit.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace orcd {

class GgufFile;
struct ModelConfig;

struct VramPlan {
  uint64_t weights = 0, kv_cache = 0, workspace = 0, logits = 0;
  uint64_t total() const { return weights + kv_cache + workspace + logits; }
  std::string breakdown() const;
};

VramPlan plan_vram(const GgufFile& f, const ModelConfig& c, int n_ctx, int max_batch_tokens);


class InsufficientVramError : public std::runtime_error {
 public:
  InsufficientVramError(const std::string& what, uint64_t needed, uint64_t free_bytes, uint64_t headroom)
      : std::runtime_error(what), needed_(needed), free_(free_bytes), headroom_(headroom) {}
  uint64_t needed() const { return needed_; }
  uint64_t free_bytes() const { return free_; }
  uint64_t headroom() const { return headroom_; }

 private:
  uint64_t needed_, free_, headroom_;
};

// Throws InsufficientVramError (code INSUFFICIENT_VRAM) naming needed, free, headroom, device,
// model and the breakdown, with what to try.
void check_fits(const VramPlan& plan, uint64_t free_bytes, uint64_t headroom, int device, const std::string& model_path, int n_ctx);

}  // namespace orcd

namespace orcd {
// The JSON body of a VRAM refusal: {error, code, message, needed_bytes, free_bytes,
// headroom_bytes, gpu, details, suggestions, retriable, retry_after}. `code` is
// INSUFFICIENT_VRAM (this request cannot fit now) or POOL_UNAVAILABLE (the GPU is taken).
nlohmann::json vram_refusal_json(const InsufficientVramError& e, int gpu, const std::string& code, int retry_after_secs = 30,
                                 const nlohmann::json& details = nlohmann::json::object());
}  // namespace orcd
