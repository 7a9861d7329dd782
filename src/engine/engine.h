// The inference engine: one model in VRAM, its KV cache and workspace, forward and sampling.
// Everything per token runs on the GPU; the host schedules kernels and reads back token ids.
#pragma once
#include <cuda_runtime_api.h>

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/gemm.h"
#include "engine/kernels/sampling.h"
#include "engine/model.h"
#include "engine/vram_plan.h"
#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"
#include "vram/admission_ledger.h"
#include "vram/device_allocator.h"
#include "vram/vram_tracker.h"

namespace orcd {

struct EngineOptions {
  int device = 0;
  int n_ctx = 0;                  // 0: the model's training context, capped at 4096
  int max_batch_tokens = 512;     // prefill runs in chunks of this many tokens
  std::optional<uint64_t> reserved_vram;  // headroom (headroom_bytes: never below the floor unless dedicated)
  bool dedicated_gpu = false;     // the operator gave this GPU to the worker alone
  uint64_t vram_limit = 0;        // hard cap on what this engine allocates (0: none)
  AdmissionLedger* ledger = nullptr;  // when set, the plan is reserved here instead of checked alone
  // Cap enforced by the allocator itself, below the plan, to make a load fail half-way in
  // tests (an allocation failure mid-load must free everything). Leave 0 elsewhere.
  uint64_t alloc_limit_for_tests = 0;
  LoadProgress progress;
};

class InferenceEngine {
 public:
  // Plans, checks the fit (InsufficientVramError), allocates and uploads. On any failure
  // everything allocated so far is freed before the exception leaves.
  static std::unique_ptr<InferenceEngine> load(const std::string& path, const EngineOptions& opt);
  ~InferenceEngine();

  const ModelConfig& config() const { return cfg_; }
  const Tokenizer& tokenizer() const { return *tok_; }
  const GgufFile& gguf() const { return *file_; }
  VramTracker& tracker() { return tracker_; }
  const VramPlan& plan() const { return plan_; }
  cudaStream_t stream() const { return stream_; }  // everything the engine runs is ordered on it
  int n_ctx() const { return n_ctx_; }
  int device() const { return opt_.device; }

  // Runs `tokens` at positions start_pos.. through the model (in chunks of max_batch_tokens),
  // writing their K/V into the cache and leaving the last token's logits on the device.
  // A single token replays the decode step's CUDA graph (captured on first use).
  void forward(std::span<const int32_t> tokens, int start_pos);
  std::vector<float> logits() const;  // copy of the last logits (tests, tools)
  // Samples from the last logits; `history` feeds the repetition penalty.
  int32_t sample(const SamplingParams& p, std::span<const int32_t> history, uint64_t step);
  // The same, and when next_pos >= 0 the decode step of the sampled token at next_pos is queued
  // before the host reads the token (forward of one token, fed on the device), so that the GPU
  // does not wait on the host between tokens. If the caller then stops (end of generation), that
  // step was wasted but harmless: it wrote only the cache row at next_pos.
  int32_t sample_and_step(const SamplingParams& p, std::span<const int32_t> history, uint64_t step, int next_pos);

 private:
  InferenceEngine() = default;
  // Prefill (forward.cpp); only the last chunk computes logits.
  void forward_chunk(const int32_t* tokens, int n, int start_pos, bool last_chunk);
  void decode_step();  // one token, inputs in ws_.step; captured as a graph
  void launch_decode_graph();  // captures it on first use
  // next_pos >= 0: the sampler also writes the next decode step's inputs (token, next_pos).
  void enqueue_sample(const SamplingParams& p, std::span<const int32_t> history, uint64_t step, int next_pos);
  // Decode: y (+)= W x through the integer mat-vec where the types allow, else the float matmul.
  // `x_quantized`: the quantized buffer (xq_buffer, default ws_.xq) already holds x. Returns
  // true when the swiglu product was also quantized into out_q (a fused launch).
  // `tail` (only where every job takes the integer or F16 mat-vec) runs in the products' epilogue.
  bool decode_linear(std::span<const MatvecJob> jobs, const float* x, bool x_quantized, MatvecMode mode, const Q8Act* out_q = nullptr,
                     void* xq_buffer = nullptr, const MatvecTail* tail = nullptr);
  RopeParams rope_params() const;  // adjacent pairs where load_weights interleaved the q/k rows
  // true: ws_.xq holds the result too (asked with `quantize`, for an integer launch after it).
  bool decode_norm(const float* x, const float* weight, float* out, bool quantize = true);
  // Prefill: out (+)= W x for n tokens; x16 (x as f16) selects the tensor-core path.
  void prefill_linear(const QMatrix& w, const float* x, const __half* x16, int n, float* out, bool accumulate);

  EngineOptions opt_;
  std::unique_ptr<GgufFile> file_;  // keeps the mapping (and so the page cache) for the tokenizer
  ModelConfig cfg_;
  std::unique_ptr<Tokenizer> tok_;
  int n_ctx_ = 0;
  VramPlan plan_;
  Reservation admission_;  // released last, after every buffer is freed
  VramTracker tracker_;
  std::unique_ptr<DeviceAllocator> alloc_;
  ModelWeights weights_;
  DeviceBuffer k_cache_, v_cache_;
  struct Workspace {
    DeviceBuffer x, xb, q, att, k, v, hb, hb2, att_scratch, ids, history, logits, last_hidden, token;
    DeviceBuffer xq, hq, nq, step, x16, w16, gemm;
  } ws_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<TensorCoreGemm> gemm_;  // null when prefill chunks are too short to use it
  cudaGraphExec_t decode_graph_ = nullptr;
  cudaStream_t readback_ = nullptr;  // reads sampled tokens while the next step runs on stream_
  cudaEvent_t sampled_ = nullptr;
};

}  // namespace orcd
