// Causal grouped-query attention over the f16 KV cache, split over the sequence; a second
// kernel merges the splits. Head dims 64/128/256 (up to 8 query heads a KV head): each block
// handles one (query token, KV head, split) for every query head of the group, so a cached row
// is read once per token and group, and many splits keep the GPU busy at long contexts. Other
// shapes (prefill only): each block handles one (query token, head, split) and walks its
// positions in chunks with an online softmax. Where the position lives on the device (graph
// replays) the split length is worked out in the kernel from the actual length.
#include <algorithm>

#include "common/cuda_check.h"
#include "engine/kernels/common.cuh"
#include "engine/kernels/kernels.h"
#include "engine/kernels/launch.cuh"
#include "engine/kernels/q8act.cuh"

namespace orcd {
namespace {

constexpr int kThreads = 128;
constexpr int kChunk = 128;      // positions scored at a time
constexpr int kMaxHeadDim = 256;
constexpr int kDimsPerThread = kMaxHeadDim / kThreads;
constexpr int kMaxSplits = 32;
constexpr int kMaxGroupSplits = 128;
constexpr int kSplitGranule = 32;  // a group-kernel split covers a multiple of this many positions
constexpr int kMaxGroup = 8;        // query heads per KV head the decode kernel holds in registers
// Thread groups of the decode merge, each over a share of the splits: kMergeGroups for a head
// merged by one block, kSliceMergeGroups where a wider head is merged kMergeSlice dims a block.
constexpr int kMergeGroups = 8, kSliceMergeGroups = 16, kMergeSlice = 64;
// Partial values a merge thread loads before the splits' weights are known (docs/perf-log.md,
// step 47: 1 was best at depth 0 but left the 8B's depth 4096 where it was; 4 gains there).
constexpr int kMergePrefetch = 4;
constexpr int kMergeSums = kMergeGroups * kMaxHeadDim;  // the merge's partial sums, [groups][dims]
static_assert(kSliceMergeGroups * kMergeSlice <= kMergeSums);
static_assert(kMaxGroupSplits >= kMaxSplits);

__device__ __forceinline__ int start_of(const AttentionParams& p) { return p.start_pos + (p.pos_dev ? *p.pos_dev : 0); }

// partial layout per (token, head, split): [m, l, o[head_dim]]
__global__ void attention_split_kernel(const float* __restrict__ q, const __half* __restrict__ kc, const __half* __restrict__ vc,
                                       float* __restrict__ partial, AttentionParams p, int n_splits) {
  __shared__ float qs[kMaxHeadDim];
  __shared__ float sc[kChunk];
  __shared__ float red[32];
  const int h = blockIdx.x, t = blockIdx.y, s = blockIdx.z;
  const int hd = p.head_dim;
  const int kv_dim = p.n_kv_heads * hd;
  const int kvh = h / (p.n_heads / p.n_kv_heads);
  const int start = start_of(p);
  const int n_kv = start + t + 1;  // causal
  const int split_len = kern::ceil_div(kern::ceil_div(start + p.n_tokens, n_splits), kChunk) * kChunk;
  const int begin = s * split_len, end = min(n_kv, begin + split_len);
  const float scale = rsqrtf(static_cast<float>(hd));
  const float* qh = q + (static_cast<int64_t>(t) * p.n_heads + h) * hd;
  for (int d = threadIdx.x; d < hd; d += kThreads) qs[d] = qh[d] * scale;
  __syncthreads();

  float m = -INFINITY, l = 0.0f;
  float o[kDimsPerThread] = {};
  const int lane = threadIdx.x % kern::kWarp, warp = threadIdx.x / kern::kWarp;
  for (int c0 = begin; c0 < end; c0 += kChunk) {
    const int cn = min(kChunk, end - c0);
    for (int j = warp; j < cn; j += kThreads / kern::kWarp) {
      const __half* kr = kc + static_cast<int64_t>(c0 + j) * kv_dim + kvh * hd;
      float dot = 0.0f;
      for (int d = lane; d < hd; d += kern::kWarp) dot += qs[d] * __half2float(kr[d]);
      dot = kern::warp_sum(dot);
      if (lane == 0) sc[j] = dot;
    }
    __syncthreads();
    float cmax = -INFINITY;
    for (int j = threadIdx.x; j < cn; j += kThreads) cmax = fmaxf(cmax, sc[j]);
    cmax = kern::block_max(cmax, red);
    const float new_m = fmaxf(m, cmax);
    const float rescale = expf(m - new_m);  // 0 on the first chunk (m = -inf)
    float psum = 0.0f;
    for (int j = threadIdx.x; j < cn; j += kThreads) {
      const float e = expf(sc[j] - new_m);
      sc[j] = e;
      psum += e;
    }
    psum = kern::block_sum(psum, red);  // its barriers also publish sc[]
    l = l * rescale + psum;
    m = new_m;
#pragma unroll
    for (int k = 0; k < kDimsPerThread; ++k) {
      const int d = threadIdx.x + k * kThreads;
      if (d >= hd) break;
      float acc = o[k] * rescale;
      for (int j = 0; j < cn; ++j) acc += sc[j] * __half2float(vc[static_cast<int64_t>(c0 + j) * kv_dim + kvh * hd + d]);
      o[k] = acc;
    }
    __syncthreads();  // sc[] is rewritten by the next chunk
  }
  float* out = partial + ((static_cast<int64_t>(t) * p.n_heads + h) * n_splits + s) * (hd + 2);
  if (threadIdx.x == 0) {
    out[0] = m;
    out[1] = l;
  }
#pragma unroll
  for (int k = 0; k < kDimsPerThread; ++k) {
    const int d = threadIdx.x + k * kThreads;
    if (d < hd) out[2 + d] = o[k];
  }
}

// One query token. Each warp takes 32 / LP positions at a time, LP lanes per position splitting
// its dims: the lanes score their share of the K row against every query head of the group
// (queries broadcast from shared memory) and sum over the position's lanes, the warp updates its
// online softmax once per chunk, then walks the chunk's V rows with each lane holding D/32 dims.
// Long splits take LP = 1 (most positions in flight per load); shorter ones LP = 4, so that all
// warps of a block share the few positions there are, or for 64-dim heads LP = 2 up to 64
// positions, one round of the block's warps (measured: 128-dim heads lose with it). The warps
// merge through shared memory.
template <int D, int LP>
struct ChunkRows {  // one lane's share of a chunk: its K dims, and where registers allow, V rows
  static constexpr int kChunkPos = kern::kWarp / LP, kPer = D / kern::kWarp;
  static constexpr int kEarly = LP > 1 || D <= 64 ? kChunkPos : 1;
  uint4 k[D / LP / 8];
  __half2 v[kEarly][kPer / 2];
};

template <int D, int LP, bool kWithK>
__device__ __forceinline__ void load_chunk(const __half* __restrict__ kc, const __half* __restrict__ vc, int64_t kv_dim, int kvh, int c,
                                           int end, ChunkRows<D, LP>& r) {
  using R = ChunkRows<D, LP>;
  const int lane = threadIdx.x % kern::kWarp, pp = lane / LP, qq = lane % LP;
  // Every row of the chunk is read (past the end, the last valid row again, with weight 0), so
  // that the loads need not wait for one another.
  const int last = min(R::kChunkPos, end - c) - 1;
  if constexpr (R::kEarly > 1) {
    const __half* vbase = vc + static_cast<int64_t>(c) * kv_dim + kvh * D + lane * R::kPer;
#pragma unroll
    for (int j = 0; j < R::kChunkPos; ++j)
#pragma unroll
      for (int i = 0; i < R::kPer / 2; ++i) r.v[j][i] = reinterpret_cast<const __half2*>(vbase + min(j, last) * kv_dim)[i];
  }
  if constexpr (kWithK) {
    const uint4* kr = reinterpret_cast<const uint4*>(kc + (c + min(pp, last)) * kv_dim + kvh * D + qq * (D / LP));
#pragma unroll
    for (int d8 = 0; d8 < D / LP / 8; ++d8) r.k[d8] = kr[d8];
  }
}

// The chunk's scores, softmax update and V sums; K comes from r (kKInRegs) or from the cache.
template <int D, int LP, int kG, bool kKInRegs>
__device__ __forceinline__ void use_chunk(const float (*qs)[D], const __half* __restrict__ kc, const __half* __restrict__ vc, int64_t kv_dim,
                                          int kvh, int G, int c, int end, const ChunkRows<D, LP>& r, float (&o)[kG][D / kern::kWarp],
                                          float (&m)[kG], float (&l)[kG]) {
  using R = ChunkRows<D, LP>;
  constexpr int kPer = R::kPer, kDimsPerLane = D / LP;
  const int lane = threadIdx.x % kern::kWarp, pp = lane / LP, qq = lane % LP;
  const bool valid = c + pp < end;
  const uint4* kr = reinterpret_cast<const uint4*>(kc + (c + min(pp, end - 1 - c)) * kv_dim + kvh * D + qq * kDimsPerLane);
  float sc[kG] = {};
#pragma unroll
  for (int d8 = 0; d8 < kDimsPerLane / 8; ++d8) {
    uint4 raw;
    if constexpr (kKInRegs) raw = r.k[d8];
    else raw = kr[d8];
    const __half2* h2 = reinterpret_cast<const __half2*>(&raw);
    float kf[8];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 f = __half22float2(h2[k]);
      kf[2 * k] = f.x, kf[2 * k + 1] = f.y;
    }
    const int d = qq * kDimsPerLane + 8 * d8;
#pragma unroll
    for (int g = 0; g < kG; ++g) {
      if (g >= G) break;
      const float4 qa = *reinterpret_cast<const float4*>(&qs[g][d]), qb = *reinterpret_cast<const float4*>(&qs[g][d + 4]);
      sc[g] += qa.x * kf[0] + qa.y * kf[1] + qa.z * kf[2] + qa.w * kf[3] + qb.x * kf[4] + qb.y * kf[5] + qb.z * kf[6] + qb.w * kf[7];
    }
  }
  float pr[kG];
#pragma unroll
  for (int g = 0; g < kG; ++g) {
    if (g >= G) break;
#pragma unroll
    for (int o2 = 1; o2 < LP; o2 <<= 1) sc[g] += __shfl_xor_sync(0xffffffffu, sc[g], o2);  // the position's lanes
    const float cm = kern::warp_max(valid ? sc[g] : -INFINITY);
    const float nm = fmaxf(m[g], cm);
    const float corr = expf(m[g] - nm);  // 0 while m is still -inf
    pr[g] = valid ? expf(sc[g] - nm) : 0.0f;
    l[g] = l[g] * corr + kern::warp_sum(qq == 0 ? pr[g] : 0.0f);
    m[g] = nm;
#pragma unroll
    for (int i = 0; i < kPer; ++i) o[g][i] *= corr;
  }
  const int last = min(R::kChunkPos, end - c) - 1;
  const __half* vbase = vc + static_cast<int64_t>(c) * kv_dim + kvh * D + lane * kPer;
#pragma unroll
  for (int j = 0; j < R::kChunkPos; ++j) {
    float vf[kPer];
#pragma unroll
    for (int i = 0; i < kPer / 2; ++i) {
      const float2 f = __half22float2(R::kEarly > 1 ? r.v[R::kEarly > 1 ? j : 0][i]
                                                    : reinterpret_cast<const __half2*>(vbase + min(j, last) * kv_dim)[i]);
      vf[2 * i] = f.x, vf[2 * i + 1] = f.y;
    }
#pragma unroll
    for (int g = 0; g < kG; ++g) {
      if (g >= G) break;
      const float pj = __shfl_sync(0xffffffffu, pr[g], j * LP);
#pragma unroll
      for (int i = 0; i < kPer; ++i) o[g][i] += pj * vf[i];
    }
  }
}

// A warp's chunks of [begin, end), for G <= kG query heads a KV head (kG sizes the registers).
// Where a chunk's rows fit in registers twice (V loaded early, at most 32 registers a copy, and
// at most 4 query heads' sums beside them), the next chunk's loads are issued before the current
// one is used, so that the rounds of a long split overlap their memory latency.
template <int D, int LP, int kG>
__device__ __forceinline__ void decode_chunks(const float (*qs)[D], const __half* __restrict__ kc, const __half* __restrict__ vc, int64_t kv_dim,
                                              int kvh, int G, int begin, int end, float (&o)[kG][D / kern::kWarp], float (&m)[kG],
                                              float (&l)[kG]) {
  using R = ChunkRows<D, LP>;
  constexpr int kStride = kThreads / kern::kWarp * R::kChunkPos;
  constexpr bool kPipelined = R::kEarly > 1 && sizeof(R) <= 128 && kG <= 4;
  const int warp = threadIdx.x / kern::kWarp;
  int c = begin + warp * R::kChunkPos;
  if constexpr (kPipelined) {
    if (c >= end) return;
    R cur;
    load_chunk<D, LP, true>(kc, vc, kv_dim, kvh, c, end, cur);
    for (; c < end; c += kStride) {
      R next;
      if (c + kStride < end) load_chunk<D, LP, true>(kc, vc, kv_dim, kvh, c + kStride, end, next);
      use_chunk<D, LP, kG, true>(qs, kc, vc, kv_dim, kvh, G, c, end, cur, o, m, l);
      cur = next;
    }
  } else {
    for (; c < end; c += kStride) {
      R cur;
      load_chunk<D, LP, false>(kc, vc, kv_dim, kvh, c, end, cur);  // V only, where it is loaded early
      use_chunk<D, LP, kG, false>(qs, kc, vc, kv_dim, kvh, G, c, end, cur, o, m, l);
    }
  }
}

template <int D, int kG>
__global__ void __launch_bounds__(kThreads) attention_group_kernel(const float* __restrict__ q, const __half* __restrict__ kc,
                                                                    const __half* __restrict__ vc, float* __restrict__ partial,
                                                                    AttentionParams p, int n_splits) {
  constexpr int kPer = D / kern::kWarp, kWarps = kThreads / kern::kWarp;
  __shared__ __align__(16) float qs[kG][D];
  __shared__ float sm[kWarps][kG][D + 2];
  const int kvh = blockIdx.x, s = blockIdx.y, t = blockIdx.z;  // KV head, split, query token
  const int G = p.n_heads / p.n_kv_heads;
  const int n_kv = start_of(p) + t + 1;  // causal
  const int split_len = kern::ceil_div(kern::ceil_div(n_kv, n_splits), kSplitGranule) * kSplitGranule;
  const int begin = s * split_len, end = min(n_kv, begin + split_len);
  const int lane = threadIdx.x % kern::kWarp, warp = threadIdx.x / kern::kWarp;
  const int64_t kv_dim = static_cast<int64_t>(p.n_kv_heads) * D;
  const float scale = rsqrtf(static_cast<float>(D));
  kern::wait_for_producer();
  kern::allow_consumer();
  // A split past this token's length is empty: the launch is sized for its longest sequence (in
  // the decode graph, the whole cache).
  if (begin >= end) {
    if (threadIdx.x < G) {
      float* part = partial + ((static_cast<int64_t>(t) * p.n_heads + kvh * G + threadIdx.x) * n_splits + s) * (D + 2);
      part[0] = -INFINITY, part[1] = 0.0f;
    }
    return;
  }
  // The group's queries, 16 bytes a load, all of a thread's loads issued together: a loop over
  // G * D compiles to a remainder loop whose loads wait for one another (three L2 round trips
  // a thread for a 7-head group of 64 dims).
  const auto* qt = reinterpret_cast<const float4*>(q + (static_cast<int64_t>(t) * p.n_heads + kvh * G) * D);
  float4* qs4 = reinterpret_cast<float4*>(&qs[0][0]);
  constexpr int kQLoads = kern::ceil_div(kG * D / 4, kThreads);
  float4 qv[kQLoads];
#pragma unroll
  for (int k = 0; k < kQLoads; ++k) {
    const int i = threadIdx.x + k * kThreads;
    if (i < G * D / 4) qv[k] = qt[i];
  }
#pragma unroll
  for (int k = 0; k < kQLoads; ++k) {
    const int i = threadIdx.x + k * kThreads;
    if (i < G * D / 4) qs4[i] = make_float4(qv[k].x * scale, qv[k].y * scale, qv[k].z * scale, qv[k].w * scale);
  }
  __syncthreads();

  float o[kG][kPer], m[kG], l[kG];
#pragma unroll
  for (int g = 0; g < kG; ++g) {
    m[g] = -INFINITY, l[g] = 0.0f;
#pragma unroll
    for (int i = 0; i < kPer; ++i) o[g][i] = 0.0f;
  }
  if (end - begin >= kWarps * kern::kWarp)
    decode_chunks<D, 1, kG>(qs, kc, vc, kv_dim, kvh, G, begin, end, o, m, l);
  else if (D <= 64 && end - begin > kWarps * kern::kWarp / 4)
    decode_chunks<D, 2, kG>(qs, kc, vc, kv_dim, kvh, G, begin, end, o, m, l);
  else
    decode_chunks<D, 4, kG>(qs, kc, vc, kv_dim, kvh, G, begin, end, o, m, l);
#pragma unroll
  for (int g = 0; g < kG; ++g) {
    if (g >= G) break;
    if (lane == 0) sm[warp][g][0] = m[g], sm[warp][g][1] = l[g];
#pragma unroll
    for (int i = 0; i < kPer; ++i) sm[warp][g][2 + lane * kPer + i] = o[g][i];
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < G * (D + 2); idx += kThreads) {
    const int g = idx / (D + 2), c = idx % (D + 2);
    float mm = -INFINITY;
    for (int w = 0; w < kWarps; ++w) mm = fmaxf(mm, sm[w][g][0]);
    float v = 0.0f;
    if (c == 0) {
      v = mm;
    } else if (mm != -INFINITY) {
      for (int w = 0; w < kWarps; ++w)
        if (sm[w][g][0] != -INFINITY) v += sm[w][g][c] * expf(sm[w][g][0] - mm);
    }
    partial[((static_cast<int64_t>(t) * p.n_heads + kvh * G + g) * n_splits + s) * (D + 2) + c] = v;
  }
}

// Merges the splits of one (token, head): the splits' weights exp(m_s - M) / L are worked out
// once in shared memory, then each group of threads sums its share of the splits per dim. With
// `q` set (one token, head_dim a multiple of 32, a thread per dim) the output is also quantized
// for the next mat-vec.
__global__ void attention_combine_kernel(const float* __restrict__ partial, float* __restrict__ out, AttentionParams p, int n_splits, Q8Act q,
                                         int groups) {
  __shared__ float wgt[kMaxGroupSplits], sums_l[kMaxGroupSplits];
  __shared__ float red[32];
  kern::wait_for_producer();
  kern::allow_consumer();
  const int h = blockIdx.x, t = blockIdx.y;
  const int hd = p.head_dim;
  const float* base = partial + (static_cast<int64_t>(t) * p.n_heads + h) * n_splits * (hd + 2);
  // `groups` groups of threads take every groups-th split each (the dims across a group's
  // threads), so that each thread's chain of loads is that much shorter; a wide head's dims
  // may be split over several blocks (gridDim.z slices of `slice` dims). A thread's first
  // kMergePrefetch values do not depend on the splits' maxima, so they are loaded with them:
  // round trips to memory fewer in the chain. Each is used only if its split is live.
  const int per_group = blockDim.x / groups, grp = threadIdx.x / per_group;
  const int slice = hd / gridDim.z, d0 = blockIdx.z * slice, d_first = threadIdx.x % per_group;
  float pre[kMergePrefetch];
#pragma unroll
  for (int k = 0; k < kMergePrefetch; ++k) {
    const int s = grp + k * groups;
    pre[k] = s < n_splits && d_first < slice ? base[s * (hd + 2) + 2 + d0 + d_first] : 0.0f;
  }
  // The splits holding positions are a prefix (the decode launch is sized for the whole cache),
  // so everything after the first pass runs over that prefix only. Each split's max and sum are
  // read once, together, into shared memory (wgt[] holds the max until it becomes the weight).
  float m = -INFINITY, last_live = -1.0f;
  for (int s = threadIdx.x; s < n_splits; s += blockDim.x) {
    const float ms = base[s * (hd + 2)];
    wgt[s] = ms, sums_l[s] = base[s * (hd + 2) + 1];
    m = fmaxf(m, ms);
    if (ms != -INFINITY) last_live = static_cast<float>(s);
  }
  m = kern::block_max(m, red);
  const int n_live = static_cast<int>(kern::block_max(last_live, red)) + 1;
  float l = 0.0f;
  for (int s = threadIdx.x; s < n_live; s += blockDim.x) {  // the same thread wrote split s above
    const float ms = wgt[s];
    const float e = ms == -INFINITY ? 0.0f : expf(ms - m);
    wgt[s] = e;
    l += sums_l[s] * e;
  }
  l = kern::block_sum(l, red);  // its barriers also publish wgt[]
  const float inv_l = 1.0f / l;
  __shared__ float sums[kMergeSums];  // [groups][slice]
  for (int d = d_first; d < slice; d += per_group) {
    float acc = 0.0f;
    int s = grp;
    if (d == d_first)
#pragma unroll
      for (int k = 0; k < kMergePrefetch; ++k, s += groups)
        if (s < n_live) acc += pre[k] * wgt[s];
#pragma unroll 4
    for (; s < n_live; s += groups) acc += base[s * (hd + 2) + 2 + d0 + d] * wgt[s];
    sums[grp * slice + d] = acc;
  }
  __syncthreads();
  if (grp != 0) return;
  for (int d = threadIdx.x; d < slice; d += per_group) {
    float acc = 0.0f;
    for (int g = 0; g < groups; ++g) acc += sums[g * slice + d];
    const float o = acc * inv_l;
    const int64_t i = (static_cast<int64_t>(t) * p.n_heads + h) * hd + d0 + d;
    out[i] = o;
    if (q.hi) kern::quantize_lane(o, i, q);
  }
}

int max_kv_of(const AttentionParams& p) { return p.pos_dev ? p.max_ctx : p.start_pos + p.n_tokens; }

// Split results the scratch buffer holds for a launch of n_tokens (attention_scratch_floats).
size_t scratch_units(int n_tokens, int n_heads) {
  return std::max<size_t>({static_cast<size_t>(n_tokens) * n_heads, 1024, static_cast<size_t>(n_heads) * kMaxGroupSplits});
}

// The kernel that serves a KV head's whole query-head group per block (each cached row read
// once for the group): decode, and prefill chunks whose heads it takes.
bool use_group_kernel(const AttentionParams& p) {
  return (p.head_dim == 64 || p.head_dim == 128 || p.head_dim == 256) && p.n_heads / p.n_kv_heads <= kMaxGroup;
}

int choose_group_splits(const AttentionParams& p) {
  // About four blocks per SM across the KV heads and tokens (measured best of 264 / 528 / 1056
  // blocks at depth 4096 on 1B and 8B shapes), never a split under one granule, and no more
  // than the scratch buffer holds.
  const int blocks = p.n_kv_heads * p.n_tokens;
  const int cap = static_cast<int>(scratch_units(p.n_tokens, p.n_heads) / (static_cast<size_t>(p.n_tokens) * p.n_heads));
  const int splits = std::min({kMaxGroupSplits, cap, kern::ceil_div(528, blocks), kern::ceil_div(max_kv_of(p), kSplitGranule)});
  return std::max(1, splits);
}

int choose_splits(const AttentionParams& p) {
  const int max_kv = max_kv_of(p);
  const int blocks = p.n_heads * p.n_tokens;
  // Aim for about 512 blocks in flight (a few per SM on an H100), never a split under one chunk.
  int splits = std::max(1, 512 / std::max(1, blocks));
  splits = std::min({splits, kMaxSplits, kern::ceil_div(max_kv, kChunk)});
  return std::max(1, splits);
}

}  // namespace

