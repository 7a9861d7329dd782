#include "server/provision.h"

#include <httplib.h>
#include <openssl/evp.h>

#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace orcd {

namespace fs = std::filesystem;

namespace {

struct UrlParts {
  std::string origin, path;
};

UrlParts split_url(const std::string& url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos) throw ProvisionError("not a URL: " + url);
  const auto path_start = url.find('/', scheme_end + 3);
  if (path_start == std::string::npos) return {url, "/"};
  return {url.substr(0, path_start), url.substr(path_start)};
}

std::unique_ptr<httplib::Client> client_for(const UrlParts& u) {
  auto c = std::make_unique<httplib::Client>(u.origin);
  c->set_follow_location(true);  // Hugging Face resolve links redirect to a CDN
  c->set_connection_timeout(10);
  c->set_read_timeout(60);
  return c;
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
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// Total size from "Content-Range: bytes a-b/total".
uint64_t total_from_content_range(const std::string& v) {
  const auto slash = v.rfind('/');
  if (slash == std::string::npos) return 0;
  uint64_t total = 0;
  const char* first = v.data() + slash + 1;
  const char* last = v.data() + v.size();
  const auto [end, ec] = std::from_chars(first, last, total);
  return ec == std::errc() && end == last ? total : 0;  // "*" or garbage: unknown
}

}  // namespace

bool is_model_url(const std::string& s) { return s.starts_with("https://") || s.starts_with("http://"); }

std::string default_model_cache_dir() {
  fs::path cache;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) cache = x;
  else if (const char* h = std::getenv("HOME"); h && *h) cache = fs::path(h) / ".cache";
  else cache = "/var/cache";
  return (cache / "worker-orcd" / "models").string();
}

RemoteModelHeader fetch_model_header(const std::string& url) {
  const UrlParts u = split_url(url);
  auto cli = client_for(u);
  RemoteModelHeader out;
  std::string name = u.path.substr(0, u.path.find('?'));
  out.file_name = name.substr(name.rfind('/') + 1);
  if (out.file_name.empty()) throw ProvisionError(url + ": the URL names no file");
  for (uint64_t want = 1 << 20;; want *= 2) {
    auto r = cli->Get(u.path.c_str(), {{"Range", "bytes=0-" + std::to_string(want - 1)}});
    if (!r) throw ProvisionError(url + ": request failed: " + httplib::to_string(r.error()));
    if (r->status != 206 && r->status != 200) throw ProvisionError(url + ": HTTP " + std::to_string(r->status));
    out.file_size = r->status == 200 ? r->body.size() : total_from_content_range(r->get_header_value("Content-Range"));
    if (out.file_size == 0) throw ProvisionError(url + ": the server did not say how large the file is");
    for (const char* h : {"X-Linked-ETag", "ETag"}) {
      const std::string tag = unquote(r->get_header_value(h));
      if (is_sha256(tag)) {
        out.sha256 = tag;
        break;
      }
    }
    try {
      const auto* data = reinterpret_cast<const uint8_t*>(r->body.data());
      out.header.emplace(GgufFile::from_header_bytes({data, r->body.size()}, out.file_size, url));
      return out;
    } catch (const GgufError& e) {
      const bool more = e.code() == GgufErrc::truncated && r->body.size() < out.file_size && want < (256u << 20);
      if (!more) throw ProvisionError(std::string("not a usable GGUF file: ") + e.what());
    }
  }
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
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (unsigned int i = 0; i < n; ++i) s += hex[md[i] >> 4], s += hex[md[i] & 15];
  return s;
}

std::string download_model(const std::string& url, const RemoteModelHeader& head, const DownloadOptions& opt) {
  const fs::path dir = opt.cache_dir.empty() ? fs::path(default_model_cache_dir()) : fs::path(opt.cache_dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw ProvisionError("cannot create the model cache " + dir.string() + ": " + ec.message());
  const fs::path final_path = dir / head.file_name;
  const fs::path part = dir / (head.file_name + ".part");
  std::string want = opt.expected_sha256.empty() ? head.sha256 : opt.expected_sha256;
  for (auto& ch : want) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));

  if (fs::exists(final_path) && fs::file_size(final_path) == head.file_size && (want.empty() || sha256_file(final_path) == want))
    return final_path.string();

  uint64_t have = fs::exists(part) ? fs::file_size(part) : 0;
  if (have > head.file_size) {
    fs::remove(part);
    have = 0;
  }
  const UrlParts u = split_url(url);
  auto cli = client_for(u);
  std::ofstream out(part, std::ios::binary | std::ios::app);
  if (!out) throw ProvisionError("cannot write " + part.string());
  uint64_t done = have;
  if (opt.progress) opt.progress(done, head.file_size);
  if (have < head.file_size) {
    int status = 0;
    auto r = cli->Get(
        u.path.c_str(), {{"Range", "bytes=" + std::to_string(have) + "-"}},
        [&](const httplib::Response& resp) {
          status = resp.status;
          // A server that ignores the range sends the whole file: start over.
          if (resp.status == 200 && have > 0) {
            out.close();
            out.open(part, std::ios::binary | std::ios::trunc);
            done = 0;
          }
          return resp.status == 200 || resp.status == 206;
        },
        [&](const char* data, size_t len) {
          out.write(data, static_cast<std::streamsize>(len));
          done += len;
          if (opt.progress) opt.progress(done, head.file_size);
          return static_cast<bool>(out);
        });
    out.close();
    if (!r) throw ProvisionError(url + ": download interrupted at " + std::to_string(done) + " of " + std::to_string(head.file_size) +
                                 " bytes (" + httplib::to_string(r.error()) + "); run again to resume");
    if (status != 200 && status != 206) throw ProvisionError(url + ": HTTP " + std::to_string(status));
  }
  out.close();
  if (fs::file_size(part) != head.file_size)
    throw ProvisionError(url + ": got " + std::to_string(fs::file_size(part)) + " of " + std::to_string(head.file_size) + " bytes; run again to resume");
  if (!want.empty()) {
    const std::string got = sha256_file(part.string());
    if (got != want) {
      fs::remove(part);
      throw ProvisionError(url + ": SHA-256 mismatch (expected " + want + ", got " + got + "); the partial file was removed");
    }
  }
  fs::rename(part, final_path);
  return final_path.string();
}

}  // namespace orcd
