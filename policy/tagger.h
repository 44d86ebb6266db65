// Tag policies at work: every indexed message a tag policy applies to carries the policy's tag
// (control/records.h), so that tag: finds it in every search, the command line's included (the
// index follows the tag log, jobs/indexer.h). serve applies them every few seconds behind its
// indexer, so mail is tagged within seconds of capture; `import` applies them once it has
// indexed. Tags a person removes are given again while the policy applies: the policy is the
// truth for its tag (serve: within minutes, when its TagCache is renewed).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_set>
#include <vector>

#include "control/records.h"
#include "core/result.h"
#include "indexer/searcher.h"
#include "policy/policy.h"

namespace mailvault::policy {

struct TagReport {
  uint64_t tagged = 0;  // messages given a tag they did not have
};

// What a caller that applies the same set again and again (serve's tagger, every few seconds)
// keeps between passes, so that a pass costs what is new rather than the whole vault: per
// policy, the messages known to carry its tag (read from the records once) and those its
// custodians or start ruled out (their documents are not read again). A set with other
// policies needs a fresh cache; renewing it now and then picks up tags a person removed and
// custodians a later capture added.
struct TagCache {
  std::map<std::string, std::unordered_set<std::string>> tagged, ruled_out;  // by policy name
};

// Gives each tag policy's tag to every indexed message it applies to and that lacks it. One
// search per tag policy, one batch of tag changes per tag. cache: optional (above).
Result<TagReport> ApplyTagPolicies(index::Searcher& searcher, control::Records& records, const std::vector<Policy>& policies,
                                   int64_t now, TagCache* cache = nullptr);

}  // namespace mailvault::policy
