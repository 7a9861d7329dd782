#include "server/provision.h"

#include <fcntl.h>
#include <httplib.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/text.h"
#include "server/narrator.h"

namespace orcd {

namespace fs = std::filesystem;

namespace {

UrlParts parse_url(const std::string& url) {
  try {
    return split_url(url);
  } catch (const std::invalid_argument& e) {
    throw ProvisionError(e.what());
  }
}

// The last path segment, without the query: what the file is called.
std::string url_file_name(const std::string& url) {
  std::string name = parse_url(url).path;
  name = name.substr(0, name.find_first_of("?#"));
  name = name.substr(name.rfind('/') + 1);
  if (name.empty() || name == "." || name == "..") throw ProvisionError(url + ": the URL names no file");
  return name;
}

std::string to_hex(const unsigned char* md, unsigned int n) {
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (unsigned int i = 0; i < n; ++i) s += hex[md[i] >> 4], s += hex[md[i] & 15];
  return s;
}

bool is_sha256(const std::string& s) {
  if (s.size() != 64) return false;
  for (char ch : s)
    if (!std::isxdigit(static_cast<unsigned char>(ch))) return false;
  return true;
}

std::string unquote(std::string s) {
  if (s.starts_with("W/")) s = s.substr(2);
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') s = s.substr(1, s.size() - 2);
  return ascii_lower(s);
}

uint64_t parse_u64(const std::string& v) {
  uint64_t n = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  return ec == std::errc() && end == v.data() + v.size() ? n : 0;
}

// Total size from "Content-Range: bytes a-b/total".
uint64_t total_from_content_range(const std::string& v) {
  const auto slash = v.rfind('/');
  return slash == std::string::npos ? 0 : parse_u64(v.substr(slash + 1));
}

// What the hops of one request said: Hugging Face puts the file's hash and size on the redirect.
struct HopInfo {
  std::string linked_sha256, final_url;
  uint64_t linked_size = 0;
};

// GET `url` following redirects by hand, so each hop's scheme and headers are seen. `on_final`
// sees the last response's head (return false to stop), `receive` its body.
httplib::Result get_following(std::string url, const httplib::Headers& headers, const FetchOptions& opt, HopInfo& hops,
                              const std::function<bool(const httplib::Response&)>& on_final, const httplib::ContentReceiver& receive) {
  bool was_https = url.starts_with("https://");
  for (int hop = 0; hop <= opt.max_redirects; ++hop) {
    const UrlParts u = parse_url(url);
    if (u.scheme != "https" && !(u.scheme == "http" && opt.allow_http))
      throw ProvisionError(url + ": " + (was_https ? "a redirect from https to " + u.scheme + " is refused" : "only https:// models are fetched") +
                           " (allow_http_downloads to allow it)");
    httplib::Client cli(u.origin);
    cli.set_follow_location(false);
    cli.set_connection_timeout(10);
    cli.set_read_timeout(60);
    std::string location;
    auto r = cli.Get(
        u.path.c_str(), headers,
        [&](const httplib::Response& resp) {
          for (const char* h : {"X-Linked-ETag", "X-Linked-Etag"}) {
            const std::string tag = unquote(resp.get_header_value(h));
            if (is_sha256(tag)) hops.linked_sha256 = tag;
          }
          if (const std::string s = resp.get_header_value("X-Linked-Size"); !s.empty()) hops.linked_size = parse_u64(s);
          if (resp.status >= 300 && resp.status < 400 && resp.has_header("Location")) {
            location = resp.get_header_value("Location");
            return false;
          }
          return on_final(resp);
        },
        receive);
    if (location.empty()) {
      hops.final_url = url;
      return r;
    }
    url = location.starts_with("/") ? u.origin + location : location;
  }
  throw ProvisionError("more than " + std::to_string(opt.max_redirects) + " redirects");
}

void fsync_path(const fs::path& p, bool directory) {
  const int fd = ::open(p.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// Holds an exclusive lock on <path>.lock for one download at a time, across processes.
class DownloadLock {
 public:
  explicit DownloadLock(const fs::path& p, Narrator* log) {
    fd_ = ::open((p.string() + ".lock").c_str(), O_RDWR | O_CREAT, 0644);
    if (fd_ < 0) throw ProvisionError("cannot create the lock file " + p.string() + ".lock");
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      if (log) log->info("download", p.string(), "another process is downloading this model; waiting for it");
      ::flock(fd_, LOCK_EX);
    }
  }
  ~DownloadLock() {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }

 private:
  int fd_ = -1;
};

std::string read_record(const fs::path& p) {
  std::ifstream in(p);
  std::string s;
  in >> s;
  return is_sha256(s) ? s : std::string();
}

void write_record(const fs::path& record, const std::string& sha) {
  const fs::path tmp = record.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << sha << "\n";
  }
  fsync_path(tmp, false);
  fs::rename(tmp, record);
}

}  // namespace

bool is_remote_model(const std::string& s) { return s.starts_with("https://") || s.starts_with("http://") || s.starts_with("hf:"); }

std::string resolve_model_url(const std::string& ref) {
  if (!ref.starts_with("hf:")) return ref;
  const std::string rest = ref.substr(3);
  const auto a = rest.find('/');
  const auto b = a == std::string::npos ? a : rest.find('/', a + 1);
  if (a == 0 || b == std::string::npos || b == a + 1 || b + 1 >= rest.size() || rest.find("..") != std::string::npos ||
      rest.find_first_of("?#\\ ") != std::string::npos)
    throw ProvisionError("'" + ref + "' is not a Hugging Face reference: use hf:ORG/REPO/FILE");
  std::string endpoint = "https://huggingface.co";
  if (const char* e = std::getenv("HF_ENDPOINT"); e && *e) endpoint = e;
  while (endpoint.ends_with("/")) endpoint.pop_back();
  return endpoint + "/" + rest.substr(0, b) + "/resolve/main/" + rest.substr(b + 1);
}

std::string default_model_cache_dir() {
  fs::path cache;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) cache = x;
  else if (const char* h = std::getenv("HOME"); h && *h) cache = fs::path(h) / ".cache";
  else cache = "/var/cache";
  return (cache / "worker-orcd" / "models").string();
}

