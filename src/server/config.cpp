#include "server/config.h"

#include <toml++/toml.h>

#include "engine/chat_template.h"

#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <sys/stat.h>

namespace orcd {

namespace {

using Reader = std::function<void(const toml::node&, const std::string& where)>;

template <typename T>
Reader reader(T& out) {
  return [&out](const toml::node& n, const std::string& where) {
    if constexpr (std::is_same_v<T, bool>) {
      if (!n.is_boolean()) throw ConfigError(where + " must be true or false");
      out = n.value<bool>().value();
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (!n.is_string()) throw ConfigError(where + " must be a string");
      out = n.value<std::string>().value();
    } else if constexpr (std::is_same_v<T, double>) {
      if (!n.is_number()) throw ConfigError(where + " must be a number");
      out = n.value<double>().value();
    } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
      const toml::array* a = n.as_array();
      if (!a) throw ConfigError(where + " must be an array of strings");
      out.clear();
      for (const auto& e : *a) {
        if (!e.is_string()) throw ConfigError(where + " must be an array of strings");
        out.push_back(e.value<std::string>().value());
      }
    } else if constexpr (std::is_same_v<T, std::optional<uint64_t>>) {
      if (!n.is_integer() || n.value<int64_t>().value() < 0) throw ConfigError(where + " must be a non-negative integer");
      out = static_cast<uint64_t>(n.value<int64_t>().value());
    } else {
      if (!n.is_integer()) throw ConfigError(where + " must be an integer");
      const int64_t v = n.value<int64_t>().value();
      if (v < 0) throw ConfigError(where + " must not be negative");
      out = static_cast<T>(v);
    }
  };
}

std::map<std::string, Reader> readers(WorkerConfig& c) {
  return {
      {"model", reader(c.model)},
      {"model_sha256", reader(c.model_sha256)},
      {"model_cache_dir", reader(c.model_cache_dir)},
      {"insecure_skip_hash", reader(c.insecure_skip_hash)},
      {"allow_http_downloads", reader(c.allow_http_downloads)},
      {"gpu_device", reader(c.gpu_device)},
      {"host", reader(c.host)},
      {"port", reader(c.port)},
      {"worker_id", reader(c.worker_id)},
      {"ctx_size", reader(c.ctx_size)},
      {"max_batch_tokens", reader(c.max_batch_tokens)},
      {"callback_url", reader(c.callback_url)},
      {"queue_size", reader(c.queue_size)},
      {"chat_template", reader(c.chat_template)},
      {"max_model_size", reader(c.max_model_size)},
      {"api_key", reader(c.api_key)},
      {"api_key_file", reader(c.api_key_file)},
      {"admin_api_key", reader(c.admin_api_key)},
      {"admin_api_key_file", reader(c.admin_api_key_file)},
      {"auth_exempt_routes", reader(c.auth_exempt_routes)},
      {"allow_unauthenticated", reader(c.allow_unauthenticated)},
      {"allowed_hosts", reader(c.allowed_hosts)},
      {"max_body_bytes", reader(c.max_body_bytes)},
      {"max_header_bytes", reader(c.max_header_bytes)},
      {"max_header_count", reader(c.max_header_count)},
      {"request_read_timeout_secs", reader(c.request_read_timeout_secs)},
      {"max_prompt_bytes", reader(c.max_prompt_bytes)},
      {"timeout_secs", reader(c.timeout_secs)},
      {"default_max_tokens", reader(c.default_max_tokens)},
      {"drain_secs", reader(c.drain_secs)},
      {"residency_check_secs", reader(c.residency_check_secs)},
      {"log_format", reader(c.log_format)},
      {"log_prompts", reader(c.log_prompts)},
      {"reserved_system_vram", reader(c.reserved_system_vram)},
      {"allow_shared_gpu", reader(c.allow_shared_gpu)},
      {"auto_pause_for_contention", reader(c.auto_pause_for_contention)},
      {"auto_pause_for_gaming", reader(c.auto_pause_for_contention)},  // the specification's name
      {"gpu_poll_secs", reader(c.gpu_poll_secs)},
      {"contention_grace_secs", reader(c.contention_grace_secs)},
  };
}

std::string read_key_file(const std::string& path, const char* what) {
  std::ifstream in(path);
  if (!in) throw ConfigError(std::string(what) + ": cannot read " + path);
  struct stat st{};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & S_IROTH))
    throw ConfigError(std::string(what) + ": " + path + " is readable by every user; chmod 600 it");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string key = ss.str();
  while (!key.empty() && (key.back() == '\n' || key.back() == '\r' || key.back() == ' ')) key.pop_back();
  if (key.empty()) throw ConfigError(std::string(what) + ": " + path + " is empty");
  return key;
}

}  // namespace

