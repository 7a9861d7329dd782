// Test-only CPU reference: dequantizers written from the block layouts, and a float64 forward
// pass of Llama/Qwen2. Never linked into the worker.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/model.h"
#include "gguf/ggml_types.h"

namespace orcd {
class GgufFile;
}

namespace orcd::ref {

float half_to_float(uint16_t h);
// Dequantizes n elements (a whole number of blocks) of `type` from `data`.
std::vector<float> dequantize(GgmlType type, const uint8_t* data, int64_t n);

// Float64 forward pass over the whole sequence; returns logits for every position.
class RefModel {
 public:
  RefModel(const GgufFile& f, const ModelConfig& c);
  // Appends tokens at the next positions and returns each one's logits.
  std::vector<std::vector<double>> forward(const std::vector<int32_t>& tokens);

 private:
  struct Mat {
    int64_t rows = 0, cols = 0;
    std::vector<double> w;
  };
  Mat mat(const GgufFile& f, const std::string& name) const;
  std::vector<double> vec(const GgufFile& f, const std::string& name) const;
  std::vector<double> matvec(const Mat& m, const std::vector<double>& x) const;

  ModelConfig c_;
  Mat tok_embd_, output_;
  std::vector<double> output_norm_;
  struct Layer {
    std::vector<double> attn_norm, ffn_norm, bq, bk, bv;
    Mat wq, wk, wv, wo, gate, up, down;
  };
  std::vector<Layer> layers_;
  std::vector<std::vector<std::vector<double>>> kcache_, vcache_;  // [layer][pos][kv_dim]
};

}  // namespace orcd::ref
