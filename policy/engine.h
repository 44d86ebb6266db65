// Arbitration: what the policy set decides for one message. Pure (no I/O): the caller says which
// policies' queries match the message and what the message is (policy/evaluate.h asks the
// index); tests drive it with generated sets (tests/policy_test.cc).
//
// Every policy that applies to a message votes, with its weight: a hold and a retention whose
// period has not run out vote keep; a retention whose period has run out votes delete or review
// (its action); a tag policy abstains. Fixed rules come first, and no weight overrides them:
//   1. Any hold keeps, whatever the weights.
//   2. Among retentions the longest wins: the message is kept while any retention that applies
//      to it runs. With single-instance storage there is one copy for all its custodians, so a
//      retention that applies through one custodian keeps it for all: kept for one is kept.
//   3. Explicit beats catch-all: once every retention has run out, what happens is decided by
//      the retentions with a query or custodians; the catch-all ones (neither) count only when
//      no explicit one applies.
// Weights decide what the rules leave open: among the retentions that count, delete only when
// delete's votes outweigh review's (a tie is review, the careful choice; with no review vote it
// is delete). A message that no retention covers is kept: an archive keeps what nothing lets go.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "policy/policy.h"

namespace mailvault::policy {

// What arbitration needs to know of a message.
struct MessageFacts {
  std::string id;                       // hex
  int64_t date = 0;                     // the Date header; the first capture when there is none (seconds, UTC)
  int64_t first_capture = 0;            // seconds, UTC
  uint64_t size = 0;                    // bytes as received
  std::vector<std::string> custodians;  // normalised; empty: nobody's in particular
};

enum class Verdict {
  kKeep,       // a retention (or nothing) keeps it; keep_until says how long
  kHeld,       // a hold keeps it, however long retentions say
  kReview,     // run out, and a person should decide (action: review)
  kPurgeable,  // run out in every lane, no hold: a purge may take it
};
const char* VerdictName(Verdict v);  // "keep", "held", "review", "purgeable"

struct Vote {
  std::string policy;
  Kind kind = Kind::kRetention;
  std::string vote;         // "keep", "delete", "review", "abstain", or "none" (the policy does not apply)
  int weight = 0;
  bool counted = false;     // false: a vote that does not apply, or a catch-all's once an explicit retention decides
  int64_t until = 0;        // a retention's end (INT64_MAX: forever)
  std::string why;          // in words, for `policy explain`
};

struct Decision {
  Verdict verdict = Verdict::kKeep;
  int64_t keep_until = INT64_MAX;   // kKeep: when the last retention runs out (INT64_MAX: forever)
  std::vector<std::string> holds;   // kHeld: the holds that keep it
  std::vector<std::string> deciding;  // the policies whose votes decided
  std::vector<Vote> votes;          // every policy, in set order (per lane for retentions)
  std::string reason;               // one line
  nlohmann::json ToJson() const;
};

// matched[i]: whether policies[i]'s query matches the message (true for an empty query). A
// policy applies when its query matches, its custodians (if any) include one of the message's,
// and it is retroactive or the message was first captured at or after it came into force.
Decision Decide(const std::vector<Policy>& policies, const std::vector<bool>& matched, const MessageFacts& m, int64_t now);

// Whether policy p applies to the message at all (the test of Decide above), and why not.
bool Applies(const Policy& p, bool query_matched, const MessageFacts& m, std::string* why_not = nullptr);

}  // namespace mailvault::policy
