// Tokenizer conformance on the shared vocabularies: every vector encodes to the expected ids
// (no BOS, special-token text as plain text) and decodes back to the input.
#include <gtest/gtest.h>

#include <sstream>

#include "gguf/gguf.h"
#include "testutil.h"
#include "tokenizer/tokenizer.h"

using namespace orcd;

namespace {

struct Vector {
  std::string text;
  std::vector<int32_t> ids;
};

std::vector<Vector> load_vectors(const std::string& vocab) {
  const std::string inp = test::read_file(test::testdata("tokenizer/" + vocab + ".inp"));
  const std::string out = test::read_file(test::testdata("tokenizer/" + vocab + ".out"));
  const std::string sep = "__ggml_vocab_test__\n";
  std::vector<Vector> v;
  size_t pos = 0;
  while (pos < inp.size()) {
    size_t m = inp.find(sep, pos);
    while (m != std::string::npos && m != 0 && inp[m - 1] != '\n') m = inp.find(sep, m + 1);
    if (m == std::string::npos) break;
    v.push_back({inp.substr(pos, m > pos ? m - 1 - pos : 0), {}});
    pos = m + sep.size();
  }
  std::istringstream lines(out);
  std::string line;
  size_t k = 0;
  while (std::getline(lines, line)) {
    if (k >= v.size()) throw std::runtime_error("more expected lines than test strings");
    std::istringstream ids(line);
    int32_t id;
    while (ids >> id) v[k].ids.push_back(id);
    ++k;
  }
  if (k != v.size()) throw std::runtime_error(vocab + ": " + std::to_string(v.size()) + " strings but " + std::to_string(k) + " lines");
  return v;
}

std::string show(const std::vector<int32_t>& ids) {
  std::string s;
  for (auto id : ids) s += std::to_string(id) + " ";
  return s;
}

class Conformance : public ::testing::TestWithParam<std::string> {};

TEST_P(Conformance, EveryVectorEncodesAndRoundTrips) {
  const auto g = GgufFile::open(test::testdata("tokenizer/" + GetParam()));
  const auto tok = Tokenizer::from_gguf(g);
  const auto vectors = load_vectors(GetParam());
  ASSERT_GE(vectors.size(), 10u);
  EncodeOptions opt;
  opt.add_bos = false;
  opt.parse_special = false;
  int failures = 0;
  for (size_t i = 0; i < vectors.size(); ++i) {
    const auto& vec = vectors[i];
    const auto ids = tok.encode(vec.text, opt);
    if (ids != vec.ids) {
      ++failures;
      ADD_FAILURE() << GetParam() << " vector " << i << " '" << vec.text << "'\n  got      " << show(ids) << "\n  expected " << show(vec.ids);
    }
    EXPECT_EQ(tok.decode(vec.ids), vec.text) << GetParam() << " vector " << i;
  }
  EXPECT_EQ(failures, 0);
}

INSTANTIATE_TEST_SUITE_P(Vocabularies, Conformance,
                         ::testing::Values("ggml-vocab-gpt-2.gguf", "ggml-vocab-llama-spm.gguf", "qwen2-vocab.gguf"),
                         [](const auto& param_info) {
                           std::string n = param_info.param.substr(0, param_info.param.find(".gguf"));
                           for (auto& c : n) if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

}  // namespace
