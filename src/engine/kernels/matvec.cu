// Decode-time matrix-vector products with integer dot products (dp4a). The activation vector is
// quantized once per token (Q8Act: two int8 planes per 32-element block, about 15 bits), the
// weights stay in their GGML blocks, and each warp walks one row with several lanes per block,
// summing exact integers per sub-block before one float multiply with the scales. Up to three
// matrices of one type and width (q/k/v, or gate/up) share a launch.
#include "common/cuda_check.h"
#include "engine/kernels/common.cuh"
#include "engine/kernels/kernels.h"
#include "engine/kernels/launch.cuh"
#include "engine/kernels/q8act.cuh"
#include "engine/kernels/quant.cuh"

namespace orcd {
namespace {

using kern::kWarp;
constexpr int kRowsPerBlock = 4;

// 32 bits from a 2-byte-aligned address (most GGML blocks have odd sizes in 4-byte units).
__device__ __forceinline__ int ld_i32_a2(const uint8_t* p) {
  const auto* h = reinterpret_cast<const uint16_t*>(p);
  return static_cast<int>(static_cast<uint32_t>(h[0]) | (static_cast<uint32_t>(h[1]) << 16));
}
__device__ __forceinline__ int ld_i32(const int8_t* p) { return *reinterpret_cast<const int*>(p); }

// Bits 0..3 of b moved to bit 4 of bytes 0..3 (the fifth bit of four 5-bit quants).
__device__ __forceinline__ int spread4(uint32_t b) { return static_cast<int>(((b * 0x00204081u) & 0x01010101u) << 4); }

// Integer sums of four signed bytes of weights times both activation planes.
struct Acc {
  int hi = 0, lo = 0;
  __device__ __forceinline__ void add(int q, const int8_t* h, const int8_t* l) {
    hi = __dp4a(q, ld_i32(h), hi);
    lo = __dp4a(q, ld_i32(l), lo);
  }
  __device__ __forceinline__ float value() const { return static_cast<float>(kern::kLoScale * hi + lo); }
};

// Each format: kElems per block, kBytes per block, kLanes cooperating on one block, and the
// lane's share of the dot product. xh/xl/xs point at the block's first activation / scale.
struct MvQ8_0 {
  static constexpr int kElems = 32, kBytes = 34, kLanes = 4;
  __device__ static float dot(const uint8_t* b, int u, const int8_t* xh, const int8_t* xl, const float* xs) {
    Acc a;
    a.add(ld_i32_a2(b + 2 + 8 * u), xh + 8 * u, xl + 8 * u);
    a.add(ld_i32_a2(b + 6 + 8 * u), xh + 8 * u + 4, xl + 8 * u + 4);
    return kern::ld_half(b) * xs[0] * a.value();
  }
};

struct MvQ4_0 {
  static constexpr int kElems = 32, kBytes = 18, kLanes = 4;
  __device__ static float dot(const uint8_t* b, int u, const int8_t* xh, const int8_t* xl, const float* xs) {
    const int q = ld_i32_a2(b + 2 + 4 * u);
    Acc a;
    a.add(__vsub4(q & 0x0F0F0F0F, 0x08080808), xh + 4 * u, xl + 4 * u);
    a.add(__vsub4((q >> 4) & 0x0F0F0F0F, 0x08080808), xh + 16 + 4 * u, xl + 16 + 4 * u);
    return kern::ld_half(b) * xs[0] * a.value();
  }
};

struct MvQ5_0 {
  static constexpr int kElems = 32, kBytes = 22, kLanes = 4;
  __device__ static float dot(const uint8_t* b, int u, const int8_t* xh, const int8_t* xl, const float* xs) {
    const auto qh = static_cast<uint32_t>(ld_i32_a2(b + 2));
    const int q = ld_i32_a2(b + 6 + 4 * u);
    Acc a;
    a.add(__vsub4((q & 0x0F0F0F0F) | spread4((qh >> (4 * u)) & 0xF), 0x10101010), xh + 4 * u, xl + 4 * u);
    a.add(__vsub4(((q >> 4) & 0x0F0F0F0F) | spread4((qh >> (16 + 4 * u)) & 0xF), 0x10101010), xh + 16 + 4 * u, xl + 16 + 4 * u);
    return kern::ld_half(b) * xs[0] * a.value();
  }
};

// Q4_K / Q5_K: lane u takes 16 bytes of quants of the pair of sub-blocks (2p, 2p+1), p = u / 2:
// their elements l0..l0+15 in the low nibbles (2p) and the high nibbles (2p+1).
template <bool kFive>
struct MvQK {
  static constexpr int kElems = 256, kBytes = kFive ? 176 : 144, kLanes = 8;
  __device__ static float dot(const uint8_t* b, int u, const int8_t* xh, const int8_t* xl, const float* xs) {
    const int p = u >> 1, l0 = 16 * (u & 1);
    const uint4 qv = *reinterpret_cast<const uint4*>(b + (kFive ? 48 : 16) + 32 * p + l0);
    const int qs[4] = {static_cast<int>(qv.x), static_cast<int>(qv.y), static_cast<int>(qv.z), static_cast<int>(qv.w)};
    int hs[4] = {};
    if constexpr (kFive) {
      const uint4 hv = *reinterpret_cast<const uint4*>(b + 16 + l0);
      hs[0] = static_cast<int>(hv.x), hs[1] = static_cast<int>(hv.y), hs[2] = static_cast<int>(hv.z), hs[3] = static_cast<int>(hv.w);
    }
    // This lane's activations: 16 bytes per plane for each of the two sub-blocks.
    const int4 hav = *reinterpret_cast<const int4*>(xh + 64 * p + l0), lav = *reinterpret_cast<const int4*>(xl + 64 * p + l0);
    const int4 hbv = *reinterpret_cast<const int4*>(xh + 64 * p + 32 + l0), lbv = *reinterpret_cast<const int4*>(xl + 64 * p + 32 + l0);
    const int ha[4] = {hav.x, hav.y, hav.z, hav.w}, la[4] = {lav.x, lav.y, lav.z, lav.w};
    const int hb[4] = {hbv.x, hbv.y, hbv.z, hbv.w}, lb[4] = {lbv.x, lbv.y, lbv.z, lbv.w};
    int qa_hi = 0, qa_lo = 0, qb_hi = 0, qb_lo = 0, sa_hi = 0, sa_lo = 0, sb_hi = 0, sb_lo = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      int lo = qs[i] & 0x0F0F0F0F, hi = (qs[i] >> 4) & 0x0F0F0F0F;
      if constexpr (kFive) {
        lo |= ((hs[i] >> (2 * p)) & 0x01010101) << 4;
        hi |= ((hs[i] >> (2 * p + 1)) & 0x01010101) << 4;
      }
      qa_hi = __dp4a(lo, ha[i], qa_hi), qa_lo = __dp4a(lo, la[i], qa_lo);
      qb_hi = __dp4a(hi, hb[i], qb_hi), qb_lo = __dp4a(hi, lb[i], qb_lo);
      sa_hi = __dp4a(0x01010101, ha[i], sa_hi), sa_lo = __dp4a(0x01010101, la[i], sa_lo);
      sb_hi = __dp4a(0x01010101, hb[i], sb_hi), sb_lo = __dp4a(0x01010101, lb[i], sb_lo);
    }
    const auto v = [](int h, int l) { return static_cast<float>(kern::kLoScale * h + l); };
    // Scales and mins: the 12 bytes as three words, d and dmin as one.
    const uint32_t* w32 = reinterpret_cast<const uint32_t*>(b);
    const uint32_t dm = w32[0], s0 = w32[1], s1 = w32[2], s2 = w32[3];
    const auto byte = [](uint32_t word, int k) { return static_cast<int>((word >> (8 * k)) & 0xFF); };
    const uint32_t sc_lo = s0, mn_lo = s1, hi_bits = s2;  // bytes 0-3: scales 0-3, 4-7: mins 0-3, 8-11: high parts
    int sca, mna, scb, mnb;
    const auto scale_min = [&](int sb, int& sc, int& mn) {
      if (sb < 4) {
        sc = byte(sc_lo, sb) & 63;
        mn = byte(mn_lo, sb) & 63;
      } else {
        sc = (byte(hi_bits, sb - 4) & 0xF) | ((byte(sc_lo, sb - 4) >> 6) << 4);
        mn = (byte(hi_bits, sb - 4) >> 4) | ((byte(mn_lo, sb - 4) >> 6) << 4);
      }
    };
    scale_min(2 * p, sca, mna);
    scale_min(2 * p + 1, scb, mnb);
    const float2 dd = __half22float2(*reinterpret_cast<const __half2*>(&dm));
    return xs[2 * p] * (dd.x * sca * v(qa_hi, qa_lo) - dd.y * mna * v(sa_hi, sa_lo)) +
           xs[2 * p + 1] * (dd.x * scb * v(qb_hi, qb_lo) - dd.y * mnb * v(sb_hi, sb_lo));
  }
};

// Q6_K: lane u takes half h = u / 8 and positions l0..l0+3 (l0 = 4 (u % 8)) of its four
// 32-element groups k, whose low nibbles sit in two ql words and high bit pairs in one qh word.
struct MvQ6_K {
  static constexpr int kElems = 256, kBytes = 210, kLanes = 16;
  __device__ static float dot(const uint8_t* b, int u, const int8_t* xh, const int8_t* xl, const float* xs) {
    const int h = u >> 3, l0 = 4 * (u & 7);
    const int qa = ld_i32_a2(b + 64 * h + l0), qb = ld_i32_a2(b + 64 * h + 32 + l0), qh = ld_i32_a2(b + 128 + 32 * h + l0);
    const auto* sc = reinterpret_cast<const int8_t*>(b + 192 + 8 * h + (l0 >= 16 ? 1 : 0));
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int nib = ((k & 1 ? qb : qa) >> (k >= 2 ? 4 : 0)) & 0x0F0F0F0F;
      const int q = __vsub4(nib | (((qh >> (2 * k)) & 0x03030303) << 4), 0x20202020);
      Acc a;
      const int off = 128 * h + 32 * k + l0;
      a.add(q, xh + off, xl + off);
      sum += static_cast<float>(sc[2 * k]) * xs[4 * h + k] * a.value();
    }
    return kern::ld_half(b + 208) * sum;
  }
};

