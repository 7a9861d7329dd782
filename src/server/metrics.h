// Prometheus text exposition (format 0.0.4) for counters, gauges and histograms. Debian has no
// C++ Prometheus client, so this is a small registry of our own.
#pragma once
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace orcd {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Metrics {
 public:
  void counter(const std::string& name, const std::string& help);
  void gauge(const std::string& name, const std::string& help);
  void histogram(const std::string& name, const std::string& help, std::vector<double> buckets);

  void inc(const std::string& name, const Labels& labels = {}, double v = 1);
  void set(const std::string& name, const Labels& labels, double v);
  void set(const std::string& name, double v) { set(name, {}, v); }
  void observe(const std::string& name, double v);
  double value(const std::string& name, const Labels& labels = {}) const;  // tests
  std::string render() const;

 private:
  struct Family {
    std::string type, help;
    std::map<std::string, double> series;  // rendered label set -> value
    std::vector<double> buckets;           // histograms
    std::vector<uint64_t> bucket_counts;
    double sum = 0;
    uint64_t count = 0;
  };
  Family& family(const std::string& name);
  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
};

std::string render_labels(const Labels& labels);  // {a="x",b="y"} with escaping; "" if none

}  // namespace orcd
