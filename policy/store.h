// The policy set in force, kept in the control plane's state store (control/keys.h: P/…):
// every set ever saved is kept as a version, each change is on the audit trail before it takes
// effect, and the preservation lock, once set, is never lifted.
//
// Preservation lock (what SEC 17a-4 and Purview's preservation lock promise): after `policy
// lock`, a new set is refused unless every retention and hold of the set in force is still in
// it, unchanged or extended: a retention may keep longer (a longer period, "forever"), cover
// more custodians, or turn delete into review; a hold may not change at all. Tags are free, and
// policies may be added, except a retention that deletes while a locked one reviews (it could
// outvote it once both have run out). The lock itself has no command to remove it.
#pragma once

#include <cstdint>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "control/audit.h"
#include "control/jobs.h"
#include "control/state.h"
#include "core/result.h"
#include "policy/policy.h"

namespace mailvault::policy {

struct PolicySet {
  uint64_t version = 0;          // 0: nothing was ever saved (the empty set: everything is kept)
  int64_t saved = 0;             // seconds, UTC
  std::string saved_by;
  std::vector<Policy> policies;  // with their `effective` times
  nlohmann::json ToJson() const; // {"version", "saved", "saved_by", "policies": [… with "effective"]}
  static Result<PolicySet> FromJson(const nlohmann::json& j);
  const Policy* Find(const std::string& name) const;
};

struct LockState {
  bool locked = false;
  int64_t since = 0;
  std::string by;
};

// What a new set changes against the one in force: names added, removed and changed.
struct SetDiff {
  std::vector<std::string> added, removed, changed;
  nlohmann::json ToJson() const;
};
SetDiff Diff(const std::vector<Policy>& before, const std::vector<Policy>& after);

// Under the preservation lock: whether `after` may replace `before`; the error names the first
// policy that would be removed or shortened, and how.
Status CheckPreserved(const std::vector<Policy>& before, const std::vector<Policy>& after);

class PolicyStore {
 public:
  PolicyStore(control::StateStore* store, control::AuditLog* audit) : store_(store), audit_(audit) {}

  Result<PolicySet> Current() const;
  // Every version saved, newest first (at most `limit`).
  Result<std::vector<PolicySet>> History(size_t limit = 100) const;
  Result<LockState> Lock() const;

  // Makes `next` the set in force, as `who` asks at `now`: a policy unchanged from the set in
  // force keeps its `effective` time, a new or changed one gets `now`. Refused under the lock
  // when it removes or shortens (CheckPreserved). Audited (`policy.set`, with the version and
  // the diff) before it is written.
  // diff (optional): what changed against the set it replaced, read under the same lock.
  Result<PolicySet> Replace(std::vector<Policy> next, const control::Actor& who, int64_t now, SetDiff* diff = nullptr);
  // Adds one policy to the set in force (a hold placed), or removes one (released); the same
  // checks and audit as Replace, with `action` as the audit action (`hold.place`,
  // `hold.release`).
  Result<PolicySet> Add(Policy p, const control::Actor& who, int64_t now, const std::string& action);
  Result<PolicySet> Remove(const std::string& name, Kind kind, const control::Actor& who, int64_t now, const std::string& action);
  // Sets the preservation lock (audited `policy.lock`); setting it again changes nothing.
  Result<LockState> SetLock(const control::Actor& who, int64_t now);

  // Holds back every change of the set (a hold placed, a retention shortened) while the lock
  // lives: a purge decides and forgets under it, so a hold placed meanwhile either came first
  // (and keeps its messages) or waits until the purge has committed. Current() still reads.
  std::unique_lock<std::mutex> Freeze() { return std::unique_lock<std::mutex>(mu_); }

 private:
  Result<PolicySet> Save(std::vector<Policy> next, const control::Actor& who, int64_t now, const std::string& action,
                         nlohmann::json details, SetDiff* diff = nullptr);

  control::StateStore* store_;
  control::AuditLog* audit_;
  std::mutex mu_;  // one change at a time (read, check, write)
};

}  // namespace mailvault::policy
