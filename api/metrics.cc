#include "api/metrics.h"

#include <cstdio>

namespace mailvault::api {

void ApiMetrics::Observe(int status, double seconds) {
  int c = status / 100;
  if (c >= 1 && c <= 5) by_class_[static_cast<size_t>(c)].fetch_add(1, std::memory_order_relaxed);
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) {
      buckets_[i].fetch_add(1, std::memory_order_relaxed);
      break;
    }
  }
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_micros_.fetch_add(static_cast<uint64_t>(seconds * 1e6), std::memory_order_relaxed);
}

std::string ApiMetrics::Render(uint64_t failed_logins, size_t sessions) const {
  std::string out;
  char line[256];
  out += "# HELP mailvault_api_requests_total API requests answered, by status class.\n"
         "# TYPE mailvault_api_requests_total counter\n";
  for (int c = 1; c <= 5; ++c) {
    std::snprintf(line, sizeof line, "mailvault_api_requests_total{code=\"%dxx\"} %llu\n", c,
                  static_cast<unsigned long long>(by_class_[static_cast<size_t>(c)].load()));
    out += line;
  }
  out += "# HELP mailvault_api_request_duration_seconds Time from a request's arrival to its answer.\n"
         "# TYPE mailvault_api_request_duration_seconds histogram\n";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    cumulative += buckets_[i].load();
    std::snprintf(line, sizeof line, "mailvault_api_request_duration_seconds_bucket{le=\"%g\"} %llu\n", kBuckets[i],
                  static_cast<unsigned long long>(cumulative));
    out += line;
  }
  std::snprintf(line, sizeof line,
                "mailvault_api_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
                "mailvault_api_request_duration_seconds_sum %.6f\n"
                "mailvault_api_request_duration_seconds_count %llu\n",
                static_cast<unsigned long long>(count_.load()), sum_micros_.load() / 1e6,
                static_cast<unsigned long long>(count_.load()));
  out += line;
  out += "# HELP mailvault_api_login_failures_total Failed and refused logins.\n"
         "# TYPE mailvault_api_login_failures_total counter\n"
         "mailvault_api_login_failures_total " + std::to_string(failed_logins) + "\n" +
         "# HELP mailvault_api_sessions Open login sessions.\n"
         "# TYPE mailvault_api_sessions gauge\n"
         "mailvault_api_sessions " + std::to_string(sessions) + "\n";
  return out;
}

}  // namespace mailvault::api
