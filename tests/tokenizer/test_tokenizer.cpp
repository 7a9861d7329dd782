// Tokenizer behaviour beyond the conformance vectors: BOS/EOS, special tokens, empty, long
// and invalid input, and the trained models' prompts.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <random>

#include "gguf/gguf.h"
#include "gguf/gguf_writer.h"
#include "testutil.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

using namespace orcd;

namespace {

const Tokenizer& tokenizer(const std::string& file) {
  static std::map<std::string, std::pair<GgufFile, Tokenizer>*> cache;
  auto& slot = cache[file];
  if (!slot) {
    auto g = GgufFile::open(test::testdata(file));
    auto t = Tokenizer::from_gguf(g);
    slot = new std::pair<GgufFile, Tokenizer>(std::move(g), std::move(t));
  }
  return slot->second;
}
const Tokenizer& qwen() { return tokenizer("tokenizer/qwen2-vocab.gguf"); }
const Tokenizer& spm() { return tokenizer("tokenizer/ggml-vocab-llama-spm.gguf"); }
const Tokenizer& gpt2() { return tokenizer("tokenizer/ggml-vocab-gpt-2.gguf"); }

}  // namespace

TEST(Tokenizer, MetadataDecidesKindAndBos) {
  EXPECT_EQ(spm().kind(), TokenKind::spm);
  EXPECT_EQ(qwen().kind(), TokenKind::bpe);
  EXPECT_EQ(spm().vocab().bos, 1);
  EXPECT_TRUE(spm().vocab().add_bos);
  EXPECT_FALSE(qwen().vocab().add_bos);  // add_bos_token = false in the file
  EXPECT_EQ(spm().encode("Hi").front(), 1);
  EXPECT_NE(spm().encode("Hi", {.add_bos = false}).front(), 1);
  EXPECT_EQ(qwen().vocab_size(), 151936);
  EXPECT_TRUE(qwen().is_eog(151645));  // <|im_end|>, the EOS
  EXPECT_TRUE(qwen().is_eog(151643));  // <|endoftext|>
  EXPECT_FALSE(qwen().is_eog(151644)); // <|im_start|>
}

TEST(Tokenizer, SpecialTokensAreWholeTokens) {
  const auto& t = qwen();
  const int32_t im_start = t.vocab().find("<|im_start|>");
  const int32_t im_end = t.vocab().find("<|im_end|>");
  ASSERT_EQ(im_start, 151644);
  ASSERT_EQ(im_end, 151645);
  const auto ids = t.encode("<|im_start|>user\nhello<|im_end|>\n");
  ASSERT_GE(ids.size(), 5u);
  EXPECT_EQ(ids.front(), im_start);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), im_end), 1);
  // The text around the specials is tokenized as if the specials were not there.
  const auto user = t.encode("user\nhello");
  EXPECT_TRUE(std::equal(user.begin(), user.end(), ids.begin() + 1));
  // With parse_special off, the marker is plain text.
  const auto plain = t.encode("<|im_start|>", {.add_bos = std::nullopt, .parse_special = false});
  EXPECT_GT(plain.size(), 1u);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), im_start), 0);
  // Control tokens decode to nothing unless asked for.
  EXPECT_EQ(t.decode(ids), "user\nhello\n");
  EXPECT_EQ(t.decode(ids, {.render_special = true}), "<|im_start|>user\nhello<|im_end|>\n");

  // SentencePiece: </s> in text is the EOS control token, and the text after a special token
  // gets the space marker again, as at the start of text (llama.cpp and HF's legacy mode).
  const auto s = spm().encode("a</s>b", {.add_bos = false});
  const std::vector<int32_t> want = {spm().vocab().find("\xE2\x96\x81" "a"), 2, spm().vocab().find("\xE2\x96\x81" "b")};
  EXPECT_EQ(s, want);
}

