#include "src/metrics/registry.h"

#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kms::metrics {
namespace {

using ::testing::HasSubstr;

TEST(MetricRegistryTest, CounterWritesHelpTypeAndValue) {
  MetricRegistry r;
  r.AddCounter("kmsd_things_total", "Things done.").Increment(3);
  EXPECT_EQ(r.WriteText(),
            "# HELP kmsd_things_total Things done.\n"
            "# TYPE kmsd_things_total counter\n"
            "kmsd_things_total 3\n");
}

TEST(MetricRegistryTest, HelpEscapesBackslashAndNewline) {
  EXPECT_EQ(EscapeHelp("a\\b\nc \"q\""), "a\\\\b\\nc \"q\"");
  MetricRegistry r;
  r.AddGauge("kmsd_g", "line one\nback\\slash");
  EXPECT_THAT(r.WriteText(), HasSubstr("# HELP kmsd_g line one\\nback\\\\slash\n"));
}

TEST(MetricRegistryTest, LabelValuesEscapeBackslashQuoteAndNewline) {
  EXPECT_EQ(EscapeLabelValue("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  MetricRegistry r;
  r.AddCounter("kmsd_c_total", "c", {{"why", "say \"no\"\\\n"}}).Increment();
  EXPECT_THAT(r.WriteText(), HasSubstr("kmsd_c_total{why=\"say \\\"no\\\"\\\\\\n\"} 1\n"));
}

TEST(MetricRegistryTest, LabelsAreSortedByNameAndSeriesByLabels) {
  MetricRegistry r;
  r.AddCounter("kmsd_rpc_total", "r", {{"method", "Encrypt"}, {"code", "OK"}}).Increment(2);
  r.AddCounter("kmsd_rpc_total", "r", {{"code", "INTERNAL"}, {"method", "Decrypt"}}).Increment();
  r.AddCounter("kmsd_rpc_total", "r", {{"code", "INTERNAL"}, {"method", "Encrypt"}});
  EXPECT_EQ(r.WriteText(),
            "# HELP kmsd_rpc_total r\n"
            "# TYPE kmsd_rpc_total counter\n"
            "kmsd_rpc_total{code=\"INTERNAL\",method=\"Decrypt\"} 1\n"
            "kmsd_rpc_total{code=\"INTERNAL\",method=\"Encrypt\"} 0\n"
            "kmsd_rpc_total{code=\"OK\",method=\"Encrypt\"} 2\n");
}

TEST(MetricRegistryTest, FamiliesAreSortedByName) {
  MetricRegistry r;
  r.AddGauge("kmsd_b", "b");
  r.AddGauge("kmsd_a", "a");
  const std::string text = r.WriteText();
  EXPECT_LT(text.find("kmsd_a"), text.find("kmsd_b"));
}

TEST(MetricRegistryTest, SameNameAndLabelsReturnTheSameInstrument) {
  MetricRegistry r;
  Counter& a = r.AddCounter("kmsd_x_total", "x", {{"k", "v"}});
  Counter& b = r.AddCounter("kmsd_x_total", "x", {{"k", "v"}});
  EXPECT_EQ(&a, &b);
  EXPECT_NE(&a, &r.AddCounter("kmsd_x_total", "x", {{"k", "w"}}));
}

TEST(MetricRegistryTest, HistogramWritesCumulativeBucketsInfSumAndCount) {
  MetricRegistry r;
  Histogram& h = r.AddHistogram("kmsd_rpc_duration_seconds", "Latency.", {{"method", "Encrypt"}},
                                {0.001, 0.01, 0.1});
  h.Observe(0.0005);
  h.Observe(0.001);  // on a bound: counted in that bucket (le is inclusive)
  h.Observe(0.05);
  h.Observe(3);
  EXPECT_EQ(r.WriteText(),
            "# HELP kmsd_rpc_duration_seconds Latency.\n"
            "# TYPE kmsd_rpc_duration_seconds histogram\n"
            "kmsd_rpc_duration_seconds_bucket{method=\"Encrypt\",le=\"0.001\"} 2\n"
            "kmsd_rpc_duration_seconds_bucket{method=\"Encrypt\",le=\"0.01\"} 2\n"
            "kmsd_rpc_duration_seconds_bucket{method=\"Encrypt\",le=\"0.1\"} 3\n"
            "kmsd_rpc_duration_seconds_bucket{method=\"Encrypt\",le=\"+Inf\"} 4\n"
            "kmsd_rpc_duration_seconds_sum{method=\"Encrypt\"} 3.0515\n"
            "kmsd_rpc_duration_seconds_count{method=\"Encrypt\"} 4\n");
}

TEST(MetricRegistryTest, HistogramWithoutLabelsPutsLeAlone) {
  MetricRegistry r;
  r.AddHistogram("kmsd_h_seconds", "h", {}, {1}).Observe(2);
  EXPECT_THAT(r.WriteText(), HasSubstr("kmsd_h_seconds_bucket{le=\"1\"} 0\n"
                                       "kmsd_h_seconds_bucket{le=\"+Inf\"} 1\n"
                                       "kmsd_h_seconds_sum 2\n"
                                       "kmsd_h_seconds_count 1\n"));
}

TEST(MetricRegistryTest, FunctionSeriesAreReadAtEachScrape) {
  MetricRegistry r;
  double age = 10;
  uint64_t hits = 1;
  r.AddGaugeFunction("kmsd_age_seconds", "age", {}, [&] { return age; });
  r.AddCounterFunction("kmsd_hits_total", "hits", {}, [&] { return hits; });
  EXPECT_THAT(r.WriteText(), HasSubstr("kmsd_age_seconds 10\n"));
  age = 12.5;
  hits = 7;
  EXPECT_THAT(r.WriteText(), HasSubstr("kmsd_age_seconds 12.5\n"));
  EXPECT_THAT(r.WriteText(), HasSubstr("kmsd_hits_total 7\n"));
}

TEST(MetricRegistryTest, ValuesUseTheTextFormatsSpellings) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(1700000000), "1700000000");
  EXPECT_EQ(FormatValue(-3), "-3");
  EXPECT_EQ(FormatValue(0.25), "0.25");
  EXPECT_EQ(FormatValue(1e-7), "1e-07");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatValue(std::nan("")), "NaN");
}

