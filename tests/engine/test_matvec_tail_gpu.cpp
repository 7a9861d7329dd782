// The mat-vec's tails (MatvecTail) against float64: RoPE with the KV-cache store in the q/k/v
// product's epilogue, and the RMSNorm handed from a residual product to the next launch.
#include <cuda_fp16.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "engine/kernel_testing.h"
#include "gpu.h"

using namespace orcd;
using namespace orcd::kt;

namespace {

constexpr int64_t kCols = 2048;  // whole bulk-copy chunks for every type

// x as the launch wants it: quantized for the integer mat-vec, floats for F16.
struct Input {
  DeviceBuffer floats, quantized;
  Q8Act q;
};
Input make_input(Gpu& g, const std::vector<float>& x) {
  Input in{g.upload(x), g.alloc.alloc(q8act_bytes(kCols), VramPurpose::workspace, "q8 x"), {}};
  in.q = q8act_view(in.quantized.get(), kCols);
  launch_quantize_act(in.floats.as<float>(), kCols, in.q, nullptr);
  return in;
}

void launch(std::span<const MatvecJob> jobs, const Input& in, MatvecMode mode, int rpw, MatvecKernel kernel, const MatvecTail& tail) {
  if (jobs[0].w.type == GgmlType::F16) launch_matvec_f16(jobs, in.floats.as<float>(), mode, nullptr, rpw, &tail);
  else launch_matvec_q8(jobs, in.q, mode, nullptr, nullptr, rpw, kernel, &tail);
}

// Adjacent pairs (2i, 2i + 1) of each head's first rope_dims dims, in float64.
void rotate64(std::vector<double>& v, int head_dim, int rope_dims, int pos, float scale, const std::vector<float>& factors) {
  for (size_t h = 0; h < v.size() / head_dim; ++h)
    for (int i = 0; i < rope_dims / 2; ++i) {
      double th = pos * static_cast<double>(scale) * std::pow(10000.0, -2.0 * i / rope_dims);
      if (!factors.empty()) th /= factors[i];
      double& a = v[h * head_dim + 2 * i];
      double& b = v[h * head_dim + 2 * i + 1];
      const double x0 = a, x1 = b;
      a = x0 * std::cos(th) - x1 * std::sin(th);
      b = x0 * std::sin(th) + x1 * std::cos(th);
    }
}

struct RopeCase {
  int rope_dims;
  bool factors;
  bool split_v;  // v in a launch of its own (a type of its own in Q4_K_M files)
};

// v_type: v in another format than q and k (a mixed launch unless rc.split_v).
void check_rope_tail(Gpu& g, GgmlType t, int rpw, MatvecKernel kernel, const RopeCase& rc, double tol, std::optional<GgmlType> v_type = {}) {
  const int H = 4, KVH = 2, hd = 64, pos = 1000, ctx = 1002;
  const int64_t rows[3] = {H * hd, KVH * hd, KVH * hd};
  const auto x = random_floats(kCols, -3, 3);
  Input in = make_input(g, x);
  std::vector<std::vector<uint8_t>> host;
  std::vector<std::vector<float>> bias;
  std::vector<DeviceBuffer> wd, bd, outs;
  std::vector<MatvecJob> jobs;
  const GgmlType types[3] = {t, t, v_type.value_or(t)};
  for (int i = 0; i < 3; ++i) {
    host.push_back(random_blocks(types[i], rows[i], kCols));
    bias.push_back(random_floats(rows[i]));
    wd.push_back(g.upload_weights(types[i], kCols, host[i]));
    bd.push_back(g.upload(bias[i]));
    outs.push_back(g.poisoned(rows[i]));
    jobs.push_back({as_matrix(wd[i], types[i], rows[i], kCols), outs[i].as<float>(), bd[i].as<float>()});
  }
  const size_t cache_elems = static_cast<size_t>(ctx) * KVH * hd;
  auto kc = g.upload(std::vector<__half>(cache_elems, __float2half(0.0f)));
  auto vc = g.upload(std::vector<__half>(cache_elems, __float2half(0.0f)));
  std::vector<float> factors;
  if (rc.factors) factors = random_floats(rc.rope_dims / 2, 1, 4);
  auto fd = g.upload(factors.empty() ? std::vector<float>{1} : factors);
  auto posd = g.upload(std::vector<int32_t>{pos});
  const float scale = 0.5f;
  MatvecTail tail;
  tail.rope_q = outs[0].as<float>(), tail.rope_k = outs[1].as<float>(), tail.rope_v = outs[2].as<float>();
  tail.rope = {H, KVH, hd, rc.rope_dims, 10000.0f, scale, false, rc.factors ? fd.as<float>() : nullptr, posd.as<int32_t>()};
  tail.k_cache = kc.as<__half>(), tail.v_cache = vc.as<__half>();
  if (rc.split_v) {
    launch(std::span(jobs).first(2), in, MatvecMode::store, rpw, kernel, tail);
    launch(std::span(jobs).last(1), in, MatvecMode::store, rpw, kernel, tail);
  } else {
    launch(jobs, in, MatvecMode::store, rpw, kernel, tail);
  }
  std::vector<double> want[3];
  for (int i = 0; i < 3; ++i) {
    want[i] = product64(types[i], host[i], rows[i], kCols, x);
    for (int64_t r = 0; r < rows[i]; ++r) want[i][r] += bias[i][r];
    if (i < 2) rotate64(want[i], hd, rc.rope_dims, pos, scale, factors);
  }
  const std::string what = "rope dims " + std::to_string(rc.rope_dims) + (rc.factors ? " with factors" : "") + (rc.split_v ? ", v apart" : "");
  EXPECT_LT(rel_err(g.download<float>(outs[0], rows[0]), want[0]), tol) << "q, " << what;
  EXPECT_LT(rel_err(g.download<float>(outs[1], rows[1]), want[1]), tol) << "k, " << what;
  EXPECT_LT(rel_err(g.download<float>(outs[2], rows[2]), want[2]), tol) << "v, " << what;
  const auto gk = g.download<__half>(kc, cache_elems), gv = g.download<__half>(vc, cache_elems);
  std::vector<float> got_k, got_v;
  for (int64_t i = 0; i < KVH * hd; ++i) {
    got_k.push_back(__half2float(gk[pos * KVH * hd + i]));
    got_v.push_back(__half2float(gv[pos * KVH * hd + i]));
    // Only the row at `pos` is written.
    ASSERT_EQ(__half2float(gk[(pos - 1) * KVH * hd + i]), 0.0f) << what;
    ASSERT_EQ(__half2float(gv[(pos + 1) * KVH * hd + i]), 0.0f) << what;
  }
  EXPECT_LT(rel_err(got_k, want[1]), 1e-3) << "k cache (f16), " << what;
  EXPECT_LT(rel_err(got_v, want[2]), 1e-3) << "v cache (f16), " << what;
}

// A residual product x += Wp a that emits the norm of the new x (norm_out), then a launch that
// reads it (norm_in): one matrix with a bias in store mode, or gate and up in swiglu mode with
// the quantized output. Against x, its norm and the products in float64.
void check_norm_handoff(Gpu& g, GgmlType tp, GgmlType tc, int rpw, MatvecKernel kernel, bool swiglu) {
  const int64_t d = kCols, rows_c = 512;
  const float eps = 1e-5f;
  // SwiGLU: a small norm weight keeps the gates where silu is not flat (random K-quant rows give
  // gates of -1,000 and below on unit inputs, whose outputs underflow).
  const auto a = random_floats(kCols, -2, 2), x0 = random_floats(d, -4, 4);
  const auto nw = swiglu ? random_floats(d, 0.005f, 0.02f) : random_floats(d, 0.5f, 1.5f);
  Input in = make_input(g, a);
  const auto hp = random_blocks(tp, d, kCols);
  auto wp = g.upload_weights(tp, kCols, hp);
  auto xd = g.upload(x0), nwd = g.upload(nw);
  auto nq = g.alloc.alloc(norm_partials_bytes(d), VramPurpose::workspace, "norm input");
  const NormPartials n = norm_partials_view(nq.get(), d);
  CUDA_CHECK(cudaMemset(n.ss, 0xFF, d / 32 * 4));  // NaN: every sum must be written
  MatvecTail out_tail;
  out_tail.norm_out = n, out_tail.norm_out.weight = nwd.as<float>();
  const MatvecJob producer{as_matrix(wp, tp, d, kCols), xd.as<float>()};
  launch_matvec_q8(std::span(&producer, 1), in.q, MatvecMode::accumulate, nullptr, nullptr, rpw, kernel, &out_tail);

  const int n_mats = swiglu ? 2 : 1;
  std::vector<std::vector<uint8_t>> hc;
  std::vector<DeviceBuffer> wc, outs;
  std::vector<MatvecJob> jobs;
  const auto bias = random_floats(rows_c);
  auto bd = g.upload(bias);
  auto hq_buf = g.alloc.alloc(q8act_bytes(rows_c), VramPurpose::workspace, "quantized output");
  const Q8Act hq = q8act_view(hq_buf.get(), rows_c);
  for (int m = 0; m < n_mats; ++m) {
    hc.push_back(random_blocks(tc, rows_c, d));
    wc.push_back(g.upload_weights(tc, d, hc[m]));
    outs.push_back(g.poisoned(rows_c));
    jobs.push_back({as_matrix(wc[m], tc, rows_c, d), outs[m].as<float>(), swiglu ? nullptr : bd.as<float>()});
  }
  MatvecTail in_tail;
  in_tail.norm_in = n, in_tail.norm_in.eps = eps;
  launch_matvec_q8(jobs, n.q, swiglu ? MatvecMode::swiglu : MatvecMode::store, nullptr, swiglu ? &hq : nullptr, 0,
                   MatvecKernel::automatic, &in_tail);

  std::vector<double> x64 = product64(tp, hp, d, kCols, a);
  double ss = 0;
  for (int64_t i = 0; i < d; ++i) x64[i] += x0[i], ss += x64[i] * x64[i];
  const double inv = 1.0 / std::sqrt(ss / d + eps);
  std::vector<float> xn(d);
  for (int64_t i = 0; i < d; ++i) xn[i] = static_cast<float>(x64[i] * inv * nw[i]);
  const std::vector<double> gate64 = product64(tc, hc[0], rows_c, d, xn);
  std::vector<double> want = gate64;
  if (swiglu) {
    const auto up = product64(tc, hc[1], rows_c, d, xn);
    for (int64_t r = 0; r < rows_c; ++r) want[r] = want[r] / (1.0 + std::exp(-want[r])) * up[r];
  } else {
    for (int64_t r = 0; r < rows_c; ++r) want[r] += bias[r];
  }
  const auto x = g.download<float>(xd, d);
  EXPECT_LT(rel_err(x, x64), 1e-4) << "the residual x";
  // The sums of squares and the quantized x∘w (no 1/rms) are those of the x written.
  const auto bytes = g.download<int8_t>(nq, norm_partials_bytes(d));
  for (int64_t b = 0; b < d / 32; ++b) {
    double want_ss = 0;
    for (int i = 0; i < 32; ++i) want_ss += static_cast<double>(x[32 * b + i]) * x[32 * b + i];
    float got_ss;
    std::memcpy(&got_ss, bytes.data() + q8act_bytes(d) + 4 * b, 4);
    ASSERT_NEAR(got_ss, want_ss, 1e-5 * want_ss) << "sum of squares of block " << b;
  }
  std::vector<float> xw(d);
  for (int64_t i = 0; i < d; ++i) xw[i] = x[i] * nw[i];
  expect_q8_holds(std::vector<int8_t>(bytes.begin(), bytes.begin() + q8act_bytes(d)), xw);
  const auto got = g.download<float>(outs[0], rows_c);
  EXPECT_LT(rel_err(got, want), 3e-4) << "the launch reading the norm";
  if (swiglu) {
    expect_q8_holds(g.download<int8_t>(hq_buf, q8act_bytes(rows_c)), got);  // the quantized output holds the same products
    // The gate alone, in store mode, from the same input.
    auto gate = g.poisoned(rows_c);
    const MatvecJob one{jobs[0].w, gate.as<float>()};
    launch_matvec_q8(std::span(&one, 1), n.q, MatvecMode::store, nullptr, nullptr, 0, MatvecKernel::automatic, &in_tail);
    EXPECT_LT(rel_err(g.download<float>(gate, rows_c), gate64), 3e-4) << "the gate alone";
  }
}

}  // namespace

