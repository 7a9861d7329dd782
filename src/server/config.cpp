#include "server/config.h"

#include <toml++/toml.h>

#include <set>

namespace orcd {

namespace {

template <typename T>
void read(const toml::table& t, const char* key, T& out, const std::string& path) {
  const toml::node* n = t.get(key);
  if (!n) return;
  if constexpr (std::is_same_v<T, bool>) {
    if (!n->is_boolean()) throw ConfigError(path + ": '" + key + "' must be true or false");
    out = n->value<bool>().value();
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!n->is_string()) throw ConfigError(path + ": '" + key + "' must be a string");
    out = n->value<std::string>().value();
  } else if constexpr (std::is_same_v<T, double>) {
    if (!n->is_number()) throw ConfigError(path + ": '" + key + "' must be a number");
    out = n->value<double>().value();
  } else {
    if (!n->is_integer()) throw ConfigError(path + ": '" + key + "' must be an integer");
    const int64_t v = n->value<int64_t>().value();
    if (v < 0) throw ConfigError(path + ": '" + key + "' must not be negative");
    out = static_cast<T>(v);
  }
}

}  // namespace

void WorkerConfig::load_toml(const std::string& path) {
  toml::table t;
  try {
    t = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    throw ConfigError(path + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description()));
  }
  static const std::set<std::string> known = {
      "model", "model_sha256", "model_cache_dir", "gpu_device", "host", "port", "worker_id", "ctx_size", "max_batch_tokens", "callback_url", "queue_size",
      "max_body_bytes", "residency_check_secs", "log_format", "log_prompts", "reserved_system_vram", "allow_shared_gpu",
      "auto_pause_for_contention", "gpu_poll_secs", "contention_grace_secs"};
  for (const auto& [k, v] : t)
    if (!known.count(std::string(k.str()))) throw ConfigError(path + ": unknown key '" + std::string(k.str()) + "'");
  read(t, "model", model, path);
  read(t, "model_sha256", model_sha256, path);
  read(t, "model_cache_dir", model_cache_dir, path);
  read(t, "gpu_device", gpu_device, path);
  read(t, "host", host, path);
  read(t, "port", port, path);
  read(t, "worker_id", worker_id, path);
  read(t, "ctx_size", ctx_size, path);
  read(t, "max_batch_tokens", max_batch_tokens, path);
  read(t, "callback_url", callback_url, path);
  read(t, "queue_size", queue_size, path);
  read(t, "max_body_bytes", max_body_bytes, path);
  read(t, "residency_check_secs", residency_check_secs, path);
  read(t, "log_format", log_format, path);
  read(t, "log_prompts", log_prompts, path);
  if (t.contains("reserved_system_vram")) {
    uint64_t v = 0;
    read(t, "reserved_system_vram", v, path);
    reserved_system_vram = v;
  }
  read(t, "allow_shared_gpu", allow_shared_gpu, path);
  read(t, "auto_pause_for_contention", auto_pause_for_contention, path);
  read(t, "gpu_poll_secs", gpu_poll_secs, path);
  read(t, "contention_grace_secs", contention_grace_secs, path);
}

void WorkerConfig::validate() const {
  if (port < 0 || port > 65535) throw ConfigError("port must be 0-65535 (0 picks a free port)");
  if (gpu_device < 0) throw ConfigError("gpu_device must be >= 0");
  if (ctx_size < 0) throw ConfigError("ctx_size must be >= 0 (0: the model's own)");
  if (max_batch_tokens < 1) throw ConfigError("max_batch_tokens must be >= 1");
  if (queue_size < 0) throw ConfigError("queue_size must be >= 0");
  if (max_body_bytes < 1024) throw ConfigError("max_body_bytes must be at least 1024");
  if (residency_check_secs <= 0) throw ConfigError("residency_check_secs must be > 0");
  if (log_format != "json" && log_format != "text") throw ConfigError("log_format must be 'json' or 'text'");
  if (gpu_poll_secs <= 0) throw ConfigError("gpu_poll_secs must be > 0");
  if (contention_grace_secs < 0) throw ConfigError("contention_grace_secs must be >= 0");
  if (!callback_url.empty() && !callback_url.starts_with("http://") && !callback_url.starts_with("https://"))
    throw ConfigError("callback_url must start with http:// or https://");
}

}  // namespace orcd
