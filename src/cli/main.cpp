// worker-orcd: a VRAM-only LLM inference worker. Subcommands live in cmd_*.cpp.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <map>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"worker-orcd: serves LLMs from GGUF files on NVIDIA GPUs, VRAM only"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "worker-orcd 0.1.0");

  std::map<std::string, orcd::cli::Runner> runners;
  runners["inspect"] = orcd::cli::add_inspect(app);
  runners["tokenize"] = orcd::cli::add_tokenize(app);
  runners["serve"] = orcd::cli::add_serve(app);
  runners["generate"] = orcd::cli::add_generate(app);
  runners["synth"] = orcd::cli::add_synth(app);
  runners["bench"] = orcd::cli::add_bench(app);

  CLI11_PARSE(app, argc, argv);
  try {
    for (auto* sub : app.get_subcommands()) return runners.at(sub->get_name())();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "worker-orcd: error: %s\n", e.what());
    return 1;
  }
  return 2;
}
