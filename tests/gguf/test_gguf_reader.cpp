// GGUF reader on well-formed input: every value type round-trips through the writer, tensor
// layout and alignment are honoured, typed accessors report missing and mistyped keys.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>

#include "gguf/gguf.h"
#include "gguf/gguf_writer.h"
#include "testutil.h"

using namespace orcd;

namespace {

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// A nested array value: [[1, 2], [3]] of i32, encoded by hand.
std::vector<uint8_t> nested_i32_array() {
  std::vector<uint8_t> b;
  gguf_put_u32(b, static_cast<uint32_t>(GgufType::array));
  gguf_put_u64(b, 2);
  for (std::vector<int32_t> inner : {std::vector<int32_t>{1, 2}, std::vector<int32_t>{3}}) {
    gguf_put_u32(b, static_cast<uint32_t>(GgufType::i32));
    gguf_put_u64(b, inner.size());
    for (int32_t x : inner) gguf_put_u32(b, static_cast<uint32_t>(x));
  }
  return b;
}

}  // namespace

TEST(GgufReader, EveryValueTypeRoundTrips) {
  GgufWriter w;
  w.set_u8("t.u8", 200);
  w.set_u32("t.u32", 4000000000u);
  w.set_i32("t.i32", -123456);
  w.set_u64("t.u64", 0xFFFFFFFFFFull + 7);
  w.set_f32("t.f32", 1.5f);
  w.set_f64("t.f64", -2.25e100);
  w.set_bool("t.bool", true);
  w.set_string("t.str", "h\xC3\xA9llo");
  w.set_string_array("t.strs", std::vector<std::string>{"a", "", "\xE2\x96\x81x"});
  const float fs[] = {0.5f, -1.0f, 3.25f};
  w.set_f32_array("t.f32s", fs);
  const int32_t is[] = {-1, 0, 7};
  w.set_i32_array("t.i32s", is);
  w.set_raw("t.nested", GgufType::array, nested_i32_array());
  const auto g = GgufFile::from_bytes(w.to_bytes(), "roundtrip");

  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.metadata().size(), 12u);
  EXPECT_EQ(g.get_u64("t.u8"), 200u);
  EXPECT_EQ(g.get_u64("t.u32"), 4000000000u);
  EXPECT_EQ(g.get_i64("t.i32"), -123456);
  EXPECT_EQ(g.get_u64("t.u64"), 0xFFFFFFFFFFull + 7);
  EXPECT_EQ(g.get_f64("t.f32"), 1.5);
  EXPECT_EQ(g.get_f64("t.f64"), -2.25e100);
  EXPECT_TRUE(g.get_bool("t.bool"));
  EXPECT_EQ(g.get_string("t.str"), "h\xC3\xA9llo");
  EXPECT_EQ(g.get_string_array("t.strs"), (std::vector<std::string_view>{"a", "", "\xE2\x96\x81x"}));
  EXPECT_EQ(g.get_f32_array("t.f32s"), (std::vector<float>{0.5f, -1.0f, 3.25f}));
  EXPECT_EQ(g.get_i32_array("t.i32s"), (std::vector<int32_t>{-1, 0, 7}));
  const GgufValue* nested = g.find("t.nested");
  ASSERT_NE(nested, nullptr);
  ASSERT_EQ(nested->elem_type, GgufType::array);
  ASSERT_EQ(nested->items.size(), 2u);
  EXPECT_EQ(nested->items[0].count, 2u);
  EXPECT_EQ(nested->items[0].int_at(1), 2);
  EXPECT_EQ(nested->items[1].int_at(0), 3);

  // Copying values through set_value reproduces the same bytes.
  GgufWriter w2;
  for (const auto& [k, v] : g.metadata()) w2.set_value(k, v);
  EXPECT_EQ(w2.to_bytes(), w.to_bytes());
}

TEST(GgufReader, TensorsAreAlignedAndPointIntoTheData) {
  for (uint32_t alignment : {32u, 64u, 256u}) {
    GgufWriter w(alignment);
    const auto a = random_bytes(4 * 7 * 3, 1);        // F32 7x3
    const auto b = random_bytes(34 * 2 * 5, 2);       // Q8_0 64x5
    const auto c = random_bytes(144 * 1 * 2, 3);      // Q4_K 256x2
    w.add_tensor("a", {7, 3}, GgmlType::F32, a);
    w.add_tensor("b", {64, 5}, GgmlType::Q8_0, b);
    w.add_tensor("c.weight", {256, 2}, GgmlType::Q4_K, c);
    const auto g = GgufFile::from_bytes(w.to_bytes());
    EXPECT_EQ(g.alignment(), alignment);
    ASSERT_EQ(g.tensors().size(), 3u);
    EXPECT_EQ(g.data_offset() % alignment, 0u);
    const GgufTensor* tb = g.find_tensor("b");
    ASSERT_NE(tb, nullptr);
    EXPECT_EQ(tb->type, GgmlType::Q8_0);
    EXPECT_EQ(tb->dims, (std::vector<uint64_t>{64, 5}));
    EXPECT_EQ(tb->n_elements, 320u);
    EXPECT_EQ(tb->n_bytes, b.size());
    EXPECT_EQ(tb->file_offset % alignment, 0u);
    EXPECT_TRUE(std::equal(b.begin(), b.end(), tb->data));
    EXPECT_TRUE(std::equal(c.begin(), c.end(), g.find_tensor("c.weight")->data));
    EXPECT_EQ(g.find_tensor("missing"), nullptr);
  }
}

