// Streaming detokenizer: pieces are always whole UTF-8 characters, emitted as soon as they are
// complete, and their concatenation equals the whole-sequence decode.
#include <gtest/gtest.h>

#include <random>

#include "gguf/gguf.h"
#include "testutil.h"
#include "tokenizer/detokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

using namespace orcd;

TEST(TakeCompleteUtf8, HoldsIncompleteTailAndReplacesGarbage) {
  std::string buf = "a\xE2\x82";  // 'a' + first two bytes of the euro sign
  EXPECT_EQ(take_complete_utf8(buf), "a");
  EXPECT_EQ(buf, "\xE2\x82");
  buf += "\xAC";
  EXPECT_EQ(take_complete_utf8(buf), "\xE2\x82\xAC");
  EXPECT_TRUE(buf.empty());
  buf = "\x80x";  // stray continuation byte
  EXPECT_EQ(take_complete_utf8(buf), "\xEF\xBF\xBDx");
  buf = "\xE2\x41";  // lead byte followed by ASCII: can never complete
  EXPECT_EQ(take_complete_utf8(buf), "\xEF\xBF\xBD" "A");
  buf = "\xED\xA0";  // would be a surrogate
  EXPECT_EQ(take_complete_utf8(buf), "\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(StreamingDetokenizer, ByteFallbackTokensNeverSplitACharacter) {
  const auto g = GgufFile::open(test::testdata("tokenizer/ggml-vocab-llama-spm.gguf"));
  const auto tok = Tokenizer::from_gguf(g);
  // Emoji and rare CJK are not in the Llama 2 vocabulary: they become <0xNN> byte tokens.
  const std::string text = " smile \xF0\x9F\x98\x80 and \xF0\xA0\x80\x80 done \xE2\x82\xAC";
  const auto ids = tok.encode(text, {.add_bos = false});
  StreamingDetokenizer d(tok);
  std::string joined;
  int held = 0;
  for (int32_t id : ids) {
    const std::string piece = d.push(id);
    EXPECT_FALSE(utf8_first_invalid(piece).has_value()) << "partial UTF-8 emitted";
    if (piece.empty()) ++held;
    joined += piece;
  }
  joined += d.flush();
  EXPECT_GT(held, 0);  // some pieces were held back waiting for the rest of a character
  EXPECT_EQ(joined, tok.decode(ids, {.strip_space_prefix = false}));
  EXPECT_EQ(joined, " " + text);  // SentencePiece's added prefix space stays in a stream
}

TEST(StreamingDetokenizer, RandomByteLevelStreams) {
  const auto g = GgufFile::open(test::testdata("tokenizer/qwen2-vocab.gguf"));
  const auto tok = Tokenizer::from_gguf(g);
  std::mt19937 rng(3);
  for (int iter = 0; iter < 100; ++iter) {
    // Random token ids, as a sampler might produce: byte-level pieces can cut characters anywhere.
    std::vector<int32_t> ids;
    for (int k = 0; k < 30; ++k) ids.push_back(static_cast<int32_t>(rng() % 151643));
    StreamingDetokenizer d(tok);
    std::string joined;
    for (int32_t id : ids) {
      const std::string piece = d.push(id);
      ASSERT_FALSE(utf8_first_invalid(piece).has_value());
      joined += piece;
    }
    joined += d.flush();
    EXPECT_FALSE(utf8_first_invalid(joined).has_value());
    EXPECT_EQ(d.pending_bytes(), 0u);
  }
  // A truncated character at the end becomes one replacement character.
  StreamingDetokenizer d(tok);
  const int32_t lead = tok.vocab().find(byte_unicode_table().byte_to_utf8[0xE4]);
  ASSERT_GE(lead, 0);
  EXPECT_EQ(d.push(lead), "");
  EXPECT_EQ(d.flush(), "\xEF\xBF\xBD");
}
