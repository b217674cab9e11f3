#include "src/metrics/registry.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace kms::metrics {

namespace {

// A misuse of the registry is a bug in kmsd (names are literals): say what and stop.
[[noreturn]] void Misuse(std::string_view what, std::string_view name) {
  std::fprintf(stderr, "kmsd metrics: %.*s: %.*s\n", static_cast<int>(what.size()), what.data(),
               static_cast<int>(name.size()), name.data());
  std::abort();
}

bool IsNameChar(char c, bool first, bool colon) {
  const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  const bool digit = c >= '0' && c <= '9';
  return alpha || (colon && c == ':') || (!first && digit);
}

// `{a="x",b="y"` with no closing brace (callers add `le` or close it); "" for no labels.
std::string OpenLabels(const Labels& labels) {
  if (labels.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i > 0) out += ',';
    absl::StrAppend(&out, labels[i].first, "=\"", EscapeLabelValue(labels[i].second), "\"");
  }
  return out;
}

std::string CloseLabels(const Labels& labels) {
  std::string open = OpenLabels(labels);
  return open.empty() ? open : open + "}";
}

}  // namespace

std::string EscapeHelp(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"') {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // Integers (counts, Unix seconds) print without exponent or fraction.
  if (v == std::trunc(v) && std::fabs(v) < 1e15) {
    return absl::StrCat(static_cast<int64_t>(v));
  }
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);  // shortest round-trip form
  return std::string(buf, ec == std::errc() ? end : buf);
}

bool IsValidMetricName(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (!IsNameChar(name[i], i == 0, /*colon=*/true)) return false;
  }
  return true;
}

bool IsValidLabelName(std::string_view name) {
  if (name.empty() || name.substr(0, 2) == "__") return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (!IsNameChar(name[i], i == 0, /*colon=*/false)) return false;
  }
  return true;
}

MetricRegistry::Series& MetricRegistry::SeriesFor(std::string_view name, std::string_view help,
                                                  Type type, Labels labels) {
  if (!IsValidMetricName(name)) Misuse("invalid metric name", name);
  std::sort(labels.begin(), labels.end());
  for (size_t i = 0; i < labels.size(); ++i) {
    if (!IsValidLabelName(labels[i].first)) Misuse("invalid label name", labels[i].first);
    if (type == Type::kHistogram && labels[i].first == "le") Misuse("histogram label le", name);
    if (i > 0 && labels[i].first == labels[i - 1].first) Misuse("duplicate label", labels[i].first);
  }
  auto it = families_.find(name);
  if (it == families_.end()) {
    it = families_.emplace(std::string(name), Family{type, std::string(help), {}}).first;
  } else if (it->second.type != type) {
    Misuse("one name registered with two types", name);
  }
  const std::string key = CloseLabels(labels);
  Series& s = it->second.series[key];
  if (s.labels.empty()) s.labels = std::move(labels);
  return s;
}

Counter& MetricRegistry::AddCounter(std::string_view name, std::string_view help, Labels labels) {
  MutexLock lock(&mu_);
  Series& s = SeriesFor(name, help, Type::kCounter, std::move(labels));
  if (s.counter_fn) Misuse("series registered twice", name);
  if (!s.counter) s.counter = std::make_unique<Counter>();
  return *s.counter;
}

Gauge& MetricRegistry::AddGauge(std::string_view name, std::string_view help, Labels labels) {
  MutexLock lock(&mu_);
  Series& s = SeriesFor(name, help, Type::kGauge, std::move(labels));
  if (s.gauge_fn) Misuse("series registered twice", name);
  if (!s.gauge) s.gauge = std::make_unique<Gauge>();
  return *s.gauge;
}

Histogram& MetricRegistry::AddHistogram(std::string_view name, std::string_view help,
                                        Labels labels, std::vector<double> upper_bounds) {
  for (size_t i = 0; i < upper_bounds.size(); ++i) {
    if (std::isnan(upper_bounds[i]) || std::isinf(upper_bounds[i]) ||
        (i > 0 && upper_bounds[i] <= upper_bounds[i - 1])) {
      Misuse("histogram bounds must be finite and strictly increasing", name);
    }
  }
  MutexLock lock(&mu_);
  Series& s = SeriesFor(name, help, Type::kHistogram, std::move(labels));
  if (!s.histogram) {
    s.histogram = std::make_unique<Histogram>(std::move(upper_bounds));
  } else if (s.histogram->upper_bounds() != upper_bounds) {
    Misuse("histogram registered twice with other bounds", name);
  }
  return *s.histogram;
}

void MetricRegistry::AddGaugeFunction(std::string_view name, std::string_view help, Labels labels,
                                      std::function<double()> read) {
  MutexLock lock(&mu_);
  Series& s = SeriesFor(name, help, Type::kGauge, std::move(labels));
  if (s.gauge || s.gauge_fn) Misuse("series registered twice", name);
  s.gauge_fn = std::move(read);
}

void MetricRegistry::AddCounterFunction(std::string_view name, std::string_view help,
                                        Labels labels, std::function<uint64_t()> read) {
  MutexLock lock(&mu_);
  Series& s = SeriesFor(name, help, Type::kCounter, std::move(labels));
  if (s.counter || s.counter_fn) Misuse("series registered twice", name);
  s.counter_fn = std::move(read);
}

std::string MetricRegistry::WriteText() const {
  std::string out;
  MutexLock lock(&mu_);
  for (const auto& [name, family] : families_) {
    const char* type = family.type == Type::kCounter ? "counter"
                       : family.type == Type::kGauge ? "gauge"
                                                     : "histogram";
    absl::StrAppend(&out, "# HELP ", name, " ", EscapeHelp(family.help), "\n# TYPE ", name, " ",
                    type, "\n");
    for (const auto& [key, s] : family.series) {
      switch (family.type) {
        case Type::kCounter: {
          const uint64_t v = s.counter ? s.counter->Value() : s.counter_fn();
          absl::StrAppend(&out, name, key, " ", v, "\n");
          break;
        }
        case Type::kGauge: {
          const double v = s.gauge ? s.gauge->Value() : s.gauge_fn();
          absl::StrAppend(&out, name, key, " ", FormatValue(v), "\n");
          break;
        }
        case Type::kHistogram: {
          const Histogram::Snapshot snap = s.histogram->Read();
          std::string open = OpenLabels(s.labels);
          open += open.empty() ? "{" : ",";
          for (size_t i = 0; i <= snap.upper_bounds.size(); ++i) {
            const std::string le =
                i < snap.upper_bounds.size() ? FormatValue(snap.upper_bounds[i]) : "+Inf";
            absl::StrAppend(&out, name, "_bucket", open, "le=\"", le, "\"} ", snap.cumulative[i],
                            "\n");
          }
          absl::StrAppend(&out, name, "_sum", key, " ", FormatValue(snap.sum), "\n", name,
                          "_count", key, " ", snap.count(), "\n");
          break;
        }
      }
    }
  }
  return out;
}

}  // namespace kms::metrics
