#include "server/http_guard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace orcd {

namespace {

using Clock = std::chrono::steady_clock;

int ms_until(Clock::time_point t) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(t - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30));
}

bool wait_for(int sock, short events, int timeout_ms) {
  pollfd p{sock, events, 0};
  int r;
  do r = ::poll(&p, 1, timeout_ms);
  while (r < 0 && errno == EINTR);
  return r > 0 && (p.revents & (events | POLLHUP | POLLERR));
}

bool peer_closed(int sock) {
  pollfd p{sock, POLLIN, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLHUP | POLLERR)) return true;
  char c;
  const ssize_t n = ::recv(sock, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

void address_of(int sock, bool local, std::string& ip, int& port) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  if ((local ? ::getsockname(sock, reinterpret_cast<sockaddr*>(&a), &len) : ::getpeername(sock, reinterpret_cast<sockaddr*>(&a), &len)) != 0) return;
  char buf[INET6_ADDRSTRLEN] = {0};
  if (a.ss_family == AF_INET) {
    const auto* s = reinterpret_cast<const sockaddr_in*>(&a);
    inet_ntop(AF_INET, &s->sin_addr, buf, sizeof buf);
    port = ntohs(s->sin_port);
  } else if (a.ss_family == AF_INET6) {
    const auto* s = reinterpret_cast<const sockaddr_in6*>(&a);
    inet_ntop(AF_INET6, &s->sin6_addr, buf, sizeof buf);
    port = ntohs(s->sin6_port);
  }
  ip = buf;
}

// A socket stream that counts what the request head costs and stops reading at the deadline.
class GuardedStream final : public httplib::Stream {
 public:
  GuardedStream(int sock, const HttpLimits& limits) : sock_(sock), limits_(limits) {}

  void start_request(Clock::time_point now) {
    deadline_ = now + limits_.request_deadline;
    head_done_ = false;
    head_bytes_ = lines_ = 0;
    tail_ = 0;
    violation_ = HttpViolation::none;
  }
  HttpViolation violation() const { return violation_; }
  bool buffered() const { return pos_ < len_; }

  bool is_readable() const override { return buffered() || wait_for(sock_, POLLIN, ms_until(deadline_)); }
  bool is_writable() const override { return wait_for(sock_, POLLOUT, static_cast<int>(limits_.write_timeout.count())) && !peer_closed(sock_); }

  ssize_t read(char* ptr, size_t size) override {
    if (violation_ != HttpViolation::none) return -1;
    if (!buffered()) {
      if (Clock::now() >= deadline_ || !wait_for(sock_, POLLIN, ms_until(deadline_))) {
        violation_ = HttpViolation::read_deadline;
        return -1;
      }
      ssize_t n;
      do n = ::recv(sock_, buf_, sizeof buf_, 0);
      while (n < 0 && errno == EINTR);
      if (n <= 0) return n;
      pos_ = 0;
      len_ = static_cast<size_t>(n);
    }
    size_t n = std::min(size, len_ - pos_);
    if (!head_done_) n = account_head(n);
    if (violation_ != HttpViolation::none) return -1;
    std::memcpy(ptr, buf_ + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (!wait_for(sock_, POLLOUT, static_cast<int>(limits_.write_timeout.count()))) return -1;
    ssize_t n;
    do n = ::send(sock_, ptr, size, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n;
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override { address_of(sock_, false, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { address_of(sock_, true, ip, port); }
  socket_t socket() const override { return sock_; }

 private:
  // Scans up to n buffered bytes of the head; returns how many of them may be handed out (the
  // head ends at the blank line, and the body's bytes are not counted against it).
  size_t account_head(size_t n) {
    for (size_t i = 0; i < n; ++i) {
      const char c = buf_[pos_ + i];
      ++head_bytes_;
      tail_ = (tail_ << 8) | static_cast<unsigned char>(c);
      if (c == '\n') {
        ++lines_;
        if ((tail_ & 0xFFFFFFFFu) == 0x0D0A0D0Au || (tail_ & 0xFFFFu) == 0x0A0Au) {
          head_done_ = true;
          return i + 1;
        }
      }
      if (head_bytes_ > limits_.max_header_bytes) violation_ = HttpViolation::header_too_large;
      else if (lines_ > limits_.max_header_count + 1) violation_ = HttpViolation::too_many_headers;
      if (violation_ != HttpViolation::none) return i;
    }
    return n;
  }

  int sock_;
  const HttpLimits& limits_;
  Clock::time_point deadline_{};
  bool head_done_ = false;
  size_t head_bytes_ = 0, lines_ = 0;
  uint32_t tail_ = 0;
  HttpViolation violation_ = HttpViolation::none;
  char buf_[4096];
  size_t pos_ = 0, len_ = 0;
};

thread_local GuardedStream* t_stream = nullptr;
thread_local HttpViolation t_body_violation = HttpViolation::none;
thread_local bool t_close_after = false;

}  // namespace

HttpViolation current_http_violation() {
  if (t_body_violation != HttpViolation::none) return t_body_violation;
  return t_stream ? t_stream->violation() : HttpViolation::none;
}

void close_after_response() { t_close_after = true; }

bool current_client_gone() { return t_stream && peer_closed(t_stream->socket()); }

bool GuardedHttpServer::process_and_close_socket(socket_t sock) {
  GuardedStream strm(sock, limits_);
  t_stream = &strm;
  bool ok = true;
  for (size_t i = 0; i < limits_.keep_alive_max && (i == 0 || svr_sock_ != INVALID_SOCKET); ++i) {
    // The first request's clock starts at accept; a later one's when its first byte arrives.
    if (i > 0 && !strm.buffered() && !wait_for(sock, POLLIN, static_cast<int>(limits_.keep_alive_idle.count()))) break;
    if (i > 0 && peer_closed(sock) && !strm.buffered()) break;
    strm.start_request(Clock::now());
    t_body_violation = HttpViolation::none;
    t_close_after = false;
    bool closed = false;
    ok = process_request(strm, i + 1 == limits_.keep_alive_max, closed, nullptr);
    if (!ok || closed || t_close_after || strm.violation() != HttpViolation::none || t_body_violation != HttpViolation::none) break;
  }
  t_stream = nullptr;
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
  return ok;
}

std::variant<std::string, int> read_body_limited(const httplib::ContentReader& reader, size_t max_bytes) {
  std::string body;
  bool too_large = false;
  const bool ok = reader([&](const char* data, size_t len) {
    if (body.size() + len > max_bytes) {
      too_large = true;
      return false;
    }
    body.append(data, len);
    return true;
  });
  if (too_large) {
    t_body_violation = HttpViolation::body_too_large;
    return 413;
  }
  if (!ok) return current_http_violation() == HttpViolation::read_deadline ? 408 : 400;
  return body;
}

}  // namespace orcd
