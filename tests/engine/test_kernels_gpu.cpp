// Every kernel against a float64 (or bit-exact) CPU reference on random inputs, at sizes that
// are not multiples of the block: odd row counts, odd token counts, odd head counts.
#include <cuda_fp16.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <set>
#include <algorithm>

#include "engine/kernel_testing.h"
#include "engine/kernels/sampling.h"
#include "gpu.h"

using namespace orcd;
using namespace orcd::kt;

namespace {
const GgmlType kTypes[] = {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1,
                           GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};
}  // namespace

TEST(KernelsGpu, DequantizeIsBitExactForEveryType) {
  ORCD_REQUIRE_GPU();
  Gpu g;
  for (GgmlType t : kTypes)
   for (const int64_t cols : {768, 2048}) {  // 2048: Q6_K in its grouped device layout
    const int64_t rows = 5;
    const auto host = random_blocks(t, rows, cols);
    auto w = g.upload_weights(t, cols, host);
    auto out = g.poisoned(rows * cols);
    launch_dequantize(as_matrix(w, t, rows, cols), out.as<float>(), nullptr);
    const auto got = g.download<float>(out, rows * cols);
    const auto want = ref::dequantize(t, host.data(), rows * cols);
    int mismatches = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      if (std::memcmp(&got[i], &want[i], 4) != 0 && ++mismatches < 4) {
        ADD_FAILURE() << ggml_type_name(t) << " element " << i << ": gpu " << got[i] << " ref " << want[i];
      }
    }
    EXPECT_EQ(mismatches, 0) << ggml_type_name(t);
  }
}

namespace {
// launch_matmul on random weights of `t` and random activations, against float64.
double matmul_error(Gpu& g, GgmlType t, int64_t rows, int64_t cols, int n_tokens) {
  const auto host = random_blocks(t, rows, cols);
  const auto x = random_floats(n_tokens * cols);
  auto w = g.upload_weights(t, cols, host);
  auto xd = g.upload(x);
  auto out = g.poisoned(n_tokens * rows);
  launch_matmul(as_matrix(w, t, rows, cols), xd.as<float>(), n_tokens, out.as<float>(), nullptr);
  const auto got = g.download<float>(out, n_tokens * rows);
  const auto wf = ref::dequantize(t, host.data(), rows * cols);
  std::vector<double> want(n_tokens * rows);
  for (int tk = 0; tk < n_tokens; ++tk)
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0;
      for (int64_t i = 0; i < cols; ++i) s += static_cast<double>(wf[r * cols + i]) * x[tk * cols + i];
      want[tk * rows + r] = s;
    }
  return rel_err(got, want);
}
}  // namespace

TEST(KernelsGpu, MatmulMatchesFloat64) {
  ORCD_REQUIRE_GPU();
  Gpu g;
  for (GgmlType t : kTypes)
    for (int n_tokens : {1, 5, 13}) EXPECT_LT(matmul_error(g, t, 37, 768, n_tokens), 1e-5) << ggml_type_name(t) << " n_tokens " << n_tokens;
  EXPECT_LT(matmul_error(g, GgmlType::Q6_K, 37, 2048, 5), 1e-5) << "Q6_K grouped";
}

TEST(KernelsGpu, MatmulRowsNotAMultipleOfEightUseTheElementPath) {
  ORCD_REQUIRE_GPU();
  Gpu g;
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16}) EXPECT_LT(matmul_error(g, t, 9, 771, 3), 1e-5) << ggml_type_name(t);
}

