// The job store: every long-running piece of work the appliance does for a person (a restore,
// a verify, an import; later purges and offsite shipping) is one record with one vocabulary of
// kinds and states, kept in the state store under "J/<id>" (control/keys.h).
//
//   queued ──▶ running ──▶ done | failed
//     │  ▲        │ ▲
//     │  └─resume─┤ └─resume── paused ◀── pause (a running job stops after its current batch)
//     └──────── cancel (from queued, running or paused) ──▶ cancelled
//
// A person's request (cancel, pause, resume) is written to the record at once, synced, so it
// holds across a crash: the runner reads it at its next batch, or at start-up. Nothing about a
// job lives in pid or flag files. A record holds no secret: a restore names its configured
// target, whose credentials stay in the target's auth file.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "control/audit.h"
#include "control/state.h"
#include "core/result.h"

namespace mailvault::control {

enum class JobKind { kRestore, kExport, kVerify, kImport, kReindex, kPurge };
enum class JobState { kQueued, kRunning, kPaused, kDone, kFailed, kCancelled };

const char* JobKindName(JobKind k);    // "restore", "export", "verify", "import", "reindex", "purge"
const char* JobStateName(JobState s);  // "queued", "running", "paused", "done", "failed", "cancelled"
std::optional<JobKind> ParseJobKind(std::string_view s);
std::optional<JobState> ParseJobState(std::string_view s);
// done, failed and cancelled: nothing more happens to the job.
bool IsFinal(JobState s);

// r20261207-114501-3fa9c2: the kind's letter, the creation time (UTC) and 24 random bits. The
// only shape of id the store accepts (ids reach file names and URLs).
bool ValidJobId(std::string_view id);
std::string NewJobId(JobKind kind);

// Who started or changed a job, as the audit trail names them.
struct Actor {
  std::string user;    // "ada", or the shell's login
  std::string role;    // "admin", "operator", "shell", "system"
  std::string auth;    // "session", "token:<id>", "cli:uid=<n>", "system"
  std::string source;  // the client's address, or "cli"
  std::string issued_by;  // the admin who made the API token used, when it was not its user
  nlohmann::json ToJson() const;
  static Actor FromJson(const nlohmann::json& j);
  // An audit entry of this person's action (details gain "issued_by" when there is one).
  AuditEvent Event(std::string action, std::string target, nlohmann::json details = nlohmann::json::object()) const;
};

struct JobRecord {
  std::string id;
  JobKind kind = JobKind::kRestore;
  JobState state = JobState::kQueued;
  Actor started_by;
  nlohmann::json params = nlohmann::json::object();    // the kind's definition
  nlohmann::json progress = nlohmann::json::object();  // kind-specific counters, e.g. restore's total/appended/present/failed
  nlohmann::json report;                                // null until there is one
  std::string error;                                    // why it failed, or a note on a cancel
  std::string phase;                                    // what a running job is doing ("waiting for the index")
  std::string requested;                                // "cancel" or "pause", asked while it ran: applied when it stops
  int64_t created = 0, started = 0, finished = 0, updated = 0;  // seconds since the epoch; 0: not yet
  uint32_t runs = 0;                                    // how many times it has been started (resumes count)
  uint64_t version = 0;                                 // bumped by every write, for event streams

  nlohmann::json ToJson() const;        // storage
  nlohmann::json PublicJson() const;    // the API's and the CLI's view (times as RFC 3339)
  static Result<JobRecord> FromJson(const nlohmann::json& j);
};

class JobStore {
 public:
  explicit JobStore(StateStore* store) : store_(store) {}
  StateStore* store() { return store_; }

  // A new queued job with a fresh id.
  Result<JobRecord> Create(JobKind kind, const Actor& who, nlohmann::json params,
                           nlohmann::json progress = nlohmann::json::object());
  // A queued record under an id that exists elsewhere already (a restore the command line
  // started before the job store knew it); kAlreadyExists when the store has it.
  Result<JobRecord> Adopt(const std::string& id, JobKind kind, const Actor& who, nlohmann::json params);
  Result<std::optional<JobRecord>> Get(const std::string& id) const;
  // Every job, newest first; filters are ignored when unset.
  Result<std::vector<JobRecord>> List(std::optional<JobKind> kind = std::nullopt,
                                      std::optional<JobState> state = std::nullopt) const;

  // Reads the record, applies edit and writes it back, with no other change to it in between.
  // durable = false for progress counters (recomputed by the job after a crash). NotFound when
  // there is no such job; an error from edit writes nothing.
  Result<JobRecord> Update(const std::string& id, const std::function<Status(JobRecord&)>& edit, bool durable = true);

  // A person's requests. Each is refused with kFailedPrecondition, in words, when the job's
  // state does not allow it (cancelling a finished job, resuming a running one). Two clients
  // asking at once: the store orders them, and the second sees the first's result.
  //   cancel:  queued or paused → cancelled at once; running → cancelled when it stops
  //   pause:   queued → paused; running → paused when it stops
  //   resume:  paused (or failed, for kinds that can resume) → queued
  Result<JobRecord> RequestCancel(const std::string& id);
  Result<JobRecord> RequestPause(const std::string& id);
  Result<JobRecord> RequestResume(const std::string& id);

  // The state a running job should stop into, if a person asked for one since it started.
  // kRunning when nobody did.
  Result<JobState> Requested(const std::string& id) const;

  // Blocks until some job changed after `seen` (JobStore::changes()) or the deadline passed;
  // returns the current count. For event streams.
  uint64_t WaitForChange(uint64_t seen, std::chrono::steady_clock::time_point deadline) const;
  uint64_t changes() const;

 private:
  StateStore* store_;
  mutable std::mutex mu_;  // read-modify-write of one record at a time
  mutable std::condition_variable changed_;
  uint64_t changes_ = 0;   // REQUIRES: mu_
};

}  // namespace mailvault::control