struct MvJob {
  const uint8_t* w;
  size_t row_bytes;
  int rows;
  float* out;
  const float* bias;
};
struct MvJobs {
  MvJob job[3];
  int n;
};

// kWarps warps per block, each on kRowsPerWarp consecutive rows (their loads in flight
// together). In swiglu mode with `hq` set, the block's 32 rows are also quantized for the next
// product.
template <class T, MatvecMode kMode, int kWarps, int kRowsPerWarp>
__global__ void __launch_bounds__(kWarp* kWarps, kWarps >= 16 ? 2 : 1) matvec_q8_kernel(MvJobs jobs, const int8_t* __restrict__ xh, const int8_t* __restrict__ xl,
                                                                  const float* __restrict__ xs, int cols, Q8Act hq) {
  constexpr int kBlockRows = kWarps * kRowsPerWarp;
  static_assert(kRowsPerWarp == 1 || kMode == MatvecMode::swiglu, "several rows a warp only within one matrix");
  const int r0 = blockIdx.x * kBlockRows;
  int r = r0 + threadIdx.y * kRowsPerWarp;  // first row of this warp
  MvJob J = jobs.job[0];  // constant indices only: a dynamic one would copy the parameters to the stack
  if constexpr (kMode != MatvecMode::swiglu) {
    if (r >= J.rows && jobs.n > 1) {
      r -= J.rows;
      J = jobs.job[1];
      if (r >= J.rows && jobs.n > 2) {
        r -= J.rows;
        J = jobs.job[2];
      }
    }
  }
  const int lane = threadIdx.x, u = lane % T::kLanes;
  // Weights do not depend on earlier kernels: start pulling the rows into L2 before waiting.
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i)
    if (r + i < J.rows)
      for (size_t off = lane * 128; off < J.row_bytes; off += kWarp * 128)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(J.w + static_cast<size_t>(r + i) * J.row_bytes + off));
  kern::wait_for_producer();
  if (kBlockRows != 32 && r >= J.rows) return;
  constexpr int kStep = kWarp / T::kLanes;
  const int nb = cols / T::kElems;
  float acc[kRowsPerWarp] = {}, acc2[kRowsPerWarp] = {};
  auto step = [&](int b) {
    const int e = b * T::kElems;
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      if (r + i >= J.rows) break;
      const size_t off = static_cast<size_t>(r + i) * J.row_bytes + static_cast<size_t>(b) * T::kBytes;
      acc[i] += T::dot(J.w + off, u, xh + e, xl + e, xs + e / 32);
      if constexpr (kMode == MatvecMode::swiglu) acc2[i] += T::dot(jobs.job[1].w + off, u, xh + e, xl + e, xs + e / 32);
    }
  };
  // Two blocks per lane per iteration: their loads are in flight together (nothing is stored in
  // the loop, so the compiler may hoist them).
  int b = lane / T::kLanes;
  for (; b + kStep < nb; b += 2 * kStep) {
    step(b);
    step(b + kStep);
  }
  if (b < nb) step(b);
  kern::allow_consumer();
  __shared__ float outs[kBlockRows];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    float a = kern::warp_sum(acc[i]);
    if (r + i >= J.rows) continue;
    float result;
    if (J.bias) a += J.bias[r + i];
    if constexpr (kMode == MatvecMode::accumulate) {
      result = J.out[r + i] + a;
    } else if constexpr (kMode == MatvecMode::swiglu) {
      const float a2 = kern::warp_sum(acc2[i]);
      result = a / (1.0f + expf(-a)) * a2;
    } else {
      result = a;
    }
    if (lane == 0) J.out[r + i] = result, outs[threadIdx.y * kRowsPerWarp + i] = result;
  }
  if constexpr (kBlockRows == 32) {
    if (hq.hi) {  // rows % 32 == 0 here, so every row of the block is live
      __syncthreads();
      if (threadIdx.y == 0) kern::quantize_lane(outs[lane], r0 + lane, hq);
    }
  }
}

