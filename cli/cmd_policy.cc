// policy set|list|show|history|explain|what-if|lock, and hold place|release|list: retention,
// legal holds and tags as data (policy/, docs/policy.md). Changes are on the audit trail under
// the shell user; while serve runs they go through it (its one policy store).
#include <chrono>
#include <climits>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/shell_state.h"
#include "core/file_util.h"
#include "core/text.h"
#include "indexer/searcher.h"
#include "policy/evaluate.h"
#include "policy/store.h"

namespace mailvault::cli {
namespace {

using nlohmann::json;
using policy::Policy;
using policy::PolicySet;
using policy::PolicyStore;

int64_t Now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// The service's policy store while serve runs (one writer for the whole process), else one
// over the state store this command opened.
struct Policies {
  ShellState state;
  std::unique_ptr<PolicyStore> own;
  PolicyStore* store = nullptr;
};

// The global options resolved too: every command here starts with this.
Result<Policies> OpenPolicies(GlobalOptions& g) {
  MV_RETURN_IF_ERROR(ResolveGlobalOptions(&g));
  Policies p;
  MV_ASSIGN_OR_RETURN(p.state, OpenShellState(g, "while `mailvault serve` runs, policies change through it"));
  if (const ServiceResources* svc = Service(); svc && svc->policies) {
    p.store = svc->policies;
  } else {
    p.own = std::make_unique<PolicyStore>(p.state.store.get(), p.state.audit.get());
    p.store = p.own.get();
  }
  return p;
}

Result<std::vector<Policy>> ReadPolicyFile(const std::string& file) {
  MV_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(UserPath(file), policy::kMaxSetBytes));
  Result<std::vector<Policy>> set = policy::ParsePolicySet(text, policy::QueryLanguageCheck());
  if (!set.ok()) return set.error().With(file);
  return set;
}

// The index the numbers come from, and how far it is behind the vault (the caller says so).
Result<std::unique_ptr<index::Searcher>> OpenIndex(GlobalOptions& g, const Vault& vault) {
  MV_ASSIGN_OR_RETURN(std::unique_ptr<index::Searcher> s, index::Searcher::Open(g.vault_dir));
  const uint64_t applied = s->Info().applied_change, last = vault.last_change();
  if (applied < last) {
    Err() << "mailvault: warning: the index is " << (last - applied)
          << " changes behind the vault; these numbers cover what it holds (`mailvault index run` brings it level)\n";
  }
  return s;
}

std::string Scope(const Policy& p) {
  std::string out;
  if (!p.query.empty()) out = "query " + p.query;
  if (!p.custodians.empty()) {
    if (!out.empty()) out += "; ";
    out += "custodians ";
    for (size_t i = 0; i < p.custodians.size(); ++i) out += (i ? "," : "") + p.custodians[i];
  }
  return out.empty() ? "every message" : out;
}

std::string Line(const Policy& p) {
  std::string what;
  switch (p.kind) {
    case policy::Kind::kRetention:
      what = "keep " + p.keep.ToString() + " from " + policy::FromName(p.from) + ", then " + policy::ActionName(p.action);
      break;
    case policy::Kind::kHold: what = p.case_id.empty() ? "hold" : "hold for case " + p.case_id; break;
    case policy::Kind::kTag: what = "tag " + p.tag; break;
  }
  std::string line = p.name + "  " + policy::KindName(p.kind) + "  " + what + "  (" + Scope(p) + ")";
  if (p.weight) line += "  weight " + std::to_string(p.weight);
  if (!p.retroactive) line += "  from " + FormatDate(p.effective) + " on";
  return line;
}

void PrintSaved(const PolicySet& s, const policy::SetDiff& d) {
  auto names = [](const std::vector<std::string>& v) {
    std::string out;
    for (const std::string& n : v) out += (out.empty() ? "" : ", ") + n;
    return out.empty() ? std::string("none") : out;
  };
  Out() << "policy set version " << s.version << " in force: " << s.policies.size() << " policies; added " << names(d.added)
        << "; removed " << names(d.removed) << "; changed " << names(d.changed) << "\n";
}

void PrintImpact(const json& j) {
  Out() << "messages:   " << j["messages"] << "\n"
        << "purgeable:  " << j["purgeable"] << " (" << FormatBytes(j["purgeable_bytes"].get<uint64_t>()) << ")\n"
        << "held:       " << j["held"] << "\n"
        << "review:     " << j["review"] << "\n"
        << "kept:       " << j["kept"] << "\n";
  for (const auto& [name, c] : j["by_policy"].items()) {
    Out() << "  " << name << ": applies to " << c["applies"] << ", purgeable " << c["purgeable"] << ", held " << c["held"] << "\n";
  }
  if (j.contains("changes")) {
    const json& c = j["changes"];
    Out() << "against the set in force: " << c["newly_purgeable"] << " newly purgeable, " << c["no_longer_purgeable"]
          << " no longer purgeable, " << c["newly_held"] << " newly held, " << c["no_longer_held"] << " no longer held, "
          << c["newly_review"] << " newly for review\n";
  }
}

}  // namespace

