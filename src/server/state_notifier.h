// Pushes the worker's state changes to --callback-url, in order, from a thread of its own so a
// slow or absent receiver never holds up the worker.
#pragma once
#include <condition_variable>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "server/narrator.h"

namespace orcd {

class StateNotifier {
 public:
  StateNotifier(std::string url, Narrator& log);
  ~StateNotifier();  // delivers what is queued (a few seconds at most), then stops
  // Queues `body` (a sequence number is added); each is tried up to 3 times.
  void post(nlohmann::json body);
  // Waits until everything queued so far was delivered or given up; false on timeout.
  bool flush(std::chrono::milliseconds timeout);

 private:
  void loop();
  bool deliver(const nlohmann::json& body);
  std::string url_, base_, path_;
  Narrator& log_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<nlohmann::json> pending_;
  bool busy_ = false, stop_ = false;
  uint64_t seq_ = 0;
  std::thread thread_;
};

}  // namespace orcd
