// libFuzzer entry for everything a client sends. The first byte picks the shape:
//   0: the bytes as a request body for every parser;
//   1: the bytes nested in a field 1 to 200,000 levels deep;
//   2: the bytes repeated into a prompt and stop strings past the prompt limit (4 KiB here);
//   3: the bytes as a whole HTTP request (request line, headers, chunked framing) read by the
//      guarded server over a socketpair, with its limits, into the same parsers.
// Any input must end as a job or an ApiError (or a refused connection), never a crash.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "server/api.h"
#include "server/http_guard.h"

namespace {

// Small limits, so long inputs cross them at fuzzing speed.
orcd::RequestLimits limits() {
  orcd::RequestLimits l;
  l.max_prompt_bytes = 4096;
  return l;
}

void check(const std::variant<orcd::JobSpec, orcd::ApiError>& v) {
  if (const auto* e = std::get_if<orcd::ApiError>(&v)) {
    if (e->code.empty() || e->message.empty() || e->http_status < 400) std::abort();
    (void)e->to_json().dump();
    return;
  }
  const auto& j = std::get<orcd::JobSpec>(v);
  const auto& s = j.sampling;
  const auto in = [](float v, float lo, float hi) { return v >= lo && v <= hi; };  // false for NaN
  if (j.max_tokens < 1 || !in(s.temperature, 0, 2) || !in(s.top_p, 0, 1) || !in(s.min_p, 0, 1) || s.top_k < 0 || j.timeout_secs < 1) std::abort();
  if (j.prompt.size() > limits().max_prompt_bytes + 4096) std::abort();  // templated chat adds a little
}

void parse_all(std::string_view body) {
  check(orcd::parse_execute(body, 7, limits()));
  check(orcd::parse_openai(body, false, orcd::ChatFormat::none, 7, limits()));
  check(orcd::parse_openai(body, true, orcd::ChatFormat::chatml, 7, limits()));
  check(orcd::parse_openai(body, true, orcd::ChatFormat::llama3, 7, limits()));
}

orcd::GuardedHttpServer& http() {
  static orcd::GuardedHttpServer* svr = [] {
    orcd::HttpLimits l;
    l.max_header_bytes = 4096;
    l.max_header_count = 32;
    l.request_deadline = std::chrono::milliseconds(1000);
    auto* s = new orcd::GuardedHttpServer(l);
    s->Post("/execute", [](const httplib::Request&, httplib::Response& res, const httplib::ContentReader& reader) {
      auto body = orcd::read_body_limited(reader, 64 << 10);
      if (const auto* b = std::get_if<std::string>(&body)) parse_all(*b);
      res.status = 200;
    });
    return s;
  }();
  return *svr;
}

void serve_raw(std::string_view bytes) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return;
  // Small enough for the socket buffer, so the write never blocks.
  (void)!::write(sv[0], bytes.data(), std::min<size_t>(bytes.size(), 64 << 10));
  ::shutdown(sv[0], SHUT_WR);
  http().serve_connection(sv[1]);  // closes sv[1]
  ::close(sv[0]);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
      parse_all(rest);
      break;
    case 1: {
      const size_t depth = 1 + (rest.empty() ? 0 : static_cast<uint8_t>(rest[0]) * 784u);  // up to ~200,000
      const char open = rest.size() > 1 && (rest[1] & 1) ? '{' : '[';
      std::string body = R"({"job_id":"f","prompt":"p","max_tokens":)";
      for (size_t i = 0; i < depth; ++i) body += open == '[' ? "[" : "{\"a\":";
      body += rest.size() > 2 ? std::string(rest.substr(2)) : "1";
      for (size_t i = 0; i < depth; ++i) body += open == '[' ? ']' : '}';
      body += "}";
      parse_all(body);
      break;
    }
    case 2: {
      std::string piece = rest.empty() ? std::string("x") : std::string(rest);
      for (auto& c : piece)
        if (c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20) c = 'q';
      std::string big;
      while (big.size() < 5000) big += piece;  // past max_prompt_bytes
      parse_all(R"({"job_id":"f","prompt":")" + big + R"(","stop":[")" + piece + R"("]})");
      parse_all(R"({"messages":[{"role":"user","content":")" + big + R"("}]})");
      break;
    }
    case 3:
      serve_raw(rest);
      break;
  }
  return 0;
}
