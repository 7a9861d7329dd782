// describe_model: dimensions from metadata, sizes recomputed from the tensor table.
#include <gtest/gtest.h>

#include "gguf/gguf.h"
#include "gguf/model_info.h"
#include "testutil.h"

using namespace orcd;

TEST(ModelInfo, TrainedLlamaModel) {
  const auto g = GgufFile::open(test::testdata("models/copy-llama-h256-q4_0.gguf"));
  const ModelInfo m = describe_model(g);
  // Shape as models/README.md documents it.
  EXPECT_EQ(m.architecture, "llama");
  EXPECT_EQ(m.n_layers, 4u);
  EXPECT_EQ(m.n_embd, 256u);
  EXPECT_EQ(m.n_heads, 4u);
  EXPECT_EQ(m.n_kv_heads, 2u);
  EXPECT_EQ(m.head_dim, 64u);
  EXPECT_EQ(m.n_ff, 704u);
  EXPECT_EQ(m.vocab_size, 32000u);
  EXPECT_EQ(m.tokenizer_model, "llama");
  // Byte totals agree with the types' block layouts applied to each tensor's shape.
  uint64_t bytes = 0, vram = 0, q4 = 0;
  for (const auto& t : g.tensors()) {
    const auto& tr = ggml_traits(t.type);
    const uint64_t b = t.n_elements / tr.block_size * tr.type_size;
    bytes += b;
    vram += (b + 255) / 256 * 256;
    if (t.type == GgmlType::Q4_0) q4 += b;
  }
  EXPECT_EQ(m.weight_bytes, bytes);
  EXPECT_EQ(m.weight_vram_bytes, vram);
  EXPECT_EQ(m.bytes_by_type.at("Q4_0"), q4);
  EXPECT_GE(m.weight_vram_bytes, m.weight_bytes);
  EXPECT_EQ(m.n_tensors, 38u);
  // No output matrix: the head reads the whole embedding table, so decode reads every byte.
  ASSERT_EQ(g.find_tensor("output.weight"), nullptr);
  EXPECT_EQ(m.decode_read_bytes, m.weight_bytes);
}
