// libFuzzer entry: any request body must parse to a job or to an ApiError, never escape with an
// exception (the daemon answers every request); a parsed job must satisfy the limits it checks.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "server/api.h"

namespace {
void check(const std::variant<orcd::JobSpec, orcd::ApiError>& v) {
  if (const auto* e = std::get_if<orcd::ApiError>(&v)) {
    if (e->code.empty() || e->message.empty() || e->http_status < 400) std::abort();
    (void)e->to_json().dump();
    return;
  }
  // The ranges parse_* promise (max_tokens 0 is chat's "until the end of the context").
  const auto& j = std::get<orcd::JobSpec>(v);
  const auto& s = j.sampling;
  const auto in = [](float v, float lo, float hi) { return v >= lo && v <= hi; };  // false for NaN
  if (j.max_tokens < 0 || !in(s.temperature, 0, 2) || !in(s.top_p, 0, 1) || !in(s.min_p, 0, 1) || s.top_k < 0) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  check(orcd::parse_execute(body, 7));
  check(orcd::parse_openai(body, false, orcd::ChatFormat::none, 7));
  check(orcd::parse_openai(body, true, orcd::ChatFormat::chatml, 7));
  check(orcd::parse_openai(body, true, orcd::ChatFormat::llama3, 7));
  return 0;
}
