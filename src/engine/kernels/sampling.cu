#include <algorithm>

#include "common/cuda_check.h"
#include "engine/kernels/common.cuh"
#include "engine/kernels/sampling.h"

namespace orcd {
namespace {

constexpr int kThreads = 1024;

__device__ __forceinline__ uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Float <-> integer key whose order matches the float order, for exact bisection.
__device__ __forceinline__ uint32_t float_key(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_float(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k);
}

struct ArgMax {
  float v;
  int i;
};
__device__ __forceinline__ ArgMax no_argmax() { return {-INFINITY, 0x7fffffff}; }  // -inf at the last id: any logit beats it
__device__ __forceinline__ ArgMax better(ArgMax a, ArgMax b) {
  return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a;  // ties go to the lowest id
}

__device__ ArgMax block_argmax(ArgMax a, ArgMax* scratch) {
  for (int o = 16; o > 0; o >>= 1) {
    ArgMax other{__shfl_xor_sync(0xffffffffu, a.v, o), __shfl_xor_sync(0xffffffffu, a.i, o)};
    a = better(a, other);
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = a;
  __syncthreads();
  a = lane < static_cast<int>(blockDim.x / 32) ? scratch[lane] : no_argmax();
  for (int o = 16; o > 0; o >>= 1) {
    ArgMax other{__shfl_xor_sync(0xffffffffu, a.v, o), __shfl_xor_sync(0xffffffffu, a.i, o)};
    a = better(a, other);
  }
  return a;
}

// The best of logits[b, e) among this thread's elements (the block's threads take turns; b is a
// multiple of 4). 16-byte loads where the row allows, several in flight a thread: a row is up
// to ~600 KB, so the loads' latency, not the compares, sets the time.
__device__ ArgMax thread_argmax(const float* __restrict__ logits, int vocab, int b, int e) {
  ArgMax best = no_argmax();
  if (vocab % 4 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0) {
    const auto* l4 = reinterpret_cast<const float4*>(logits);
#pragma unroll 4
    for (int j = b / 4 + threadIdx.x; j < e / 4; j += blockDim.x) {
      const float4 v = l4[j];
      best = better(best, ArgMax{v.x, 4 * j});
      best = better(best, ArgMax{v.y, 4 * j + 1});
      best = better(best, ArgMax{v.z, 4 * j + 2});
      best = better(best, ArgMax{v.w, 4 * j + 3});
    }
  } else {
    for (int i = b + threadIdx.x; i < e; i += blockDim.x) best = better(best, ArgMax{logits[i], i});
  }
  return best;
}

__global__ void penalty_kernel(float* logits, const int32_t* __restrict__ hist, int n, float penalty) {
  const int i = threadIdx.x + blockIdx.x * blockDim.x;
  if (i >= n) return;
  const int32_t tok = hist[i];
  for (int j = 0; j < i; ++j)
    if (hist[j] == tok) return;  // already penalized by its first occurrence
  const float l = logits[tok];
  logits[tok] = l > 0.0f ? l / penalty : l * penalty;
}

// The greedy pick split over blocks: each block's best goes to `partial`, and the last block to
// finish (counted in *done) picks among them, writes the token (and the next decode step's
// inputs) and resets the count for the next launch. One block reading ~600 KB of logits took
// ~11 µs on the H100; this is one round trip to memory and a short reduction.
constexpr int kArgmaxThreads = 256, kArgmaxMaxBlocks = 256, kArgmaxPerThread = 8;
static_assert(kArgmaxMaxBlocks <= kArgmaxThreads);

struct SampleScratch {  // the layout of the buffer launch_sample writes (sample_buffer_bytes)
  int32_t token;
  unsigned done;
  ArgMax partial[kArgmaxMaxBlocks];
};

__global__ void __launch_bounds__(kArgmaxThreads) argmax_kernel(const float* __restrict__ logits, int vocab, SampleScratch* s, int32_t* step_out,
                                                                int32_t next_pos) {
  __shared__ ArgMax scratch[32];
  __shared__ bool last;
  const int per_block = kern::ceil_div(vocab, static_cast<int>(gridDim.x) * 4) * 4;
  const int b = blockIdx.x * per_block, e = min(vocab, b + per_block);
  const ArgMax best = block_argmax(thread_argmax(logits, vocab, b, e), scratch);
  if (threadIdx.x == 0) {
    s->partial[blockIdx.x] = best;
    __threadfence();  // the partial result is visible before the count says so
    last = atomicAdd(&s->done, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  const volatile ArgMax* part = s->partial;
  ArgMax a = threadIdx.x < gridDim.x ? ArgMax{part[threadIdx.x].v, part[threadIdx.x].i} : no_argmax();
  a = block_argmax(a, scratch);
  if (threadIdx.x == 0) {
    s->token = a.i;
    s->done = 0;
    if (step_out) step_out[0] = a.i, step_out[1] = next_pos;
  }
}

__global__ void sample_kernel(float* __restrict__ logits, int vocab, SamplingParams p, uint64_t step, int32_t* out, int32_t* step_out,
                              int32_t next_pos) {
  __shared__ ArgMax am_scratch[32];
  __shared__ float red[32];
  __shared__ float chunk_prefix[kThreads];

  // One block reads the whole row.
  ArgMax best = block_argmax(thread_argmax(logits, vocab, 0, vocab), am_scratch);

  // Tempered logits; probabilities are exp(l - max) up to a common factor.
  const float inv_t = 1.0f / p.temperature;
  const float lmax = best.v * inv_t;
  for (int i = threadIdx.x; i < vocab; i += kThreads) logits[i] *= inv_t;
  __syncthreads();

  // Threshold in logit space: a token is kept when its logit >= key_float(keep_key). Keys
  // below -inf's (and above +inf's) are NaNs, so every search stays inside [-inf, lmax].
  const uint32_t min_key = float_key(-INFINITY);
  uint32_t keep_key = min_key;  // keep everything
  if (p.top_k > 0 && p.top_k < vocab) {
    // Largest key with count(l >= key) >= k: the k-th largest logit.
    uint32_t lo = min_key, hi = float_key(lmax);
    while (lo < hi) {
      const uint32_t mid = static_cast<uint32_t>(lo + (static_cast<uint64_t>(hi) - lo + 1) / 2);
      const float th = key_float(mid);
      float cnt = 0.0f;
      for (int i = threadIdx.x; i < vocab; i += kThreads) cnt += logits[i] >= th ? 1.0f : 0.0f;
      cnt = kern::block_sum(cnt, red);
      if (cnt >= static_cast<float>(p.top_k)) lo = mid;
      else hi = mid - 1;
    }
    keep_key = lo;
  }
  if (p.top_p < 1.0f) {
    // Smallest kept set whose mass reaches top_p of the mass kept so far: the largest key
    // whose set mass still reaches it.
    const float base_th = key_float(keep_key);
    float total = 0.0f;
    for (int i = threadIdx.x; i < vocab; i += kThreads) total += logits[i] >= base_th ? expf(logits[i] - lmax) : 0.0f;
    total = kern::block_sum(total, red);
    uint32_t lo = keep_key, hi = float_key(lmax);
    while (lo < hi) {
      const uint32_t mid = static_cast<uint32_t>(lo + (static_cast<uint64_t>(hi) - lo + 1) / 2);
      const float th = key_float(mid);
      float mass = 0.0f;
      for (int i = threadIdx.x; i < vocab; i += kThreads) mass += logits[i] >= th ? expf(logits[i] - lmax) : 0.0f;
      mass = kern::block_sum(mass, red);
      if (mass >= p.top_p * total) lo = mid;
      else hi = mid - 1;
    }
    keep_key = lo;
  }
  if (p.min_p > 0.0f) {
    const uint32_t k = float_key(lmax + logf(p.min_p));  // p_i / p_max >= min_p
    if (k > keep_key) keep_key = k;
  }
  const float th = key_float(keep_key);

  // Draw: u in [0, kept mass), located by a prefix over contiguous per-thread chunks in id order.
  const int chunk = (vocab + kThreads - 1) / kThreads;
  const int b = threadIdx.x * chunk, e = min(vocab, b + chunk);
  float mine = 0.0f;
  for (int i = b; i < e; ++i) mine += logits[i] >= th ? expf(logits[i] - lmax) : 0.0f;
  chunk_prefix[threadIdx.x] = mine;
  __syncthreads();
  if (threadIdx.x == 0) {
    float run = 0.0f;
    for (int j = 0; j < kThreads; ++j) {
      const float v = chunk_prefix[j];
      chunk_prefix[j] = run;
      run += v;
    }
    const uint64_t r = splitmix64(p.seed ^ splitmix64(step + 0x632BE59BD9B4E019ull));
    const float u = static_cast<float>((r >> 40) * (1.0 / 16777216.0)) * run;
    red[0] = u;
    *out = best.i;  // fallback if rounding leaves u past the last kept token
  }
  __syncthreads();
  const float u = red[0];
  const float start = chunk_prefix[threadIdx.x];
  if (mine > 0.0f && u >= start && u < start + mine) {
    float run = start;
    int pick = -1;
    for (int i = b; i < e; ++i) {
      if (logits[i] < th) continue;
      pick = i;
      run += expf(logits[i] - lmax);
      if (u < run) break;
    }
    if (pick >= 0) *out = pick;
  }
  if (step_out) {
    __syncthreads();  // the pick's write is visible to the block
    if (threadIdx.x == 0) step_out[0] = *out, step_out[1] = next_pos;
  }
}

__global__ void set_decode_step_kernel(int32_t token, int32_t pos, int32_t* step) {
  step[0] = token;
  step[1] = pos;
}

}  // namespace

void launch_set_decode_step(int32_t token, int32_t pos, int32_t* step, cudaStream_t stream) {
  set_decode_step_kernel<<<1, 1, 0, stream>>>(token, pos, step);
  CUDA_CHECK_LAUNCH();
}

void launch_repetition_penalty(float* logits, const int32_t* history, int n_history, float penalty, cudaStream_t stream) {
  if (n_history <= 0 || penalty == 1.0f) return;
  penalty_kernel<<<kern::ceil_div(n_history, 256), 256, 0, stream>>>(logits, history, n_history, penalty);
  CUDA_CHECK_LAUNCH();
}

size_t sample_buffer_bytes() { return sizeof(SampleScratch); }

void launch_sample(float* logits, int vocab, const SamplingParams& p, uint64_t step, int32_t* out_token, cudaStream_t stream, int32_t* step_out,
                   int32_t next_pos) {
  if (p.temperature <= 0.0f) {
    const int blocks = std::clamp(kern::ceil_div(vocab, kArgmaxThreads * kArgmaxPerThread), 1, kArgmaxMaxBlocks);
    argmax_kernel<<<blocks, kArgmaxThreads, 0, stream>>>(logits, vocab, reinterpret_cast<SampleScratch*>(out_token), step_out, next_pos);
  } else {
    sample_kernel<<<1, kThreads, 0, stream>>>(logits, vocab, p, step, out_token, step_out, next_pos);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace orcd
