#include "jobs/runner.h"

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <optional>

#include "control/records.h"
#include "core/text.h"
#include "indexer/searcher.h"
#include "jobs/purge.h"
#include "recovery/restore.h"
#include "vault/vault.h"

namespace mailvault::jobs {
namespace {

using control::Actor;
using control::JobKind;
using control::JobRecord;
using control::JobState;
using control::JobStore;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

// How often a running job writes its progress and reads what people asked of it.
constexpr auto kTick = std::chrono::milliseconds(500);

// The kinds this runner's workers run (and queue again after a crash). Exports have their own
// runner (api/export.h); an import runs in the connection of the command that started it.
bool RunsHere(JobKind k) {
  return k == JobKind::kRestore || k == JobKind::kVerify || k == JobKind::kReindex || k == JobKind::kPurge;
}

// The request's fields, checked one by one; every error names its field.
struct ParsedRestore {
  std::string target;
  recovery::RestoreCriteria criteria;
  recovery::RestoreOptions options;
  bool dry_run = false;
};

Status FieldError(const char* name, const std::string& what) {
  return InvalidArgument(std::string("\"") + name + "\" " + what);
}

Result<std::string> String(const json& j, const char* name, bool required, size_t max = 4096) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) {
    if (required) return FieldError(name, "is required");
    return std::string();
  }
  if (!it->is_string()) return FieldError(name, "must be a string");
  std::string v = it->get<std::string>();
  if (v.size() > max) return FieldError(name, "is longer than " + std::to_string(max) + " bytes");
  return v;
}

Result<std::vector<std::string>> StringList(const json& j, const char* name, size_t max_items) {
  std::vector<std::string> out;
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return out;
  if (!it->is_array() || it->size() > max_items) return FieldError(name, "must be an array of at most " + std::to_string(max_items) + " strings");
  for (const json& v : *it) {
    if (!v.is_string() || v.get<std::string>().empty() || v.get<std::string>().size() > 512) {
      return FieldError(name, "must hold non-empty strings of at most 512 bytes");
    }
    out.push_back(v.get<std::string>());
  }
  return out;
}

Result<int64_t> Int(const json& j, const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number_integer()) return FieldError(name, "must be an integer");
  if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(hi)) {
    return FieldError(name, "must be from " + std::to_string(lo) + " to " + std::to_string(hi));
  }
  int64_t v = it->get<int64_t>();
  if (v < lo || v > hi) return FieldError(name, "must be from " + std::to_string(lo) + " to " + std::to_string(hi));
  return v;
}

Result<bool> Bool(const json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return false;
  if (!it->is_boolean()) return FieldError(name, "must be true or false");
  return it->get<bool>();
}

// A margin: seconds as a number, or a duration ("5m") as the CLI takes it.
Result<int64_t> Margin(const json& j, const char* name, int64_t fallback) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return fallback;
  if (it->is_string()) {
    Result<std::chrono::seconds> d = ParseDuration(it->get<std::string>());
    if (!d.ok()) return FieldError(name, d.error().message());
    return static_cast<int64_t>(d->count());
  }
  return Int(j, name, fallback, 0, 30LL * 86400);
}

// A time: ISO 8601 as the CLI takes it ("2026-11-24T22:00:00Z"), or seconds since the epoch.
Result<std::optional<int64_t>> Time(const json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return std::optional<int64_t>();
  if (it->is_number_integer()) return std::optional<int64_t>(it->get<int64_t>());
  if (!it->is_string()) return FieldError(name, "must be an ISO 8601 time (2026-11-24T22:00:00Z) or seconds since the epoch");
  Result<int64_t> t = ParseIsoTime(it->get<std::string>());
  if (!t.ok()) return FieldError(name, t.error().message());
  return std::optional<int64_t>(*t);
}

