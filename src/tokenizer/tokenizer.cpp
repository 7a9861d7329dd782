#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <charconv>

#include "gguf/gguf.h"
#include "tokenizer/unicode.h"

namespace orcd {

Tokenizer::Tokenizer(Vocab v) : vocab_(std::make_unique<Vocab>(std::move(v))) {
  const Vocab& vocab = *vocab_;
  if (vocab_->kind == TokenKind::bpe) bpe_ = std::make_unique<BpeEncoder>(vocab);
  else spm_ = std::make_unique<SpmEncoder>(vocab);
  for (int32_t id = 0; id < vocab_->size(); ++id)
    if (vocab_->is_special(id) && !vocab_->tokens[id].empty()) specials_.push_back(id);
  std::stable_sort(specials_.begin(), specials_.end(),
                   [&](int32_t a, int32_t b) { return vocab_->tokens[a].size() > vocab_->tokens[b].size(); });
  for (int32_t id : specials_) special_first_byte_[static_cast<uint8_t>(vocab_->tokens[id][0])] = true;
}

Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_gguf(const GgufFile& f) { return Tokenizer(Vocab::from_gguf(f)); }

void Tokenizer::encode_text(std::string_view text, bool prev_special, std::vector<int32_t>& out) const {
  if (spm_) {
    // SentencePiece adds its space marker at the start of text and after each special token.
    if (vocab_->add_space_prefix && prev_special) {
      std::string s = " ";
      s += text;
      spm_->encode(s, out);
    } else {
      spm_->encode(text, out);
    }
  } else {
    bpe_->encode(text, out);
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, const EncodeOptions& opt) const {
  if (auto bad = utf8_first_invalid(text))
    throw TokenizerError("invalid UTF-8 in input at byte " + std::to_string(*bad));
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (opt.add_bos.value_or(vocab_->add_bos) && vocab_->bos >= 0) out.push_back(vocab_->bos);

  bool prev_special = true;  // the start of text counts as a boundary
  size_t text_start = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    int32_t match = -1;
    if (!special_first_byte_[static_cast<uint8_t>(text[pos])]) {
      ++pos;
      continue;
    }
    for (int32_t id : specials_) {
      // Without parse_special only user-defined tokens are whole-matched (as llama.cpp does).
      if (!opt.parse_special && vocab_->types[id] != TokenType::user_defined) continue;
      const std::string& t = vocab_->tokens[id];
      if (text.compare(pos, t.size(), t) == 0) {
        match = id;
        break;
      }
    }
    if (match < 0) {
      ++pos;
      continue;
    }
    if (pos > text_start) encode_text(text.substr(text_start, pos - text_start), prev_special, out);
    out.push_back(match);
    prev_special = true;
    pos += vocab_->tokens[match].size();
    text_start = pos;
  }
  if (text_start < text.size()) encode_text(text.substr(text_start), prev_special, out);
  if (vocab_->add_eos && vocab_->eos >= 0) out.push_back(vocab_->eos);
  return out;
}

std::string Tokenizer::token_bytes(int32_t id, bool render_special) const {
  if (!vocab_->valid(id))
    throw TokenizerError("token id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(vocab_->size()));
  const std::string& t = vocab_->tokens[id];
  switch (vocab_->types[id]) {
    case TokenType::control:
      return render_special ? t : std::string();
    case TokenType::user_defined:
      return t;
    case TokenType::unknown:
      return "\xE2\x96\x85";  // U+2585, as llama.cpp shows unknown pieces
    case TokenType::byte:
      // "<0xNN>"; a byte token with any other text (a malformed vocabulary) is shown as it is.
      if (t.size() == 6 && t.starts_with("<0x") && t.back() == '>') {
        unsigned value = 0;
        const auto [end, ec] = std::from_chars(t.data() + 3, t.data() + 5, value, 16);
        if (ec == std::errc() && end == t.data() + 5) return std::string(1, static_cast<char>(value));
      }
      return t;
    case TokenType::unused:
      return render_special ? t : std::string();
    default:
      break;
  }
  if (vocab_->kind == TokenKind::spm) {
    std::string s;
    for (size_t k = 0; k < t.size();) {
      if (t.compare(k, 3, "\xE2\x96\x81") == 0) {
        s += ' ';
        k += 3;
      } else {
        s += t[k++];
      }
    }
    return s;
  }
  // Byte-level BPE: each code point stands for one byte.
  const auto& table = byte_unicode_table();
  std::string s;
  for (size_t k = 0; k < t.size();) {
    size_t n = utf8_valid_len(t, k);
    if (n == 0) n = 1;
    const uint32_t cp = utf8_decode_at(t, k, n);
    if (cp < table.cp_to_byte.size() && table.cp_to_byte[cp] >= 0) s += static_cast<char>(table.cp_to_byte[cp]);
    else s.append(t, k, n);  // not from the byte table (an added token's text): keep it
    k += n;
  }
  return s;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, const DecodeOptions& opt) const {
  std::string out;
  bool strip = opt.strip_space_prefix && vocab_->add_space_prefix;
  for (int32_t id : ids) {
    std::string piece = token_bytes(id, opt.render_special);
    if (strip && !piece.empty()) {
      if (piece.front() == ' ') piece.erase(0, 1);
      strip = false;
    }
    out += piece;
  }
  return out;
}

}  // namespace orcd
