// The jobs a running `mailvault serve` does beside capture and indexing: restores into IMAP
// mailboxes, verifies of the vault, and rebuilds and compactions of the index (exports keep
// their own runner in api/export.h and are listed with these). Jobs are records in the job store (control/jobs.h); this runner picks
// queued ones, runs each on a worker thread at a lower CPU priority than capture, writes its
// progress back and applies what people ask (cancel, pause, resume) at the job's next batch.
//
// Crash safety: a job found "running" when the runner starts was interrupted (SIGTERM, kill
// -9, power) and is queued again; a restore then reads the mailboxes again and appends only
// what is not there (recovery/restore.h), so nothing is appended twice.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "control/audit.h"
#include "control/jobs.h"
#include "core/result.h"
#include "jobs/indexer.h"
#include "jobs/targets.h"
#include "policy/store.h"

namespace mailvault {
class Vault;
}

namespace mailvault::jobs {

struct RunnerOptions {
  int workers = 2;     // jobs run at once
  int nice = 10;       // added to the workers' CPU priority (capture runs at 0)
  // How long a restore with a query waits for the index to catch up before it fails.
  std::chrono::seconds index_wait{600};
};

class JobRunner {
 public:
  // indexed_change: the last vault change the index has made searchable (serve's indexer), or
  // null when this serve runs no indexer (a restore with a query then waits for nothing and
  // searches what the index has).
  JobRunner(Vault* vault, std::string vault_dir, control::StateStore* store, control::AuditLog* audit,
            std::map<std::string, RestoreTargetConfig> targets, std::function<uint64_t()> indexed_change,
            RunnerOptions options = {});
  ~JobRunner();

  // Queues again the jobs an earlier run left "running", and starts the workers.
  Status Start();
  // Running jobs stop at their next batch and stay queued for the next start.
  void Stop();

  control::JobStore& store() { return jobs_; }
  const std::map<std::string, RestoreTargetConfig>& targets() const { return targets_; }

  // A restore as the API and the CLI ask for it (docs/openapi.yaml, RestoreRequest):
  // {"target", "users", "from", "until", "by_date", "margin_before", "margin_after", "query",
  //  "folder", "into", "map", "flags", "dry_run", "sent_folder", "workers", "connections", "batch"}.
  // Errors name the field. Unknown targets are kNotFound.
  // dry_run: reads the mailboxes and returns the plan (recovery::PlanJson); no job is made.
  // adhoc: the command line's --to and --auth-file instead of a configured target (the local
  // socket only: its clients are root or the service's user, who can read the config anyway).
  Result<nlohmann::json> PlanRestore(const nlohmann::json& request, const control::Actor& who,
                                     const RestoreTargetConfig* adhoc = nullptr);
  // Records a queued restore job; the workers start it.
  Result<control::JobRecord> SubmitRestore(const nlohmann::json& request, const control::Actor& who,
                                           const RestoreTargetConfig* adhoc = nullptr);
  // A verify of the vault: {"sample": PERCENT} (default 100).
  Result<control::JobRecord> SubmitVerify(const nlohmann::json& request, const control::Actor& who);
  // The index rebuilt from the vault ({}), or only compacted ({"compact": true}), with the
  // writer lent by serve's indexer (SetIndex). Searches meanwhile see the index refill.
  Result<control::JobRecord> SubmitReindex(const nlohmann::json& request, const control::Actor& who);
  // serve's index, which reindex jobs need; set before Start.
  void SetIndex(IndexFollower* index) { index_ = index; }
  // What purge jobs need (jobs/purge.h): the policy store (its freeze), the records (tags,
  // exports) and where exports are written; set before Start.
  void SetPurgeEnv(policy::PolicyStore* policies, control::Records* records, std::string exports_dir) {
    policies_ = policies;
    records_ = records;
    exports_dir_ = std::move(exports_dir);
  }
  // Runs an approved purge (policy::PurgeStore::Approve) as a job with the purge's id.
  Result<control::JobRecord> SubmitPurge(const std::string& purge_id, const control::Actor& approver);

  // A person's request, audited under their name.
  Result<control::JobRecord> Cancel(const std::string& id, const control::Actor& who);
  Result<control::JobRecord> Pause(const std::string& id, const control::Actor& who);
  Result<control::JobRecord> Resume(const std::string& id, const control::Actor& who);
  // Takes over a restore that the command line started while no service ran (it has a plan and
  // a journal but no job record): queued, with the target it was started with.
  Result<control::JobRecord> Adopt(const std::string& id, const control::Actor& who);

 private:
  void Worker();
  // Claims the oldest queued job that no worker runs; false when there is none.
  bool Claim(control::JobRecord* job);
  void Run(control::JobRecord job);
  // Each returns the final state and fills the record's report and error.
  control::JobState RunRestore(control::JobRecord& job, std::atomic<bool>* stop);
  control::JobState RunVerify(control::JobRecord& job, std::atomic<bool>* stop);
  control::JobState RunReindex(control::JobRecord& job, std::atomic<bool>* stop);
  control::JobState RunPurgeJob(control::JobRecord& job, std::atomic<bool>* stop);
  // What a stop means: the person's request (cancel, pause), or queued again when serve stops.
  control::JobState StoppedState(const std::string& id);
  Result<control::JobRecord> Request(const std::string& id, const control::Actor& who, const char* verb,
                                     Result<control::JobRecord> (control::JobStore::*apply)(const std::string&));
  struct CheckedRestore;
  class RequestWatcher;
  Result<CheckedRestore> CheckRestore(const nlohmann::json& request, const RestoreTargetConfig* adhoc) const;
  // The target a job's parameters name: configured, or given on the command line.
  Result<RestoreTargetConfig> TargetFor(const nlohmann::json& params) const;
  // Records an entry for who; refused work is not done (audit before the change).
  Status Audit(const control::Actor& who, const std::string& action, const std::string& target, nlohmann::json details);
  void Wake();

  Vault* vault_;
  std::string vault_dir_;
  control::StateStore* store_;
  control::AuditLog* audit_;
  control::JobStore jobs_;
  std::map<std::string, RestoreTargetConfig> targets_;
  std::function<uint64_t()> indexed_change_;
  IndexFollower* index_ = nullptr;
  policy::PolicyStore* policies_ = nullptr;
  control::Records* records_ = nullptr;
  std::string exports_dir_;
  RunnerOptions options_;

  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;          // REQUIRES: mu_
  std::set<std::string> running_;  // REQUIRES: mu_
  std::atomic<bool> stop_all_{false};
  std::vector<std::thread> workers_;
};

}  // namespace mailvault::jobs