std::string cached_model_path(const std::string& cache_dir, const std::string& url) {
  const fs::path dir = cache_dir.empty() ? fs::path(default_model_cache_dir()) : fs::path(cache_dir);
  return (dir / (sha256_hex(url).substr(0, 16) + "-" + url_file_name(url))).string();
}

RemoteModelHeader fetch_model_header(const std::string& url, const FetchOptions& opt) {
  RemoteModelHeader out;
  out.file_name = url_file_name(url);
  for (uint64_t want = 1 << 20;; want *= 2) {
    HopInfo hops;
    std::string body;
    int status = 0;
    httplib::Headers final_headers;
    auto r = get_following(
        url, {{"Range", "bytes=0-" + std::to_string(want - 1)}}, opt, hops,
        [&](const httplib::Response& resp) {
          status = resp.status;
          final_headers = resp.headers;
          return resp.status == 200 || resp.status == 206;
        },
        [&](const char* data, size_t len) {
          body.append(data, std::min<size_t>(len, want - body.size()));
          return body.size() < want;  // a server that ignores Range is read no further
        });
    if (status != 200 && status != 206) {
      if (!r && status == 0) throw ProvisionError(url + ": request failed: " + httplib::to_string(r.error()));
      throw ProvisionError(url + ": HTTP " + std::to_string(status));
    }
    auto header = [&](const char* k) {
      const auto it = final_headers.find(k);
      return it == final_headers.end() ? std::string() : it->second;
    };
    out.final_url = hops.final_url;
    out.file_size = status == 206 ? total_from_content_range(header("Content-Range")) : parse_u64(header("Content-Length"));
    if (out.file_size == 0) out.file_size = hops.linked_size;
    if (out.file_size == 0) throw ProvisionError(url + ": the server did not say how large the file is");
    out.sha256 = hops.linked_sha256;
    if (const std::string etag = unquote(header("ETag")); out.sha256.empty() && is_sha256(etag)) out.sha256 = etag;
    out.validator = header("ETag").starts_with("W/") ? header("Last-Modified") : header("ETag");
    if (out.validator.empty()) out.validator = header("Last-Modified");
    try {
      const auto* data = reinterpret_cast<const uint8_t*>(body.data());
      out.header.emplace(GgufFile::from_header_bytes({data, body.size()}, out.file_size, url));
      return out;
    } catch (const GgufError& e) {
      const bool more = e.code() == GgufErrc::truncated && body.size() < out.file_size && want < (256u << 20);
      if (!more) throw ProvisionError(std::string("not a usable GGUF file: ") + e.what());
    }
  }
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr);
  return to_hex(md, n);
}

