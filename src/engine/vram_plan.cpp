#include "engine/vram_plan.h"

#include <algorithm>
#include <cstdio>

#include "engine/kernels/kernels.h"
#include "engine/kernels/sampling.h"
#include "engine/model.h"
#include "gguf/gguf.h"
#include "vram/device_allocator.h"

namespace orcd {

namespace {
std::string mib(uint64_t b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", b / 1048576.0);
  return buf;
}
}  // namespace

std::string VramPlan::breakdown() const {
  return "weights " + mib(weights) + ", kv_cache " + mib(kv_cache) + ", workspace " + mib(workspace) + ", logits " + mib(logits);
}

WorkspaceSizes workspace_sizes(const ModelConfig& c, int n_ctx, int max_batch_tokens) {
  const uint64_t T = static_cast<uint64_t>(max_batch_tokens);
  const uint64_t widest = std::max({c.n_embd, c.q_dim(), c.n_ff});
  WorkspaceSizes w{};
  w.x = w.xb = T * c.n_embd * 4;
  w.q = w.att = T * c.q_dim() * 4;
  w.k = w.v = T * c.kv_dim() * 4;
  w.hb = w.hb2 = T * c.n_ff * 4;
  w.att_scratch = attention_scratch_floats(max_batch_tokens, c.n_heads, c.head_dim, n_ctx) * 4;
  w.ids = T * 4;
  w.history = 4096 * 4;
  w.xq = q8act_bytes(static_cast<int64_t>((widest + 31) / 32 * 32));
  w.hq = q8act_bytes((static_cast<int64_t>(c.n_ff) + 31) / 32 * 32);
  w.nq = c.n_embd % 32 == 0 ? norm_partials_bytes(c.n_embd) : 0;
  w.step = 8;
  if (max_batch_tokens >= kGemmMinTokens) {
    const uint64_t e = c.n_embd;
    w.x16 = T * widest * 2;
    w.w16 = std::max({c.q_dim() * e, c.kv_dim() * e, c.n_ff * e}) * 2;  // the largest per-layer matrix
    w.gemm = kCublasWorkspaceBytes;
  }
  return w;
}

uint64_t WorkspaceSizes::total_padded() const {
  uint64_t t = 0;
  for (uint64_t b : {x, xb, q, att, k, v, hb, hb2, att_scratch, ids, history, xq, hq, nq, step, x16, w16, gemm})
    if (b) t += DeviceAllocator::padded(b);
  return t;
}

VramPlan plan_vram(const GgufFile& f, const ModelConfig& c, int n_ctx, int max_batch_tokens) {
  const auto P = [](uint64_t b) { return DeviceAllocator::padded(b); };
  VramPlan p;
  p.weights = weights_vram_bytes(f);
  p.kv_cache = 2 * P(static_cast<uint64_t>(c.n_layers) * n_ctx * c.kv_dim() * 2);  // K and V, f16
  p.workspace = workspace_sizes(c, n_ctx, max_batch_tokens).total_padded();
  p.logits = P(static_cast<uint64_t>(c.n_vocab) * 4) + P(c.n_embd * 4) + P(sample_buffer_bytes());
  return p;
}

void check_fits(const VramPlan& plan, uint64_t free_bytes, uint64_t headroom, int device, const std::string& model_path, int n_ctx) {
  const uint64_t usable = free_bytes > headroom ? free_bytes - headroom : 0;
  if (plan.total() <= usable) return;
  throw InsufficientVramError("POOL_UNAVAILABLE (insufficient VRAM): model " + model_path + " needs " + mib(plan.total()) + " of VRAM (" +
                                  plan.breakdown() + ", context " + std::to_string(n_ctx) + ") but GPU " + std::to_string(device) +
                                  " has " + mib(free_bytes) + " free and " + mib(headroom) + " is kept as headroom. Try: close other " +
                                  "GPU programs, a shorter context (--ctx-size), or a smaller model or quantization.",
                              plan.total(), free_bytes, headroom);
}

}  // namespace orcd
