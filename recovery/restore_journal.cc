// Restore: the job's record and journal in the state store, its outcomes and reports (as JSON too).
#include <algorithm>
#include <cstdio>
#include <unordered_set>

#include "control/jobs.h"
#include "control/keys.h"
#include "control/state.h"
#include "core/text.h"
#include "recovery/restore_internal.h"

namespace mailvault::recovery {
namespace {

using nlohmann::json;

const char* KindName(Outcome::Kind k) {
  switch (k) {
    case Outcome::Kind::kIntent: return "intent";
    case Outcome::Kind::kAppended: return "appended";
    case Outcome::Kind::kPresent: return "present";
    case Outcome::Kind::kFailed: return "failed";
  }
  return "intent";
}

Result<Outcome> DecodeOutcome(std::string_view v) {
  json j = json::parse(v, nullptr, false);
  if (!j.is_object() || !j.contains("k")) return Error(ErrorCode::kCorruption, "a restore journal record is not readable");
  Outcome o;
  const std::string k = j.value("k", "");
  o.kind = k == "appended" ? Outcome::Kind::kAppended
           : k == "present" ? Outcome::Kind::kPresent
           : k == "failed"  ? Outcome::Kind::kFailed
                            : Outcome::Kind::kIntent;
  o.uid = j.value("uid", 0u);
  o.uid_validity = j.value("uv", 0u);
  o.why = j.value("why", "");
  o.at = j.value("at", int64_t{0});
  return o;
}

json OptionsJson(const RestoreOptions& o) {
  return json{{"folder", o.folder}, {"sent_folder", o.sent_folder}, {"into", o.into}, {"user_map", o.user_map},
              {"flags", o.flags}, {"workers", o.workers}, {"connections", o.connections}, {"bandwidth", o.bandwidth}, {"batch", o.batch}};
}

RestoreOptions OptionsFrom(const json& j) {
  RestoreOptions o;
  o.folder = j.value("folder", "");
  o.sent_folder = j.value("sent_folder", "Sent");
  o.into = j.value("into", "");
  o.user_map = j.value("user_map", std::map<std::string, std::string>{});
  o.flags = j.value("flags", std::vector<std::string>{});
  o.workers = j.value("workers", 4);
  o.connections = j.value("connections", size_t{3});
  o.bandwidth = j.value("bandwidth", uint64_t{0});
  o.batch = j.value("batch", size_t{128});
  return o;
}

json CriteriaJson(const RestoreCriteria& c) {
  json j{{"users", c.users}, {"by_date", c.by_date}, {"margin_before", c.margin_before},
         {"margin_after", c.margin_after}, {"query", c.query}};
  if (c.from) j["from"] = *c.from;
  if (c.until) j["until"] = *c.until;
  return j;
}

}  // namespace

namespace restore_internal {

std::string HeaderKey(const std::string& job) { return control::kRestoreHeaderPrefix + job; }
std::string TargetKey(const std::string& job, size_t t) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%05zu", t);
  return control::kRestoreTargetPrefix + job + "/" + buf;
}
std::string OutcomePrefix(const std::string& job, size_t t) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%05zu", t);
  return control::kRestoreOutcomePrefix + job + "/" + buf + "/";
}

std::string EncodeOutcome(const Outcome& o) {
  json j{{"k", KindName(o.kind)}, {"at", o.at}};
  if (o.uid) j["uid"] = o.uid;
  if (o.uid_validity) j["uv"] = o.uid_validity;
  if (!o.why.empty()) j["why"] = ToValidUtf8(o.why);  // a server's words may be any bytes
  return j.dump();
}

}  // namespace restore_internal

using restore_internal::HeaderKey;
using restore_internal::LoadOutcomes;
using restore_internal::Now;
using restore_internal::Tally;
using restore_internal::TargetKey;

// ---- the job record ----

Result<std::unique_ptr<RestoreJob>> RestoreJob::Create(control::StateStore* store, const RestoreTarget& target,
                                                       const RestoreCriteria& criteria, const RestoreOptions& options,
                                                       std::vector<PlannedTarget> plan, std::string id) {
  MV_RETURN_IF_ERROR(ValidateRestoreOptions(options));
  if (id.empty()) id = control::NewJobId(control::JobKind::kRestore);
  std::unique_ptr<RestoreJob> job(new RestoreJob(store, std::move(id)));
  job->status_ = "planned";
  job->created_ = Now();
  job->target_ = target;
  job->criteria_json_ = CriteriaJson(criteria).dump();
  job->options_json_ = OptionsJson(options).dump();
  job->options_ = options;
  job->targets_ = std::move(plan);
  control::StateStore::Batch batch;
  for (size_t i = 0; i < job->targets_.size(); ++i) {
    const PlannedTarget& t = job->targets_[i];
    json msgs = json::array(), copies = json::array();
    for (const PlannedMessage& m : t.messages) msgs.push_back(json::array({m.id, m.internal_date, m.size, m.sent}));
    for (const auto& [id, of] : t.copies) copies.push_back(json::array({id, of}));
    batch.emplace_back(TargetKey(job->id_, i), json{{"messages", msgs}, {"copies", copies}}.dump());
  }
  MV_RETURN_IF_ERROR(store->Write(batch));
  MV_RETURN_IF_ERROR(job->SaveHeader());
  return job;
}