// Two launches of 2,048-wide matrices; the second one's input has passed through two integer
// products' quantizations (each within 1e-4, see the mat-vec tests), hence 3e-4.
TEST(MatvecTailGpu, NormHandedFromTheResidualProductMatchesFloat64) {
  ORCD_REQUIRE_GPU();
  Gpu g;
  for (const auto& [tp, tc] : {std::pair{GgmlType::Q4_K, GgmlType::Q4_K}, std::pair{GgmlType::Q6_K, GgmlType::Q5_0},
                              std::pair{GgmlType::Q8_0, GgmlType::Q6_K}, std::pair{GgmlType::Q5_K, GgmlType::Q8_0}}) {
    SCOPED_TRACE(std::string(ggml_type_name(tp)) + " -> " + std::string(ggml_type_name(tc)));
    for (int rpw : {1, 2, 4})
      for (MatvecKernel k : {MatvecKernel::registers, MatvecKernel::bulk, MatvecKernel::span}) {
        SCOPED_TRACE("rows a warp " + std::to_string(rpw) + ", kernel " + std::to_string(static_cast<int>(k)));
        check_norm_handoff(g, tp, tc, rpw, k, false);
      }
    check_norm_handoff(g, tp, tc, 0, MatvecKernel::automatic, true);
  }
}

