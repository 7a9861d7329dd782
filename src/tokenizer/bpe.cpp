#include "tokenizer/bpe.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <queue>

#include "tokenizer/merge.h"
#include "tokenizer/unicode.h"

namespace orcd {

namespace {

// Pre-tokenizer patterns as published with each model family's tokenizer.
constexpr const char* kGpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr const char* kLlama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct Bigram {
  int left, right;
  int32_t rank;
  uint32_t len;
  bool operator<(const Bigram& o) const {  // priority_queue pops the largest: lowest rank, leftmost
    return rank != o.rank ? rank > o.rank : left > o.left;
  }
};

}  // namespace

struct BpeEncoder::Regex {
  pcre2_code* code = nullptr;
  ~Regex() { pcre2_code_free(code); }
};

const char* BpeEncoder::pattern_for(std::string_view pre) {
  if (pre == "gpt-2" || pre == "default" || pre == "gpt2") return kGpt2;
  if (pre == "llama3" || pre == "llama-bpe" || pre == "llama-v3" || pre == "smaug-bpe") return kLlama3;
  if (pre == "qwen2" || pre == "qwen2.5") return kQwen2;
  return nullptr;
}

BpeEncoder::BpeEncoder(const Vocab& vocab) : vocab_(&vocab), pre_name_(vocab.pre), re_(std::make_unique<Regex>()) {
  const char* pattern = pattern_for(vocab.pre);
  if (!pattern)
    throw TokenizerError("BPE pre-tokenizer '" + vocab.pre + "' is not supported (supported: gpt-2, llama-bpe/llama3, qwen2)");
  ignore_merges_ = pattern == kLlama3;
  int err = 0;
  PCRE2_SIZE erroff = 0;
  re_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &erroff, nullptr);
  if (!re_->code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    throw TokenizerError(std::string("pre-tokenizer regex failed to compile: ") + reinterpret_cast<char*>(msg));
  }
  pcre2_jit_compile(re_->code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is unavailable
}

BpeEncoder::~BpeEncoder() = default;
BpeEncoder::BpeEncoder(BpeEncoder&&) noexcept = default;

void BpeEncoder::encode(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  const auto& table = byte_unicode_table();
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
      pcre2_match_data_create_from_pattern(re_->code, nullptr), &pcre2_match_data_free);
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  std::string word;
  auto emit = [&](size_t b, size_t e) {
    word.clear();
    for (size_t k = b; k < e; ++k) word += table.byte_to_utf8[static_cast<uint8_t>(text[k])];
    encode_word(word, out);
  };
  size_t pos = 0;
  while (pos < text.size()) {
    const int rc = pcre2_match(re_->code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, md.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      throw TokenizerError(std::string("pre-tokenizer regex failed: ") + reinterpret_cast<char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    const size_t b = ov[0], e = ov[1];
    if (b > pos) emit(pos, b);  // the patterns cover every character; kept for safety
    if (e == b) {               // never happens with these patterns; avoid an endless loop
      size_t n = utf8_valid_len(text, b);
      emit(b, b + (n ? n : 1));
      pos = b + (n ? n : 1);
      continue;
    }
    emit(b, e);
    pos = e;
  }
  if (pos < text.size()) emit(pos, text.size());
}

void BpeEncoder::encode_word(const std::string& word, std::vector<int32_t>& out) const {
  if (ignore_merges_) {
    const int32_t id = vocab_->find(word);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  std::vector<MergeSymbol> sym = split_symbols(word);
  if (sym.empty()) return;
  std::priority_queue<Bigram> queue;
  std::string key;
  run_merges(sym, queue, [&](int l, int r) {
    if (l < 0 || r < 0) return;
    key.assign(word, sym[l].start, sym[l].len);
    key += ' ';
    key.append(word, sym[r].start, sym[r].len);
    auto it = vocab_->merge_rank.find(key);
    if (it == vocab_->merge_rank.end()) return;
    queue.push({l, r, it->second, sym[l].len + sym[r].len});
  });

  for (int i = 0; i != -1; i = sym[i].next) {
    const std::string_view piece(word.data() + sym[i].start, sym[i].len);
    const int32_t id = vocab_->find(piece);
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    // Not a token: fall back to its single code points, each of which a byte-level vocab holds.
    for (size_t pos = 0; pos < piece.size();) {
      size_t n = utf8_valid_len(piece, pos);
      if (n == 0) n = 1;
      const int32_t cid = vocab_->find(piece.substr(pos, n));
      if (cid >= 0) out.push_back(cid);
      else if (vocab_->unk >= 0) out.push_back(vocab_->unk);
      pos += n;
    }
  }
}

}  // namespace orcd