Result<ParsedRestore> ParseRestore(const json& j) {
  if (!j.is_object()) return InvalidArgument("a restore request is a JSON object");
  static const char* const kKnown[] = {"target", "users", "from", "until", "by_date", "margin_before", "margin_after",
                                       "query", "folder", "into", "map", "flags", "dry_run", "sent_folder", "workers",
                                       "connections", "batch", "bandwidth", "adhoc_target"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    if (std::find_if(std::begin(kKnown), std::end(kKnown), [&](const char* n) { return k == n; }) == std::end(kKnown)) {
      return InvalidArgument("unknown field \"" + k + "\" in a restore request (docs/openapi.yaml, RestoreRequest)");
    }
  }
  ParsedRestore p;
  MV_ASSIGN_OR_RETURN(p.target, String(j, "target", true, 64));
  MV_ASSIGN_OR_RETURN(std::vector<std::string> users, StringList(j, "users", 10000));
  if (users.empty()) return FieldError("users", "must name at least one custodian");
  for (const std::string& u : users) p.criteria.users.push_back(NormalizeAddress(u));
  MV_ASSIGN_OR_RETURN(p.criteria.from, Time(j, "from"));
  MV_ASSIGN_OR_RETURN(p.criteria.until, Time(j, "until"));
  if (p.criteria.from && p.criteria.until && *p.criteria.from > *p.criteria.until) {
    return FieldError("from", "is after \"until\"");
  }
  MV_ASSIGN_OR_RETURN(p.criteria.by_date, Bool(j, "by_date"));
  MV_ASSIGN_OR_RETURN(p.criteria.margin_before, Margin(j, "margin_before", 300));
  MV_ASSIGN_OR_RETURN(p.criteria.margin_after, Margin(j, "margin_after", 600));
  MV_ASSIGN_OR_RETURN(p.criteria.query, String(j, "query", false));
  MV_ASSIGN_OR_RETURN(p.options.folder, String(j, "folder", false, 512));
  MV_ASSIGN_OR_RETURN(p.options.into, String(j, "into", false, 512));
  MV_ASSIGN_OR_RETURN(std::string sent, String(j, "sent_folder", false, 512));
  if (!sent.empty()) p.options.sent_folder = sent;
  p.options.into = NormalizeAddress(p.options.into);
  if (auto it = j.find("map"); it != j.end() && !it->is_null()) {
    if (!it->is_object() || it->size() > 10000) return FieldError("map", "must be an object {\"archived@address\": \"mailbox@address\"}");
    for (const auto& [from, to] : it->items()) {
      if (!to.is_string() || from.empty() || to.get<std::string>().empty()) {
        return FieldError("map", "must map addresses to addresses (strings)");
      }
      p.options.user_map[NormalizeAddress(from)] = NormalizeAddress(to.get<std::string>());
    }
  }
  MV_ASSIGN_OR_RETURN(p.options.flags, StringList(j, "flags", 16));
  MV_ASSIGN_OR_RETURN(p.dry_run, Bool(j, "dry_run"));
  MV_ASSIGN_OR_RETURN(int64_t workers, Int(j, "workers", 4, 1, 64));
  MV_ASSIGN_OR_RETURN(int64_t connections, Int(j, "connections", 3, 1, 16));
  MV_ASSIGN_OR_RETURN(int64_t batch, Int(j, "batch", 128, 1, 1024));
  MV_ASSIGN_OR_RETURN(int64_t bandwidth, Int(j, "bandwidth", 0, 0, int64_t{1} << 40));
  p.options.bandwidth = static_cast<uint64_t>(bandwidth);
  p.options.workers = static_cast<int>(workers);
  p.options.connections = static_cast<size_t>(connections);
  p.options.batch = static_cast<size_t>(batch);
  MV_RETURN_IF_ERROR(recovery::ValidateRestoreOptions(p.options));
  return p;
}

// The request as the job keeps it: what was asked, without dry_run.
json StoredRequest(const json& request) {
  json j = request;
  j.erase("dry_run");
  return j;
}

json ProgressJson(const recovery::RestoreJob::Progress& p) {
  return json{{"total", p.selected.load()},
              {"appended", p.appended.load()},
              {"present", p.present.load()},
              {"failed", p.failed.load()},
              {"mailboxes_left", p.targets_left.load()}};
}

}  // namespace

JobRunner::JobRunner(Vault* vault, std::string vault_dir, control::StateStore* store, control::AuditLog* audit,
                     std::map<std::string, RestoreTargetConfig> targets, std::function<uint64_t()> indexed_change,
                     RunnerOptions options)
    : vault_(vault),
      vault_dir_(std::move(vault_dir)),
      store_(store),
      audit_(audit),
      jobs_(store),
      targets_(std::move(targets)),
      indexed_change_(std::move(indexed_change)),
      options_(options) {}

JobRunner::~JobRunner() { Stop(); }

