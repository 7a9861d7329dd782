// Host-side launchers for the engine's kernels; each lives beside its kernel in <family>.cu.
// All pointers are device pointers; all launches go on `stream` and are checked at launch.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <span>

#include "engine/weight_layout.h"
#include "gguf/ggml_types.h"

namespace orcd {

// A weight matrix as stored in VRAM: `rows` rows of `cols` elements in GGML format `type`.
struct QMatrix {
  const void* data = nullptr;
  GgmlType type = GgmlType::F32;
  int64_t rows = 0, cols = 0;
  size_t row_bytes = 0;
  WeightLayout layout = WeightLayout::ggml;  // see weight_layout.h
};

bool matmul_supports(GgmlType t);

// out[t][r] = sum_i W[r][i] * x[t][i] for t < n_tokens (x: n_tokens x cols, out: n_tokens x rows).
void launch_matmul(const QMatrix& w, const float* x, int n_tokens, float* out, cudaStream_t stream);
// out[t] = dequantized row ids[t] of `table` (an embedding lookup).
void launch_get_rows(const QMatrix& table, const int32_t* ids, int n, float* out, cudaStream_t stream);
// Whole matrix dequantized to float (tests, and the CPU-side reference checks).
void launch_dequantize(const QMatrix& w, float* out, cudaStream_t stream);
// Whole matrix dequantized to f16, rows x cols (the tensor-core prefill's operand).
void launch_dequantize_f16(const QMatrix& w, __half* out, cudaStream_t stream);
// out[i] = half(x[i])
void launch_to_half(const float* x, __half* out, int64_t n, cudaStream_t stream);

// One token's activations quantized for the integer mat-vec: per 32-element block two int8
// planes and a scale, x = scale * (254 * hi + lo), about 15 bits (error under 1/64516 of the
// block's largest magnitude), and the block's integer sum of 254 * hi + lo. Stored in one buffer
// of q8act_bytes(n): hi[n], lo[n], scale[n/32], sum[n/32].
struct Q8Act {
  int8_t* hi = nullptr;
  int8_t* lo = nullptr;
  float* scale = nullptr;
  float* sum = nullptr;
};
size_t q8act_bytes(int64_t n);
Q8Act q8act_view(void* base, int64_t n);
// x (n % 32 == 0) into q.
void launch_quantize_act(const float* x, int64_t n, const Q8Act& q, cudaStream_t stream);
// One row: out = x / rms(x) * weight, and q = its quantization. Returns false, having written
// only `out`, where dim is not a multiple of 32 or exceeds 8192, or q is empty (q.hi null: the
// next launch reads floats).
bool launch_rmsnorm_quant(const float* x, const float* weight, float* out, const Q8Act& q, int dim, float eps, cudaStream_t stream);

// Decode-time y = W x (one token) with dp4a on quantized activations, for Q8_0, Q4_0, Q5_0,
// Q4_K, Q5_K and Q6_K. Up to three matrices of one type and width share a launch (their rows
// are concatenated); each writes its own `out` (plus `bias` when set).
enum class MatvecMode {
  store,       // out = W x + bias
  accumulate,  // out += W x + bias (the residual add)
  swiglu,      // two jobs, gate and up: jobs[0].out = silu(gate x) * (up x)
};
struct MatvecJob {
  QMatrix w;
  float* out = nullptr;
  const float* bias = nullptr;
};
bool matvec_q8_supports(const QMatrix& w);

struct RopeParams {
  int n_heads, n_kv_heads, head_dim;
  int rope_dims;      // leading dims of each head that rotate (usually head_dim)
  float freq_base;
  float freq_scale;   // 1 / linear scaling factor
  bool neox;          // NEOX pairs (i, i + d/2); otherwise adjacent pairs (2i, 2i + 1)
  const float* freq_factors = nullptr;  // Llama 3.1-style per-pair divisors (rope_freqs.weight)
  const int* pos_dev = nullptr;         // when set, *pos_dev is added to start_pos (graph replays)
};
// The RMSNorm between a residual product and the next launch can live in the two launches'
// epilogues (the norm kernel then goes away). The norm is a per-row scale, so the producer
// quantizes x∘w without it, 32 rows at a time, and writes each 32 rows' sum of squares; the
// consumer multiplies its products by 1/rms(x) = rsqrt(sum / dim + eps) before the bias.
// norm_out: the producer's half (accumulate mode, one matrix, rows a multiple of 32, integer
// mat-vec; matvec_q8_can_emit_norm). norm_in: the consumer's half (any integer launch).
struct NormPartials {
  const float* weight = nullptr;  // norm_out: the norm's weight w
  Q8Act q{};                      // norm_out: x∘w, quantized
  float* ss = nullptr;            // per 32 elements of x, the sum of their squares
  int dim = 0;                    // norm_in: elements of x (ss holds dim / 32 sums)
  float eps = 0.0f;               // norm_in
};
// One buffer for a handed-over norm input of `dim` elements: the quantized x∘w, then the sums.
size_t norm_partials_bytes(int64_t dim);
NormPartials norm_partials_view(void* base, int64_t dim);  // q, ss and dim set
// What the q/k/v mat-vec can do after its products in place of the RoPE kernel (store mode):
// rows written to `rope_q` and `rope_k` (jobs are recognized by their outputs, so a launch may
// hold any of the three) are rotated in adjacent pairs (rope.neox false) at position
// *rope.pos_dev; rows of `rope_k` and `rope_v` are also stored into the layer's f16 cache at that
// position, as launch_rope_store_kv does.
// The norm_in / norm_out halves: NormPartials above.
struct MatvecTail {
  const float* rope_q = nullptr;
  const float* rope_k = nullptr;
  const float* rope_v = nullptr;
  RopeParams rope{};
  __half* k_cache = nullptr;
  __half* v_cache = nullptr;
  NormPartials norm_in{}, norm_out{};
};

// With out_q (swiglu only, rows % 32 == 0) the products are also quantized into out_q for the
// next mat-vec, saving a launch.
// rows_per_warp (1, 2 or 4; 0 picks by size) must divide every matrix's rows; with out_q it is
// 2 or 4 (0 picks), in blocks of 32 rows.
// Three kernels: weights through registers, each warp's rows copied whole into shared memory
// first (span: narrow rows, 8-byte aligned), or streamed through shared memory by bulk copies
// (large launches on sm_90 whose rows split into whole chunks); `kernel` forces one (tests),
// and forcing one where it cannot run throws std::invalid_argument.
// Matrices usually share one format; a store-mode launch may also take a run of matrices in a
// K-quant or 4/5-bit format followed by a run in Q8_0 or Q6_K (q/k, then a "more bits" v) when
// matvec_q8_can_mix says so: one launch instead of two, through the register or span kernel.
enum class MatvecKernel { automatic, registers, bulk, span };
bool matvec_q8_can_mix(std::span<const MatvecJob> jobs, MatvecMode mode);
void launch_matvec_q8(std::span<const MatvecJob> jobs, const Q8Act& x, MatvecMode mode, cudaStream_t stream, const Q8Act* out_q = nullptr,
                      int rows_per_warp = 0, MatvecKernel kernel = MatvecKernel::automatic, const MatvecTail* tail = nullptr);

// The same products for F16 weights on float activations (x 16-byte aligned, cols % 8 == 0);
// rows_per_warp 1 or 2 (0 picks) must divide every matrix's rows.
bool matvec_f16_supports(const QMatrix& w);
void launch_matvec_f16(std::span<const MatvecJob> jobs, const float* x, MatvecMode mode, cudaStream_t stream, int rows_per_warp = 0,
                       const MatvecTail* tail = nullptr);
// Throws std::invalid_argument where `tail` cannot run on this launch.
void check_matvec_tail(std::span<const MatvecJob> jobs, MatvecMode mode, const MatvecTail& tail);
// Whether launch_matvec_q8 of this one accumulate-mode job can take a norm_out tail, and
// whether that is faster than the norm kernel on this device (the engine's choice).
bool matvec_q8_can_emit_norm(std::span<const MatvecJob> jobs, MatvecMode mode);
bool matvec_q8_emit_norm_pays(std::span<const MatvecJob> jobs);

// out[t] = x[t] / rms(x[t]) * weight, rows of `dim`; as f16 for the tensor-core prefill.
void launch_rmsnorm(const float* x, const float* weight, float* out, int n_rows, int dim, float eps, cudaStream_t stream);
void launch_rmsnorm(const float* x, const float* weight, __half* out, int n_rows, int dim, float eps, cudaStream_t stream);

// x[t][i] += bias[i]
void launch_add_bias(float* x, const float* bias, int n_rows, int dim, cudaStream_t stream);
// x[i] += y[i]
void launch_add(float* x, const float* y, int64_t n, cudaStream_t stream);
// out[t][i] = silu(gate[t][i]) * up[t][i]; as f16 for the tensor-core prefill.
void launch_swiglu(const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream);
void launch_swiglu(const float* gate, const float* up, __half* out, int64_t n, cudaStream_t stream);

// Rotates q and k of tokens at positions start_pos.. in place, then stores k and v (f16) into
// the layer's cache rows at those positions. Cache layout: [position][kv_head][head_dim].
void launch_rope_store_kv(float* q, float* k, const float* v, __half* k_cache, __half* v_cache, int n_tokens, int start_pos,
                          const RopeParams& p, cudaStream_t stream);

struct AttentionParams {
  int n_heads, n_kv_heads, head_dim;
  int start_pos;  // position of the first query token
  int n_tokens;   // query tokens; token t sees cache positions 0..start_pos + t
  // When set, *pos_dev is added to start_pos on the device, so one captured graph serves every
  // position; the launch is then sized for a cache of max_ctx positions.
  const int* pos_dev = nullptr;
  int max_ctx = 0;
};
// Causal grouped-query attention over the f16 cache. q/out: n_tokens x n_heads x head_dim.
// Head dims 64/128/256 with at most 8 query heads per KV head take a kernel that reads each K/V
// row once per query token for the whole head group (prefill and decode).
// `scratch` holds attention_scratch_floats(p) floats (partial results of the sequence split).
// With out_q the output is also quantized for the next mat-vec where it can be (one token,
// head_dim a multiple of 32); returns whether it was.
bool launch_attention(const float* q, const __half* k_cache, const __half* v_cache, float* out, float* scratch,
                      const AttentionParams& p, cudaStream_t stream, const Q8Act* out_q = nullptr);
size_t attention_scratch_floats(int max_tokens, int n_heads, int head_dim, int max_ctx);

}  // namespace orcd