// Tolerances: the integer mat-vec's 1e-4 (F16: the float matmul's 1e-5) plus, for q and k, the
// float32 angle at position 1000 (~1e-4 absolute, as in the RoPE kernel's test).
TEST(MatvecTailGpu, RopeAndCacheStoreInTheEpilogueMatchFloat64) {
  ORCD_REQUIRE_GPU();
  Gpu g;
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::F16}) {
    SCOPED_TRACE(ggml_type_name(t));
    const bool f16 = t == GgmlType::F16;
    for (int rpw : {1, 2, 4}) {
      if (f16 && rpw == 4) continue;
      SCOPED_TRACE("rows a warp " + std::to_string(rpw));
      for (const RopeCase rc : {RopeCase{64, false, false}, RopeCase{32, true, false}, RopeCase{64, true, true}})
        check_rope_tail(g, t, rpw, MatvecKernel::registers, rc, f16 ? 2e-4 : 3e-4);
    }
    if (!f16) check_rope_tail(g, t, 4, MatvecKernel::bulk, RopeCase{64, false, false}, 3e-4);
    if (!f16) check_rope_tail(g, t, 2, MatvecKernel::span, RopeCase{64, true, false}, 3e-4);
  }
}

// q and k in one format and v in another (K-quant mixes), in one launch.
TEST(MatvecTailGpu, MixedFormatLaunchMatchesFloat64) {
  ORCD_REQUIRE_GPU();
  Gpu g;
  for (const auto& [t, tv] : {std::pair{GgmlType::Q4_K, GgmlType::Q6_K}, std::pair{GgmlType::Q5_0, GgmlType::Q8_0},
                             std::pair{GgmlType::Q4_0, GgmlType::Q8_0}, std::pair{GgmlType::Q5_K, GgmlType::Q6_K}}) {
    SCOPED_TRACE(std::string(ggml_type_name(t)) + " + " + std::string(ggml_type_name(tv)));
    for (int rpw : {1, 2, 4}) {
      SCOPED_TRACE("rows a warp " + std::to_string(rpw));
      check_rope_tail(g, t, rpw, MatvecKernel::registers, RopeCase{64, false, false}, 3e-4, tv);
      check_rope_tail(g, t, rpw, MatvecKernel::span, RopeCase{64, false, false}, 3e-4, tv);
    }
  }
}

