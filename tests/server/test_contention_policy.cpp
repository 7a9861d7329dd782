// The sharing policy as a state machine over a fake process list and clock.
#include <gtest/gtest.h>

#include "server/gpu_sharing.h"

#include <thread>

using namespace orcd;
using namespace std::chrono_literals;

TEST(ContentionPolicy, AutoPauseWaitsForTheGraceBothWays) {
  ContentionPolicy p(SharingMode::auto_pause, 5s);
  const auto t0 = ContentionPolicy::Clock::time_point{} + 100s;
  EXPECT_EQ(p.observe(0, t0), SharingAction::none);
  EXPECT_EQ(p.observe(1, t0 + 1s), SharingAction::none);   // appeared
  EXPECT_EQ(p.observe(1, t0 + 5s), SharingAction::none);   // 4 s < grace
  EXPECT_EQ(p.observe(0, t0 + 5500ms), SharingAction::none);  // left before the grace: reset
  EXPECT_EQ(p.observe(2, t0 + 6s), SharingAction::none);
  EXPECT_EQ(p.observe(2, t0 + 11s), SharingAction::pause);  // stayed 5 s
  EXPECT_TRUE(p.paused());
  EXPECT_EQ(p.observe(2, t0 + 12s), SharingAction::none);   // once
  EXPECT_EQ(p.observe(0, t0 + 13s), SharingAction::none);   // free...
  EXPECT_EQ(p.observe(1, t0 + 15s), SharingAction::none);   // ...not for long enough
  EXPECT_EQ(p.observe(0, t0 + 16s), SharingAction::none);
  EXPECT_EQ(p.observe(0, t0 + 20s), SharingAction::none);
  EXPECT_EQ(p.observe(0, t0 + 21s), SharingAction::resume);  // free for 5 s
  EXPECT_FALSE(p.paused());
}

TEST(ContentionPolicy, FailedResumeStaysPausedAndRetriesAfterAnotherGrace) {
  ContentionPolicy p(SharingMode::auto_pause, 2s);
  const auto t0 = ContentionPolicy::Clock::time_point{} + 10s;
  p.observe(1, t0);
  EXPECT_EQ(p.observe(1, t0 + 2s), SharingAction::pause);
  p.observe(0, t0 + 3s);
  EXPECT_EQ(p.observe(0, t0 + 5s), SharingAction::resume);
  p.resume_failed(t0 + 5s);
  EXPECT_TRUE(p.paused());
  EXPECT_EQ(p.observe(0, t0 + 6s), SharingAction::none);
  EXPECT_EQ(p.observe(0, t0 + 7s), SharingAction::resume);
}

TEST(ContentionPolicy, WarnOnlyReportsChanges) {
  ContentionPolicy p(SharingMode::warn, 5s);
  const auto t0 = ContentionPolicy::Clock::time_point{} + 1s;
  EXPECT_EQ(p.observe(0, t0), SharingAction::none);
  EXPECT_EQ(p.observe(1, t0 + 1s), SharingAction::warn_appeared);
  EXPECT_EQ(p.observe(2, t0 + 20s), SharingAction::none);
  EXPECT_EQ(p.observe(0, t0 + 21s), SharingAction::warn_cleared);
  EXPECT_FALSE(p.paused());
}

TEST(ContentionPolicy, DedicatedPausesAtOnceForALateArrivalAndResumesAfterGrace) {
  ContentionPolicy p(SharingMode::dedicated, 5s);
  const auto t0 = ContentionPolicy::Clock::time_point{} + 1s;
  EXPECT_EQ(p.observe(0, t0), SharingAction::none);
  EXPECT_EQ(p.observe(1, t0 + 1s), SharingAction::pause);  // no grace: the GPU is not shared
  EXPECT_TRUE(p.paused());
  EXPECT_EQ(p.observe(0, t0 + 2s), SharingAction::none);
  EXPECT_EQ(p.observe(0, t0 + 6s), SharingAction::none);
  EXPECT_EQ(p.observe(0, t0 + 7s), SharingAction::resume);
}

namespace {
class ScriptedLister : public GpuProcessLister {
 public:
  std::vector<std::vector<GpuProcess>> script;
  size_t i = 0;
  std::optional<std::vector<GpuProcess>> list(uint32_t) override { return script[std::min(i++, script.size() - 1)]; }
  std::optional<std::pair<uint64_t, uint64_t>> memory() override { return std::make_pair(1ull, 2ull); }
};
}  // namespace

TEST(GpuSharingMonitor, CallsBackPauseThenResume) {
  auto lister = std::make_unique<ScriptedLister>();
  lister->script = {{}, {{4242, 1 << 20, false}}, {{4242, 1 << 20, false}}, {{4242, 1 << 20, false}}, {}, {}, {}, {}};
  std::atomic<int> pauses{0}, resumes{0}, observed{0};
  std::atomic<uint32_t> paused_for{0};
  GpuSharingMonitor::Callbacks cb;
  cb.on_observe = [&](const std::vector<GpuProcess>&) { ++observed; };
  cb.on_pause = [&](const std::vector<GpuProcess>& ps) { ++pauses, paused_for = ps.at(0).pid; };
  cb.on_resume = [&] { return ++resumes, true; };
  GpuSharingMonitor m(std::move(lister), SharingMode::auto_pause, 10ms, 15ms, cb);
  m.start();
  for (int k = 0; k < 200 && resumes == 0; ++k) std::this_thread::sleep_for(5ms);
  m.stop();
  EXPECT_EQ(pauses, 1);
  EXPECT_EQ(paused_for, 4242u);
  EXPECT_EQ(resumes, 1);
  EXPECT_GE(observed, 5);
}
