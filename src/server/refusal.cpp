#include "server/refusal.h"

namespace orcd {

nlohmann::json vram_refusal_json(const InsufficientVramError& e, int gpu, int retry_after, const nlohmann::json& details) {
  nlohmann::json suggestions = nlohmann::json::array({"close other programs that use this GPU (games, video editors, browsers with GPU acceleration)",
                                                      "use a smaller quantization of the model (for example Q4_K_M instead of Q8_0)",
                                                      "use a smaller model", "use a shorter context (--ctx-size)",
                                                      "wait and retry in a few minutes"});
  if (e.headroom() > 0)
    suggestions.push_back("if this GPU is dedicated to the worker, set allow_shared_gpu = false and a smaller reserved_system_vram");
  return {{"error", "pool_unavailable"},
          {"code", "POOL_UNAVAILABLE"},
          {"reason", "insufficient_vram"},
          {"message", e.what()},
          {"needed_bytes", e.needed()},
          {"free_bytes", e.free_bytes()},
          {"headroom_bytes", e.headroom()},
          {"gpu", gpu},
          {"details", details},
          {"suggestions", suggestions},
          {"retriable", true},
          {"retry_after", retry_after}};
}

}  // namespace orcd