// Host-side checks only: no device needed.
TEST(MatvecTail, RefusesLaunchesItCannotRunOn) {
  const QMatrix w{reinterpret_cast<const void*>(256), GgmlType::Q8_0, 64, 256, ggml_row_bytes(GgmlType::Q8_0, 256)};
  float out[3];
  const MatvecJob one{w, out};
  const MatvecJob three[3] = {{w, out}, {w, out + 1}, {w, out + 2}};
  int pos = 0;
  MatvecTail rope;
  rope.rope_q = out, rope.rope_k = out + 1, rope.rope_v = out + 2;
  rope.rope = {4, 2, 16, 16, 10000.0f, 1.0f, false, nullptr, &pos};
  rope.k_cache = reinterpret_cast<__half*>(out), rope.v_cache = reinterpret_cast<__half*>(out);
  EXPECT_NO_THROW(check_matvec_tail(three, MatvecMode::store, rope));
  EXPECT_THROW(check_matvec_tail(three, MatvecMode::accumulate, rope), std::invalid_argument);
  MatvecTail neox = rope;
  neox.rope.neox = true;
  EXPECT_THROW(check_matvec_tail(three, MatvecMode::store, neox), std::invalid_argument);
  MatvecTail no_pos = rope;
  no_pos.rope.pos_dev = nullptr;
  EXPECT_THROW(check_matvec_tail(three, MatvecMode::store, no_pos), std::invalid_argument);
  const MatvecJob odd{QMatrix{w.data, w.type, 63, w.cols, w.row_bytes}, out};
  EXPECT_THROW(check_matvec_tail(std::span(&odd, 1), MatvecMode::store, rope), std::invalid_argument);
  MatvecTail none;  // no tail: any mode
  EXPECT_NO_THROW(check_matvec_tail(std::span(&one, 1), MatvecMode::accumulate, none));

  // The norm handed from a residual product: one matrix of rows a multiple of 32, accumulate
  // mode, with somewhere to write; the reading launch's width must be the norm's.
  float ss[2];
  int8_t q[8];
  MatvecTail emit;
  emit.norm_out.weight = out, emit.norm_out.ss = ss, emit.norm_out.q = Q8Act{q, q, out, out};
  EXPECT_NO_THROW(check_matvec_tail(std::span(&one, 1), MatvecMode::accumulate, emit));
  EXPECT_THROW(check_matvec_tail(std::span(&one, 1), MatvecMode::store, emit), std::invalid_argument);
  EXPECT_THROW(check_matvec_tail(three, MatvecMode::accumulate, emit), std::invalid_argument);
  const MatvecJob rows48{QMatrix{w.data, w.type, 48, w.cols, w.row_bytes}, out};
  EXPECT_THROW(check_matvec_tail(std::span(&rows48, 1), MatvecMode::accumulate, emit), std::invalid_argument);
  MatvecTail no_ss = emit;
  no_ss.norm_out.ss = nullptr;
  EXPECT_THROW(check_matvec_tail(std::span(&one, 1), MatvecMode::accumulate, no_ss), std::invalid_argument);
  MatvecTail in;
  in.norm_in.ss = ss, in.norm_in.dim = 256, in.norm_in.eps = 1e-6f;
  EXPECT_NO_THROW(check_matvec_tail(three, MatvecMode::store, in));
  in.norm_in.dim = 128;
  EXPECT_THROW(check_matvec_tail(three, MatvecMode::store, in), std::invalid_argument);
}