Status JobRunner::Start() {
  // Whatever an earlier serve left running was cut short: queue it again (a request made
  // meanwhile, cancel or pause, is applied instead).
  MV_ASSIGN_OR_RETURN(std::vector<JobRecord> running, jobs_.List(std::nullopt, JobState::kRunning));
  for (const JobRecord& j : running) {
    if (j.kind == JobKind::kImport) {
      // An import runs in the command's connection and died with the service: it is over.
      MV_RETURN_IF_ERROR(jobs_.Update(j.id, [](JobRecord& r) {
                           r.state = JobState::kFailed;
                           r.error = "interrupted when the service stopped; what was stored is kept, so run the import "
                                     "again (it skips what is there)";
                           r.finished = control::NowSeconds();
                           return Status::Ok();
                         }).status());
      continue;
    }
    if (!RunsHere(j.kind)) continue;
    MV_RETURN_IF_ERROR(jobs_.Update(j.id, [](JobRecord& r) {
                         if (r.requested == "cancel") {
                           r.state = JobState::kCancelled;
                           r.finished = control::NowSeconds();
                         } else if (r.requested == "pause") {
                           r.state = JobState::kPaused;
                         } else {
                           r.state = JobState::kQueued;
                           r.phase = "interrupted; queued to resume";
                         }
                         r.requested.clear();
                         return Status::Ok();
                       }).status());
  }
  for (int i = 0; i < std::max(1, options_.workers); ++i) workers_.emplace_back([this] { Worker(); });
  return Status::Ok();
}

void JobRunner::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_ && workers_.empty()) return;
    stopping_ = true;
  }
  stop_all_ = true;
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
  workers_.clear();
}

void JobRunner::Wake() { wake_.notify_all(); }

Status JobRunner::Audit(const Actor& who, const std::string& action, const std::string& target, json details) {
  return audit_->Record(who.Event(action, target, std::move(details)));
}

namespace {
json AdhocJson(const RestoreTargetConfig& t) {
  return json{{"url", t.url},           {"auth_file", t.auth_file}, {"ca_file", t.ca_file},
              {"insecure", t.insecure}, {"no_tls", t.no_tls},       {"timeout", t.timeout_seconds}};
}

// adhoc_target is how the local command line names its --to and --auth-file; a request from
// anywhere else that carries one is refused (it would send a configured target's credentials to
// a server of the caller's choosing).
Status RefuseOutsideAdhoc(const json& request, const RestoreTargetConfig* adhoc) {
  if (!adhoc && request.is_object() && request.contains("adhoc_target")) {
    return InvalidArgument("unknown field \"adhoc_target\" in a restore request (docs/openapi.yaml, RestoreRequest)");
  }
  return Status::Ok();
}
}  // namespace

Result<RestoreTargetConfig> JobRunner::TargetFor(const json& params) const {
  if (auto a = params.find("adhoc_target"); a != params.end() && a->is_object()) {
    RestoreTargetConfig t;
    t.name = "command line";
    t.url = a->value("url", "");
    t.auth_file = a->value("auth_file", "");
    t.ca_file = a->value("ca_file", "");
    t.insecure = a->value("insecure", false);
    t.no_tls = a->value("no_tls", false);
    t.timeout_seconds = a->value("timeout", 60);
    return t;
  }
  const std::string name = params.value("target", "");
  auto t = targets_.find(name);
  if (t == targets_.end()) return NotFound("no restore target \"" + name + "\" is configured ([restore-target NAME] in the config file)");
  return t->second;
}

// A restore request as the job keeps it: the command line's own target put in (adhoc), the
// fields checked, and its target found and resolved.
struct JobRunner::CheckedRestore {
  json request;
  ParsedRestore parsed;
  recovery::RestoreTarget target;
};

Result<JobRunner::CheckedRestore> JobRunner::CheckRestore(const json& request, const RestoreTargetConfig* adhoc) const {
  MV_RETURN_IF_ERROR(RefuseOutsideAdhoc(request, adhoc));
  CheckedRestore c{request, {}, {}};
  if (adhoc) c.request["adhoc_target"] = AdhocJson(*adhoc), c.request["target"] = "command line";
  MV_ASSIGN_OR_RETURN(c.parsed, ParseRestore(c.request));
  MV_ASSIGN_OR_RETURN(RestoreTargetConfig config, TargetFor(c.request));
  MV_ASSIGN_OR_RETURN(c.target, config.Resolve());
  return c;
}

