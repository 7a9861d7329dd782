#include "tokenizer/spm.h"

#include <cstdio>
#include <queue>
#include <string>
#include <unordered_map>

#include "tokenizer/merge.h"
#include "tokenizer/unicode.h"

namespace orcd {

namespace {
constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581

struct Bigram {
  int left, right;
  float score;
  uint32_t len;
  bool operator<(const Bigram& o) const {  // highest score first, then leftmost
    return score != o.score ? score < o.score : left > o.left;
  }
};
}  // namespace

SpmEncoder::SpmEncoder(const Vocab& vocab) : vocab_(&vocab) {
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    byte_ids_[b] = vocab.find(name);
  }
}

void SpmEncoder::encode(std::string_view raw, std::vector<int32_t>& out) const {
  if (raw.empty()) return;
  std::string text;
  text.reserve(raw.size() + raw.size() / 4);
  for (char c : raw) {
    if (c == ' ') text += kSpace;
    else text += c;
  }

  std::vector<MergeSymbol> sym = split_symbols(text);
  std::priority_queue<Bigram> queue;
  // Merged text -> the two pieces it came from, to split pieces that are not tokens.
  std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> rev_merge;
  auto view = [&](int i) { return std::string_view(text.data() + sym[i].start, sym[i].len); };
  run_merges(sym, queue, [&](int l, int r) {
    if (l < 0 || r < 0) return;
    const std::string_view merged(text.data() + sym[l].start, sym[l].len + sym[r].len);
    const int32_t id = vocab_->find(merged);
    if (id < 0) return;
    queue.push({l, r, vocab_->scores[id], sym[l].len + sym[r].len});
    rev_merge[merged] = {view(l), view(r)};
  });

  // A piece that is a token is emitted; otherwise split it the way it was merged, down to
  // single characters, which fall back to byte tokens.
  auto resegment = [&](auto&& self, std::string_view piece) -> void {
    const int32_t id = vocab_->find(piece);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
    auto it = rev_merge.find(piece);
    if (it == rev_merge.end()) {
      for (char c : piece) {
        const int32_t bid = byte_ids_[static_cast<uint8_t>(c)];
        if (bid >= 0) out.push_back(bid);
        else if (vocab_->unk >= 0) out.push_back(vocab_->unk);
      }
      return;
    }
    self(self, it->second.first);
    self(self, it->second.second);
  };
  for (int i = 0; i != -1; i = sym[i].next) resegment(resegment, view(i));
}

}  // namespace orcd
