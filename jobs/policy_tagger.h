// serve's tagger: applies the tag policies of the set in force (policy/tagger.h) behind the
// indexer, so that mail is tagged within seconds of being indexed. It runs when the index has
// moved or the policy set has changed since its last pass, at most every few seconds, at a
// lower CPU priority than capture; errors are logged and retried at the next pass.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "control/records.h"
#include "policy/store.h"

namespace mailvault::jobs {

class PolicyTagger {
 public:
  // indexed_change: the last change the index has made searchable.
  PolicyTagger(std::string vault_dir, policy::PolicyStore* policies, control::Records* records,
               std::function<uint64_t()> indexed_change, std::chrono::milliseconds period = std::chrono::seconds(3));
  ~PolicyTagger() { Stop(); }
  PolicyTagger(const PolicyTagger&) = delete;
  PolicyTagger& operator=(const PolicyTagger&) = delete;
  void Start();
  void Stop();
  uint64_t tagged() const { return tagged_; }
  std::string last_error() const;

 private:
  void Run();
  std::string dir_;
  policy::PolicyStore* policies_;
  control::Records* records_;
  std::function<uint64_t()> indexed_change_;
  std::chrono::milliseconds period_;
  std::atomic<uint64_t> tagged_{0};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // REQUIRES: mu_
  std::string error_;  // REQUIRES: mu_
  std::thread thread_;
};

}  // namespace mailvault::jobs