// The three modes of a decode mat-vec against float64 within `tol`, through `launch`: three
// matrices in one launch with a bias on the second (with one row a warp, rows not a multiple of
// the block), accumulate onto random contents, and SwiGLU of two matrices of equal rows.
using MatvecLaunch = std::function<void(std::span<const MatvecJob>, MatvecMode)>;
void check_matvec_modes(Gpu& g, GgmlType t, const std::vector<float>& x, int rpw, double tol, const MatvecLaunch& launch) {
  const auto cols = static_cast<int64_t>(x.size());
  const int64_t rows[3] = {rpw == 1 ? 37 : 44, rpw == 1 ? 11 : 12, rpw == 1 ? 5 : 8};
  std::vector<std::vector<uint8_t>> host;
  std::vector<DeviceBuffer> wd, outs;
  for (int64_t r : rows) {
    host.push_back(random_blocks(t, r, cols));
    wd.push_back(g.upload_weights(t, cols, host.back()));
    outs.push_back(g.poisoned(r));
  }
  const auto bias = random_floats(rows[1]);
  auto bd = g.upload(bias);
  std::vector<MatvecJob> jobs;
  for (int i = 0; i < 3; ++i) jobs.push_back({as_matrix(wd[i], t, rows[i], cols), outs[i].as<float>(), i == 1 ? bd.as<float>() : nullptr});
  launch(jobs, MatvecMode::store);
  for (int i = 0; i < 3; ++i) {
    auto want = product64(t, host[i], rows[i], cols, x);
    if (i == 1)
      for (int64_t r = 0; r < rows[1]; ++r) want[r] += bias[r];
    EXPECT_LT(rel_err(g.download<float>(outs[i], rows[i]), want), tol) << "store, matrix " << i;
  }
  const auto base = random_floats(rows[0], -5, 5);
  auto acc = g.upload(base);
  const MatvecJob one{as_matrix(wd[0], t, rows[0], cols), acc.as<float>()};
  launch(std::span(&one, 1), MatvecMode::accumulate);
  auto want = product64(t, host[0], rows[0], cols, x);
  for (int64_t r = 0; r < rows[0]; ++r) want[r] += base[r];
  EXPECT_LT(rel_err(g.download<float>(acc, rows[0]), want), tol) << "accumulate";
  const auto up_host = random_blocks(t, rows[0], cols);
  auto up = g.upload_weights(t, cols, up_host);
  auto h = g.poisoned(rows[0]);
  const MatvecJob pair[2] = {{as_matrix(wd[0], t, rows[0], cols), h.as<float>()}, {as_matrix(up, t, rows[0], cols), nullptr}};
  launch(pair, MatvecMode::swiglu);
  const auto gate = product64(t, host[0], rows[0], cols, x), upv = product64(t, up_host, rows[0], cols, x);
  std::vector<double> sw(rows[0]);
  for (int64_t r = 0; r < rows[0]; ++r) sw[r] = gate[r] / (1 + std::exp(-gate[r])) * upv[r];
  EXPECT_LT(rel_err(g.download<float>(h, rows[0]), sw), tol) << "swiglu";
}

void check_integer_matvec(int64_t cols, MatvecKernel kernel);

// The activation format keeps about 15 bits: with x uniform in [-3, 3] the rounding error is
// about 1.6e-5 of x's rms, so the integer mat-vec is held to 1e-4 relative error against float64
// (a 5-row product fluctuates around that mean; the float matmul's bar is 1e-5).
// Three widths, so that both kernels run for every type: rows that split into whole bulk-copy
// chunks take the shared-memory kernel (8192: several rounds of its ring of stages), the others
// the register kernel with partial unrolled steps (896 for the 32-element types, 2816 = 11
// blocks for the K-quants; 2816 is whole chunks for the 32-element types).
TEST(KernelsGpu, IntegerMatvecMatchesFloat64InEveryMode) {
  ORCD_REQUIRE_GPU();
  for (int64_t cols : {896, 2816, 8192}) {
    SCOPED_TRACE("cols " + std::to_string(cols));
    check_integer_matvec(cols, MatvecKernel::registers);
  }
}

// The shared-memory kernel on the widths whose rows split into its chunks; 8192 does for every
// type (the kernel is otherwise kept for launches over 16 MB, too large for this test).
TEST(KernelsGpu, BulkCopyMatvecMatchesFloat64InEveryMode) {
  ORCD_REQUIRE_GPU();
  int cc = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&cc, cudaDevAttrComputeCapabilityMajor, 0), cudaSuccess);
  if (cc < 9) GTEST_SKIP() << "bulk copies need compute capability 9.0";
  SCOPED_TRACE("cols 8192");
  check_integer_matvec(8192, MatvecKernel::bulk);
}

// The span kernel (each warp's rows copied whole into shared memory) on the widths of the
// register kernel's test; Q6_K's 11-block rows (2,310 bytes) are not 8-byte aligned for it.
TEST(KernelsGpu, SpanMatvecMatchesFloat64InEveryMode) {
  ORCD_REQUIRE_GPU();
  for (int64_t cols : {896, 2816}) {
    SCOPED_TRACE("cols " + std::to_string(cols));
    check_integer_matvec(cols, MatvecKernel::span);
  }
}

