// Tag policies at work: every indexed message a tag policy applies to carries the policy's tag
// (control/records.h), so that tag: finds it in every search, the command line's included (the
// index follows the tag log, jobs/indexer.h). serve applies them every few seconds behind its
// indexer, so mail is tagged within seconds of capture; `import` applies them once it has
// indexed. Tags a person removes are given again while the policy applies: the policy is the
// truth for its tag.
#pragma once

#include <cstdint>
#include <vector>

#include "control/records.h"
#include "core/result.h"
#include "indexer/searcher.h"
#include "policy/policy.h"

namespace mailvault::policy {

struct TagReport {
  uint64_t tagged = 0;  // messages given a tag they did not have
};

// Gives each tag policy's tag to every indexed message it applies to and that lacks it. One
// search per tag policy, one batch of tag changes per tag.
Result<TagReport> ApplyTagPolicies(index::Searcher& searcher, control::Records& records, const std::vector<Policy>& policies,
                                   int64_t now);

}  // namespace mailvault::policy
