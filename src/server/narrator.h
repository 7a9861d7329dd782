// Structured narration: one JSON object per line (or human text), each saying who did what to
// what, for which job, in a sentence a person can read.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace spdlog {
class logger;
}

namespace orcd {

enum class LogLevel { debug, info, warn, error, critical };

class Narrator {
 public:
  // json: one object per line on stderr; text: "ts LEVEL action target [job] message {fields}".
  explicit Narrator(bool json = true, std::shared_ptr<spdlog::logger> sink = nullptr);
  void log(LogLevel level, std::string_view action, std::string_view target, std::string_view message,
           const nlohmann::json& fields = nlohmann::json::object(), std::string_view job_id = {});
  void info(std::string_view action, std::string_view target, std::string_view message, const nlohmann::json& fields = nlohmann::json::object(),
            std::string_view job_id = {}) {
    log(LogLevel::info, action, target, message, fields, job_id);
  }
  void warn(std::string_view action, std::string_view target, std::string_view message, const nlohmann::json& fields = nlohmann::json::object(),
            std::string_view job_id = {}) {
    log(LogLevel::warn, action, target, message, fields, job_id);
  }
  void error(std::string_view action, std::string_view target, std::string_view message, const nlohmann::json& fields = nlohmann::json::object(),
             std::string_view job_id = {}) {
    log(LogLevel::error, action, target, message, fields, job_id);
  }
  // The line as it would be written (tests).
  std::string format(LogLevel level, std::string_view action, std::string_view target, std::string_view message,
                     const nlohmann::json& fields, std::string_view job_id) const;

 private:
  bool json_;
  std::shared_ptr<spdlog::logger> logger_;
};

}  // namespace orcd