void check_integer_matvec(int64_t cols, MatvecKernel kernel) {
  Gpu g;
  const auto x = random_floats(cols, -3, 3);
  auto xd = g.upload(x);
  auto qbuf = g.alloc.alloc(q8act_bytes(cols), VramPurpose::workspace, "q8 activations");
  const Q8Act xq = q8act_view(qbuf.get(), cols);
  launch_quantize_act(xd.as<float>(), cols, xq, nullptr);
  for (GgmlType t : kQ8Types) {
    if (cols % ggml_traits(t).block_size != 0) continue;
    SCOPED_TRACE(ggml_type_name(t));
    if (kernel == MatvecKernel::span && ggml_row_bytes(t, cols) % 8 != 0) {
      auto w = g.upload_weights(t, cols, random_blocks(t, 4, cols));
      auto out = g.poisoned(4);
      const MatvecJob j{as_matrix(w, t, 4, cols), out.as<float>()};
      EXPECT_THROW(launch_matvec_q8(std::span(&j, 1), xq, MatvecMode::store, nullptr, nullptr, 1, kernel), std::invalid_argument);
      continue;
    }
    for (int rpw : {1, 2, 4}) {
      SCOPED_TRACE("rows a warp " + std::to_string(rpw));
      check_matvec_modes(g, t, x, rpw, 1e-4, [&](std::span<const MatvecJob> jobs, MatvecMode mode) {
        ASSERT_TRUE(matvec_q8_supports(jobs[0].w));
        launch_matvec_q8(jobs, xq, mode, nullptr, nullptr, rpw, kernel);
      });
    }
    // SwiGLU that also quantizes its 64 outputs for the next product.
    const int64_t R = 64;
    const auto g_host = random_blocks(t, R, cols), u_host = random_blocks(t, R, cols);
    auto gd = g.upload_weights(t, cols, g_host), ud = g.upload_weights(t, cols, u_host);
    auto h64 = g.poisoned(R);
    auto hq_buf = g.alloc.alloc(q8act_bytes(R), VramPurpose::workspace, "q8 out");
    const Q8Act hq = q8act_view(hq_buf.get(), R);
    const MatvecJob pair64[2] = {{as_matrix(gd, t, R, cols), h64.as<float>()}, {as_matrix(ud, t, R, cols), nullptr}};
    if (kernel == MatvecKernel::bulk && t == GgmlType::Q6_K) {  // 32 rows of Q6_K chunks exceed shared memory
      EXPECT_THROW(launch_matvec_q8(pair64, xq, MatvecMode::swiglu, nullptr, &hq, 0, kernel), std::invalid_argument);
      continue;
    }
    const auto g64 = product64(t, g_host, R, cols, x), u64 = product64(t, u_host, R, cols, x);
    std::vector<double> sw64(R);
    for (int64_t r = 0; r < R; ++r) sw64[r] = g64[r] / (1 + std::exp(-g64[r])) * u64[r];
    for (int rpw : {0, 2, 4}) {  // 0: the launch picks 16 warps of 2 rows or 8 of 4
      SCOPED_TRACE("quantized output, rows a warp " + std::to_string(rpw));
      ASSERT_EQ(cudaMemset(h64.get(), 0xFF, R * sizeof(float)), cudaSuccess);  // NaN: unwritten outputs fail
      ASSERT_EQ(cudaMemset(hq_buf.get(), 0xFF, q8act_bytes(R)), cudaSuccess);
      launch_matvec_q8(pair64, xq, MatvecMode::swiglu, nullptr, &hq, rpw, kernel);
      const auto got64 = g.download<float>(h64, R);
      EXPECT_LT(rel_err(got64, sw64), 1e-4) << "swiglu with quantized output";
      expect_q8_holds(g.download<int8_t>(hq_buf, q8act_bytes(R)), got64);
    }
    EXPECT_THROW(launch_matvec_q8(pair64, xq, MatvecMode::swiglu, nullptr, &hq, 1, kernel), std::invalid_argument);
  }
}

// The F16 mat-vec works on float activations, so it is held to the float matmul's 1e-5. 1000
// columns leave a partial step at the end of every row.
TEST(KernelsGpu, F16MatvecMatchesFloat64InEveryMode) {
  ORCD_REQUIRE_GPU();
  Gpu g;
  const GgmlType t = GgmlType::F16;
  const int64_t cols = 1000;
  const auto x = random_floats(cols, -3, 3);
  auto xd = g.upload(x);
  for (int rpw : {1, 2}) {
    SCOPED_TRACE("rows a warp " + std::to_string(rpw));
    check_matvec_modes(g, t, x, rpw, 1e-5, [&](std::span<const MatvecJob> jobs, MatvecMode mode) {
      ASSERT_TRUE(matvec_f16_supports(jobs[0].w));
      launch_matvec_f16(jobs, xd.as<float>(), mode, nullptr, rpw);
    });
  }
  // Odd rows cannot take two a warp.
  auto w = g.upload(random_blocks(t, 5, cols));
  auto out = g.poisoned(5);
  const MatvecJob odd{as_matrix(w, t, 5, cols), out.as<float>()};
  EXPECT_THROW(launch_matvec_f16(std::span(&odd, 1), xd.as<float>(), MatvecMode::store, nullptr, 2), std::invalid_argument);
}

