// Decode-time matrix-vector products with integer dot products (dp4a). The activation vector is
// quantized once per token (Q8Act: two int8 planes per 32-element block, about 15 bits), the
// weights stay in their GGML blocks (Q6_K regrouped, weight_layout.h), and each warp walks one
// row with several lanes per block, summing exact integers per sub-block before one float
// multiply with the scales (the formats: matvec_formats.cuh). Up to three matrices of one width
// (q/k/v, or gate/up) share a launch, in one format or (q/k, then v) two. The weights reach the
// lanes through registers, through shared memory a warp's rows at a time (span), or streamed
// through shared memory by bulk copies; launch_matvec_q8 picks.
#include <array>
#include <mutex>
#include <cuda/ptx>

#include <climits>
#include <type_traits>

#include "common/cuda_check.h"
#include "engine/kernels/common.cuh"
#include "engine/kernels/kernels.h"
#include "engine/kernels/launch.cuh"
#include "engine/kernels/matvec_formats.cuh"
#include "engine/kernels/matvec_jobs.cuh"
#include "engine/kernels/q8act.cuh"
#include "engine/kernels/quant.cuh"

namespace orcd {
namespace {

using kern::kWarp;
constexpr int kWarpsPerBlock = 4;

using namespace mv;  // the block formats (matvec_formats.cuh)

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
  bool prefetch;  // small launch: pull each warp's rows into L2 before waiting for the previous kernel
  int second_row;  // launch rows from here on are in the second format (a mixed launch), else INT_MAX
  int span_stride;  // span kernel: shared-memory bytes a warp (its rows of every matrix)
};

// One warp's kRows rows of each of kMats matrices (rows r.. of w[m]) against x, summed per lane
// into acc. A lane fetches its share of kUnroll blocks of every row before it uses any
// (T::kFetches in flight): the products are bound by memory latency otherwise, and the compiler
// does not hoist loads across rows by itself.
template <class T, int kMats, int kRows>
__device__ __forceinline__ void rows_dot(const uint8_t* const (&w)[2], size_t row_bytes, int r, bool live, const Q8Act& x, int cols,
                                         float (&acc)[kMats][kRows]) {
  constexpr int kUnroll = kMats * kRows >= T::kFetches ? 1 : T::kFetches / (kMats * kRows);
  const int lane = threadIdx.x, u = lane % T::kLanes;
  constexpr int kStep = kWarp / T::kLanes;
  const int nb = live ? cols / T::kElems : 0;  // a warp past the end still takes part in the epilogue
  const uint8_t* row[kMats][kRows];
#pragma unroll
  for (int m = 0; m < kMats; ++m)
#pragma unroll
    for (int i = 0; i < kRows; ++i) row[m][i] = w[m] + static_cast<size_t>(r + i) * row_bytes;
  for (int b0 = lane / T::kLanes; b0 < nb; b0 += kUnroll * kStep) {
    typename T::W wts[kUnroll][kMats][kRows];
#pragma unroll
    for (int s = 0; s < kUnroll; ++s)
      if (b0 + s * kStep < nb)
#pragma unroll
        for (int m = 0; m < kMats; ++m)
#pragma unroll
          for (int i = 0; i < kRows; ++i) wts[s][m][i] = fetch_block<T>(row[m][i], b0 + s * kStep, u);
#pragma unroll
    for (int s = 0; s < kUnroll; ++s) {
      const int e = (b0 + s * kStep) * T::kElems;
      if (e < cols) {
        const typename T::Act a = T::load({x.hi + e, x.lo + e, x.scale + e / 32, x.sum + e / 32}, u);
#pragma unroll
        for (int m = 0; m < kMats; ++m)
#pragma unroll
          for (int i = 0; i < kRows; ++i) acc[m][i] += T::dot(wts[s][m][i], u, a);
      }
    }
  }
}

// Copies n bytes (n % 8 == 0, both ends 8-byte aligned; 16-byte copies where 16-aligned) from
// global to shared memory with cp.async, the warp's lanes taking turns; cp.async.wait_all and a
// __syncwarp make them visible to the warp.
__device__ __forceinline__ void warp_copy_async(uint8_t* dst, const uint8_t* src, int n, bool aligned16) {
  const auto d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  if (aligned16) {
    for (int off = 16 * threadIdx.x; off < n; off += 16 * kWarp)
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d + off), "l"(src + off) : "memory");
  } else {
    for (int off = 8 * threadIdx.x; off < n; off += 8 * kWarp)
      asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"(d + off), "l"(src + off) : "memory");
  }
}

