// The synthetic-model tool: presets' dimensions, the Q4_K_M mix, tokenizer copy and padding.
#include <gtest/gtest.h>

#include <filesystem>

#include "engine/model.h"
#include "engine/synth.h"
#include "gguf/gguf.h"
#include "gguf/model_info.h"
#include "testutil.h"
#include "tokenizer/tokenizer.h"

using namespace orcd;

TEST(Synth, Q4KMMixFollowsLlamaCppConvention) {
  EXPECT_EQ(synth_tensor_type("q4_k_m", "output.weight", -1, 32, 4096), GgmlType::Q6_K);
  EXPECT_EQ(synth_tensor_type("q4_k_m", "blk.0.ffn_down.weight", 0, 32, 14336), GgmlType::Q6_K);   // first eighth
  EXPECT_EQ(synth_tensor_type("q4_k_m", "blk.5.ffn_down.weight", 5, 32, 14336), GgmlType::Q4_K);
  EXPECT_EQ(synth_tensor_type("q4_k_m", "blk.6.attn_v.weight", 6, 32, 4096), GgmlType::Q6_K);      // every third
  EXPECT_EQ(synth_tensor_type("q4_k_m", "blk.31.attn_v.weight", 31, 32, 4096), GgmlType::Q6_K);    // last eighth
  EXPECT_EQ(synth_tensor_type("q4_k_m", "blk.3.attn_q.weight", 3, 32, 4096), GgmlType::Q4_K);
  EXPECT_EQ(synth_tensor_type("q4_k_m", "blk.3.attn_q.weight", 3, 24, 896), GgmlType::Q5_0);       // 896 % 256 != 0
  EXPECT_EQ(synth_tensor_type("q4_k_m", "blk.0.attn_v.weight", 0, 24, 896), GgmlType::Q8_0);
  EXPECT_EQ(synth_tensor_type("q8_0", "blk.0.attn_q.weight", 0, 2, 256), GgmlType::Q8_0);
  EXPECT_THROW(synth_tensor_type("q3_xx", "x", 0, 1, 256), std::invalid_argument);
}

namespace {
// Writes a preset in a scheme, with a vocabulary from the test data, to dir/m.gguf.
SynthOptions write_preset(const std::string& dir, const std::string& preset, const std::string& scheme, const std::string& vocab) {
  SynthOptions o;
  o.preset = preset;
  o.scheme = scheme;
  o.vocab_path = test::testdata("tokenizer/" + vocab);
  o.out_path = dir + "/m.gguf";
  write_synthetic_model(o);
  return o;
}
}  // namespace

// A model with an output matrix of its own: decode reads one row of the embedding table.
TEST(Synth, DecodeReadsOneEmbeddingRowWhereTheOutputIsUntied) {
  const std::string dir = test::temp_dir();
  const SynthOptions o = write_preset(dir, "tiny-llama", "f16", "ggml-vocab-llama-spm.gguf");
  const auto g = GgufFile::open(o.out_path);
  const ModelInfo m = describe_model(g);
  const GgufTensor* embd = g.find_tensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  ASSERT_NE(g.find_tensor("output.weight"), nullptr);
  const uint64_t row = 256 * 2;  // 256 f16 values
  EXPECT_EQ(embd->n_bytes % row, 0u);
  EXPECT_EQ(m.decode_read_bytes, m.weight_bytes - embd->n_bytes + row);
  std::filesystem::remove_all(dir);
}

TEST(Synth, WritesALoadableModelWithTheVocabularyItWasGiven) {
  const std::string dir = test::temp_dir();
  SynthOptions o = write_preset(dir, "tiny-qwen2", "q4_k_m", "qwen2-vocab.gguf");
  const auto g = GgufFile::open(o.out_path);
  const auto cfg = ModelConfig::from_gguf(g);
  EXPECT_EQ(cfg.arch, Arch::qwen2);
  EXPECT_EQ(cfg.n_layers, 2);
  EXPECT_EQ(cfg.n_vocab, 151936);
  EXPECT_TRUE(cfg.tied_embeddings);
  EXPECT_NE(g.find_tensor("blk.1.attn_k.bias"), nullptr);
  const auto tok = Tokenizer::from_gguf(g);
  const auto ref = Tokenizer::from_gguf(GgufFile::open(o.vocab_path));
  EXPECT_EQ(tok.encode("Hello, world! 123"), ref.encode("Hello, world! 123"));

  // A smaller vocabulary is padded with unused tokens up to the preset's embedding rows.
  o.preset = "qwen2.5-0.5b";
  o.layers_override = 1;
  o.vocab_path = test::testdata("tokenizer/ggml-vocab-gpt-2.gguf");
  o.out_path = dir + "/pad.gguf";
  write_synthetic_model(o);
  const auto p = GgufFile::open(o.out_path);
  EXPECT_EQ(p.get_string_array("tokenizer.ggml.tokens").size(), 151936u);
  EXPECT_EQ(describe_model(p).n_embd, 896u);
  const auto ptok = Tokenizer::from_gguf(p);
  EXPECT_EQ(ptok.vocab_size(), 151936);
  EXPECT_EQ(ptok.decode(ptok.encode("round trip")), "round trip");

  // Same seed, same bytes; another seed, other weights.
  o.out_path = dir + "/a.gguf";
  write_synthetic_model(o);
  o.out_path = dir + "/b.gguf";
  o.seed = 2;
  write_synthetic_model(o);
  EXPECT_EQ(test::read_file(dir + "/pad.gguf"), test::read_file(dir + "/a.gguf"));
  EXPECT_NE(test::read_file(dir + "/a.gguf"), test::read_file(dir + "/b.gguf"));
  o.preset = "nope";
  EXPECT_THROW(write_synthetic_model(o), std::runtime_error);
  std::filesystem::remove_all(dir);
}