TEST(KernelsGpu, ActivationQuantizationKeepsFifteenBits) {
  ORCD_REQUIRE_GPU();
  Gpu g;
  const int dim = 896;
  auto x = random_floats(dim, -4, 4);
  x[5] = 0.0f;
  for (int i = 64; i < 96; ++i) x[i] = 0.0f;  // an all-zero block must quantize to zeros, not NaN
  const auto w = random_floats(dim, 0.5f, 1.5f);
  auto xd = g.upload(x), wd = g.upload(w);
  auto out = g.poisoned(dim);
  auto qbuf = g.alloc.alloc(q8act_bytes(dim), VramPurpose::workspace, "q8 activations");
  const Q8Act q = q8act_view(qbuf.get(), dim);
  ASSERT_TRUE(launch_rmsnorm_quant(xd.as<float>(), wd.as<float>(), out.as<float>(), q, dim, 1e-5f, nullptr));
  const auto got = g.download<float>(out, dim);
  const auto bytes = g.download<int8_t>(qbuf, q8act_bytes(dim));
  double ss = 0;
  for (float v : x) ss += static_cast<double>(v) * v;
  const double inv = 1 / std::sqrt(ss / dim + 1e-5);
  std::vector<double> want(dim);
  for (int i = 0; i < dim; ++i) want[i] = x[i] * inv * w[i];
  EXPECT_LT(rel_err(got, want), 1e-6);
  expect_q8_holds(bytes, got);  // the quantized copy is of exactly these floats
  // Without a quantization buffer (the next launch reads floats): the floats alone, the same.
  auto out_only = g.poisoned(dim);
  EXPECT_FALSE(launch_rmsnorm_quant(xd.as<float>(), wd.as<float>(), out_only.as<float>(), Q8Act{}, dim, 1e-5f, nullptr));
  EXPECT_EQ(g.download<float>(out_only, dim), got);
}

TEST(KernelsGpu, DequantizeToHalfMatchesReference) {
  ORCD_REQUIRE_GPU();
  Gpu g;
  for (GgmlType t : kTypes)
   for (const int64_t cols : {512, 2048}) {  // 2048: Q6_K in its grouped device layout
    const int64_t rows = 5;
    const auto host = random_blocks(t, rows, cols);
    auto w = g.upload_weights(t, cols, host);
    auto out = g.alloc.alloc(rows * cols * 2, VramPurpose::workspace, "f16 out");
    launch_dequantize_f16(as_matrix(w, t, rows, cols), out.as<__half>(), nullptr);
    const auto got = g.download<__half>(out, rows * cols);
    const auto want = ref::dequantize(t, host.data(), rows * cols);
    for (int64_t i = 0; i < rows * cols; ++i)
      ASSERT_EQ(__half2float(got[i]), __half2float(__float2half(want[i]))) << ggml_type_name(t) << " element " << i;
  }
}

TEST(KernelsGpu, GetRowsMatchesReference) {
  ORCD_REQUIRE_GPU();
  Gpu g;
  // Q6_K rows of 2048 sit grouped (a tied Q6_K embedding of the 1B shape).
  for (const auto& [t, cols] : {std::pair{GgmlType::Q4_K, int64_t{512}}, std::pair{GgmlType::Q6_K, int64_t{2048}}}) {
    const int64_t rows = 50;
    const auto host = random_blocks(t, rows, cols);
    const std::vector<int32_t> ids = {49, 0, 7, 7, 31};
    auto w = g.upload_weights(t, cols, host);
    auto idd = g.upload(ids);
    auto out = g.poisoned(ids.size() * cols);
    launch_get_rows(as_matrix(w, t, rows, cols), idd.as<int32_t>(), static_cast<int>(ids.size()), out.as<float>(), nullptr);
    const auto got = g.download<float>(out, ids.size() * cols);
    const auto all = ref::dequantize(t, host.data(), rows * cols);
    for (size_t k = 0; k < ids.size(); ++k)
      for (int64_t i = 0; i < cols; ++i) ASSERT_EQ(got[k * cols + i], all[ids[k] * cols + i]) << ggml_type_name(t);
  }
}

