// The API's control data: users, API tokens, saved searches, export jobs, tags and the audit
// chain. It lives in <vault>/state/, a small RocksDB of its own with the write-ahead log on and
// every write synced, apart from the catalog: the catalog is derived from the packs (`rebuild`
// deletes it, and its writes skip the WAL), while a user, a revoked token or an audit entry
// must survive a crash as soon as it is acknowledged (docs/design/api.md §1).
//
// Values are sealed (AES-256-GCM) under a key derived from the vault's master key, with the
// RocksDB key as associated data, so the store leaks neither queries nor password hashes.
#pragma once

#include <functional>
#include <memory>
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

namespace mailvault::api {

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

  // For the tamper tests only: the stored (sealed) bytes, and writing them back unchecked.
  Result<std::optional<std::string>> GetRaw(std::string_view key) const;
  Status WriteRaw(const Batch& batch, bool durable = true);
  const SecretKey& key() const { return key_; }

 private:
  StateStore(std::unique_ptr<rocksdb::DB> db, SecretKey key);
  Result<std::string> Unseal(std::string_view key, std::string_view box) const;

  std::unique_ptr<rocksdb::DB> db_;
  SecretKey key_;
};

}  // namespace mailvault::api
