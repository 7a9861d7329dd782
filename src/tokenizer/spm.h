// SentencePiece BPE as stored in GGUF (`llama` tokenizer model): spaces become U+2581, the
// highest-scoring adjacent pair that is a token merges first, pieces that are not tokens
// fall back to <0xNN> byte tokens.
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

#include "tokenizer/vocab.h"

namespace orcd {

class SpmEncoder {
 public:
  explicit SpmEncoder(const Vocab& vocab);
  // Appends the ids of `text` (valid UTF-8, no special tokens, already space-prefixed if the
  // caller wants that) to `out`.
  void encode(std::string_view text, std::vector<int32_t>& out) const;

 private:
  const Vocab* vocab_;
  int32_t byte_ids_[256];
};

}  // namespace orcd
