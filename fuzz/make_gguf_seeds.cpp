// Writes small valid GGUF files into the directory given as argv[1], as the fuzzer's seeds.
#include <cstdio>
#include <string>

#include "gguf/gguf_writer.h"

using namespace orcd;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_gguf_seeds DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  int n = 0;
  auto save = [&](const GgufWriter& w) { w.write(dir + "/seed-" + std::to_string(n++) + ".gguf"); };

  GgufWriter scalars;
  scalars.set_u8("a.u8", 1);
  scalars.set_u32("a.u32", 2);
  scalars.set_i32("a.i32", -3);
  scalars.set_u64("a.u64", 4);
  scalars.set_f32("a.f32", 0.5f);
  scalars.set_f64("a.f64", 0.25);
  scalars.set_bool("a.bool", true);
  scalars.set_string("general.architecture", "llama");
  save(scalars);

  GgufWriter arrays;
  arrays.set_string_array("tokenizer.ggml.tokens", std::vector<std::string>{"<s>", "</s>", "a", "b", "ab"});
  const float sc[] = {0, 0, -1, -2, -0.5f};
  arrays.set_f32_array("tokenizer.ggml.scores", sc);
  const int32_t ty[] = {3, 3, 1, 1, 1};
  arrays.set_i32_array("tokenizer.ggml.token_type", ty);
  save(arrays);

  GgufWriter tensors(64);
  tensors.set_string("general.architecture", "qwen2");
  tensors.set_u32("qwen2.block_count", 1);
  tensors.add_tensor("token_embd.weight", {32, 2}, GgmlType::Q8_0, std::vector<uint8_t>(68, 3));
  tensors.add_tensor("blk.0.attn_norm.weight", {8}, GgmlType::F32, std::vector<uint8_t>(32, 1));
  tensors.add_tensor("blk.0.ffn_down.weight", {256, 1}, GgmlType::Q6_K, std::vector<uint8_t>(210, 9));
  tensors.add_tensor("output.weight", {16, 2, 1, 1}, GgmlType::F16, std::vector<uint8_t>(64, 2));
  save(tensors);

  // Tokenizer seeds: a tiny SentencePiece and a tiny byte-level BPE vocabulary.
  GgufWriter spm;
  spm.set_string("tokenizer.ggml.model", "llama");
  spm.set_string_array("tokenizer.ggml.tokens", std::vector<std::string>{"<unk>", "<s>", "</s>", "<0x41>", "\xE2\x96\x81", "H", "e", "He"});
  const float spm_scores[] = {0, 0, 0, 0, -1, -2, -2, -1};
  spm.set_f32_array("tokenizer.ggml.scores", spm_scores);
  const int32_t spm_types[] = {2, 3, 3, 6, 1, 1, 1, 1};
  spm.set_i32_array("tokenizer.ggml.token_type", spm_types);
  spm.set_u32("tokenizer.ggml.bos_token_id", 1);
  save(spm);

  GgufWriter bpe;
  bpe.set_string("tokenizer.ggml.model", "gpt2");
  bpe.set_string("tokenizer.ggml.pre", "qwen2");
  bpe.set_string_array("tokenizer.ggml.tokens", std::vector<std::string>{"H", "e", "l", "o", "He", "ll", "<|end|>"});
  const int32_t bpe_types[] = {1, 1, 1, 1, 1, 1, 3};
  bpe.set_i32_array("tokenizer.ggml.token_type", bpe_types);
  bpe.set_string_array("tokenizer.ggml.merges", std::vector<std::string>{"H e", "l l"});
  save(bpe);

  GgufWriter empty;
  save(empty);
  std::printf("wrote %d seeds to %s\n", n, dir.c_str());
  return 0;
}