__global__ void quantize_act_kernel(const float* __restrict__ x, int64_t n, Q8Act q) {
  kern::wait_for_producer();
  kern::allow_consumer();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) kern::quantize_lane(x[i], i, q);  // n % 32 == 0: whole warps stay together
}

// RMSNorm of one row, written as floats and quantized. One block of 1024 threads keeps the row
// in registers (up to kNormPer elements a thread), so x and the weight are read in one round.
constexpr int kNormThreads = 1024, kNormPer = 8;
__global__ void __launch_bounds__(kNormThreads) rmsnorm_quant_kernel(const float* __restrict__ x, const float* __restrict__ w,
                                                                     float* __restrict__ out, Q8Act q, int dim, float eps) {
  __shared__ float scratch[32];
  kern::wait_for_producer();
  kern::allow_consumer();
  float xv[kNormPer], wv[kNormPer];
  float ss = 0.0f;
#pragma unroll
  for (int k = 0; k < kNormPer; ++k) {
    const int i = threadIdx.x + k * kNormThreads;
    xv[k] = i < dim ? x[i] : 0.0f;
    wv[k] = i < dim ? w[i] : 0.0f;
    ss += xv[k] * xv[k];
  }
  ss = kern::block_sum(ss, scratch);
  const float inv = rsqrtf(ss / dim + eps);
#pragma unroll
  for (int k = 0; k < kNormPer; ++k) {
    const int i = threadIdx.x + k * kNormThreads;  // dim % 32 == 0: whole warps stay together
    if (i < dim) {
      const float v = xv[k] * inv * wv[k];
      out[i] = v;
      kern::quantize_lane(v, i, q);
    }
  }
}

