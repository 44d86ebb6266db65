// The API's control data: users, API tokens, saved searches, export jobs, tags and the audit
// chain. It lives in <vault>/state/, a small RocksDB of its own with the write-ahead log on and
// every write synced, apart from the catalog: the catalog is derived from the packs (`rebuild`
// deletes it, and its writes skip the WAL), while a user, a revoked token or an audit entry
// must survive a crash as soon as it is acknowledged (docs/design/api.md §1).
//
// Values are sealed (AES-256-GCM) under a key derived from the vault's master key, with the
// RocksDB key as associated data, so the store leaks neither queries nor password hashes.
//
// Sealing alone lets anyone who can write the files put back an older sealed value (a revoked
// token, a former role, an earlier audit head with the entries after it deleted): it still
// authenticates. So every write also keeps a keyed digest of the whole store, in the same
// synced batch: D = XOR over every key k with stored bytes v of HMAC(Kd, k || v), with a
// generation count, under an HMAC of its own (docs/formats.md "State store digest").
// VerifyDigest() recomputes D: a value rolled back, removed or put back no longer matches.
// Rolling back the whole directory to an older copy keeps D consistent; only an anchor outside
// the machine (the offsite manifest) can catch that.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/result.h"
#include "vault/crypto.h"

namespace rocksdb {
class DB;
}

namespace mailvault::control {

class StateStore {
 public:
  // One write: keys to set (value) or delete (nullopt), applied atomically and synced.
  using Batch = std::vector<std::pair<std::string, std::optional<std::string>>>;

  // Opens (creating) <vault_dir>/state. Fails with kBusy while another process has it open.
  static Result<std::unique_ptr<StateStore>> Open(const std::string& vault_dir, const SecretKey& key);
  ~StateStore();

  Result<std::optional<std::string>> Get(std::string_view key) const;
  // durable = false: written through the WAL without waiting for the disk, for records that
  // can be recomputed after a crash (a restore's outcomes: the next pass re-reads the folder).
  Status Write(const Batch& batch, bool durable = true);
  // Calls fn(key, value) for every key starting with prefix, in key order, until it returns false.
  Status Scan(std::string_view prefix, const std::function<bool(std::string_view, std::string_view)>& fn) const;
  // The last key starting with prefix, if any.
  Result<std::optional<std::string>> LastKey(std::string_view prefix) const;

  // The stored (sealed) bytes, and writing bytes sealed by the caller (the audit chain seals
  // its entries with its own associated data). WriteRaw keeps the digest like Write.
  Result<std::optional<std::string>> GetRaw(std::string_view key) const;
  Status WriteRaw(const Batch& batch, bool durable = true);
  const SecretKey& key() const { return key_; }

  // Writes since the store's digest was started: replication ships the store again when it moved.
  uint64_t generation() const { return generation_.load(); }
  // Every stored key and its sealed bytes (the store's own digest key left out), from one
  // consistent snapshot, in key order; returns the generation that snapshot holds. Replication
  // ships these bytes as they are: disaster recovery writes them back with WriteRaw.
  Result<uint64_t> ScanAllRaw(const std::function<void(std::string_view, std::string_view)>& fn) const;

  struct DigestReport {
    uint64_t values = 0;
    uint64_t generation = 0;       // writes since the digest was started
    int64_t started_us = 0;        // when this store's digest was started
    uint64_t adopted_values = 0;   // values already there then (a store from before digests)
    std::string problem;           // "" when the store matches its digest
  };
  // Recomputes the digest over every stored value and compares it with the recorded one.
  Result<DigestReport> VerifyDigest() const;

  // After a failed write the store takes no more writes: RocksDB 7.8 (Debian's, built with
  // assertions) aborts the process on the next write to a log that failed, and cannot resume
  // one. A full disk or EIO never gets here (the files wait it out, vault/patient_fs.h); other
  // errors do. What failed, or "" while writes work. `mailvault serve` sees it and exits, so
  // that its service manager restarts it (the restart replays the log; nothing acknowledged
  // is lost).
  std::string write_failure() const;

 private:
  StateStore(std::unique_ptr<rocksdb::DB> db, SecretKey key);
  Result<std::string> Unseal(std::string_view key, std::string_view box) const;
  Status LoadOrStartDigest();

  std::unique_ptr<rocksdb::DB> db_;
  SecretKey key_;
  SecretKey digest_key_;
  mutable std::mutex write_mu_;  // a write reads the old values, updates the digest and writes, as one
  // Its own lock: a write that waits out a full disk holds write_mu_, and serve's status loop
  // asks for this every second.
  mutable std::mutex failure_mu_;
  std::string write_failure_;    // REQUIRES: failure_mu_
  struct Digest {
    uint64_t generation = 0;
    int64_t started_us = 0;
    uint64_t adopted = 0;
    std::string xor_sum = std::string(32, '\0');
  } digest_;  // REQUIRES: write_mu_
  std::atomic<uint64_t> generation_{0};  // digest_.generation, readable without write_mu_
};

}  // namespace mailvault::control
