#include "jobs/policy_tagger.h"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "indexer/searcher.h"
#include "policy/tagger.h"

namespace mailvault::jobs {

PolicyTagger::PolicyTagger(std::string vault_dir, policy::PolicyStore* policies, control::Records* records,
                           std::function<uint64_t()> indexed_change, std::chrono::milliseconds period)
    : dir_(std::move(vault_dir)), policies_(policies), records_(records), indexed_change_(std::move(indexed_change)), period_(period) {}

void PolicyTagger::Start() { thread_ = std::thread([this] { Run(); }); }

void PolicyTagger::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::string PolicyTagger::last_error() const {
  std::lock_guard<std::mutex> l(mu_);
  return error_;
}

void PolicyTagger::Run() {
  ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 10);  // below capture, as the indexer
  uint64_t done_change = UINT64_MAX, done_version = UINT64_MAX;
  std::unique_ptr<index::Searcher> searcher;
  // Renewed with each new set, and every 100 passes (about 5 minutes at the default period).
  policy::TagCache cache;
  uint64_t cache_version = UINT64_MAX, passes = 0;
  std::unique_lock<std::mutex> l(mu_);
  while (!cv_.wait_for(l, period_, [&] { return stop_; })) {
    l.unlock();
    std::string error;
    Result<policy::PolicySet> set = policies_->Current();
    const uint64_t change = indexed_change_ ? indexed_change_() : 0;
    if (!set.ok()) {
      error = set.error().ToString();
    } else if (set->version != done_version || change != done_change) {
      bool any = false;
      for (const policy::Policy& p : set->policies) any |= p.kind == policy::Kind::kTag;
      if (!any) {
        done_version = set->version, done_change = change;
      } else {
        if (!searcher) {
          Result<std::unique_ptr<index::Searcher>> s = index::Searcher::Open(dir_);
          if (s.ok()) searcher = std::move(*s);
          else error = s.error().ToString();
        } else {
          searcher->Reopen();
        }
        if (searcher) {
          const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
          if (cache_version != set->version || ++passes % 100 == 0) {
            cache = policy::TagCache{};
            cache_version = set->version;
          }
          Result<policy::TagReport> r = policy::ApplyTagPolicies(*searcher, *records_, set->policies, now, &cache);
          if (r.ok()) {
            tagged_ += r->tagged;
            done_version = set->version, done_change = change;
          } else {
            error = r.error().ToString();
          }
        }
      }
    }
    l.lock();
    if (!error.empty() && error != error_) std::fprintf(stderr, "mailvault serve: tag policies: %s\n", error.c_str());
    error_ = error;
  }
}

}  // namespace mailvault::jobs
