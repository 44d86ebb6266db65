#include "policy/store.h"

#include <algorithm>
#include <cstdio>

#include "control/keys.h"

namespace mailvault::policy {
namespace {

using nlohmann::json;

std::string VersionKey(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return std::string(control::kPolicyVersionPrefix) + buf;
}

// Whether period b keeps at least as long as a, from any start. Same kinds of unit compare by
// count (years are twelve months); days against weeks by days; a calendar period (months,
// years) against a fixed one (days, weeks) is checked from every day of a whole 400-year
// Gregorian cycle, which holds every arrangement of month lengths and leap years there is.
bool AtLeast(const Period& b, const Period& a) {
  if (b.forever) return true;
  if (a.forever) return false;
  auto calendar = [](const Period& p) { return p.unit == Period::kMonths || p.unit == Period::kYears; };
  auto months = [](const Period& p) { return static_cast<int64_t>(p.count) * (p.unit == Period::kYears ? 12 : 1); };
  auto days = [](const Period& p) { return static_cast<int64_t>(p.count) * (p.unit == Period::kWeeks ? 7 : 1); };
  if (calendar(a) && calendar(b)) return months(b) >= months(a);
  if (!calendar(a) && !calendar(b)) return days(b) >= days(a);
  constexpr int64_t kCycleDays = 146097;
  for (int64_t day = 0; day < kCycleDays; ++day) {
    const int64_t t = 946684800 + day * 86400;  // from 2000-01-01
    if (b.End(t) < a.End(t)) return false;
  }
  return true;
}

}  // namespace

json PolicySet::ToJson() const {
  json list = json::array();
  for (const Policy& p : policies) list.push_back(p.ToJsonWithEffective());
  return json{{"version", version}, {"saved", saved}, {"saved_by", saved_by}, {"policies", list}};
}

Result<PolicySet> PolicySet::FromJson(const json& j) {
  if (!j.is_object()) return Corruption("a stored policy set is not a JSON object");
  PolicySet s;
  s.version = j.value("version", uint64_t{0});
  s.saved = j.value("saved", int64_t{0});
  s.saved_by = j.value("saved_by", "");
  json written = json::array();
  std::vector<int64_t> effective;
  for (const json& p : j.value("policies", json::array())) {
    json copy = p;
    effective.push_back(copy.value("effective", int64_t{0}));
    copy.erase("effective");
    written.push_back(std::move(copy));
  }
  // Queries were checked when the set was saved; the language may have grown since, not shrunk.
  Result<std::vector<Policy>> parsed = ParsePolicyArray(written);
  if (!parsed.ok()) return Corruption("the stored policy set version " + std::to_string(s.version) + " does not parse: " + parsed.error().message());
  s.policies = std::move(*parsed);
  for (size_t i = 0; i < s.policies.size(); ++i) s.policies[i].effective = effective[i];
  return s;
}

const Policy* PolicySet::Find(const std::string& name) const {
  for (const Policy& p : policies) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

json SetDiff::ToJson() const { return json{{"added", added}, {"removed", removed}, {"changed", changed}}; }

SetDiff Diff(const std::vector<Policy>& before, const std::vector<Policy>& after) {
  SetDiff d;
  for (const Policy& a : after) {
    auto b = std::find_if(before.begin(), before.end(), [&](const Policy& p) { return p.name == a.name; });
    if (b == before.end()) d.added.push_back(a.name);
    else if (!b->SameDefinition(a)) d.changed.push_back(a.name);
  }
  for (const Policy& b : before) {
    if (std::none_of(after.begin(), after.end(), [&](const Policy& p) { return p.name == b.name; })) d.removed.push_back(b.name);
  }
  return d;
}

Status CheckPreserved(const std::vector<Policy>& before, const std::vector<Policy>& after) {
  // An added retention that deletes could outvote a locked one that reviews once both have run
  // out (explicit beats catch-all; weights): refused while any locked retention reviews.
  const bool locked_review = std::any_of(before.begin(), before.end(), [](const Policy& p) {
    return p.kind == Kind::kRetention && p.action == Action::kReview;
  });
  for (const Policy& a : after) {
    const bool added = std::none_of(before.begin(), before.end(), [&](const Policy& p) { return p.name == a.name; });
    if (added && locked_review && a.kind == Kind::kRetention && a.action == Action::kDelete) {
      return FailedPrecondition("the preservation lock is set: the added retention \"" + a.name +
                                "\" deletes, and a locked retention reviews what has run out; add it with \"action\": \"review\"");
    }
  }
  for (const Policy& b : before) {
    if (b.kind == Kind::kTag) continue;
    auto a = std::find_if(after.begin(), after.end(), [&](const Policy& p) { return p.name == b.name; });
    const std::string what = std::string(KindName(b.kind)) + " \"" + b.name + "\"";
    auto refuse = [&](const std::string& why) {
      return FailedPrecondition("the preservation lock is set: " + what + " " + why + "; retentions may only be extended and holds only added");
    };
    if (a == after.end()) return refuse("would be removed");
    if (b.SameDefinition(*a)) continue;
    if (b.kind == Kind::kHold) return refuse("would change");
    // A retention: only longer, wider, or more careful.
    if (a->kind != Kind::kRetention) return refuse("would become a " + std::string(KindName(a->kind)));
    if (!AtLeast(a->keep, b.keep)) return refuse("would keep " + a->keep.ToString() + " instead of " + b.keep.ToString());
    if (a->query != b.query) return refuse("would change its query");
    if (a->from != b.from) return refuse("would count from the " + std::string(FromName(a->from)) + " instead");
    if (b.action == Action::kReview && a->action == Action::kDelete) return refuse("would delete instead of review");
    if (b.retroactive && !a->retroactive) return refuse("would stop applying to mail already stored");
    if (!b.custodians.empty() && !a->custodians.empty()) {
      for (const std::string& c : b.custodians) {
        if (std::find(a->custodians.begin(), a->custodians.end(), c) == a->custodians.end()) {
          return refuse("would no longer cover " + c);
        }
      }
    } else if (b.custodians.empty() && !a->custodians.empty()) {
      return refuse("would cover only some custodians");
    }
    // Weights choose between delete and review (engine.h): a new weight could turn review into delete.
    if (a->weight != b.weight) return refuse("would change its weight");
  }
  return Status::Ok();
}

Result<PolicySet> PolicyStore::Current() const {
  MV_ASSIGN_OR_RETURN(std::optional<std::string> raw, store_->Get(control::kPolicySetKey));
  if (!raw) return PolicySet{};
  json j = json::parse(*raw, nullptr, false);
  if (j.is_discarded()) return Corruption("the stored policy set is not JSON");
  return PolicySet::FromJson(j);
}

Result<std::vector<PolicySet>> PolicyStore::History(size_t limit) const {
  std::vector<PolicySet> out;
  Status failed = Status::Ok();
  MV_RETURN_IF_ERROR(store_->Scan(control::kPolicyVersionPrefix, [&](std::string_view, std::string_view value) {
    json j = json::parse(value, nullptr, false);
    Result<PolicySet> s = j.is_discarded() ? Result<PolicySet>(Corruption("a stored policy version is not JSON")) : PolicySet::FromJson(j);
    if (!s.ok()) {
      failed = s.error();
      return false;
    }
    out.push_back(std::move(*s));
    return true;
  }));
  MV_RETURN_IF_ERROR(failed);
  std::reverse(out.begin(), out.end());
  if (out.size() > limit) out.resize(limit);
  return out;
}

Result<LockState> PolicyStore::Lock() const {
  MV_ASSIGN_OR_RETURN(std::optional<std::string> raw, store_->Get(control::kPolicyLockKey));
  LockState l;
  if (!raw) return l;
  json j = json::parse(*raw, nullptr, false);
  l.locked = true;  // a lock record that does not parse still locks
  if (!j.is_discarded()) {
    l.since = j.value("since", int64_t{0});
    l.by = j.value("by", "");
  }
  return l;
}

Result<PolicySet> PolicyStore::Save(std::vector<Policy> next, const control::Actor& who, int64_t now, const std::string& action,
                                    json details, SetDiff* diff) {
  MV_ASSIGN_OR_RETURN(PolicySet current, Current());
  MV_ASSIGN_OR_RETURN(LockState lock, Lock());
  if (lock.locked) MV_RETURN_IF_ERROR(CheckPreserved(current.policies, next));
  for (Policy& p : next) {
    const Policy* old = current.Find(p.name);
    p.effective = old && old->SameDefinition(p) ? old->effective : now;
  }
  PolicySet s;
  s.version = current.version + 1;
  s.saved = now;
  s.saved_by = who.user;
  s.policies = std::move(next);
  // Whatever is written must read back (FromJson checks the set's limits and names): a hold
  // added to a full set is refused here, not discovered at the next read.
  if (s.policies.size() > kMaxPolicies) {
    return LimitExceeded("a policy set has at most " + std::to_string(kMaxPolicies) + " policies; remove one first");
  }
  if (Result<PolicySet> back = PolicySet::FromJson(s.ToJson()); !back.ok()) {
    return InvalidArgument("the set would not read back: " + back.error().message());
  }
  details["version"] = s.version;
  const SetDiff changes = Diff(current.policies, s.policies);
  details["diff"] = changes.ToJson();
  if (diff) *diff = changes;
  // Audited before it takes effect: a change the trail refuses is not made.
  MV_RETURN_IF_ERROR(audit_->Record(who.Event(action, "policies", std::move(details))));
  const std::string text = s.ToJson().dump();
  MV_RETURN_IF_ERROR(store_->Write({{control::kPolicySetKey, text}, {VersionKey(s.version), text}}));
  return s;
}

Result<PolicySet> PolicyStore::Replace(std::vector<Policy> next, const control::Actor& who, int64_t now, SetDiff* diff) {
  std::lock_guard<std::mutex> l(mu_);
  return Save(std::move(next), who, now, "policy.set", json::object(), diff);
}

Result<PolicySet> PolicyStore::Add(Policy p, const control::Actor& who, int64_t now, const std::string& action) {
  std::lock_guard<std::mutex> l(mu_);
  MV_ASSIGN_OR_RETURN(PolicySet current, Current());
  if (current.Find(p.name)) return FailedPrecondition("a policy named \"" + p.name + "\" exists already");
  std::vector<Policy> next = current.policies;
  const std::string name = p.name;
  next.push_back(std::move(p));
  return Save(std::move(next), who, now, action, json{{"policy", name}});
}

Result<PolicySet> PolicyStore::Remove(const std::string& name, Kind kind, const control::Actor& who, int64_t now,
                                      const std::string& action) {
  std::lock_guard<std::mutex> l(mu_);
  MV_ASSIGN_OR_RETURN(PolicySet current, Current());
  const Policy* p = current.Find(name);
  if (!p || p->kind != kind) return NotFound(std::string("no ") + KindName(kind) + " named \"" + name + "\"");
  std::vector<Policy> next;
  for (const Policy& q : current.policies) {
    if (q.name != name) next.push_back(q);
  }
  return Save(std::move(next), who, now, action, json{{"policy", name}});
}

Result<LockState> PolicyStore::SetLock(const control::Actor& who, int64_t now) {
  std::lock_guard<std::mutex> l(mu_);
  MV_ASSIGN_OR_RETURN(LockState lock, Lock());
  if (lock.locked) return lock;
  MV_RETURN_IF_ERROR(audit_->Record(who.Event("policy.lock", "policies", json::object())));
  MV_RETURN_IF_ERROR(store_->Write({{control::kPolicyLockKey, json{{"since", now}, {"by", who.user}}.dump()}}));
  return LockState{true, now, who.user};
}

}  // namespace mailvault::policy
