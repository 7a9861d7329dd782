// A model's shape and size as its GGUF metadata describes it (what `inspect` prints).
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace orcd {

class GgufFile;

struct ModelInfo {
  std::string path;
  std::string architecture;  // general.architecture
  std::string name;          // general.name
  uint64_t n_layers = 0, n_embd = 0, n_heads = 0, n_kv_heads = 0, n_ff = 0;
  // As the engine reads them: absent keys take the defaults it uses (context 2048, head_dim
  // embedding / heads, RMS epsilon 1e-5, RoPE base 10000 over the whole head, no scaling).
  uint64_t context_length = 0, vocab_size = 0, head_dim = 0, rope_dims = 0;
  double rope_freq_base = 0, rms_eps = 0;
  std::string rope_scaling = "none";
  double rope_scaling_factor = 1.0;
  uint64_t n_tensors = 0;
  uint64_t n_params = 0;
  uint64_t weight_bytes = 0;       // tensor data as stored
  uint64_t weight_vram_bytes = 0;  // as allocated: each tensor padded to the allocator's 256 B
  // What one decode step reads of the weights: all of them, except that a token embedding
  // table with an output matrix of its own gives only its one row.
  uint64_t decode_read_bytes = 0;
  std::map<std::string, uint64_t> bytes_by_type;
  std::string tokenizer_model;
};

// Device allocations are padded to this many bytes: the allocator and every VRAM estimate.
constexpr uint64_t kVramAllocAlign = 256;
constexpr uint64_t vram_padded(uint64_t bytes) { return (bytes + kVramAllocAlign - 1) / kVramAllocAlign * kVramAllocAlign; }

ModelInfo describe_model(const GgufFile& f);
nlohmann::json model_info_json(const ModelInfo& m);

}  // namespace orcd