// kWarps warps per block, each on kRows consecutive rows of one matrix (of both matrices in
// swiglu mode), so one load of the activations serves all of them (rows_dot). At most 128
// registers a thread, so that 16 warps fit an SM. U: the format of the launch rows from
// jobs.second_row on (U = T: one format).
// kSpan (narrow rows): each warp first copies its rows whole into shared memory, before it
// waits for the previous kernel, so that all of its bytes are in flight at once without
// holding registers (in the register loop a lane's share of a few blocks is all it can keep in
// flight, and the 0.5B's 616-byte rows take four round trips to memory).
template <class T, class U, MatvecMode kMode, int kWarps, int kRows, bool kSpan>
__global__ void __launch_bounds__(kWarp* kWarps, 16 / kWarps) matvec_q8_kernel(MvJobs jobs, Q8Act x, int cols, Q8Act hq,
                                                                                   MatvecTail tail) {
  constexpr int kBlockRows = kWarps * kRows;
  constexpr int kMats = kMode == MatvecMode::swiglu ? 2 : 1;
  const int r0 = blockIdx.x * kBlockRows + threadIdx.y * kRows;
  int r = r0;
  const MvJob J = kern::job_of_row<kMode>(jobs, r);
  const bool live = r < J.rows;
  const uint8_t* w[2] = {J.w, jobs.job[1].w};  // w[1]: the up matrix in swiglu mode
  int rw = r;                                  // the warp's first row in w
  const int lane = threadIdx.x;
  if constexpr (kSpan) {
    extern __shared__ __align__(16) uint8_t span_all[];
    uint8_t* span = span_all + threadIdx.y * jobs.span_stride;
    const int n = kRows * static_cast<int>(J.row_bytes);
    const bool aligned16 = J.row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(J.w) % 16 == 0 &&
                           (kMats == 1 || reinterpret_cast<uintptr_t>(w[1]) % 16 == 0);
    if (live)
#pragma unroll
      for (int m = 0; m < kMats; ++m) warp_copy_async(span + m * n, w[m] + static_cast<size_t>(r) * J.row_bytes, n, aligned16);
    w[0] = span, w[1] = span + n, rw = 0;
  } else if (jobs.prefetch && live) {  // weights do not depend on earlier kernels: pull the rows into L2 before waiting
#pragma unroll
    for (int m = 0; m < kMats; ++m)
      for (size_t off = lane * 128; off < kRows * J.row_bytes; off += kWarp * 128)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(w[m] + static_cast<size_t>(r) * J.row_bytes + off));
  }
  kern::wait_for_producer();
  const kern::NormInParts in_part = kern::norm_in_load(tail);
  if constexpr (kSpan) {
    asm volatile("cp.async.wait_all;" ::: "memory");
    __syncwarp();
  }
  float acc[kMats][kRows] = {};
  const uint8_t* const wr[2] = {w[0], w[1]};
  if constexpr (std::is_same_v<T, U>) {
    rows_dot<T, kMats, kRows>(wr, J.row_bytes, rw, live, x, cols, acc);
  } else {  // a mixed launch (q/k in one format, v in another): each warp's rows are in one
    if (r0 >= jobs.second_row) rows_dot<U, kMats, kRows>(wr, J.row_bytes, rw, live, x, cols, acc);
    else rows_dot<T, kMats, kRows>(wr, J.row_bytes, rw, live, x, cols, acc);
  }
  kern::allow_consumer();
  kern::finish_rows<kMode, kWarps, kRows>(acc, J, r, live, hq, tail, in_part);
}

