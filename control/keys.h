// The state store's key space: every prefix, who owns it, and what lives there. One table, so
// that a new feature cannot take a prefix another already uses, and replication and `audit
// verify` can name what they see. Values are sealed (state.h); each owner documents its
// record in docs/api.md or docs/formats.md.
#pragma once

namespace mailvault::control {

// records.h
inline constexpr const char* kUserPrefix = "u/";         // u/<name>            User
inline constexpr const char* kTokenPrefix = "t/";        // t/<sha256(token)>   Token
inline constexpr const char* kTokenIdPrefix = "ti/";     // ti/<id>             -> sha256(token), to revoke by id
inline constexpr const char* kSavedSearchPrefix = "s/";  // s/<id>              SavedSearch
inline constexpr const char* kExportPrefix = "j/";       // j/<id>              ExportJob (the API's exports)
inline constexpr const char* kTagsPrefix = "g/";         // g/<message id>      the message's tags, a JSON array
inline constexpr const char* kTagIndexPrefix = "G/";     // G/<tag>/<msg id>    "" (which messages carry a tag)
inline constexpr const char* kTagChangePrefix = "T/";    // T/<seq, 16 hex>     the ids one tag change touched
// audit.h
inline constexpr const char* kAuditPrefix = "a/";        // a/<seq>             one entry of the hash chain
inline constexpr const char* kAuditHeadKey = "ah";       // the chain's head
// jobs.h
inline constexpr const char* kJobPrefix = "J/";          // J/<job id>          JobRecord, every kind
// policy/store.h: the policy set in force, its versions, the preservation lock
inline constexpr const char* kPolicySetKey = "P/set";        // the set in force (PolicySet JSON)
inline constexpr const char* kPolicyVersionPrefix = "P/v/";  // P/v/<version, 16 hex>  every set ever saved
inline constexpr const char* kPolicyLockKey = "P/lock";      // the preservation lock, once set: never removed
// policy/purge.h: purges (two people), what each would take, and what each took
inline constexpr const char* kPurgePrefix = "U/";            // U/<purge id>         PurgeRecord
inline constexpr const char* kPurgeCandidatePrefix = "Uc/";  // Uc/<purge id>/<msg>  one message the dry run found purgeable
inline constexpr const char* kDispositionPrefix = "Ud/";     // Ud/<purge id>/<msg>  its disposition record: outlives the message
// recovery/restore.h: a restore job's plan and journal
inline constexpr const char* kRestoreHeaderPrefix = "rj/";   // rj/<job>           definition and status
inline constexpr const char* kRestoreTargetPrefix = "rt/";   // rt/<job>/<n>       one mailbox's planned messages
inline constexpr const char* kRestoreOutcomePrefix = "ro/";  // ro/<job>/<n>/<id>  what happened to one message
// state.h: the store's own keys start with a NUL byte ("\0digest"), which no prefix above does.

}  // namespace mailvault::control