Status RestoreJob::SaveHeader() const {
  if (!store_) return Status::Ok();
  json targets = json::array();
  for (const PlannedTarget& t : targets_) {
    targets.push_back(json{{"custodian", t.custodian}, {"mailbox", t.mailbox}, {"folder", t.folder}, {"n", t.messages.size()}});
  }
  json h{{"id", id_},
         {"status", status_},
         {"created", created_},
         {"updated", Now()},
         {"url", target_.url},
         {"host", target_.endpoint.host},
         {"port", target_.endpoint.port},
         {"tls", static_cast<int>(target_.endpoint.tls)},
         {"verify", target_.endpoint.verify_certificate},
         {"ca_file", target_.endpoint.ca_file},
         {"timeout", target_.endpoint.timeout.count()},
         {"auth_file", target_.auth_file},
         {"criteria", json::parse(criteria_json_)},
         {"options", json::parse(options_json_)},
         {"targets", targets}};
  return store_->Write({{HeaderKey(id_), h.dump()}});
}

Status RestoreJob::SetStatus(const std::string& status) {
  status_ = status;
  return SaveHeader();
}

Result<std::unique_ptr<RestoreJob>> RestoreJob::Load(control::StateStore* store, const std::string& id) {
  MV_ASSIGN_OR_RETURN(std::optional<std::string> head, store->Get(HeaderKey(id)));
  if (!head) return NotFound("no restore job " + id + " (see `mailvault job list`)");
  json h = json::parse(*head, nullptr, false);
  if (!h.is_object()) return Error(ErrorCode::kCorruption, "restore job " + id + ": its record is not readable");
  std::unique_ptr<RestoreJob> job(new RestoreJob(store, id));
  job->status_ = h.value("status", "");
  job->created_ = h.value("created", int64_t{0});
  job->target_.url = h.value("url", "");
  job->target_.endpoint.host = h.value("host", "");
  job->target_.endpoint.port = h.value("port", uint16_t{143});
  job->target_.endpoint.tls = static_cast<ImapEndpoint::Tls>(h.value("tls", 1));
  job->target_.endpoint.verify_certificate = h.value("verify", true);
  job->target_.endpoint.ca_file = h.value("ca_file", "");
  job->target_.endpoint.timeout = std::chrono::seconds(h.value("timeout", int64_t{60}));
  job->target_.auth_file = h.value("auth_file", "");
  job->criteria_json_ = h["criteria"].dump();
  job->options_json_ = h["options"].dump();
  job->options_ = OptionsFrom(h["options"]);
  const json& targets = h["targets"];
  for (size_t i = 0; i < targets.size(); ++i) {
    PlannedTarget t;
    t.custodian = targets[i].value("custodian", "");
    t.mailbox = targets[i].value("mailbox", "");
    t.folder = targets[i].value("folder", "");
    MV_ASSIGN_OR_RETURN(std::optional<std::string> rec, store->Get(TargetKey(id, i)));
    if (!rec) return Error(ErrorCode::kCorruption, "restore job " + id + ": target " + std::to_string(i) + " is missing");
    json r = json::parse(*rec, nullptr, false);
    if (!r.is_object()) return Error(ErrorCode::kCorruption, "restore job " + id + ": target " + std::to_string(i) + " is not readable");
    for (const json& m : r["messages"]) {
      t.messages.push_back(PlannedMessage{m[0].get<std::string>(), m[1].get<int64_t>(), m[2].get<uint64_t>(), m[3].get<bool>()});
    }
    for (const json& cp : r["copies"]) t.copies.emplace_back(cp[0].get<std::string>(), cp[1].get<std::string>());
    job->targets_.push_back(std::move(t));
  }
  return job;
}

Result<std::vector<JobReport>> RestoreJob::List(control::StateStore* store) {
  std::vector<std::string> ids;
  MV_RETURN_IF_ERROR(store->Scan(control::kRestoreHeaderPrefix, [&](std::string_view key, std::string_view) {
    ids.emplace_back(key.substr(std::string_view(control::kRestoreHeaderPrefix).size()));
    return true;
  }));
  std::vector<JobReport> out;
  for (const std::string& id : ids) {
    MV_ASSIGN_OR_RETURN(std::unique_ptr<RestoreJob> job, Load(store, id));
    MV_ASSIGN_OR_RETURN(JobReport r, job->Report());
    out.push_back(std::move(r));
  }
  return out;
}

