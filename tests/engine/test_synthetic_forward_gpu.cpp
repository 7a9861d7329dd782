// Whole forward pass of tiny synthetic models (both architectures, several quant schemes)
// against the float64 CPU reference: prefill, then 32 decode steps.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <set>

#include "engine/cpu_reference.h"
#include "engine/engine.h"
#include "engine/synth.h"
#include "gpu.h"
#include "testutil.h"

using namespace orcd;

namespace {

struct Case {
  std::string preset, vocab, scheme;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.preset << "/" << c.scheme; }

class SyntheticForward : public ::testing::TestWithParam<Case> {};

double rel(const std::vector<float>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t k = 0; k < got.size(); ++k) {
    if (!std::isfinite(got[k])) return INFINITY;
    num += (got[k] - want[k]) * (got[k] - want[k]);
    den += want[k] * want[k];
  }
  return std::sqrt(num / den);
}

// Top-1 must agree unless the reference itself has a near-tie for first place.
void expect_top1(const std::vector<float>& got, const std::vector<double>& want, int step) {
  std::vector<size_t> order(want.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::partial_sort(order.begin(), order.begin() + 2, order.end(), [&](size_t a, size_t b) { return want[a] > want[b]; });
  const double margin = want[order[0]] - want[order[1]];
  const size_t ours = std::max_element(got.begin(), got.end()) - got.begin();
  if (margin > 1e-3 * std::abs(want[order[0]])) {
    EXPECT_EQ(ours, order[0]) << "step " << step;
  }
}

std::string synth_model(const std::string& dir, const std::string& preset, const std::string& vocab, const std::string& scheme) {
  SynthOptions so;
  so.preset = preset;
  so.scheme = scheme;
  so.vocab_path = test::testdata("tokenizer/" + vocab);
  so.out_path = dir + "/model.gguf";
  so.seed = 7;
  write_synthetic_model(so);
  return so.out_path;
}

TEST_P(SyntheticForward, PrefillAnd32DecodeStepsMatchFloat64) {
  ORCD_REQUIRE_GPU();
  const Case c = GetParam();
  const std::string dir = test::temp_dir();
  EngineOptions eo;
  eo.reserved_vram = 0;
  eo.dedicated_gpu = true;
  eo.n_ctx = 128;
  eo.max_batch_tokens = 8;  // a 13-token prompt runs as two chunks
  auto e = InferenceEngine::load(synth_model(dir, c.preset, c.vocab, c.scheme), eo);
  ref::RefModel ref(e->gguf(), e->config());

  std::mt19937 rng(11);
  std::vector<int32_t> prompt(13);
  for (auto& t : prompt) t = static_cast<int32_t>(rng() % e->config().n_vocab);
  const auto want = ref.forward(prompt);
  e->forward(prompt, 0);
  auto got = e->logits();
  EXPECT_LT(rel(got, want.back()), 5e-3) << "prefill";  // f16 KV cache against float64
  expect_top1(got, want.back(), 0);

  std::vector<double> last = want.back();
  for (int s = 1; s <= 32; ++s) {
    const auto next = static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin());
    last = ref.forward({next}).back();
    e->forward(std::span(&next, 1), static_cast<int>(prompt.size()) + s - 1);
    got = e->logits();
    EXPECT_LT(rel(got, last), 5e-3) << "decode step " << s;
    expect_top1(got, last, s);
  }
  std::filesystem::remove_all(dir);
}

// sample_and_step queues each token's step before the host reads it; the tokens and the last
// logits must be exactly those of sampling and stepping one at a time.
TEST(SyntheticDecode, PipelinedStepsGiveTheSameTokensAsOneAtATime) {
  ORCD_REQUIRE_GPU();
  const std::string dir = test::temp_dir();
  EngineOptions eo;
  eo.reserved_vram = 0;
  eo.dedicated_gpu = true;
  eo.n_ctx = 128;
  auto e = InferenceEngine::load(synth_model(dir, "tiny-qwen2", "ggml-vocab-gpt-2.gguf", "q4_k_m"), eo);
  std::mt19937 rng(3);
  std::vector<int32_t> prompt(9);
  for (auto& t : prompt) t = static_cast<int32_t>(rng() % e->config().n_vocab);
  // Random sampling with a penalty (the history must reach each step in order), at a temperature
  // that spreads the draws over many ids: the random weights' logits are far apart.
  e->forward(prompt, 0);
  const auto first = e->logits();
  const auto [lo, hi] = std::minmax_element(first.begin(), first.end());
  SamplingParams sp;
  sp.seed = 42;
  sp.temperature = (*hi - *lo) / 4, sp.top_k = 0, sp.top_p = 1.0f, sp.min_p = 0.0f;
  sp.repetition_penalty = 1.3f;
  auto run = [&](bool pipelined, std::vector<float>* logits) {
    e->forward(prompt, 0);
    std::vector<int32_t> hist = prompt, out;
    int pos = static_cast<int>(prompt.size());
    for (int i = 0; i < 24; ++i) {
      const bool more = i + 1 < 24;
      const int32_t t = pipelined ? e->sample_and_step(sp, hist, i, more ? pos : -1) : e->sample(sp, hist, i);
      out.push_back(t), hist.push_back(t);
      if (!more) break;
      if (!pipelined) e->forward(std::span(&t, 1), pos);
      ++pos;
    }
    *logits = e->logits();
    return out;
  };
  std::vector<float> la, lb;
  const auto a = run(false, &la), b = run(true, &lb);
  EXPECT_EQ(a, b);
  EXPECT_EQ(la, lb);
  EXPECT_GT(std::set<int32_t>(a.begin(), a.end()).size(), 3u);  // a real sequence, not one repeated id
  EXPECT_THROW(e->sample_and_step(sp, {}, 0, eo.n_ctx), std::out_of_range);
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(
    Models, SyntheticForward,
    ::testing::Values(Case{"tiny-llama", "ggml-vocab-llama-spm.gguf", "q8_0"}, Case{"tiny-llama", "ggml-vocab-llama-spm.gguf", "q4_0"},
                      Case{"tiny-llama", "ggml-vocab-llama-spm.gguf", "q4_k_m"}, Case{"tiny-llama", "ggml-vocab-llama-spm.gguf", "f16"},
                      Case{"tiny-qwen2", "ggml-vocab-gpt-2.gguf", "q8_0"}, Case{"tiny-qwen2", "ggml-vocab-gpt-2.gguf", "q4_k_m"},
                      Case{"tiny-qwen2", "ggml-vocab-gpt-2.gguf", "f16"}),
    [](const auto& param_info) {
      std::string n = param_info.param.preset + "_" + param_info.param.scheme;
      for (auto& ch : n) if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return n;
    });

}  // namespace