void WorkerConfig::load_toml(const std::string& path) {
  toml::table t;
  try {
    t = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    throw ConfigError(path + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description()));
  }
  const auto known = readers(*this);
  auto apply = [&](const toml::table& tbl, const std::string& prefix) {
    for (const auto& [k, v] : tbl) {
      const std::string key(k.str());
      if (prefix.empty() && key == "worker") continue;
      const auto it = known.find(key);
      if (it == known.end()) throw ConfigError(path + ": unknown key '" + prefix + key + "'");
      it->second(v, path + ": '" + prefix + key + "'");
    }
  };
  apply(t, "");
  if (const toml::node* w = t.get("worker")) {
    if (!w->is_table()) throw ConfigError(path + ": 'worker' must be a table ([worker])");
    apply(*w->as_table(), "worker.");
  }
}

void WorkerConfig::resolve_key_files() {
  if (!api_key_file.empty()) api_key = read_key_file(api_key_file, "api_key_file");
  if (!admin_api_key_file.empty()) admin_api_key = read_key_file(admin_api_key_file, "admin_api_key_file");
}

bool is_loopback_host(const std::string& h) { return h == "127.0.0.1" || h == "localhost" || h == "::1" || h.starts_with("127."); }

void WorkerConfig::validate() const {
  if (port < 0 || port > 65535) throw ConfigError("port must be 0-65535 (0 picks a free port)");
  if (gpu_device < 0) throw ConfigError("gpu_device must be >= 0");
  if (ctx_size < 0) throw ConfigError("ctx_size must be >= 0 (0: the model's own)");
  if (max_batch_tokens < 1) throw ConfigError("max_batch_tokens must be >= 1");
  if (queue_size < 0) throw ConfigError("queue_size must be >= 0");
  if (max_body_bytes < 1024) throw ConfigError("max_body_bytes must be at least 1024");
  if (max_header_bytes < 1024) throw ConfigError("max_header_bytes must be at least 1024");
  if (max_header_count < 8) throw ConfigError("max_header_count must be at least 8");
  if (request_read_timeout_secs <= 0) throw ConfigError("request_read_timeout_secs must be > 0");
  if (max_prompt_bytes < 1) throw ConfigError("max_prompt_bytes must be >= 1");
  if (timeout_secs < 1) throw ConfigError("timeout_secs must be >= 1");
  if (default_max_tokens < 1) throw ConfigError("default_max_tokens must be >= 1");
  if (drain_secs < 0) throw ConfigError("drain_secs must be >= 0");
  if (residency_check_secs <= 0) throw ConfigError("residency_check_secs must be > 0");
  if (log_format != "json" && log_format != "text") throw ConfigError("log_format must be 'json' or 'text'");
  if (gpu_poll_secs <= 0) throw ConfigError("gpu_poll_secs must be > 0");
  if (contention_grace_secs < 0) throw ConfigError("contention_grace_secs must be >= 0");
  if (!callback_url.empty() && !callback_url.starts_with("http://") && !callback_url.starts_with("https://"))
    throw ConfigError("callback_url must start with http:// or https://");
  if (!chat_template.empty() && !chat_format_from_name(chat_template))
    throw ConfigError("chat_template must be one of chatml, llama3, llama2, mistral, phi3 (or empty: the model's own)");
  if (!admin_api_key.empty() && admin_api_key == api_key) throw ConfigError("admin_api_key must differ from api_key");
  for (const auto& r : auth_exempt_routes)
    if (r == "/shutdown") throw ConfigError("auth_exempt_routes must not hold /shutdown (it takes the admin key)");
  if (api_key.empty() && !allow_unauthenticated && !is_loopback_host(host))
    throw ConfigError("host " + host + " is reachable from other machines but no api_key is set: set api_key (or api_key_file), "
                      "or allow_unauthenticated = true to serve without one");
}

}  // namespace orcd
