// `worker-orcd generate --model FILE --prompt TEXT [-n N] [--temperature T] [--seed S] ... [--chat]`
// Streams text to stdout; a summary line goes to stderr.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fmt/format.h>
#include <random>

#include "cli/commands.h"
#include "engine/chat_template.h"
#include "engine/engine.h"
#include "engine/generate.h"

namespace orcd::cli {

Runner add_generate(CLI::App& app) {
  struct Opts {
    std::string model, prompt, system;
    int n = 128, ctx = 0, gpu = 0;
    bool chat = false, seed_set = false;
    SamplingParams s;
    std::vector<std::string> stop;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("generate", "Generate text from a prompt on the GPU, streaming it to stdout");
  cmd->add_option("--model,-m", o->model, "GGUF model")->required();
  cmd->add_option("--prompt,-p", o->prompt, "Prompt text")->required();
  cmd->add_option("-n,--max-tokens", o->n, "Tokens to generate at most")->check(CLI::PositiveNumber);
  cmd->add_option("--temperature", o->s.temperature, "0 = greedy")->check(CLI::Range(0.0, 2.0));
  cmd->add_option("--top-k", o->s.top_k, "0 = off")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", o->s.top_p, "1 = off")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--min-p", o->s.min_p, "0 = off")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--repeat-penalty", o->s.repetition_penalty, "1 = off")->check(CLI::Range(0.0, 10.0));
  auto* seed = cmd->add_option("--seed", o->s.seed, "RNG seed (random if not given; printed)");
  cmd->add_option("--stop", o->stop, "Stop string (repeatable)");
  cmd->add_flag("--chat", o->chat, "Wrap the prompt in the model's chat template");
  cmd->add_option("--system", o->system, "System message (with --chat)");
  cmd->add_option("--ctx-size,-c", o->ctx, "Context length (default: the model's, at most 4096)");
  cmd->add_option("--gpu-device", o->gpu, "CUDA device index");
  return [o, seed] {
    if (!*seed) o->s.seed = std::random_device{}() | (static_cast<uint64_t>(std::random_device{}()) << 32);
    EngineOptions eo;
    eo.device = o->gpu;
    eo.n_ctx = o->ctx;
    int last_pct = -1;
    eo.progress = [&last_pct](uint64_t done, uint64_t total) {
      const int pct = static_cast<int>(100 * done / std::max<uint64_t>(total, 1));
      if (pct / 25 != last_pct / 25 || done == total) fmt::print(stderr, "loading: {} / {} bytes ({}%)\n", done, total, pct);
      last_pct = pct;
    };
    auto engine = InferenceEngine::load(o->model, eo);
    GenerateRequest req;
    req.prompt = o->prompt;
    if (o->chat) {
      const ChatFormat f = detect_chat_format(engine->tokenizer().vocab().chat_template);
      std::vector<ChatMessage> msgs;
      if (!o->system.empty()) msgs.push_back({"system", o->system});
      msgs.push_back({"user", o->prompt});
      req.prompt = apply_chat_template(f, msgs);
    }
    req.max_tokens = o->n;
    req.sampling = o->s;
    req.stop = o->stop;
    const auto r = generate(*engine, req, [](std::string_view piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      return true;
    });
    std::fputc('\n', stdout);
    const auto by = engine->tracker().bytes_by_purpose();
    std::string vram;
    for (const auto& [p, b] : by) vram += fmt::format(" {}={:.1f}MiB", vram_purpose_name(p), b / 1048576.0);
    const double n_dec = r.output_ids.size() > 1 ? static_cast<double>(r.output_ids.size() - 1) : 0.0;
    fmt::print(stderr,
               "prompt_tokens={} generated_tokens={} stop={} seed={} prefill_tok_s={:.1f} decode_tok_s={:.1f} ttft_ms={:.2f} "
               "vram_total={:.1f}MiB{}\n",
               r.prompt_ids.size(), r.output_ids.size(), stop_reason_name(r.stop_reason), o->s.seed,
               r.prompt_ids.size() / (r.prefill_ms / 1e3), r.decode_ms > 0 ? n_dec / (r.decode_ms / 1e3) : 0.0, r.ttft_ms,
               engine->tracker().total_bytes() / 1048576.0, vram);
    return 0;
  };
}

}  // namespace orcd::cli
