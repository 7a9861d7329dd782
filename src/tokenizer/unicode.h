// UTF-8 helpers and GPT-2's byte <-> printable-code-point table.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace orcd {

// Length of the UTF-8 sequence starting at s[pos] if it is complete and valid, else 0.
size_t utf8_valid_len(std::string_view s, size_t pos);
// Byte offset of the first invalid or incomplete sequence, or nullopt if all of s is valid.
std::optional<size_t> utf8_first_invalid(std::string_view s);
std::string utf8_encode(uint32_t cp);
uint32_t utf8_decode_at(std::string_view s, size_t pos, size_t len);

// Byte-level BPE maps each byte to one printable code point so that merges never see raw
// control bytes or spaces (a space becomes U+0120 'Ġ').
struct ByteUnicodeTable {
  std::array<std::string, 256> byte_to_utf8;
  std::array<int16_t, 512> cp_to_byte;  // code points 0..511 cover the whole table; -1 = none
};
const ByteUnicodeTable& byte_unicode_table();

}  // namespace orcd
