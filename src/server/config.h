// Worker configuration: defaults, then a TOML file, then command-line flags.
#pragma once
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

namespace orcd {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct WorkerConfig {
  std::string model;                     // a GGUF path, or an http(s):// URL to provision
  std::string model_sha256;              // expected SHA-256 of a downloaded model (optional)
  std::string model_cache_dir;           // where URL models are downloaded (default ~/.cache/worker-orcd/models)
  int gpu_device = 0;
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string worker_id;                 // default: worker-<hostname>-<gpu>
  int ctx_size = 0;                      // 0: the model's, at most 4096
  int max_batch_tokens = 512;
  std::string callback_url;
  int queue_size = 8;                    // requests waiting behind the running one
  uint64_t max_body_bytes = 1 << 20;
  double residency_check_secs = 60;
  std::string log_format = "json";       // json | text
  bool log_prompts = false;
  std::optional<uint64_t> reserved_system_vram;  // headroom; default max(10% of total, 2 GiB)
  // Sharing the GPU (NVML).
  bool allow_shared_gpu = true;
  bool auto_pause_for_contention = false;
  double gpu_poll_secs = 2;
  double contention_grace_secs = 5;

  // Reads keys from a TOML file into this config; unknown keys and wrong types are errors.
  void load_toml(const std::string& path);
  // Checks ranges; throws ConfigError naming the key.
  void validate() const;
};

}  // namespace orcd
