// Hostile GGUF input: every malformation gives a typed GgufError with the file name and the
// byte offset, never a crash, an over-read or a huge allocation.
#include <gtest/gtest.h>

#include <random>

#include "gguf/gguf.h"
#include "gguf/gguf_writer.h"

using namespace orcd;

namespace {

constexpr uint32_t kMagic = 0x46554747;

std::vector<uint8_t> header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
  std::vector<uint8_t> b;
  gguf_put_u32(b, kMagic);
  gguf_put_u32(b, version);
  gguf_put_u64(b, n_tensors);
  gguf_put_u64(b, n_kv);
  return b;
}

void put_tensor_info(std::vector<uint8_t>& b, std::string_view name, std::vector<uint64_t> dims, uint32_t type, uint64_t offset) {
  gguf_put_string(b, name);
  gguf_put_u32(b, static_cast<uint32_t>(dims.size()));
  for (auto d : dims) gguf_put_u64(b, d);
  gguf_put_u32(b, type);
  gguf_put_u64(b, offset);
}

void pad_to(std::vector<uint8_t>& b, size_t alignment) { b.resize((b.size() + alignment - 1) / alignment * alignment, 0); }

GgufError parse_error(const std::vector<uint8_t>& bytes) {
  try {
    GgufFile::from_bytes(bytes, "hostile.gguf");
  } catch (const GgufError& e) {
    return e;
  }
  ADD_FAILURE() << "file parsed without error";
  return GgufError(GgufErrc::io, "", 0, "none");
}

