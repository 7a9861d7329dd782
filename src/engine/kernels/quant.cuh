// GGML block formats, dequantized one element at a time on the device. Each `dq_*` returns
// element i (0-based within the row) of a row stored in that format. Layouts follow GGML's
// block structs; the host reference in tests/ is written independently.
#pragma once
#include "engine/kernels/common.cuh"
#include "engine/weight_layout.h"

namespace orcd::kern {

__device__ __forceinline__ float ld_half(const uint8_t* p) {
  __half h;
  memcpy(&h, p, 2);
  return __half2float(h);
}

// Q8_0: {f16 d; i8 q[32]}
__device__ __forceinline__ float dq_q8_0(const uint8_t* row, int64_t i) {
  const uint8_t* b = row + (i / 32) * 34;
  return ld_half(b) * static_cast<float>(static_cast<int8_t>(b[2 + i % 32]));
}

// Q4_0: {f16 d; u8 qs[16]}: element j < 16 in the low nibble of qs[j], j >= 16 in the high.
__device__ __forceinline__ float dq_q4_0(const uint8_t* row, int64_t i) {
  const uint8_t* b = row + (i / 32) * 18;
  const int j = i % 32;
  const int q = j < 16 ? (b[2 + j] & 0xF) : (b[2 + j - 16] >> 4);
  return ld_half(b) * static_cast<float>(q - 8);
}

// Q4_1: {f16 d; f16 m; u8 qs[16]}
__device__ __forceinline__ float dq_q4_1(const uint8_t* row, int64_t i) {
  const uint8_t* b = row + (i / 32) * 20;
  const int j = i % 32;
  const int q = j < 16 ? (b[4 + j] & 0xF) : (b[4 + j - 16] >> 4);
  return __fadd_rn(__fmul_rn(ld_half(b), static_cast<float>(q)), ld_half(b + 2));
}

// Q5_0: {f16 d; u32 qh; u8 qs[16]}: bit j of qh is the fifth bit of element j.
__device__ __forceinline__ float dq_q5_0(const uint8_t* row, int64_t i) {
  const uint8_t* b = row + (i / 32) * 22;
  const int j = i % 32;
  uint32_t qh;
  memcpy(&qh, b + 2, 4);
  const int lo = j < 16 ? (b[6 + j] & 0xF) : (b[6 + j - 16] >> 4);
  const int q = lo | (((qh >> j) & 1) << 4);
  return ld_half(b) * static_cast<float>(q - 16);
}

// Q5_1: {f16 d; f16 m; u32 qh; u8 qs[16]}
__device__ __forceinline__ float dq_q5_1(const uint8_t* row, int64_t i) {
  const uint8_t* b = row + (i / 32) * 24;
  const int j = i % 32;
  uint32_t qh;
  memcpy(&qh, b + 4, 4);
  const int lo = j < 16 ? (b[8 + j] & 0xF) : (b[8 + j - 16] >> 4);
  const int q = lo | (((qh >> j) & 1) << 4);
  return __fadd_rn(__fmul_rn(ld_half(b), static_cast<float>(q)), ld_half(b + 2));
}

// (d * scale) * q - dmin * min, rounded step by step (no fused multiply-add) so the result is
// bit-identical to a plain host computation.
__device__ __forceinline__ float kq(float d, int scale, int q, float dmin, int min) {
  return __fsub_rn(__fmul_rn(__fmul_rn(d, static_cast<float>(scale)), static_cast<float>(q)),
                   __fmul_rn(dmin, static_cast<float>(min)));
}

// 6-bit scale and min of sub-block s (0..7) packed in the 12 scale bytes of Q4_K / Q5_K.
__device__ __forceinline__ void k_scale_min(const uint8_t* sc, int s, int& scale, int& min) {
  if (s < 4) {
    scale = sc[s] & 63;
    min = sc[s + 4] & 63;
  } else {
    scale = (sc[s + 4] & 0xF) | ((sc[s - 4] >> 6) << 4);
    min = (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4);
  }
}

// Q4_K: {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]}: 8 sub-blocks of 32; each 64 elements
// share 32 bytes of qs, the first 32 in low nibbles, the next 32 in high nibbles.
__device__ __forceinline__ float dq_q4_k(const uint8_t* row, int64_t i) {
  const uint8_t* b = row + (i / 256) * 144;
  const int j = i % 256;
  const int s = j / 32;
  int sc, mn;
  k_scale_min(b + 4, s, sc, mn);
  const uint8_t qbyte = b[16 + (j / 64) * 32 + j % 32];
  const int q = (s & 1) ? (qbyte >> 4) : (qbyte & 0xF);
  return kq(ld_half(b), sc, q, ld_half(b + 2), mn);
}

// Q5_K: {f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}: the fifth bit of element j
// is bit (j / 32) of qh[j % 32].
__device__ __forceinline__ float dq_q5_k(const uint8_t* row, int64_t i) {
  const uint8_t* b = row + (i / 256) * 176;
  const int j = i % 256;
  const int s = j / 32;
  int sc, mn;
  k_scale_min(b + 4, s, sc, mn);
  const uint8_t qbyte = b[48 + (j / 64) * 32 + j % 32];
  const int lo = (s & 1) ? (qbyte >> 4) : (qbyte & 0xF);
  const int hi = (b[16 + j % 32] >> s) & 1;
  return kq(ld_half(b), sc, lo | (hi << 4), ld_half(b + 2), mn);
}

// Q6_K: {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}: two halves of 128; within a half,
// element l + 32k takes its low 4 bits from ql and 2 high bits from qh[l] >> 2k. kGrouped: the
// device layout WeightLayout::q6_k_groups8, where block n's first 208 bytes and its d sit apart.
struct Q6kBlock {
  const uint8_t* b;  // ql, qh, scales
  const uint8_t* d;
};
template <bool kGrouped>
__device__ __forceinline__ Q6kBlock q6_k_block(const uint8_t* row, int64_t n) {
  if constexpr (kGrouped) {
    const uint8_t* g = row + (n / kQ6kGroupBlocks) * kQ6kGroupBytes;
    const int j = static_cast<int>(n % kQ6kGroupBlocks);
    return {g + kQ6kBodyBytes * j, g + kQ6kGroupBlocks * kQ6kBodyBytes + 2 * j};
  } else {
    const uint8_t* b = row + n * 210;
    return {b, b + 208};
  }
}

template <bool kGrouped>
__device__ __forceinline__ float dq_q6_k(const uint8_t* row, int64_t i) {
  const Q6kBlock blk = q6_k_block<kGrouped>(row, i / 256);
  const uint8_t* b = blk.b;
  const int j = i % 256;
  const int half = j / 128, r = j % 128;
  const int k = r / 32, l = r % 32;
  const uint8_t* ql = b + half * 64;
  const uint8_t* qh = b + 128 + half * 32;
  const int lo = (k & 1) ? ((k >= 2) ? (ql[l + 32] >> 4) : (ql[l + 32] & 0xF)) : ((k >= 2) ? (ql[l] >> 4) : (ql[l] & 0xF));
  const int hi = (qh[l] >> (2 * k)) & 3;
  const int q = (lo | (hi << 4)) - 32;
  const int8_t scale = static_cast<int8_t>(b[192 + half * 8 + k * 2 + l / 16]);
  return __fmul_rn(__fmul_rn(ld_half(blk.d), static_cast<float>(scale)), static_cast<float>(q));
}

__device__ __forceinline__ float dq_f16(const uint8_t* row, int64_t i) { return ld_half(row + 2 * i); }

__device__ __forceinline__ float dq_bf16(const uint8_t* row, int64_t i) {
  uint16_t u;
  memcpy(&u, row + 2 * i, 2);
  return __uint_as_float(static_cast<uint32_t>(u) << 16);
}

__device__ __forceinline__ float dq_f32(const uint8_t* row, int64_t i) {
  float f;
  memcpy(&f, row + 4 * i, 4);
  return f;
}

}  // namespace orcd::kern

