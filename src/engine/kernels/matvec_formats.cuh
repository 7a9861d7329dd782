// How the integer mat-vec reads each GGML block format (matvec.cu's kernels take one as a
// template parameter): which lanes share a block, what a lane loads (fetch: weights, load:
// activations) and its share of the block's dot product with dp4a.
#pragma once
#include <cstdint>

#include "engine/kernels/common.cuh"
#include "engine/kernels/kernels.h"
#include "engine/kernels/q8act.cuh"
#include "engine/kernels/quant.cuh"

namespace orcd::mv {

// 32 bits from a 2-byte-aligned address (most GGML blocks have odd sizes in 4-byte units).
__device__ __forceinline__ int ld_i32_a2(const uint8_t* p) {
  const auto* h = reinterpret_cast<const uint16_t*>(p);
  return static_cast<int>(static_cast<uint32_t>(h[0]) | (static_cast<uint32_t>(h[1]) << 16));
}
__device__ __forceinline__ int ld_i32(const int8_t* p) { return *reinterpret_cast<const int*>(p); }

// dp4a of unsigned bytes (a) with signed ones (b).
__device__ __forceinline__ int dp4a_us(int a, int b, int c) {
  int d;
  asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}

// Bits 0..3 of b moved to bit 4 of bytes 0..3 (the fifth bit of four 5-bit quants).
__device__ __forceinline__ int spread4(uint32_t b) { return static_cast<int>(((b * 0x00204081u) & 0x01010101u) << 4); }

// The activations' part of one lane's share of a block: loaded once per block and used for
// every row the warp computes (x points at the block's first element, scale/sum entries).
struct XBlock {
  const int8_t* hi;
  const int8_t* lo;
  const float* scale;
  const float* sum;
};

__device__ __forceinline__ float combine(int hi, int lo) { return static_cast<float>(kern::kLoScale * hi + lo); }

// Each format: kElems per block, kBytes per block, kLanes cooperating on one block, kFetches
// blocks' weights a lane keeps in flight (as many as the 128 registers allow); a lane's
// share of a block's weights (W, from fetch: loads only, so that the kernel can put many in
// flight before using any), of the activations (Act, from load) and of one row's dot product.
struct MvQ8_0 {
  static constexpr int kElems = 32, kBytes = 34, kLanes = 4, kFetches = 4;
  struct W { int q0, q1; float d; };
  struct Act { int h[2], l[2]; float s; };
  __device__ static W fetch(const uint8_t* b, int u) { return {ld_i32_a2(b + 2 + 8 * u), ld_i32_a2(b + 6 + 8 * u), kern::ld_half(b)}; }
  __device__ static Act load(XBlock x, int u) {
    return {{ld_i32(x.hi + 8 * u), ld_i32(x.hi + 8 * u + 4)}, {ld_i32(x.lo + 8 * u), ld_i32(x.lo + 8 * u + 4)}, x.scale[0]};
  }
  __device__ static float dot(const W& w, int, const Act& a) {
    const int hi = __dp4a(w.q1, a.h[1], __dp4a(w.q0, a.h[0], 0)), lo = __dp4a(w.q1, a.l[1], __dp4a(w.q0, a.l[0], 0));
    return w.d * a.s * combine(hi, lo);
  }
};

// Q4_0 / Q5_0: lane u takes elements 4u..4u+3 (low nibbles) and 16+4u.. (high nibbles). The
// quants go into dp4a unsigned (0..15, 0..31), and their offset (8 or 16) comes off afterwards
// as that times the activations' block sum, a quarter in each of the block's four lanes: exact
// integers in a float (under 2^24), with fewer instructions than subtracting it bytewise.
struct ActLowHigh {
  int h[2], l[2];
  float s, sum;
};
__device__ __forceinline__ ActLowHigh load_low_high(XBlock x, int u) {
  return {{ld_i32(x.hi + 4 * u), ld_i32(x.hi + 16 + 4 * u)}, {ld_i32(x.lo + 4 * u), ld_i32(x.lo + 16 + 4 * u)}, x.scale[0], x.sum[0]};
}
template <int kOffset>
__device__ __forceinline__ float dot_low_high(float d, int q_low, int q_high, const ActLowHigh& a) {
  const int hi = __dp4a(q_high, a.h[1], __dp4a(q_low, a.h[0], 0)), lo = __dp4a(q_high, a.l[1], __dp4a(q_low, a.l[0], 0));
  return d * a.s * fmaf(-0.25f * kOffset, a.sum, combine(hi, lo));
}

struct MvQ4_0 {
  static constexpr int kElems = 32, kBytes = 18, kLanes = 4, kFetches = 4;
  struct W { int q; float d; };
  using Act = ActLowHigh;
  __device__ static W fetch(const uint8_t* b, int u) { return {ld_i32_a2(b + 2 + 4 * u), kern::ld_half(b)}; }
  __device__ static Act load(XBlock x, int u) { return load_low_high(x, u); }
  __device__ static float dot(const W& w, int, const Act& a) { return dot_low_high<8>(w.d, w.q & 0x0F0F0F0F, (w.q >> 4) & 0x0F0F0F0F, a); }
};

struct MvQ5_0 {
  static constexpr int kElems = 32, kBytes = 22, kLanes = 4, kFetches = 4;
  struct W { uint32_t qh; int q; float d; };
  using Act = ActLowHigh;
  __device__ static W fetch(const uint8_t* b, int u) {
    return {static_cast<uint32_t>(ld_i32_a2(b + 2)), ld_i32_a2(b + 6 + 4 * u), kern::ld_half(b)};
  }
  __device__ static Act load(XBlock x, int u) { return load_low_high(x, u); }
  __device__ static float dot(const W& w, int u, const Act& a) {
    return dot_low_high<16>(w.d, (w.q & 0x0F0F0F0F) | spread4((w.qh >> (4 * u)) & 0xF),
                            ((w.q >> 4) & 0x0F0F0F0F) | spread4((w.qh >> (16 + 4 * u)) & 0xF), a);
  }
};

// Q4_K / Q5_K: lane u takes sub-block u whole (its 32 quants are the low or high nibbles of
// the 32 bytes of pair u / 2), so each lane decodes one scale and one min per block and owns
// its min term; the activations' block sums stand in for the min's dot product. Q4_K's odd
// lanes leave their nibbles in place (16 times the quant, unsigned) and take 1/16 in the scale.
template <bool kFive>
struct MvQK {
  static constexpr int kElems = 256, kBytes = kFive ? 176 : 144, kLanes = 8, kFetches = kFive ? 2 : 4;
  struct W { uint4 head, q0, q1, h0, h1; };  // h0, h1: the fifth bits (Q5_K only)
  struct Act { int4 h0, h1, l0, l1; float s, smin; };
  __device__ static W fetch(const uint8_t* b, int u) {
    const uint8_t* q = b + (kFive ? 48 : 16) + 32 * (u >> 1);
    W w;
    w.head = *reinterpret_cast<const uint4*>(b);  // d, dmin, then 12 bytes of 6-bit scales and mins
    w.q0 = *reinterpret_cast<const uint4*>(q), w.q1 = *reinterpret_cast<const uint4*>(q + 16);
    if constexpr (kFive) w.h0 = *reinterpret_cast<const uint4*>(b + 16), w.h1 = *reinterpret_cast<const uint4*>(b + 32);
    return w;
  }
  __device__ static Act load(XBlock x, int u) {
    const float s = x.scale[u];
    return {*reinterpret_cast<const int4*>(x.hi + 32 * u), *reinterpret_cast<const int4*>(x.hi + 32 * u + 16),
            *reinterpret_cast<const int4*>(x.lo + 32 * u), *reinterpret_cast<const int4*>(x.lo + 32 * u + 16),
            kFive || !(u & 1) ? s : s * 0.0625f, s * x.sum[u]};
  }
  __device__ static float dot(const W& w, int u, const Act& a) {
    const int qs[8] = {static_cast<int>(w.q0.x), static_cast<int>(w.q0.y), static_cast<int>(w.q0.z), static_cast<int>(w.q0.w),
                       static_cast<int>(w.q1.x), static_cast<int>(w.q1.y), static_cast<int>(w.q1.z), static_cast<int>(w.q1.w)};
    const int hs[8] = {static_cast<int>(w.h0.x), static_cast<int>(w.h0.y), static_cast<int>(w.h0.z), static_cast<int>(w.h0.w),
                       static_cast<int>(w.h1.x), static_cast<int>(w.h1.y), static_cast<int>(w.h1.z), static_cast<int>(w.h1.w)};
    const int ha[8] = {a.h0.x, a.h0.y, a.h0.z, a.h0.w, a.h1.x, a.h1.y, a.h1.z, a.h1.w};
    const int la[8] = {a.l0.x, a.l0.y, a.l0.z, a.l0.w, a.l1.x, a.l1.y, a.l1.z, a.l1.w};
    int hi = 0, lo = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      if constexpr (kFive) {
        const int q = ((qs[i] >> (4 * (u & 1))) & 0x0F0F0F0F) | (((hs[i] >> u) & 0x01010101) << 4);
        hi = __dp4a(q, ha[i], hi), lo = __dp4a(q, la[i], lo);
      } else {
        const int q = qs[i] & (u & 1 ? 0xF0F0F0F0 : 0x0F0F0F0F);
        hi = dp4a_us(q, ha[i], hi), lo = dp4a_us(q, la[i], lo);
      }
    }
    // Scale and min of sub-block u: the first four are the low 6 bits of bytes u of header words
    // 1 (scales) and 2 (mins); the last four take 4 bits from byte u - 4 of word 3 (scales low,
    // mins high) and 2 from the top of bytes u - 4 of words 1 and 2. One expression for both
    // halves, with shifts and masks fixed per lane.
    const bool late = u >= 4;
    const int sh = 8 * (u & 3), sh_top = sh + (late ? 2 : 0);
    const uint32_t low_mask = late ? 0x0F : 0, top_mask = late ? 0x30 : 0x3F;
    const uint32_t sc = ((w.head.w >> sh) & low_mask) | ((w.head.y >> sh_top) & top_mask);
    const uint32_t mn = ((w.head.w >> (sh + 4)) & low_mask) | ((w.head.z >> sh_top) & top_mask);
    const float2 dd = __half22float2(*reinterpret_cast<const __half2*>(&w.head.x));
    return dd.x * static_cast<float>(sc) * (a.s * combine(hi, lo)) - dd.y * static_cast<float>(mn) * a.smin;
  }
};