size_t attention_scratch_floats(int max_tokens, int n_heads, int head_dim, int max_ctx) {
  // choose_splits keeps tokens * heads * splits under max(tokens * heads, 512 * 2); the group
  // kernel keeps to what this holds (at least n_heads * kMaxGroupSplits for one token).
  (void)max_ctx;
  return scratch_units(max_tokens, n_heads) * (head_dim + 2);
}

bool launch_attention(const float* q, const __half* k_cache, const __half* v_cache, float* out, float* scratch,
                      const AttentionParams& p, cudaStream_t stream, const Q8Act* out_q) {
  if (p.n_tokens == 0) return false;
  if (p.head_dim > kMaxHeadDim || p.n_heads % p.n_kv_heads != 0)
    throw std::invalid_argument("attention: head_dim " + std::to_string(p.head_dim) + " or head grouping not supported");
  if (p.pos_dev && p.max_ctx <= 0) throw std::invalid_argument("attention: a device position needs max_ctx");
  int splits = 0;
  const bool grouped = use_group_kernel(p);
  if (grouped) {
    splits = choose_group_splits(p);
    const dim3 grid(p.n_kv_heads, splits, p.n_tokens);
    auto run = [&]<int kG>() {  // registers for kG query heads a KV head
      switch (p.head_dim) {
        case 64: kern::launch_pdl(attention_group_kernel<64, kG>, grid, kThreads, 0, stream, q, k_cache, v_cache, scratch, p, splits); break;
        case 128: kern::launch_pdl(attention_group_kernel<128, kG>, grid, kThreads, 0, stream, q, k_cache, v_cache, scratch, p, splits); break;
        default: kern::launch_pdl(attention_group_kernel<256, kG>, grid, kThreads, 0, stream, q, k_cache, v_cache, scratch, p, splits); break;
      }
    };
    if (p.n_heads / p.n_kv_heads <= 4) run.template operator()<4>();
    else run.template operator()<kMaxGroup>();
  } else {
    splits = choose_splits(p);
    attention_split_kernel<<<dim3(p.n_heads, p.n_tokens, splits), kThreads, 0, stream>>>(q, k_cache, v_cache, scratch, p, splits);
  }
  CUDA_CHECK_LAUNCH();
  const bool quantize = out_q && p.n_tokens == 1 && p.head_dim % 32 == 0 && p.head_dim <= 1024;
  // The decode merge has dozens of splits at long contexts, so it splits them over thread groups
  // (measured: 8 groups beat 4 and 1), and heads wider than 64 dims over blocks of 64 dims with
  // 16 groups; prefill merges few splits and keeps one group and one block a head.
  const bool decode = grouped && p.n_tokens == 1;
  const int slices = decode && p.head_dim > kMergeSlice && p.head_dim % kMergeSlice == 0 ? p.head_dim / kMergeSlice : 1;
  const int per_group = quantize ? p.head_dim / slices : 128;
  const int groups = decode ? std::min(slices > 1 ? kSliceMergeGroups : kMergeGroups, 1024 / per_group) : 1;
  kern::launch_pdl(attention_combine_kernel, dim3(p.n_heads, p.n_tokens, slices), groups * per_group, 0, stream, scratch, out, p, splits,
                   quantize ? *out_q : Q8Act{}, groups);
  return quantize;
}

}  // namespace orcd
