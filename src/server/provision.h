// Models named by URL or Hugging Face reference: resolve, read the GGUF header with range
// requests so the caller can refuse before anything is downloaded, download into a cache keyed
// by the URL with progress, resume (If-Range), a lock against a second downloader, and a SHA-256
// check whose verified result is recorded beside the file for later starts, offline included.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

#include "gguf/gguf.h"

namespace orcd {

class Narrator;

class ProvisionError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The model served when none is named: Qwen2.5-0.5B-Instruct, Q4_K_M, from its publisher.
constexpr const char* kDefaultModelRef = "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf";

bool is_remote_model(const std::string& s);  // http://, https:// or hf:
// hf:ORG/REPO/FILE -> $HF_ENDPOINT (default https://huggingface.co)/ORG/REPO/resolve/main/FILE;
// URLs pass through. Throws ProvisionError for a malformed reference.
std::string resolve_model_url(const std::string& ref);

struct RemoteModelHeader {
  std::optional<GgufFile> header;  // header-only: metadata and tensor table
  uint64_t file_size = 0;
  std::string sha256;     // from X-Linked-ETag (on a redirect) or ETag when it is a SHA-256
  std::string validator;  // the final response's ETag or Last-Modified, for If-Range
  std::string final_url;  // after redirects
  std::string file_name;  // last path segment of the reference, without the query
};

struct FetchOptions {
  bool allow_http = false;  // http:// and https -> http redirects
  int max_redirects = 5;
};

// Fetches as few leading bytes as the header needs (1 MiB, doubling up to 256 MiB); a server
// that ignores Range is read no further than that.
RemoteModelHeader fetch_model_header(const std::string& url, const FetchOptions& opt = {});

struct DownloadOptions {
  std::string cache_dir;        // default: $XDG_CACHE_HOME or ~/.cache, /worker-orcd/models
  std::string expected_sha256;  // the operator's; else the server's; else none (needs insecure_skip_hash)
  bool insecure_skip_hash = false;
  FetchOptions fetch;
  std::function<void(uint64_t done, uint64_t total)> progress;
  Narrator* log = nullptr;  // says when it waits for another process's download
};

// Downloads into the cache and returns the local path; a cached file whose recorded hash
// matches is reused without a request.
std::string download_model(const std::string& url, const RemoteModelHeader& head, const DownloadOptions& opt);

// Where a URL's file lives in the cache: <cache>/<first 16 hex of sha256(url)>-<file name>.
std::string cached_model_path(const std::string& cache_dir, const std::string& url);

struct ProvisionOptions {
  std::string cache_dir, expected_sha256;
  bool insecure_skip_hash = false, allow_http = false;
  Narrator* log = nullptr;
  // Called with the header before any download; throws to refuse (e.g. the model cannot fit).
  std::function<void(const GgufFile&)> admit;
};

// The whole path for a remote reference: a verified cached copy, or header, admit, download,
// verify, record. Shows a progress bar on a terminal, log lines otherwise.
std::string provision_model(const std::string& ref, const ProvisionOptions& opt);

std::string default_model_cache_dir();
std::string sha256_file(const std::string& path);  // lowercase hex
std::string sha256_hex(std::string_view data);

}  // namespace orcd