TEST(KernelsGpu, RmsNormSwigluAddMatchFloat64) {
  ORCD_REQUIRE_GPU();
  Gpu g;
  const int rows = 7, dim = 901;
  const auto x = random_floats(rows * dim, -3, 3), w = random_floats(dim), y = random_floats(rows * dim);
  auto xd = g.upload(x), wd = g.upload(w), yd = g.upload(y);
  auto out = g.poisoned(rows * dim);
  launch_rmsnorm(xd.as<float>(), wd.as<float>(), out.as<float>(), rows, dim, 1e-6f, nullptr);
  auto got = g.download<float>(out, rows * dim);
  std::vector<double> want(rows * dim);
  for (int r = 0; r < rows; ++r) {
    double ss = 0;
    for (int i = 0; i < dim; ++i) ss += static_cast<double>(x[r * dim + i]) * x[r * dim + i];
    const double inv = 1.0 / std::sqrt(ss / dim + 1e-6);
    for (int i = 0; i < dim; ++i) want[r * dim + i] = x[r * dim + i] * inv * w[i];
  }
  EXPECT_LT(rel_err(got, want), 1e-6);
  // The f16 outputs (tensor-core prefill) hold the same values to f16's rounding (2^-11).
  auto as_floats = [&](const DeviceBuffer& b) {
    std::vector<float> f;
    for (__half h : g.download<__half>(b, rows * dim)) f.push_back(__half2float(h));
    return f;
  };
  auto out16 = g.poisoned(rows * dim);
  launch_rmsnorm(xd.as<float>(), wd.as<float>(), out16.as<__half>(), rows, dim, 1e-6f, nullptr);
  EXPECT_LT(rel_err(as_floats(out16), want), 5e-4) << "f16 output";

  auto sw = g.poisoned(rows * dim);
  launch_swiglu(xd.as<float>(), yd.as<float>(), sw.as<float>(), rows * dim, nullptr);
  got = g.download<float>(sw, rows * dim);
  for (int i = 0; i < rows * dim; ++i) want[i] = x[i] / (1.0 + std::exp(-static_cast<double>(x[i]))) * y[i];
  EXPECT_LT(rel_err(got, want), 1e-6);
  auto sw16 = g.poisoned(rows * dim);
  launch_swiglu(xd.as<float>(), yd.as<float>(), sw16.as<__half>(), rows * dim, nullptr);
  EXPECT_LT(rel_err(as_floats(sw16), want), 5e-4) << "f16 output";

  launch_add(xd.as<float>(), yd.as<float>(), rows * dim, nullptr);
  got = g.download<float>(xd, rows * dim);
  for (int i = 0; i < rows * dim; ++i) want[i] = static_cast<double>(x[i]) + y[i];
  EXPECT_LT(rel_err(got, want), 1e-7);
}

TEST(KernelsGpu, RopeAndCacheStoreMatchFloat64) {
  ORCD_REQUIRE_GPU();
  for (bool neox : {false, true}) {
    Gpu g;
    const int H = 7, KVH = 1, hd = 64, n = 5, start = 1000, ctx = 1010;
    const auto q = random_floats(n * H * hd), k = random_floats(n * KVH * hd), v = random_floats(n * KVH * hd);
    auto qd = g.upload(q), kd = g.upload(k), vd = g.upload(v);
    auto kc = g.alloc.alloc(ctx * KVH * hd * 2, VramPurpose::kv_cache, "k"), vc = g.alloc.alloc(ctx * KVH * hd * 2, VramPurpose::kv_cache, "v");
    const RopeParams p{H, KVH, hd, hd, 10000.0f, 1.0f, neox, nullptr};
    launch_rope_store_kv(qd.as<float>(), kd.as<float>(), vd.as<float>(), kc.as<__half>(), vc.as<__half>(), n, start, p, nullptr);
    const auto gq = g.download<float>(qd, q.size());
    const auto gk = g.download<__half>(kc, ctx * KVH * hd);
    const auto gv = g.download<__half>(vc, ctx * KVH * hd);
    auto rotate = [&](std::vector<double>& head, int pos) {
      for (int i = 0; i < hd / 2; ++i) {
        const double th = pos * std::pow(10000.0, -2.0 * i / hd);
        const int a = neox ? i : 2 * i, b = neox ? i + hd / 2 : 2 * i + 1;
        const double x0 = head[a], x1 = head[b];
        head[a] = x0 * std::cos(th) - x1 * std::sin(th);
        head[b] = x0 * std::sin(th) + x1 * std::cos(th);
      }
    };
    std::vector<double> wq, wk;
    std::vector<float> gotk, gotv;
    std::vector<double> wantv;
    for (int t = 0; t < n; ++t) {
      for (int h = 0; h < H; ++h) {
        std::vector<double> head(q.begin() + (t * H + h) * hd, q.begin() + (t * H + h + 1) * hd);
        rotate(head, start + t);
        wq.insert(wq.end(), head.begin(), head.end());
      }
      std::vector<double> head(k.begin() + t * hd, k.begin() + (t + 1) * hd);
      rotate(head, start + t);
      wk.insert(wk.end(), head.begin(), head.end());
      for (int i = 0; i < hd; ++i) {
        gotk.push_back(__half2float(gk[(start + t) * hd + i]));
        gotv.push_back(__half2float(gv[(start + t) * hd + i]));
        wantv.push_back(v[t * hd + i]);
      }
    }
    // float32 angles at position ~1000 carry ~1e-4 absolute error.
    EXPECT_LT(rel_err(gq, wq), 2e-4) << "neox " << neox;
    EXPECT_LT(rel_err(gotk, wk), 1e-3) << "neox " << neox;  // f16 cache
    EXPECT_LT(rel_err(gotv, wantv), 1e-3) << "neox " << neox;
  }
}

