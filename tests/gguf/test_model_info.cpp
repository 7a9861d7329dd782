// describe_model: dimensions from metadata, sizes recomputed from the tensor table.
#include <gtest/gtest.h>

#include <functional>

#include "gguf/gguf.h"
#include "engine/model.h"
#include "gguf/gguf_writer.h"
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

// The engine's configuration reads the same values: one parse of the hyperparameters.
TEST(ModelInfo, TheEngineConfigurationAgreesAndRefusesWhatItCannotRun) {
  const auto g = GgufFile::open(test::testdata("models/copy-llama-h256-q8_0.gguf"));
  const ModelInfo m = describe_model(g);
  const ModelConfig c = ModelConfig::from_gguf(g);
  EXPECT_EQ(static_cast<uint64_t>(c.n_layers), m.n_layers);
  EXPECT_EQ(static_cast<uint64_t>(c.n_embd), m.n_embd);
  EXPECT_EQ(static_cast<uint64_t>(c.n_kv_heads), m.n_kv_heads);
  EXPECT_EQ(static_cast<uint64_t>(c.head_dim), m.head_dim);
  EXPECT_EQ(static_cast<uint64_t>(c.rope_dims), m.rope_dims);
  EXPECT_EQ(static_cast<uint64_t>(c.n_ctx_train), m.context_length);
  EXPECT_EQ(c.n_ctx_train, 4096);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-5f);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(c.n_vocab, 32000);

  auto with = [](const std::function<void(GgufWriter&)>& edit) {
    GgufWriter w;
    w.set_string("general.architecture", "llama");
    w.set_u32("llama.block_count", 2);
    w.set_u32("llama.embedding_length", 64);
    w.set_u32("llama.attention.head_count", 4);
    w.set_u32("llama.feed_forward_length", 128);
    edit(w);
    w.add_tensor("token_embd.weight", {64, 8}, GgmlType::F32, std::vector<uint8_t>(64 * 8 * 4, 0));
    return GgufFile::from_bytes(w.to_bytes(), "edited.gguf");
  };
  const ModelConfig ok = ModelConfig::from_gguf(with([](GgufWriter&) {}));
  EXPECT_EQ(ok.head_dim, 16);
  EXPECT_EQ(ok.n_ctx_train, 2048);  // the default when absent
  auto error_of = [&](const std::function<void(GgufWriter&)>& edit) {
    try {
      ModelConfig::from_gguf(with(edit));
    } catch (const ModelError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of([](GgufWriter& w) { w.set_string("llama.rope.scaling.type", "yarn"); }).find("yarn"), std::string::npos);
  EXPECT_NE(error_of([](GgufWriter& w) { w.set_u32("llama.attention.head_count_kv", 3); }).find("head counts"), std::string::npos);
  EXPECT_NE(error_of([](GgufWriter& w) { w.set_string("llama.context_length", "long"); }).find("context_length"), std::string::npos);
}