void expect_error(const std::vector<uint8_t>& bytes, GgufErrc code, uint64_t offset, const std::string& fragment) {
  const GgufError e = parse_error(bytes);
  EXPECT_EQ(e.code(), code) << e.what();
  EXPECT_EQ(e.offset(), offset) << e.what();
  EXPECT_NE(std::string(e.what()).find("hostile.gguf"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
}

// A valid file with metadata of several types and two tensors, for mutation tests.
std::vector<uint8_t> valid_file() {
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_u32("llama.block_count", 2);
  w.set_string_array("tokenizer.ggml.tokens", std::vector<std::string>{"a", "b", "c"});
  const float s[] = {0.f, 1.f, 2.f};
  w.set_f32_array("tokenizer.ggml.scores", s);
  w.add_tensor("w", {32, 2}, GgmlType::Q8_0, std::vector<uint8_t>(68, 7));
  w.add_tensor("n", {4}, GgmlType::F32, std::vector<uint8_t>(16, 1));
  return w.to_bytes();
}

}  // namespace

TEST(GgufHostile, BadMagic) {
  auto b = header(0, 0);
  b[0] = 'X';
  expect_error(b, GgufErrc::bad_magic, 0, "not a GGUF file");
  expect_error({}, GgufErrc::truncated, 0, "magic");
}

TEST(GgufHostile, UnsupportedVersions) {
  expect_error(header(0, 0, 1), GgufErrc::unsupported_version, 4, "v1");
  expect_error(header(0, 0, 4), GgufErrc::unsupported_version, 4, "version 4");
  expect_error(header(0, 0, 0x03000000), GgufErrc::unsupported_version, 4, "big-endian");
  EXPECT_NO_THROW(GgufFile::from_bytes(header(0, 0, 2)));
}

TEST(GgufHostile, EveryTruncationIsReported) {
  const auto full = valid_file();
  uint64_t data_end = 0;  // past it lies only the last tensor's alignment padding
  const auto parsed = GgufFile::from_bytes(full);
  for (const auto& t : parsed.tensors()) data_end = std::max(data_end, t.file_offset + t.n_bytes);
  ASSERT_LT(data_end, full.size());
  for (size_t n = 0; n < full.size(); ++n) {
    std::vector<uint8_t> cut(full.begin(), full.begin() + n);
    try {
      GgufFile::from_bytes(cut);
      EXPECT_GE(n, data_end) << "prefix of " << n << " bytes parsed";
    } catch (const GgufError& e) {
      // A cut header can also leave too few bytes for the counts it announces.
      EXPECT_TRUE(e.code() == GgufErrc::truncated || e.code() == GgufErrc::data_out_of_bounds ||
                  e.code() == GgufErrc::absurd_count) << n << ": " << e.what();
      EXPECT_LE(e.offset(), full.size());
    }
  }
}

TEST(GgufHostile, StringLengthPastTheEnd) {
  auto b = header(0, 1);
  gguf_put_u64(b, 1000);  // key length
  b.resize(b.size() + 40, 'k');
  expect_error(b, GgufErrc::truncated, 24, "metadata key length 1000");
}

TEST(GgufHostile, AbsurdCounts) {
  expect_error(header(0, 1ull << 60), GgufErrc::absurd_count, 16, "metadata count");
  expect_error(header(1ull << 40, 0), GgufErrc::absurd_count, 8, "tensor count");
  auto b = header(0, 1);
  gguf_put_string(b, "arr");
  gguf_put_u32(b, static_cast<uint32_t>(GgufType::array));
  gguf_put_u32(b, static_cast<uint32_t>(GgufType::u64));
  gguf_put_u64(b, 1ull << 61);
  expect_error(b, GgufErrc::absurd_count, 24 + 8 + 3 + 4 + 4, "array length");
}

TEST(GgufHostile, BadValues) {
  auto b = header(0, 1);
  gguf_put_string(b, "k");
  gguf_put_u32(b, 13);  // no such type
  expect_error(b, GgufErrc::bad_value, 24 + 9, "unknown metadata type 13");

  b = header(0, 1);
  gguf_put_string(b, "flag");
  gguf_put_u32(b, static_cast<uint32_t>(GgufType::boolean));
  b.push_back(2);
  expect_error(b, GgufErrc::bad_value, 24 + 12 + 4, "bool");

  // Arrays nested deeper than the reader allows.
  b = header(0, 1);
  gguf_put_string(b, "deep");
  gguf_put_u32(b, static_cast<uint32_t>(GgufType::array));
  for (int d = 0; d < 6; ++d) {
    gguf_put_u32(b, static_cast<uint32_t>(GgufType::array));
    gguf_put_u64(b, 1);
  }
  EXPECT_EQ(parse_error(b).code(), GgufErrc::bad_value);
}

TEST(GgufHostile, DuplicateKeysAndTensors) {
  auto b = header(0, 2);
  for (int k = 0; k < 2; ++k) {
    gguf_put_string(b, "dup");
    gguf_put_u32(b, static_cast<uint32_t>(GgufType::u8));
    b.push_back(1);
  }
  expect_error(b, GgufErrc::duplicate, 24 + 8 + 3 + 4 + 1, "'dup'");

  b = header(2, 0);
  put_tensor_info(b, "t", {32}, 0, 0);
  const size_t second = b.size();
  put_tensor_info(b, "t", {32}, 0, 128);
  pad_to(b, 32);
  b.resize(b.size() + 256, 0);
  expect_error(b, GgufErrc::duplicate, second, "tensor name 't'");
}

TEST(GgufHostile, BadTensorShapes) {
  auto b = header(1, 0);
  put_tensor_info(b, "t", {1, 1, 1, 1, 1}, 0, 0);
  expect_error(b, GgufErrc::bad_tensor, 24 + 9, "5 dims");

  b = header(1, 0);
  put_tensor_info(b, "t", {4, 0}, 0, 0);
  expect_error(b, GgufErrc::bad_tensor, 24 + 9 + 4 + 8, "dim 1 = 0");

  b = header(1, 0);
  put_tensor_info(b, "t", {1ull << 40, 1ull << 30}, 0, 0);  // product overflows the 2^62 cap
  EXPECT_EQ(parse_error(b).code(), GgufErrc::bad_tensor);

  b = header(1, 0);
  put_tensor_info(b, "t", {32}, 4, 0);  // removed type id
  expect_error(b, GgufErrc::bad_tensor, 24 + 9 + 4 + 8, "unknown type id 4");

  b = header(1, 0);
  put_tensor_info(b, "t", {48}, static_cast<uint32_t>(GgmlType::Q4_0), 0);
  expect_error(b, GgufErrc::bad_tensor, 24, "not a whole number of Q4_0 blocks");

  b = header(1, 0);
  put_tensor_info(b, std::string(65, 'n'), {32}, 0, 0);
  expect_error(b, GgufErrc::bad_tensor, 24, "longer than 64");
}

TEST(GgufHostile, TensorDataOutsideTheFile) {
  auto b = header(1, 0);
  put_tensor_info(b, "t", {32}, 0, 0);  // 128 bytes of F32
  pad_to(b, 32);
  const uint64_t data = b.size();
  b.resize(b.size() + 100, 0);
  expect_error(b, GgufErrc::data_out_of_bounds, data, "outside the file");

  b = header(1, 0);
  put_tensor_info(b, "t", {32}, 0, 0xFFFFFFFFFFFFFFE0ull);  // offset + size wraps around
  pad_to(b, 32);
  b.resize(b.size() + 128, 0);
  EXPECT_EQ(parse_error(b).code(), GgufErrc::data_out_of_bounds);
}

TEST(GgufHostile, OverlappingTensors) {
  auto b = header(2, 0);
  put_tensor_info(b, "a", {32}, 0, 0);   // bytes [0, 128)
  put_tensor_info(b, "b", {32}, 0, 96);  // bytes [96, 224)
  pad_to(b, 32);
  const uint64_t data = b.size();
  b.resize(b.size() + 256, 0);
  expect_error(b, GgufErrc::overlap, data + 96, "'b' overlaps tensor 'a'");
}

TEST(GgufHostile, MisalignedOffsetsAndBadAlignment) {
  auto b = header(1, 0);
  put_tensor_info(b, "t", {32}, 0, 16);
  pad_to(b, 32);
  b.resize(b.size() + 256, 0);
  expect_error(b, GgufErrc::bad_alignment, 24 + 9 + 4 + 8 + 4, "not a multiple of the alignment 32");

  for (uint32_t bad : {0u, 3u, 48u}) {
    b = header(0, 1);
    gguf_put_string(b, "general.alignment");
    gguf_put_u32(b, static_cast<uint32_t>(GgufType::u32));
    gguf_put_u32(b, bad);
    EXPECT_EQ(parse_error(b).code(), GgufErrc::bad_alignment) << bad;
  }
}

// Random byte corruption of a valid file: the reader parses it or throws GgufError; any other
// outcome (crash, sanitizer report, other exception) fails. The fuzzer goes much further.
TEST(GgufHostile, RandomCorruptionNeverCrashes) {
  const auto full = valid_file();
  std::mt19937 rng(12345);
  int parsed = 0, rejected = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    auto b = full;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) b[rng() % b.size()] = static_cast<uint8_t>(rng());
    try {
      GgufFile::from_bytes(b);
      ++parsed;
    } catch (const GgufError&) {
      ++rejected;
    }
  }
  EXPECT_EQ(parsed + rejected, 3000);
  EXPECT_GT(rejected, 0);
}

