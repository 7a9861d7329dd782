// The worker-orcd binary's inspect, tokenize and serve pre-flight, run as a user would.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "gguf/gguf.h"
#include "gguf/gguf_writer.h"
#include "gguf/model_info.h"
#include "testutil.h"
#include "tokenizer/tokenizer.h"

using namespace orcd;

TEST(Cli, InspectJsonDescribesTheModel) {
  const std::string model = test::testdata("models/copy-llama-h256-q8_0.gguf");
  const auto r = test::run_cli("inspect --json '" + model + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  const auto info = describe_model(GgufFile::open(model));
  EXPECT_EQ(j.at("architecture"), "llama");
  EXPECT_EQ(j.at("n_layers"), 4);
  EXPECT_EQ(j.at("weight_vram_bytes"), info.weight_vram_bytes);
  EXPECT_EQ(j.at("tensors").size(), 38u);
  EXPECT_EQ(j.at("tensors")[0].at("type"), "Q8_0");

  const auto text = test::run_cli("inspect '" + model + "'");
  ASSERT_EQ(text.exit_code, 0);
  EXPECT_NE(text.out.find("blk.3.ffn_down.weight"), std::string::npos);
  EXPECT_NE(text.out.find("VRAM weights"), std::string::npos);
}

TEST(Cli, InspectRejectsAHostileFileWithItsOffset) {
  const std::string dir = test::temp_dir();
  GgufWriter w;
  w.add_tensor("t", {32}, GgmlType::F32, std::vector<uint8_t>(128, 0));
  auto bytes = w.to_bytes();
  bytes.resize(bytes.size() - 64);  // cut the tensor data short
  {
    FILE* f = std::fopen((dir + "/cut.gguf").c_str(), "wb");
    std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
  }
  const auto r = test::run_cli("inspect '" + dir + "/cut.gguf'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("data_out_of_bounds at byte"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("cut.gguf"), std::string::npos);
}

TEST(Cli, TokenizePrintsIdsAsTextAndJson) {
  const std::string vocab = test::testdata("tokenizer/ggml-vocab-llama-spm.gguf");
  const auto tok = Tokenizer::from_gguf(GgufFile::open(vocab));
  const auto expected = tok.encode("Hello world");
  auto r = test::run_cli("tokenize --model '" + vocab + "' --text 'Hello world' --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out).get<std::vector<int32_t>>(), expected);
  EXPECT_EQ(expected.front(), 1);

  r = test::run_cli("tokenize --model '" + vocab + "' --text 'Hello world' --no-bos");
  ASSERT_EQ(r.exit_code, 0);
  std::string line;
  for (size_t k = 1; k < expected.size(); ++k) line += (k > 1 ? " " : "") + std::to_string(expected[k]);
  EXPECT_EQ(r.out, line + "\n");

  const std::string dir = test::temp_dir();
  { FILE* f = std::fopen((dir + "/in.txt").c_str(), "wb"); std::fputs("Hello world", f); std::fclose(f); }
  r = test::run_cli("tokenize -m '" + vocab + "' --file '" + dir + "/in.txt' --json");
  EXPECT_EQ(nlohmann::json::parse(r.out).get<std::vector<int32_t>>(), expected);

  r = test::run_cli("tokenize -m '" + vocab + "'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--text or --file"), std::string::npos);
}

TEST(Cli, ServeExplainsWhatIsMissing) {
  const auto r = test::run_cli("serve", "WORKER_ORCD_MODEL=/nonexistent/qwen.gguf");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("MODEL_NOT_FOUND"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("/nonexistent/qwen.gguf"), std::string::npos);
  EXPECT_NE(r.err.find("--model"), std::string::npos);
}

// Flags override the config file's values only where they are given; the rest of the file stays.
TEST(Cli, ServeFlagsOverrideTheConfigFileWhereGiven) {
  const std::string dir = test::temp_dir();
  const std::string toml = dir + "/worker.toml";
  {
    FILE* f = std::fopen(toml.c_str(), "wb");
    std::fputs("model = \"/nonexistent/from-file.gguf\"\nlog_format = \"xml\"\nport = 70000\n", f);
    std::fclose(f);
  }
  auto r = test::run_cli("serve --config '" + toml + "' --port 0");
  EXPECT_EQ(r.exit_code, 2);  // a configuration error, before anything starts
  EXPECT_NE(r.err.find("log_format must be"), std::string::npos) << r.err;  // the file's value is kept
  r = test::run_cli("serve --config '" + toml + "' --log-format text");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("port must be"), std::string::npos) << r.err;
  r = test::run_cli("serve --config '" + toml + "' --log-format text --port 0");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("MODEL_NOT_FOUND"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("/nonexistent/from-file.gguf"), std::string::npos) << r.err;
  r = test::run_cli("serve --config '" + toml + "' --log-format text --port 0 --model /nonexistent/from-flag.gguf");
  EXPECT_NE(r.err.find("/nonexistent/from-flag.gguf"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("from-file"), std::string::npos) << r.err;
}
