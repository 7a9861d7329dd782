#include "tokenizer/detokenizer.h"

#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace orcd {

namespace {
constexpr const char* kReplacement = "\xEF\xBF\xBD";

// Could s[pos..] still become a valid sequence if more bytes arrive?
bool is_valid_prefix(const std::string& s, size_t pos) {
  const auto c = static_cast<uint8_t>(s[pos]);
  size_t need;
  if ((c & 0xE0) == 0xC0) need = 2;
  else if ((c & 0xF0) == 0xE0) need = 3;
  else if ((c & 0xF8) == 0xF0) need = 4;
  else return false;
  if (s.size() - pos >= need) return false;  // complete length available but invalid
  if (c == 0xC0 || c == 0xC1 || c > 0xF4) return false;
  for (size_t k = pos + 1; k < s.size(); ++k)
    if ((static_cast<uint8_t>(s[k]) & 0xC0) != 0x80) return false;
  // Second-byte ranges that rule out overlongs, surrogates and > U+10FFFF.
  if (s.size() - pos >= 2) {
    const auto c1 = static_cast<uint8_t>(s[pos + 1]);
    if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F) || (c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 > 0x8F))
      return false;
  }
  return true;
}
}  // namespace

std::string take_complete_utf8(std::string& buf) {
  std::string out;
  size_t pos = 0;
  while (pos < buf.size()) {
    const size_t n = utf8_valid_len(buf, pos);
    if (n > 0) {
      out.append(buf, pos, n);
      pos += n;
    } else if (is_valid_prefix(buf, pos)) {
      break;  // wait for the rest of this character
    } else {
      out += kReplacement;
      ++pos;
    }
  }
  buf.erase(0, pos);
  return out;
}

std::string StreamingDetokenizer::push(int32_t id) {
  pending_ += tok_->token_bytes(id, render_special_);
  return take_complete_utf8(pending_);
}

std::string StreamingDetokenizer::flush() {
  std::string out = take_complete_utf8(pending_);
  if (!pending_.empty()) {
    out += kReplacement;
    pending_.clear();
  }
  return out;
}

}  // namespace orcd
