// Every entry of a vault directory, and what it is: truth (lose it and mail or control data is
// gone), derived (rebuilt from the truth: `rebuild`, `reindex`) or transient (rewritten by a
// running process; meaningless elsewhere). Offsite replication ships exactly the truth;
// backups and `verify` reason by this table. A new entry is added here first.
#pragma once

#include <cstddef>

namespace mailvault::layout {

enum class Kind { kTruth, kDerived, kTransient };

struct Entry {
  const char* name;      // relative to the vault directory
  bool directory;
  Kind kind;
  const char* what;
};

inline constexpr Entry kEntries[] = {
    {"VAULT", false, Kind::kTruth, "the vault's identity, format version and how its key is given (key file or passphrase)"},
    {"keyslot", false, Kind::kTruth, "with a passphrase: the master key wrapped under it (scrypt + AES-256-GCM)"},
    {"packs", true, Kind::kTruth, "append-only packs of encrypted, compressed messages, envelopes and dictionaries (docs/formats.md)"},
    {"state", true, Kind::kTruth, "the control plane's store: users, tokens, tags, jobs, restore journals, the audit chain (control/)"},
    {"catalog", true, Kind::kDerived, "the RocksDB catalog of messages and envelopes; `mailvault rebuild` recreates it from the packs"},
    {"index", true, Kind::kDerived, "the Xapian full-text index; `mailvault reindex` recreates it from the vault"},
    {"offsite", true, Kind::kDerived, "per offsite target: the newest manifest shipped and unfinished uploads; fetched again from the target when lost"},
    {"exports", true, Kind::kTransient, "finished exports waiting to be downloaded; they expire"},
    {"run", true, Kind::kTransient, "a running serve's status file and control socket"},
    {"jobs", true, Kind::kTransient, "pid and cancel files of a restore the command line runs while no serve does"},
    {"lock", false, Kind::kTransient, "the lock one process holds while it has the vault open"},
};

inline constexpr const char* KindName(Kind k) {
  return k == Kind::kTruth ? "truth" : k == Kind::kDerived ? "derived" : "transient";
}

// The entry for a top-level name, or nullptr for a name the vault does not own.
inline const Entry* Find(const char* name) {
  for (const Entry& e : kEntries) {
    const char* a = e.name;
    const char* b = name;
    while (*a && *a == *b) ++a, ++b;
    if (*a == *b) return &e;
  }
  return nullptr;
}

}  // namespace mailvault::layout