// Eight consecutive elements i0..i0+7 (i0 a multiple of 8) of a row. They always share one
// scale (and min), so it is decoded once; the values are bit-identical to dq_* element by element.
namespace orcd::kern {

__device__ __forceinline__ void dq8_q8_0(const uint8_t* row, int64_t i0, float* v) {
  const uint8_t* b = row + (i0 / 32) * 34;
  const float d = ld_half(b);
  const uint8_t* q = b + 2 + i0 % 32;
#pragma unroll
  for (int k = 0; k < 8; ++k) v[k] = d * static_cast<float>(static_cast<int8_t>(q[k]));
}

__device__ __forceinline__ void dq8_q4_0(const uint8_t* row, int64_t i0, float* v) {
  const uint8_t* b = row + (i0 / 32) * 18;
  const int j0 = i0 % 32;
  const float d = ld_half(b);
  const uint8_t* q = b + 2 + (j0 & 15);
  const int shift = j0 < 16 ? 0 : 4;
#pragma unroll
  for (int k = 0; k < 8; ++k) v[k] = d * static_cast<float>(((q[k] >> shift) & 0xF) - 8);
}

__device__ __forceinline__ void dq8_q4_1(const uint8_t* row, int64_t i0, float* v) {
  const uint8_t* b = row + (i0 / 32) * 20;
  const int j0 = i0 % 32;
  const float d = ld_half(b), m = ld_half(b + 2);
  const uint8_t* q = b + 4 + (j0 & 15);
  const int shift = j0 < 16 ? 0 : 4;
#pragma unroll
  for (int k = 0; k < 8; ++k) v[k] = __fadd_rn(__fmul_rn(d, static_cast<float>((q[k] >> shift) & 0xF)), m);
}

__device__ __forceinline__ void dq8_q5_0(const uint8_t* row, int64_t i0, float* v) {
  const uint8_t* b = row + (i0 / 32) * 22;
  const int j0 = i0 % 32;
  const float d = ld_half(b);
  uint32_t qh;
  memcpy(&qh, b + 2, 4);
  const uint8_t* q = b + 6 + (j0 & 15);
  const int shift = j0 < 16 ? 0 : 4;
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const int qv = ((q[k] >> shift) & 0xF) | static_cast<int>(((qh >> (j0 + k)) & 1) << 4);  // int: qh is unsigned
    v[k] = d * static_cast<float>(qv - 16);
  }
}