// Which launches may mix formats (host side: no device needed).
TEST(MatvecMix, OnlyAStoreRunOfAMainFormatThenAMoreBitsOne) {
  auto m = [](GgmlType t, int64_t cols) { return QMatrix{reinterpret_cast<const void*>(256), t, 64, cols, ggml_row_bytes(t, cols), device_layout(t, cols)}; };
  float out[3];
  const MatvecJob qkv[3] = {{m(GgmlType::Q4_K, 2048), out}, {m(GgmlType::Q4_K, 2048), out + 1}, {m(GgmlType::Q6_K, 2048), out + 2}};
  EXPECT_TRUE(matvec_q8_can_mix(qkv, MatvecMode::store));
  EXPECT_FALSE(matvec_q8_can_mix(qkv, MatvecMode::accumulate));
  const MatvecJob same[2] = {{m(GgmlType::Q4_K, 2048), out}, {m(GgmlType::Q4_K, 2048), out + 1}};
  EXPECT_FALSE(matvec_q8_can_mix(same, MatvecMode::store));  // one format: not a mix
  const MatvecJob reversed[2] = {{m(GgmlType::Q6_K, 2048), out}, {m(GgmlType::Q4_K, 2048), out + 1}};
  EXPECT_FALSE(matvec_q8_can_mix(reversed, MatvecMode::store));
  const MatvecJob back_and_forth[3] = {{m(GgmlType::Q5_0, 896), out}, {m(GgmlType::Q8_0, 896), out + 1}, {m(GgmlType::Q5_0, 896), out + 2}};
  EXPECT_FALSE(matvec_q8_can_mix(back_and_forth, MatvecMode::store));
  const MatvecJob widths[2] = {{m(GgmlType::Q4_K, 2048), out}, {m(GgmlType::Q6_K, 4096), out + 1}};
  EXPECT_FALSE(matvec_q8_can_mix(widths, MatvecMode::store));
  const Q8Act x{};
  EXPECT_THROW(launch_matvec_q8(reversed, x, MatvecMode::store, nullptr), std::invalid_argument);
  EXPECT_THROW(launch_matvec_q8(qkv, x, MatvecMode::store, nullptr, nullptr, 0, MatvecKernel::bulk), std::invalid_argument);
}
