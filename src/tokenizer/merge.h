// The merge loop shared by byte-level BPE and SentencePiece: a text split into UTF-8 characters
// as a linked list of symbols, adjacent pairs merged best-first from a priority queue.
#pragma once
#include <cstdint>
#include <queue>
#include <string_view>
#include <vector>

#include "tokenizer/unicode.h"

namespace orcd {

struct MergeSymbol {
  int prev, next;
  uint32_t start, len;  // bytes of the text this symbol covers; len 0 once merged away
};

// One symbol per UTF-8 character (an invalid byte stands alone).
inline std::vector<MergeSymbol> split_symbols(std::string_view text) {
  std::vector<MergeSymbol> sym;
  for (size_t pos = 0; pos < text.size();) {
    size_t n = utf8_valid_len(text, pos);
    if (n == 0) n = 1;
    const int idx = static_cast<int>(sym.size());
    sym.push_back({idx - 1, idx + 1, static_cast<uint32_t>(pos), static_cast<uint32_t>(n)});
    pos += n;
  }
  if (!sym.empty()) sym.back().next = -1;
  return sym;
}

// Pops pairs best-first (Bigram's operator<), merges the ones still current, and offers the new
// neighbours to `try_add(left, right)`, which pushes a Bigram {left, right, ..., len} if the
// merged text is mergeable. Bigram needs members `left`, `right` and `len`.
template <typename Bigram, typename TryAdd>
void run_merges(std::vector<MergeSymbol>& sym, std::priority_queue<Bigram>& queue, TryAdd&& try_add) {
  for (int i = 1; i < static_cast<int>(sym.size()); ++i) try_add(i - 1, i);
  while (!queue.empty()) {
    const Bigram bg = queue.top();
    queue.pop();
    MergeSymbol& l = sym[bg.left];
    MergeSymbol& r = sym[bg.right];
    // Stale entry: one side was merged away or grew since the pair was queued.
    if (l.len == 0 || r.len == 0 || l.next != bg.right || l.len + r.len != bg.len) continue;
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = bg.left;
    try_add(l.prev, bg.left);
    try_add(bg.left, l.next);
  }
}

}  // namespace orcd
