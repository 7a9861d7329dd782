// Byte-level BPE (GPT-2 family, Llama 3, Qwen2): regex pre-tokenizer chosen by
// tokenizer.ggml.pre, bytes mapped to printable code points, merges applied by rank.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/vocab.h"

namespace orcd {

class BpeEncoder {
 public:
  explicit BpeEncoder(const Vocab& vocab);  // throws TokenizerError for an unknown pre-tokenizer
  ~BpeEncoder();
  BpeEncoder(BpeEncoder&&) noexcept;
  // Appends the ids of `text` (valid UTF-8, no special tokens) to `out`.
  void encode(std::string_view text, std::vector<int32_t>& out) const;
  const std::string& pre_tokenizer() const { return pre_name_; }

  // The regex used for a tokenizer.ggml.pre value, or nullptr if it is unknown.
  static const char* pattern_for(std::string_view pre);

 private:
  void encode_word(const std::string& word, std::vector<int32_t>& out) const;
  const Vocab* vocab_;
  std::string pre_name_;
  bool ignore_merges_ = false;  // Llama 3: a word that is itself a token skips the merges
  struct Regex;
  std::unique_ptr<Regex> re_;
};

}  // namespace orcd