// Q6_K: lane u takes half h = u / 8 and positions l0..l0+3 (l0 = 4 (u % 8)) of its four
// 32-element groups k, whose low nibbles sit in two ql words and high bit pairs in one qh word.
struct MvQ6_K {
  static constexpr int kElems = 256, kBytes = 210, kLanes = 16, kFetches = 8;
  struct W { int qa, qb, qh; int8_t sc[4]; float d; };
  struct Act { int h[4], l[4]; float s[4]; };
  __device__ static W fetch(const uint8_t* b, int u) {
    const int h = u >> 3, l0 = 4 * (u & 7);
    const auto* sc = reinterpret_cast<const int8_t*>(b + 192 + 8 * h + (l0 >= 16 ? 1 : 0));
    return {ld_i32_a2(b + 64 * h + l0), ld_i32_a2(b + 64 * h + 32 + l0), ld_i32_a2(b + 128 + 32 * h + l0), {sc[0], sc[2], sc[4], sc[6]},
            kern::ld_half(b + 208)};
  }
  __device__ static Act load(XBlock x, int u) {
    const int h = u >> 3, l0 = 4 * (u & 7);
    Act a;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int off = 128 * h + 32 * k + l0;
      a.h[k] = ld_i32(x.hi + off), a.l[k] = ld_i32(x.lo + off), a.s[k] = x.scale[4 * h + k];
    }
    return a;
  }
  __device__ static float dot(const W& w, int, const Act& a) {
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int nib = ((k & 1 ? w.qb : w.qa) >> (k >= 2 ? 4 : 0)) & 0x0F0F0F0F;
      const int q = __vsub4(nib | (((w.qh >> (2 * k)) & 0x03030303) << 4), 0x20202020);
      sum += static_cast<float>(w.sc[k]) * a.s[k] * combine(__dp4a(q, a.h[k], 0), __dp4a(q, a.l[k], 0));
    }
    return w.d * sum;
  }
};

