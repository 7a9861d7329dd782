#include "testutil.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace orcd::test {

std::string testdata(const std::string& rel) {
  const char* env = std::getenv("WORKER_ORCD_TESTDATA");
  const std::string root = env && *env ? env : ORCD_TESTDATA_DIR;
  const std::string p = root + "/" + rel;
  if (!std::filesystem::exists(p))
    throw std::runtime_error("test data missing: " + p + " (expected ../shared/testdata beside the checkout, or set WORKER_ORCD_TESTDATA)");
  return p;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  const std::string s = read_file(path);
  return {s.begin(), s.end()};
}

std::string temp_dir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "orcd-test-XXXXXX").string();
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

RunResult run_cli(const std::string& args, const std::string& env) {
  const std::string dir = temp_dir();
  const std::string out_path = dir + "/out", err_path = dir + "/err";
  const std::string cmd = env + " '" + std::string(ORCD_BINARY) + "' " + args + " >'" + out_path + "' 2>'" + err_path + "'";
  const int status = std::system(cmd.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_file(out_path);
  r.err = read_file(err_path);
  std::filesystem::remove_all(dir);
  return r;
}

}  // namespace orcd::test
