// Small string helpers the daemon's HTTP code shares.
#pragma once
#include <cctype>
#include <stdexcept>
#include <string>

namespace orcd {

inline std::string ascii_lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// "scheme://host[:port]/path?query" in the pieces an HTTP client takes.
struct UrlParts {
  std::string scheme, origin, path;  // origin: scheme://host[:port]; path: "/" at least
};

inline UrlParts split_url(const std::string& url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos) throw std::invalid_argument("not a URL: " + url);
  const auto path_start = url.find('/', scheme_end + 3);
  return {url.substr(0, scheme_end), url.substr(0, path_start), path_start == std::string::npos ? "/" : url.substr(path_start)};
}

}  // namespace orcd
