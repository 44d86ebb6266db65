// Restore jobs: put archived mail back into users' IMAP mailboxes, every message exactly once.
//
// A job is planned once and then persisted (docs/design/recovery.md §8):
//   1. Selection (SelectForRestore): vault messages whose envelope puts them in a custodian's
//      mailbox inside the time window (capture time, or the Date header with --by-date), and
//      that match a query when one is given. Each lands in a target: (mailbox, folder), where
//      mail the custodian sent goes to Sent and the rest to INBOX unless one folder is asked
//      for. Inside a target, copies of one message (the same header key and the same decoded
//      content) are selected once.
//   2. Per target, a worker logs in (as the user, or as an administrator acting as the user),
//      reads the mailbox's Message-ID and Date for every message (the inventory), and for each
//      selected message with the same header key fetches those candidates and compares the
//      hashes of their decoded parts (BLUEPRINT decision 10): equal means already present.
//      Message-ID alone never decides: real mail has missing and shared Message-IDs, and the
//      server's copy carries headers the journal's does not.
//   3. What is not present is appended, pipelined (LITERAL+), in batches. Before a batch is sent
//      its intents are written to the job's journal (synced); after it, the outcome of each
//      message (the APPENDUID where the server has UIDPLUS, or the refusal in the server's
//      words).
// Crash safety does not depend on the journal being complete: whatever happened to a message
// whose outcome was not recorded (a kill -9 between sending and recording), the next pass
// reads the mailbox again and finds it there by step 2. The journal makes resumed jobs cheap
// (recorded outcomes are not checked again) and the report exact.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"
#include "recovery/imap_client.h"

namespace mailvault {
class Vault;
namespace control {
class StateStore;
}
namespace index {
class Searcher;
}
}  // namespace mailvault