TEST(GgufReader, TypedAccessorsNameTheKey) {
  GgufWriter w;
  w.set_string("s", "x");
  w.set_i32("neg", -1);
  const auto g = GgufFile::from_bytes(w.to_bytes(), "acc.gguf");
  try {
    g.get_u64("s");
    FAIL() << "expected wrong_type";
  } catch (const GgufError& e) {
    EXPECT_EQ(e.code(), GgufErrc::wrong_type);
    EXPECT_NE(std::string(e.what()).find("'s' is string"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("acc.gguf"), std::string::npos);
  }
  try {
    g.get_string("nope");
    FAIL() << "expected missing_key";
  } catch (const GgufError& e) {
    EXPECT_EQ(e.code(), GgufErrc::missing_key);
    EXPECT_NE(std::string(e.what()).find("'nope'"), std::string::npos);
  }
  EXPECT_THROW(g.get_u64("neg"), GgufError);  // negative where unsigned is expected
  EXPECT_EQ(g.get_i64("neg"), -1);
  EXPECT_EQ(g.get_u64_or("nope", 42), 42u);
  EXPECT_EQ(g.get_string_or("s", "d"), "x");
}

TEST(GgufReader, OpensRealFilesByPath) {
  const auto g = GgufFile::open(test::testdata("models/copy-llama-h256-q8_0.gguf"));
  EXPECT_EQ(g.get_string("general.architecture"), "llama");
  EXPECT_EQ(g.get_u64("llama.block_count"), 4u);
  EXPECT_EQ(g.get_string_array("tokenizer.ggml.tokens").size(), 32000u);
  ASSERT_NE(g.find_tensor("token_embd.weight"), nullptr);
  EXPECT_EQ(g.find_tensor("token_embd.weight")->type, GgmlType::Q8_0);
  // The last tensor ends inside the file.
  uint64_t end = 0;
  for (const auto& t : g.tensors()) end = std::max(end, t.file_offset + t.n_bytes);
  EXPECT_LE(end, g.file_size());

  for (const char* v : {"tokenizer/ggml-vocab-gpt-2.gguf", "tokenizer/ggml-vocab-llama-spm.gguf", "tokenizer/qwen2-vocab.gguf"}) {
    const auto vg = GgufFile::open(test::testdata(v));
    EXPECT_TRUE(vg.tensors().empty()) << v;
    EXPECT_TRUE(vg.has("tokenizer.ggml.model")) << v;
  }
}

TEST(GgufReader, OpenReportsMissingFile) {
  try {
    GgufFile::open("/nonexistent/model.gguf");
    FAIL();
  } catch (const GgufError& e) {
    EXPECT_EQ(e.code(), GgufErrc::io);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model.gguf"), std::string::npos);
  }
  EXPECT_THROW(GgufFile::open(std::filesystem::temp_directory_path().string()), GgufError);  // a directory
}

TEST(GgmlTypes, BlockSizesMatchTheFormat) {
  // Bytes per block from each format's block layout (scales + quants).
  EXPECT_EQ(ggml_row_bytes(GgmlType::F32, 10), 40u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q4_0, 64), 2u * (2 + 16));
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q8_0, 64), 2u * (2 + 32));
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q4_K, 512), 2u * (2 + 2 + 12 + 128));
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q5_K, 256), 2u + 2 + 12 + 32 + 128);
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q6_K, 256), 128u + 64 + 16 + 2);
  EXPECT_EQ(ggml_row_bytes(GgmlType::MXFP4, 32), 1u + 16);
  EXPECT_EQ(ggml_type_from_name("q4_k"), GgmlType::Q4_K);
  EXPECT_FALSE(ggml_type_from_name("q4_9").has_value());
  EXPECT_FALSE(ggml_type_traits(4).has_value());   // removed Q4_2
  EXPECT_FALSE(ggml_type_traits(31).has_value());  // removed Q4_0_4_4
}