Result<json> JobRunner::PlanRestore(const json& request, const Actor& who, const RestoreTargetConfig* adhoc) {
  MV_ASSIGN_OR_RETURN(CheckedRestore c, CheckRestore(request, adhoc));
  const json& req = c.request;
  ParsedRestore& p = c.parsed;
  const recovery::RestoreTarget& target = c.target;
  MV_ASSIGN_OR_RETURN(recovery::Credentials cred, recovery::ReadCredentials(target.auth_file));
  MV_RETURN_IF_ERROR(Audit(who, "restore.plan", p.target, json{{"request", StoredRequest(req)}}));
  std::unique_ptr<index::Searcher> searcher;
  if (!p.criteria.query.empty()) {
    // The plan is of the vault as it is now: wait (a little) for the index to have all of it.
    p.criteria.index_complete_to = vault_->last_change();
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (indexed_change_ && indexed_change_() < p.criteria.index_complete_to && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    MV_ASSIGN_OR_RETURN(searcher, index::Searcher::Open(vault_dir_));
  }
  MV_ASSIGN_OR_RETURN(std::vector<recovery::PlannedTarget> plan,
                      recovery::SelectForRestore(*vault_, searcher.get(), p.criteria, p.options));
  MV_ASSIGN_OR_RETURN(recovery::JobReport r, recovery::DryRun(*vault_, target, cred, p.options, std::move(plan)));
  return recovery::PlanJson(r);
}

Result<JobRecord> JobRunner::SubmitRestore(const json& request, const Actor& who, const RestoreTargetConfig* adhoc) {
  MV_ASSIGN_OR_RETURN(CheckedRestore c, CheckRestore(request, adhoc));
  json params = StoredRequest(c.request);
  // The job selects by the index as the vault was now: it waits until the index has caught up
  // with this change (live capture keeps the index a few changes behind).
  params["vault_change"] = vault_->last_change();
  MV_ASSIGN_OR_RETURN(JobRecord job, jobs_.Create(JobKind::kRestore, who, params,
                                                  json{{"total", 0}, {"appended", 0}, {"present", 0}, {"failed", 0}}));
  if (Status a = Audit(who, "restore.create", job.id, json{{"job", job.id}, {"request", params}}); !a.ok()) {
    (void)jobs_.RequestCancel(job.id);  // queued: cancelled at once, before any worker takes it
    return a.error().With("the audit trail refused the entry, so the job was not started");
  }
  Wake();
  return job;
}

Result<JobRecord> JobRunner::SubmitVerify(const json& request, const Actor& who) {
  double sample = 100;
  if (auto it = request.find("sample"); it != request.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() <= 0 || it->get<double>() > 100) {
      return InvalidArgument("\"sample\" is a percentage above 0, at most 100");
    }
    sample = it->get<double>();
  }
  MV_ASSIGN_OR_RETURN(JobRecord job, jobs_.Create(JobKind::kVerify, who, json{{"sample", sample}}));
  if (Status a = Audit(who, "verify.create", job.id, json{{"job", job.id}, {"sample", sample}}); !a.ok()) {
    (void)jobs_.RequestCancel(job.id);
    return a.error().With("the audit trail refused the entry, so the job was not started");
  }
  Wake();
  return job;
}

