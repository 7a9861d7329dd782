#include "gguf/model_info.h"

#include <nlohmann/json.hpp>

#include "gguf/gguf.h"

namespace orcd {

ModelInfo describe_model(const GgufFile& f) {
  ModelInfo m;
  m.path = f.path();
  m.architecture = std::string(f.get_string_or("general.architecture", ""));
  m.name = std::string(f.get_string_or("general.name", ""));
  const std::string a = m.architecture + ".";
  m.n_layers = f.get_u64_or(a + "block_count", 0);
  m.n_embd = f.get_u64_or(a + "embedding_length", 0);
  m.n_heads = f.get_u64_or(a + "attention.head_count", 0);
  m.n_kv_heads = f.get_u64_or(a + "attention.head_count_kv", m.n_heads);
  m.n_ff = f.get_u64_or(a + "feed_forward_length", 0);
  m.context_length = f.get_u64_or(a + "context_length", 2048);
  m.head_dim = f.get_u64_or(a + "attention.key_length", m.n_heads ? m.n_embd / m.n_heads : 0);
  m.rope_dims = f.get_u64_or(a + "rope.dimension_count", m.head_dim);
  m.rope_freq_base = f.get_f64_or(a + "rope.freq_base", 10000.0);
  m.rope_scaling = std::string(f.get_string_or(a + "rope.scaling.type", "none"));
  if (m.rope_scaling.empty()) m.rope_scaling = "none";
  m.rope_scaling_factor = f.get_f64_or(a + "rope.scaling.factor", 1.0);
  m.rms_eps = f.get_f64_or(a + "attention.layer_norm_rms_epsilon", 1e-5);
  m.tokenizer_model = std::string(f.get_string_or("tokenizer.ggml.model", ""));
  if (const GgufValue* toks = f.find("tokenizer.ggml.tokens"); toks && toks->type == GgufType::array)
    m.vocab_size = toks->count;
  m.vocab_size = f.get_u64_or(a + "vocab_size", m.vocab_size);
  m.n_tensors = f.tensors().size();
  for (const auto& t : f.tensors()) {
    m.n_params += t.n_elements;
    m.weight_bytes += t.n_bytes;
    m.weight_vram_bytes += vram_padded(t.n_bytes);
    m.bytes_by_type[std::string(ggml_type_name(t.type))] += t.n_bytes;
  }
  m.decode_read_bytes = m.weight_bytes;
  const GgufTensor* embd = f.find_tensor("token_embd.weight");
  if (embd && f.find_tensor("output.weight") && embd->dims.size() == 2 && embd->dims[1] > 0)
    m.decode_read_bytes -= embd->n_bytes - embd->n_bytes / embd->dims[1];
  return m;
}

nlohmann::json model_info_json(const ModelInfo& m) {
  return {
      {"path", m.path},
      {"architecture", m.architecture},
      {"name", m.name},
      {"n_layers", m.n_layers},
      {"n_embd", m.n_embd},
      {"n_heads", m.n_heads},
      {"n_kv_heads", m.n_kv_heads},
      {"head_dim", m.head_dim},
      {"n_ff", m.n_ff},
      {"context_length", m.context_length},
      {"vocab_size", m.vocab_size},
      {"rope_dims", m.rope_dims},
      {"rope_freq_base", m.rope_freq_base},
      {"rope_scaling", m.rope_scaling},
      {"rms_eps", m.rms_eps},
      {"tokenizer_model", m.tokenizer_model},
      {"n_tensors", m.n_tensors},
      {"n_params", m.n_params},
      {"weight_bytes", m.weight_bytes},
      {"weight_vram_bytes", m.weight_vram_bytes},
      {"decode_read_bytes", m.decode_read_bytes},
      {"bytes_by_type", m.bytes_by_type},
  };
}

}  // namespace orcd