namespace mailvault::recovery {

struct RestoreCriteria {
  std::vector<std::string> users;       // custodians' addresses, as archived
  std::optional<int64_t> from, until;   // seconds since the epoch, UTC; open when unset
  bool by_date = false;                 // the window applies to the Date header, not capture time
  int64_t margin_before = 300;          // seconds added before `from`
  int64_t margin_after = 600;           // and after `until`
  std::string query;                    // the index's query language; "" selects by the rest alone
  // With a query: the vault change up to which the index must be complete (the vault as it was
  // when a job was created: live capture keeps the index a few changes behind). 0: the vault's
  // last change now.
  uint64_t index_complete_to = 0;
};

struct RestoreOptions {
  std::string folder;                   // one folder for everything ("Recovered …"); "" maps
  std::string sent_folder = "Sent";     // where mail the custodian sent goes when mapping
  std::string into;                     // one mailbox for everything (a reviewer's); "" per user
  std::map<std::string, std::string> user_map;  // custodian -> mailbox owner, when they differ
  std::vector<std::string> flags;       // set on every appended message
  int workers = 4;                      // mailboxes restored at once
  size_t connections = 3;               // connections appending to one folder at once
  uint64_t bandwidth = 0;               // bytes per second over all workers; 0: no limit
  size_t batch = 128;                   // messages per MULTIAPPEND (or in flight), per journal write
};

// Refuses options a job must not run with: today, --flag values that are not IMAP flags (each
// goes into every APPEND command). SelectForRestore, RestoreJob::Create, DryRun and Run call it.
Status ValidateRestoreOptions(const RestoreOptions& options);

// Where the job appends and as whom. Passwords are never stored: a resumed job reads the
// auth file again.
struct RestoreTarget {
  std::string url;                      // "imap://host:port" or "imaps://host:port", as given
  ImapEndpoint endpoint;
  std::string auth_file;
};

// The auth file: lines "ADDRESS LOGIN PASSWORD" (per user), or one "* LOGIN PASSWORD" (an
// administrator acting as each user through SASL PLAIN's authorization identity). Blank lines
// and lines starting with '#' are skipped; the password is the rest of the line.
struct Credentials {
  std::map<std::string, std::pair<std::string, std::string>> per_user;  // address -> login, password
  std::optional<std::pair<std::string, std::string>> admin;
  // The identity for one mailbox owner; an error names the address that has none.
  Result<ImapCredentials> For(const std::string& address) const;
};
// Refuses a file that others can read (like ssh with its keys): it holds passwords.
Result<Credentials> ReadCredentials(const std::string& path);

// "imap://host:port" (STARTTLS, or plain with allow_plain) or "imaps://host:port".
Result<ImapEndpoint> ParseImapUrl(const std::string& url, bool allow_plain);

// One message planned into one target.
struct PlannedMessage {
  std::string id;             // vault id, hex
  int64_t internal_date = 0;  // when it reached the archive: the INTERNALDATE it gets
  uint64_t size = 0;          // stored bytes (LF line endings)
  bool sent = false;          // the custodian sent it
};

struct PlannedTarget {
  std::string custodian;      // as archived
  std::string mailbox;        // the owner of the mailbox appended to
  std::string folder;
  std::vector<PlannedMessage> messages;
  std::vector<std::pair<std::string, std::string>> copies;  // (id, id it is a copy of): selected once
};

Result<std::vector<PlannedTarget>> SelectForRestore(Vault& vault, index::Searcher* searcher,
                                                    const RestoreCriteria& criteria, const RestoreOptions& options);

// What happened to one message (the job's journal; docs/formats.md "restore journal").
struct Outcome {
  enum class Kind { kIntent, kAppended, kPresent, kFailed };
  Kind kind = Kind::kIntent;
  uint32_t uid = 0, uid_validity = 0;  // kAppended with UIDPLUS; kPresent: the copy found
  std::string why;                     // kPresent: how it matched; kFailed: the reason
  int64_t at = 0;
};

struct TargetReport {
  std::string custodian, mailbox, folder;
  uint64_t selected = 0, present = 0, appended = 0, failed = 0, pending = 0, bytes = 0;
  std::vector<std::pair<std::string, std::string>> failures;  // (id, why)
  std::string error;                                          // why the mailbox could not be done
};

struct JobReport {
  std::string id;
  std::string status;  // "planned", "running", "done", "failed", "interrupted", "cancelled"
  int64_t created = 0, updated = 0;
  std::string target;  // the URL
  std::vector<TargetReport> targets;
};

// The report as `job show --json` and the job's record give it: per mailbox and totals.
nlohmann::json ReportJson(const JobReport& r);
// A dry run's plan: {"plan": [{"user", "mailbox", "folder", "selected", "present", "to_append", "bytes"}]}.
nlohmann::json PlanJson(const JobReport& r);

// The plan as a dry run reports it, without a job: the same inventory and matching as a run.
Result<JobReport> DryRun(Vault& vault, const RestoreTarget& target, const Credentials& credentials,
                         const RestoreOptions& options, std::vector<PlannedTarget> plan);

// Takes purged messages out of every restore job's plans and journals (the purge job calls it):
// a resumed restore then has nothing of them to append. ids are hex message ids.
Status ForgetPurged(control::StateStore* store, const std::vector<std::string>& ids);

// The persisted job: its definition, its targets and the journal, in the state store.
class RestoreJob {
 public:
  // Plans and persists a new job (status "planned").
  static Result<std::unique_ptr<RestoreJob>> Create(control::StateStore* store, const RestoreTarget& target,
                                                    const RestoreCriteria& criteria, const RestoreOptions& options,
                                                    std::vector<PlannedTarget> plan, std::string id = "");
  static Result<std::unique_ptr<RestoreJob>> Load(control::StateStore* store, const std::string& id);
  static Result<std::vector<JobReport>> List(control::StateStore* store);

  const std::string& id() const { return id_; }
  const std::string& status() const { return status_; }
  const RestoreTarget& target() const { return target_; }
  RestoreTarget& mutable_target() { return target_; }
  Status SetStatus(const std::string& status);
  Result<JobReport> Report() const;

  struct Progress {
    std::atomic<uint64_t> selected{0}, present{0}, appended{0}, failed{0}, targets_left{0};
  };
  // Runs (or resumes) the job until every target is done, the stop flag is set, or the server
  // stays unreachable. dry_run: read the mailboxes, decide, append nothing, record nothing.
  Result<JobReport> Run(Vault& vault, const Credentials& credentials, std::atomic<bool>* stop, Progress* progress,
                        bool dry_run = false);

 private:
  friend Result<JobReport> DryRun(Vault&, const RestoreTarget&, const Credentials&, const RestoreOptions&,
                                  std::vector<PlannedTarget>);
  RestoreJob(control::StateStore* store, std::string id) : store_(store), id_(std::move(id)) {}
  Status SaveHeader() const;

  control::StateStore* store_;
  std::string id_;
  std::string status_;
  int64_t created_ = 0;
  RestoreTarget target_;
  std::string criteria_json_, options_json_;
  RestoreOptions options_;
  std::vector<PlannedTarget> targets_;
};


}  // namespace mailvault::recovery