// A header prefix that claims a huge file: counts that the claimed size allows must not turn
// into allocations for elements that are not in the bytes at hand.
TEST(GgufHostile, HeaderPrefixClaimingAHugeFileAllocatesOnlyForWhatIsThere) {
  constexpr uint64_t kClaimed = 1ull << 40;  // a 1 TiB "file"
  auto b = header(1ull << 30, 1);               // a billion tensors
  gguf_put_string(b, "tokenizer.ggml.tokens");
  gguf_put_u32(b, 9);                           // array
  gguf_put_u32(b, 8);                           // of strings
  gguf_put_u64(b, 1ull << 36);                  // 64 G of them: 1 TiB of views if reserved
  for (int i = 0; i < 100; ++i) gguf_put_string(b, "tok");
  try {
    GgufFile::from_header_bytes(b, kClaimed, "remote.gguf");
    FAIL() << "parsed a header that is not all there";
  } catch (const GgufError& e) {
    EXPECT_EQ(e.code(), GgufErrc::truncated) << e.what();  // not bad_alloc, and not an OOM kill
  }
  // Arrays of empty arrays: 12 bytes each in the file, far more in memory. The parser stops
  // once its structures outgrow four times the bytes it holds.
  auto n = header(0, 1);
  gguf_put_string(n, "nested");
  gguf_put_u32(n, 9);
  gguf_put_u32(n, 9);                           // array of arrays
  const uint64_t items = 4'000'000;
  gguf_put_u64(n, items);
  for (uint64_t i = 0; i < items; ++i) {
    gguf_put_u32(n, 0);                         // empty u8 arrays
    gguf_put_u64(n, 0);
  }
  try {
    GgufFile::from_header_bytes(n, kClaimed, "remote.gguf");
    FAIL() << "accepted 4 million nested arrays";
  } catch (const GgufError& e) {
    EXPECT_EQ(e.code(), GgufErrc::absurd_count) << e.what();
  }
}