namespace restore_internal {

Result<std::map<std::string, Outcome>> LoadOutcomes(control::StateStore* store, const std::string& job, size_t t) {
  std::map<std::string, Outcome> out;
  if (!store) return out;
  const std::string prefix = OutcomePrefix(job, t);
  Status bad = Status::Ok();
  MV_RETURN_IF_ERROR(store->Scan(prefix, [&](std::string_view key, std::string_view value) {
    Result<Outcome> o = DecodeOutcome(value);
    if (!o.ok()) {
      bad = o.error();
      return false;
    }
    out[std::string(key.substr(prefix.size()))] = std::move(o).value();
    return true;
  }));
  MV_RETURN_IF_ERROR(bad);
  return out;
}

void Tally(const PlannedTarget& t, const std::map<std::string, Outcome>& outcomes, TargetReport* r) {
  r->custodian = t.custodian;
  r->mailbox = t.mailbox;
  r->folder = t.folder;
  r->selected = t.messages.size();
  r->present = r->appended = r->failed = r->pending = r->bytes = 0;
  r->failures.clear();
  for (const PlannedMessage& m : t.messages) {
    auto it = outcomes.find(m.id);
    if (it == outcomes.end() || it->second.kind == Outcome::Kind::kIntent) {
      ++r->pending;
      continue;
    }
    switch (it->second.kind) {
      case Outcome::Kind::kPresent: ++r->present; break;
      case Outcome::Kind::kAppended:
        ++r->appended;
        r->bytes += m.size;
        break;
      case Outcome::Kind::kFailed:
        ++r->failed;
        r->failures.emplace_back(m.id, it->second.why);
        break;
      default: break;
    }
  }
}

}  // namespace restore_internal

Result<JobReport> RestoreJob::Report() const {
  JobReport r;
  r.id = id_;
  r.status = status_;
  r.created = created_;
  r.target = target_.url;
  for (size_t i = 0; i < targets_.size(); ++i) {
    MV_ASSIGN_OR_RETURN(auto outcomes, LoadOutcomes(store_, id_, i));
    TargetReport tr;
    Tally(targets_[i], outcomes, &tr);
    r.targets.push_back(std::move(tr));
  }
  return r;
}

// ---- reports as JSON ----

json ReportJson(const JobReport& r) {
  json boxes = json::array();
  uint64_t selected = 0, present = 0, appended = 0, failed = 0, pending = 0;
  for (const TargetReport& t : r.targets) {
    json failures = json::array();
    for (const auto& [id, why] : t.failures) failures.push_back(json{{"id", id}, {"why", why}});
    json b{{"user", t.custodian}, {"mailbox", t.mailbox}, {"folder", t.folder}, {"selected", t.selected},
           {"present", t.present}, {"appended", t.appended}, {"failed", t.failed}, {"pending", t.pending},
           {"bytes", t.bytes}, {"failures", failures}};
    if (!t.error.empty()) b["error"] = t.error;
    boxes.push_back(b);
    selected += t.selected;
    present += t.present;
    appended += t.appended;
    failed += t.failed;
    pending += t.pending;
  }
  return json{{"job", r.id},
              {"status", r.status},
              {"target", r.target},
              {"created", r.created},
              {"mailboxes", boxes},
              {"totals", {{"selected", selected}, {"present", present}, {"appended", appended}, {"failed", failed},
                          {"pending", pending}}}};
}


json PlanJson(const JobReport& r) {
  json plan = json::array();
  for (const TargetReport& t : r.targets) {
    json p{{"user", t.custodian}, {"mailbox", t.mailbox}, {"folder", t.folder}, {"selected", t.selected},
           {"present", t.present}, {"to_append", t.pending}, {"bytes", t.bytes}};
    if (!t.error.empty()) p["error"] = t.error;
    plan.push_back(p);
  }
  return json{{"plan", plan}};
}

Status ForgetPurged(control::StateStore* store, const std::vector<std::string>& ids) {
  std::unordered_set<std::string> gone(ids.begin(), ids.end());
  control::StateStore::Batch batch;
  MV_RETURN_IF_ERROR(store->Scan(control::kRestoreTargetPrefix, [&](std::string_view key, std::string_view value) {
    json r = json::parse(value, nullptr, false);
    if (!r.is_object()) return true;  // reported by the job that owns it
    bool changed = false;
    for (const char* list : {"messages", "copies"}) {
      if (!r.contains(list) || !r[list].is_array()) continue;
      json kept = json::array();
      for (const json& m : r[list]) {
        const bool drop = m.is_array() && std::any_of(m.begin(), m.end(), [&](const json& f) {
          return f.is_string() && gone.count(f.get<std::string>());
        });
        if (drop) changed = true;
        else kept.push_back(m);
      }
      r[list] = std::move(kept);
    }
    if (changed) batch.emplace_back(std::string(key), r.dump());
    return true;
  }));
  MV_RETURN_IF_ERROR(store->Scan(control::kRestoreOutcomePrefix, [&](std::string_view key, std::string_view) {
    const size_t slash = key.rfind('/');
    if (slash != std::string_view::npos && gone.count(std::string(key.substr(slash + 1)))) batch.emplace_back(std::string(key), std::nullopt);
    return true;
  }));
  return batch.empty() ? Status::Ok() : store->Write(batch);
}

}  // namespace mailvault::recovery
