#include "engine/model.h"

#include <cstring>
#include <map>
#include <set>

#include "common/cuda_check.h"
#include "gguf/gguf.h"
#include "gguf/model_info.h"
#include "vram/staging.h"

namespace orcd {

ModelConfig ModelConfig::from_gguf(const GgufFile& f) {
  ModelInfo m;
  try {
    m = describe_model(f);  // the one reading of the hyperparameters; this adds what the engine requires
  } catch (const GgufError& e) {
    throw ModelError(e.what());
  }
  ModelConfig c;
  c.arch_name = m.architecture;
  if (c.arch_name == "llama") c.arch = Arch::llama;
  else if (c.arch_name == "qwen2") c.arch = Arch::qwen2;
  else
    throw ModelError(f.path() + ": architecture '" + c.arch_name + "' is not supported (supported: llama, qwen2)");
  const std::string a = c.arch_name + ".";
  for (const auto& [key, v] : {std::pair{"block_count", m.n_layers}, {"embedding_length", m.n_embd}, {"attention.head_count", m.n_heads},
                               {"feed_forward_length", m.n_ff}})
    if (v == 0 || v > (1u << 20)) throw ModelError(f.path() + ": " + a + key + " is missing or out of range");
  c.n_layers = static_cast<int>(m.n_layers);
  c.n_embd = static_cast<int>(m.n_embd);
  c.n_heads = static_cast<int>(m.n_heads);
  c.n_kv_heads = static_cast<int>(m.n_kv_heads);
  c.n_ff = static_cast<int>(m.n_ff);
  c.n_ctx_train = static_cast<int>(std::min<uint64_t>(m.context_length, 1u << 24));
  if (c.n_kv_heads <= 0 || c.n_heads % c.n_kv_heads != 0 || c.n_embd % c.n_heads != 0)
    throw ModelError(f.path() + ": inconsistent head counts (" + std::to_string(c.n_heads) + " heads, " + std::to_string(c.n_kv_heads) +
                     " KV heads, embedding " + std::to_string(c.n_embd) + ")");
  c.head_dim = static_cast<int>(std::min<uint64_t>(m.head_dim, 1u << 20));
  c.rms_eps = static_cast<float>(m.rms_eps);
  c.rope_base = static_cast<float>(m.rope_freq_base);
  c.rope_dims = static_cast<int>(std::min<uint64_t>(m.rope_dims, 1u << 20));
  if (m.rope_scaling == "linear") c.rope_freq_scale = 1.0f / static_cast<float>(m.rope_scaling_factor);
  else if (m.rope_scaling != "none")
    throw ModelError(f.path() + ": rope scaling '" + m.rope_scaling + "' is not supported (none, linear)");
  c.rope_neox = c.arch == Arch::qwen2;
  c.qkv_bias = c.arch == Arch::qwen2;
  c.tied_embeddings = f.find_tensor("output.weight") == nullptr;
  const GgufTensor* emb = f.find_tensor("token_embd.weight");
  if (!emb) throw ModelError(f.path() + ": no token_embd.weight tensor");
  c.n_vocab = static_cast<int>(emb->dims.size() > 1 ? emb->dims[1] : 0);
  if (c.head_dim > 256 || c.rope_dims > c.head_dim || c.rope_dims % 2)
    throw ModelError(c.arch_name + ": head_dim " + std::to_string(c.head_dim) + " / rope dims " + std::to_string(c.rope_dims) +
                     " not supported (head_dim <= 256)");
  return c;
}

uint64_t weights_vram_bytes(const GgufFile& f) {
  uint64_t total = 0;
  for (const auto& t : f.tensors()) total += DeviceAllocator::padded(t.n_bytes);
  return total;
}

namespace {

struct Want {
  std::string name;
  std::vector<uint64_t> dims;  // expected ne0, ne1
  bool optional = false;
};

// Row j of each head takes source row j / 2 (even j) or j / 2 + rope_dims / 2 (odd j) below
// rope_dims; the rest stay. A row is a matrix row in its GGML format, or one float of a bias.
void interleave_rotary_pairs(const GgufTensor& t, const ModelConfig& c, std::vector<uint8_t>& out) {
  const bool matrix = t.dims.size() > 1;
  const size_t row = matrix ? ggml_row_bytes(t.type, t.dims[0]) : sizeof(float);
  const uint64_t rows = matrix ? t.dims[1] : t.dims[0];
  const int hd = c.head_dim, half = c.rope_dims / 2;
  out.resize(t.n_bytes);
  for (uint64_t j = 0; j < rows; ++j) {
    const uint64_t head = j / hd, d = j % hd;
    const uint64_t from = d >= static_cast<uint64_t>(c.rope_dims) ? d : d % 2 == 0 ? d / 2 : d / 2 + half;
    std::memcpy(out.data() + j * row, t.data + (head * hd + from) * row, row);
  }
}

}  // namespace

ModelWeights load_weights(const GgufFile& f, const ModelConfig& c, DeviceAllocator& alloc, const LoadProgress& progress) {
  // 1. Check every tensor we will use before touching the GPU.
  const auto E = static_cast<uint64_t>(c.n_embd), Q = static_cast<uint64_t>(c.q_dim()), KV = static_cast<uint64_t>(c.kv_dim()),
             F = static_cast<uint64_t>(c.n_ff), V = static_cast<uint64_t>(c.n_vocab);
  std::vector<Want> want = {{"token_embd.weight", {E, V}}, {"output_norm.weight", {E}}, {"output.weight", {E, V}, true},
                            {"rope_freqs.weight", {static_cast<uint64_t>(c.rope_dims / 2)}, true}};
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    want.push_back({p + "attn_norm.weight", {E}});
    want.push_back({p + "attn_q.weight", {E, Q}});
    want.push_back({p + "attn_k.weight", {E, KV}});
    want.push_back({p + "attn_v.weight", {E, KV}});
    want.push_back({p + "attn_output.weight", {Q, E}});
    want.push_back({p + "ffn_norm.weight", {E}});
    want.push_back({p + "ffn_gate.weight", {E, F}});
    want.push_back({p + "ffn_up.weight", {E, F}});
    want.push_back({p + "ffn_down.weight", {F, E}});
    if (c.qkv_bias) {
      want.push_back({p + "attn_q.bias", {Q}});
      want.push_back({p + "attn_k.bias", {KV}});
      want.push_back({p + "attn_v.bias", {KV}});
    }
  }
  for (const auto& w : want) {
    const GgufTensor* t = f.find_tensor(w.name);
    if (!t) {
      if (w.optional) continue;
      throw ModelError(f.path() + ": missing tensor '" + w.name + "' for architecture " + c.arch_name);
    }
    if (t->dims != w.dims) {
      std::string got, exp;
      for (auto d : t->dims) got += (got.empty() ? "" : "x") + std::to_string(d);
      for (auto d : w.dims) exp += (exp.empty() ? "" : "x") + std::to_string(d);
      throw ModelError(f.path() + ": tensor '" + w.name + "' has shape " + got + ", expected " + exp);
    }
    const bool vector = w.dims.size() == 1;
    if (vector ? t->type != GgmlType::F32 : !matmul_supports(t->type))
      throw ModelError(f.path() + ": tensor '" + w.name + "' has type " + std::string(ggml_type_name(t->type)) +
                       ", which the engine does not support" + (vector ? " for 1-D tensors (F32 only)" : ""));
  }