void AddPolicyCommands(CLI::App& app, GlobalOptions& g, int* exit_code) {
  auto* pol = app.add_subcommand("policy", "retention, legal hold and tag policies: set, list, show, history, explain, what-if, lock");
  pol->require_subcommand(1);
  thread_local std::string file, name, id;
  file = {}; name = {}; id = {};
  thread_local bool as_json = false, yes = false;
  as_json = false; yes = false;
  auto fail = [exit_code](const Error& e) { *exit_code = Fail(e); };

  auto* set = pol->add_subcommand("set", "replace the whole policy set with a JSON array (validated as a whole)");
  set->add_option("FILE", file, "the set: a JSON array of policies (docs/policy.md)")->required();
  set->callback([&g, fail] {
    Result<std::vector<Policy>> next = ReadPolicyFile(file);
    if (!next.ok()) return fail(next.error());
    Result<Policies> p = OpenPolicies(g);
    if (!p.ok()) return fail(p.error());
    policy::SetDiff diff;
    Result<PolicySet> saved = p->store->Replace(std::move(*next), ShellActor(), Now(), &diff);
    if (!saved.ok()) return fail(saved.error());
    PrintSaved(*saved, diff);
  });

  auto* list = pol->add_subcommand("list", "the policies in force");
  list->add_flag("--json", as_json, "the set as JSON (with version, and each policy's effective time)");
  list->callback([&g, fail] {
    Result<Policies> p = OpenPolicies(g);
    if (!p.ok()) return fail(p.error());
    Result<PolicySet> s = p->store->Current();
    if (!s.ok()) return fail(s.error());
    Result<policy::LockState> lock = p->store->Lock();
    if (!lock.ok()) return fail(lock.error());
    if (as_json) {
      json j = s->ToJson();
      j["locked"] = lock->locked;
      Out() << j.dump(2) << "\n";
      return;
    }
    if (s->policies.empty()) Out() << "no policies: everything is kept\n";
    for (const Policy& q : s->policies) Out() << Line(q) << "\n";
    if (s->version) Out() << "version " << s->version << ", saved " << FormatDate(s->saved) << " by " << s->saved_by << "\n";
    if (lock->locked) Out() << "preservation lock set " << FormatDate(lock->since) << " by " << lock->by << "\n";
  });

  auto* show = pol->add_subcommand("show", "one policy");
  show->add_option("NAME", name, "the policy")->required();
  show->add_flag("--json", as_json, "as JSON");
  show->callback([&g, fail] {
    Result<Policies> p = OpenPolicies(g);
    if (!p.ok()) return fail(p.error());
    Result<PolicySet> s = p->store->Current();
    if (!s.ok()) return fail(s.error());
    const Policy* q = s->Find(name);
    if (!q) return fail(NotFound("no policy named \"" + name + "\" (see `mailvault policy list`)"));
    if (as_json) {
      Out() << q->ToJsonWithEffective().dump(2) << "\n";
      return;
    }
    Out() << Line(*q) << "\n" << "in force since " << FormatDate(q->effective) << " (version " << s->version << ")\n";
  });

  auto* history = pol->add_subcommand("history", "every version of the set, newest first");
  history->add_flag("--json", as_json, "as JSON");
  history->callback([&g, fail] {
    Result<Policies> p = OpenPolicies(g);
    if (!p.ok()) return fail(p.error());
    Result<std::vector<PolicySet>> h = p->store->History(1000);
    if (!h.ok()) return fail(h.error());
    json list = json::array();
    for (const PolicySet& s : *h) list.push_back(s.ToJson());
    if (as_json) {
      Out() << list.dump(2) << "\n";
      return;
    }
    if (h->empty()) Out() << "no policy set was ever saved\n";
    for (const PolicySet& s : *h) {
      Out() << "version " << s.version << "  " << FormatDate(s.saved) << "  " << s.saved_by << "  " << s.policies.size() << " policies\n";
    }
  });

  auto* explain = pol->add_subcommand("explain", "every policy's vote on one message, and the outcome");
  explain->add_option("ID", id, "the message (its id, or a unique prefix of it)")->required();
  explain->add_flag("--json", as_json, "as JSON");
  explain->callback([&g, fail] {
    Result<Policies> p = OpenPolicies(g);
    if (!p.ok()) return fail(p.error());
    Result<ObjectId> oid = p->state.vault->Resolve(id);
    if (!oid.ok()) return fail(oid.error());
    Result<PolicySet> s = p->store->Current();
    if (!s.ok()) return fail(s.error());
    Result<std::unique_ptr<index::Searcher>> searcher = OpenIndex(g, *p->state.vault);
    if (!searcher.ok()) return fail(searcher.error());
    Result<policy::Decision> d = policy::Explain(**searcher, s->policies, oid->Hex(), Now());
    if (!d.ok()) return fail(d.error());
    if (as_json) {
      json j = d->ToJson();
      j["id"] = oid->Hex();
      j["version"] = s->version;
      Out() << j.dump(2) << "\n";
      return;
    }
    Out() << oid->Hex() << ": " << policy::VerdictName(d->verdict) << ": " << d->reason << "\n";
    for (const policy::Vote& v : d->votes) {
      Out() << "  " << v.policy << " (" << policy::KindName(v.kind) << ", weight " << v.weight << "): " << v.vote
            << (v.counted || v.vote == "none" || v.vote == "abstain" ? "" : " (not counted)") << ": " << v.why << "\n";
    }
  });

  auto* whatif = pol->add_subcommand("what-if", "evaluate a draft set against the whole vault without saving it");
  whatif->add_option("FILE", file, "the draft set")->required();
  whatif->add_flag("--json", as_json, "as JSON: {\"purgeable\", \"purgeable_bytes\", \"held\", \"by_policy\", \"changes\", ...}");
  whatif->callback([&g, fail] {
    Result<std::vector<Policy>> draft = ReadPolicyFile(file);
    if (!draft.ok()) return fail(draft.error());
    Result<Policies> p = OpenPolicies(g);
    if (!p.ok()) return fail(p.error());
    Result<PolicySet> current = p->store->Current();
    if (!current.ok()) return fail(current.error());
    // A draft policy that is the same as one in force keeps its time; a new one would start now.
    const int64_t now = Now();
    for (Policy& q : *draft) {
      const Policy* old = current->Find(q.name);
      q.effective = old && old->SameDefinition(q) ? old->effective : now;
    }
    Result<std::unique_ptr<index::Searcher>> searcher = OpenIndex(g, *p->state.vault);
    if (!searcher.ok()) return fail(searcher.error());
    Result<json> j = policy::WhatIf(**searcher, *draft, current->policies, now);
    if (!j.ok()) return fail(j.error());
    if (Status a = AuditShell(p->state, "policy.what-if", "policies",
                              json{{"purgeable", (*j)["purgeable"]}, {"held", (*j)["held"]}, {"policies", draft->size()}});
        !a.ok()) {
      return fail(a.error());
    }
    if (as_json) Out() << j->dump(2) << "\n";
    else PrintImpact(*j);
  });

  auto* lock = pol->add_subcommand("lock", "set the preservation lock: from now on retentions can only be extended and holds only added; it cannot be lifted");
  lock->add_flag("--yes", yes, "yes, for good (the lock has no undo)");
  lock->callback([&g, fail] {
    if (!yes) return fail(InvalidArgument("the preservation lock cannot be lifted, by anyone; run `mailvault policy lock --yes` to set it"));
    Result<Policies> p = OpenPolicies(g);
    if (!p.ok()) return fail(p.error());
    Result<policy::LockState> l = p->store->SetLock(ShellActor(), Now());
    if (!l.ok()) return fail(l.error());
    Out() << "preservation lock set " << FormatDate(l->since) << " by " << l->by << "\n";
  });

  // ---- hold ----
  auto* hold = app.add_subcommand("hold", "legal holds: place, release, list (holds are policies of kind hold)");
  hold->require_subcommand(1);
  thread_local std::string case_id, query;
  case_id = {}; query = {};
  thread_local std::vector<std::string> custodians;
  custodians = {};
  auto* place = hold->add_subcommand("place", "place a hold: kept, whatever retentions say, until it is released");
  place->add_option("NAME", name, "the hold's name (a-z, 0-9, . _ -)")->required();
  place->add_option("--case", case_id, "the legal matter");
  place->add_option("--custodian", custodians, "hold this custodian's mail (repeatable)");
  place->add_option("--query", query, "hold the messages this query matches (with --custodian: both must match)");
  place->callback([&g, fail] {
    json j{{"name", name}, {"kind", "hold"}};
    if (!case_id.empty()) j["case"] = case_id;
    if (!custodians.empty()) j["custodians"] = custodians;
    if (!query.empty()) j["query"] = query;
    Result<Policy> h = policy::ParsePolicy(j, 0, policy::QueryLanguageCheck());
    if (!h.ok()) return fail(h.error());
    Result<Policies> p = OpenPolicies(g);
    if (!p.ok()) return fail(p.error());
    Result<PolicySet> saved = p->store->Add(*h, ShellActor(), Now(), "hold.place");
    if (!saved.ok()) return fail(saved.error());
    Out() << "hold " << name << " placed (" << Scope(*h) << "); policy set version " << saved->version << "\n";
  });
  auto* release = hold->add_subcommand("release", "release a hold (refused under the preservation lock)");
  release->add_option("NAME", name, "the hold")->required();
  release->callback([&g, fail] {
    Result<Policies> p = OpenPolicies(g);
    if (!p.ok()) return fail(p.error());
    Result<PolicySet> saved = p->store->Remove(name, policy::Kind::kHold, ShellActor(), Now(), "hold.release");
    if (!saved.ok()) return fail(saved.error());
    Out() << "hold " << name << " released; policy set version " << saved->version << "\n";
  });
  auto* holds = hold->add_subcommand("list", "the holds in force");
  holds->add_flag("--json", as_json, "as JSON");
  holds->callback([&g, fail] {
    Result<Policies> p = OpenPolicies(g);
    if (!p.ok()) return fail(p.error());
    Result<PolicySet> s = p->store->Current();
    if (!s.ok()) return fail(s.error());
    json list = json::array();
    for (const Policy& q : s->policies) {
      if (q.kind == policy::Kind::kHold) list.push_back(q.ToJsonWithEffective());
    }
    if (as_json) {
      Out() << list.dump(2) << "\n";
      return;
    }
    if (list.empty()) Out() << "no holds\n";
    for (const Policy& q : s->policies) {
      if (q.kind == policy::Kind::kHold) Out() << Line(q) << "  since " << FormatDate(q.effective) << "\n";
    }
  });
}

}  // namespace mailvault::cli
