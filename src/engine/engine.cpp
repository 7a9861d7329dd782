#include "engine/engine.h"

#include <algorithm>

#include "common/cuda_check.h"

namespace orcd {

std::unique_ptr<InferenceEngine> InferenceEngine::load(const std::string& path, const EngineOptions& opt) {
  std::unique_ptr<InferenceEngine> e(new InferenceEngine());
  e->opt_ = opt;
  e->file_ = std::make_unique<GgufFile>(GgufFile::open(path));
  e->cfg_ = ModelConfig::from_gguf(*e->file_);
  try {
    e->tok_ = std::make_unique<Tokenizer>(Tokenizer::from_gguf(*e->file_));
  } catch (const TokenizerError& err) {
    throw ModelError(std::string("tokenizer: ") + err.what());
  }
  if (e->tok_->vocab_size() != e->cfg_.n_vocab)
    throw ModelError(path + ": tokenizer has " + std::to_string(e->tok_->vocab_size()) + " tokens but the embedding has " +
                     std::to_string(e->cfg_.n_vocab) + " rows");
  e->n_ctx_ = opt.n_ctx > 0 ? opt.n_ctx : std::min(e->cfg_.n_ctx_train, 4096);
  if (e->n_ctx_ < 1) throw ModelError("context size must be positive");
  const int T = std::max(1, std::min(opt.max_batch_tokens, e->n_ctx_));
  e->opt_.max_batch_tokens = T;

  // Fit check before the first allocation.
  e->plan_ = plan_vram(*e->file_, e->cfg_, e->n_ctx_, T);
  CUDA_CHECK(cudaSetDevice(opt.device));
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  const uint64_t headroom = headroom_bytes(total_b, opt.reserved_vram ? &*opt.reserved_vram : nullptr, opt.dedicated_gpu);
  if (opt.ledger) {
    try {
      e->admission_ = opt.ledger->reserve(e->plan_.total(), "model " + path);
    } catch (const InsufficientVramError& err) {
      // Re-say it with the plan's breakdown and what to try.
      check_fits(e->plan_, err.free_bytes(), err.headroom(), opt.device, path, e->n_ctx_);
      throw;
    }
  } else {
    check_fits(e->plan_, free_b, headroom, opt.device, path, e->n_ctx_);
  }
  if (opt.vram_limit && e->plan_.total() > opt.vram_limit)
    throw InsufficientVramError("POOL_UNAVAILABLE (insufficient VRAM): model " + path + " needs " + std::to_string(e->plan_.total()) +
                                    " bytes (" + e->plan_.breakdown() + ") but this worker's VRAM limit is " +
                                    std::to_string(opt.vram_limit) + " bytes. Try: a shorter context or a smaller model.",
                                e->plan_.total(), opt.vram_limit, 0);

  // From here on, an exception destroys `e`, whose buffers free themselves.
  e->alloc_ = std::make_unique<DeviceAllocator>(opt.device, e->tracker_, opt.alloc_limit_for_tests);
  CUDA_CHECK(cudaStreamCreateWithFlags(&e->stream_, cudaStreamNonBlocking));
  CUDA_CHECK(cudaStreamCreateWithFlags(&e->readback_, cudaStreamNonBlocking));
  CUDA_CHECK(cudaEventCreateWithFlags(&e->sampled_, cudaEventDisableTiming));
  e->weights_ = load_weights(*e->file_, e->cfg_, *e->alloc_, opt.progress);
  const ModelConfig& c = e->cfg_;
  const size_t kv_bytes = static_cast<size_t>(c.n_layers) * e->n_ctx_ * c.kv_dim() * sizeof(__half);
  e->k_cache_ = e->alloc_->alloc(kv_bytes, VramPurpose::kv_cache, "K cache");
  e->v_cache_ = e->alloc_->alloc(kv_bytes, VramPurpose::kv_cache, "V cache");
  const WorkspaceSizes w = workspace_sizes(c, e->n_ctx_, T);
  auto ws = [&](uint64_t bytes, const char* what) {
    return bytes ? e->alloc_->alloc(bytes, VramPurpose::workspace, what) : DeviceBuffer{};
  };
  e->ws_.x = ws(w.x, "hidden state");
  e->ws_.xb = ws(w.xb, "normed hidden state");
  e->ws_.q = ws(w.q, "queries");
  e->ws_.att = ws(w.att, "attention output");
  e->ws_.k = ws(w.k, "keys");
  e->ws_.v = ws(w.v, "values");
  e->ws_.hb = ws(w.hb, "ffn gate");
  e->ws_.hb2 = ws(w.hb2, "ffn up");
  e->ws_.att_scratch = ws(w.att_scratch, "attention partials");
  e->ws_.ids = ws(w.ids, "token ids");
  e->ws_.history = ws(w.history, "penalty history");
  e->ws_.xq = ws(w.xq, "quantized activations");
  e->ws_.hq = ws(w.hq, "quantized ffn product");
  e->ws_.nq = ws(w.nq, "norm input from the residual product");
  e->ws_.step = ws(w.step, "decode step inputs");
  e->ws_.x16 = ws(w.x16, "f16 activations (prefill)");
  e->ws_.w16 = ws(w.w16, "f16 weight scratch (prefill)");
  e->ws_.gemm = ws(w.gemm, "cuBLAS workspace");
  if (w.gemm) e->gemm_ = std::make_unique<TensorCoreGemm>(e->stream_, e->ws_.gemm.get(), w.gemm);
  e->ws_.logits = e->alloc_->alloc(static_cast<size_t>(c.n_vocab) * 4, VramPurpose::logits, "logits");
  e->ws_.last_hidden = e->alloc_->alloc(c.n_embd * 4, VramPurpose::logits, "final hidden state");
  e->ws_.token = e->alloc_->alloc(sample_buffer_bytes(), VramPurpose::logits, "sampled token");
  CUDA_CHECK(cudaMemsetAsync(e->ws_.token.get(), 0, sample_buffer_bytes(), e->stream_));
  CUDA_CHECK(cudaStreamSynchronize(e->stream_));
  e->admission_.commit();
  return e;
}

InferenceEngine::~InferenceEngine() {
  if (stream_) cudaStreamSynchronize(stream_);
  if (decode_graph_) cudaGraphExecDestroy(decode_graph_);
  gemm_.reset();  // the cuBLAS handle is bound to the stream
  if (sampled_) cudaEventDestroy(sampled_);
  if (readback_) cudaStreamDestroy(readback_);
  if (stream_) cudaStreamDestroy(stream_);
}

void InferenceEngine::forward(std::span<const int32_t> tokens, int start_pos) {
  if (start_pos < 0 || start_pos + static_cast<int64_t>(tokens.size()) > n_ctx_)
    throw std::out_of_range("forward: positions " + std::to_string(start_pos) + ".." + std::to_string(start_pos + tokens.size()) +
                            " exceed the context of " + std::to_string(n_ctx_));
  for (int32_t id : tokens)
    if (id < 0 || id >= cfg_.n_vocab) throw std::out_of_range("forward: token id " + std::to_string(id) + " outside the vocabulary");
  CUDA_CHECK(cudaSetDevice(opt_.device));
  if (tokens.size() == 1) {
    // Inputs of the graph: the token and its position, read on the device by its kernels.
    launch_set_decode_step(tokens[0], start_pos, ws_.step.as<int32_t>(), stream_);
    launch_decode_graph();
    return;
  }
  const int T = opt_.max_batch_tokens;
  for (size_t off = 0; off < tokens.size(); off += T) {
    const int n = static_cast<int>(std::min<size_t>(T, tokens.size() - off));
    forward_chunk(tokens.data() + off, n, start_pos + static_cast<int>(off), off + n == tokens.size());
  }
}

void InferenceEngine::launch_decode_graph() {
  if (!decode_graph_) {
    cudaGraph_t graph = nullptr;
    // Thread-local capture: other threads (health checks, the GPU monitor) may call CUDA meanwhile.
    CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    try {
      decode_step();
    } catch (...) {
      cudaStreamEndCapture(stream_, &graph);
      if (graph) cudaGraphDestroy(graph);
      throw;
    }
    CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    const cudaError_t err = cudaGraphInstantiate(&decode_graph_, graph, 0);
    cudaGraphDestroy(graph);
    CUDA_CHECK(err);
  }
  CUDA_CHECK(cudaGraphLaunch(decode_graph_, stream_));
}

std::vector<float> InferenceEngine::logits() const {
  std::vector<float> out(cfg_.n_vocab);
  CUDA_CHECK(cudaMemcpyAsync(out.data(), ws_.logits.get(), out.size() * 4, cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  return out;
}

void InferenceEngine::enqueue_sample(const SamplingParams& p, std::span<const int32_t> history, uint64_t step, int next_pos) {
  const int n_hist = static_cast<int>(std::min<size_t>({history.size(), static_cast<size_t>(std::max(0, p.penalty_last_n)), 4096}));
  if (p.repetition_penalty != 1.0f && n_hist > 0) {
    CUDA_CHECK(cudaMemcpyAsync(ws_.history.get(), history.data() + history.size() - n_hist, n_hist * 4, cudaMemcpyHostToDevice, stream_));
    launch_repetition_penalty(ws_.logits.as<float>(), ws_.history.as<int32_t>(), n_hist, p.repetition_penalty, stream_);
  }
  int32_t* step_out = next_pos >= 0 ? ws_.step.as<int32_t>() : nullptr;  // the next decode step's inputs, written by the sampler
  launch_sample(ws_.logits.as<float>(), cfg_.n_vocab, p, step, ws_.token.as<int32_t>(), stream_, step_out, next_pos);
}

int32_t InferenceEngine::sample(const SamplingParams& p, std::span<const int32_t> history, uint64_t step) {
  CUDA_CHECK(cudaSetDevice(opt_.device));
  enqueue_sample(p, history, step, -1);
  int32_t tok = -1;
  CUDA_CHECK(cudaMemcpyAsync(&tok, ws_.token.get(), 4, cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  return tok;
}

int32_t InferenceEngine::sample_and_step(const SamplingParams& p, std::span<const int32_t> history, uint64_t step, int next_pos) {
  if (next_pos < 0) return sample(p, history, step);
  if (next_pos >= n_ctx_)
    throw std::out_of_range("sample_and_step: position " + std::to_string(next_pos) + " is past the context of " + std::to_string(n_ctx_));
  CUDA_CHECK(cudaSetDevice(opt_.device));
  enqueue_sample(p, history, step, next_pos);
  CUDA_CHECK(cudaEventRecord(sampled_, stream_));
  launch_decode_graph();
  // The token is read on a second stream that waits for the sampling only, not for the step.
  int32_t tok = -1;
  CUDA_CHECK(cudaStreamWaitEvent(readback_, sampled_, 0));
  CUDA_CHECK(cudaMemcpyAsync(&tok, ws_.token.get(), 4, cudaMemcpyDeviceToHost, readback_));
  CUDA_CHECK(cudaStreamSynchronize(readback_));
  return tok;
}

}  // namespace orcd
