#include "server/daemon_process.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "engine/synth.h"
#include "testutil.h"

namespace orcd::test {

using namespace std::chrono_literals;

ChildProcess::~ChildProcess() {
  if (pid_ > 0) stop(SIGKILL, 5s);
}

void ChildProcess::spawn(const std::string& binary, const std::vector<std::string>& args) {
  log_path_ = temp_dir() + "/child.log";
  pid_ = fork();
  if (pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a crashed test
    if (!std::freopen(log_path_.c_str(), "w", stderr)) _exit(126);
    dup2(fileno(stderr), fileno(stdout));
    std::vector<char*> argv = {const_cast<char*>(binary.c_str())};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
}

bool ChildProcess::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    pid_ = -1;
    return false;
  }
  return true;
}

bool ChildProcess::wait_for_log(const std::string& needle, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (log().find(needle) != std::string::npos) return true;
    if (!running()) return log().find(needle) != std::string::npos;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

int ChildProcess::stop(int sig, std::chrono::seconds timeout) {
  if (pid_ <= 0) return exit_code_;
  kill(pid_, sig);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!running()) return exit_code_;
    std::this_thread::sleep_for(20ms);
  }
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return -2;
}

std::string ChildProcess::log() const {
  std::ifstream in(log_path_);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

bool Daemon::start(const std::vector<std::string>& args, std::chrono::seconds timeout) {
  std::vector<std::string> full = {"serve"};
  full.insert(full.end(), args.begin(), args.end());
  spawn(ORCD_BINARY, full);
  if (!wait_for_log("\"action\":\"ready\"", timeout)) return false;
  std::istringstream in(log());
  std::string line;
  while (std::getline(in, line))
    if (line.find("\"action\":\"ready\"") != std::string::npos) port = nlohmann::json::parse(line)["fields"]["port"].get<int>();
  return port > 0;
}

std::string synth_tiny_qwen2(const std::string& dir) {
  SynthOptions o;
  o.preset = "tiny-qwen2";
  o.scheme = "q8_0";
  o.vocab_path = testdata("tokenizer/qwen2-vocab.gguf");
  o.out_path = dir + "/tiny-qwen2.gguf";
  write_synthetic_model(o);
  return o.out_path;
}

namespace {
std::string run(const std::string& cmd, int* rc) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[512];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  *rc = pclose(p);
  return out;
}
}  // namespace

bool nvidia_smi_sees_gpu(std::string* why) {
  int rc = -1;
  const std::string out = run("nvidia-smi -L 2>&1", &rc);
  if (rc != 0 || out.find("GPU 0") == std::string::npos) {
    *why = "nvidia-smi -L: " + (out.empty() ? std::string("not found") : out.substr(0, 200));
    return false;
  }
  return true;
}

long nvidia_smi_used_mib(pid_t pid) {
  int rc = -1;
  std::istringstream in(run("nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2>/dev/null", &rc));
  std::string line;
  while (std::getline(in, line)) {
    const auto comma = line.find(',');
    if (comma == std::string::npos) continue;
    if (std::stol(line.substr(0, comma)) == pid) return std::stol(line.substr(comma + 1));
  }
  return -1;
}

}  // namespace orcd::test
