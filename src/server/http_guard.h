// Hard limits on what a client may make the daemon read, enforced on the socket before any
// request is buffered: the request head's size and header count, and one deadline for reading a
// whole request. cpp-httplib reads headers without bounds, so its connection loop is replaced
// here by one that reads through a guarded stream.
#pragma once
#include <httplib.h>

#include <chrono>
#include <string>
#include <variant>

namespace orcd {

struct HttpLimits {
  size_t max_header_bytes = 16 << 10;  // request line and headers together
  size_t max_header_count = 64;
  std::chrono::milliseconds request_deadline{30'000};  // to read one request, head and body
  std::chrono::milliseconds keep_alive_idle{5'000};    // between requests on one connection
  size_t keep_alive_max = 32;                          // requests on one connection
  std::chrono::milliseconds write_timeout{30'000};     // a client that stops reading
};

// Why the current request was cut off, if it was (read by the error handler on the same thread).
enum class HttpViolation { none, header_too_large, too_many_headers, read_deadline, body_too_large };
HttpViolation current_http_violation();

// Ends the connection after the current response (a refused request may leave its body unread).
void close_after_response();

// True when the peer of the request being handled on this thread has closed its connection.
bool current_client_gone();

class GuardedHttpServer : public httplib::Server {
 public:
  explicit GuardedHttpServer(HttpLimits limits) : limits_(limits) {}
  const HttpLimits& limits() const { return limits_; }
  // Serves one connection already accepted (or one end of a socketpair) on this thread.
  bool serve_connection(socket_t sock) { return process_and_close_socket(sock); }

 private:
  bool process_and_close_socket(socket_t sock) override;
  HttpLimits limits_;
};

// Reads a request body (Content-Length or chunked) through `reader`, stopping as soon as it
// passes `max_bytes`: returns the body, or the status (413) to answer with.
std::variant<std::string, int> read_body_limited(const httplib::ContentReader& reader, size_t max_bytes);

}  // namespace orcd