  // 2. One allocation for all tensors, each at a 256-byte aligned offset.
  std::map<std::string_view, uint64_t> offset;
  uint64_t total = 0;
  for (const auto& t : f.tensors()) {
    offset[t.name] = total;
    total += DeviceAllocator::padded(t.n_bytes);
  }
  ModelWeights w;
  w.storage = alloc.alloc(total, VramPurpose::weights, "model weights (" + std::to_string(f.tensors().size()) + " tensors)");
  auto* base = w.storage.as<uint8_t>();

  // 3. Upload through the pinned staging buffer; the mmap'd file is the only host copy besides
  // one tensor at a time of NEOX q/k rows being interleaved (see ModelWeights), only among the
  // tensors checked above.
  w.qk_rows_interleaved = c.rope_neox;
  std::set<std::string, std::less<>> to_interleave;
  if (w.qk_rows_interleaved)
    for (int l = 0; l < c.n_layers; ++l)
      for (const char* part : {"attn_q.weight", "attn_k.weight", "attn_q.bias", "attn_k.bias"}) {
        const std::string name = "blk." + std::to_string(l) + "." + part;
        if (f.find_tensor(name) && (c.qkv_bias || !name.ends_with(".bias"))) to_interleave.insert(name);
      }
  {
    StagingUploader up;
    uint64_t done = 0, raw_total = 0;
    for (const auto& t : f.tensors()) raw_total += t.n_bytes;
    std::vector<uint8_t> interleaved, relaid;
    for (const auto& t : f.tensors()) {
      const uint8_t* src = t.data;
      if (to_interleave.contains(t.name)) {
        interleave_rotary_pairs(t, c, interleaved);
        src = interleaved.data();
      }
      const WeightLayout layout = device_layout(t.type, static_cast<int64_t>(t.dims[0]));
      if (layout == WeightLayout::ggml) {
        up.upload(base + offset[t.name], src, t.n_bytes);
      } else {  // rearranged a slice of whole rows at a time, so the host holds one slice
        const size_t row = ggml_row_bytes(t.type, t.dims[0]);
        const size_t slice = std::max<size_t>(1, (8u << 20) / row) * row;
        relaid.resize(std::min<size_t>(slice, t.n_bytes));
        for (size_t off = 0; off < t.n_bytes; off += slice) {
          const size_t n = std::min(slice, t.n_bytes - off);
          to_device_layout(layout, std::span(src + off, n), std::span(relaid.data(), n));
          up.upload(base + offset[t.name] + off, relaid.data(), n);
        }
      }
      done += t.n_bytes;
      if (progress) progress(done, raw_total);
    }
    up.finish();
  }