// The same products with the weights streamed through shared memory by bulk copies (the TMA
// unit, sm_90): each warp keeps kBulkStages chunks of all its rows in flight (kChunk blocks of
// each row, one copy per row) without holding them in registers, and the first chunks are
// requested before the kernel waits for the previous one. Used where every row splits into
// whole chunks of a multiple of 16 bytes (see bulk_chunk).
constexpr int kBulkStages = 3;
template <class T>
constexpr int bulk_chunk() {
  int c = kWarp / T::kLanes;  // one warp step of blocks, doubled until 16-byte aligned (and whole groups)
  while (c * T::kBytes % 16 != 0) c *= 2;
  while (c % group_of<T>() != 0) c *= 2;
  return c;
}
template <class T, MatvecMode kMode, int kWarps, int kRows>
constexpr int bulk_smem_bytes() {
  return kWarps * kBulkStages * (kMode == MatvecMode::swiglu ? 2 : 1) * kRows * bulk_chunk<T>() * T::kBytes;
}

template <class T, MatvecMode kMode, int kWarps, int kRows>
__global__ void __launch_bounds__(kWarp* kWarps, 16 / kWarps) matvec_bulk_kernel(MvJobs jobs, Q8Act x, int cols, Q8Act hq,
                                                                                     MatvecTail tail) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace ptx = cuda::ptx;
  constexpr int kBlockRows = kWarps * kRows;
  constexpr int kMats = kMode == MatvecMode::swiglu ? 2 : 1;
  constexpr int kChunk = bulk_chunk<T>(), kChunkBytes = kChunk * T::kBytes, kStageBytes = kMats * kRows * kChunkBytes;
  constexpr int kStep = kWarp / T::kLanes;
  extern __shared__ __align__(128) uint8_t ring_all[];
  __shared__ uint64_t bars_all[kWarps][kBulkStages];
  int r = blockIdx.x * kBlockRows + threadIdx.y * kRows;
  const MvJob J = kern::job_of_row<kMode>(jobs, r);
  const uint8_t* const w[2] = {J.w, jobs.job[1].w};  // w[1]: the up matrix in swiglu mode
  const int lane = threadIdx.x, u = lane % T::kLanes;
  uint8_t* ring = ring_all + threadIdx.y * kBulkStages * kStageBytes;
  uint64_t* bar = bars_all[threadIdx.y];
  const bool live = r < J.rows;
  const int n_chunks = live ? cols / (kChunk * T::kElems) : 0;  // a warp past the end still takes part in the epilogue
  auto request = [&](int c) {  // lane 0: chunk c of every row into its stage
    uint64_t* b = &bar[c % kBulkStages];
    uint8_t* dst = ring + (c % kBulkStages) * kStageBytes;
    ptx::mbarrier_arrive_expect_tx(ptx::sem_release, ptx::scope_cta, ptx::space_shared, b, static_cast<uint32_t>(kStageBytes));
#pragma unroll
    for (int m = 0; m < kMats; ++m)
#pragma unroll
      for (int i = 0; i < kRows; ++i)
        ptx::cp_async_bulk(ptx::space_cluster, ptx::space_global, dst + (m * kRows + i) * kChunkBytes,
                           w[m] + static_cast<size_t>(r + i) * J.row_bytes + static_cast<size_t>(c) * kChunkBytes,
                           static_cast<uint32_t>(kChunkBytes), b);
  };
  if (lane == 0 && live) {
    for (int s = 0; s < kBulkStages; ++s) ptx::mbarrier_init(&bar[s], 1);
    ptx::fence_proxy_async(ptx::space_shared);  // the initialized barriers, visible to the copies
    for (int c = 0; c < n_chunks && c < kBulkStages; ++c) request(c);
  }
  __syncwarp();
  kern::wait_for_producer();
  const kern::NormInParts in_part = kern::norm_in_load(tail);
  float acc[kMats][kRows] = {};
  for (int c = 0; c < n_chunks; ++c) {
    uint64_t* b = &bar[c % kBulkStages];
    while (!ptx::mbarrier_try_wait_parity(b, static_cast<uint32_t>((c / kBulkStages) & 1))) {
    }
    const uint8_t* stage = ring + (c % kBulkStages) * kStageBytes;
#pragma unroll
    for (int k = 0; k < kChunk / kStep; ++k) {
      const int blk = k * kStep + lane / T::kLanes;
      const int e = (c * kChunk + blk) * T::kElems;
      const typename T::Act a = T::load({x.hi + e, x.lo + e, x.scale + e / 32, x.sum + e / 32}, u);
#pragma unroll
      for (int m = 0; m < kMats; ++m)
#pragma unroll
        for (int i = 0; i < kRows; ++i) acc[m][i] += T::dot(fetch_block<T>(stage + (m * kRows + i) * kChunkBytes, blk, u), u, a);
    }
    __syncwarp();  // every lane is done with the stage before it is refilled
    if (lane == 0 && c + kBulkStages < n_chunks) {
      ptx::fence_proxy_async(ptx::space_shared);
      request(c + kBulkStages);
    }
  }
  kern::allow_consumer();
  kern::finish_rows<kMode, kWarps, kRows>(acc, J, r, live, hq, tail, in_part);