TEST(MetricRegistryTest, NamesFollowThePrometheusRules) {
  EXPECT_TRUE(IsValidMetricName("kmsd_rpc_requests_total"));
  EXPECT_TRUE(IsValidMetricName("job:kmsd_errors:rate5m"));
  EXPECT_FALSE(IsValidMetricName("1kmsd"));
  EXPECT_FALSE(IsValidMetricName("kmsd-x"));
  EXPECT_FALSE(IsValidMetricName(""));
  EXPECT_TRUE(IsValidLabelName("method"));
  EXPECT_FALSE(IsValidLabelName("__name__"));
  EXPECT_FALSE(IsValidLabelName("a:b"));
  EXPECT_FALSE(IsValidLabelName("9a"));
}

TEST(MetricRegistryDeathTest, MisuseIsAProgrammingError) {
  EXPECT_DEATH(
      {
        MetricRegistry r;
        r.AddCounter("kmsd_x", "x");
        r.AddGauge("kmsd_x", "x");
      },
      "two types");
  EXPECT_DEATH(
      {
        MetricRegistry r;
        r.AddCounter("kmsd-x", "x");
      },
      "invalid metric name");
  EXPECT_DEATH(
      {
        MetricRegistry r;
        r.AddHistogram("kmsd_h", "h", {{"le", "1"}}, {1});
      },
      "le");
}

// Many threads update one counter and one histogram while another scrapes: no update is
// lost, and every scrape sees cumulative buckets that never decrease.
TEST(MetricRegistryTest, ConcurrentUpdatesAreAllCountedWhileScraping) {
  MetricRegistry r;
  Counter& c = r.AddCounter("kmsd_ops_total", "ops");
  Histogram& h = r.AddHistogram("kmsd_op_seconds", "op", {}, {0.5, 1.5});
  constexpr int kThreads = 8;
  constexpr int kPerThread = 100000;
  std::atomic<bool> done{false};
  std::thread scraper([&] {
    while (!done.load()) {
      Histogram::Snapshot s = h.Read();
      for (size_t i = 1; i < s.cumulative.size(); ++i) ASSERT_LE(s.cumulative[i - 1], s.cumulative[i]);
      ASSERT_FALSE(r.WriteText().empty());
    }
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        c.Increment();
        h.Observe(t % 2 == 0 ? 1.0 : 2.0);
      }
    });
  }
  for (std::thread& w : workers) w.join();
  done = true;
  scraper.join();
  EXPECT_EQ(c.Value(), uint64_t{kThreads} * kPerThread);
  Histogram::Snapshot s = h.Read();
  EXPECT_EQ(s.cumulative[0], 0u);
  EXPECT_EQ(s.cumulative[1], uint64_t{kThreads / 2} * kPerThread);
  EXPECT_EQ(s.count(), uint64_t{kThreads} * kPerThread);
  EXPECT_DOUBLE_EQ(s.sum, (kThreads / 2) * kPerThread * 1.0 + (kThreads / 2) * kPerThread * 2.0);
}

}  // namespace
}  // namespace kms::metrics
