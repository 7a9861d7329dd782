#include "server/narrator.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <ctime>

namespace orcd {

namespace {
std::string_view level_name(LogLevel l) {
  switch (l) {
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warn: return "warn";
    case LogLevel::error: return "error";
    case LogLevel::critical: return "critical";
  }
  return "info";
}

std::string now_iso8601() {
  const auto now = std::chrono::system_clock::now();
  const auto t = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[48];
  std::snprintf(out, sizeof out, "%s.%03dZ", buf, static_cast<int>(ms));
  return out;
}
}  // namespace

Narrator::Narrator(bool json, std::shared_ptr<spdlog::logger> sink) : json_(json), logger_(std::move(sink)) {
  if (!logger_) {
    logger_ = std::make_shared<spdlog::logger>("worker-orcd", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    logger_->set_pattern("%v");
    logger_->set_level(spdlog::level::debug);
    logger_->flush_on(spdlog::level::debug);
  }
}

std::string Narrator::format(LogLevel level, std::string_view action, std::string_view target, std::string_view message,
                             const nlohmann::json& fields, std::string_view job_id) const {
  if (json_) {
    nlohmann::json j = {{"ts", now_iso8601()}, {"level", level_name(level)}, {"actor", "worker-orcd"},
                        {"action", action},   {"target", target},           {"msg", message}};
    if (!job_id.empty()) j["job_id"] = job_id;
    if (!fields.empty()) j["fields"] = fields;
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  std::string s = now_iso8601() + " " + std::string(level_name(level)) + " " + std::string(action) + " " + std::string(target);
  if (!job_id.empty()) s += " [" + std::string(job_id) + "]";
  s += " " + std::string(message);
  if (!fields.empty()) s += " " + fields.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return s;
}

void Narrator::log(LogLevel level, std::string_view action, std::string_view target, std::string_view message, const nlohmann::json& fields,
                   std::string_view job_id) {
  static constexpr spdlog::level::level_enum map[] = {spdlog::level::debug, spdlog::level::info, spdlog::level::warn,
                                                      spdlog::level::err, spdlog::level::critical};
  logger_->log(map[static_cast<int>(level)], "{}", format(level, action, target, message, fields, job_id));
}

}  // namespace orcd
