// Every key the master key is stretched into: HKDF-SHA256(master, salt = the vault's id,
// info = purpose). One table, so that no two uses ever share a key and a new one is chosen
// knowingly; docs/formats.md describes what each key protects.
#pragma once

namespace mailvault::purpose {

// vault/
inline constexpr const char* kWrap = "mailvault/v1/wrap";              // wraps each object's data key
inline constexpr const char* kCatalog = "mailvault/v1/catalog";        // catalog values, envelope digests
inline constexpr const char* kDictionary = "mailvault/v1/dictionary";  // compression dictionaries
inline constexpr const char* kRecords = "mailvault/v2/records";        // pack format 2's per-record MAC
// control/
inline constexpr const char* kState = "mailvault/v1/state";            // state store values
inline constexpr const char* kAudit = "mailvault/v1/audit";            // the audit chain's MAC
// replication/
inline constexpr const char* kOffsite = "mailvault/v1/offsite";        // state snapshots shipped offsite (AES-256-GCM)
inline constexpr const char* kManifest = "mailvault/v1/manifest";      // the offsite manifests' HMAC
// The state store's digest key comes from the state key (salt "mailvault state"), not from
// the master key directly: whoever holds the state key holds it anyway.
inline constexpr const char* kStateDigest = "mailvault/v1/state-digest";

}  // namespace mailvault::purpose
