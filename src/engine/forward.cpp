// The transformer forward pass, as kernel sequences on the engine's stream. Prefill runs a
// chunk of tokens with the products on tensor cores; decode runs one token with fused integer
// mat-vecs and is captured once as a CUDA graph (its inputs live in ws_.step).
#include <algorithm>
#include <tuple>
#include <vector>

#include "common/cuda_check.h"
#include "engine/engine.h"

namespace orcd {

void InferenceEngine::prefill_linear(const QMatrix& w, const float* x, const __half* x16, int n, float* out, bool accumulate) {
  if (x16) {
    gemm_->run(w, x16, n, out, accumulate, ws_.w16.as<__half>());
    return;
  }
  if (!accumulate) {
    launch_matmul(w, x, n, out, stream_);
    return;
  }
  float* tmp = ws_.xb.as<float>();  // free while the residual products run
  launch_matmul(w, x, n, tmp, stream_);
  launch_add(out, tmp, static_cast<int64_t>(n) * w.rows, stream_);
}

void InferenceEngine::forward_chunk(const int32_t* tokens, int n, int start_pos, bool last_chunk) {
  const ModelConfig& c = cfg_;
  cudaStream_t s = stream_;
  float *x = ws_.x.as<float>(), *xb = ws_.xb.as<float>(), *q = ws_.q.as<float>(), *att = ws_.att.as<float>();
  float *k = ws_.k.as<float>(), *v = ws_.v.as<float>(), *hb = ws_.hb.as<float>(), *hb2 = ws_.hb2.as<float>();
  CUDA_CHECK(cudaMemcpyAsync(ws_.ids.get(), tokens, n * sizeof(int32_t), cudaMemcpyHostToDevice, s));
  launch_get_rows(weights_.tok_embd, ws_.ids.as<int32_t>(), n, x, s);

  const bool tensor_cores = gemm_ && n >= kGemmMinTokens;
  __half* x16 = ws_.x16.as<__half>();
  auto as_half = [&](const float* in, int cols) -> const __half* {
    if (!tensor_cores) return nullptr;
    launch_to_half(in, x16, static_cast<int64_t>(n) * cols, s);
    return x16;
  };
  // RMSNorm into xb, or straight into f16 for the tensor cores (returned; then xb is not written).
  auto norm = [&](const float* weight) -> const __half* {
    if (!tensor_cores) {
      launch_rmsnorm(x, weight, xb, n, c.n_embd, c.rms_eps, s);
      return nullptr;
    }
    launch_rmsnorm(x, weight, x16, n, c.n_embd, c.rms_eps, s);
    return x16;
  };
  const RopeParams rope = rope_params();
  const AttentionParams ap{c.n_heads, c.n_kv_heads, c.head_dim, start_pos, n};
  const size_t layer_kv = static_cast<size_t>(n_ctx_) * c.kv_dim();
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = weights_.layers[l];
    __half* kc = k_cache_.as<__half>() + l * layer_kv;
    __half* vc = v_cache_.as<__half>() + l * layer_kv;
    const __half* h = norm(L.attn_norm);
    prefill_linear(L.wq, xb, h, n, q, false);
    prefill_linear(L.wk, xb, h, n, k, false);
    prefill_linear(L.wv, xb, h, n, v, false);
    if (L.bq) {
      launch_add_bias(q, L.bq, n, c.q_dim(), s);
      launch_add_bias(k, L.bk, n, c.kv_dim(), s);
      launch_add_bias(v, L.bv, n, c.kv_dim(), s);
    }
    launch_rope_store_kv(q, k, v, kc, vc, n, start_pos, rope, s);
    launch_attention(q, kc, vc, att, ws_.att_scratch.as<float>(), ap, s);
    prefill_linear(L.wo, att, as_half(att, c.q_dim()), n, x, true);

    h = norm(L.ffn_norm);
    prefill_linear(L.w_gate, xb, h, n, hb, false);
    prefill_linear(L.w_up, xb, h, n, hb2, false);
    if (tensor_cores) {
      launch_swiglu(hb, hb2, x16, static_cast<int64_t>(n) * c.n_ff, s);
      prefill_linear(L.w_down, hb, x16, n, x, true);
    } else {
      launch_swiglu(hb, hb2, hb, static_cast<int64_t>(n) * c.n_ff, s);
      prefill_linear(L.w_down, hb, nullptr, n, x, true);
    }
  }
  // Only the last token's logits are needed: the same path as a decode step's.
  if (!last_chunk) return;
  float* last = ws_.last_hidden.as<float>();
  const bool q8 = decode_norm(x + static_cast<size_t>(n - 1) * c.n_embd, weights_.output_norm, last);
  const MatvecJob head{weights_.output, ws_.logits.as<float>()};
  decode_linear(std::span(&head, 1), last, q8, MatvecMode::store);
}