// While it lives, reads every tick what people asked of a running job (cancel, pause) and
// whether serve is stopping, and then sets *stop: the job ends at its next check of the flag.
class JobRunner::RequestWatcher {
 public:
  RequestWatcher(JobRunner* runner, std::string id, std::atomic<bool>* stop)
      : thread_([this, runner, id = std::move(id), stop] {
          std::unique_lock<std::mutex> l(mu_);
          while (!cv_.wait_for(l, kTick, [&] { return done_; })) {
            Result<JobState> asked = runner->jobs_.Requested(id);
            if (runner->stop_all_ || (asked.ok() && *asked != JobState::kRunning)) *stop = true;
          }
        }) {}
  ~RequestWatcher() {
    {
      std::lock_guard<std::mutex> l(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  RequestWatcher(const RequestWatcher&) = delete;
  RequestWatcher& operator=(const RequestWatcher&) = delete;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;  // REQUIRES: mu_
  std::thread thread_;  // last: it starts once the members it uses exist
};

Result<JobRecord> JobRunner::SubmitReindex(const json& request, const Actor& who) {
  if (!request.is_object()) return InvalidArgument("a reindex request is a JSON object");
  MV_ASSIGN_OR_RETURN(bool compact, Bool(request, "compact"));
  for (const auto& [k, v] : request.items()) {
    if (k != "compact" && k != "kind") return FieldError(k.c_str(), "is not a field of a reindex request (compact)");
  }
  if (!index_) return FailedPrecondition("this service keeps no index");
  const json params{{"compact", compact}};
  MV_ASSIGN_OR_RETURN(JobRecord job, jobs_.Create(JobKind::kReindex, who, params,
                                                  compact ? json::object() : json{{"total", 0}, {"indexed", 0}}));
  if (Status a = Audit(who, "reindex.create", job.id, json{{"job", job.id}, {"compact", compact}}); !a.ok()) {
    (void)jobs_.RequestCancel(job.id);
    return a.error().With("the audit trail refused the entry, so the job was not started");
  }
  Wake();
  return job;
}

Result<JobRecord> JobRunner::SubmitPurge(const std::string& purge_id, const Actor& approver) {
  if (!policies_ || !records_) return FailedPrecondition("this service runs no purges (no policy store)");
  MV_ASSIGN_OR_RETURN(JobRecord job, jobs_.Adopt(purge_id, JobKind::kPurge, approver, json{{"purge", purge_id}}));
  Wake();
  return job;
}

JobState JobRunner::RunPurgeJob(JobRecord& job, std::atomic<bool>* stop) {
  if (!policies_ || !records_) {
    job.error = "this service runs no purges (no policy store)";
    return JobState::kFailed;
  }
  const std::string id = job.params.value("purge", job.id);
  job.phase = "purging";
  std::optional<RequestWatcher> watch(std::in_place, this, job.id, stop);
  auto last_saved = Clock::now() - kTick;
  PurgeEnv env{vault_, vault_dir_, store_, audit_, records_, policies_, exports_dir_, index_};
  Result<json> r = RunPurge(env, id, stop, [&](const std::string& step, uint64_t done, uint64_t total) {
    job.progress = json{{"step", step}, {"done", done}, {"total", total}};
    if (Clock::now() - last_saved < kTick) return;
    last_saved = Clock::now();
    (void)jobs_.Update(job.id, [&](JobRecord& rec) {
      rec.progress = job.progress;
      rec.phase = step;
      return Status::Ok();
    }, /*durable=*/false);
  });
  watch.reset();
  policy::PurgeStore purges(store_, audit_);
  if (!r.ok()) {
    job.error = r.error().message();
    if (stop->load()) {
      JobState end = stop_all_ ? JobState::kQueued : StoppedState(job.id);
      if (end == JobState::kCancelled) {
        (void)purges.Update(id, [&](policy::PurgeRecord& p) {
          p.state = policy::kPurgeCancelled;
          p.error = "cancelled while it ran; " + std::to_string(p.purged) + " messages were purged before (their dispositions say so)";
          p.finished = control::NowSeconds();
          return Status::Ok();
        });
      }
      return end;
    }
    (void)purges.Update(id, [&](policy::PurgeRecord& p) {
      p.state = policy::kPurgeFailed;
      p.error = job.error;
      return Status::Ok();
    });
    return JobState::kFailed;
  }
  job.report = *r;
  job.progress = json{{"step", "done"}, {"purged", r->value("purged", uint64_t{0})}};
  return JobState::kDone;
}

// A person's request on a job: audited before the change (an unknown id is refused first,
// unrecorded), then applied by the store, which refuses what the job's state does not allow.
Result<JobRecord> JobRunner::Request(const std::string& id, const Actor& who, const char* verb,
                                     Result<JobRecord> (JobStore::*apply)(const std::string&)) {
  MV_ASSIGN_OR_RETURN(std::optional<JobRecord> before, jobs_.Get(id));
  if (!before) return NotFound("no job " + id + " (see `mailvault job list`)");
  MV_RETURN_IF_ERROR(Audit(who, std::string("job.") + verb, id,
                           json{{"kind", control::JobKindName(before->kind)}, {"state", control::JobStateName(before->state)}}));
  return (jobs_.*apply)(id);
}

Result<JobRecord> JobRunner::Cancel(const std::string& id, const Actor& who) {
  return Request(id, who, "cancel", &JobStore::RequestCancel);
}

Result<JobRecord> JobRunner::Pause(const std::string& id, const Actor& who) {
  return Request(id, who, "pause", &JobStore::RequestPause);
}

Result<JobRecord> JobRunner::Resume(const std::string& id, const Actor& who) {
  Result<JobRecord> r = Request(id, who, "resume", &JobStore::RequestResume);
  if (r.ok()) Wake();
  return r;
}

Result<JobRecord> JobRunner::Adopt(const std::string& id, const Actor& who) {
  MV_ASSIGN_OR_RETURN(std::unique_ptr<recovery::RestoreJob> rj, recovery::RestoreJob::Load(store_, id));
  if (rj->status() == "cancelled") return FailedPrecondition("job " + id + " was cancelled; start a new restore instead");
  if (rj->status() == "done") return FailedPrecondition("job " + id + " is done already");
  MV_RETURN_IF_ERROR(Audit(who, "job.resume", id, json{{"kind", "restore"}, {"adopted", true}}));
  MV_ASSIGN_OR_RETURN(JobRecord job, jobs_.Adopt(id, JobKind::kRestore, who, json{{"adopted", true}}));
  Wake();
  return job;
}

bool JobRunner::Claim(JobRecord* job) {
  Result<std::vector<JobRecord>> queued = jobs_.List(std::nullopt, JobState::kQueued);
  if (!queued.ok()) return false;
  // List is newest first: the oldest waiting job goes first.
  for (auto it = queued->rbegin(); it != queued->rend(); ++it) {
    if (!RunsHere(it->kind)) continue;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (running_.count(it->id)) continue;
      running_.insert(it->id);
    }
    Result<JobRecord> claimed = jobs_.Update(it->id, [](JobRecord& r) -> Status {
      if (r.state != JobState::kQueued) return FailedPrecondition("no longer queued");
      r.state = JobState::kRunning;
      if (!r.started) r.started = control::NowSeconds();
      ++r.runs;
      r.phase = "starting";
      return Status::Ok();
    });
    if (claimed.ok()) {
      *job = std::move(*claimed);
      return true;
    }
    std::lock_guard<std::mutex> l(mu_);
    running_.erase(it->id);
  }
  return false;
}

void JobRunner::Worker() {
  // Capture comes first: jobs run at a lower priority (and the threads a job starts, the
  // restore's IMAP workers, inherit it). SIGTERM and SIGINT stay with serve's main thread.
  ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), options_.nice);
  while (!stop_all_) {
    JobRecord job;
    if (Claim(&job)) {
      Run(std::move(job));
      continue;
    }
    std::unique_lock<std::mutex> l(mu_);
    if (stopping_) break;
    wake_.wait_for(l, std::chrono::seconds(2));
  }
}