template <typename F>
bool dispatch_q8(GgmlType t, F&& f) {
  switch (t) {
    case GgmlType::Q8_0: f.template operator()<MvQ8_0>(); return true;
    case GgmlType::Q4_0: f.template operator()<MvQ4_0>(); return true;
    case GgmlType::Q5_0: f.template operator()<MvQ5_0>(); return true;
    case GgmlType::Q4_K: f.template operator()<MvQK<false>>(); return true;
    case GgmlType::Q5_K: f.template operator()<MvQK<true>>(); return true;
    case GgmlType::Q6_K: f.template operator()<MvQ6_K>(); return true;
    default: return false;
  }
}

}  // namespace

bool matvec_q8_supports(const QMatrix& w) {
  int elems = 0;
  bool aligned16 = false;
  dispatch_q8(w.type, [&]<class T>() {
    elems = T::kElems;
    aligned16 = T::kBytes % 16 == 0;
  });
  if (elems == 0 || w.cols % elems != 0 || w.rows > (1 << 30)) return false;
  // The K-quant lanes read their quants with 16-byte loads.
  return !aligned16 || (reinterpret_cast<uintptr_t>(w.data) % 16 == 0 && w.row_bytes % 16 == 0);
}

size_t q8act_bytes(int64_t n) { return static_cast<size_t>(n) * 2 + static_cast<size_t>(n / 32) * 4; }

