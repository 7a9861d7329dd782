#include "server/state_notifier.h"

#include <httplib.h>

#include "common/text.h"

namespace orcd {

StateNotifier::StateNotifier(std::string url, Narrator& log) : url_(std::move(url)), log_(log) {
  const UrlParts u = split_url(url_);  // the config checked the scheme
  base_ = u.origin;
  path_ = u.path;
  thread_ = std::thread([this] { loop(); });
}

StateNotifier::~StateNotifier() {
  flush(std::chrono::seconds(5));
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void StateNotifier::post(nlohmann::json body) {
  {
    std::lock_guard lock(mu_);
    body["seq"] = ++seq_;
    pending_.push_back(std::move(body));
  }
  cv_.notify_all();
}

bool StateNotifier::flush(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return pending_.empty() && !busy_; });
}

bool StateNotifier::deliver(const nlohmann::json& body) {
  httplib::Client cli(base_);
  cli.set_connection_timeout(2);
  cli.set_read_timeout(5);
  auto r = cli.Post(path_.c_str(), body.dump(), "application/json");
  if (r && r->status < 300) return true;
  log_.error("callback", url_, "state callback failed: " + (r ? "HTTP " + std::to_string(r->status) : httplib::to_string(r.error())),
             {{"state", body.value("state", "")}, {"seq", body.value("seq", 0)}});
  return false;
}

void StateNotifier::loop() {
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || !pending_.empty(); });
    if (pending_.empty()) return;
    nlohmann::json body = std::move(pending_.front());
    pending_.pop_front();
    busy_ = true;
    lock.unlock();
    bool ok = false;
    for (int attempt = 0; attempt < 3 && !ok; ++attempt) {
      if (attempt) std::this_thread::sleep_for(std::chrono::milliseconds(200 << attempt));
      ok = deliver(body);
    }
    if (ok) log_.info("callback", url_, "state callback delivered", {{"state", body.value("state", "")}, {"seq", body.value("seq", 0)}});
    lock.lock();
    busy_ = false;
    cv_.notify_all();
  }
}

}  // namespace orcd
