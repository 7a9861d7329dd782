// A scripted InferenceBackend for CPU tests of the daemon: no GPU, the same contract.
#pragma once
#include <atomic>
#include <chrono>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "engine/generate.h"
#include "server/backend.h"

namespace orcd::test {

// Text a test changes while server threads read it: requests reach those threads over a socket,
// which ThreadSanitizer does not count as synchronization, so the text has a lock of its own.
class LockedText {
 public:
  explicit LockedText(std::string s) : s_(std::move(s)) {}
  LockedText& operator=(std::string s) {
    std::lock_guard lock(mu_);
    s_ = std::move(s);
    return *this;
  }
  std::string get() const {
    std::lock_guard lock(mu_);
    return s_;
  }

 private:
  mutable std::mutex mu_;
  std::string s_;
};

// Emits the words of `script` one by one, `delay` apart, honouring max_tokens, stop strings
// and cancellation as the real engine does.
class FakeBackend : public InferenceBackend {
 public:
  LockedText script{"alpha beta gamma delta epsilon zeta eta theta iota kappa"};
  std::atomic<std::chrono::milliseconds> delay{std::chrono::milliseconds(5)};
  std::atomic<int> started{0}, cancelled{0};
  mutable std::atomic<int> tokenized{0};
  std::atomic<bool> break_device{false};
  bool device_lost() override { return break_device.load(); }
  std::atomic<bool> violate_residency{false};

  FakeBackend() {
    info_.model_name = "fake-model";
    info_.quant_kind = "Q4_K_M";
    info_.tokenizer_kind = "bpe";
    info_.vocab_size = 1000;
    info_.context_length = 64;
    info_.sm = "sm_90";
    info_.chat_format = ChatFormat::chatml;
  }
  const BackendInfo& info() const override { return info_; }
  BackendInfo& mutable_info() { return info_; }
  std::vector<int32_t> tokenize(std::string_view prompt) const override {
    ++tokenized;
    size_t n = 1;
    for (char c : prompt) n += c == ' ';
    return std::vector<int32_t>(n, 1);
  }
  GenerateResult generate(const GenerateRequest& req, const std::function<bool(std::string_view)>& on_piece) override {
    ++started;
    if (break_device) throw std::runtime_error("illegal memory access (simulated)");
    GenerateResult r;
    r.prompt_ids = req.prompt_ids.empty() ? tokenize(req.prompt) : req.prompt_ids;
    std::istringstream words(script.get());
    std::string w;
    StopStringFilter stops(req.stop);
    r.stop_reason = StopReason::eos;
    while (words >> w) {
      std::this_thread::sleep_for(delay.load());
      if (req.cancel && *req.cancel) {
        ++cancelled;
        r.stop_reason = StopReason::cancelled;
        return r;
      }
      r.output_ids.push_back(7);
      const std::string piece = stops.push(" " + w);
      r.text += piece;
      if (!piece.empty() && !on_piece(piece)) {
        ++cancelled;
        r.stop_reason = StopReason::cancelled;
        return r;
      }
      if (stops.stopped()) {
        r.stop_reason = StopReason::stop_string;
        return r;
      }
      if (static_cast<int>(r.output_ids.size()) >= req.max_tokens) {
        r.stop_reason = StopReason::max_tokens;
        break;
      }
    }
    const std::string tail = stops.flush();
    if (!tail.empty()) on_piece(tail), r.text += tail;
    r.decode_ms = 1;
    return r;
  }
  std::map<std::string, uint64_t> vram_breakdown() const override { return {{"weights", 1000}, {"kv_cache", 200}}; }
  uint64_t vram_bytes() const override { return 1200; }
  ResidencyReport verify_residency() override {
    ResidencyReport r;
    r.checked = 2;
    if (violate_residency) {
      r.resident = false;
      r.violations = {"0x1 (200 bytes, kv_cache 'planted'): managed (unified) memory"};
    }
    return r;
  }

 private:
  BackendInfo info_;
};

}  // namespace orcd::test