std::string sha256_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ProvisionError("cannot read " + path);
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(in.gcount()));
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &n);
  return to_hex(md, n);
}

std::string download_model(const std::string& url, const RemoteModelHeader& head, const DownloadOptions& opt) {
  const fs::path final_path = cached_model_path(opt.cache_dir, url);
  std::error_code ec;
  fs::create_directories(final_path.parent_path(), ec);
  if (ec) throw ProvisionError("cannot create the model cache " + final_path.parent_path().string() + ": " + ec.message());
  const std::string want = ascii_lower(opt.expected_sha256.empty() ? head.sha256 : opt.expected_sha256);
  if (want.empty() && !opt.insecure_skip_hash)
    throw ProvisionError(url + ": no SHA-256 to check the download against (the server sent none): give model_sha256, "
                               "or --insecure-skip-hash to download it unverified");
  if (!want.empty() && !is_sha256(want)) throw ProvisionError("model_sha256 must be 64 hex digits");
  const fs::path part = final_path.string() + ".part";
  const fs::path record = final_path.string() + ".sha256";
  DownloadLock lock(final_path, opt.log);

  // Another process may have finished it while we waited for the lock.
  if (fs::exists(final_path) && fs::file_size(final_path) == head.file_size && (want.empty() || read_record(record) == want))
    return final_path.string();

  uint64_t have = fs::exists(part) ? fs::file_size(part) : 0;
  if (have > head.file_size || head.validator.empty()) have = 0;  // no validator: a resume could splice two versions
  int fd = ::open(part.c_str(), O_WRONLY | O_CREAT | (have ? 0 : O_TRUNC), 0644);
  if (fd < 0) throw ProvisionError("cannot write " + part.string());
  if (have) ::lseek(fd, static_cast<off_t>(have), SEEK_SET);
  uint64_t done = have;
  if (opt.progress) opt.progress(done, head.file_size);
  bool write_failed = false;
  if (have < head.file_size) {
    httplib::Headers h = {{"Range", "bytes=" + std::to_string(have) + "-"}};
    if (have) h.emplace("If-Range", head.validator);
    HopInfo hops;
    int status = 0;
    auto r = get_following(
        url, h, opt.fetch, hops,
        [&](const httplib::Response& resp) {
          status = resp.status;
          // The file changed, or the server ignores ranges: it sends the whole file; start over.
          if (resp.status == 200 && done > 0) {
            ::ftruncate(fd, 0);
            ::lseek(fd, 0, SEEK_SET);
            done = 0;
          }
          return resp.status == 200 || resp.status == 206;
        },
        [&](const char* data, size_t len) {
          if (done + len > head.file_size) return false;  // longer than announced
          for (size_t off = 0; off < len;) {
            const ssize_t n = ::write(fd, data + off, len - off);
            if (n <= 0) return !(write_failed = true);
            off += static_cast<size_t>(n);
          }
          done += len;
          if (opt.progress) opt.progress(done, head.file_size);
          return true;
        });
    ::fsync(fd);
    ::close(fd);
    if (write_failed) throw ProvisionError("cannot write " + part.string() + " (disk full?)");
    if (status != 200 && status != 206) throw ProvisionError(url + ": HTTP " + std::to_string(status));
    if (!r && done != head.file_size)
      throw ProvisionError(url + ": download interrupted at " + std::to_string(done) + " of " + std::to_string(head.file_size) + " bytes (" +
                           httplib::to_string(r.error()) + "); run again to resume");
  } else {
    ::close(fd);
  }
  if (fs::file_size(part) != head.file_size)
    throw ProvisionError(url + ": got " + std::to_string(fs::file_size(part)) + " of " + std::to_string(head.file_size) + " bytes; run again to resume");
  const std::string got = sha256_file(part.string());
  if (!want.empty() && got != want) {
    fs::remove(part);
    throw ProvisionError(url + ": SHA-256 mismatch (expected " + want + ", got " + got + "); the partial file was removed");
  }
  fs::rename(part, final_path);
  fsync_path(final_path.parent_path(), true);
  if (!want.empty()) write_record(record, got);
  return final_path.string();
}

