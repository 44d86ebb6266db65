// Purges as records in the control plane (control/keys.h: U/, Uc/, Ud/): proposed by one
// compliance officer as a dry run of the set in force, approved by another, then run as a job
// (jobs/purge.h). docs/purge.md is the guide; docs/formats.md has the records.
//
//   U/<id>          the purge: who proposed and approved it, its impact, its state and outcome
//   Uc/<id>/<msg>   one message the dry run found purgeable: {"e": captures then, "b": bytes,
//                   "p": the deciding policies}
//   Ud/<id>/<msg>   its disposition record once purged (written "intended" before the vault
//                   forgets the message, "purged" after): outlives the message, exportable
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "control/audit.h"
#include "control/jobs.h"
#include "control/state.h"
#include "core/result.h"
#include "indexer/searcher.h"
#include "policy/store.h"

namespace mailvault {
class Vault;
}

namespace mailvault::policy {

// pending → approved → running → done | failed; pending → cancelled.
inline constexpr const char* kPurgePending = "pending";
inline constexpr const char* kPurgeApproved = "approved";
inline constexpr const char* kPurgeRunning = "running";
inline constexpr const char* kPurgeDone = "done";
inline constexpr const char* kPurgeFailed = "failed";
inline constexpr const char* kPurgeCancelled = "cancelled";

struct PurgeRecord {
  std::string id;  // a job id of kind purge (p20261207-…): the job that runs it has the same id
  std::string state = kPurgePending;
  control::Actor proposer;
  std::optional<control::Actor> approver;
  int64_t created = 0, approved = 0, finished = 0;
  uint64_t policy_version = 0;  // the set the dry run evaluated
  uint64_t messages = 0, bytes = 0;
  std::map<std::string, uint64_t> custodians;  // purgeable messages per custodian ("": nobody's)
  std::vector<std::string> sample;
  uint64_t purged = 0, skipped = 0, dispositions = 0;
  std::string error;
  nlohmann::json report;  // null until it ran
  nlohmann::json ToJson() const;      // storage
  nlohmann::json PublicJson() const;  // the API's and CLI's view (times as RFC 3339)
  static Result<PurgeRecord> FromJson(const nlohmann::json& j);
};

struct Candidate {
  std::string id;  // hex
  uint64_t envelopes = 0;
  uint64_t bytes = 0;
  std::vector<std::string> policies;
};

struct Disposition {
  std::string id;           // the message id (hex): SHA-256 of its bytes
  std::string fingerprint;  // "sha256:" + the same, as the export manifests name it
  uint64_t size = 0;
  std::string policy;       // the deciding policies, comma-separated
  std::string proposer, approver;
  int64_t time = 0;         // when the vault forgot it
  std::string purge;
  std::string state = "intended";  // "intended" (written before the purge), "purged"
  nlohmann::json ToJson() const;
  static Result<Disposition> FromJson(const nlohmann::json& j);
};

class PurgeStore {
 public:
  PurgeStore(control::StateStore* store, control::AuditLog* audit) : store_(store), audit_(audit) {}

  // The dry run: the set in force over every indexed message; the purgeable ones are saved as
  // the candidates of a new pending purge (audited `purge.propose`). The index must be level
  // with the vault: kConflict, saying how far behind it is, otherwise.
  Result<PurgeRecord> Propose(index::Searcher& searcher, const Vault& vault, const PolicyStore& policies,
                              const control::Actor& who, int64_t now);
  Result<std::optional<PurgeRecord>> Get(const std::string& id) const;
  Result<std::vector<PurgeRecord>> List() const;  // newest first
  // A second person's approval (audited `purge.approve`): kConflict when it is not pending, or
  // (naming the rule) when `who` proposed it; the API answers that case 403 before asking.
  Result<PurgeRecord> Approve(const std::string& id, const control::Actor& who, int64_t now);
  // Withdraws a pending purge (audited `purge.cancel`).
  Result<PurgeRecord> Cancel(const std::string& id, const control::Actor& who, int64_t now);
  Result<PurgeRecord> Update(const std::string& id, const std::function<Status(PurgeRecord&)>& edit);

  Status ForEachCandidate(const std::string& id, const std::function<bool(const Candidate&)>& fn) const;
  Status ForEachDisposition(const std::string& id, const std::function<bool(const Disposition&)>& fn) const;
  // Written in one synced batch each.
  Status PutDispositions(const std::vector<Disposition>& ds);
  Status DeleteDispositions(const std::string& purge, const std::vector<std::string>& ids);

  static bool SameUser(const control::Actor& a, const control::Actor& b);

 private:
  Status Put(const PurgeRecord& r);
  control::StateStore* store_;
  control::AuditLog* audit_;
  std::mutex mu_;  // read-modify-write of a record
};

// The disposition records as CSV (RFC 4180; a header line first).
std::string DispositionCsvHeader();
std::string DispositionCsvLine(const Disposition& d);

}  // namespace mailvault::policy
