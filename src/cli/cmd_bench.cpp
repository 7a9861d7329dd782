// `worker-orcd bench --model FILE [-p 512] [-n 128] [--depth 0,4096] [-r 5] [--json]`
// Prefill and decode throughput in the manner of llama-bench: one warm-up, then r timed runs,
// mean and standard deviation, timed with CUDA events on the engine's stream. Decode runs the
// real per-token path (graph replay, greedy sampling on the GPU, the id read back each token).
// Achieved bandwidth is set against a device-to-device copy measured in the same process.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <random>

#include "cli/commands.h"
#include "common/cuda_check.h"
#include "engine/engine.h"
#include "gguf/gguf.h"
#include "gguf/model_info.h"

namespace orcd::cli {
namespace {

// RAII pair of CUDA events around work on one stream.
struct EventTimer {
  cudaEvent_t a = nullptr, b = nullptr;
  EventTimer() {
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
  }
  ~EventTimer() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  void start(cudaStream_t s) { CUDA_CHECK(cudaEventRecord(a, s)); }
  double stop_ms(cudaStream_t s) {
    CUDA_CHECK(cudaEventRecord(b, s));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    return ms;
  }
};

// Read + write bytes per second of a large device-to-device copy: the practical bandwidth.
double copy_bandwidth(int device) {
  VramTracker tracker;
  DeviceAllocator alloc(device, tracker);
  const size_t bytes = 512ull << 20;
  DeviceBuffer src = alloc.alloc(bytes, VramPurpose::workspace, "bandwidth probe");
  DeviceBuffer dst = alloc.alloc(bytes, VramPurpose::workspace, "bandwidth probe");
  CUDA_CHECK(cudaMemset(src.get(), 1, bytes));
  EventTimer t;
  CUDA_CHECK(cudaMemcpy(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice));  // warm-up
  const int iters = 10;
  t.start(nullptr);
  for (int i = 0; i < iters; ++i) CUDA_CHECK(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, nullptr));
  const double ms = t.stop_ms(nullptr);
  return 2.0 * bytes * iters / (ms / 1e3);
}

struct Stats {
  double mean = 0, stddev = 0;
};
Stats stats_of(const std::vector<double>& v) {
  Stats s;
  for (double x : v) s.mean += x;
  s.mean /= v.size();
  if (v.size() > 1) {
    for (double x : v) s.stddev += (x - s.mean) * (x - s.mean);
    s.stddev = std::sqrt(s.stddev / (v.size() - 1));
  }
  return s;
}

std::string main_quant(const ModelInfo& m) {
  std::string best;
  uint64_t most = 0;
  for (const auto& [type, bytes] : m.bytes_by_type)
    if (bytes > most) most = bytes, best = type;
  return m.bytes_by_type.size() > 1 ? best + " mix" : best;
}

}  // namespace

