// Policies as data (BLUEPRINT decision 8): what the vault keeps, holds, tags and may purge.
// A policy set is a JSON array of policies, replaced as a whole (`mailvault policy set FILE`,
// PUT /api/v1/policies), validated as a whole, versioned in the control plane (policy/store.h)
// and on the audit trail. docs/policy.md is the guide; this file is the format.
//
//   {"name": "finance-7y", "kind": "retention", "query": "from:(cfo@corp.example)",
//    "custodians": ["cfo@corp.example"], "keep": "7y", "from": "date", "action": "delete",
//    "weight": 10, "retroactive": true}
//   {"name": "case-4711", "kind": "hold", "case": "4711", "custodians": ["ceo@corp.example"]}
//   {"name": "spam", "kind": "tag", "tag": "spam", "query": "subject:(viagra OR mortgage)"}
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace mailvault::policy {

enum class Kind { kRetention, kHold, kTag };
// Where a retention period is counted from: the Date header (the first capture time when a
// message has none), or the first capture.
enum class From { kDate, kCapture };
// What a retention asks for once its period has run out.
enum class Action { kDelete, kReview };

const char* KindName(Kind k);      // "retention", "hold", "tag"
const char* FromName(From f);      // "date", "capture"
const char* ActionName(Action a);  // "delete", "review"

// A calendar period: "30d", "6w", "18mo", "7y", or forever. Counted in calendar terms in UTC
// (7y from 2002-08-28 runs out on 2009-08-28; from a 29 February, on 28 February).
struct Period {
  enum Unit { kDays, kWeeks, kMonths, kYears } unit = kDays;
  uint32_t count = 0;
  bool forever = false;
  // "30d", "forever", … as it is written.
  std::string ToString() const;
  // The first second at which a period that started at `start` (seconds, UTC) has run out;
  // INT64_MAX for forever.
  int64_t End(int64_t start) const;
  bool operator==(const Period&) const = default;
};
// Parses "30d", "6w", "18mo", "7y" (1 to 200 years in all) or "forever".
Result<Period> ParsePeriod(std::string_view text);

// Longest names, queries, lists: a set is reviewed by people and travels in JSON.
inline constexpr size_t kMaxPolicies = 1000;
inline constexpr size_t kMaxNameBytes = 64;        // [a-z0-9][a-z0-9._-]*
inline constexpr size_t kMaxQueryBytes = 4096;
inline constexpr size_t kMaxCustodians = 1000;
inline constexpr size_t kMaxSetBytes = 4 << 20;    // the JSON text of a whole set
inline constexpr int kMaxSetDepth = 4;             // array > policy > custodians > address
inline constexpr int kMaxWeight = 1000000;

struct Policy {
  std::string name;
  Kind kind = Kind::kRetention;
  std::string query;                    // the query language (docs/query-language.md); empty: every message
  std::vector<std::string> custodians;  // normalised addresses; with a query, both must match
  Period keep;                          // retention: how long (holds keep forever; tags keep nothing)
  From from = From::kDate;
  Action action = Action::kDelete;
  int weight = 0;                       // its vote's weight (policy/engine.h)
  bool retroactive = true;              // false: only mail captured at or after `effective`
  std::string case_id;                  // holds: the legal matter ("case")
  std::string tag;                      // tags: the tag given (default: the policy's name; control::ValidTag)
  // Set by the store, not by the author: when this policy, as it is written, came into force
  // (seconds, UTC). A changed policy is a new one.
  int64_t effective = 0;

  // A policy with no query and no custodians: it covers every message (a default). Explicit
  // policies beat catch-all ones among retentions (engine.h).
  bool catch_all() const { return query.empty() && custodians.empty(); }
  // The policy as its author writes it (no "effective"); WithEffective adds it.
  nlohmann::json ToJson() const;
  nlohmann::json ToJsonWithEffective() const;
  // The same policy as written, ignoring when it came into force.
  bool SameDefinition(const Policy& o) const;
};

// Checks a query before a set is accepted; returns an error naming what is wrong (the query
// language's parser, policy/evaluate.h supplies it). Null: queries are not checked.
using QueryCheck = std::function<Status(const std::string& query)>;

// Parses and validates a whole set. Refused whole, with the position of the first error:
// "policy 3 (\"finance-7y\"): \"keep\": …", or "line 4, column 12: …" for JSON that does not
// parse. Checked: unknown kinds, fields and values, bad periods, queries that do not parse,
// duplicate names, a hold with no scope (no query, custodian or case), a retention with no
// `keep`, limits above. `effective` is not read (stored sets use ParseStoredSet).
Result<std::vector<Policy>> ParsePolicySet(std::string_view json_text, const QueryCheck& check_query = {});
Result<std::vector<Policy>> ParsePolicyArray(const nlohmann::json& array, const QueryCheck& check_query = {});

// One policy as its author wrote it (the fields of a set entry); the index is for messages.
Result<Policy> ParsePolicy(const nlohmann::json& j, size_t index, const QueryCheck& check_query = {});

}  // namespace mailvault::policy
