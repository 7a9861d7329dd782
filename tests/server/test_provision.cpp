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
#include "server/fake_backend.h"
#include "server/provision.h"
#include "testutil.h"
#include "vram/admission_ledger.h"

using namespace orcd;
namespace fs = std::filesystem;

namespace {

// Behaves like Hugging Face: the hub answers /ORG/REPO/resolve/main/FILE with a 302 to a CDN
// host and puts the file's SHA-256 and size on the redirect (X-Linked-ETag, X-Linked-Size); the
// CDN serves ranges and an ETag of its own.
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
    sha = sha256_file(root + "/tiny.gguf");
    etag = sha;
    ASSERT_TRUE(cdn.set_mount_point("/files", root));
    cdn.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      std::lock_guard lock(mu);
      ranges.push_back(req.get_header_value("Range"));
      if_ranges.push_back(req.get_header_value("If-Range"));
      bytes_sent += res.body.size();
    });
    cdn.set_post_routing_handler([](const httplib::Request&, httplib::Response& res) { res.set_header("ETag", "\"cdn-v1\""); });
    cdn_port = cdn.bind_to_any_port("127.0.0.1");
    hub.Get(R"(/org/repo/resolve/main/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
      res.status = 302;
      res.set_header("Location", cdn_origin() + "/files/" + req.matches[1].str());
      if (const std::string tag = etag.get(); !tag.empty()) res.set_header("X-Linked-ETag", "\"" + tag + "\"");
      res.set_header("X-Linked-Size", std::to_string(std::filesystem::file_size(root + "/tiny.gguf")));
    });
    hub_port = hub.bind_to_any_port("127.0.0.1");
    threads.emplace_back([this] { cdn.listen_after_bind(); });
    threads.emplace_back([this] { hub.listen_after_bind(); });
    for (int i = 0; i < 200 && !(cdn.is_running() && hub.is_running()); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    setenv("HF_ENDPOINT", ("http://127.0.0.1:" + std::to_string(hub_port)).c_str(), 1);
    url = resolve_model_url("hf:org/repo/tiny.gguf");
    cache = root + "/cache";
    fetch.allow_http = true;  // loopback test servers speak plain HTTP
  }
  void TearDown() override {
    cdn.stop();
    hub.stop();
    for (auto& t : threads) t.join();
    unsetenv("HF_ENDPOINT");
    fs::remove_all(root);
  }
  std::string cdn_origin() const { return "http://127.0.0.1:" + std::to_string(cdn_port); }
  DownloadOptions download_options() {
    DownloadOptions o;
    o.cache_dir = cache;
    o.fetch = fetch;
    return o;
  }
  std::string root, url, cache, sha;
  test::LockedText etag{""};  // read by the hub's threads
  FetchOptions fetch;
  httplib::Server cdn, hub;
  std::vector<std::thread> threads;
  int cdn_port = 0, hub_port = 0;
  std::mutex mu;
  std::vector<std::string> ranges, if_ranges;
  std::atomic<uint64_t> bytes_sent{0};
};

}  // namespace

TEST_F(ModelServer, HeaderComesFromRangeRequestsThroughTheRedirectWithItsHash) {
  const auto head = fetch_model_header(url, fetch);
  ASSERT_TRUE(head.header.has_value());
  EXPECT_EQ(head.file_size, fs::file_size(root + "/tiny.gguf"));
  EXPECT_EQ(head.sha256, sha);  // from the redirect, not the CDN's own ETag
  EXPECT_EQ(head.final_url, cdn_origin() + "/files/tiny.gguf");
  EXPECT_EQ(head.validator, "\"cdn-v1\"");
  EXPECT_EQ(head.header->find_tensor("token_embd.weight") != nullptr, true);
  EXPECT_LT(bytes_sent.load(), head.file_size);
  std::lock_guard lock(mu);
  ASSERT_FALSE(ranges.empty());
  EXPECT_EQ(ranges[0], "bytes=0-1048575");
}

