// Streaming detokenizer: turns generated token ids into text pieces that are always whole
// UTF-8 characters, each yielded as soon as it is complete.
#pragma once
#include <cstdint>
#include <string>

namespace orcd {

class Tokenizer;

class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Tokenizer& tok, bool render_special = false)
      : tok_(&tok), render_special_(render_special) {}
  // Text completed by this token (possibly empty while a multi-byte character is pending).
  std::string push(int32_t id);
  // Whatever is still pending at the end; an incomplete character becomes U+FFFD.
  std::string flush();
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer* tok_;
  bool render_special_;
  std::string pending_;
};

// Splits `buf` into the longest prefix of complete characters (returned) and an incomplete
// tail left in `buf`. Bytes that can never start or continue a valid sequence become U+FFFD.
std::string take_complete_utf8(std::string& buf);

}  // namespace orcd
