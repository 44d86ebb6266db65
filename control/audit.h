// The audit trail: every person's action (logins and their failures, searches with their
// query, views, downloads, exports, tags, user and configuration changes, refusals) as an
// append-only, hash-chained log in the state store (state.h).
//
// Entry n carries h(n-1), and
//   h(n) = HMAC-SHA256(K, h(n-1) || canonical JSON of entry n without its hash)
// where K = HKDF(master key, vault id, "mailvault/v1/audit"), h(0) = 64 zeros. An entry changed
// without the key breaks its own HMAC; one removed or moved breaks the chain (prev and seq);
// the tail cut off disagrees with the head record written in the same batch. docs/api.md
// ("audit trail") has the format and what `mailvault audit verify` reports.
//
// Writes are group-committed by one thread: Record() returns once the entry is synced, so a
// response that shows content goes out only after its audit entry is durable.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "control/keys.h"
#include "control/state.h"
#include "core/result.h"
#include "vault/crypto.h"

namespace mailvault::control {

struct AuditEvent {
  std::string user;    // "" when nobody is authenticated (a failed login names the attempted user in target)
  std::string role;
  std::string auth;    // "session", "token:<id>", "cli:uid=<n>", "system"
  std::string source;  // the client's address, or "cli"
  std::string action;  // "auth.login", "search", "message.raw", ...
  std::string target;  // what it acted on: a message id, a user name, an export id
  int status = 0;      // the HTTP status answered (0 outside HTTP)
  nlohmann::json details = nlohmann::json::object();  // e.g. {"query": "...", "total": 12}
};

struct AuditEntry {
  uint64_t seq = 0;
  int64_t time_us = 0;
  AuditEvent event;
  std::string prev;  // hex
  std::string hash;  // hex
  nlohmann::json ToJson() const;
};

struct AuditHead {
  uint64_t seq = 0;
  std::string hash;  // hex; 64 zeros before the first entry
};

struct AuditProblem {
  uint64_t seq = 0;
  std::string kind;    // "edited", "reordered", "removed", "truncated", "inserted", "unreadable", "rolled back"
  std::string detail;
};

struct AuditVerifyReport {
  uint64_t entries = 0;
  AuditHead head;
  std::vector<AuditProblem> problems;  // the first few; verification goes on past a problem
  uint64_t state_values = 0;           // values in the state store, all covered by its digest
  uint64_t state_generation = 0;       // writes since the digest was started
  bool ok() const { return problems.empty(); }
};

class AuditLog {
 public:
  // Reads the head from the store. `key` is the chain's HMAC key (Vault::DeriveSubkey).
  static Result<std::unique_ptr<AuditLog>> Open(StateStore* store, const SecretKey& key);
  ~AuditLog();

  // Appends and waits until the entry is on disk. An error means it was not recorded, and the
  // caller must not show what it was about to show.
  Status Record(AuditEvent event);
  AuditHead head() const;

  struct Filter {
    int64_t from_us = 0, to_us = INT64_MAX;
    std::string user, action, target;
    uint64_t after_seq = 0;
    size_t limit = 100;
  };
  Result<std::vector<AuditEntry>> Read(const Filter& filter) const;

  // Checks every entry and the chain (see the top of this file).
  static Result<AuditVerifyReport> Verify(const StateStore& store, const SecretKey& key);

  // The store's key for entry seq ("a/" + 16 hex digits), and the head's key.
  static std::string KeyOf(uint64_t seq);
  static constexpr const char* kHeadKey = kAuditHeadKey;  // control/keys.h
  // Associated data entries are sealed with: not their key, so that two swapped entries open
  // and are reported as reordered rather than as unreadable.
  static constexpr const char* kSealAad = "mailvault audit entry v1";

 private:
  AuditLog(StateStore* store, SecretKey key, AuditHead head);
  struct Waiter;
  void CommitLoop();

  StateStore* store_;
  SecretKey key_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  AuditHead head_;            // REQUIRES: mu_ (the last entry queued)
  AuditHead durable_head_;    // REQUIRES: mu_
  std::deque<std::pair<AuditEntry, std::shared_ptr<Waiter>>> queue_;  // REQUIRES: mu_
  bool stop_ = false;
  std::thread committer_;
};

// The canonical bytes an entry's hash covers.
std::string AuditCanonical(const AuditEntry& e);
std::string AuditHash(const SecretKey& key, const std::string& prev_hex, const AuditEntry& e);

}  // namespace mailvault::control