Runner add_bench(CLI::App& app) {
  struct Opts {
    std::string model;
    int prompt = 512, gen = 128, reps = 5, ctx = 0, gpu = 0;
    std::vector<int> depths{0};
    bool json = false;
    bool host_sync = false;
    uint64_t seed = 1;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("bench", "Measure prefill and decode throughput (CUDA events, llama-bench style)");
  cmd->add_option("--model,-m", o->model, "GGUF model")->required();
  cmd->add_option("-p,--n-prompt", o->prompt, "Prompt tokens for the prefill test (0: skip)")->check(CLI::NonNegativeNumber);
  cmd->add_option("-n,--n-gen", o->gen, "Tokens for the decode test (0: skip)")->check(CLI::NonNegativeNumber);
  cmd->add_option("-d,--depth", o->depths, "Tokens already in the KV cache before each test (comma-separated list)")
      ->delimiter(',')
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-r,--repetitions", o->reps, "Timed runs per test (after one warm-up)")->check(CLI::PositiveNumber);
  cmd->add_option("--ctx-size,-c", o->ctx, "Context length (default: what the tests need)");
  cmd->add_option("--gpu-device", o->gpu, "CUDA device index");
  cmd->add_option("--seed", o->seed, "Seed of the random prompt tokens");
  cmd->add_flag("--json", o->json, "One JSON object per test on stdout instead of the table");
  cmd->add_flag("--host-sync", o->host_sync, "Decode reads each token on the host before queuing the next step (no pipelining)");
  return [o] {
    CUDA_CHECK(cudaSetDevice(o->gpu));
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, o->gpu));
    const double copy_bw = copy_bandwidth(o->gpu);

    const int max_depth = *std::max_element(o->depths.begin(), o->depths.end());
    EngineOptions eo;
    eo.device = o->gpu;
    eo.n_ctx = o->ctx > 0 ? o->ctx : max_depth + std::max(o->prompt, 1) + o->gen + 1;
    eo.max_batch_tokens = 512;
    const auto t0 = std::chrono::steady_clock::now();
    auto engine = InferenceEngine::load(o->model, eo);
    const double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const ModelInfo info = describe_model(engine->gguf());
    const ModelConfig& c = engine->config();
    cudaStream_t s = engine->stream();

    std::mt19937 rng(static_cast<uint32_t>(o->seed));
    auto random_tokens = [&](int n) {
      std::vector<int32_t> v(n);
      for (auto& t : v) t = static_cast<int32_t>(rng() % c.n_vocab);
      return v;
    };
    SamplingParams greedy;
    greedy.temperature = 0;
    EventTimer timer;
    nlohmann::json vram = nlohmann::json::object();
    for (const auto& [purpose, bytes] : engine->tracker().bytes_by_purpose()) vram[vram_purpose_name(purpose)] = bytes;
    std::vector<nlohmann::json> rows;
    const std::string name = info.name.empty() ? info.architecture : info.name;
    for (int depth : o->depths) {
      if (depth > 0) engine->forward(random_tokens(depth), 0);  // fills the cache up to the depth, untimed
      auto record = [&](const std::string& test, int tokens, std::vector<double> ms, double bytes_per_token) {
        std::vector<double> tps;
        for (double m : ms) tps.push_back(tokens / (m / 1e3));
        const Stats st = stats_of(tps);
        const double gbs = bytes_per_token * st.mean / 1e9;
        rows.push_back({{"model", name},
                        {"file", o->model},
                        {"size_bytes", info.weight_bytes},
                        {"params", info.n_params},
                        {"quant", main_quant(info)},
                        {"test", test},
                        {"depth", depth},
                        {"tokens", tokens},
                        {"reps", ms.size()},
                        {"tok_s", st.mean},
                        {"tok_s_stddev", st.stddev},
                        {"ms_per_run", ms},
                        {"gb_s", gbs},
                        {"copy_gb_s", copy_bw / 1e9},
                        {"bandwidth_fraction", bytes_per_token > 0 ? gbs * 1e9 / copy_bw : 0.0},
                        {"load_ms", load_ms},
                        {"vram_bytes", engine->tracker().total_bytes()},
                        {"vram_by_purpose", vram},
                        {"n_ctx", engine->n_ctx()},
                        {"gpu", prop.name}});
      };
      if (o->prompt > 0) {
        const auto prompt = random_tokens(o->prompt);
        std::vector<double> ms;
        for (int r = 0; r <= o->reps; ++r) {
          timer.start(s);
          engine->forward(prompt, depth);
          const double t = timer.stop_ms(s);
          if (r > 0) ms.push_back(t);  // run 0 warms up
        }
        record(fmt::format("pp{}", o->prompt), o->prompt, ms, 0);
      }
      if (o->gen > 0) {
        std::vector<double> ms;
        for (int r = 0; r <= o->reps; ++r) {
          int32_t tok = random_tokens(1)[0];
          const int32_t first = tok;
          timer.start(s);
          engine->forward(std::span(&tok, 1), depth);
          for (int i = 0; i < o->gen; ++i) {  // as generation runs: each step queued before its token is read
            const bool more = i + 1 < o->gen;
            if (o->host_sync && more) {
              tok = engine->sample(greedy, std::span(&first, 0), i);
              engine->forward(std::span(&tok, 1), depth + i + 1);
            } else {
              tok = engine->sample_and_step(greedy, std::span(&first, 0), i, more ? depth + i + 1 : -1);
            }
          }
          const double t = timer.stop_ms(s);
          if (r > 0) ms.push_back(t);
        }
        // Bytes each token must read: every weight once (one row of an untied embedding table),
        // plus the K/V rows up to its position.
        const double kv_row = 2.0 * c.n_layers * c.kv_dim() * 2;
        const double bytes = static_cast<double>(info.decode_read_bytes) + kv_row * (depth + o->gen / 2.0);
        record(fmt::format("tg{}", o->gen), o->gen, ms, bytes);
      }
    }

    if (o->json) {
      for (const auto& r : rows) fmt::print("{}\n", r.dump());
      return 0;
    }
    fmt::print("GPU: {} | copy bandwidth {:.0f} GB/s | load {:.0f} ms | VRAM {:.1f} MiB\n\n", prop.name, copy_bw / 1e9, load_ms,
               engine->tracker().total_bytes() / 1048576.0);
    fmt::print("| model | size | params | quant | test | t/s | GB/s | of copy BW |\n|---|---|---|---|---|---|---|---|\n");
    for (const auto& r : rows) {
      const std::string test = r["depth"].get<int>() > 0 ? fmt::format("{} @ d{}", r["test"].get<std::string>(), r["depth"].get<int>())
                                                         : r["test"].get<std::string>();
      const bool tg = r["gb_s"].get<double>() > 0;
      fmt::print("| {} | {:.2f} GiB | {:.2f} B | {} | {} | {:.2f} ± {:.2f} | {} | {} |\n", r["model"].get<std::string>(),
                 r["size_bytes"].get<uint64_t>() / 1073741824.0, r["params"].get<uint64_t>() / 1e9, r["quant"].get<std::string>(), test,
                 r["tok_s"].get<double>(), r["tok_s_stddev"].get<double>(), tg ? fmt::format("{:.0f}", r["gb_s"].get<double>()) : "",
                 tg ? fmt::format("{:.0f}%", 100 * r["bandwidth_fraction"].get<double>()) : "");
    }
    return 0;
  };
}

}  // namespace orcd::cli
