// Synthetic GGUF models: real dimensions of a named preset, random weights, a real tokenizer
// copied from a vocabulary GGUF. Tests and benchmarks run on these where no model is at hand;
// speed does not depend on the weight values.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "gguf/ggml_types.h"

namespace orcd {

struct SynthPreset {
  std::string name, arch;  // arch: llama or qwen2
  int n_layers, n_embd, n_heads, n_kv_heads, n_ff, n_vocab, n_ctx;
  float rope_base, rms_eps;
  bool tied_embeddings;
};

const std::vector<SynthPreset>& synth_presets();
const SynthPreset* find_synth_preset(const std::string& name);

// Quantization schemes: f16, q8_0, q4_0, q4_k_m (llama.cpp's Q4_K_M mix: Q6_K for the output
// and for attn_v/ffn_down in some layers, Q4_K elsewhere; rows that are not a multiple of 256
// fall back to Q5_0 / Q8_0 as llama.cpp does).
GgmlType synth_tensor_type(const std::string& scheme, const std::string& tensor, int layer, int n_layers, uint64_t row_len);

struct SynthOptions {
  std::string preset, scheme = "q4_k_m", vocab_path, out_path;
  uint64_t seed = 1;
  int threads = 0;  // 0: hardware concurrency
  int layers_override = 0;
};

// Writes the file; returns its size in bytes. Throws std::runtime_error with a clear message.
uint64_t write_synthetic_model(const SynthOptions& opt);

// Fills `n_blocks` blocks of `type` with random quants and scale fields chosen so that the
// dequantized values have roughly the given standard deviation.
void fill_random_blocks(GgmlType type, uint8_t* dst, size_t n_blocks, uint64_t seed, float stddev);

}  // namespace orcd
