// GPU tests skip cleanly, with the reason, where there is no usable CUDA device (CI).
#pragma once
#include <gtest/gtest.h>

#include <string>

namespace orcd::test {
bool gpu_available(std::string* why);
}

#define ORCD_REQUIRE_GPU()                                                         \
  do {                                                                             \
    std::string orcd_why_;                                                         \
    if (!::orcd::test::gpu_available(&orcd_why_)) GTEST_SKIP() << "no CUDA device: " << orcd_why_; \
  } while (0)
