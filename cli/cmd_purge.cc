// purge propose|list|show|approve|cancel|dispositions: the two-person purge (policy/purge.h,
// jobs/purge.h, docs/purge.md). While serve runs these go through it and an approved purge is
// one of its jobs; without it, `purge approve` runs the purge in the foreground.
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "api/config.h"
#include "cli/shell_state.h"
#include "core/text.h"
#include "indexer/searcher.h"
#include "jobs/purge.h"
#include "jobs/runner.h"
#include "policy/purge.h"
#include "policy/store.h"
#include "replication/shipper.h"

namespace mailvault::cli {
namespace {

using nlohmann::json;
using policy::PurgeRecord;
using policy::PurgeStore;

int64_t Now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

struct Purges {
  ShellState state;
  std::unique_ptr<policy::PolicyStore> own_policies;
  policy::PolicyStore* policies = nullptr;
  std::unique_ptr<PurgeStore> purges;
};

Result<Purges> OpenPurges(GlobalOptions& g) {
  MV_RETURN_IF_ERROR(ResolveGlobalOptions(&g));
  Purges p;
  MV_ASSIGN_OR_RETURN(p.state, OpenShellState(g, "while `mailvault serve` runs, purges go through it"));
  if (const ServiceResources* svc = Service(); svc && svc->policies) {
    p.policies = svc->policies;
  } else {
    p.own_policies = std::make_unique<policy::PolicyStore>(p.state.store.get(), p.state.audit.get());
    p.policies = p.own_policies.get();
  }
  p.purges = std::make_unique<PurgeStore>(p.state.store.get(), p.state.audit.get());
  return p;
}

void Print(const PurgeRecord& r) {
  Out() << "purge " << r.id << ": " << r.state << "\n"
        << "  proposed by " << r.proposer.user << " " << FormatDate(r.created) << " (policy set version " << r.policy_version << ")\n";
  if (r.approver) Out() << "  approved by " << r.approver->user << " " << FormatDate(r.approved) << "\n";
  Out() << "  messages:  " << r.messages << " (" << FormatBytes(r.bytes) << ")\n";
  for (const auto& [c, n] : r.custodians) Out() << "    " << (c.empty() ? "(no custodian)" : c) << ": " << n << "\n";
  if (r.state == policy::kPurgeDone || r.purged) {
    Out() << "  purged:    " << r.purged << ", skipped " << r.skipped << ", disposition records " << r.dispositions << "\n";
  }
  if (r.report.is_object() && r.report.contains("dictionaries")) {
    for (const json& d : r.report["dictionaries"]) Out() << "  " << d.get<std::string>() << "\n";
  }
  if (!r.error.empty()) Out() << "  error: " << r.error << "\n";
}

// What an offsite object lock means for a pending purge (as the API's "offsite_impact"): only
// serve's shippers know the buckets' locks.
std::vector<std::string> OffsiteImpact(const PurgeRecord& r) {
  std::vector<std::string> out;
  const ServiceResources* svc = Service();
  if (r.state != policy::kPurgePending || !svc) return out;
  for (replication::Shipper* s : svc->shippers) {
    int64_t lock = s->status().object_lock_seconds;
    if (lock <= 0) continue;
    out.push_back(replication::ObjectLockImpact(s->config().name, lock));
  }
  return out;
}

json WithImpact(const PurgeRecord& r) {
  json j = r.PublicJson();
  if (r.state == policy::kPurgePending) j["offsite_impact"] = OffsiteImpact(r);
  return j;
}

Result<PurgeRecord> MustGet(PurgeStore& s, const std::string& id) {
  MV_ASSIGN_OR_RETURN(std::optional<PurgeRecord> r, s.Get(id));
  if (!r) return NotFound("no purge " + id + " (see `mailvault purge list`)");
  return *r;
}

// Where API exports are written: [api] export-dir of the configuration, else <vault>/exports.
std::string ExportsDir(const GlobalOptions& g) {
  api::ApiConfig config;
  if (!g.config_file.empty()) (void)api::ApplyApiConfigFile(g.config_file, &config);
  return config.exports.dir.empty() ? g.vault_dir + "/exports" : config.exports.dir;
}

// Runs (or resumes) an approved purge: as a job of the service while serve runs, else here.
Status RunApproved(GlobalOptions& g, Purges& p, const std::string& id, const control::Actor& who) {
  const ServiceResources* svc = Service();
  if (svc && svc->runner) {
    Result<std::optional<control::JobRecord>> existing = svc->runner->store().Get(id);
    MV_RETURN_IF_ERROR(existing.status());
    Result<control::JobRecord> job = *existing ? ((*existing)->state == control::JobState::kQueued ||
                                                          (*existing)->state == control::JobState::kRunning
                                                      ? Result<control::JobRecord>(**existing)
                                                      : svc->runner->Resume(id, who))
                                               : svc->runner->SubmitPurge(id, who);
    MV_RETURN_IF_ERROR(job.status());
    Result<control::JobRecord> end = FollowToEnd(*svc, id, [](const control::JobRecord&) {});
    MV_RETURN_IF_ERROR(end.status());
    if (end->state != control::JobState::kDone) {
      return Error(ErrorCode::kIoError, "purge job " + id + " " + control::JobStateName(end->state) +
                                            (end->error.empty() ? "" : ": " + end->error) + "; `mailvault purge resume " + id + "` goes on");
    }
    return Status::Ok();
  }
  jobs::PurgeEnv env{p.state.vault.get(), g.vault_dir, p.state.store.get(), p.state.audit.get(), p.state.records.get(),
                     p.policies, ExportsDir(g), nullptr};
  Result<json> done = jobs::RunPurge(env, id, nullptr, [](const std::string& step, uint64_t d, uint64_t t) {
    if (StderrIsTerminal()) Err() << "\r\033[K" << step << (t ? " " + std::to_string(d) + "/" + std::to_string(t) : "") << std::flush;
  });
  if (StderrIsTerminal()) Err() << "\r\033[K";
  if (!done.ok()) {
    (void)p.purges->Update(id, [&](PurgeRecord& rec) {
      rec.state = policy::kPurgeFailed;
      rec.error = done.error().message();
      return Status::Ok();
    });
    return done.error().With("purge " + id + " (`mailvault purge resume " + id + "` goes on from where it stopped)");
  }
  return Status::Ok();
}

}  // namespace

void AddPurgeCommands(CLI::App& app, GlobalOptions& g, int* exit_code) {
  auto* pur = app.add_subcommand("purge", "two-person purges of what the policies let go: propose, approve, resume, show, list, cancel, dispositions");
  pur->require_subcommand(1);
  thread_local std::string id;
  id = {};
  thread_local bool as_json = false, as_csv = false;
  as_json = false;
  as_csv = false;
  auto fail = [exit_code](const Error& e) { *exit_code = Fail(e); };

  auto* propose = pur->add_subcommand("propose", "dry run of the policies in force: saves what a purge would take, pending approval");
  propose->add_flag("--json", as_json, "as JSON: {\"id\", \"state\": \"pending\", \"messages\", \"bytes\", ...}");
  propose->callback([&g, fail] {
    Result<Purges> p = OpenPurges(g);
    if (!p.ok()) return fail(p.error());
    Result<std::unique_ptr<index::Searcher>> searcher = index::Searcher::Open(g.vault_dir);
    if (!searcher.ok()) return fail(searcher.error());
    Result<PurgeRecord> r = p->purges->Propose(**searcher, *p->state.vault, *p->policies, ShellActor(), Now());
    if (!r.ok()) return fail(r.error());
    if (as_json) {
      Out() << WithImpact(*r).dump(2) << "\n";
      return;
    }
    Print(*r);
    for (const std::string& line : OffsiteImpact(*r)) Out() << "  " << line << "\n";
    Out() << "another compliance officer approves it: mailvault purge approve " << r->id << "\n";
  });

  auto* list = pur->add_subcommand("list", "every purge, newest first");
  list->add_flag("--json", as_json, "as JSON");
  list->callback([&g, fail] {
    Result<Purges> p = OpenPurges(g);
    if (!p.ok()) return fail(p.error());
    Result<std::vector<PurgeRecord>> all = p->purges->List();
    if (!all.ok()) return fail(all.error());
    json j = json::array();
    for (const PurgeRecord& r : *all) j.push_back(r.PublicJson());
    if (as_json) {
      Out() << j.dump(2) << "\n";
      return;
    }
    if (all->empty()) Out() << "no purges\n";
    for (const PurgeRecord& r : *all) {
      Out() << r.id << "  " << r.state << "  " << r.messages << " messages  proposed by " << r.proposer.user
            << (r.approver ? ", approved by " + r.approver->user : std::string()) << "\n";
    }
  });

  auto* show = pur->add_subcommand("show", "one purge: its impact, who proposed and approved it, what it did");
  show->add_option("ID", id, "the purge")->required();
  show->add_flag("--json", as_json, "as JSON: {\"state\", \"purged\", \"dispositions\", ...}");
  show->callback([&g, fail] {
    Result<Purges> p = OpenPurges(g);
    if (!p.ok()) return fail(p.error());
    Result<PurgeRecord> r = MustGet(*p->purges, id);
    if (!r.ok()) return fail(r.error());
    if (as_json) {
      Out() << WithImpact(*r).dump(2) << "\n";
    } else {
      Print(*r);
      for (const std::string& line : OffsiteImpact(*r)) Out() << "  " << line << "\n";
    }
  });

  auto* approve = pur->add_subcommand("approve", "approve another officer's purge; it runs as a job of the service (or here, without one)");
  approve->add_option("ID", id, "the purge")->required();
  approve->callback([&g, fail] {
    Result<Purges> p = OpenPurges(g);
    if (!p.ok()) return fail(p.error());
    Result<PurgeRecord> r = p->purges->Approve(id, ShellActor(), Now());
    if (!r.ok()) return fail(r.error());
    if (Status run = RunApproved(g, *p, r->id, ShellActor()); !run.ok()) return fail(run.error());
    Result<PurgeRecord> after = MustGet(*p->purges, r->id);
    if (!after.ok()) return fail(after.error());
    Print(*after);
  });

  auto* resume = pur->add_subcommand("resume", "finish an approved purge that failed or was interrupted");
  resume->add_option("ID", id, "the purge")->required();
  resume->callback([&g, fail] {
    Result<Purges> p = OpenPurges(g);
    if (!p.ok()) return fail(p.error());
    Result<PurgeRecord> r = MustGet(*p->purges, id);
    if (!r.ok()) return fail(r.error());
    if (r->state != policy::kPurgeApproved && r->state != policy::kPurgeRunning && r->state != policy::kPurgeFailed) {
      return fail(Error(ErrorCode::kConflict, "purge " + id + " is " + r->state + "; only an approved purge that did not finish resumes"));
    }
    if (Status a = AuditShell(p->state, "purge.resume", id); !a.ok()) return fail(a.error());
    if (Status run = RunApproved(g, *p, id, ShellActor()); !run.ok()) return fail(run.error());
    Result<PurgeRecord> after = MustGet(*p->purges, id);
    if (!after.ok()) return fail(after.error());
    Print(*after);
  });

  auto* cancel = pur->add_subcommand("cancel", "withdraw a pending purge");
  cancel->add_option("ID", id, "the purge")->required();
  cancel->callback([&g, fail] {
    Result<Purges> p = OpenPurges(g);
    if (!p.ok()) return fail(p.error());
    Result<PurgeRecord> r = p->purges->Cancel(id, ShellActor(), Now());
    if (!r.ok()) return fail(r.error());
    Out() << "purge " << r->id << " cancelled\n";
  });

  auto* disp = pur->add_subcommand("dispositions", "the disposition record of every message a purge took (they outlive the mail)");
  disp->add_option("ID", id, "the purge")->required();
  disp->add_flag("--csv", as_csv, "as CSV (id, fingerprint, size, policy, proposer, approver, time, purge)");
  disp->add_flag("--json", as_json, "as a JSON array");
  disp->callback([&g, fail] {
    Result<Purges> p = OpenPurges(g);
    if (!p.ok()) return fail(p.error());
    Result<PurgeRecord> r = MustGet(*p->purges, id);
    if (!r.ok()) return fail(r.error());
    if (Status a = AuditShell(p->state, "purge.dispositions", r->id); !a.ok()) return fail(a.error());
    json list = json::array();
    if (as_csv) Out() << policy::DispositionCsvHeader();
    Status s = p->purges->ForEachDisposition(r->id, [&](const policy::Disposition& d) {
      if (d.state != "purged") return true;
      if (as_csv) Out() << policy::DispositionCsvLine(d);
      else if (as_json) list.push_back(d.ToJson());
      else Out() << d.id << "  " << d.size << "  " << d.policy << "  " << FormatDate(d.time) << "\n";
      return true;
    });
    if (!s.ok()) return fail(s.error());
    if (as_json) Out() << list.dump(2) << "\n";
  });
}

}  // namespace mailvault::cli
