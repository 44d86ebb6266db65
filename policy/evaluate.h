// A policy set applied to the whole vault, through the index: which messages each policy's
// query matches (one search per policy), and each message's date, size, custodians and first
// capture (Searcher::ForEachFacts), arbitrated message by message (engine.h). What-if runs a
// draft set this way without saving it; the purge's dry run runs the set in force.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/result.h"
#include "indexer/searcher.h"
#include "policy/engine.h"
#include "policy/policy.h"

namespace mailvault::policy {

// Checks a policy's query with the query language's own parser (no index needed).
QueryCheck QueryLanguageCheck();

struct PolicyCount {
  uint64_t applies = 0;     // messages it applies to
  uint64_t purgeable = 0;   // of those, purgeable with it among the deciding policies
  uint64_t held = 0;        // kept by it (a hold)
  uint64_t bytes_purgeable = 0;
};

struct Impact {
  uint64_t messages = 0, purgeable = 0, purgeable_bytes = 0, held = 0, review = 0, kept = 0;
  std::map<std::string, PolicyCount> by_policy;  // every policy of the set, by name
  std::vector<std::string> sample;               // up to kSampleIds purgeable ids
  std::map<std::string, uint64_t> custodians;    // purgeable messages per custodian ("" : none)
  // {"messages", "purgeable", "purgeable_bytes", "held", "review", "kept", "by_policy": {NAME:
  //  {"applies", "purgeable", "purgeable_bytes", "held"}}, "sample", "custodians"}
  nlohmann::json ToJson() const;
};
inline constexpr size_t kSampleIds = 20;

// Evaluates `policies` over every indexed message at `now`; each(facts, decision) for every
// message when given. The index must be level with the vault (the caller checks its lag).
Result<Impact> Evaluate(index::Searcher& searcher, const std::vector<Policy>& policies, int64_t now,
                        const std::function<void(const MessageFacts&, const Decision&)>& each = {});

// The decision for one message, with every vote; kNotFound when it is not indexed.
Result<Decision> Explain(index::Searcher& searcher, const std::vector<Policy>& policies, const std::string& hex_id,
                         int64_t now);

// What-if: a draft set evaluated beside the set in force, message by message. The draft's
// impact (Impact::ToJson) plus "changes": {"newly_purgeable", "no_longer_purgeable",
// "newly_held", "no_longer_held", "newly_review"} and "current": the set in force's impact.
Result<nlohmann::json> WhatIf(index::Searcher& searcher, const std::vector<Policy>& draft, const std::vector<Policy>& current,
                              int64_t now);

}  // namespace mailvault::policy