RopeParams InferenceEngine::rope_params() const {
  const ModelConfig& c = cfg_;
  const bool neox = c.rope_neox && !weights_.qk_rows_interleaved;
  return {c.n_heads, c.n_kv_heads, c.head_dim, c.rope_dims, c.rope_base, c.rope_freq_scale, neox, weights_.rope_freqs};
}

bool InferenceEngine::decode_norm(const float* x, const float* weight, float* out, bool quantize) {
  const Q8Act q = quantize ? q8act_view(ws_.xq.get(), cfg_.n_embd) : Q8Act{};
  return launch_rmsnorm_quant(x, weight, out, q, cfg_.n_embd, cfg_.rms_eps, stream_);
}

namespace {
// Which decode product a matrix takes: integer dp4a, F16 on float activations, or the float matmul.
enum class DecodePath { q8, f16, generic };
DecodePath decode_path(const QMatrix& w) {
  if (matvec_q8_supports(w)) return DecodePath::q8;
  if (matvec_f16_supports(w)) return DecodePath::f16;
  return DecodePath::generic;
}
// Tails (MatvecTail) run only in the integer and F16 mat-vecs.
bool takes_tail(std::span<const MatvecJob> jobs) {
  return std::ranges::none_of(jobs, [](const MatvecJob& j) { return decode_path(j.w) == DecodePath::generic; });
}
bool uniform(std::span<const MatvecJob> jobs, DecodePath path) {
  return std::ranges::all_of(jobs, [&](const MatvecJob& j) { return decode_path(j.w) == path && j.w.type == jobs[0].w.type; });
}
// Whether decode_linear runs these jobs as one integer launch (which can take a norm_in tail).
bool one_q8_launch(std::span<const MatvecJob> jobs, MatvecMode mode) { return uniform(jobs, DecodePath::q8) || matvec_q8_can_mix(jobs, mode); }
// Whether they all read float activations (F16): then nothing before them quantizes its output.
bool reads_floats(std::span<const MatvecJob> jobs) { return uniform(jobs, DecodePath::f16); }
}  // namespace

