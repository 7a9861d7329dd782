// Models by URL against a loopback HTTP server: header by range requests, refusal before any
// download, download with progress, resume and SHA-256.
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "engine/model.h"
#include "engine/synth.h"
#include "engine/vram_plan.h"
#include "server/provision.h"
#include "testutil.h"
#include "vram/admission_ledger.h"

using namespace orcd;
namespace fs = std::filesystem;

namespace {

class ModelServer : public ::testing::Test {
 protected:
  void SetUp() override {
    root = test::temp_dir();
    SynthOptions o;
    o.preset = "tiny-qwen2";
    o.scheme = "q8_0";
    o.vocab_path = test::testdata("tokenizer/qwen2-vocab.gguf");  // ~6 MB of metadata: the header needs several fetches
    o.out_path = root + "/tiny.gguf";
    write_synthetic_model(o);
    ASSERT_TRUE(svr.set_mount_point("/files", root));
    svr.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      std::lock_guard lock(mu);
      ranges.push_back(req.get_header_value("Range"));
      bytes_sent += res.body.size();
    });
    svr.set_post_routing_handler([this](const httplib::Request&, httplib::Response& res) {
      if (!etag.empty()) res.set_header("X-Linked-ETag", "\"" + etag + "\"");
    });
    port = svr.bind_to_any_port("127.0.0.1");
    th = std::thread([this] { svr.listen_after_bind(); });
    for (int i = 0; i < 200 && !svr.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    url = "http://127.0.0.1:" + std::to_string(port) + "/files/tiny.gguf";
    cache = root + "/cache";
  }
  void TearDown() override {
    svr.stop();
    th.join();
    fs::remove_all(root);
  }
  std::string root, url, cache, etag;
  httplib::Server svr;
  std::thread th;
  int port = 0;
  std::mutex mu;
  std::vector<std::string> ranges;
  std::atomic<uint64_t> bytes_sent{0};
};

}  // namespace

TEST_F(ModelServer, HeaderComesFromRangeRequestsAndSizesTheModel) {
  const auto head = fetch_model_header(url);
  const uint64_t size = fs::file_size(root + "/tiny.gguf");
  EXPECT_EQ(head.file_size, size);
  EXPECT_EQ(head.file_name, "tiny.gguf");
  ASSERT_TRUE(head.header.has_value());
  EXPECT_TRUE(head.header->header_only());
  const auto local = GgufFile::open(root + "/tiny.gguf");
  EXPECT_EQ(head.header->tensors().size(), local.tensors().size());
  const auto cfg = ModelConfig::from_gguf(*head.header);
  EXPECT_EQ(plan_vram(*head.header, cfg, 1024, 256).total(), plan_vram(local, cfg, 1024, 256).total());
  std::lock_guard lock(mu);
  ASSERT_GE(ranges.size(), 2u);  // 1 MiB was not enough for 6 MB of metadata
  for (const auto& r : ranges) EXPECT_TRUE(r.starts_with("bytes=0-")) << r;
  EXPECT_LT(bytes_sent.load(), size);  // never the whole file
}

TEST_F(ModelServer, ModelThatCannotFitIsRefusedBeforeDownloading) {
  const auto head = fetch_model_header(url);
  const auto cfg = ModelConfig::from_gguf(*head.header);
  const VramPlan plan = plan_vram(*head.header, cfg, 4096, 512);
  AdmissionLedger ledger(0, 8ull << 30, 2ull << 30, [&] { return (2ull << 30) + plan.total() / 2; });  // half of what it needs
  EXPECT_THROW(ledger.reserve(plan.total(), "model"), InsufficientVramError);
  // The refusal happened with only header bytes transferred and nothing in the cache.
  EXPECT_FALSE(fs::exists(cache));
  EXPECT_LT(bytes_sent.load(), head.file_size);
}

TEST_F(ModelServer, DownloadsWithProgressAndChecksTheHash) {
  const auto head = fetch_model_header(url);
  DownloadOptions o;
  o.cache_dir = cache;
  o.expected_sha256 = sha256_file(root + "/tiny.gguf");
  uint64_t last = 0, calls = 0;
  bool monotonic = true;
  o.progress = [&](uint64_t done, uint64_t total) {
    monotonic &= done >= last && total == head.file_size;
    last = done;
    ++calls;
  };
  const std::string path = download_model(url, head, o);
  EXPECT_EQ(path, cache + "/tiny.gguf");
  EXPECT_TRUE(monotonic);
  EXPECT_EQ(last, head.file_size);
  EXPECT_GT(calls, 1u);
  EXPECT_EQ(test::read_file(path), test::read_file(root + "/tiny.gguf"));
  EXPECT_FALSE(fs::exists(path + ".part"));
  // A second call reuses the cached file without downloading again.
  const uint64_t before = bytes_sent.load();
  EXPECT_EQ(download_model(url, head, o), path);
  EXPECT_EQ(bytes_sent.load(), before);
}

TEST_F(ModelServer, ResumesAPartialDownload) {
  const auto head = fetch_model_header(url);
  const std::string whole = test::read_file(root + "/tiny.gguf");
  fs::create_directories(cache);
  const size_t half_size = whole.size() / 2;
  std::ofstream(cache + "/tiny.gguf.part", std::ios::binary).write(whole.data(), static_cast<std::streamsize>(half_size));
  {
    std::lock_guard lock(mu);
    ranges.clear();
  }
  DownloadOptions o;
  o.cache_dir = cache;
  const std::string path = download_model(url, head, o);
  EXPECT_EQ(test::read_file(path), whole);
  std::lock_guard lock(mu);
  ASSERT_EQ(ranges.size(), 1u);
  EXPECT_EQ(ranges[0], "bytes=" + std::to_string(half_size) + "-");
}

TEST_F(ModelServer, HashMismatchRemovesThePartAndFails) {
  etag = std::string(64, 'a');  // the server claims another file's hash
  const auto head = fetch_model_header(url);
  EXPECT_EQ(head.sha256, etag);
  DownloadOptions o;
  o.cache_dir = cache;
  try {
    download_model(url, head, o);
    FAIL() << "accepted a file whose hash does not match";
  } catch (const ProvisionError& e) {
    EXPECT_NE(std::string(e.what()).find("SHA-256 mismatch"), std::string::npos);
  }
  EXPECT_FALSE(fs::exists(cache + "/tiny.gguf"));
  EXPECT_FALSE(fs::exists(cache + "/tiny.gguf.part"));
}

TEST_F(ModelServer, BadUrlsAndNonGgufFilesAreClearErrors) {
  { std::ofstream(root + "/notes.txt") << "hello, this is not a model"; }
  EXPECT_THROW(fetch_model_header("http://127.0.0.1:" + std::to_string(port) + "/files/notes.txt"), ProvisionError);
  EXPECT_THROW(fetch_model_header("http://127.0.0.1:" + std::to_string(port) + "/files/missing.gguf"), ProvisionError);
  EXPECT_THROW(fetch_model_header("http://127.0.0.1:1/x.gguf"), ProvisionError);  // nothing listens there
  EXPECT_TRUE(is_model_url("https://huggingface.co/x/resolve/main/m.gguf"));
  EXPECT_FALSE(is_model_url("/models/m.gguf"));
}
