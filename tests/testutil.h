// Shared helpers for tests: where the shared test data is, reading files, running the CLI.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace orcd::test {

// ../shared/testdata, or $WORKER_ORCD_TESTDATA when set.
std::string testdata(const std::string& rel);
std::string read_file(const std::string& path);
std::vector<uint8_t> read_bytes(const std::string& path);

struct RunResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs the worker-orcd binary with `args` (passed through /bin/sh, so quote them).
RunResult run_cli(const std::string& args, const std::string& env = "");

// A fresh directory under the system temp dir, removed by the caller if it cares.
std::string temp_dir();

}  // namespace orcd::test
