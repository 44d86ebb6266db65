// Counters for /metrics (Prometheus text format 0.0.4). Lock-free on the request path.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

namespace mailvault::api {

class ApiMetrics {
 public:
  // Upper bounds (seconds) of the request latency histogram's buckets.
  static constexpr std::array<double, 12> kBuckets{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10};

  void Observe(int status, double seconds);
  // The API's own lines: requests by status class, the latency histogram, failed logins.
  std::string Render(uint64_t failed_logins, size_t sessions) const;

 private:
  std::array<std::atomic<uint64_t>, 6> by_class_{};  // 1xx..5xx, index = status / 100
  std::array<std::atomic<uint64_t>, kBuckets.size()> buckets_{};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_micros_{0};
};

}  // namespace mailvault::api