TEST_F(ModelServer, ModelThatCannotFitIsRefusedBeforeDownloading) {
  ProvisionOptions po;
  po.cache_dir = cache;
  po.allow_http = true;
  po.admit = [](const GgufFile& header) {
    const auto cfg = ModelConfig::from_gguf(header);
    const VramPlan plan = plan_vram(header, cfg, 4096, 512);
    AdmissionLedger ledger(0, 8ull << 30, 2ull << 30, [&] { return (2ull << 30) + plan.total() / 2; });  // half of what it needs
    ledger.reserve(plan.total(), "model");
  };
  EXPECT_THROW(provision_model("hf:org/repo/tiny.gguf", po), InsufficientVramError);
  // Only header bytes were transferred and nothing was written to the cache.
  EXPECT_FALSE(fs::exists(cached_model_path(cache, url)));
  EXPECT_LT(bytes_sent.load(), fs::file_size(root + "/tiny.gguf"));
}

TEST_F(ModelServer, ProvisionsVerifiesRecordsAndThenWorksOffline) {
  ProvisionOptions po;
  po.cache_dir = cache;
  po.allow_http = true;
  const std::string path = provision_model("hf:org/repo/tiny.gguf", po);
  EXPECT_EQ(path, cached_model_path(cache, url));
  EXPECT_EQ(fs::path(path).filename().string().substr(17), "tiny.gguf");  // keyed by the URL's hash
  EXPECT_EQ(test::read_file(path), test::read_file(root + "/tiny.gguf"));
  EXPECT_EQ(test::read_file(path + ".sha256"), sha + "\n");
  EXPECT_FALSE(fs::exists(path + ".part"));
  // Later starts check the copy against its record and make no request: stop both servers.
  cdn.stop();
  hub.stop();
  EXPECT_EQ(provision_model("hf:org/repo/tiny.gguf", po), path);
  // A corrupted copy is not served.
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x55');
  }
  EXPECT_THROW(provision_model("hf:org/repo/tiny.gguf", po), ProvisionError);  // offline: must fetch again, and cannot
  EXPECT_FALSE(fs::exists(path));
}

TEST_F(ModelServer, DownloadsWithProgressAndChecksThePinnedHash) {
  const auto head = fetch_model_header(url, fetch);
  DownloadOptions o = download_options();
  o.expected_sha256 = sha;
  uint64_t last = 0, calls = 0;
  bool monotonic = true;
  o.progress = [&](uint64_t done, uint64_t total) {
    monotonic &= done >= last && total == head.file_size;
    last = done;
    ++calls;
  };
  const std::string path = download_model(url, head, o);
  EXPECT_TRUE(monotonic);
  EXPECT_EQ(last, head.file_size);
  EXPECT_GT(calls, 1u);
  EXPECT_EQ(test::read_file(path), test::read_file(root + "/tiny.gguf"));
  // A second call reuses the cached file without downloading again.
  const uint64_t before = bytes_sent.load();
  EXPECT_EQ(download_model(url, head, o), path);
  EXPECT_EQ(bytes_sent.load(), before);
}

TEST_F(ModelServer, ResumesAPartialDownloadWithIfRange) {
  const auto head = fetch_model_header(url, fetch);
  const std::string whole = test::read_file(root + "/tiny.gguf");
  fs::create_directories(cache);
  const size_t half_size = whole.size() / 2;
  std::ofstream(cached_model_path(cache, url) + ".part", std::ios::binary).write(whole.data(), static_cast<std::streamsize>(half_size));
  {
    std::lock_guard lock(mu);
    ranges.clear();
    if_ranges.clear();
  }
  const std::string path = download_model(url, head, download_options());
  EXPECT_EQ(test::read_file(path), whole);
  std::lock_guard lock(mu);
  ASSERT_EQ(ranges.size(), 1u);
  EXPECT_EQ(ranges[0], "bytes=" + std::to_string(half_size) + "-");
  EXPECT_EQ(if_ranges[0], "\"cdn-v1\"");  // a changed file would come back whole, not spliced
}