JobState JobRunner::StoppedState(const std::string& id) {
  Result<JobState> asked = jobs_.Requested(id);
  if (asked.ok() && *asked != JobState::kRunning) return *asked;
  return JobState::kQueued;  // serve is stopping: the next start resumes it
}

void JobRunner::Run(JobRecord job) {
  std::atomic<bool> stop{false};
  JobState end = JobState::kFailed;
  if (job.kind == JobKind::kRestore) end = RunRestore(job, &stop);
  else if (job.kind == JobKind::kVerify) end = RunVerify(job, &stop);
  else if (job.kind == JobKind::kReindex) end = RunReindex(job, &stop);
  else if (job.kind == JobKind::kPurge) end = RunPurgeJob(job, &stop);
  Result<JobRecord> saved = jobs_.Update(job.id, [&](JobRecord& r) {
    // A cancel accepted after the job decided how it stopped still wins.
    if (r.requested == "cancel" && end != JobState::kDone) end = JobState::kCancelled;
    r.state = end;
    r.requested.clear();
    r.report = job.report;
    r.progress = job.progress;
    r.error = job.error;
    r.phase = end == JobState::kQueued ? "interrupted; queued to resume" : "";
    if (control::IsFinal(end)) r.finished = control::NowSeconds();
    return Status::Ok();
  });
  if (control::IsFinal(end)) {
    json details{{"job", job.id}, {"state", control::JobStateName(end)}};
    if (!job.error.empty()) details["error"] = job.error;
    if (job.report.is_object() && job.report.contains("totals")) details["totals"] = job.report["totals"];
    // The job acts for the person who started it: its entries name them.
    (void)Audit(job.started_by, std::string(control::JobKindName(job.kind)) + ".finish", job.id, details);
  }
  std::lock_guard<std::mutex> l(mu_);
  running_.erase(job.id);
}