Q8Act q8act_view(void* base, int64_t n) {
  auto* p = static_cast<int8_t*>(base);
  return {p, p + n, reinterpret_cast<float*>(p + 2 * n)};
}

void launch_quantize_act(const float* x, int64_t n, const Q8Act& q, cudaStream_t stream) {
  if (n % 32 != 0) throw std::invalid_argument("quantize_act: length " + std::to_string(n) + " is not a multiple of 32");
  kern::launch_pdl(quantize_act_kernel, kern::ceil_div(n, 256), 256, 0, stream, x, n, q);
}

bool launch_rmsnorm_quant(const float* x, const float* weight, float* out, const Q8Act& q, int dim, float eps, cudaStream_t stream) {
  if (dim % 32 != 0 || dim > kNormThreads * kNormPer) {  // no whole 32-blocks, or too long for one block's registers
    launch_rmsnorm(x, weight, out, 1, dim, eps, stream);
    return false;
  }
  kern::launch_pdl(rmsnorm_quant_kernel, 1, kNormThreads, 0, stream, x, weight, out, q, dim, eps);
  return true;
}

void launch_matvec_q8(std::span<const MatvecJob> jobs, const Q8Act& x, MatvecMode mode, cudaStream_t stream, const Q8Act* out_q) {
  if (jobs.empty() || jobs.size() > 3) throw std::invalid_argument("matvec_q8: 1 to 3 matrices per launch");
  if (mode == MatvecMode::swiglu && (jobs.size() != 2 || jobs[0].w.rows != jobs[1].w.rows))
    throw std::invalid_argument("matvec_q8: swiglu takes a gate and an up matrix of equal rows");
  if (out_q && (mode != MatvecMode::swiglu || jobs[0].w.rows % 32 != 0))
    throw std::invalid_argument("matvec_q8: quantized output only for swiglu with rows a multiple of 32");
  MvJobs p{};
  int64_t rows = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    const QMatrix& w = jobs[i].w;
    if (w.type != jobs[0].w.type || w.cols != jobs[0].w.cols || !matvec_q8_supports(w))
      throw std::invalid_argument("matvec_q8: matrices of one launch must share a supported type and width");
    p.job[i] = {static_cast<const uint8_t*>(w.data), w.row_bytes, static_cast<int>(w.rows), jobs[i].out, jobs[i].bias};
    rows += w.rows;
  }
  p.n = static_cast<int>(jobs.size());
  if (mode == MatvecMode::swiglu) rows = jobs[0].w.rows;
  const int cols = static_cast<int>(jobs[0].w.cols);
  const Q8Act hq = out_q ? *out_q : Q8Act{nullptr, nullptr, nullptr};
  dispatch_q8(jobs[0].w.type, [&]<class T>() {
    auto run = [&]<MatvecMode kMode, int kWarps, int kRowsPerWarp>() {
      kern::launch_pdl(matvec_q8_kernel<T, kMode, kWarps, kRowsPerWarp>, kern::ceil_div(rows, kWarps * kRowsPerWarp), dim3(kWarp, kWarps), 0,
                       stream, p, x.hi, x.lo, x.scale, cols, hq);
    };
    if (mode == MatvecMode::store) run.template operator()<MatvecMode::store, kRowsPerBlock, 1>();
    else if (mode == MatvecMode::accumulate) run.template operator()<MatvecMode::accumulate, kRowsPerBlock, 1>();
    else if (out_q) run.template operator()<MatvecMode::swiglu, 16, 2>();  // 32 rows a block, quantized together
    else run.template operator()<MatvecMode::swiglu, kRowsPerBlock, 1>();
  });
}

}  // namespace orcd
