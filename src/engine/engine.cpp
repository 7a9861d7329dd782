#include "engine/engine.h"

#include <algorithm>

#include "common/cuda_check.h"

namespace orcd {

std::unique_ptr<InferenceEngine> InferenceEngine::load(const std::string& path, const EngineOptions& opt) {
  std::unique_ptr<InferenceEngine> e(new InferenceEngine());
  e->opt_ = opt;
  e->file_ = std::make_unique<GgufFile>(GgufFile::open(path));
  e->cfg_ = ModelConfig::from_gguf(*e->file_);
  try {
    e->tok_ = std::make_unique<Tokenizer>(Tokenizer::from_gguf(*e->file_));
  } catch (const TokenizerError& err) {
    throw ModelError(std::string("tokenizer: ") + err.what());
  }
  if (e->tok_->vocab_size() != e->cfg_.n_vocab)
    throw ModelError(path + ": tokenizer has " + std::to_string(e->tok_->vocab_size()) + " tokens but the embedding has " +
                     std::to_string(e->cfg_.n_vocab) + " rows");
  e->n_ctx_ = opt.n_ctx > 0 ? opt.n_ctx : std::min(e->cfg_.n_ctx_train, 4096);
  if (e->n_ctx_ < 1) throw ModelError("context size must be positive");
  const int T = std::max(1, std::min(opt.max_batch_tokens, e->n_ctx_));
  e->opt_.max_batch_tokens = T;

  // Fit check before the first allocation.
  e->plan_ = plan_vram(*e->file_, e->cfg_, e->n_ctx_, T);
  CUDA_CHECK(cudaSetDevice(opt.device));
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  const uint64_t headroom = headroom_bytes(total_b, opt.reserved_vram ? &*opt.reserved_vram : nullptr);
  if (opt.ledger) {
    try {
      e->admission_ = opt.ledger->reserve(e->plan_.total(), "model " + path);
    } catch (const InsufficientVramError& err) {
      // Re-say it with the plan's breakdown and what to try.
      check_fits(e->plan_, err.free_bytes(), err.headroom(), opt.device, path, e->n_ctx_);
      throw;
    }
  } else {
    check_fits(e->plan_, free_b, headroom, opt.device, path, e->n_ctx_);
  }
  if (opt.vram_limit && e->plan_.total() > opt.vram_limit)
    throw InsufficientVramError("INSUFFICIENT_VRAM: model " + path + " needs " + std::to_string(e->plan_.total()) +
                                    " bytes (" + e->plan_.breakdown() + ") but this worker's VRAM limit is " +
                                    std::to_string(opt.vram_limit) + " bytes. Try: a shorter context or a smaller model.",
                                e->plan_.total(), opt.vram_limit, 0);

  // From here on, an exception destroys `e`, whose buffers free themselves.
  e->alloc_ = std::make_unique<DeviceAllocator>(opt.device, e->tracker_, opt.alloc_limit_for_tests);
  CUDA_CHECK(cudaStreamCreateWithFlags(&e->stream_, cudaStreamNonBlocking));
  e->weights_ = load_weights(*e->file_, e->cfg_, *e->alloc_, opt.progress);
  const ModelConfig& c = e->cfg_;
  const size_t kv_bytes = static_cast<size_t>(c.n_layers) * e->n_ctx_ * c.kv_dim() * sizeof(__half);
  e->k_cache_ = e->alloc_->alloc(kv_bytes, VramPurpose::kv_cache, "K cache");
  e->v_cache_ = e->alloc_->alloc(kv_bytes, VramPurpose::kv_cache, "V cache");
  auto ws = [&](size_t bytes, const char* what) { return e->alloc_->alloc(bytes, VramPurpose::workspace, what); };
  const size_t t = static_cast<size_t>(T);
  e->ws_.x = ws(t * c.n_embd * 4, "hidden state");
  e->ws_.xb = ws(t * c.n_embd * 4, "normed hidden state");
  e->ws_.q = ws(t * c.q_dim() * 4, "queries");
  e->ws_.att = ws(t * c.q_dim() * 4, "attention output");
  e->ws_.k = ws(t * c.kv_dim() * 4, "keys");
  e->ws_.v = ws(t * c.kv_dim() * 4, "values");
  e->ws_.hb = ws(t * c.n_ff * 4, "ffn gate");
  e->ws_.hb2 = ws(t * c.n_ff * 4, "ffn up");
  e->ws_.att_scratch = ws(attention_scratch_floats(T, c.n_heads, c.head_dim, e->n_ctx_) * 4, "attention partials");
  e->ws_.ids = ws(t * 4, "token ids");
  e->ws_.history = ws(4096 * 4, "penalty history");
  e->ws_.logits = e->alloc_->alloc(static_cast<size_t>(c.n_vocab) * 4, VramPurpose::logits, "logits");
  e->ws_.last_hidden = e->alloc_->alloc(c.n_embd * 4, VramPurpose::logits, "final hidden state");
  e->ws_.token = e->alloc_->alloc(64, VramPurpose::logits, "sampled token");
  CUDA_CHECK(cudaStreamSynchronize(e->stream_));
  e->admission_.commit();
  return e;
}

InferenceEngine::~InferenceEngine() {
  if (stream_) {
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
}

void InferenceEngine::forward(std::span<const int32_t> tokens, int start_pos) {
  if (start_pos < 0 || start_pos + static_cast<int64_t>(tokens.size()) > n_ctx_)
    throw std::out_of_range("forward: positions " + std::to_string(start_pos) + ".." + std::to_string(start_pos + tokens.size()) +
                            " exceed the context of " + std::to_string(n_ctx_));
  for (int32_t id : tokens)
    if (id < 0 || id >= cfg_.n_vocab) throw std::out_of_range("forward: token id " + std::to_string(id) + " outside the vocabulary");
  CUDA_CHECK(cudaSetDevice(opt_.device));
  const int T = opt_.max_batch_tokens;
  for (size_t off = 0; off < tokens.size(); off += T) {
    const int n = static_cast<int>(std::min<size_t>(T, tokens.size() - off));
    forward_chunk(tokens.data() + off, n, start_pos + static_cast<int>(off));
  }
}

void InferenceEngine::forward_chunk(const int32_t* tokens, int n, int start_pos) {
  const ModelConfig& c = cfg_;
  cudaStream_t s = stream_;
  float *x = ws_.x.as<float>(), *xb = ws_.xb.as<float>(), *q = ws_.q.as<float>(), *att = ws_.att.as<float>();
  float *k = ws_.k.as<float>(), *v = ws_.v.as<float>(), *hb = ws_.hb.as<float>(), *hb2 = ws_.hb2.as<float>();
  CUDA_CHECK(cudaMemcpyAsync(ws_.ids.get(), tokens, n * sizeof(int32_t), cudaMemcpyHostToDevice, s));
  launch_get_rows(weights_.tok_embd, ws_.ids.as<int32_t>(), n, x, s);

  const RopeParams rope{c.n_heads, c.n_kv_heads, c.head_dim, c.rope_dims, c.rope_base, c.rope_freq_scale, c.rope_neox,
                        weights_.rope_freqs};
  const AttentionParams ap{c.n_heads, c.n_kv_heads, c.head_dim, start_pos, n};
  const size_t layer_kv = static_cast<size_t>(n_ctx_) * c.kv_dim();
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = weights_.layers[l];
    __half* kc = k_cache_.as<__half>() + l * layer_kv;
    __half* vc = v_cache_.as<__half>() + l * layer_kv;
    launch_rmsnorm(x, L.attn_norm, xb, n, c.n_embd, c.rms_eps, s);
    launch_matmul(L.wq, xb, n, q, s);
    launch_matmul(L.wk, xb, n, k, s);
    launch_matmul(L.wv, xb, n, v, s);
    if (L.bq) {
      launch_add_bias(q, L.bq, n, c.q_dim(), s);
      launch_add_bias(k, L.bk, n, c.kv_dim(), s);
      launch_add_bias(v, L.bv, n, c.kv_dim(), s);
    }
    launch_rope_store_kv(q, k, v, kc, vc, n, start_pos, rope, s);
    launch_attention(q, kc, vc, att, ws_.att_scratch.as<float>(), ap, s);
    launch_matmul(L.wo, att, n, xb, s);
    launch_add(x, xb, static_cast<int64_t>(n) * c.n_embd, s);

    launch_rmsnorm(x, L.ffn_norm, xb, n, c.n_embd, c.rms_eps, s);
    launch_matmul(L.w_gate, xb, n, hb, s);
    launch_matmul(L.w_up, xb, n, hb2, s);
    launch_swiglu(hb, hb2, hb, static_cast<int64_t>(n) * c.n_ff, s);
    launch_matmul(L.w_down, hb, n, xb, s);
    launch_add(x, xb, static_cast<int64_t>(n) * c.n_embd, s);
  }
  // Only the last token's logits are needed.
  launch_rmsnorm(x + static_cast<size_t>(n - 1) * c.n_embd, weights_.output_norm, ws_.last_hidden.as<float>(), 1, c.n_embd, c.rms_eps, s);
  launch_matmul(weights_.output, ws_.last_hidden.as<float>(), 1, ws_.logits.as<float>(), s);
}

std::vector<float> InferenceEngine::logits() const {
  std::vector<float> out(cfg_.n_vocab);
  CUDA_CHECK(cudaMemcpyAsync(out.data(), ws_.logits.get(), out.size() * 4, cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  return out;
}

int32_t InferenceEngine::sample(const SamplingParams& p, std::span<const int32_t> history, uint64_t step) {
  CUDA_CHECK(cudaSetDevice(opt_.device));
  const int n_hist = static_cast<int>(std::min<size_t>({history.size(), static_cast<size_t>(std::max(0, p.penalty_last_n)), 4096}));
  if (p.repetition_penalty != 1.0f && n_hist > 0) {
    CUDA_CHECK(cudaMemcpyAsync(ws_.history.get(), history.data() + history.size() - n_hist, n_hist * 4, cudaMemcpyHostToDevice, stream_));
    launch_repetition_penalty(ws_.logits.as<float>(), ws_.history.as<int32_t>(), n_hist, p.repetition_penalty, stream_);
  }
  launch_sample(ws_.logits.as<float>(), cfg_.n_vocab, p, step, ws_.token.as<int32_t>(), stream_);
  int32_t tok = -1;
  CUDA_CHECK(cudaMemcpyAsync(&tok, ws_.token.get(), 4, cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  return tok;
}

}  // namespace orcd