JobState JobRunner::RunRestore(JobRecord& job, std::atomic<bool>* stop) {
  const json& params = job.params;
  // A job that has selected already has its plan and journal (and, adopted from the command
  // line, its target) in the store; a new one is planned below.
  std::unique_ptr<recovery::RestoreJob> rj;
  if (Result<std::unique_ptr<recovery::RestoreJob>> loaded = recovery::RestoreJob::Load(store_, job.id); loaded.ok()) {
    rj = std::move(*loaded);
  }
  Result<ParsedRestore> p = InvalidArgument("no restore request");
  Result<recovery::RestoreTarget> target = InvalidArgument("no target");
  if (params.contains("target") || params.contains("adhoc_target")) {
    p = ParseRestore([&] {
      json req = params;
      req.erase("vault_change");
      return req;
    }());
    if (!p.ok()) {
      job.error = p.error().message();
      return JobState::kFailed;
    }
    Result<RestoreTargetConfig> config = TargetFor(params);
    if (!config.ok()) {
      job.error = config.error().message() + "; configure it and resume the job";
      return JobState::kFailed;
    }
    target = config->Resolve();
  } else if (rj) {
    target = rj->target();
  }
  if (!target.ok()) {
    job.error = target.error().message();
    return JobState::kFailed;
  }
  Result<recovery::Credentials> cred = recovery::ReadCredentials(target->auth_file);
  if (!cred.ok()) {
    job.error = cred.error().message();
    return JobState::kFailed;
  }
  if (!rj && !p.ok()) {
    job.error = "the job has neither a plan nor a request to plan from (" + p.error().message() + ")";
    return JobState::kFailed;
  }
  // Watches for cancel and pause (and serve stopping) while the job works, and writes the
  // progress the job's event stream and `job show` read.
  recovery::RestoreJob::Progress progress;
  std::mutex mu;
  std::condition_variable done_cv;
  bool done = false;
  std::thread watcher([&] {
    std::unique_lock<std::mutex> l(mu);
    json last;
    while (!done) {
      done_cv.wait_for(l, kTick);
      if (done) break;
      l.unlock();
      Result<JobState> asked = jobs_.Requested(job.id);
      if (stop_all_ || (asked.ok() && *asked != JobState::kRunning)) *stop = true;
      json now = ProgressJson(progress);
      if (now != last) {
        (void)jobs_.Update(job.id, [&](JobRecord& r) {
          r.progress = now;
          return Status::Ok();
        }, /*durable=*/false);
        last = now;
      }
      l.lock();
    }
  });
  auto finish_watcher = [&] {
    {
      std::lock_guard<std::mutex> l(mu);
      done = true;
    }
    done_cv.notify_all();
    watcher.join();
  };

  if (rj && rj->status() == "cancelled") {
    finish_watcher();
    job.error = "cancelled from the command line while no service ran";
    return JobState::kCancelled;
  }
  if (rj) {
    rj->mutable_target() = *target;  // the configuration may have changed (a new CA file)
  } else {
    // First run: select. With a query, wait until the index has what the vault had when the
    // job was created.
    const uint64_t want = params.value("vault_change", uint64_t{0});
    if (!p->criteria.query.empty() && indexed_change_) {
      (void)jobs_.Update(job.id, [&](JobRecord& r) {
        r.phase = "waiting for the index to reach change " + std::to_string(want);
        return Status::Ok();
      }, false);
      const auto deadline = Clock::now() + options_.index_wait;
      while (indexed_change_() < want && !*stop && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(200));
      if (*stop) {
        finish_watcher();
        return StoppedState(job.id);
      }
      if (indexed_change_() < want) {
        finish_watcher();
        job.error = "the index did not catch up with the vault within " + std::to_string(options_.index_wait.count()) +
                    " s (see `mailvault status`); resume the job once it has";
        return JobState::kFailed;
      }
    }
    (void)jobs_.Update(job.id, [&](JobRecord& r) {
      r.phase = "selecting";
      return Status::Ok();
    }, false);
    std::unique_ptr<index::Searcher> searcher;
    if (!p->criteria.query.empty()) {
      Result<std::unique_ptr<index::Searcher>> s = index::Searcher::Open(vault_dir_);
      if (!s.ok()) {
        finish_watcher();
        job.error = s.error().With("the query needs the index").message();
        return JobState::kFailed;
      }
      searcher = std::move(*s);
    }
    p->criteria.index_complete_to = want;
    Result<std::vector<recovery::PlannedTarget>> plan = recovery::SelectForRestore(*vault_, searcher.get(), p->criteria, p->options);
    Result<std::unique_ptr<recovery::RestoreJob>> created =
        plan.ok() ? recovery::RestoreJob::Create(store_, *target, p->criteria, p->options, std::move(*plan), job.id)
                  : Result<std::unique_ptr<recovery::RestoreJob>>(plan.error());
    if (!created.ok()) {
      finish_watcher();
      job.error = created.error().message();
      return JobState::kFailed;
    }
    rj = std::move(*created);
  }
  (void)jobs_.Update(job.id, [&](JobRecord& r) {
    r.phase = "restoring";
    return Status::Ok();
  }, false);
  Result<recovery::JobReport> r = rj->Run(*vault_, *cred, stop, &progress);
  finish_watcher();
  job.progress = ProgressJson(progress);
  if (!r.ok()) {
    job.error = r.error().message();
    return *stop ? StoppedState(job.id) : JobState::kFailed;
  }
  if (*stop && r->status != "done") {
    const JobState asked = StoppedState(job.id);
    if (asked == JobState::kCancelled) {
      r->status = "cancelled";
      (void)rj->SetStatus("cancelled");
    } else if (asked == JobState::kPaused) {
      r->status = "paused";
    }
  }
  job.report = recovery::ReportJson(*r);
  const json& totals = job.report["totals"];
  job.progress = json{{"total", totals["selected"]},
                      {"appended", totals["appended"]},
                      {"present", totals["present"]},
                      {"failed", totals["failed"]},
                      {"pending", totals["pending"]}};
  if (r->status == "done") return JobState::kDone;
  if (*stop) return StoppedState(job.id);
  // Failed: name each mailbox that could not be finished and how many messages failed.
  std::string why;
  for (const recovery::TargetReport& tr : r->targets) {
    if (!tr.error.empty()) why += (why.empty() ? "" : "; ") + tr.mailbox + ": " + tr.error;
  }
  if (why.empty()) why = std::to_string(totals["failed"].get<uint64_t>()) + " message(s) were refused by the server (see the report)";
  job.error = why;
  return JobState::kFailed;
}

