// Vocabulary read from a GGUF file's tokenizer.ggml.* metadata.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace orcd {

class GgufFile;

class TokenizerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class TokenKind { spm, bpe };

// Values of tokenizer.ggml.token_type.
enum class TokenType : int32_t { undefined = 0, normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6 };

struct Vocab {
  TokenKind kind = TokenKind::bpe;
  std::string model;  // tokenizer.ggml.model
  std::string pre;    // tokenizer.ggml.pre
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<TokenType> types;
  std::unordered_map<std::string, int32_t> token_to_id;
  std::unordered_map<std::string, int32_t> merge_rank;  // "left right" -> rank (BPE)

  int32_t bos = -1, eos = -1, eot = -1, unk = -1, pad = -1;
  bool add_bos = false, add_eos = false;
  bool add_space_prefix = false;  // SentencePiece's leading U+2581
  std::vector<int32_t> end_of_generation;  // EOS, EOT and known end-of-turn control tokens
  std::string chat_template;

  static Vocab from_gguf(const GgufFile& f);  // throws TokenizerError
  int32_t size() const { return static_cast<int32_t>(tokens.size()); }
  bool valid(int32_t id) const { return id >= 0 && id < size(); }
  int32_t find(std::string_view text) const;  // -1 if absent
  bool is_special(int32_t id) const;          // control or user-defined
  bool is_eog(int32_t id) const;
};

}  // namespace orcd
