// VRAM-only policy in the sources: no managed memory, no pinned or mapped host memory holding
// tensors. The one exception is the load-time staging buffer in src/vram/staging.cpp.
#include <gtest/gtest.h>

#include <filesystem>
#include <regex>

#include "testutil.h"

namespace fs = std::filesystem;

TEST(VramPolicy, NoBannedAllocationCallsInSources) {
  const fs::path src = fs::path(ORCD_SOURCE_DIR) / "src";
  ASSERT_TRUE(fs::exists(src)) << src;
  const std::regex banned(
      R"(\b(cudaMallocManaged|cudaMallocHost|cudaHostAlloc|cudaHostRegister|cudaHostGetDevicePointer|cuMemAllocManaged|cuMemHostAlloc|cuMemAllocHost|cuMemHostRegister|cudaMallocAsync|cudaMallocFromPoolAsync)\b)");
  const std::regex raw_malloc(R"(\bcudaMalloc\s*\()");
  int files = 0;
  std::vector<std::string> hits;
  for (const auto& entry : fs::recursive_directory_iterator(src)) {
    const auto ext = entry.path().extension();
    if (ext != ".cpp" && ext != ".cu" && ext != ".h" && ext != ".cuh") continue;
    ++files;
    const std::string rel = fs::relative(entry.path(), src).string();
    const std::string text = orcd::test::read_file(entry.path().string());
    for (std::sregex_iterator it(text.begin(), text.end(), banned), end; it != end; ++it)
      if (!(rel == "vram/staging.cpp" && it->str() == "cudaMallocHost")) hits.push_back(rel + ": " + it->str());
    // Every cudaMalloc goes through the one allocator.
    if (rel != "vram/device_allocator.cpp" && std::regex_search(text, raw_malloc)) hits.push_back(rel + ": cudaMalloc outside the allocator");
  }
  EXPECT_GT(files, 20);
  for (const auto& h : hits) ADD_FAILURE() << "banned call: " << h;
}

TEST(VramPolicy, TheScanWouldCatchAViolation) {
  // The pattern itself is live: a line with a banned call matches.
  const std::regex banned(R"(\b(cudaMallocManaged|cudaMallocHost)\b)");
  EXPECT_TRUE(std::regex_search(std::string("  cudaMallocManaged(&p, n);"), banned));
  EXPECT_FALSE(std::regex_search(std::string("  cudaMalloc(&p, n);"), banned));
}