bool InferenceEngine::decode_linear(std::span<const MatvecJob> jobs, const float* x, bool x_quantized, MatvecMode mode,
                                    const Q8Act* out_q, void* xq_buffer, const MatvecTail* tail) {
  cudaStream_t s = stream_;
  if (tail && !takes_tail(jobs)) throw std::logic_error("decode_linear: a tail on a launch that takes the float matmul");
  const int64_t cols = jobs[0].w.cols;
  const Q8Act xq = q8act_view(xq_buffer ? xq_buffer : ws_.xq.get(), cols);
  auto quantized = [&] {
    if (!x_quantized) launch_quantize_act(x, cols, xq, s);
    x_quantized = true;
    return xq;
  };
  if (reads_floats(jobs)) {
    launch_matvec_f16(jobs, x, mode, s, 0, tail);
    return false;
  }
  if (uniform(jobs, DecodePath::q8)) {
    const bool fuse = out_q && mode == MatvecMode::swiglu && jobs[0].w.rows % 32 == 0;
    launch_matvec_q8(jobs, quantized(), mode, s, fuse ? out_q : nullptr, 0, MatvecKernel::automatic, tail);
    return fuse;
  }
  if (matvec_q8_can_mix(jobs, mode)) {  // q/k and a v in a "more bits" format: still one launch
    launch_matvec_q8(jobs, quantized(), mode, s, nullptr, 0, MatvecKernel::automatic, tail);
    return false;
  }
  if (mode == MatvecMode::swiglu) {  // gate and up of different types: one at a time, then the product
    if (matvec_q8_supports(jobs[0].w) || matvec_q8_supports(jobs[1].w)) quantized();  // once, for both
    float* up = ws_.hb2.as<float>();
    const MatvecJob parts[2] = {{jobs[0].w, jobs[0].out}, {jobs[1].w, up}};
    for (const MatvecJob& p : parts) decode_linear(std::span(&p, 1), x, x_quantized, MatvecMode::store, nullptr, xq_buffer);
    launch_swiglu(jobs[0].out, up, jobs[0].out, jobs[0].w.rows, s);
    return false;
  }
  // Runs of matrices of one type and path share a launch; the rest take the float matmul.
  for (size_t i = 0; i < jobs.size();) {
    const QMatrix& w = jobs[i].w;
    const DecodePath p = decode_path(w);
    if (p != DecodePath::generic) {
      size_t e = i + 1;
      while (e < jobs.size() && decode_path(jobs[e].w) == p && jobs[e].w.type == w.type) ++e;
      if (p == DecodePath::q8) launch_matvec_q8(jobs.subspan(i, e - i), quantized(), mode, s, nullptr, 0, MatvecKernel::automatic, tail);
      else launch_matvec_f16(jobs.subspan(i, e - i), x, mode, s, 0, tail);
      i = e;
      continue;
    }
    float* dst = mode == MatvecMode::accumulate ? ws_.hb2.as<float>() : jobs[i].out;
    launch_matmul(w, x, 1, dst, s);
    if (jobs[i].bias) launch_add_bias(dst, jobs[i].bias, 1, static_cast<int>(w.rows), s);
    if (mode == MatvecMode::accumulate) launch_add(jobs[i].out, dst, w.rows, s);
    ++i;
  }
  return false;
}

