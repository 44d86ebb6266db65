// `mailvault restore` and `mailvault job list|show|resume|cancel`: restore jobs into IMAP
// mailboxes (recovery/restore.h). The shape of `restore` is fixed by the recovery issue so that
// scripts can rely on it; the extras (--into, --map, --flag, --no-tls, …) come after it.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <thread>

#include "capture/config.h"
#include "cli/commands.h"
#include "cli/shell_state.h"
#include "core/text.h"
#include "indexer/searcher.h"
#include "cli/control_socket.h"
#include "control/jobs.h"
#include "jobs/runner.h"
#include "recovery/restore.h"

namespace mailvault::cli {
namespace {

using nlohmann::json;
using recovery::JobReport;
using recovery::ReportJson;
using recovery::RestoreJob;

std::atomic<bool> g_stop{false};

const std::string kBusyHint =
    "restore jobs run while `mailvault serve` and other restores are stopped (they hold the vault); "
    "to stop a running restore: mailvault job cancel ID";

std::string JobsDir(const GlobalOptions& g) { return g.vault_dir + "/jobs"; }

// r20261125-121609-5c5404: the only shape of id that may name a file under jobs/.
bool ValidJobId(const std::string& id) {
  if (id.size() != 23 || id[0] != 'r' || id[9] != '-' || id[16] != '-') return false;
  for (size_t i = 1; i < id.size(); ++i) {
    if (i == 9 || i == 16) continue;
    const char c = id[i];
    if (!(std::isdigit(static_cast<unsigned char>(c)) || (i > 16 && c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

void PrintReport(const JobReport& r, bool as_json) {
  if (as_json) {
    Out() << ReportJson(r).dump(2) << "\n";
    return;
  }
  json j = ReportJson(r);
  Out() << "restore job " << r.id << ": " << r.status << " (" << r.target << ")\n";
  for (const recovery::TargetReport& t : r.targets) {
    Out() << "  " << t.mailbox << " " << t.folder << ": selected " << t.selected << ", already present " << t.present
              << ", appended " << t.appended << " (" << FormatBytes(t.bytes) << "), failed " << t.failed;
    if (t.pending) Out() << ", not done " << t.pending;
    Out() << "\n";
    if (!t.error.empty()) Out() << "    could not finish: " << t.error << "\n";
    for (const auto& [id, why] : t.failures) Out() << "    failed " << id.substr(0, 12) << ": " << why << "\n";
  }
  const json& tot = j["totals"];
  Out() << "totals: selected " << tot["selected"] << ", already present " << tot["present"] << ", appended "
            << tot["appended"] << ", failed " << tot["failed"];
  if (tot["pending"].get<uint64_t>()) Out() << ", not done " << tot["pending"] << " (mailvault job resume " << r.id << ")";
  Out() << "\n";
}

void PrintPlan(const JobReport& r, bool as_json) {
  if (as_json) {
    Out() << recovery::PlanJson(r).dump(2) << "\n";
    return;
  }
  Out() << "plan (dry run: nothing is appended)\n";
  for (const recovery::TargetReport& t : r.targets) {
    Out() << "  " << t.mailbox << " " << t.folder << ": selected " << t.selected << ", already present " << t.present
              << ", to append " << t.pending << " (" << FormatBytes(t.bytes) << ")\n";
    if (!t.error.empty()) Out() << "    cannot check the mailbox: " << t.error << "\n";
  }
}

// Runs the job with progress on stderr, stopping on SIGINT/SIGTERM or a cancel request (a file
// `job cancel` leaves while this process holds the vault).
int RunJob(GlobalOptions& g, ShellState& s, RestoreJob& job, const recovery::Credentials& cred, bool as_json) {
  std::error_code ec;
  std::filesystem::create_directories(JobsDir(g), ec);
  std::filesystem::permissions(JobsDir(g), std::filesystem::perms::owner_all, ec);
  const std::string pidfile = JobsDir(g) + "/" + job.id() + ".pid", cancelfile = JobsDir(g) + "/" + job.id() + ".cancel";
  // A cancel asked for while this job was not running (the vault held by serve) still holds.
  if (std::filesystem::exists(cancelfile)) {
    (void)job.SetStatus("cancelled");
    (void)AuditShell(s, "restore.cancel", job.id());
    std::filesystem::remove(cancelfile, ec);
    return Fail("job " + job.id() + " was cancelled (mailvault job cancel); start a new restore instead");
  }
  { std::ofstream(pidfile) << ::getpid() << "\n"; }
  g_stop = false;
  // SIGINT and SIGTERM are taken by the watcher thread alone (sigtimedwait): delivered to a
  // worker instead, a handler would cut its socket wait short (EINTR) in the middle of a chunk.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  RestoreJob::Progress progress;
  std::mutex mu;
  bool finished = false, cancelled = false;
  std::thread watcher([&] {
    const bool tty = StderrIsTerminal();
    std::unique_lock<std::mutex> l(mu);
    int ticks = 0;
    for (;;) {
      l.unlock();
      struct timespec tick = {0, 250 * 1000 * 1000};
      if (sigtimedwait(&stop_signals, nullptr, &tick) > 0) g_stop = true;
      l.lock();
      if (finished) break;
      if (std::filesystem::exists(cancelfile)) {
        cancelled = true;
        g_stop = true;
      }
      if (++ticks % (tty ? 4 : 20) != 0) continue;
      ErrPrintf("%srestore %s: %llu of %llu done (appended %llu, already present %llu, failed %llu), %llu mailbox(es) left%s",
                   tty ? "\r" : "", job.id().c_str(),
                   static_cast<unsigned long long>(progress.appended + progress.present + progress.failed),
                   static_cast<unsigned long long>(progress.selected.load()), static_cast<unsigned long long>(progress.appended.load()),
                   static_cast<unsigned long long>(progress.present.load()), static_cast<unsigned long long>(progress.failed.load()),
                   static_cast<unsigned long long>(progress.targets_left.load()), tty ? "   " : "\n");
    }
    if (tty) ErrPrintf("\n");
  });
  Result<JobReport> r = job.Run(*s.vault, cred, &g_stop, &progress);
  {
    std::lock_guard<std::mutex> l(mu);
    finished = true;
  }
  watcher.join();  // within a quarter of a second: it wakes from sigtimedwait that often
  if ((cancelled || std::filesystem::exists(cancelfile)) && !(r.ok() && r->status == "done")) {
    (void)job.SetStatus("cancelled");
    (void)AuditShell(s, "restore.cancel", job.id());
    if (r.ok()) r->status = "cancelled";
  }
  std::filesystem::remove(pidfile, ec);
  std::filesystem::remove(cancelfile, ec);
  pthread_sigmask(SIG_UNBLOCK, &stop_signals, nullptr);
  if (!r.ok()) return Fail(r.error());
  (void)AuditShell(s, "restore.finish", job.id(), ReportJson(*r)["totals"]);
  PrintReport(*r, as_json);
  return r->status == "done" ? 0 : 1;
}

int FollowJob(const ServiceResources& svc, const std::string& id, bool as_json);

// A restore run by the service (the command line reached it over its control socket): a job
// of the service, followed here with the same progress lines and report as a restore run by
// this process. If the client goes, the job goes on (`mailvault job cancel` stops it).
int RestoreInService(const ServiceResources& svc, const json& request, const jobs::RestoreTargetConfig& adhoc, bool dry_run,
                     bool as_json) {
  jobs::JobRunner& runner = *svc.runner;
  const control::Actor who = ShellActor();
  if (dry_run) {
    Result<json> plan = runner.PlanRestore(request, who, &adhoc);
    if (!plan.ok()) return Fail(plan.error());
    if (as_json) {
      Out() << plan->dump(2) << "\n";
    } else {
      Out() << "plan (dry run: nothing is appended)\n";
      for (const json& t : (*plan)["plan"]) {
        Out() << "  " << t["mailbox"].get<std::string>() << " " << t["folder"].get<std::string>() << ": selected " << t["selected"]
              << ", already present " << t["present"] << ", to append " << t["to_append"] << " ("
              << FormatBytes(t["bytes"].get<uint64_t>()) << ")\n";
        if (t.contains("error")) Out() << "    cannot check the mailbox: " << t["error"].get<std::string>() << "\n";
      }
    }
    bool errors = false;
    for (const json& t : (*plan)["plan"]) errors |= t.contains("error");
    return errors ? 1 : 0;
  }
  Result<control::JobRecord> job = runner.SubmitRestore(request, who, &adhoc);
  if (!job.ok()) return Fail(job.error());
  const std::string id = job->id;
  if (!as_json) Err() << "restore job " << id << " created; if it stops, `mailvault job resume " << id << "`\n";
  return FollowJob(svc, id, as_json);
}

// Follows a restore job of the service until it ends or pauses: progress on stderr, then its
// report. Exit status 0 when it is done.
int FollowJob(const ServiceResources& svc, const std::string& id, bool as_json) {
  jobs::JobRunner& runner = *svc.runner;
  const bool tty = StderrIsTerminal();
  auto last_line = std::chrono::steady_clock::now();
  control::JobRecord rec;
  for (;;) {
    const uint64_t seen = runner.store().changes();
    Result<std::optional<control::JobRecord>> now = runner.store().Get(id);
    if (!now.ok()) return Fail(now.error());
    if (!*now) return Fail("job " + id + " is gone");
    rec = **now;
    if (control::IsFinal(rec.state) || rec.state == control::JobState::kPaused) break;
    if (ClientGone()) return 1;
    if (std::chrono::steady_clock::now() - last_line >= std::chrono::seconds(tty ? 1 : 5)) {
      last_line = std::chrono::steady_clock::now();
      const json& p = rec.progress;
      const uint64_t a = p.value("appended", uint64_t{0}), pr = p.value("present", uint64_t{0}), f = p.value("failed", uint64_t{0});
      ErrPrintf("%srestore %s: %llu of %llu done (appended %llu, already present %llu, failed %llu), %llu mailbox(es) left%s",
                tty ? "\r" : "", id.c_str(), static_cast<unsigned long long>(a + pr + f),
                static_cast<unsigned long long>(p.value("total", uint64_t{0})), static_cast<unsigned long long>(a),
                static_cast<unsigned long long>(pr), static_cast<unsigned long long>(f),
                static_cast<unsigned long long>(p.value("mailboxes_left", uint64_t{0})), tty ? "   " : "\n");
    }
    runner.store().WaitForChange(seen, std::chrono::steady_clock::now() + std::chrono::milliseconds(250));
  }
  if (tty) Err() << "\n";
  Result<std::unique_ptr<RestoreJob>> rj = RestoreJob::Load(svc.store, id);
  if (!rj.ok()) return Fail("restore job " + id + " " + control::JobStateName(rec.state) + ": " + rec.error);
  Result<JobReport> r = (*rj)->Report();
  if (!r.ok()) return Fail(r.error());
  if (rec.state == control::JobState::kCancelled) r->status = "cancelled";
  if (rec.state == control::JobState::kPaused) r->status = "paused";
  PrintReport(*r, as_json);
  return rec.state == control::JobState::kDone ? 0 : 1;
}

Result<recovery::Credentials> CredentialsFor(const RestoreJob& job, const std::string& override_file) {
  const std::string file = override_file.empty() ? job.target().auth_file : override_file;
  return recovery::ReadCredentials(file);
}

// What one job has done so far, in words: a restore's totals, the others' counters.
std::string JobSummary(const json& j) {
  if (j.contains("totals")) {
    const json& t = j["totals"];
    return "selected " + t["selected"].dump() + ", present " + t["present"].dump() + ", appended " + t["appended"].dump() +
           ", failed " + t["failed"].dump();
  }
  std::string out;
  auto progress = j.find("progress");
  if (progress != j.end() && progress->is_object()) {
    for (auto it = progress->begin(); it != progress->end(); ++it) {
      if (it->is_number()) out += (out.empty() ? "" : ", ") + it.key() + " " + it->dump();
    }
  }
  if (j.contains("error")) out += (out.empty() ? "" : "; ") + j["error"].get<std::string>();
  return out;
}

// A line of `job list`: a restore's as restores have always been listed (id, status, target,
// totals); any other job's: id, state, kind, its counters.
std::string JobLine(const json& j) {
  if (j.contains("job")) {
    return j["job"].get<std::string>() + "  " + j["status"].get<std::string>() + "  " + j["target"].get<std::string>() + "  " +
           JobSummary(j);
  }
  return j["id"].get<std::string>() + "  " + j["state"].get<std::string>() + "  " + j["kind"].get<std::string>() + "  " +
         JobSummary(j);
}

// Every job, newest first: the job store's records (every kind) and the restore journals
// (restores run from the command line while no service ran have only those). A restore with a
// journal is shown as its report (ReportJson: job, status, target, totals, mailboxes), with the
// store's state as its status where the service runs it; the others as their record
// (JobRecord::PublicJson).
Result<std::vector<json>> ListJobs(control::StateStore* store, std::optional<control::JobKind> kind,
                                   std::optional<control::JobState> state) {
  MV_ASSIGN_OR_RETURN(std::vector<control::JobRecord> records, control::JobStore(store).List(kind, std::nullopt));
  std::map<std::string, const control::JobRecord*> by_id;
  for (const control::JobRecord& r : records) by_id[r.id] = &r;
  std::vector<json> out;
  std::set<std::string> shown;
  if (!kind || *kind == control::JobKind::kRestore) {
    MV_ASSIGN_OR_RETURN(std::vector<JobReport> journals, RestoreJob::List(store));
    for (const JobReport& r : journals) {
      json j = ReportJson(r);
      auto rec = by_id.find(r.id);
      std::optional<control::JobState> now = rec != by_id.end() ? std::optional(rec->second->state) : control::ParseJobState(r.status);
      if (rec != by_id.end()) j["status"] = control::JobStateName(rec->second->state);
      if (state && now != state) continue;
      j["kind"] = "restore";
      out.push_back(std::move(j));
      shown.insert(r.id);
    }
  }
  for (const control::JobRecord& r : records) {
    if (shown.count(r.id) || (state && r.state != *state)) continue;
    out.push_back(r.PublicJson());
  }
  // Ids begin with the kind's letter, then the creation time: newest first across kinds.
  auto when = [](const json& j) { return j.value("job", j.value("id", std::string())).substr(1); };
  std::stable_sort(out.begin(), out.end(), [&](const json& a, const json& b) { return when(a) > when(b); });
  return out;
}

// `job show` of a job that has no restore journal (any kind but a restore that has selected).
void PrintJobRecord(const control::JobRecord& r, bool as_json) {
  const json j = r.PublicJson();
  if (as_json) {
    Out() << j.dump(2) << "\n";
    return;
  }
  Out() << control::JobKindName(r.kind) << " job " << r.id << ": " << control::JobStateName(r.state) << " (started by "
        << r.started_by.user << " via " << r.started_by.auth << ")\n";
  Out() << "  created " << FormatDate(r.created);
  if (r.started) Out() << ", started " << FormatDate(r.started);
  if (r.finished) Out() << ", finished " << FormatDate(r.finished);
  Out() << "; runs " << r.runs << "\n";
  if (!r.phase.empty()) Out() << "  phase: " << r.phase << "\n";
  if (std::string p = JobSummary(json{{"progress", r.progress}}); !p.empty()) Out() << "  progress: " << p << "\n";
  if (!r.error.empty()) Out() << "  error: " << r.error << "\n";
  if (!r.report.is_null()) Out() << "  report: " << r.report.dump() << "\n";
}

}  // namespace

void AddRestoreCommands(CLI::App& app, GlobalOptions& g, int* exit_code) {
  // ---- restore ----
  auto* cmd = app.add_subcommand("restore", "put archived mail back into users' IMAP mailboxes, each message exactly once");
  thread_local std::string to, auth_file, users_arg, from, until, margin_before = "5m", margin_after = "10m", query, folder;
  to = {}; auth_file = {}; users_arg = {}; from = {}; until = {}; margin_before = "5m"; margin_after = "10m"; query = {}; folder = {};
  thread_local std::string into, sent_folder = "Sent", bwlimit, ca_file;
  into = {}; sent_folder = "Sent"; bwlimit = {}; ca_file = {};
  thread_local std::vector<std::string> maps, flags;
  maps = {}; flags = {};
  thread_local int workers = 4, connections = 3, batch = 128, timeout = 60;
  workers = 4; connections = 3; batch = 128; timeout = 60;
  thread_local bool by_date = false, dry_run = false, as_json = false, no_tls = false, insecure = false;
  by_date = false; dry_run = false; as_json = false; no_tls = false; insecure = false;
  cmd->add_option("--to", to, "the IMAP server: imap://HOST[:PORT] (STARTTLS) or imaps://HOST[:PORT]")->required();
  cmd->add_option("--auth-file", auth_file, "lines \"ADDRESS LOGIN PASSWORD\", or one \"* LOGIN PASSWORD\" (an administrator); mode 600")
      ->required();
  cmd->add_option("--users", users_arg, "the custodians whose mail is restored: ADDR[,ADDR…]")->required();
  cmd->add_option("--from", from, "start of the window (ISO 8601, e.g. 2026-11-24T22:00:00Z)");
  cmd->add_option("--until", until, "end of the window (ISO 8601)");
  cmd->add_flag("--by-date", by_date, "the window applies to the Date header, not to when the archive captured the mail");
  cmd->add_option("--margin-before", margin_before, "widen the window before --from (default 5m)");
  cmd->add_option("--margin-after", margin_after, "widen the window after --until (default 10m)");
  cmd->add_option("--query", query, "only messages matching this search (the index's query language)");
  cmd->add_option("--folder", folder, "put everything in this folder (created if missing), e.g. \"Recovered 2026-11-25\"");
  cmd->add_option("--workers", workers, "mailboxes restored at once (default 4)")->check(CLI::Range(1, 64));
  cmd->add_option("--connections", connections, "connections appending to one mailbox at once (default 3)")->check(CLI::Range(1, 16));
  cmd->add_flag("--dry-run", dry_run, "print the plan per mailbox (selected, already present, to append, bytes); append nothing");
  cmd->add_flag("--json", as_json, "print the plan or the report as JSON");
  cmd->add_option("--into", into, "one mailbox for everything (a reviewer's), instead of each custodian's own");
  cmd->add_option("--map", maps, "ARCHIVED=MAILBOX: restore a custodian's mail into another mailbox (repeatable)");
  cmd->add_option("--flag", flags, "an IMAP flag to set on every appended message, e.g. '\\Seen' (repeatable)");
  cmd->add_option("--sent-folder", sent_folder, "where mail a custodian sent goes (default Sent)");
  cmd->add_flag("--no-tls", no_tls, "plain IMAP without STARTTLS: loopback addresses only (lab use)");
  cmd->add_flag("--insecure", insecure, "do not check the server's certificate (lab use)");
  cmd->add_option("--ca-file", ca_file, "trust this CA (or pinned self-signed certificate) for the server");
  cmd->add_option("--bwlimit", bwlimit, "at most this many bytes per second over all workers, e.g. 10M (default: no limit)");
  cmd->add_option("--batch", batch, "messages per MULTIAPPEND (or APPENDs in flight) and per journal write (default 128)")->check(CLI::Range(1, 1024));
  cmd->add_option("--timeout", timeout, "seconds to wait for the server before a connection counts as lost (default 60)")
      ->check(CLI::Range(5, 3600));
  cmd->callback([&g, exit_code] {
    if (!ResolveOrFail(g, exit_code)) return;
    // A TLS write to a server that has gone away raises SIGPIPE (OpenSSL writes with write(2)):
    // that must be an error to retry, not the end of the process.
    signal(SIGPIPE, SIG_IGN);
    Result<recovery::ImapEndpoint> endpoint = recovery::ParseImapUrl(to, no_tls);
    if (!endpoint.ok()) {
      *exit_code = Fail(endpoint.error());
      return;
    }
    endpoint->verify_certificate = !insecure;
    endpoint->ca_file = ca_file;
    endpoint->timeout = std::chrono::seconds(timeout);
    recovery::RestoreCriteria c;
    recovery::RestoreOptions o;
    for (size_t i = 0; i <= users_arg.size();) {
      size_t comma = users_arg.find(',', i);
      std::string u = Trim(users_arg.substr(i, comma == std::string::npos ? std::string::npos : comma - i));
      if (!u.empty()) c.users.push_back(u);
      if (comma == std::string::npos) break;
      i = comma + 1;
    }
    auto fail = [&](const Error& e) { *exit_code = Fail(e); };
    if (!from.empty()) {
      Result<int64_t> t = ParseIsoTime(from);
      if (!t.ok()) return fail(t.error().With("--from"));
      c.from = *t;
    }
    if (!until.empty()) {
      Result<int64_t> t = ParseIsoTime(until);
      if (!t.ok()) return fail(t.error().With("--until"));
      c.until = *t;
    }
    Result<std::chrono::seconds> mb = capture::ParseDuration(margin_before), ma = capture::ParseDuration(margin_after);
    if (!mb.ok()) return fail(mb.error().With("--margin-before"));
    if (!ma.ok()) return fail(ma.error().With("--margin-after"));
    c.margin_before = mb->count();
    c.margin_after = ma->count();
    c.by_date = by_date;
    c.query = query;
    o.folder = folder;
    o.sent_folder = sent_folder;
    o.into = into;
    o.flags = flags;
    o.workers = workers;
    o.connections = static_cast<size_t>(connections);
    o.batch = static_cast<size_t>(batch);
    for (const std::string& m : maps) {
      size_t eq = m.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == m.size()) {
        return fail(InvalidArgument("--map \"" + m + "\": expected ARCHIVED_ADDRESS=MAILBOX_ADDRESS"));
      }
      o.user_map[NormalizeAddress(m.substr(0, eq))] = NormalizeAddress(m.substr(eq + 1));
    }
    if (!bwlimit.empty()) {
      char* end = nullptr;
      double v = std::strtod(bwlimit.c_str(), &end);
      std::string unit = end;
      double mult = unit.empty() ? 1 : unit == "K" || unit == "k" ? 1e3 : unit == "M" || unit == "m" ? 1e6 : unit == "G" || unit == "g" ? 1e9 : 0;
      if (end == bwlimit.c_str() || mult == 0 || v <= 0) return fail(InvalidArgument("--bwlimit \"" + bwlimit + "\": expected bytes per second, e.g. 500K or 10M"));
      o.bandwidth = static_cast<uint64_t>(v * mult);
    }
    if (const ServiceResources* svc = Service(); svc && svc->runner) {
      // serve holds the vault: the restore becomes one of its jobs (capture goes on).
      json request{{"users", c.users},          {"by_date", c.by_date},   {"margin_before", c.margin_before},
                   {"margin_after", c.margin_after}, {"query", c.query}, {"folder", o.folder},
                   {"into", o.into},            {"sent_folder", o.sent_folder}, {"map", o.user_map},
                   {"flags", o.flags},          {"workers", o.workers}, {"connections", o.connections},
                   {"batch", o.batch},          {"bandwidth", o.bandwidth}};
      if (c.from) request["from"] = *c.from;
      if (c.until) request["until"] = *c.until;
      jobs::RestoreTargetConfig adhoc;
      adhoc.name = "command line";
      adhoc.url = to;
      adhoc.auth_file = std::filesystem::absolute(UserPath(auth_file)).string();
      adhoc.ca_file = ca_file.empty() ? "" : UserPath(ca_file);
      adhoc.insecure = insecure;
      adhoc.no_tls = no_tls;
      adhoc.timeout_seconds = timeout;
      *exit_code = RestoreInService(*svc, request, adhoc, dry_run, as_json);
      return;
    }
    Result<recovery::Credentials> cred = recovery::ReadCredentials(auth_file);
    if (!cred.ok()) return fail(cred.error());
    Result<ShellState> s = OpenShellState(g, kBusyHint);
    if (!s.ok()) return fail(s.error());
    std::unique_ptr<index::Searcher> searcher;
    if (!c.query.empty()) {
      Result<std::unique_ptr<index::Searcher>> opened = index::Searcher::Open(g.vault_dir);
      if (!opened.ok()) return fail(opened.error().With("--query needs the index"));
      searcher = std::move(*opened);
    }
    Result<std::vector<recovery::PlannedTarget>> plan = recovery::SelectForRestore(*s->vault, searcher.get(), c, o);
    if (!plan.ok()) return fail(plan.error());
    recovery::RestoreTarget target{to, *endpoint, std::filesystem::absolute(auth_file).string()};
    json audit_details{{"to", to}, {"users", c.users}, {"query", c.query}, {"by_date", c.by_date}, {"folder", folder},
                       {"into", into}, {"dry_run", dry_run}};
    if (c.from) audit_details["from"] = *c.from;
    if (c.until) audit_details["until"] = *c.until;
    if (dry_run) {
      if (Status st = AuditShell(*s, "restore.plan", to, audit_details); !st.ok()) return fail(st.error());
      Result<JobReport> r = recovery::DryRun(*s->vault, target, *cred, o, std::move(*plan));
      if (!r.ok()) return fail(r.error());
      PrintPlan(*r, as_json);
      bool errors = false;
      for (const auto& t : r->targets) errors |= !t.error.empty();
      *exit_code = errors ? 1 : 0;
      return;
    }
    Result<std::unique_ptr<RestoreJob>> job = RestoreJob::Create(s->store.get(), target, c, o, std::move(*plan));
    if (!job.ok()) return fail(job.error());
    audit_details["job"] = (*job)->id();
    if (Status st = AuditShell(*s, "restore.create", (*job)->id(), audit_details); !st.ok()) return fail(st.error());
    if (!as_json) Err() << "restore job " << (*job)->id() << " created; if it stops, `mailvault job resume " << (*job)->id() << "`\n";
    *exit_code = RunJob(g, *s, **job, *cred, as_json);
  });

  // ---- job ----
  auto* jobs = app.add_subcommand("job", "jobs of every kind (restore, export, verify, import, reindex): list, show, resume, cancel, pause");
  jobs->require_subcommand(1);
  thread_local bool job_json = false;
  job_json = false;
  thread_local std::string list_kind, list_state;
  list_kind = {}; list_state = {};
  auto* list = jobs->add_subcommand("list", "every job, newest first, with its state and totals");
  list->add_flag("--json", job_json, "as JSON");
  list->add_option("--kind", list_kind, "only jobs of this kind (restore, export, verify, import, reindex)");
  list->add_option("--state", list_state, "only jobs in this state (queued, running, paused, done, failed, cancelled)");
  list->callback([&g, exit_code] {
    if (!ResolveOrFail(g, exit_code)) return;
    std::optional<control::JobKind> kind;
    std::optional<control::JobState> state;
    if (!list_kind.empty() && !(kind = control::ParseJobKind(list_kind))) {
      return void(*exit_code = Fail(InvalidArgument("--kind is restore, export, verify, import or reindex")));
    }
    if (!list_state.empty() && !(state = control::ParseJobState(list_state))) {
      return void(*exit_code = Fail(InvalidArgument("--state is queued, running, paused, done, failed or cancelled")));
    }
    Result<ShellState> s = OpenShellState(g, kBusyHint);
    if (!s.ok()) return void(*exit_code = Fail(s.error()));
    Result<std::vector<json>> all = ListJobs(s->store.get(), kind, state);
    if (!all.ok()) return void(*exit_code = Fail(all.error()));
    if (job_json) {
      Out() << json(*all).dump(2) << "\n";
      return;
    }
    if (all->empty()) Out() << (kind || state ? "no such jobs\n" : "no jobs\n");
    for (const json& j : *all) Out() << JobLine(j) << "\n";
  });
  thread_local std::string job_id, job_auth_file;
  job_id = {}; job_auth_file = {};
  auto* show = jobs->add_subcommand("show", "one job: a restore's report per mailbox with every failure and its reason; any other job's record");
  show->add_option("ID", job_id, "the job (see job list)")->required();
  show->add_flag("--json", job_json, "as JSON");
  show->callback([&g, exit_code] {
    if (!ResolveOrFail(g, exit_code)) return;
    Result<ShellState> s = OpenShellState(g, kBusyHint);
    if (!s.ok()) return void(*exit_code = Fail(s.error()));
    // A restore that has selected has its journal: its report is the one a restore prints.
    Result<std::unique_ptr<RestoreJob>> job = RestoreJob::Load(s->store.get(), job_id);
    if (job.ok()) {
      Result<JobReport> r = (*job)->Report();
      if (!r.ok()) return void(*exit_code = Fail(r.error()));
      PrintReport(*r, job_json);
      return;
    }
    if (!control::ValidJobId(job_id)) return void(*exit_code = Fail(job.error()));
    Result<std::optional<control::JobRecord>> record = control::JobStore(s->store.get()).Get(job_id);
    if (!record.ok()) return void(*exit_code = Fail(record.error()));
    if (!*record) return void(*exit_code = Fail(NotFound("no job " + job_id + " (see `mailvault job list`)")));
    PrintJobRecord(**record, job_json);
  });
  auto* resume = jobs->add_subcommand("resume", "finish a job that stopped (kill, server gone, quota raised since): appends nothing twice");
  resume->add_option("ID", job_id, "the job")->required();
  resume->add_option("--auth-file", job_auth_file, "the credentials (default: the file the job was started with)");
  resume->add_flag("--json", job_json, "print the report as JSON");
  resume->callback([&g, exit_code] {
    if (!ResolveOrFail(g, exit_code)) return;
    if (const ServiceResources* svc = Service(); svc && svc->runner) {
      if (!job_auth_file.empty()) {
        return void(*exit_code = Fail(InvalidArgument(
                        "--auth-file: the service resumes a job with the auth file it was started with (or its "
                        "configured target's); change that file, or stop serve and resume here with --auth-file")));
      }
      // A job of the service (or one a restore run from the command line left): queued again.
      Result<control::JobRecord> r = svc->runner->Resume(job_id, ShellActor());
      if (!r.ok() && r.error().code() == ErrorCode::kNotFound) r = svc->runner->Adopt(job_id, ShellActor());
      if (!r.ok()) return void(*exit_code = Fail(r.error()));
      if (r->kind == control::JobKind::kRestore) return void(*exit_code = FollowJob(*svc, job_id, job_json));
      // Any other kind: followed to its end, then shown as `job show` shows it.
      Result<control::JobRecord> end = FollowToEnd(*svc, job_id, {});
      if (!end.ok()) return void(*exit_code = Fail(end.error()));
      PrintJobRecord(*end, job_json);
      *exit_code = end->state == control::JobState::kDone ? 0 : 1;
      return;
    }
    signal(SIGPIPE, SIG_IGN);
    Result<ShellState> s = OpenShellState(g, kBusyHint);
    if (!s.ok()) return void(*exit_code = Fail(s.error()));
    Result<std::unique_ptr<RestoreJob>> job = RestoreJob::Load(s->store.get(), job_id);
    if (!job.ok()) return void(*exit_code = Fail(job.error()));
    if ((*job)->status() == "cancelled") return void(*exit_code = Fail("job " + job_id + " was cancelled; start a new restore instead"));
    Result<recovery::Credentials> cred = CredentialsFor(**job, job_auth_file);
    if (!cred.ok()) return void(*exit_code = Fail(cred.error()));
    if (Status st = AuditShell(*s, "restore.resume", job_id); !st.ok()) return void(*exit_code = Fail(st.error()));
    *exit_code = RunJob(g, *s, **job, *cred, job_json);
  });
  auto* cancel = jobs->add_subcommand("cancel", "stop a job for good (a running one stops after its current batch)");
  cancel->add_option("ID", job_id, "the job")->required();
  cancel->callback([&g, exit_code] {
    if (!ResolveOrFail(g, exit_code)) return;
    if (const ServiceResources* svc = Service(); svc && svc->runner) {
      Result<control::JobRecord> r = svc->runner->Cancel(job_id, ShellActor());
      if (!r.ok() && r.error().code() == ErrorCode::kNotFound) {
        // A restore from the command line that the service never ran: cancelled in its record.
        Result<std::unique_ptr<RestoreJob>> job = RestoreJob::Load(svc->store, job_id);
        if (!job.ok()) return void(*exit_code = Fail(job.error()));
        Result<ShellState> s = OpenShellState(g, kBusyHint);  // the service's, borrowed
        if (!s.ok()) return void(*exit_code = Fail(s.error()));
        if (Status st = AuditShell(*s, "restore.cancel", job_id); !st.ok()) return void(*exit_code = Fail(st.error()));
        if (Status st = (*job)->SetStatus("cancelled"); !st.ok()) return void(*exit_code = Fail(st.error()));
        Out() << "job " << job_id << " cancelled\n";
        return;
      }
      if (!r.ok()) return void(*exit_code = Fail(r.error()));
      if (r->state == control::JobState::kCancelled) Out() << "job " << job_id << " cancelled\n";
      else Out() << "asked the running job " << job_id << " to stop; it records the cancel itself after its current batch\n";
      return;
    }
    Result<ShellState> s = OpenShellState(g, kBusyHint);
    if (!s.ok()) {
      // Running: the process holding the vault polls for this file and stops.
      // Someone holds the vault: the job itself (it polls for the cancel file and stops), or
      // serve (then the file makes the job's next resume record the cancel and refuse).
      if (s.error().code() != ErrorCode::kBusy) return void(*exit_code = Fail(s.error()));
      if (!ValidJobId(job_id)) return void(*exit_code = Fail("no restore job " + job_id + " (see `mailvault job list`)"));
      std::ifstream in(JobsDir(g) + "/" + job_id + ".pid");
      long pid = 0;
      const bool running = in >> pid && pid > 0 && ::kill(static_cast<pid_t>(pid), 0) == 0;
      std::ofstream(JobsDir(g) + "/" + job_id + ".cancel") << "cancel\n";
      if (running) {
        Out() << "asked the running job " << job_id << " (pid " << pid << ") to stop; it records the cancel itself\n";
      } else {
        Out() << "job " << job_id << " is not running and the vault is busy (serve?): the cancel is recorded at its next resume, which it refuses\n";
      }
      return;
    }
    Result<std::unique_ptr<RestoreJob>> job = RestoreJob::Load(s->store.get(), job_id);
    control::JobStore store(s->store.get());
    Result<std::optional<control::JobRecord>> record = store.Get(job_id);
    if (!job.ok() && !(record.ok() && *record)) return void(*exit_code = Fail(job.error()));
    if (Status st = AuditShell(*s, "restore.cancel", job_id); !st.ok()) return void(*exit_code = Fail(st.error()));
    // Both records: the journal (what `job resume` here reads) and the service's job record
    // (what the next serve reads, so that it does not run the job again; one a killed serve
    // left running is cancelled when the next serve starts).
    if (job.ok()) {
      if (Status st = (*job)->SetStatus("cancelled"); !st.ok()) return void(*exit_code = Fail(st.error()));
    }
    if (record.ok() && *record && !control::IsFinal((*record)->state)) {
      if (Result<control::JobRecord> c = store.RequestCancel(job_id); !c.ok()) return void(*exit_code = Fail(c.error()));
    }
    Out() << "job " << job_id << " cancelled\n";
  });

  auto* pause = jobs->add_subcommand("pause", "stop a job of the service after its current batch; `job resume` goes on from there");
  pause->add_option("ID", job_id, "the job")->required();
  pause->callback([&g, exit_code] {
    if (!ResolveOrFail(g, exit_code)) return;
    const ServiceResources* svc = Service();
    if (!svc || !svc->runner) {
      // No service: a queued job is paused in its record; a running restore from the command
      // line is stopped with Ctrl-C (it stays resumable).
      Result<ShellState> s = OpenShellState(g, kBusyHint);
      if (!s.ok()) return void(*exit_code = Fail(s.error()));
      control::JobStore store(s->store.get());
      Result<control::JobRecord> r = store.RequestPause(job_id);
      if (!r.ok()) return void(*exit_code = Fail(r.error()));
      if (Status st = AuditShell(*s, "job.pause", job_id); !st.ok()) return void(*exit_code = Fail(st.error()));
      Out() << "job " << job_id << " paused\n";
      return;
    }
    Result<control::JobRecord> r = svc->runner->Pause(job_id, ShellActor());
    if (!r.ok()) return void(*exit_code = Fail(r.error()));
    if (r->state == control::JobState::kPaused) Out() << "job " << job_id << " paused\n";
    else Out() << "asked the running job " << job_id << " to pause after its current batch\n";
  });
}

}  // namespace mailvault::cli
