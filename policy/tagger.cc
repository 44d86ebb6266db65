#include "policy/tagger.h"

#include <unordered_set>

#include "policy/engine.h"

namespace mailvault::policy {

Result<TagReport> ApplyTagPolicies(index::Searcher& searcher, control::Records& records, const std::vector<Policy>& policies,
                                   int64_t now, TagCache* cache) {
  TagReport report;
  TagCache local;
  if (!cache) cache = &local;
  for (const Policy& p : policies) {
    if (p.kind != Kind::kTag) continue;
    index::SearchRequest req;
    req.query = p.query.empty() ? "*" : p.query;
    req.limit = 0;
    req.now = now;
    Result<std::vector<std::string>> ids = searcher.MatchingIds(req);
    if (!ids.ok()) return ids.error().With("tag policy \"" + p.name + "\"");
    if (!cache->tagged.count(p.name)) {
      MV_ASSIGN_OR_RETURN(std::vector<std::string> have, records.MessagesTagged(p.tag));
      cache->tagged[p.name] = std::unordered_set<std::string>(have.begin(), have.end());
    }
    std::unordered_set<std::string>& tagged = cache->tagged[p.name];
    std::unordered_set<std::string>& ruled_out = cache->ruled_out[p.name];
    std::vector<std::string> add;
    for (const std::string& id : *ids) {
      if (tagged.count(id) || ruled_out.count(id)) continue;
      if (!p.custodians.empty() || !p.retroactive) {
        // Custodians and the first capture are the document's (engine.h's Applies decides).
        MV_ASSIGN_OR_RETURN(std::optional<index::Searcher::Facts> f, searcher.GetFacts(id));
        if (!f) continue;
        MessageFacts m;
        m.id = id;
        m.date = f->summary.date;
        m.first_capture = f->first_capture ? f->first_capture : f->summary.date;
        m.custodians = f->custodians;
        if (!Applies(p, true, m)) {
          ruled_out.insert(id);
          continue;
        }
      }
      add.push_back(id);
    }
    // In batches: one tag change (a state-store batch and a log entry) per thousand messages.
    for (size_t i = 0; i < add.size(); i += 1000) {
      std::vector<std::string> part(add.begin() + static_cast<std::ptrdiff_t>(i),
                                    add.begin() + static_cast<std::ptrdiff_t>(std::min(add.size(), i + 1000)));
      MV_RETURN_IF_ERROR(records.ChangeTags(part, {p.tag}, {}));
      tagged.insert(part.begin(), part.end());
    }
    report.tagged += add.size();
  }
  return report;
}

}  // namespace mailvault::policy