void InferenceEngine::decode_step() {
  const ModelConfig& c = cfg_;
  cudaStream_t s = stream_;
  float *x = ws_.x.as<float>(), *xb = ws_.xb.as<float>(), *q = ws_.q.as<float>(), *att = ws_.att.as<float>();
  float *k = ws_.k.as<float>(), *v = ws_.v.as<float>(), *hb = ws_.hb.as<float>();
  const int32_t* token = ws_.step.as<int32_t>();
  const int32_t* pos = token + 1;
  launch_get_rows(weights_.tok_embd, token, 1, x, s);

  RopeParams rope = rope_params();
  rope.pos_dev = pos;
  AttentionParams ap{c.n_heads, c.n_kv_heads, c.head_dim, 0, 1};
  ap.pos_dev = pos;
  ap.max_ctx = n_ctx_;
  const size_t layer_kv = static_cast<size_t>(n_ctx_) * c.kv_dim();
  // A norm's input comes from the norm kernel, or from the residual product before it
  // (NormPartials) where both launches are integer mat-vecs that can take it: then it is in
  // ws_.nq, x∘w quantized and the sums of squares behind it.
  NormPartials fused = norm_partials_view(ws_.nq.get(), c.n_embd);
  fused.eps = c.rms_eps;
  bool in_fused = false;  // whether the next norm's input was emitted by the last residual product
  // The residual product `producer`, emitting the input of the norm `weight` if the launch that
  // reads it (`consumer` in `mode`) can take it.
  auto residual = [&](const MatvecJob& producer, const float* in, bool in_q8, void* in_buf, const float* weight,
                      std::span<const MatvecJob> consumer, MatvecMode mode) {
    MatvecTail t;
    const std::span<const MatvecJob> p(&producer, 1);
    const bool emit = ws_.nq && matvec_q8_emit_norm_pays(p) && one_q8_launch(consumer, mode);
    if (emit) t.norm_out = fused, t.norm_out.weight = weight;
    decode_linear(p, in, in_q8, MatvecMode::accumulate, nullptr, in_buf, emit ? &t : nullptr);
    in_fused = emit;
  };
  // The tail and input buffer of a launch reading a norm's output.
  auto norm_input = [&](const float* weight, float* out, MatvecTail& t, std::span<const MatvecJob> consumer) -> std::pair<bool, void*> {
    if (!in_fused) return {decode_norm(x, weight, out, !reads_floats(consumer)), nullptr};
    t.norm_in = fused;
    return {true, ws_.nq.get()};
  };
  const MatvecJob head{weights_.output, ws_.logits.as<float>()};
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = weights_.layers[l];
    __half* kc = k_cache_.as<__half>() + l * layer_kv;
    __half* vc = v_cache_.as<__half>() + l * layer_kv;
    const MatvecJob qkv[3] = {{L.wq, q, L.bq}, {L.wk, k, L.bk}, {L.wv, v, L.bv}};
    MatvecTail t;
    auto [q8, in_buf] = norm_input(L.attn_norm, xb, t, qkv);
    const bool rope_tail = !rope.neox && takes_tail(qkv);  // RoPE and the cache store in the product's epilogue
    if (rope_tail) t.rope_q = q, t.rope_k = k, t.rope_v = v, t.rope = rope, t.k_cache = kc, t.v_cache = vc;
    decode_linear(qkv, xb, q8, MatvecMode::store, nullptr, in_buf, rope_tail || in_fused ? &t : nullptr);
    if (!rope_tail) launch_rope_store_kv(q, k, v, kc, vc, 1, 0, rope, s);
    // The attention output and the SwiGLU product come out already quantized for the next product.
    const Q8Act att_q = q8act_view(ws_.xq.get(), c.q_dim());
    const MatvecJob o{L.wo, x};
    const bool att_q8 = launch_attention(q, kc, vc, att, ws_.att_scratch.as<float>(), ap, s, reads_floats(std::span(&o, 1)) ? nullptr : &att_q);
    const MatvecJob ffn[2] = {{L.w_gate, hb}, {L.w_up, nullptr}};
    residual(o, att, att_q8, nullptr, L.ffn_norm, ffn, MatvecMode::swiglu);

    MatvecTail tf;
    std::tie(q8, in_buf) = norm_input(L.ffn_norm, xb, tf, ffn);
    const Q8Act h_q = q8act_view(ws_.hq.get(), c.n_ff);
    const bool h_q8 = decode_linear(ffn, xb, q8, MatvecMode::swiglu, &h_q, in_buf, in_fused ? &tf : nullptr);
    // The down product emits the input of the next norm: the next layer's, or the output norm.
    if (l + 1 < c.n_layers) {
      const LayerWeights& N = weights_.layers[l + 1];
      const MatvecJob next[3] = {{N.wq, q, N.bq}, {N.wk, k, N.bk}, {N.wv, v, N.bv}};
      residual({L.w_down, x}, hb, h_q8, h_q8 ? ws_.hq.get() : nullptr, N.attn_norm, next, MatvecMode::store);
    } else {
      residual({L.w_down, x}, hb, h_q8, h_q8 ? ws_.hq.get() : nullptr, weights_.output_norm, std::span(&head, 1), MatvecMode::store);
    }
  }
  float* last = ws_.last_hidden.as<float>();
  MatvecTail t;
  const auto [q8, in_buf] = norm_input(weights_.output_norm, last, t, std::span(&head, 1));
  decode_linear(std::span(&head, 1), last, q8, MatvecMode::store, nullptr, in_buf, in_fused ? &t : nullptr);
}

}  // namespace orcd