JobState JobRunner::RunVerify(JobRecord& job, std::atomic<bool>* stop) {
  const double sample = job.params.value("sample", 100.0);
  const auto started = Clock::now();
  std::atomic<uint64_t> done{0}, total{0};
  Result<VerifyReport> r = [&] {
    // Cancel and pause end it before the next pack; a verify that runs again starts over.
    RequestWatcher watch(this, job.id, stop);
    return vault_->Verify(sample, [&](uint64_t d, uint64_t t) {
      done = d;
      total = t;
      if (d % 1000 == 0) {
        (void)jobs_.Update(job.id, [&](JobRecord& rec) {
          rec.progress = json{{"total", t}, {"checked", d}};
          return Status::Ok();
        }, false);
      }
    }, stop);
  }();
  if (!r.ok()) {
    job.error = r.error().message();
    return JobState::kFailed;
  }
  job.progress = json{{"total", total.load()}, {"checked", done.load()}};
  if (r->stopped) return StoppedState(job.id);
  job.report = json{{"messages_checked", r->messages_checked}, {"envelopes_checked", r->envelopes_checked},
                    {"bytes_checked", r->bytes_checked},       {"packs_checked", r->packs_checked},
                    {"problems", r->problems},                 {"ok", r->ok()},
                    {"seconds", std::chrono::duration<double>(Clock::now() - started).count()}};
  if (!r->ok()) {
    job.error = std::to_string(r->problems.size()) + " problem(s) found (see the report)";
    return JobState::kFailed;
  }
  return JobState::kDone;
}

JobState JobRunner::RunReindex(JobRecord& job, std::atomic<bool>* stop) {
  if (!index_) {
    job.error = "this service keeps no index";
    return JobState::kFailed;
  }
  const bool compact = job.params.value("compact", false);
  // A rebuild that ran before (paused, or interrupted by a stop or a crash) goes on from the
  // documents it wrote: the first progress it saved marks the index as emptied already.
  const bool resumed = job.progress.value("emptied", false);
  IndexTask task = compact ? IndexTask::kCompact : resumed ? IndexTask::kResumeRebuild : IndexTask::kRebuild;
  job.phase = compact ? "compacting" : "indexing";
  // Cancel and pause are read every tick; the rebuild stops after the chunk it is writing.
  std::optional<RequestWatcher> watch(std::in_place, this, job.id, stop);
  auto last_saved = Clock::now() - kTick;
  Result<json> r = index_->Maintain(task, stop, [&](uint64_t indexed, uint64_t total) {
    job.progress = json{{"total", total}, {"indexed", indexed}, {"emptied", true}};
    if (Clock::now() - last_saved < kTick) return;
    last_saved = Clock::now();
    (void)jobs_.Update(job.id, [&](JobRecord& rec) {
      rec.progress = job.progress;
      return Status::Ok();
    }, /*durable=*/false);
  });
  watch.reset();
  if (!r.ok()) {
    job.error = r.error().message();
    return stop_all_ ? JobState::kQueued : JobState::kFailed;
  }
  job.report = *r;
  if (!compact && !r->value("finished", false)) {
    // Stopped part-way: the index is consistent and behind; serve's indexer, following the
    // vault again, fills in the rest on its own (a cancelled rebuild is finished that way too).
    return StoppedState(job.id);
  }
  if (compact) job.progress = json{{"documents", r->value("documents", uint64_t{0})}};
  else job.progress["indexed"] = job.progress["total"] = r->value("last_change", uint64_t{0});
  return JobState::kDone;
}

}  // namespace mailvault::jobs