#endif
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
      if (q.hi) kern::quantize_lane(v, i, q);
    }
  }
}

// What launch choices depend on, read once per device: a process may drive several GPUs, and
// a device reset (the worker's pause) keeps them valid.
struct DeviceCaps {
  int sm_count = 0;
  bool sm90 = false;        // bulk copies (cp.async.bulk) and thread-block clusters need 9.0
  int bulk_smem_limit = 0;  // opt-in shared memory less room for the static part (barriers, outputs)
};
const DeviceCaps& device_caps() {
  constexpr int kMaxDevices = 64;
  static std::array<std::once_flag, kMaxDevices> once;
  static std::array<DeviceCaps, kMaxDevices> caps;
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < 0 || dev >= kMaxDevices) throw std::runtime_error("device index out of range");
  std::call_once(once[dev], [&] {
    auto attr = [&](cudaDeviceAttr a) {
      int v = 0;
      CUDA_CHECK(cudaDeviceGetAttribute(&v, a, dev));
      return v;
    };
    caps[dev] = {attr(cudaDevAttrMultiProcessorCount), attr(cudaDevAttrComputeCapabilityMajor) >= 9,
                 attr(cudaDevAttrMaxSharedMemoryPerBlockOptin) - 4096};
  });
  return caps[dev];
}
int sm_count() { return device_caps().sm_count; }
bool sm90_or_later() { return device_caps().sm90; }
int bulk_smem_limit() { return device_caps().bulk_smem_limit; }

// Launches reading up to this take the register kernel with the rows prefetched into L2 while the
// previous kernel finishes; larger ones stream through shared memory (where their rows split
// into chunks). Measured on the H100 (docs/perf-log.md, step 9): the shared-memory kernel
// wins on the 8B's down products and output head (33-430 MB), loses on the 1B's 19 MB gate/up,
// and prefetching launches much over L2's size evicts their early lines before use.
constexpr size_t kSmallLaunchBytes = 32u << 20;

// The span kernel (a warp's rows copied whole into shared memory) takes launches whose warps
// read at most this many bytes each. Measured (docs/perf-log.md, step 40): at 8 and 16 KiB
// it also took the 0.5B's 8 x 4 SwiGLU and the 8B's q/k/v and output products, each slower.
constexpr int kSpanMaxBytes = 4096;

// Shared memory a warp of the span kernel needs (its rows of every matrix), or 0 where the rows
// are not 8-byte aligned for cp.async.
int span_stride(std::span<const MatvecJob> jobs, MatvecMode mode, int rows_per_warp) {
  size_t widest = 0;
  for (const MatvecJob& j : jobs) {
    if (j.w.row_bytes % 8 != 0 || reinterpret_cast<uintptr_t>(j.w.data) % 8 != 0) return 0;
    widest = std::max(widest, j.w.row_bytes);
  }
  const size_t bytes = (mode == MatvecMode::swiglu ? 2 : 1) * rows_per_warp * widest;
  return bytes % 16 == 0 ? static_cast<int>(bytes) : static_cast<int>(bytes + 8);  // keep each warp's span 16-byte aligned
}

template <typename F>
bool dispatch_q8(const QMatrix& w, F&& f) {
  if (w.layout == WeightLayout::q6_k_groups8) {
    f.template operator()<MvQ6_K8>();
    return true;
  }
  switch (w.type) {
    case GgmlType::Q8_0: f.template operator()<MvQ8_0>(); return true;
    case GgmlType::Q4_0: f.template operator()<MvQ4_0>(); return true;
    case GgmlType::Q5_0: f.template operator()<MvQ5_0>(); return true;
    case GgmlType::Q4_K: f.template operator()<MvQK<false>>(); return true;
    case GgmlType::Q5_K: f.template operator()<MvQK<true>>(); return true;
    case GgmlType::Q6_K: f.template operator()<MvQ6_K>(); return true;
    default: return false;
  }
}

