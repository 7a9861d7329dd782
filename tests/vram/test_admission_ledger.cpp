// Admission ledger: concurrent reservations never over-commit, accounting is exact, the
// device's real free memory is checked; headroom arithmetic; the refusal JSON.
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

#include "vram/vram_errors.h"
#include "vram/admission_ledger.h"

using namespace orcd;

TEST(Headroom, NeverBelowTheFloorOnASharedGpu) {
  constexpr uint64_t GiB = 1ull << 30;
  EXPECT_EQ(headroom_bytes(80 * GiB, nullptr, false), 8 * GiB);
  EXPECT_EQ(headroom_bytes(8 * GiB, nullptr, false), 2 * GiB);
  EXPECT_EQ(headroom_bytes(24 * GiB, nullptr, false), 24 * GiB / 10);
  EXPECT_EQ(headroom_bytes(8 * GiB, nullptr, true), 2 * GiB);  // dedicated without a value: the floor
  const uint64_t zero = 0, one = GiB, twenty = 20 * GiB;
  // Shared: an explicit value below the floor is raised to it; above it, it wins.
  EXPECT_EQ(headroom_bytes(80 * GiB, &zero, false), 8 * GiB);
  EXPECT_EQ(headroom_bytes(80 * GiB, &one, false), 8 * GiB);
  EXPECT_EQ(headroom_bytes(16 * GiB, &one, false), 2 * GiB);
  EXPECT_EQ(headroom_bytes(80 * GiB, &twenty, false), 20 * GiB);
  // Dedicated (allow_shared_gpu = false): the operator's value stands, 0 included.
  EXPECT_EQ(headroom_bytes(80 * GiB, &zero, true), 0u);
  EXPECT_EQ(headroom_bytes(80 * GiB, &one, true), GiB);
  EXPECT_EQ(headroom_bytes(80 * GiB, &twenty, true), 20 * GiB);
}

TEST(AdmissionLedger, RefusesPastTheBudgetAndPastRealFreeMemory) {
  std::atomic<uint64_t> device_free{1000};
  AdmissionLedger l(0, 1000, 100, [&] { return device_free.load(); });
  Reservation a = l.reserve(600, "a");
  EXPECT_EQ(l.stats().pending, 600u);
  // 600 pending: the device still shows 1000 free, but only 900 - 600 = 300 can be admitted.
  EXPECT_THROW(l.reserve(301, "b"), InsufficientVramError);
  a.commit();
  device_free = 400;  // the 600 are now allocated
  Reservation b = l.reserve(300, "b");
  EXPECT_THROW(l.reserve(1, "c"), InsufficientVramError);
  // Another process takes memory: real free memory limits even within our budget.
  b.release();
  device_free = 150;
  try {
    l.reserve(100, "d");
    FAIL();
  } catch (const InsufficientVramError& e) {
    EXPECT_EQ(e.needed(), 100u);
    EXPECT_EQ(e.free_bytes(), 150u);
    EXPECT_EQ(e.headroom(), 100u);
    EXPECT_NE(std::string(e.what()).find("d needs"), std::string::npos);
  }
  EXPECT_NO_THROW(l.reserve(50, "e"));
  const auto s = l.stats();
  EXPECT_EQ(s.committed, 600u);
  EXPECT_EQ(s.pending, 0u);  // e released at the end of its statement
  EXPECT_EQ(s.attempts, 6u);  // a, b (refused), b, c (refused), d (refused), e
  EXPECT_EQ(s.refusals, 3u);
}

TEST(AdmissionLedger, ManyThreadsNeverOverCommitAndAccountExactly) {
  constexpr uint64_t kTotal = 1'000'000, kHeadroom = 100'000, kBudget = kTotal - kHeadroom;
  std::atomic<int64_t> held{0};  // what the simulated device has allocated
  std::atomic<uint64_t> peak{0};
  AdmissionLedger l(0, kTotal, kHeadroom, [&] { return kTotal - static_cast<uint64_t>(held.load()); });
  std::atomic<int> ok{0}, refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t)
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < 300; ++i) {
        const uint64_t n = 1 + rng() % 200'000;
        try {
          Reservation r = l.reserve(n, "job");
          const int64_t now = held += static_cast<int64_t>(n);  // "allocate"
          uint64_t p = peak.load();
          while (static_cast<uint64_t>(now) > p && !peak.compare_exchange_weak(p, now)) {}
          r.commit();
          if (rng() % 2) std::this_thread::yield();
          held -= static_cast<int64_t>(n);  // "free" before the reservation goes
          ++ok;
        } catch (const InsufficientVramError&) {
          ++refused;
        }
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_LE(peak.load(), kBudget);  // never over-committed
  EXPECT_GT(ok.load(), 0);
  EXPECT_GT(refused.load(), 0);      // the load was enough to hit the limit
  const auto s = l.stats();
  EXPECT_EQ(s.committed, 0u);
  EXPECT_EQ(s.pending, 0u);
  EXPECT_EQ(s.attempts, 16u * 300u);
  EXPECT_EQ(s.refusals, static_cast<uint64_t>(refused.load()));
}

