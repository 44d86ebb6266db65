// `mailvault offsite verify [--deep]`, `verify --repair` and `dr restore`: reading the offsite
// copy back and comparing it with what it should be (docs/replication.md).
//
// verify compares three things, each against the others, and names every difference:
//   - the target's objects (a listing) with its newest manifest (names, sizes; --deep: every
//     object downloaded, its SHA-256 checked against the authenticated manifest and each state
//     object opened with the key);
//   - the manifest chain with this appliance's own record of the newest manifest (a manifest
//     lost, replaced or rolled back offsite);
//   - the manifest with the vault (every pack at the generation the vault has: an older one
//     offsite may hold purged mail) and with the audit trail (the head anchored offsite must be
//     an entry of the local trail, with the same hash: entries removed here are found).
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"
#include "replication/config.h"
#include "replication/formats.h"
#include "replication/object_store.h"
#include "vault/crypto.h"
#include "vault/vault.h"

namespace mailvault::replication {

struct Difference {
  std::string kind;    // missing, size, content, extra, stale, chain, audit, manifest, unreadable
  std::string object;  // the object or pack it concerns ("" for the whole target)
  std::string detail;
};

struct OffsiteVerifyReport {
  std::string target;
  uint64_t manifest_seq = 0;
  int64_t manifest_time_us = 0;
  uint64_t objects_checked = 0;
  uint64_t bytes_downloaded = 0;  // --deep
  uint64_t lag_bytes = 0;         // durable here, not yet offsite (not a difference: it is on its way)
  std::vector<Difference> differences;
  bool ok() const { return differences.empty(); }
  nlohmann::json ToJson() const;
};

struct VerifyInputs {
  const Vault* vault = nullptr;               // optional: compare packs with the vault
  std::string record_dir;                     // <vault>/offsite/<name>: this appliance's newest manifest
  SecretKey manifest_key, state_key;
  std::string vault_id_hex;
  // The hash of the local audit entry seq (nullopt when there is none): the anchor's check.
  std::function<Result<std::optional<std::string>>(uint64_t seq)> audit_hash_at;
  bool deep = false;
};
Result<OffsiteVerifyReport> VerifyOffsite(ObjectStore& store, const VerifyInputs& in);

// The newest manifest on the target that authenticates with key (older ones are tried when the
// newest does not; *skipped counts those passed over).
Result<Manifest> NewestManifest(ObjectStore& store, const SecretKey& key, int* skipped = nullptr);

// Writes the pack's bytes as the manifest names them into path (fsync'd), checking each
// segment's SHA-256. Returns the bytes written.
Result<uint64_t> FetchPack(ObjectStore& store, const ShippedPack& pack, const std::string& path);

// Disaster recovery: fills an empty directory with the offsite copy: VAULT (and keyslot), every
// pack, the control plane's store (state/, rebuilt from the snapshot and its deltas) and, when
// one was shipped, the index snapshot. The caller then opens the vault (its catalog is rebuilt
// from the packs), brings the index level (or rebuilds it) and verifies.
struct DrFetchReport {
  Manifest manifest;
  int manifests_skipped = 0;  // newer manifests that did not authenticate
  uint64_t packs = 0, pack_bytes = 0;
  uint64_t state_objects = 0, state_keys = 0;
  double seconds_download = 0, seconds_state = 0, seconds_index = 0;
  // When the copy has an index snapshot, it was unpacked into <vault>/index: it holds every
  // change up to index_change, and the restore only catches it up from there.
  std::optional<uint64_t> index_change;
  uint64_t index_bytes = 0;
};
Result<DrFetchReport> FetchVaultFromOffsite(const OffsiteTargetConfig& target, const KeySource& keys,
                                            const std::string& vault_dir,
                                            const std::function<void(const std::string&)>& say = {});

// `verify --repair`: every pack of the newest manifest that is missing here, or whose bytes
// differ from the offsite copy's, is fetched back (a local tail beyond the offsite copy is kept).
struct RepairReport {
  std::vector<std::string> repaired;  // "pack 3: missing here; fetched 33554432 bytes from s3-dr"
  std::vector<std::string> problems;
};
Result<RepairReport> RepairPacksFromOffsite(ObjectStore& store, const std::string& vault_dir, const SecretKey& manifest_key,
                                            const std::string& target_name);

}  // namespace mailvault::replication
