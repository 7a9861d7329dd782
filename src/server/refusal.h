// The body of a VRAM refusal, as operators and pool managers read it.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "vram/vram_errors.h"

namespace orcd {

// {error, code: POOL_UNAVAILABLE, reason: insufficient_vram, message, needed_bytes, free_bytes,
// headroom_bytes, gpu, details, suggestions, retriable, retry_after}. POOL_UNAVAILABLE is the
// specification's code for work that cannot fit; `reason` says why.
nlohmann::json vram_refusal_json(const InsufficientVramError& e, int gpu, int retry_after_secs = 30,
                                 const nlohmann::json& details = nlohmann::json::object());

}  // namespace orcd