// Q6_K in the grouped device layout (weight_layout.h), where every part of a block is 16-byte
// aligned: lane u takes half h = u / 2 and positions l0..l0+15 (l0 = 16 (u % 2)) of the half's
// four 32-element groups k, whose low nibbles sit in 16 bytes of ql (k = 0, 2: the first 32
// bytes; 1, 3: the next), high bit pairs in 16 bytes of qh, and scale in scales[8h + 2k + u % 2].
struct MvQ6_K8 {
  static constexpr int kElems = 256, kBytes = 210, kLanes = 4, kFetches = 4, kGroup = kQ6kGroupBlocks;
  struct W { uint4 qa, qb, qh; uint2 sc; float d; };
  struct Act { int4 h[4], l[4]; float4 s; };
  __device__ static W fetch(const uint8_t* row, int n, int u) {  // block n of the row
    const kern::Q6kBlock blk = kern::q6_k_block<true>(row, n);
    const uint8_t* b = blk.b;
    const int h = u >> 1, l0 = 16 * (u & 1);
    return {*reinterpret_cast<const uint4*>(b + 64 * h + l0), *reinterpret_cast<const uint4*>(b + 64 * h + 32 + l0),
            *reinterpret_cast<const uint4*>(b + 128 + 32 * h + l0), *reinterpret_cast<const uint2*>(b + 192 + 8 * h),
            kern::ld_half(blk.d)};
  }
  __device__ static Act load(XBlock x, int u) {
    const int h = u >> 1, l0 = 16 * (u & 1);
    Act a;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      a.h[k] = *reinterpret_cast<const int4*>(x.hi + 128 * h + 32 * k + l0);
      a.l[k] = *reinterpret_cast<const int4*>(x.lo + 128 * h + 32 * k + l0);
    }
    a.s = *reinterpret_cast<const float4*>(x.scale + 4 * h);
    return a;
  }
  __device__ static float dot(const W& w, int u, const Act& a) {
    const int qa[4] = {static_cast<int>(w.qa.x), static_cast<int>(w.qa.y), static_cast<int>(w.qa.z), static_cast<int>(w.qa.w)};
    const int qb[4] = {static_cast<int>(w.qb.x), static_cast<int>(w.qb.y), static_cast<int>(w.qb.z), static_cast<int>(w.qb.w)};
    const int qh[4] = {static_cast<int>(w.qh.x), static_cast<int>(w.qh.y), static_cast<int>(w.qh.z), static_cast<int>(w.qh.w)};
    const float s[4] = {a.s.x, a.s.y, a.s.z, a.s.w};
    const int sh = 8 * (u & 1);
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int ha[4] = {a.h[k].x, a.h[k].y, a.h[k].z, a.h[k].w}, la[4] = {a.l[k].x, a.l[k].y, a.l[k].z, a.l[k].w};
      int hi = 0, lo = 0;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int nib = ((k & 1 ? qb[i] : qa[i]) >> (k >= 2 ? 4 : 0)) & 0x0F0F0F0F;
        const int q = __vsub4(nib | (((qh[i] >> (2 * k)) & 0x03030303) << 4), 0x20202020);
        hi = __dp4a(q, ha[i], hi), lo = __dp4a(q, la[i], lo);
      }
      const int scale = static_cast<int8_t>((k < 2 ? w.sc.x : w.sc.y) >> (16 * (k & 1) + sh));
      sum += static_cast<float>(scale) * s[k] * combine(hi, lo);
    }
    return w.d * sum;
  }
};

// Blocks a format lays out together (1: blocks end to end, each at n * kBytes).
template <class T>
constexpr int group_of() {
  if constexpr (requires { T::kGroup; }) return T::kGroup;
  else return 1;
}

// A lane's share of block n of a row: grouped formats find the block themselves.
template <class T>
__device__ __forceinline__ typename T::W fetch_block(const uint8_t* row, int n, int u) {
  if constexpr (group_of<T>() > 1) return T::fetch(row, n, u);
  else return T::fetch(row + static_cast<size_t>(n) * T::kBytes, u);
}

}  // namespace orcd::mv