TEST(KernelsGpu, AttentionMatchesFloat64) {
  ORCD_REQUIRE_GPU();
  struct Case { int H, KVH, hd, start, n, ctx; };
  // Prefill from 0, a prefill chunk mid-sequence, decode at depth (many splits, some past the
  // length), odd dims, decode with splits of every length class: 32 positions (four lanes a
  // position), 64 (two, at 3000 of 3100) and 160 (one, at 9000 of 9100); 128- and 256-dim
  // decode heads merge in blocks of 64 dims. Splits of several rounds a warp (the next round
  // loaded during the current one), ending in a partial round: 64 positions of 128-dim heads
  // (at 2500 and 3000), 96 of 64-dim heads (at 5000).
  for (const Case cs : {Case{6, 2, 64, 0, 37, 64}, Case{6, 2, 64, 300, 20, 400}, Case{14, 2, 64, 1500, 1, 1600},
                        Case{3, 3, 80, 0, 9, 16}, Case{8, 1, 128, 4000, 2, 4096}, Case{32, 8, 128, 700, 1, 1024},
                        Case{32, 8, 128, 3000, 1, 3100}, Case{16, 8, 64, 3000, 1, 3100}, Case{8, 8, 64, 9000, 1, 9100},
                        Case{16, 2, 256, 2000, 1, 2100}, Case{32, 8, 128, 2500, 1, 2600}, Case{16, 8, 64, 5000, 1, 5100}}) {
   for (const bool on_device : {false, true}) {  // position from the host, or read on the device (graph replays)
    Gpu g;
    const int kv_dim = cs.KVH * cs.hd;
    std::vector<__half> kh(cs.ctx * kv_dim), vh(cs.ctx * kv_dim);
    for (auto& x : kh) x = __float2half(uniform(-1, 1));
    for (auto& x : vh) x = __float2half(uniform(-1, 1));
    const auto q = random_floats(cs.n * cs.H * cs.hd, -2, 2);
    auto kd = g.upload(kh), vd = g.upload(vh), qd = g.upload(q);
    auto out = g.poisoned(cs.n * cs.H * cs.hd);
    auto scratch = g.poisoned(attention_scratch_floats(cs.n, cs.H, cs.hd, cs.ctx));
    AttentionParams p{cs.H, cs.KVH, cs.hd, cs.start, cs.n};
    auto pos = g.upload(std::vector<int32_t>{cs.start});
    if (on_device) p.start_pos = 0, p.pos_dev = pos.as<int32_t>(), p.max_ctx = cs.ctx;
    auto aq_buf = g.alloc.alloc(q8act_bytes(cs.H * cs.hd), VramPurpose::workspace, "q8 out");
    const Q8Act aq = q8act_view(aq_buf.get(), cs.H * cs.hd);
    const bool quantized = cs.n == 1 && cs.hd % 32 == 0;  // decode: the output is also quantized for the next product
    EXPECT_EQ(launch_attention(qd.as<float>(), kd.as<__half>(), vd.as<__half>(), out.as<float>(), scratch.as<float>(), p, nullptr, &aq),
              quantized);
    const auto got = g.download<float>(out, cs.n * cs.H * cs.hd);
    if (quantized) expect_q8_holds(g.download<int8_t>(aq_buf, q8act_bytes(cs.H * cs.hd)), got);
    std::vector<double> want;
    for (int t = 0; t < cs.n; ++t)
      for (int h = 0; h < cs.H; ++h) {
        const int kvh = h / (cs.H / cs.KVH), n_kv = cs.start + t + 1;
        std::vector<double> s(n_kv);
        double mx = -1e300, sum = 0;
        for (int j = 0; j < n_kv; ++j) {
          double d = 0;
          for (int i = 0; i < cs.hd; ++i) d += q[(t * cs.H + h) * cs.hd + i] * static_cast<double>(__half2float(kh[j * kv_dim + kvh * cs.hd + i]));
          s[j] = d / std::sqrt(static_cast<double>(cs.hd));
          mx = std::max(mx, s[j]);
        }
        for (auto& e : s) sum += (e = std::exp(e - mx));
        for (int i = 0; i < cs.hd; ++i) {
          double acc = 0;
          for (int j = 0; j < n_kv; ++j) acc += s[j] * __half2float(vh[j * kv_dim + kvh * cs.hd + i]);
          want.push_back(acc / sum);
        }
      }
    EXPECT_LT(rel_err(got, want), 1e-5) << "H " << cs.H << " start " << cs.start << " n " << cs.n << " device position " << on_device;
   }
  }
}