// Mixed launches (q/k in a file's main format, v in its "more bits" one, as K-quant mixes store
// them) pair these formats only, to keep the number of kernels in check.
template <class T>
constexpr bool mixes_first() {
  return std::is_same_v<T, MvQ4_0> || std::is_same_v<T, MvQ5_0> || std::is_same_v<T, MvQK<false>> || std::is_same_v<T, MvQK<true>>;
}
template <class U>
constexpr bool mixes_second() {
  return std::is_same_v<U, MvQ8_0> || std::is_same_v<U, MvQ6_K> || std::is_same_v<U, MvQ6_K8>;
}

// f.template operator()<kRows>() for the launch's rows a warp (1, 2 or 4).
template <typename F>
void with_rows_per_warp(int rows_per_warp, F&& f) {
  if (rows_per_warp == 4) f.template operator()<4>();
  else if (rows_per_warp == 2) f.template operator()<2>();
  else f.template operator()<1>();
}

bool same_format(const QMatrix& a, const QMatrix& b) { return a.type == b.type && a.layout == b.layout; }

// Index of the first job in another format than job 0 (jobs.size() if none).
size_t second_format_at(std::span<const MatvecJob> jobs) {
  for (size_t i = 1; i < jobs.size(); ++i)
    if (!same_format(jobs[i].w, jobs[0].w)) return i;
  return jobs.size();
}

}  // namespace

bool matvec_q8_can_mix(std::span<const MatvecJob> jobs, MatvecMode mode) {
  const size_t split = second_format_at(jobs);
  if (split == jobs.size() || mode != MatvecMode::store) return false;
  for (size_t i = split; i < jobs.size(); ++i)
    if (!same_format(jobs[i].w, jobs[split].w) || jobs[i].w.cols != jobs[0].w.cols) return false;
  for (const MatvecJob& j : jobs)
    if (!matvec_q8_supports(j.w)) return false;
  bool first = false, second = false;
  dispatch_q8(jobs[0].w, [&]<class T>() { first = mixes_first<T>(); });
  dispatch_q8(jobs[split].w, [&]<class U>() { second = mixes_second<U>(); });
  return first && second;
}

bool matvec_q8_supports(const QMatrix& w) {
  int elems = 0;
  bool aligned16 = false;
  dispatch_q8(w, [&]<class T>() {
    elems = T::kElems * group_of<T>();
    aligned16 = T::kBytes % 16 == 0 || group_of<T>() > 1;
  });
  if (elems == 0 || w.cols % elems != 0 || w.rows > (1 << 30)) return false;
  // The K-quant lanes (and grouped Q6_K's) read their quants with 16-byte loads.
  return !aligned16 || (reinterpret_cast<uintptr_t>(w.data) % 16 == 0 && w.row_bytes % 16 == 0);
}

size_t q8act_bytes(int64_t n) { return static_cast<size_t>(n) * 2 + static_cast<size_t>(n / 32) * 8; }

Q8Act q8act_view(void* base, int64_t n) {
  auto* p = static_cast<int8_t*>(base);
  auto* scale = reinterpret_cast<float*>(p + 2 * n);
  return {p, p + n, scale, scale + n / 32};
}

size_t norm_partials_bytes(int64_t dim) { return q8act_bytes(dim) + static_cast<size_t>(dim / 32) * 4; }

NormPartials norm_partials_view(void* base, int64_t dim) {
  NormPartials n;
  n.q = q8act_view(base, dim);
  n.ss = reinterpret_cast<float*>(static_cast<char*>(base) + q8act_bytes(dim));
  n.dim = static_cast<int>(dim);
  return n;
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
  return q.hi != nullptr;
}