TEST(Tokenizer, EmptyInput) {
  EXPECT_TRUE(qwen().encode("").empty());
  EXPECT_TRUE(gpt2().encode("").empty());
  EXPECT_EQ(spm().encode(""), std::vector<int32_t>{1});  // BOS only
  EXPECT_TRUE(spm().encode("", {.add_bos = false}).empty());
  EXPECT_EQ(spm().decode(std::vector<int32_t>{}), "");
}

TEST(Tokenizer, InvalidUtf8IsAClearError) {
  for (const std::string& bad : {std::string("ab\xFF"), std::string("\xC3"), std::string("x\xE2\x82"), std::string("\xED\xA0\x80"),
                                std::string("\xC0\xAF")}) {
    for (const Tokenizer* t : {&qwen(), &spm(), &gpt2()}) {
      try {
        t->encode(bad);
        ADD_FAILURE() << "accepted invalid UTF-8";
      } catch (const TokenizerError& e) {
        EXPECT_NE(std::string(e.what()).find("invalid UTF-8"), std::string::npos);
      }
    }
  }
  EXPECT_THROW(qwen().token_bytes(-1), TokenizerError);
  EXPECT_THROW(qwen().token_bytes(151936), TokenizerError);
}

TEST(Tokenizer, VeryLongInputIsFastAndRoundTrips) {
  // 100k characters of mixed prose, digits, code, CJK and long runs of one letter and of spaces.
  std::mt19937 rng(7);
  const std::vector<std::string> parts = {"The quick brown fox ", "jumps 1234567 ", "over\n\t", "lazy dogs' ",
                                          "\xE4\xBD\xA0\xE5\xA5\xBD ", "\xF0\x9F\x98\x80 ", "x += y * 2; ", std::string(300, 'a'),
                                          std::string(200, ' ')};
  std::string text;
  while (text.size() < 100000) text += parts[rng() % parts.size()];
  for (const Tokenizer* t : {&qwen(), &spm(), &gpt2()}) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto ids = t->encode(text, {.add_bos = false});
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(secs, 1.0) << t->kind_name();  // a generous bound for a 2-core CI machine
    EXPECT_GT(ids.size(), 1000u);
    EXPECT_EQ(t->decode(ids), text) << t->kind_name();
  }
}

TEST(Tokenizer, RandomUnicodeRoundTrips) {
  std::mt19937 rng(99);
  const std::vector<uint32_t> ranges = {0x20, 0x7E, 0xA0, 0x24F, 0x400, 0x4FF, 0x4E00, 0x4FFF, 0x1F300, 0x1F64F};
  for (int iter = 0; iter < 200; ++iter) {
    std::string s;
    const int n = 1 + static_cast<int>(rng() % 40);
    for (int k = 0; k < n; ++k) {
      const size_t r = (rng() % (ranges.size() / 2)) * 2;
      s += utf8_encode(ranges[r] + rng() % (ranges[r + 1] - ranges[r] + 1));
      if (rng() % 5 == 0) s += ' ';
    }
    EXPECT_EQ(qwen().decode(qwen().encode(s)), s);
    EXPECT_EQ(gpt2().decode(gpt2().encode(s)), s);
    EXPECT_EQ(spm().decode(spm().encode(s)), s);
  }
}

TEST(Tokenizer, TrainedModelPromptsMatchTheReference) {
  const auto g = GgufFile::open(test::testdata("models/copy-llama-h256-q8_0.gguf"));
  const auto tok = Tokenizer::from_gguf(g);
  const auto j = nlohmann::json::parse(test::read_file(test::testdata("models/copy-llama-h256-expected.json")));
  const auto& prompts = j.at("prompts");
  ASSERT_EQ(prompts.size(), 40u);
  for (const auto& p : prompts) {
    const auto ids = tok.encode(p.at("prompt").get<std::string>());
    EXPECT_EQ(ids, p.at("prompt_ids").get<std::vector<int32_t>>()) << p.at("prompt");
    // The expected answer's ids (EOS dropped) decode to the expected text, leading space kept.
    auto expected = p.at("expected_ids").get<std::vector<int32_t>>();
    ASSERT_EQ(expected.back(), 2);
    expected.pop_back();
    EXPECT_EQ(tok.decode(expected, {.strip_space_prefix = false}), p.at("expected").get<std::string>());
  }
}