TEST_F(ModelServer, HashMismatchRemovesThePartAndFails) {
  etag = std::string(64, 'a');  // the hub claims another file's hash
  const auto head = fetch_model_header(url, fetch);
  EXPECT_EQ(head.sha256, etag.get());
  try {
    download_model(url, head, download_options());
    FAIL() << "accepted a file whose hash does not match";
  } catch (const ProvisionError& e) {
    EXPECT_NE(std::string(e.what()).find("SHA-256 mismatch"), std::string::npos);
  }
  EXPECT_FALSE(fs::exists(cached_model_path(cache, url)));
  EXPECT_FALSE(fs::exists(cached_model_path(cache, url) + ".part"));
}

TEST_F(ModelServer, NoHashMeansNoDownloadUnlessTheOperatorSkipsTheCheck) {
  etag = "";
  const auto head = fetch_model_header(url, fetch);
  EXPECT_TRUE(head.sha256.empty());
  EXPECT_THROW(download_model(url, head, download_options()), ProvisionError);
  EXPECT_FALSE(fs::exists(cached_model_path(cache, url) + ".part"));
  DownloadOptions o = download_options();
  o.insecure_skip_hash = true;
  EXPECT_EQ(test::read_file(download_model(url, head, o)), test::read_file(root + "/tiny.gguf"));
}

TEST_F(ModelServer, PlainHttpAndDowngradesAreRefusedUnlessAllowed) {
  try {
    fetch_model_header(url);  // http:// without allow_http
    FAIL() << "fetched over plain http";
  } catch (const ProvisionError& e) {
    EXPECT_NE(std::string(e.what()).find("only https://"), std::string::npos) << e.what();
  }
  EXPECT_THROW(fetch_model_header("ftp://127.0.0.1/x.gguf", fetch), ProvisionError);
}

TEST_F(ModelServer, ARangeIgnoringServerIsReadNoFurtherThanTheProbe) {
  httplib::Server whole;  // answers every GET with the whole file and no Range support
  const std::string body = test::read_file(root + "/tiny.gguf");
  std::atomic<uint64_t> sent{0};
  whole.Get("/whole.gguf", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content_provider(body.size(), "application/octet-stream", [&](size_t off, size_t len, httplib::DataSink& sink) {
      const size_t n = std::min<size_t>(len, 64 << 10);
      sent += n;
      return sink.write(body.data() + off, n);
    });
  });
  const int p = whole.bind_to_any_port("127.0.0.1");
  std::thread t([&] { whole.listen_after_bind(); });
  for (int i = 0; i < 200 && !whole.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  try {
    fetch_model_header("http://127.0.0.1:" + std::to_string(p) + "/whole.gguf", fetch);
  } catch (const ProvisionError&) {
  }
  whole.stop();
  t.join();
  // The header probes stop at 1 MiB, 2 MiB, ... 16 MiB: never the whole of a large file.
  EXPECT_LT(sent.load(), 40ull << 20);
}

TEST(ModelReference, HuggingFaceReferencesResolveAndBadOnesAreRefused) {
  unsetenv("HF_ENDPOINT");
  EXPECT_EQ(resolve_model_url("hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf"),
            "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF/resolve/main/qwen2.5-0.5b-instruct-q4_k_m.gguf");
  EXPECT_EQ(resolve_model_url("https://example.com/m.gguf"), "https://example.com/m.gguf");
  for (const char* bad : {"hf:", "hf:org", "hf:org/repo", "hf:org/repo/", "hf:/repo/f", "hf:org//f", "hf:org/repo/../../etc/passwd", "hf:o/r/f?x=1"})
    EXPECT_THROW(resolve_model_url(bad), ProvisionError) << bad;
  EXPECT_TRUE(is_remote_model("hf:o/r/f"));
  EXPECT_TRUE(is_remote_model("https://x/y.gguf"));
  EXPECT_FALSE(is_remote_model("/models/x.gguf"));
  // Two URLs with the same file name get different cache entries.
  EXPECT_NE(cached_model_path("/c", "https://a/x.gguf"), cached_model_path("/c", "https://b/x.gguf"));
}
