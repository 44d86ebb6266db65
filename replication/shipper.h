// Ships a vault's truth (vault/layout.h) to one offsite target and keeps it level: the packs as
// their durable bytes grow (segments; docs/replication.md), the vault's identity, and the
// control plane's store as encrypted snapshots and deltas; then a manifest naming all of it,
// chained by hash to the one before and anchoring the audit chain's head. Objects no manifest
// names any more (a purge's old pack generations, superseded state, old manifests) are deleted
// once the new manifest is up: at every moment the newest manifest offsite describes a
// complete copy.
//
// `mailvault serve` runs one Shipper per [offsite NAME] on a thread of its own at a lower CPU
// priority than capture; `mailvault offsite sync` runs one pass in the foreground.
//
// What was shipped is remembered in <vault>/offsite/<name>/ (the last manifest, derived: a
// lost copy is fetched from the target), so a restart neither sends again nor forgets.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "control/audit.h"
#include "control/state.h"
#include "core/result.h"
#include "replication/config.h"
#include "replication/formats.h"
#include "replication/object_store.h"

namespace mailvault {
class Vault;
}

namespace mailvault::replication {

// How a target stands, as `offsite status`, GET /api/v1/offsite and /metrics show it.
struct TargetStatus {
  std::string name;
  std::string url;
  std::string state = "ok";        // ok | behind | down | paused
  uint64_t lag_objects = 0;        // packs with unshipped bytes, plus the state store when it moved
  uint64_t lag_bytes = 0;
  int64_t oldest_unshipped_us = 0; // when the oldest unshipped durable byte was first seen (0: none)
  uint64_t shipped_bytes = 0;      // bytes the newest manifest names
  uint64_t shipped_objects = 0;
  std::string last_error;          // "" after a pass that succeeded
  int64_t last_error_us = 0;
  int64_t last_success_us = 0;     // the last pass that left the target level
  uint64_t manifest_seq = 0;
  uint64_t shipped_change = 0;     // every vault change up to this is offsite
  int64_t object_lock_seconds = 0; // the bucket's default object-lock retention (0: none)
  nlohmann::json ToJson() const;   // the field names, times as ISO 8601 (null when none)
};

// The vault-layout entries (vault/layout.h) the shipper copies: VAULT and keyslot (identity),
// packs/ (segments), state/ (snapshots and deltas). Every entry of kind truth must be one of
// them: a shipper refuses to start otherwise, and a test checks the two lists.
const std::vector<std::string>& ShippedEntries();

// What a target's object lock means for a pending purge (docs/replication.md "Purges"): the one
// line the API's "offsite_impact" and `purge propose|show` print.
std::string ObjectLockImpact(const std::string& target, int64_t lock_seconds);

class Shipper {
 public:
  // vault_dir holds VAULT, keyslot and the offsite/ record. audit_head: the audit chain's head
  // (the manifest anchors it).
  Shipper(Vault* vault, control::StateStore* state, std::function<control::AuditHead()> audit_head,
          OffsiteTargetConfig config);
  ~Shipper();

  // One pass: everything durable now goes up, then a manifest (when anything changed), then
  // what no manifest names any more is deleted. Ignores active-hours (the caller asked).
  Status SyncOnce();

  // The background loop: a pass whenever the vault or the state store changed (at most every
  // `interval`), retrying a failed pass with backoff (1 s doubling to 60 s), sending nothing
  // outside active-hours.
  void Start(std::chrono::milliseconds interval = std::chrono::milliseconds(1000));
  void Stop();

  // Makes a consistent copy of the full-text index in an empty directory and returns the vault
  // change it holds everything up to (serve: its indexer parks while the files are copied).
  // Without one, no index snapshot is shipped.
  using IndexCopier = std::function<Result<uint64_t>(const std::string& dest)>;
  void SetIndexCopier(IndexCopier copier) { index_copier_ = std::move(copier); }

  TargetStatus status() const;
  const OffsiteTargetConfig& config() const { return config_; }
  // The newest manifest this appliance wrote (or adopted), if any.
  std::optional<Manifest> last_manifest() const;

 private:
  struct Upload {
    std::string name;
    std::string bytes;  // small objects and open-pack segments
    int fd = -1;        // else a whole sealed pack, read from this descriptor
    uint64_t size = 0;
    // A whole pack's segment in the manifest being built (packs[pack_index].segments[0]): its
    // SHA-256 is the one the upload computed as it read the file.
    size_t pack_index = 0;
    std::string sha256;
  };
  Status Load();
  // The index snapshot, in two steps: a local copy at the start of a pass (false: no index
  // yet), then, after the pass's manifest, its chunks and a manifest naming them.
  Result<bool> CopyIndex();
  Status ShipIndexCopy();
  // Uploads the manifest, records it here, and queues what it no longer names for deletion.
  Status WriteManifest(const Manifest& next);
  // Lists the target (and, deep, downloads every object) and forgets from the manifest what is
  // missing, of the wrong size or (deep) of the wrong bytes, so that the next pass ships it
  // again: a pack deleted or damaged offsite heals by itself.
  Status Reconcile(bool deep);
  Status RunUploads(std::vector<Upload>& uploads);
  Status PassLocked();
  // Deletes what no manifest names (old pack generations, superseded state, old manifests).
  Status CollectGarbage(std::vector<std::string> names);
  void SetFailure(const Error& e);
  void Loop(std::chrono::milliseconds interval);
  std::string RecordDir() const;

  Vault* vault_;
  control::StateStore* state_;
  std::function<control::AuditHead()> audit_head_;
  OffsiteTargetConfig config_;
  SecretKey state_key_, manifest_key_;
  std::string vault_id_hex_;

  std::mutex pass_mu_;  // one pass at a time (the loop, `offsite sync` through serve)
  std::vector<std::unique_ptr<ObjectStore>> stores_;  // one per object in flight
  bool loaded_ = false;
  bool prepared_ = false;
  std::optional<Manifest> manifest_;   // REQUIRES: pass_mu_ to change; mu_ to copy
  std::string manifest_hash_;          // hex SHA-256 of the newest manifest's bytes
  // The state store as last shipped (key -> sealed bytes), so the next change ships as a delta.
  std::map<std::string, std::string> shipped_state_;
  bool have_shipped_state_ = false;
  std::vector<std::string> pending_deletes_;  // deletions a failed pass left (retried)
  int64_t unshipped_since_us_ = 0;
  int64_t last_check_us_ = 0, last_deep_check_us_ = 0;
  bool force_snapshot_ = false;
  IndexCopier index_copier_;
  bool index_snapshot_due_ = false;
  std::optional<ShippedIndex> index_copy_;  // taken, not yet shipped  // a purge rewrote packs: the shipped index holds its words

  mutable std::mutex mu_;
  TargetStatus status_;  // REQUIRES: mu_

  std::mutex loop_mu_;
  std::condition_variable loop_cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace mailvault::replication