void check_matvec_tail(std::span<const MatvecJob> jobs, MatvecMode mode, const MatvecTail& t) {
  auto fail = [](const std::string& why) { throw std::invalid_argument("matvec tail: " + why); };
  if (t.norm_in.ss && (t.norm_in.dim != jobs[0].w.cols || t.norm_in.dim % 32 != 0 || !(t.norm_in.eps >= 0.0f)))
    fail("norm_in needs the launch's width (a multiple of 32) and eps >= 0");
  const NormPartials& n = t.norm_out;
  if (n.weight && (!n.ss || !n.q.hi || mode != MatvecMode::accumulate || jobs.size() != 1 || jobs[0].w.rows % 32 != 0))
    fail("norm_out needs ss and q, accumulate mode and one matrix of rows a multiple of 32");
  if (!t.rope_q && !t.rope_k && !t.rope_v) return;
  if (mode != MatvecMode::store) fail("RoPE needs store mode");
  if (!t.rope_q || !t.rope_k || !t.rope_v || !t.k_cache || !t.v_cache || !t.rope.pos_dev) fail("RoPE needs q, k, v, both caches and a device position");
  if (t.rope.neox) fail("RoPE in the epilogue rotates adjacent pairs only (interleave NEOX rows at load)");
  if (t.rope.head_dim <= 0 || t.rope.rope_dims > t.rope.head_dim || t.rope.rope_dims % 2) fail("bad head or rotary dims");
  for (const MatvecJob& j : jobs)
    if (j.w.rows % 2 != 0) fail("rows must come in pairs");
}

bool matvec_q8_can_emit_norm(std::span<const MatvecJob> jobs, MatvecMode mode) {
  return sm90_or_later() /* clusters */ && mode == MatvecMode::accumulate && jobs.size() == 1 && jobs[0].w.rows % 32 == 0 &&
         matvec_q8_supports(jobs[0].w);
}

// Rows a warp for a launch that emits a norm: the fewest that keep it to two blocks an SM, so
// that its clusters of 32 rows all fit on the GPU at once. Measured (docs/perf-log.md, step
// 34): with the usual choice, 512 blocks in clusters of 8 or 4 lost 9% on the 1B and 8B. 0: no
// choice fits, and the norm kernel stays.
int emit_norm_rows_per_warp(std::span<const MatvecJob> jobs) {
  const int64_t rows = jobs[0].w.rows;
  for (int k : {1, 2, 4})
    if (rows % k == 0 && rows / (kWarpsPerBlock * k) <= 2 * sm_count()) return k;
  return 0;
}

bool matvec_q8_emit_norm_pays(std::span<const MatvecJob> jobs) {
  return matvec_q8_can_emit_norm(jobs, MatvecMode::accumulate) && emit_norm_rows_per_warp(jobs) != 0;
}

int matvec_rows_per_warp(std::span<const MatvecJob> jobs, MatvecMode mode) {
  const int sms = sm_count();
  int64_t rows = 0;
  for (const MatvecJob& j : jobs) rows += j.w.rows;
  if (mode == MatvecMode::swiglu) rows = jobs[0].w.rows;
  // More rows a warp share more activation loads, but fewer blocks: keep at least two per SM.
  for (int k : {4, 2}) {
    bool divides = true;
    for (const MatvecJob& j : jobs) divides &= j.w.rows % k == 0;
    if (divides && rows / (kWarpsPerBlock * k) >= 2 * sms) return k;
  }
  return 1;
}

