// Models named by URL: read the GGUF header with HTTP range requests, let the caller refuse
// before anything is downloaded, then download into the cache with progress, resume and a
// SHA-256 check.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

#include "gguf/gguf.h"

namespace orcd {

class ProvisionError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

bool is_model_url(const std::string& s);  // http:// or https://

struct RemoteModelHeader {
  std::optional<GgufFile> header;  // header-only: metadata and tensor table
  uint64_t file_size = 0;
  std::string sha256;    // from X-Linked-ETag / ETag when it is a SHA-256, else empty
  std::string file_name; // last path segment, without the query
};

// Fetches as few leading bytes as the header needs (1 MiB, doubling up to 256 MiB).
RemoteModelHeader fetch_model_header(const std::string& url);

struct DownloadOptions {
  std::string cache_dir;                 // default: $XDG_CACHE_HOME or ~/.cache, /worker-orcd/models
  std::string expected_sha256;           // checked when set (or when the server gave one)
  std::function<void(uint64_t done, uint64_t total)> progress;
};

// Downloads `url` into the cache (resuming a .part file left by an earlier attempt) and
// returns the local path. A complete file already in the cache with the right hash is reused.
std::string download_model(const std::string& url, const RemoteModelHeader& head, const DownloadOptions& opt);

std::string default_model_cache_dir();
std::string sha256_file(const std::string& path);  // lowercase hex

}  // namespace orcd
