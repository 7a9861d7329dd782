// Tokenizer built from a GGUF file's metadata alone: byte-level BPE or SentencePiece,
// with special tokens matched as whole tokens.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/bpe.h"
#include "tokenizer/spm.h"
#include "tokenizer/vocab.h"

namespace orcd {

struct EncodeOptions {
  std::optional<bool> add_bos;  // default: what the model's metadata says
  bool parse_special = true;    // match control tokens' text (e.g. "<|im_start|>") as tokens
};

struct DecodeOptions {
  bool render_special = false;   // emit control tokens' text instead of nothing
  bool strip_space_prefix = true;  // undo SentencePiece's added leading space (whole-text decode)
};

class Tokenizer {
 public:
  static Tokenizer from_gguf(const GgufFile& f);  // throws TokenizerError
  Tokenizer(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Throws TokenizerError for invalid UTF-8, naming the byte offset.
  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& opt = {}) const;
  std::string decode(std::span<const int32_t> ids, const DecodeOptions& opt = {}) const;
  // Raw bytes of one token (may be part of a UTF-8 sequence). Throws for an invalid id.
  std::string token_bytes(int32_t id, bool render_special = false) const;

  const Vocab& vocab() const { return *vocab_; }
  TokenKind kind() const { return vocab_->kind; }
  std::string_view kind_name() const { return vocab_->kind == TokenKind::spm ? "spm" : "bpe"; }
  int32_t vocab_size() const { return vocab_->size(); }
  bool is_eog(int32_t id) const { return vocab_->is_eog(id); }

 private:
  explicit Tokenizer(Vocab v);
  void encode_text(std::string_view text, bool first_fragment, std::vector<int32_t>& out) const;

  std::unique_ptr<Vocab> vocab_;  // heap-held: the encoders keep pointers to it across moves
  std::unique_ptr<BpeEncoder> bpe_;
  std::unique_ptr<SpmEncoder> spm_;
  // Special tokens for whole-token matching, longest first.
  std::vector<int32_t> specials_;
  bool special_first_byte_[256] = {};
};

}  // namespace orcd
