// What replication writes offsite besides the packs themselves (docs/replication.md, pinned by
// tests/replication/formats_test.cc):
//
//   manifests/<seq, 16 hex>   a manifest: every object the target should hold, with its size
//                             and SHA-256, the hash of the manifest before it, and the audit
//                             chain's head; JSON, authenticated with an HMAC under the vault's key
//   state/<gen, 16 hex>.snap  the control plane's store, every key and sealed value, encrypted
//   state/<gen, 16 hex>.delta what changed in it since the object before, encrypted
//
// A manifest is readable without the key (an operator can see what is where) but cannot be
// forged or edited without it; the state objects are AES-256-GCM boxes (the store's keys name
// users and tags). Packs are shipped as they are on disk: every message, envelope and
// dictionary in them is already encrypted.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "vault/crypto.h"

namespace mailvault::replication {

// A manifest larger than this is refused (a vault of 100,000 packs lists in about 40 MB).
inline constexpr size_t kMaxManifestBytes = 64u << 20;
// A state object's plaintext is at most this large when opened.
inline constexpr size_t kMaxStateObjectBytes = 1u << 30;
inline constexpr const char* kManifestFormat = "mailvault-offsite-manifest v1";

struct ShippedObject {
  std::string name;
  uint64_t size = 0;
  std::string sha256;  // hex
};

struct ShippedPack {
  uint64_t number = 0;
  uint32_t generation = 0;
  bool sealed = false;
  uint64_t bytes = 0;                   // the pack's bytes offsite: the segments end to end
  std::vector<ShippedObject> segments;  // consecutive: segment i starts where i-1 ended
};

struct ShippedState {
  uint64_t generation = 0;  // the state store's generation the newest object brings it to
  // The snapshot first, then the deltas after it, in order.
  std::vector<ShippedObject> objects;
};

// The full-text index, shipped now and then so that disaster recovery does not have to rebuild it
// (docs/replication.md "Index snapshots"): an archive of the index directory's files, cut into
// chunks, each sealed like a state object (AES-256-GCM, the object's name as associated data).
struct ShippedIndex {
  uint64_t change = 0;   // the vault change the index held everything up to
  int64_t time_us = 0;   // when the copy was taken
  uint64_t bytes = 0;    // of the archive (before sealing)
  std::vector<ShippedObject> objects;  // the chunks, in order
};

struct Manifest {
  std::string vault;   // the vault's id, hex
  std::string target;  // the [offsite NAME]
  uint64_t seq = 0;    // 1, 2, …: one more per manifest
  std::string prev;    // hex SHA-256 of the previous manifest object's bytes ("" for seq 1)
  int64_t time_us = 0;
  std::vector<ShippedObject> identity;  // VAULT, keyslot
  std::vector<ShippedPack> packs;       // by number
  ShippedState state;
  uint64_t audit_seq = 0;               // the audit chain's head when the manifest was written
  std::string audit_head;
  std::optional<ShippedIndex> index;    // absent until a snapshot was shipped
};

std::string ManifestName(uint64_t seq);               // "manifests/0000000000000007"
std::optional<uint64_t> ManifestSeqOf(std::string_view object_name);
std::string SegmentName(uint64_t pack, uint32_t generation, uint64_t offset);  // "packs/00000003.g1.0000000000001000"
std::string StateObjectName(uint64_t generation, bool snapshot);              // "state/00000000000000a1.snap"
std::string IndexObjectName(uint64_t manifest_seq, uint64_t chunk);           // "index/0000000000000007.00000000"

// JSON with "mac": HMAC-SHA256 (hex) under key over the JSON without it.
std::string EncodeManifest(const Manifest& m, const SecretKey& key);
// Parses and authenticates (kCorruption when the MAC fails: edited, or another vault's key).
Result<Manifest> DecodeManifest(std::string_view bytes, const SecretKey& key);
// Parses without the key (status and listings show what is offsite); nothing is authenticated.
Result<Manifest> DecodeManifestUnauthenticated(std::string_view bytes);

// A state object: the store's keys and sealed values (snapshot), or puts and deletes (delta).
struct StateRecord {
  std::string key;
  std::optional<std::string> value;  // sealed bytes as the store holds them; nullopt = deleted
};
struct StateObject {
  bool snapshot = true;
  uint64_t base_generation = 0;  // delta: the generation it applies to
  uint64_t generation = 0;       // the generation it brings the store to
  std::vector<StateRecord> records;
};
// AES-256-GCM under key (purpose kOffsite), the object's name as associated data: an object
// renamed (an old delta put in a newer one's place) does not open.
std::string EncodeStateObject(const StateObject& o, const SecretKey& key, std::string_view name);
Result<StateObject> DecodeStateObject(std::string_view box, const SecretKey& key, std::string_view name);

// The index archive: "mailvault-offsite-index v1\n", then per file (in name order) a string path
// relative to the index directory, a u64 LE size and the bytes. Chunks of at most
// kIndexChunkBytes of it are sealed into objects.
inline constexpr size_t kIndexChunkBytes = 32u << 20;
inline constexpr uint64_t kMaxIndexFileBytes = 64ull << 30;
// Calls sink with the archive's bytes, in pieces, for every regular file under dir.
Status WriteIndexArchive(const std::string& dir, const std::function<Status(std::string_view)>& sink);
// Writes the files of an archive under dir (created); a path that is absolute, climbs ("..") or
// repeats, or an archive cut short, is refused (kCorruption) and nothing more is written.
Status ReadIndexArchive(std::string_view archive, const std::string& dir);
std::string SealIndexChunk(std::string_view chunk, const SecretKey& key, std::string_view name);
Result<std::string> OpenIndexChunk(std::string_view box, const SecretKey& key, std::string_view name);

}  // namespace mailvault::replication
