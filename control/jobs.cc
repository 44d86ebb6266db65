#include "control/jobs.h"

#include <algorithm>
#include <cctype>
#include <ctime>

#include "control/keys.h"
#include "control/records.h"
#include "core/bytes.h"
#include "vault/crypto.h"

namespace mailvault::control {
namespace {

using nlohmann::json;

struct KindName {
  JobKind kind;
  const char* name;
  char letter;  // the id's first character
};
constexpr KindName kKinds[] = {{JobKind::kRestore, "restore", 'r'}, {JobKind::kExport, "export", 'e'},
                               {JobKind::kVerify, "verify", 'v'},   {JobKind::kImport, "import", 'i'},
                               {JobKind::kReindex, "reindex", 'x'}, {JobKind::kPurge, "purge", 'p'}};
constexpr const char* kStates[] = {"queued", "running", "paused", "done", "failed", "cancelled"};

std::string JobKey(const std::string& id) { return std::string(kJobPrefix) + id; }

}  // namespace

const char* JobKindName(JobKind k) {
  for (const KindName& n : kKinds) {
    if (n.kind == k) return n.name;
  }
  return "?";
}
const char* JobStateName(JobState s) { return kStates[static_cast<int>(s)]; }
std::optional<JobKind> ParseJobKind(std::string_view s) {
  for (const KindName& n : kKinds) {
    if (s == n.name) return n.kind;
  }
  return std::nullopt;
}
std::optional<JobState> ParseJobState(std::string_view s) {
  for (int i = 0; i < 6; ++i) {
    if (s == kStates[i]) return static_cast<JobState>(i);
  }
  return std::nullopt;
}
bool IsFinal(JobState s) { return s == JobState::kDone || s == JobState::kFailed || s == JobState::kCancelled; }

bool ValidJobId(std::string_view id) {
  if (id.size() != 23 || id[9] != '-' || id[16] != '-') return false;
  if (std::none_of(std::begin(kKinds), std::end(kKinds), [&](const KindName& n) { return n.letter == id[0]; })) return false;
  for (size_t i = 1; i < id.size(); ++i) {
    if (i == 9 || i == 16) continue;
    const char c = id[i];
    if (!(std::isdigit(static_cast<unsigned char>(c)) || (i > 16 && c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string NewJobId(JobKind kind) {
  char stamp[32];
  time_t now = std::time(nullptr);
  struct tm tm;
  gmtime_r(&now, &tm);
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
  char letter = 'j';
  for (const KindName& n : kKinds) {
    if (n.kind == kind) letter = n.letter;
  }
  return std::string(1, letter) + stamp + "-" + HexEncode(RandomBytes(3));
}

json Actor::ToJson() const {
  json j{{"user", user}, {"role", role}, {"auth", auth}, {"source", source}};
  if (!issued_by.empty()) j["issued_by"] = issued_by;
  return j;
}
Actor Actor::FromJson(const json& j) {
  Actor a;
  if (!j.is_object()) return a;
  a.user = j.value("user", "");
  a.role = j.value("role", "");
  a.auth = j.value("auth", "");
  a.source = j.value("source", "");
  a.issued_by = j.value("issued_by", "");
  return a;
}

AuditEvent Actor::Event(std::string action, std::string target, json details) const {
  AuditEvent e;
  e.user = user;
  e.role = role;
  e.auth = auth;
  e.source = source;
  e.action = std::move(action);
  e.target = std::move(target);
  if (!issued_by.empty()) details["issued_by"] = issued_by;
  e.details = std::move(details);
  return e;
}

json JobRecord::ToJson() const {
  return json{{"id", id},           {"kind", JobKindName(kind)}, {"state", JobStateName(state)},
              {"started_by", started_by.ToJson()}, {"params", params}, {"progress", progress},
              {"report", report},   {"error", error},            {"phase", phase},
              {"requested", requested}, {"created", created},    {"started", started},
              {"finished", finished}, {"updated", updated},      {"runs", runs},
              {"version", version}};
}

json JobRecord::PublicJson() const {
  auto when = [](int64_t t) { return t ? json(Rfc3339(t)) : json(nullptr); };
  json j{{"id", id},
         {"kind", JobKindName(kind)},
         {"state", JobStateName(state)},
         {"created", when(created)},
         {"started", when(started)},
         {"finished", when(finished)},
         {"updated", when(updated)},
         {"started_by", started_by.user},
         {"params", params},
         {"progress", progress},
         {"report", report},
         {"runs", runs}};
  if (!error.empty()) j["error"] = error;
  if (!phase.empty()) j["phase"] = phase;
  if (!requested.empty()) j["requested"] = requested;
  return j;
}

Result<JobRecord> JobRecord::FromJson(const json& j) {
  if (!j.is_object()) return Corruption("a job record is not a JSON object");
  JobRecord r;
  r.id = j.value("id", "");
  std::optional<JobKind> k = ParseJobKind(j.value("kind", ""));
  std::optional<JobState> s = ParseJobState(j.value("state", ""));
  if (!ValidJobId(r.id) || !k || !s) return Corruption("job record " + r.id + " names no valid id, kind or state");
  r.kind = *k;
  r.state = *s;
  r.started_by = Actor::FromJson(j.value("started_by", json::object()));
  r.params = j.value("params", json::object());
  r.progress = j.value("progress", json::object());
  r.report = j.contains("report") ? j["report"] : json();
  r.error = j.value("error", "");
  r.phase = j.value("phase", "");
  r.requested = j.value("requested", "");
  r.created = j.value("created", int64_t{0});
  r.started = j.value("started", int64_t{0});
  r.finished = j.value("finished", int64_t{0});
  r.updated = j.value("updated", int64_t{0});
  r.runs = j.value("runs", uint32_t{0});
  r.version = j.value("version", uint64_t{0});
  return r;
}

Result<JobRecord> JobStore::Create(JobKind kind, const Actor& who, json params, json progress) {
  JobRecord r;
  r.id = NewJobId(kind);
  r.kind = kind;
  r.started_by = who;
  r.params = std::move(params);
  r.progress = std::move(progress);
  r.created = r.updated = NowSeconds();
  r.version = 1;
  std::lock_guard<std::mutex> l(mu_);
  MV_RETURN_IF_ERROR(store_->Write({{JobKey(r.id), r.ToJson().dump()}}));
  ++changes_;
  changed_.notify_all();
  return r;
}

Result<JobRecord> JobStore::Adopt(const std::string& id, JobKind kind, const Actor& who, json params) {
  if (!ValidJobId(id)) return InvalidArgument("\"" + id + "\" is not a job id");
  std::lock_guard<std::mutex> l(mu_);
  MV_ASSIGN_OR_RETURN(std::optional<std::string> existing, store_->Get(JobKey(id)));
  if (existing) return Error(ErrorCode::kAlreadyExists, "job " + id + " is known already");
  JobRecord r;
  r.id = id;
  r.kind = kind;
  r.started_by = who;
  r.params = std::move(params);
  r.created = r.updated = NowSeconds();
  r.version = 1;
  MV_RETURN_IF_ERROR(store_->Write({{JobKey(r.id), r.ToJson().dump()}}));
  ++changes_;
  changed_.notify_all();
  return r;
}

Result<std::optional<JobRecord>> JobStore::Get(const std::string& id) const {
  if (!ValidJobId(id)) return std::optional<JobRecord>();
  MV_ASSIGN_OR_RETURN(std::optional<std::string> v, store_->Get(JobKey(id)));
  if (!v) return std::optional<JobRecord>();
  json j = json::parse(*v, nullptr, false);
  MV_ASSIGN_OR_RETURN(JobRecord r, JobRecord::FromJson(j));
  return std::optional<JobRecord>(std::move(r));
}

Result<std::vector<JobRecord>> JobStore::List(std::optional<JobKind> kind, std::optional<JobState> state) const {
  std::vector<JobRecord> out;
  Status bad = Status::Ok();
  MV_RETURN_IF_ERROR(store_->Scan(kJobPrefix, [&](std::string_view, std::string_view value) {
    Result<JobRecord> r = JobRecord::FromJson(json::parse(value, nullptr, false));
    if (!r.ok()) {
      bad = r.error();
      return false;
    }
    if ((!kind || r->kind == *kind) && (!state || r->state == *state)) out.push_back(std::move(*r));
    return true;
  }));
  MV_RETURN_IF_ERROR(bad);
  // Ids sort by creation time within a kind; across kinds the time decides.
  std::sort(out.begin(), out.end(), [](const JobRecord& a, const JobRecord& b) {
    return a.id.substr(1) != b.id.substr(1) ? a.id.substr(1) > b.id.substr(1) : a.id > b.id;
  });
  return out;
}

Result<JobRecord> JobStore::Update(const std::string& id, const std::function<Status(JobRecord&)>& edit, bool durable) {
  std::lock_guard<std::mutex> l(mu_);
  MV_ASSIGN_OR_RETURN(std::optional<JobRecord> r, Get(id));
  if (!r) return NotFound("no job " + id + " (see `mailvault job list`)");
  MV_RETURN_IF_ERROR(edit(*r));
  r->updated = NowSeconds();
  ++r->version;
  MV_RETURN_IF_ERROR(store_->Write({{JobKey(id), r->ToJson().dump()}}, durable));
  ++changes_;
  changed_.notify_all();
  return std::move(*r);
}

Result<JobRecord> JobStore::RequestCancel(const std::string& id) {
  return Update(id, [&](JobRecord& r) -> Status {
    if (IsFinal(r.state)) {
      return FailedPrecondition("job " + id + " is " + JobStateName(r.state) + " already; there is nothing to cancel");
    }
    if (r.state == JobState::kRunning) {
      r.requested = "cancel";
    } else {
      r.state = JobState::kCancelled;
      r.finished = NowSeconds();
      r.requested.clear();
    }
    return Status::Ok();
  });
}

Result<JobRecord> JobStore::RequestPause(const std::string& id) {
  return Update(id, [&](JobRecord& r) -> Status {
    if (IsFinal(r.state) || r.state == JobState::kPaused) {
      return FailedPrecondition("job " + id + " is " + JobStateName(r.state) + "; only a queued or running job can be paused");
    }
    if (r.requested == "cancel") return FailedPrecondition("job " + id + " is being cancelled");
    if (r.state == JobState::kRunning) {
      r.requested = "pause";
    } else {
      r.state = JobState::kPaused;
    }
    return Status::Ok();
  });
}

Result<JobRecord> JobStore::RequestResume(const std::string& id) {
  return Update(id, [&](JobRecord& r) -> Status {
    if (r.state == JobState::kRunning && r.requested == "pause") {
      r.requested.clear();  // asked back before it stopped: it just goes on
      return Status::Ok();
    }
    // A failed restore resumes where it stopped (the server was down, the quota is raised).
    const bool failed_can_resume = r.state == JobState::kFailed && (r.kind == JobKind::kRestore || r.kind == JobKind::kPurge);
    if (r.state != JobState::kPaused && !failed_can_resume) {
      return FailedPrecondition("job " + id + " is " + JobStateName(r.state) + "; only a paused (or failed restore) job can be resumed");
    }
    r.state = JobState::kQueued;
    r.error.clear();
    r.finished = 0;
    return Status::Ok();
  });
}

Result<JobState> JobStore::Requested(const std::string& id) const {
  MV_ASSIGN_OR_RETURN(std::optional<JobRecord> r, Get(id));
  if (!r) return NotFound("no job " + id);
  if (r->requested == "cancel" || r->state == JobState::kCancelled) return JobState::kCancelled;
  if (r->requested == "pause" || r->state == JobState::kPaused) return JobState::kPaused;
  return JobState::kRunning;
}

uint64_t JobStore::WaitForChange(uint64_t seen, std::chrono::steady_clock::time_point deadline) const {
  std::unique_lock<std::mutex> l(mu_);
  changed_.wait_until(l, deadline, [&] { return changes_ != seen; });
  return changes_;
}

uint64_t JobStore::changes() const {
  std::lock_guard<std::mutex> l(mu_);
  return changes_;
}

}  // namespace mailvault::control
