// Running an approved purge (policy/purge.h has the records; docs/purge.md the guide). The
// service runs it as a job of kind purge; `mailvault purge approve` without a service runs it
// in the foreground. Either way, the same steps:
//  1. Under the policy store's freeze (no hold or policy change can come in between), the set
//     in force is evaluated again over the index, and each candidate of the dry run is purged
//     only if it is still purgeable and has no capture the dry run did not see. For each batch
//     the disposition records are written ("intended") before the vault forgets the messages,
//     and marked "purged" after, so a crash leaves no message gone without its record.
//  2. What derives from the messages goes: their tags, their place in restore plans and
//     journals, every export that holds any of them; the index catches up (deleting their
//     documents) and is compacted, so no freed page keeps a word of them.
//  3. The vault shreds: every pack holding them is rewritten without them (vault.h, Shred).
// Each step is idempotent: a job interrupted anywhere (kill -9 included) finishes when resumed.
#pragma once

#include <atomic>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "control/audit.h"
#include "control/records.h"
#include "control/state.h"
#include "core/result.h"
#include "policy/purge.h"
#include "policy/store.h"

namespace mailvault {
class Vault;
}

namespace mailvault::jobs {

class IndexFollower;

struct PurgeEnv {
  Vault* vault = nullptr;
  std::string vault_dir;
  control::StateStore* store = nullptr;
  control::AuditLog* audit = nullptr;
  control::Records* records = nullptr;
  policy::PolicyStore* policies = nullptr;
  std::string exports_dir;           // where API exports are written (their artefacts may hold purged mail)
  IndexFollower* index = nullptr;    // serve's index; null: the command opens the index itself
};

// Runs an approved purge, or resumes one that was interrupted (state running) or failed.
// Progress: (step, done, total). Returns the report stored in the purge record:
// {"purged", "skipped", "skipped_sample": [{"id", "why"}], "exports_deleted", "index": {...},
//  "shred": {...}, "dictionaries": [what Shred did], "dictionaries_at_purge": [what each
//  dictionary was to the purged mail], "timings": {step: seconds}, "seconds"}.
Result<nlohmann::json> RunPurge(const PurgeEnv& env, const std::string& purge_id, const std::atomic<bool>* stop,
                                const std::function<void(const std::string&, uint64_t, uint64_t)>& progress = {});

}  // namespace mailvault::jobs