void launch_matvec_q8(std::span<const MatvecJob> jobs, const Q8Act& x, MatvecMode mode, cudaStream_t stream, const Q8Act* out_q,
                      int rows_per_warp, MatvecKernel kernel, const MatvecTail* tail) {
  if (jobs.empty() || jobs.size() > 3) throw std::invalid_argument("matvec_q8: 1 to 3 matrices per launch");
  const MatvecTail t = tail ? *tail : MatvecTail{};
  check_matvec_tail(jobs, mode, t);
  if (t.norm_out.weight && !matvec_q8_can_emit_norm(jobs, mode)) throw std::invalid_argument("matvec_q8: this launch cannot emit a norm");
  if (mode == MatvecMode::swiglu && (jobs.size() != 2 || jobs[0].w.rows != jobs[1].w.rows))
    throw std::invalid_argument("matvec_q8: swiglu takes a gate and an up matrix of equal rows");
  if (out_q && (mode != MatvecMode::swiglu || jobs[0].w.rows % 32 != 0))
    throw std::invalid_argument("matvec_q8: quantized output only for swiglu with rows a multiple of 32");
  const size_t split = second_format_at(jobs);
  const bool mixed = split < jobs.size();
  if (mixed && !matvec_q8_can_mix(jobs, mode)) throw std::invalid_argument("matvec_q8: this launch cannot mix these formats");
  if (mixed && kernel == MatvecKernel::bulk) throw std::invalid_argument("matvec_q8: a mixed launch takes the register kernel");
  MvJobs p{};
  p.second_row = INT_MAX;
  int64_t rows = 0;
  size_t bytes = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    const QMatrix& w = jobs[i].w;
    if (w.cols != jobs[0].w.cols || !matvec_q8_supports(w))
      throw std::invalid_argument("matvec_q8: matrices of one launch must share a supported type, layout and width");
    if (i == split) p.second_row = static_cast<int>(rows);
    p.job[i] = {static_cast<const uint8_t*>(w.data), w.row_bytes, static_cast<int>(w.rows), jobs[i].out, jobs[i].bias};
    rows += w.rows;
    bytes += static_cast<size_t>(w.rows) * w.row_bytes;
  }
  p.n = static_cast<int>(jobs.size());
  p.prefetch = bytes <= kSmallLaunchBytes;
  p.span_stride = 0;
  if (mode == MatvecMode::swiglu) rows = jobs[0].w.rows;
  const int asked_rows_per_warp = rows_per_warp;
  if (out_q && rows_per_warp == 1) throw std::invalid_argument("matvec_q8: a quantized output takes 2 or 4 rows a warp");
  if (rows_per_warp == 0 && t.norm_out.weight) rows_per_warp = emit_norm_rows_per_warp(jobs);
  if (rows_per_warp == 0) rows_per_warp = matvec_rows_per_warp(jobs, mode);
  if (rows_per_warp != 1 && rows_per_warp != 2 && rows_per_warp != 4)
    throw std::invalid_argument("matvec_q8: rows a warp must be 1, 2 or 4");
  for (const MatvecJob& j : jobs)
    if (j.w.rows % rows_per_warp != 0) throw std::invalid_argument("matvec_q8: every matrix's rows must be a multiple of the rows a warp");
  const int cols = static_cast<int>(jobs[0].w.cols);
  const Q8Act hq = out_q ? *out_q : Q8Act{};
  // The span kernel's shared memory a warp for kRows rows a warp where it runs (forced, or
  // chosen for narrow rows), else 0.
  auto span_of = [&](int k_rows) {
    const int span = span_stride(jobs, mode, k_rows);
    if (kernel == MatvecKernel::span && span == 0) throw std::invalid_argument("matvec_q8: the span kernel needs 8-byte-aligned rows");
    return kernel == MatvecKernel::span || (kernel == MatvecKernel::automatic && span <= kSpanMaxBytes) ? span : 0;
  };
  // Launches `regs` or, with a span, `spans` (the register kernel without or with kSpan) with
  // `blocks` blocks of kWarps warps.
  auto launch_reg = [&]<int kWarps>(auto* regs, auto* spans, int span, int64_t blocks, unsigned cluster) {
    p.span_stride = span;
    if (span == 0) {
      kern::launch_pdl(regs, kern::LaunchShape{dim3(blocks), dim3(kWarp, kWarps), 0, cluster}, stream, p, x, cols, hq, t);
      return;
    }
    const int smem = kWarps * span;
    if (smem > bulk_smem_limit()) throw std::invalid_argument("matvec_q8: these rows do not fit the span kernel's shared memory");
    if (smem > 48 * 1024) CUDA_CHECK(cudaFuncSetAttribute(spans, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));  // must be asked for
    kern::launch_pdl(spans, kern::LaunchShape{dim3(blocks), dim3(kWarp, kWarps), static_cast<size_t>(smem), cluster}, stream, p, x, cols, hq, t);
  };
  if (mixed) {  // store mode, register or span kernel (matvec_q8_can_mix)
    dispatch_q8(jobs[0].w, [&]<class T>() {
      if constexpr (mixes_first<T>()) {
        dispatch_q8(jobs[split].w, [&]<class U>() {
          if constexpr (mixes_second<U>()) {
            with_rows_per_warp(rows_per_warp, [&]<int kRows>() {
              launch_reg.template operator()<kWarpsPerBlock>(matvec_q8_kernel<T, U, MatvecMode::store, kWarpsPerBlock, kRows, false>,
                                                             matvec_q8_kernel<T, U, MatvecMode::store, kWarpsPerBlock, kRows, true>,
                                                             span_of(kRows), kern::ceil_div(rows, kWarpsPerBlock * kRows), 1u);
            });
          }
        });
      }
    });
    return;
  }
  // A swiglu launch that quantizes its output computes 32 rows a block (quantized together): 16
  // warps of 2 rows where all of its blocks are resident at once (each warp's rows then arrive
  // in half the round trips to memory), else 8 warps of 4 (twice the blocks resident). Measured
  // (docs/perf-log.md, step 40): 16 x 2 took the 0.5B from 1,248 to 1,266 tok/s; in two
  // rounds of blocks it lost 3% on the 1B.
  auto all_resident_at_once = [&]<class T, int kWarps, int kRows>(int64_t n_rows, int span) {
    auto* k = span > 0 ? matvec_q8_kernel<T, T, MatvecMode::swiglu, kWarps, kRows, true> : matvec_q8_kernel<T, T, MatvecMode::swiglu, kWarps, kRows, false>;
    int per_sm = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k, kWarp * kWarps, static_cast<size_t>(kWarps) * span));
    return kern::ceil_div(n_rows, kWarps * kRows) <= static_cast<int64_t>(per_sm) * sm_count();
  };
  dispatch_q8(jobs[0].w, [&]<class T>() {
    // Bulk copies for large launches whose rows split into whole 16-byte-aligned chunks (sm_90).
    bool can_bulk = sm90_or_later() && cols % (bulk_chunk<T>() * T::kElems) == 0;
    for (const MatvecJob& j : jobs) can_bulk &= j.w.row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(j.w.data) % 16 == 0;
    auto run = [&]<MatvecMode kMode, int kWarps, int kRows>() {
      const int blocks = kern::ceil_div(rows, kWarps * kRows);
      const unsigned cluster = t.norm_out.weight ? 32 / (kWarps * kRows) : 1;  // emit_norm_rows: 32 rows a cluster
      constexpr int smem = bulk_smem_bytes<T, kMode, kWarps, kRows>();
      const bool fits = can_bulk && smem <= bulk_smem_limit();
      if (kernel == MatvecKernel::bulk && !fits)
        throw std::invalid_argument("matvec_q8: these rows do not split into bulk-copy chunks on this device");
      const int span = kernel == MatvecKernel::bulk ? 0 : span_of(kRows);
      if (kernel == MatvecKernel::bulk || (kernel == MatvecKernel::automatic && fits && !p.prefetch && span == 0)) {
        // More than 48 KiB must be asked for; asked each time, since a device reset forgets it.
        CUDA_CHECK(cudaFuncSetAttribute(matvec_bulk_kernel<T, kMode, kWarps, kRows>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        kern::launch_pdl(matvec_bulk_kernel<T, kMode, kWarps, kRows>, kern::LaunchShape{dim3(blocks), dim3(kWarp, kWarps), smem, cluster}, stream,
                         p, x, cols, hq, t);
      } else {
        launch_reg.template operator()<kWarps>(matvec_q8_kernel<T, T, kMode, kWarps, kRows, false>, matvec_q8_kernel<T, T, kMode, kWarps, kRows, true>,
                                               span, blocks, cluster);
      }
    };
    auto by_rows = [&]<MatvecMode kMode>() {
      with_rows_per_warp(rows_per_warp, [&]<int kRows>() { run.template operator()<kMode, kWarpsPerBlock, kRows>(); });
    };
    if (mode == MatvecMode::store) by_rows.template operator()<MatvecMode::store>();
    else if (mode == MatvecMode::accumulate) by_rows.template operator()<MatvecMode::accumulate>();
    else if (!out_q) by_rows.template operator()<MatvecMode::swiglu>();
    else if (asked_rows_per_warp == 2 || (asked_rows_per_warp == 0 && kernel != MatvecKernel::bulk &&
                                          all_resident_at_once.template operator()<T, 16, 2>(rows, span_of(2))))
      run.template operator()<MatvecMode::swiglu, 16, 2>();
    else run.template operator()<MatvecMode::swiglu, 8, 4>();
  });
}
}  // namespace orcd
