// `worker-orcd synth --preset NAME --quant SCHEME --vocab VOCAB.gguf -o OUT.gguf [--seed S]`
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/commands.h"
#include "engine/synth.h"

namespace orcd::cli {

Runner add_synth(CLI::App& app) {
  auto o = std::make_shared<SynthOptions>();
  auto* cmd = app.add_subcommand("synth", "Write a synthetic GGUF model: real dimensions, random weights, a real tokenizer");
  std::string presets;
  for (const auto& p : synth_presets()) presets += (presets.empty() ? "" : ", ") + p.name;
  cmd->add_option("--preset", o->preset, "Model dimensions: " + presets)->required();
  cmd->add_option("--quant", o->scheme, "f16, q8_0, q4_0, q4_k_m")->capture_default_str();
  cmd->add_option("--vocab", o->vocab_path, "GGUF file whose tokenizer is copied (padded to the preset's vocabulary)")->required();
  cmd->add_option("-o,--output", o->out_path, "Output GGUF path")->required();
  cmd->add_option("--seed", o->seed, "Seed for the random weights")->capture_default_str();
  cmd->add_option("--threads", o->threads, "Generator threads (default: all cores)");
  cmd->add_option("--layers", o->layers_override, "Override the preset's layer count");
  return [o] {
    const uint64_t bytes = write_synthetic_model(*o);
    fmt::print("wrote {} ({} {}, {:.2f} GiB)\n", o->out_path, o->preset, o->scheme, bytes / 1073741824.0);
    return 0;
  };
}

}  // namespace orcd::cli