__device__ __forceinline__ void dq8_q5_1(const uint8_t* row, int64_t i0, float* v) {
  const uint8_t* b = row + (i0 / 32) * 24;
  const int j0 = i0 % 32;
  const float d = ld_half(b), m = ld_half(b + 2);
  uint32_t qh;
  memcpy(&qh, b + 4, 4);
  const uint8_t* q = b + 8 + (j0 & 15);
  const int shift = j0 < 16 ? 0 : 4;
#pragma unroll
  for (int k = 0; k < 8; ++k)
    v[k] = __fadd_rn(__fmul_rn(d, static_cast<float>(((q[k] >> shift) & 0xF) | (((qh >> (j0 + k)) & 1) << 4))), m);
}

__device__ __forceinline__ void dq8_q4_k(const uint8_t* row, int64_t i0, float* v) {
  const uint8_t* b = row + (i0 / 256) * 144;
  const int j0 = i0 % 256, s = j0 / 32;
  int sc, mn;
  k_scale_min(b + 4, s, sc, mn);
  const float d = ld_half(b), dmin = ld_half(b + 2);
  const uint8_t* q = b + 16 + (j0 / 64) * 32 + j0 % 32;
  const int shift = (s & 1) ? 4 : 0;
#pragma unroll
  for (int k = 0; k < 8; ++k) v[k] = kq(d, sc, (q[k] >> shift) & 0xF, dmin, mn);
}

__device__ __forceinline__ void dq8_q5_k(const uint8_t* row, int64_t i0, float* v) {
  const uint8_t* b = row + (i0 / 256) * 176;
  const int j0 = i0 % 256, s = j0 / 32;
  int sc, mn;
  k_scale_min(b + 4, s, sc, mn);
  const float d = ld_half(b), dmin = ld_half(b + 2);
  const uint8_t* q = b + 48 + (j0 / 64) * 32 + j0 % 32;
  const uint8_t* qh = b + 16 + j0 % 32;
  const int shift = (s & 1) ? 4 : 0;
#pragma unroll
  for (int k = 0; k < 8; ++k) v[k] = kq(d, sc, ((q[k] >> shift) & 0xF) | (((qh[k] >> s) & 1) << 4), dmin, mn);
}

template <bool kGrouped>
__device__ __forceinline__ void dq8_q6_k(const uint8_t* row, int64_t i0, float* v) {
  const Q6kBlock blk = q6_k_block<kGrouped>(row, i0 / 256);
  const uint8_t* b = blk.b;
  const int j0 = i0 % 256, half = j0 / 128, r = j0 % 128, k4 = r / 32, l0 = r % 32;
  const uint8_t* ql = b + half * 64 + ((k4 & 1) ? 32 : 0) + l0;
  const uint8_t* qh = b + 128 + half * 32 + l0;
  const int lo_shift = k4 >= 2 ? 4 : 0, hi_shift = 2 * k4;
  const float ds = __fmul_rn(ld_half(blk.d), static_cast<float>(static_cast<int8_t>(b[192 + half * 8 + k4 * 2 + l0 / 16])));
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const int q = (((ql[k] >> lo_shift) & 0xF) | (((qh[k] >> hi_shift) & 3) << 4)) - 32;
    v[k] = __fmul_rn(ds, static_cast<float>(q));
  }
}

__device__ __forceinline__ void dq8_f16(const uint8_t* row, int64_t i0, float* v) {
  uint4 u;
  memcpy(&u, row + 2 * i0, 16);
  const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float2 f = __half22float2(h[k]);
    v[2 * k] = f.x;
    v[2 * k + 1] = f.y;
  }
}

__device__ __forceinline__ void dq8_bf16(const uint8_t* row, int64_t i0, float* v) {
#pragma unroll
  for (int k = 0; k < 8; ++k) v[k] = dq_bf16(row, i0 + k);
}

__device__ __forceinline__ void dq8_f32(const uint8_t* row, int64_t i0, float* v) {
  memcpy(v, row + 4 * i0, 32);
}

}  // namespace orcd::kern
