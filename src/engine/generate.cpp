#include "engine/generate.h"

#include <chrono>

#include "engine/engine.h"
#include "tokenizer/detokenizer.h"

namespace orcd {

std::string_view stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::eos: return "eos";
    case StopReason::stop_string: return "stop_string";
    case StopReason::max_tokens: return "max_tokens";
    case StopReason::context_full: return "context_full";
    case StopReason::cancelled: return "cancelled";
  }
  return "unknown";
}

std::string StopStringFilter::push(std::string_view text) {
  if (stopped_) return {};
  held_ += text;
  // A complete stop string: emit what precedes the earliest one and stop.
  size_t cut = std::string::npos;
  for (const auto& s : stops_)
    if (!s.empty()) cut = std::min(cut, held_.find(s));
  if (cut != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, cut);
    held_.clear();
    return out;
  }
  // Keep the longest tail that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const auto& s : stops_)
    for (size_t n = std::min(s.size() - 1, held_.size()); n > keep; --n)
      if (held_.compare(held_.size() - n, n, s, 0, n) == 0) {
        keep = n;
        break;
      }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopStringFilter::flush() {
  std::string out = stopped_ ? std::string() : held_;
  held_.clear();
  return out;
}

GenerateResult generate(InferenceEngine& engine, const GenerateRequest& req, const std::function<bool(std::string_view)>& on_piece) {
  using clock = std::chrono::steady_clock;
  const auto ms = [](clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  GenerateResult r;
  const Tokenizer& tok = engine.tokenizer();
  EncodeOptions eo;
  if (!req.add_bos) eo.add_bos = false;
  r.prompt_ids = req.prompt_ids.empty() ? tok.encode(req.prompt, eo) : req.prompt_ids;
  if (r.prompt_ids.empty()) throw PromptTooLongError("the prompt is empty after tokenization");
  if (static_cast<int>(r.prompt_ids.size()) >= engine.n_ctx())
    throw PromptTooLongError("the prompt has " + std::to_string(r.prompt_ids.size()) + " tokens; the context holds " +
                             std::to_string(engine.n_ctx()) + " and one must be left to generate");

  StreamingDetokenizer detok(tok);
  StopStringFilter stops(req.stop);
  std::vector<int32_t> history = r.prompt_ids;
  auto emit = [&](const std::string& piece) {
    if (piece.empty()) return true;
    r.text += piece;
    return on_piece ? on_piece(piece) : true;
  };

  auto cancelled_now = [&] { return req.cancel && req.cancel->load(std::memory_order_relaxed); };
  if (cancelled_now()) {
    r.stop_reason = StopReason::cancelled;
    return r;
  }
  const auto t0 = clock::now();
  engine.forward(r.prompt_ids, 0);
  int pos = static_cast<int>(r.prompt_ids.size());
  // Each sampled token's decode step is queued before the host reads the token (`ahead`), unless
  // it is known to be the last; an end-of-generation token found later wastes that one step.
  auto can_follow = [&](size_t index) { return static_cast<int>(index) + 1 < req.max_tokens && pos < engine.n_ctx(); };
  bool ahead = can_follow(0);
  int32_t next = engine.sample_and_step(req.sampling, history, 0, ahead ? pos : -1);
  r.prefill_ms = r.ttft_ms = ms(clock::now() - t0);
  const auto t1 = clock::now();
  bool cancelled = false;
  while (true) {
    if (tok.is_eog(next)) {
      r.stop_reason = StopReason::eos;
      break;
    }
    r.output_ids.push_back(next);
    history.push_back(next);
    if (!emit(stops.push(detok.push(next))) || cancelled_now()) {
      cancelled = true;
      break;
    }
    if (stops.stopped()) {
      r.stop_reason = StopReason::stop_string;
      break;
    }
    if (static_cast<int>(r.output_ids.size()) >= req.max_tokens) {
      r.stop_reason = StopReason::max_tokens;
      break;
    }
    if (pos >= engine.n_ctx()) {
      r.stop_reason = StopReason::context_full;
      break;
    }
    if (!ahead) engine.forward(std::span<const int32_t>(&next, 1), pos);
    ++pos;
    ahead = can_follow(r.output_ids.size());
    next = engine.sample_and_step(req.sampling, history, r.output_ids.size(), ahead ? pos : -1);
  }
  if (cancelled) {
    r.stop_reason = StopReason::cancelled;
  } else if (r.stop_reason != StopReason::stop_string) {
    emit(stops.push(detok.flush()));
    emit(stops.flush());
  }
  r.decode_ms = ms(clock::now() - t1);
  return r;
}

}  // namespace orcd