  auto mat = [&](const std::string& name) {
    const GgufTensor* t = f.find_tensor(name);
    QMatrix m;
    m.data = base + offset[t->name];
    m.type = t->type;
    m.cols = static_cast<int64_t>(t->dims[0]);
    m.rows = static_cast<int64_t>(t->dims.size() > 1 ? t->dims[1] : 1);
    m.row_bytes = ggml_row_bytes(t->type, t->dims[0]);
    m.layout = device_layout(t->type, m.cols);
    return m;
  };
  auto vec = [&](const std::string& name) -> const float* {
    const GgufTensor* t = f.find_tensor(name);
    return t ? reinterpret_cast<const float*>(base + offset[t->name]) : nullptr;
  };
  w.tok_embd = mat("token_embd.weight");
  w.output_norm = vec("output_norm.weight");
  w.output = c.tied_embeddings ? w.tok_embd : mat("output.weight");
  w.rope_freqs = vec("rope_freqs.weight");
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LayerWeights L;
    L.attn_norm = vec(p + "attn_norm.weight");
    L.wq = mat(p + "attn_q.weight");
    L.wk = mat(p + "attn_k.weight");
    L.wv = mat(p + "attn_v.weight");
    L.wo = mat(p + "attn_output.weight");
    L.bq = vec(p + "attn_q.bias");
    L.bk = vec(p + "attn_k.bias");
    L.bv = vec(p + "attn_v.bias");
    L.ffn_norm = vec(p + "ffn_norm.weight");
    L.w_gate = mat(p + "ffn_gate.weight");
    L.w_up = mat(p + "ffn_up.weight");
    L.w_down = mat(p + "ffn_down.weight");
    w.layers.push_back(L);
  }
  return w;
}

}  // namespace orcd