// Vocabularies from a hostile or broken converter: token texts of random bytes (some shaped like
// "<0xNN>" with bad digits), random token types, special ids anywhere. Building, encoding and
// decoding may refuse with TokenizerError, and nothing else may escape.
TEST(Tokenizer, HostileVocabulariesOnlyRaiseTokenizerError) {
  std::mt19937 rng(20261123);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  const std::vector<std::string> shapes = {"<0x", "<0x4", "<0xZZ>", "<0x41>", "<0x 1>", "<0x-1>", "<0x1G>", "\xE2\x96\x81",
                                           "<s>", "</s>", "\xC4\xA0", "a", "b", "ab", "\xFF", "\xE2\x82"};
  int built = 0, decoded_bytes = 0;
  for (int iter = 0; iter < 400; ++iter) {
    const bool spm_kind = iter % 2 == 0;
    const int n = 2 + pick(40);
    std::vector<std::string> tokens;
    std::vector<int32_t> types;
    for (int i = 0; i < n; ++i) {
      std::string t;
      for (int k = pick(3) + 1; k > 0; --k) t += pick(3) ? shapes[pick(static_cast<int>(shapes.size()))] : std::string(1, static_cast<char>(rng()));
      tokens.push_back(t);
      types.push_back(pick(9) - 1);  // -1..7, outside the enum too
    }
    GgufWriter w;
    w.set_string("tokenizer.ggml.model", spm_kind ? "llama" : "gpt2");
    w.set_string_array("tokenizer.ggml.tokens", tokens);
    w.set_i32_array("tokenizer.ggml.token_type", types);
    if (!spm_kind) {
      std::vector<std::string> merges;
      for (int m = pick(6); m > 0; --m) merges.push_back(tokens[pick(n)] + " " + tokens[pick(n)]);
      w.set_string_array("tokenizer.ggml.merges", merges);
    }
    w.set_i32("tokenizer.ggml.bos_token_id", pick(n + 2) - 1);
    w.set_i32("tokenizer.ggml.eos_token_id", pick(n + 2) - 1);
    w.set_bool("tokenizer.ggml.add_eos_token", pick(2) == 1);
    const auto bytes = w.to_bytes();
    try {
      const auto g = GgufFile::from_bytes(bytes, "hostile-vocab.gguf");
      const auto tok = Tokenizer::from_gguf(g);
      ++built;
      std::string text;
      for (int k = pick(12); k > 0; --k) text += shapes[pick(static_cast<int>(shapes.size()))];
      try {
        (void)tok.encode(text);
      } catch (const TokenizerError&) {
      }
      std::vector<int32_t> all(n);
      for (int i = 0; i < n; ++i) all[i] = i;
      decoded_bytes += static_cast<int>(tok.decode(all, {.render_special = true}).size());
    } catch (const TokenizerError&) {
    }
  }
  EXPECT_GT(built, 100);  // most vocabularies are usable; the loop exercised encode and decode
  EXPECT_GT(decoded_bytes, 0);

  // A byte token whose digits are not hex is shown as its text, not parsed.
  GgufWriter w;
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_string_array("tokenizer.ggml.tokens", std::vector<std::string>{"<unk>", "<0xZZ>", "<0x41>", "<0x4>"});
  const int32_t t[] = {2, 6, 6, 6};
  w.set_i32_array("tokenizer.ggml.token_type", t);
  const auto g = GgufFile::from_bytes(w.to_bytes(), "bad-byte-token.gguf");
  const auto tok = Tokenizer::from_gguf(g);
  EXPECT_EQ(tok.token_bytes(1), "<0xZZ>");
  EXPECT_EQ(tok.token_bytes(2), "A");
  EXPECT_EQ(tok.token_bytes(3), "<0x4>");
}
