// The allocator records every buffer with its purpose; residency verification passes for
// device memory and provably fails for managed or pinned host memory planted in the tracker.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include "common/cuda_check.h"
#include "engine/engine.h"
#include "gpu.h"
#include "testutil.h"
#include "vram/device_allocator.h"

using namespace orcd;

TEST(VramGpu, AllocatorRecordsAndReleases) {
  ORCD_REQUIRE_GPU();
  VramTracker tracker;
  DeviceAllocator alloc(0, tracker);
  {
    DeviceBuffer a = alloc.alloc(1000, VramPurpose::weights, "w");
    DeviceBuffer b = alloc.alloc(5000, VramPurpose::kv_cache, "kv");
    EXPECT_EQ(tracker.count(), 2u);
    EXPECT_EQ(tracker.total_bytes(), 1024u + 5120u);  // padded to 256
    EXPECT_EQ(tracker.bytes_by_purpose().at(VramPurpose::kv_cache), 5120u);
    EXPECT_NE(tracker.report().find("kv_cache"), std::string::npos);
    const auto r = tracker.verify_residency();
    EXPECT_TRUE(r.resident);
    EXPECT_EQ(r.checked, 2u);
    DeviceBuffer moved = std::move(a);
    EXPECT_EQ(tracker.count(), 2u);
  }
  EXPECT_EQ(tracker.count(), 0u);
  EXPECT_EQ(tracker.total_bytes(), 0u);
}

TEST(VramGpu, ResidencyCheckFailsForManagedAndPinnedMemory) {
  ORCD_REQUIRE_GPU();
  VramTracker tracker;
  DeviceAllocator alloc(0, tracker);
  DeviceBuffer good = alloc.alloc(4096, VramPurpose::workspace, "good");
  void* managed = nullptr;
  void* pinned = nullptr;
  std::vector<char> pageable(4096);
  CUDA_CHECK(cudaMallocManaged(&managed, 4096));
  CUDA_CHECK(cudaMallocHost(&pinned, 4096));
  tracker.record(managed, 4096, VramPurpose::kv_cache, "planted managed");
  tracker.record(pinned, 4096, VramPurpose::weights, "planted pinned");
  tracker.record(pageable.data(), 4096, VramPurpose::logits, "planted malloc");
  const auto r = tracker.verify_residency();
  EXPECT_FALSE(r.resident);
  EXPECT_EQ(r.checked, 4u);
  ASSERT_EQ(r.violations.size(), 3u);
  std::string all;
  for (const auto& v : r.violations) all += v + "\n";
  EXPECT_NE(all.find("planted managed"), std::string::npos) << all;
  EXPECT_NE(all.find("managed (unified) memory"), std::string::npos) << all;
  EXPECT_NE(all.find("pinned host memory"), std::string::npos) << all;
  EXPECT_NE(all.find("unregistered"), std::string::npos) << all;
  for (void* p : {managed, pinned, static_cast<void*>(pageable.data())}) tracker.forget(p);
  EXPECT_TRUE(tracker.verify_residency().resident);
  cudaFree(managed);
  cudaFreeHost(pinned);
}

TEST(VramGpu, OutOfMemoryIsATypedErrorAndLeavesNothingBehind) {
  ORCD_REQUIRE_GPU();
  VramTracker tracker;
  DeviceAllocator alloc(0, tracker);
  try {
    alloc.alloc(size_t{1} << 50, VramPurpose::kv_cache, "absurd");
    FAIL() << "a petabyte allocation succeeded";
  } catch (const VramOomError& e) {
    EXPECT_EQ(e.requested(), size_t{1} << 50);
    EXPECT_GT(e.free_bytes(), 0u);
    EXPECT_NE(std::string(e.what()).find("VRAM_OOM"), std::string::npos);
  }
  EXPECT_EQ(tracker.count(), 0u);
  // The device is still usable afterwards.
  EXPECT_NO_THROW(alloc.alloc(1024, VramPurpose::workspace, "after"));
}

TEST(VramGpu, ModelThatDoesNotFitIsRefusedBeforeAnyAllocation) {
  ORCD_REQUIRE_GPU();
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  EngineOptions opt;
  opt.reserved_vram = free_b - (1u << 20);  // leave 1 MiB usable: the model cannot fit
  try {
    InferenceEngine::load(test::testdata("models/copy-llama-h256-q8_0.gguf"), opt);
    FAIL() << "load succeeded";
  } catch (const InsufficientVramError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("POOL_UNAVAILABLE (insufficient VRAM)"), std::string::npos);
    EXPECT_NE(m.find("weights"), std::string::npos);
    EXPECT_NE(m.find("copy-llama-h256-q8_0.gguf"), std::string::npos);
    EXPECT_GT(e.needed(), 12'000'000u);
  }
  size_t free_after = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_after, &total_b));
  EXPECT_GE(free_after + (8u << 20), free_b);  // nothing of note was allocated

  // A context larger than the plan allows is reported with the KV cache in the breakdown.
  opt.reserved_vram = 0;
  opt.dedicated_gpu = true;
  auto e = InferenceEngine::load(test::testdata("models/copy-llama-h256-q8_0.gguf"), opt);
  const auto by = e->tracker().bytes_by_purpose();
  EXPECT_EQ(by.at(VramPurpose::weights), e->plan().weights);
  EXPECT_GT(by.at(VramPurpose::weights), 11'000'000u);
  EXPECT_EQ(by.at(VramPurpose::kv_cache), e->plan().kv_cache);
  EXPECT_LE(e->tracker().total_bytes(), e->plan().total());
  EXPECT_TRUE(e->tracker().verify_residency().resident);
}

TEST(VramGpu, AllocationFailureMidLoadFreesEverything) {
  ORCD_REQUIRE_GPU();
  size_t free_before = 0, total = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_before, &total));
  EngineOptions opt;
  opt.reserved_vram = 0;
  opt.dedicated_gpu = true;
  opt.alloc_limit_for_tests = 13u << 20;  // the weights fit, the KV cache does not
  try {
    InferenceEngine::load(test::testdata("models/copy-llama-h256-q8_0.gguf"), opt);
    FAIL() << "load succeeded under the cap";
  } catch (const VramOomError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("kv_cache"), std::string::npos) << m;       // the allocation that failed
    EXPECT_NE(m.find("weights"), std::string::npos) << m;        // the tracker's breakdown of what was held
  }
  size_t free_after = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_after, &total));
  EXPECT_GE(free_after + (4u << 20), free_before);  // weights given back

  opt.alloc_limit_for_tests = 0;
  opt.vram_limit = 1u << 20;
  EXPECT_THROW(InferenceEngine::load(test::testdata("models/copy-llama-h256-q8_0.gguf"), opt), InsufficientVramError);
}
