// Worker configuration: defaults, then a TOML file (flat keys or the specification's [worker]
// table), then command-line flags.
#pragma once
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace orcd {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct WorkerConfig {
  std::string model;                     // a GGUF path, an http(s):// URL, or hf:ORG/REPO/FILE
  std::string model_sha256;              // expected SHA-256 of a downloaded model
  std::string model_cache_dir;           // where remote models go (default ~/.cache/worker-orcd/models)
  bool insecure_skip_hash = false;       // download a remote model with no hash to check
  bool allow_http_downloads = false;     // http:// models and https -> http redirects
  int gpu_device = 0;
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string worker_id;                 // default: worker-<hostname>-gpu<N>
  int ctx_size = 0;                      // 0: the model's, at most 4096
  int max_batch_tokens = 512;
  std::string callback_url;              // every state change is POSTed here
  int queue_size = 8;                    // requests waiting behind the running one
  std::string chat_template;             // "": from the model, else chatml when unknown; or a name
  uint64_t max_model_size = 0;           // bytes of VRAM a model may need (0: no limit)

  // Authentication: Bearer keys; none set means no authentication (loopback only).
  std::string api_key, api_key_file, admin_api_key, admin_api_key_file;
  std::vector<std::string> auth_exempt_routes = {"/health", "/livez", "/readyz", "/metrics"};
  bool allow_unauthenticated = false;    // listen beyond loopback without an api_key
  std::vector<std::string> allowed_hosts;  // Host header values accepted besides loopback names

  // Hard limits on a request.
  uint64_t max_body_bytes = 1 << 20;
  uint64_t max_header_bytes = 16 << 10;
  int max_header_count = 64;
  double request_read_timeout_secs = 30;  // reading one request, head and body
  uint64_t max_prompt_bytes = 256 << 10;
  int timeout_secs = 600;                 // a request's deadline unless it asks for less
  int default_max_tokens = 1024;          // chat requests that give no max_tokens
  double drain_secs = 30;                 // on SIGTERM: finish in-flight work this long, then cancel

  double residency_check_secs = 60;
  std::string log_format = "json";       // json | text
  bool log_prompts = false;
  std::optional<uint64_t> reserved_system_vram;  // headroom; never below the floor unless dedicated
  // Sharing the GPU (NVML). allow_shared_gpu = false declares the GPU dedicated.
  bool allow_shared_gpu = true;
  bool auto_pause_for_contention = false;  // TOML alias: auto_pause_for_gaming
  double gpu_poll_secs = 2;
  double contention_grace_secs = 5;

  // Reads keys from a TOML file into this config; unknown keys and wrong types are errors.
  void load_toml(const std::string& path);
  // Checks ranges; throws ConfigError naming the key.
  void validate() const;
  // Reads api_key_file / admin_api_key_file into the keys (trailing newline dropped).
  void resolve_key_files();
};

bool is_loopback_host(const std::string& host);

}  // namespace orcd