std::string provision_model(const std::string& ref, const ProvisionOptions& opt) {
  const std::string url = resolve_model_url(ref);
  const fs::path path = cached_model_path(opt.cache_dir, url);
  const fs::path record = path.string() + ".sha256";
  const std::string pinned = ascii_lower(opt.expected_sha256);
  // A copy verified before: check it against its record (offline), and against a pinned hash.
  if (fs::exists(path) && fs::exists(record)) {
    const std::string recorded = read_record(record);
    if (!recorded.empty() && (pinned.empty() || pinned == recorded) && sha256_file(path.string()) == recorded) {
      if (opt.log) opt.log->info("provision", ref, "using the verified copy in the cache", {{"path", path.string()}, {"sha256", recorded}});
      return path.string();
    }
    if (opt.log) opt.log->warn("provision", ref, "the cached copy does not match its recorded or pinned hash; downloading again");
    fs::remove(record);
    fs::remove(path);
  }
  FetchOptions fo;
  fo.allow_http = opt.allow_http;
  const RemoteModelHeader head = fetch_model_header(url, fo);
  if (opt.log)
    opt.log->info("provision", ref, "remote model: " + std::to_string(head.file_size) + " bytes",
                  {{"url", head.final_url}, {"file_bytes", head.file_size}, {"sha256", head.sha256}});
  if (opt.admit) opt.admit(*head.header);
  if (pinned.empty() && head.sha256.empty() && opt.insecure_skip_hash && opt.log)
    opt.log->warn("provision", ref, "downloading without a hash to check (insecure_skip_hash)");
  DownloadOptions dl;
  dl.cache_dir = opt.cache_dir;
  dl.expected_sha256 = pinned;
  dl.insecure_skip_hash = opt.insecure_skip_hash;
  dl.fetch = fo;
  dl.log = opt.log;
  const bool tty = ::isatty(2);
  int last_pct = -1;
  auto last_draw = std::chrono::steady_clock::now() - std::chrono::seconds(1);
  const auto t0 = std::chrono::steady_clock::now();
  dl.progress = [&](uint64_t done, uint64_t total) {
    const int pct = static_cast<int>(100 * done / std::max<uint64_t>(total, 1));
    const auto now = std::chrono::steady_clock::now();
    if (tty) {
      if (now - last_draw < std::chrono::milliseconds(100) && done != total) return;
      last_draw = now;
      const double secs = std::max(1e-3, std::chrono::duration<double>(now - t0).count());
      const int filled = pct * 30 / 100;
      std::fprintf(stderr, "\r%s [%s%s] %3d%% %.1f/%.1f MiB %.1f MiB/s", head.file_name.c_str(), std::string(filled, '#').c_str(),
                   std::string(30 - filled, '.').c_str(), pct, done / 1048576.0, total / 1048576.0, done / 1048576.0 / secs);
      if (done == total) std::fprintf(stderr, "\n");
    } else if (opt.log && pct / 5 != last_pct / 5) {
      opt.log->info("download", ref, "downloading: " + std::to_string(pct) + "%", {{"bytes", done}, {"total_bytes", total}});
    }
    last_pct = pct;
  };
  const std::string local = download_model(url, head, dl);
  if (opt.log) opt.log->info("download", ref, "model verified and ready in the cache", {{"path", local}});
  return local;
}

}  // namespace orcd
