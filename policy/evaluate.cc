#include "policy/evaluate.h"

#include <unordered_set>

#include "indexer/query.h"

namespace mailvault::policy {
namespace {

using nlohmann::json;

// Which messages each policy's query matches: one search per policy with a query.
struct Matcher {
  std::vector<std::unordered_set<std::string>> sets;
  std::vector<bool> everything;  // an empty query

  static Result<Matcher> Build(index::Searcher& searcher, const std::vector<Policy>& policies, int64_t now) {
    Matcher m;
    m.sets.resize(policies.size());
    m.everything.resize(policies.size());
    for (size_t i = 0; i < policies.size(); ++i) {
      if (policies[i].query.empty()) {
        m.everything[i] = true;
        continue;
      }
      index::SearchRequest req;
      req.query = policies[i].query;
      req.limit = 0;
      req.now = now;
      Result<std::vector<std::string>> ids = searcher.MatchingIds(req);
      if (!ids.ok()) return ids.error().With("policy \"" + policies[i].name + "\"");
      m.sets[i].insert(ids->begin(), ids->end());
    }
    return m;
  }
  std::vector<bool> For(const std::string& id) const {
    std::vector<bool> out(sets.size());
    for (size_t i = 0; i < sets.size(); ++i) out[i] = everything[i] || sets[i].count(id) > 0;
    return out;
  }
};

MessageFacts FromIndex(const index::Searcher::Facts& f) {
  MessageFacts m;
  m.id = f.summary.id;
  m.date = f.summary.date;
  // Indexes built before the first capture was kept: the date is the closest the index knows
  // (it is the first capture for mail without a Date header). `reindex` fills it in.
  m.first_capture = f.first_capture ? f.first_capture : f.summary.date;
  m.size = f.summary.size;
  m.custodians = f.custodians;
  return m;
}

void Count(Impact* impact, const std::vector<Policy>& policies, const MessageFacts& m, const Decision& d) {
  ++impact->messages;
  for (const Vote& v : d.votes) {
    if (v.vote == "none") continue;
    PolicyCount& c = impact->by_policy[v.policy];
    ++c.applies;
  }
  switch (d.verdict) {
    case Verdict::kHeld:
      ++impact->held;
      for (const std::string& h : d.holds) ++impact->by_policy[h].held;
      break;
    case Verdict::kReview: ++impact->review; break;
    case Verdict::kKeep: ++impact->kept; break;
    case Verdict::kPurgeable:
      ++impact->purgeable;
      impact->purgeable_bytes += m.size;
      for (const std::string& n : d.deciding) {
        ++impact->by_policy[n].purgeable;
        impact->by_policy[n].bytes_purgeable += m.size;
      }
      if (impact->sample.size() < kSampleIds) impact->sample.push_back(m.id);
      if (m.custodians.empty()) ++impact->custodians[""];
      for (const std::string& c : m.custodians) ++impact->custodians[c];
      break;
  }
  (void)policies;
}

Impact EmptyImpact(const std::vector<Policy>& policies) {
  Impact i;
  for (const Policy& p : policies) i.by_policy[p.name];
  return i;
}

}  // namespace

QueryCheck QueryLanguageCheck() {
  return [](const std::string& q) -> Status {
    Result<Xapian::Query> parsed = index::ParseQuery(q, 0);
    if (!parsed.ok()) return parsed.error();
    return Status::Ok();
  };
}

json Impact::ToJson() const {
  json per = json::object();
  for (const auto& [name, c] : by_policy) {
    per[name] = json{{"applies", c.applies}, {"purgeable", c.purgeable}, {"purgeable_bytes", c.bytes_purgeable}, {"held", c.held}};
  }
  json cust = json::object();
  for (const auto& [c, n] : custodians) cust[c.empty() ? "(none)" : c] = n;
  return json{{"messages", messages}, {"purgeable", purgeable}, {"purgeable_bytes", purgeable_bytes},
              {"held", held},         {"review", review},       {"kept", kept},
              {"by_policy", per},     {"sample", sample},       {"custodians", cust}};
}

Result<Impact> Evaluate(index::Searcher& searcher, const std::vector<Policy>& policies, int64_t now,
                        const std::function<void(const MessageFacts&, const Decision&)>& each) {
  MV_ASSIGN_OR_RETURN(Matcher matcher, Matcher::Build(searcher, policies, now));
  Impact impact = EmptyImpact(policies);
  MV_RETURN_IF_ERROR(searcher.ForEachFacts([&](const index::Searcher::Facts& f) {
    MessageFacts m = FromIndex(f);
    Decision d = Decide(policies, matcher.For(m.id), m, now);
    Count(&impact, policies, m, d);
    if (each) each(m, d);
    return true;
  }));
  return impact;
}

Result<Decision> Explain(index::Searcher& searcher, const std::vector<Policy>& policies, const std::string& hex_id, int64_t now) {
  MV_ASSIGN_OR_RETURN(std::optional<index::Searcher::Facts> f, searcher.GetFacts(hex_id));
  if (!f) return NotFound("message " + hex_id + " is not in the index (is the id whole? `mailvault index status`)");
  MessageFacts m = FromIndex(*f);
  std::vector<bool> matched(policies.size());
  for (size_t i = 0; i < policies.size(); ++i) {
    if (policies[i].query.empty()) {
      matched[i] = true;
      continue;
    }
    index::SearchRequest req;
    req.query = policies[i].query;
    req.now = now;
    Result<bool> r = searcher.Matches(hex_id, req);
    if (!r.ok()) return r.error().With("policy \"" + policies[i].name + "\"");
    matched[i] = *r;
  }
  return Decide(policies, matched, m, now);
}

Result<json> WhatIf(index::Searcher& searcher, const std::vector<Policy>& draft, const std::vector<Policy>& current, int64_t now) {
  MV_ASSIGN_OR_RETURN(Matcher md, Matcher::Build(searcher, draft, now));
  MV_ASSIGN_OR_RETURN(Matcher mc, Matcher::Build(searcher, current, now));
  Impact a = EmptyImpact(draft), b = EmptyImpact(current);
  uint64_t newly_purgeable = 0, no_longer_purgeable = 0, newly_held = 0, no_longer_held = 0, newly_review = 0;
  MV_RETURN_IF_ERROR(searcher.ForEachFacts([&](const index::Searcher::Facts& f) {
    MessageFacts m = FromIndex(f);
    Decision da = Decide(draft, md.For(m.id), m, now), db = Decide(current, mc.For(m.id), m, now);
    Count(&a, draft, m, da);
    Count(&b, current, m, db);
    const bool pa = da.verdict == Verdict::kPurgeable, pb = db.verdict == Verdict::kPurgeable;
    const bool ha = da.verdict == Verdict::kHeld, hb = db.verdict == Verdict::kHeld;
    newly_purgeable += pa && !pb;
    no_longer_purgeable += pb && !pa;
    newly_held += ha && !hb;
    no_longer_held += hb && !ha;
    newly_review += da.verdict == Verdict::kReview && db.verdict != Verdict::kReview;
    return true;
  }));
  json j = a.ToJson();
  j["changes"] = json{{"newly_purgeable", newly_purgeable}, {"no_longer_purgeable", no_longer_purgeable},
                      {"newly_held", newly_held},           {"no_longer_held", no_longer_held},
                      {"newly_review", newly_review}};
  j["current"] = b.ToJson();
  return j;
}

}  // namespace mailvault::policy
