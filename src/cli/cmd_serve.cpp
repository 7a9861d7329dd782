// `worker-orcd serve`: the main job. Resolves the model, checks the GPU, then serves.
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>

#include "cli/commands.h"
#include "engine/device.h"
#include "gguf/gguf.h"
#include "gguf/model_info.h"

namespace orcd::cli {

namespace {

constexpr const char* kDefaultModelFile = "qwen2.5-0.5b-instruct-q4_k_m.gguf";

// $WORKER_ORCD_MODEL, else the cache: $XDG_CACHE_HOME or ~/.cache, under worker-orcd/models.
std::string default_model_path() {
  if (const char* m = std::getenv("WORKER_ORCD_MODEL"); m && *m) return m;
  std::filesystem::path cache;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) cache = x;
  else if (const char* h = std::getenv("HOME"); h && *h) cache = std::filesystem::path(h) / ".cache";
  else cache = "/var/cache";
  return (cache / "worker-orcd" / "models" / kDefaultModelFile).string();
}

}  // namespace

Runner add_serve(CLI::App& app) {
  struct Opts { std::string model; int gpu = 0; };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("serve", "Load a model into VRAM and serve it over HTTP");
  cmd->add_option("--model,-m", o->model, "GGUF file (default: $WORKER_ORCD_MODEL or the cache's Qwen2.5-0.5B-Instruct Q4_K_M)");
  cmd->add_option("--gpu-device", o->gpu, "CUDA device index")->check(CLI::NonNegativeNumber);
  return [o] {
    const bool defaulted = o->model.empty();
    const std::string model = defaulted ? default_model_path() : o->model;
    std::vector<std::string> problems;

    if (!std::filesystem::exists(model)) {
      problems.push_back(fmt::format(
          "MODEL_NOT_FOUND: no model at {}.\n  What to do: pass --model FILE.gguf, set WORKER_ORCD_MODEL, or place the "
          "reference model ({}) at that path.",
          model, defaulted ? "Qwen2.5-0.5B-Instruct Q4_K_M" : "the file you named"));
    }
    const GpuInventory inv = probe_gpus();
    if (inv.devices.empty()) {
      problems.push_back(fmt::format(
          "NO_GPU: no usable CUDA device ({}).\n  worker-orcd is VRAM-only by policy: it never runs on the CPU. Run it on a "
          "machine with an NVIDIA GPU and driver (CUDA driver version seen: {}).",
          inv.error, inv.driver_version));
    } else if (o->gpu >= static_cast<int>(inv.devices.size())) {
      problems.push_back(fmt::format("NO_GPU: --gpu-device {} does not exist; this machine has {} device(s).", o->gpu, inv.devices.size()));
    }
    if (!problems.empty()) {
      for (const auto& p : problems) fmt::print(stderr, "worker-orcd: {}\n", p);
      return 1;
    }

    const GgufFile f = GgufFile::open(model);  // validates the whole header and tensor table
    const ModelInfo m = describe_model(f);
    const GpuDevice& d = inv.devices[o->gpu];
    fmt::print(stderr, "worker-orcd: model {} ({}, {} layers, weights {} bytes); GPU {} {} (sm_{}{}, {} of {} bytes free)\n", model,
               m.architecture, m.n_layers, m.weight_vram_bytes, d.index, d.name, d.sm_major, d.sm_minor, d.free_bytes, d.total_bytes);
    fmt::print(stderr, "worker-orcd: NOT_IMPLEMENTED: the inference engine and HTTP daemon are not built yet; serve stops after "
                       "these checks.\n");
    return 1;
  };
}

}  // namespace orcd::cli
