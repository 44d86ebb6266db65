#include "policy/engine.h"

#include <time.h>

#include <algorithm>
#include <climits>

namespace mailvault::policy {
namespace {

using nlohmann::json;

std::string Day(int64_t t) {
  if (t == INT64_MAX) return "forever";
  time_t tt = static_cast<time_t>(t);
  struct tm tm;
  char buf[32];
  gmtime_r(&tt, &tm);
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

bool HasCustodian(const Policy& p, const std::string& c) {
  return std::find(p.custodians.begin(), p.custodians.end(), c) != p.custodians.end();
}

}  // namespace

const char* VerdictName(Verdict v) {
  switch (v) {
    case Verdict::kKeep: return "keep";
    case Verdict::kHeld: return "held";
    case Verdict::kReview: return "review";
    case Verdict::kPurgeable: return "purgeable";
  }
  return "?";
}

bool Applies(const Policy& p, bool query_matched, const MessageFacts& m, std::string* why_not) {
  auto no = [&](std::string why) {
    if (why_not) *why_not = std::move(why);
    return false;
  };
  if (!query_matched) return no("its query does not match");
  if (!p.custodians.empty()) {
    bool any = false;
    for (const std::string& c : m.custodians) any |= HasCustodian(p, c);
    if (!any) return no("none of its custodians is a custodian of this message");
  }
  if (!p.retroactive && m.first_capture < p.effective) {
    return no("not retroactive: it came into force " + Day(p.effective) + ", after this message was captured");
  }
  return true;
}

Decision Decide(const std::vector<Policy>& policies, const std::vector<bool>& matched, const MessageFacts& m, int64_t now) {
  Decision d;
  std::vector<bool> applies(policies.size());
  std::vector<std::string> why_not(policies.size());
  std::vector<size_t> retentions, explicit_ones;
  int64_t until = INT64_MIN;  // mail dated before 1970 has retentions that end before 0
  for (size_t i = 0; i < policies.size(); ++i) {
    const Policy& p = policies[i];
    applies[i] = Applies(p, i < matched.size() ? matched[i] : false, m, &why_not[i]);
    if (!applies[i]) continue;
    if (p.kind == Kind::kHold) d.holds.push_back(p.name);  // rule 1
    if (p.kind != Kind::kRetention) continue;
    retentions.push_back(i);
    if (!p.catch_all()) explicit_ones.push_back(i);
    until = std::max(until, p.keep.End(p.from == From::kDate ? m.date : m.first_capture));  // rule 2
  }
  const bool running = !retentions.empty() && now < until;
  // Rule 3: once all have run out, the explicit ones decide (the catch-alls when there are none).
  const std::vector<size_t>& counting = explicit_ones.empty() ? retentions : explicit_ones;
  auto counts = [&](size_t i) {
    return running || std::find(counting.begin(), counting.end(), i) != counting.end();
  };

  for (size_t i = 0; i < policies.size(); ++i) {
    const Policy& p = policies[i];
    if (!applies[i]) {
      d.votes.push_back(Vote{p.name, p.kind, "none", p.weight, false, 0, why_not[i]});
    } else if (p.kind == Kind::kHold) {
      d.votes.push_back(Vote{p.name, p.kind, "keep", p.weight, true, INT64_MAX,
                             "hold" + (p.case_id.empty() ? std::string() : " for case " + p.case_id) + ": kept until released"});
    } else if (p.kind == Kind::kTag) {
      d.votes.push_back(Vote{p.name, p.kind, "abstain", p.weight, false, 0, "tags it \"" + p.tag + "\"; tags do not vote"});
    } else {
      const int64_t base = p.from == From::kDate ? m.date : m.first_capture;
      const int64_t end = p.keep.End(base);
      Vote v{p.name, p.kind, now < end ? "keep" : ActionName(p.action), p.weight, counts(i), end,
             "keep " + p.keep.ToString() + " from the " + (p.from == From::kDate ? "date " : "first capture ") + Day(base) +
                 (now < end ? ": runs until " : ": ran out ") + Day(end)};
      if (!v.counted) v.why += "; not counted: a catch-all, and an explicit retention decides";
      d.votes.push_back(std::move(v));
    }
  }

  if (!d.holds.empty()) {
    d.verdict = Verdict::kHeld;
    d.deciding = d.holds;
    d.reason = "held by " + d.holds.front() + (d.holds.size() > 1 ? " and " + std::to_string(d.holds.size() - 1) + " more" : "");
    return d;
  }
  if (retentions.empty()) {
    d.verdict = Verdict::kKeep;
    d.reason = "no retention covers it: kept";
    return d;
  }
  if (running) {
    d.verdict = Verdict::kKeep;
    d.keep_until = until;
    for (size_t i : retentions) {
      const Policy& p = policies[i];
      if (p.keep.End(p.from == From::kDate ? m.date : m.first_capture) == until) d.deciding.push_back(p.name);
    }
    d.reason = "kept by " + d.deciding.front() + " until " + Day(until) + " (the longest retention wins)";
    return d;
  }
  int64_t del = 0, review = 0;
  bool any_review = false;
  for (size_t i : counting) {
    d.deciding.push_back(policies[i].name);
    if (policies[i].action == Action::kReview) review += policies[i].weight, any_review = true;
    else del += policies[i].weight;
  }
  d.keep_until = 0;
  if (!any_review || del > review) {
    d.verdict = Verdict::kPurgeable;
    d.reason = "every retention ran out by " + Day(until) + " and nothing holds it: purgeable";
  } else {
    d.verdict = Verdict::kReview;
    d.reason = "every retention ran out by " + Day(until) + "; " + (del ? "review outweighs delete" : "a person reviews it") + " (action: review)";
  }
  return d;
}

json Decision::ToJson() const {
  json votes_j = json::array();
  for (const Vote& v : votes) {
    json j{{"policy", v.policy}, {"kind", KindName(v.kind)}, {"vote", v.vote}, {"weight", v.weight}, {"counted", v.counted}, {"why", v.why}};
    if (v.kind == Kind::kRetention && v.vote != "none") j["until"] = Day(v.until);
    votes_j.push_back(std::move(j));
  }
  json j{{"outcome", VerdictName(verdict)}, {"reason", reason}, {"deciding", deciding}, {"votes", votes_j}};
  if (verdict == Verdict::kKeep) j["keep_until"] = Day(keep_until);
  if (!holds.empty()) j["holds"] = holds;
  return j;
}

}  // namespace mailvault::policy