namespace {
int32_t sample_once(Gpu& g, const std::vector<float>& logits, const SamplingParams& p, uint64_t step,
                    const std::vector<int32_t>& history = {}) {
  auto ld = g.upload(logits);
  auto out = g.alloc.alloc(sample_buffer_bytes(), VramPurpose::workspace, "token");
  CUDA_CHECK(cudaMemset(out.get(), 0, sample_buffer_bytes()));
  if (!history.empty()) {
    auto hd = g.upload(history);
    launch_repetition_penalty(ld.as<float>(), hd.as<int32_t>(), static_cast<int>(history.size()), p.repetition_penalty, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
  }
  launch_sample(ld.as<float>(), static_cast<int>(logits.size()), p, step, out.as<int32_t>(), nullptr);
  return g.download<int32_t>(out, 1)[0];
}
}  // namespace

TEST(SamplingGpu, GreedyPicksTheLowestIdAmongMaxima) {
  ORCD_REQUIRE_GPU();
  Gpu g;
  auto logits = random_floats(151936, -5, 5);
  logits[123457] = 9.0f;
  SamplingParams p;
  p.temperature = 0;
  EXPECT_EQ(sample_once(g, logits, p, 0), 123457);
  logits[99] = 9.0f;
  EXPECT_EQ(sample_once(g, logits, p, 0), 99);
  logits[97] = 9.0f;  // a tie inside one 16-byte load, and the row's last element above all
  EXPECT_EQ(sample_once(g, logits, p, 0), 97);
  logits.back() = 9.5f;
  EXPECT_EQ(sample_once(g, logits, p, 0), static_cast<int32_t>(logits.size()) - 1);
  // A vocabulary that is not a multiple of four takes the element-wise path.
  auto odd = random_floats(32001, -5, 5);
  odd[32000] = 7.0f;
  EXPECT_EQ(sample_once(g, odd, p, 0), 32000);
  odd[31998] = 7.0f;
  EXPECT_EQ(sample_once(g, odd, p, 0), 31998);
}

// The greedy pick runs over many blocks whose last one to finish picks among their results and
// resets the count for the next launch: one buffer serves every launch here, over widths from
// a single element to past the largest grid, each against the host's first maximum. Both
// paths also write the next decode step's inputs when asked.
TEST(SamplingGpu, GreedyOverManyBlocksMatchesTheHostAndWritesTheNextStep) {
  ORCD_REQUIRE_GPU();
  Gpu g;
  auto buf = g.alloc.alloc(sample_buffer_bytes(), VramPurpose::workspace, "sample buffer");
  CUDA_CHECK(cudaMemset(buf.get(), 0, sample_buffer_bytes()));
  auto step = g.alloc.alloc(8, VramPurpose::workspace, "step");
  SamplingParams greedy;
  greedy.temperature = 0;
  int n_checked = 0;
  for (int vocab : {1, 3, 100, 2049, 32001, 151936, 700003}) {
    for (int rep = 0; rep < 3; ++rep) {
      auto logits = random_floats(vocab, -5, 5);
      if (rep == 1 && vocab > 10) logits[vocab / 3] = logits[vocab - 2] = 6.0f;  // a tie across blocks
      if (rep == 2) logits[vocab - 1] = 7.0f;
      const int32_t want = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      auto ld = g.upload(logits);
      const int32_t pos = 1000 + n_checked;
      launch_sample(ld.as<float>(), vocab, greedy, 0, buf.as<int32_t>(), nullptr, step.as<int32_t>(), pos);
      const auto got_step = g.download<int32_t>(step, 2);
      ASSERT_EQ(g.download<int32_t>(buf, 1)[0], want) << "vocab " << vocab << " rep " << rep;
      EXPECT_EQ(got_step[0], want);
      EXPECT_EQ(got_step[1], pos);
      ++n_checked;
    }
  }
  // The sampled path writes the step too: one candidate left by top-k 1.
  auto logits = random_floats(5000, -5, 5);
  logits[4321] = 9.0f;
  auto ld = g.upload(logits);
  SamplingParams p;
  p.temperature = 1, p.top_k = 1;
  launch_sample(ld.as<float>(), 5000, p, 7, buf.as<int32_t>(), nullptr, step.as<int32_t>(), 77);
  const auto got_step = g.download<int32_t>(step, 2);
  EXPECT_EQ(g.download<int32_t>(buf, 1)[0], 4321);
  EXPECT_EQ(got_step[0], 4321);
  EXPECT_EQ(got_step[1], 77);
}

TEST(SamplingGpu, SeededDrawsAreReproducibleAndFollowTheDistribution) {
  ORCD_REQUIRE_GPU();
  Gpu g;
  // Probabilities 0.5, 0.25, 0.125, 0.125 on ids 10..13; everything else negligible.
  std::vector<float> logits(32000, -100.0f);
  const float base = uniform(-1, 1);
  logits[10] = base + std::log(4.0f);
  logits[11] = base + std::log(2.0f);
  logits[12] = base;
  logits[13] = base;
  SamplingParams p;
  p.temperature = 1;
  p.top_k = 0;
  p.top_p = 1;
  p.min_p = 0;
  p.seed = 42;
  std::vector<int> counts(4, 0);
  const int n = 2000;
  for (int s = 0; s < n; ++s) {
    const int32_t a = sample_once(g, logits, p, s);
    ASSERT_GE(a, 10);
    ASSERT_LE(a, 13);
    ++counts[a - 10];
    if (s < 20) {
      EXPECT_EQ(sample_once(g, logits, p, s), a) << "same seed and step must give the same token";
    }
  }
  const double want[] = {0.5, 0.25, 0.125, 0.125};
  for (int k = 0; k < 4; ++k) EXPECT_NEAR(counts[k] / static_cast<double>(n), want[k], 0.04) << "id " << 10 + k;
  // Another seed gives another sequence.
  p.seed = 43;
  int differ = 0;
  SamplingParams p42 = p;
  p42.seed = 42;
  for (int s = 0; s < 50; ++s) differ += sample_once(g, logits, p, s) != sample_once(g, logits, p42, s);
  EXPECT_GT(differ, 5);
}

TEST(SamplingGpu, TopKTopPMinPRestrictTheCandidates) {
  ORCD_REQUIRE_GPU();
  Gpu g;
  auto logits = random_floats(50000, -3, 3);
  std::vector<std::pair<float, int>> order;
  for (int i = 0; i < 50000; ++i) order.push_back({logits[i], i});
  std::sort(order.rbegin(), order.rend());
  SamplingParams p;
  p.temperature = 1.5f;
  p.top_k = 5;
  p.top_p = 1;
  p.min_p = 0;
  std::set<int32_t> seen;
  for (int s = 0; s < 300; ++s) seen.insert(sample_once(g, logits, p, s));
  std::set<int32_t> top5;
  for (int k = 0; k < 5; ++k) top5.insert(order[k].second);
  EXPECT_TRUE(std::includes(top5.begin(), top5.end(), seen.begin(), seen.end()));
  EXPECT_GE(seen.size(), 3u);

  // top-p: p(a) = 0.6, p(b) = 0.3, the rest share 0.1.
  std::vector<float> l2(1000, 0.0f);
  const double rest = 0.1 / 998;
  l2[500] = static_cast<float>(std::log(0.6 / rest));
  l2[7] = static_cast<float>(std::log(0.3 / rest));
  p = SamplingParams{};
  p.temperature = 1;
  p.top_k = 0;
  p.min_p = 0;
  p.top_p = 0.5f;
  for (int s = 0; s < 50; ++s) ASSERT_EQ(sample_once(g, l2, p, s), 500);
  p.top_p = 0.85f;
  seen.clear();
  for (int s = 0; s < 200; ++s) seen.insert(sample_once(g, l2, p, s));
  EXPECT_EQ(seen, (std::set<int32_t>{7, 500}));
  // min-p 0.4 of the top probability keeps only ids with p >= 0.24: id 500 and id 7.
  p.top_p = 1;
  p.min_p = 0.4f;
  seen.clear();
  for (int s = 0; s < 200; ++s) seen.insert(sample_once(g, l2, p, s));
  EXPECT_EQ(seen, (std::set<int32_t>{7, 500}));
}

TEST(SamplingGpu, RepetitionPenaltyDemotesSeenTokensOnce) {
  ORCD_REQUIRE_GPU();
  Gpu g;
  std::vector<float> logits = random_floats(1000, -1, 1);
  logits[7] = 2.0f;
  logits[8] = 1.5f;
  SamplingParams p;
  p.temperature = 0;
  p.repetition_penalty = 1.5f;
  // Applied once despite the repeat: 2.0 / 1.5 = 1.33 < 1.5. Applied twice it would be 0.89.
  EXPECT_EQ(sample_once(g, logits, p, 0, {7, 7, 7}), 8);
  logits[8] = 1.3f;
  EXPECT_EQ(sample_once(g, logits, p, 0, {7, 7}), 7);
}
