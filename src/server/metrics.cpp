#include "server/metrics.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace orcd {

std::string render_labels(const Labels& labels) {
  if (labels.empty()) return "";
  std::string s = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i) s += ",";
    s += labels[i].first + "=\"";
    for (char c : labels[i].second) {
      if (c == '\\' || c == '"') s += '\\', s += c;
      else if (c == '\n') s += "\\n";
      else s += c;
    }
    s += "\"";
  }
  return s + "}";
}

namespace {
std::string num(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  std::ostringstream o;
  o.precision(17);
  o << v;
  return o.str();
}
}  // namespace

Metrics::Family& Metrics::family(const std::string& name) {
  auto it = families_.find(name);
  if (it == families_.end()) throw std::logic_error("metric '" + name + "' was not declared");
  return it->second;
}

void Metrics::counter(const std::string& name, const std::string& help) {
  std::lock_guard lock(mu_);
  families_[name] = Family{"counter", help, {}, {}, {}, 0, 0};
}

void Metrics::gauge(const std::string& name, const std::string& help) {
  std::lock_guard lock(mu_);
  families_[name] = Family{"gauge", help, {}, {}, {}, 0, 0};
}

void Metrics::histogram(const std::string& name, const std::string& help, std::vector<double> buckets) {
  std::lock_guard lock(mu_);
  Family f{"histogram", help, {}, std::move(buckets), {}, 0, 0};
  f.bucket_counts.assign(f.buckets.size(), 0);
  families_[name] = std::move(f);
}

void Metrics::inc(const std::string& name, const Labels& labels, double v) {
  std::lock_guard lock(mu_);
  family(name).series[render_labels(labels)] += v;
}

void Metrics::set(const std::string& name, const Labels& labels, double v) {
  std::lock_guard lock(mu_);
  family(name).series[render_labels(labels)] = v;
}

void Metrics::observe(const std::string& name, double v) {
  std::lock_guard lock(mu_);
  Family& f = family(name);
  for (size_t i = 0; i < f.buckets.size(); ++i)
    if (v <= f.buckets[i]) ++f.bucket_counts[i];
  f.sum += v;
  ++f.count;
}

double Metrics::value(const std::string& name, const Labels& labels) const {
  std::lock_guard lock(mu_);
  auto it = families_.find(name);
  if (it == families_.end()) return NAN;
  if (it->second.type == "histogram") return static_cast<double>(it->second.count);
  auto s = it->second.series.find(render_labels(labels));
  return s == it->second.series.end() ? 0.0 : s->second;
}

std::string Metrics::render() const {
  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& [name, f] : families_) {
    out += "# HELP " + name + " " + f.help + "\n# TYPE " + name + " " + f.type + "\n";
    if (f.type == "histogram") {
      for (size_t i = 0; i < f.buckets.size(); ++i)
        out += name + "_bucket{le=\"" + num(f.buckets[i]) + "\"} " + std::to_string(f.bucket_counts[i]) + "\n";
      out += name + "_bucket{le=\"+Inf\"} " + std::to_string(f.count) + "\n";
      out += name + "_sum " + num(f.sum) + "\n" + name + "_count " + std::to_string(f.count) + "\n";
    } else {
      if (f.series.empty() ) out += name + " 0\n";
      for (const auto& [labels, v] : f.series) out += name + labels + " " + num(v) + "\n";
    }
  }
  return out;
}

}  // namespace orcd
