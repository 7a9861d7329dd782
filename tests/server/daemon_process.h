// Child processes for GPU end-to-end tests: the worker-orcd daemon and the VRAM hog.
#pragma once
#include <chrono>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <sys/types.h>

namespace orcd::test {

// Runs `binary args...` with stdout and stderr to a log file.
class ChildProcess {
 public:
  ~ChildProcess();
  void spawn(const std::string& binary, const std::vector<std::string>& args);
  // Waits until the log holds `needle`; false if the process exits or the time runs out.
  bool wait_for_log(const std::string& needle, std::chrono::milliseconds timeout);
  int stop(int sig, std::chrono::seconds timeout = std::chrono::seconds(20));  // exit code, -2 on timeout
  bool running();
  std::string log() const;
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  std::string log_path_;
  int exit_code_ = -1;
};

// `worker-orcd serve ARGS`: start() waits for the ready line and reads the port from it.
class Daemon : public ChildProcess {
 public:
  bool start(const std::vector<std::string>& args, std::chrono::seconds timeout = std::chrono::seconds(60));
  int port = 0;
};

// Writes a small synthetic Qwen2 model with the real Qwen2 tokenizer into `dir`.
std::string synth_tiny_qwen2(const std::string& dir);
// Whether this machine has an NVIDIA GPU, asked of nvidia-smi so no CUDA context is created.
bool nvidia_smi_sees_gpu(std::string* why);
// GPU memory nvidia-smi attributes to `pid` (MiB), or -1 if it is not listed.
long nvidia_smi_used_mib(pid_t pid);

}  // namespace orcd::test
