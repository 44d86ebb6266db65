// Purge records: the dry run, the second person's approval, candidates and dispositions.
#include "policy/purge.h"

#include <algorithm>

#include "control/keys.h"
#include "control/records.h"
#include "policy/evaluate.h"
#include "vault/vault.h"

namespace mailvault::policy {
namespace {

using nlohmann::json;

std::string PurgeKey(const std::string& id) { return std::string(control::kPurgePrefix) + id; }
std::string CandidatePrefix(const std::string& id) { return std::string(control::kPurgeCandidatePrefix) + id + "/"; }
std::string DispositionPrefix(const std::string& id) { return std::string(control::kDispositionPrefix) + id + "/"; }

std::string Csv(std::string_view s) {
  std::string v(s);
  // A leading character a spreadsheet would run as a formula is neutralised (CSV injection).
  if (!v.empty() && std::string_view("=+-@\t\r").find(v[0]) != std::string_view::npos) v = "'" + v;
  if (v.find_first_of(",\"\r\n") == std::string::npos) return v;
  std::string out = "\"";
  for (char c : v) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

}  // namespace

json PurgeRecord::ToJson() const {
  json j{{"id", id},
         {"state", state},
         {"proposer", proposer.ToJson()},
         {"approver", approver ? approver->ToJson() : json()},
         {"created", created},
         {"approved", approved},
         {"finished", finished},
         {"policy_version", policy_version},
         {"messages", messages},
         {"bytes", bytes},
         {"custodians", custodians},
         {"sample", sample},
         {"purged", purged},
         {"skipped", skipped},
         {"dispositions", dispositions},
         {"error", error},
         {"report", report}};
  return j;
}

json PurgeRecord::PublicJson() const {
  json j = ToJson();
  j["created"] = control::Rfc3339(created);
  j["approved"] = approved ? json(control::Rfc3339(approved)) : json();
  j["finished"] = finished ? json(control::Rfc3339(finished)) : json();
  return j;
}

Result<PurgeRecord> PurgeRecord::FromJson(const json& j) {
  if (!j.is_object() || !j.contains("id") || !j["id"].is_string()) return Corruption("a purge record is damaged");
  PurgeRecord r;
  try {
    r.id = j["id"];
    r.state = j.value("state", kPurgePending);
    r.proposer = control::Actor::FromJson(j.value("proposer", json::object()));
    if (j.contains("approver") && j["approver"].is_object()) r.approver = control::Actor::FromJson(j["approver"]);
    r.created = j.value("created", int64_t{0});
    r.approved = j.value("approved", int64_t{0});
    r.finished = j.value("finished", int64_t{0});
    r.policy_version = j.value("policy_version", uint64_t{0});
    r.messages = j.value("messages", uint64_t{0});
    r.bytes = j.value("bytes", uint64_t{0});
    r.custodians = j.value("custodians", std::map<std::string, uint64_t>{});
    r.sample = j.value("sample", std::vector<std::string>{});
    r.purged = j.value("purged", uint64_t{0});
    r.skipped = j.value("skipped", uint64_t{0});
    r.dispositions = j.value("dispositions", uint64_t{0});
    r.error = j.value("error", "");
    r.report = j.contains("report") ? j["report"] : json();
  } catch (const json::exception& e) {
    return Corruption(std::string("purge record: ") + e.what());
  }
  return r;
}

json Disposition::ToJson() const {
  return json{{"id", id},         {"fingerprint", fingerprint}, {"size", size},   {"policy", policy},
              {"proposer", proposer}, {"approver", approver},   {"time", time},   {"purge", purge},
              {"state", state}};
}

Result<Disposition> Disposition::FromJson(const json& j) {
  Disposition d;
  try {
    d.id = j.at("id");
    d.fingerprint = j.value("fingerprint", "");
    d.size = j.value("size", uint64_t{0});
    d.policy = j.value("policy", "");
    d.proposer = j.value("proposer", "");
    d.approver = j.value("approver", "");
    d.time = j.value("time", int64_t{0});
    d.purge = j.value("purge", "");
    d.state = j.value("state", "intended");
  } catch (const json::exception& e) {
    return Corruption(std::string("disposition record: ") + e.what());
  }
  return d;
}

std::string DispositionCsvHeader() { return "id,fingerprint,size,policy,proposer,approver,time,purge\r\n"; }

std::string DispositionCsvLine(const Disposition& d) {
  return Csv(d.id) + "," + Csv(d.fingerprint) + "," + std::to_string(d.size) + "," + Csv(d.policy) + "," + Csv(d.proposer) +
         "," + Csv(d.approver) + "," + control::Rfc3339(d.time) + "," + Csv(d.purge) + "\r\n";
}

bool PurgeStore::SameUser(const control::Actor& a, const control::Actor& b) { return a.user == b.user; }

Status PurgeStore::Put(const PurgeRecord& r) { return store_->Write({{PurgeKey(r.id), r.ToJson().dump()}}); }

Result<PurgeRecord> PurgeStore::Propose(index::Searcher& searcher, const Vault& vault, const PolicyStore& policies,
                                        const control::Actor& who, int64_t now) {
  const uint64_t applied = searcher.Info().applied_change, last = vault.last_change();
  if (applied < last) {
    return Error(ErrorCode::kConflict, "the index is " + std::to_string(last - applied) +
                                           " changes behind the vault, so the dry run would miss messages; try again "
                                           "once it is level (`mailvault index status`)");
  }
  MV_ASSIGN_OR_RETURN(PolicySet set, policies.Current());
  PurgeRecord r;
  r.id = control::NewJobId(control::JobKind::kPurge);
  r.proposer = who;
  r.created = now;
  r.policy_version = set.version;
  std::vector<Candidate> found;
  MV_ASSIGN_OR_RETURN(Impact impact, Evaluate(searcher, set.policies, now, [&](const MessageFacts& m, const Decision& d) {
                        if (d.verdict != Verdict::kPurgeable) return;
                        found.push_back(Candidate{m.id, 0, m.size, d.deciding});
                      }));
  control::StateStore::Batch batch;
  for (Candidate& c : found) {
    // How many captures it has now: one more at the purge means it was captured again.
    std::optional<ObjectId> oid = ObjectId::FromHex(c.id);
    if (!oid) continue;
    Result<MessageMeta> meta = vault.GetMeta(*oid);
    if (!meta.ok()) continue;  // purged or not stored since it was indexed
    c.envelopes = meta->envelope_digests.size();
    ++r.messages;
    r.bytes += c.bytes;
    batch.emplace_back(CandidatePrefix(r.id) + c.id, json{{"e", c.envelopes}, {"b", c.bytes}, {"p", c.policies}}.dump());
  }
  r.custodians = impact.custodians;
  r.sample = impact.sample;
  MV_RETURN_IF_ERROR(audit_->Record(who.Event("purge.propose", r.id,
                                              json{{"messages", r.messages}, {"bytes", r.bytes}, {"policy_version", r.policy_version}})));
  batch.emplace_back(PurgeKey(r.id), r.ToJson().dump());
  // One synced write (large purges write their candidates in several).
  constexpr size_t kBatch = 4096;
  for (size_t at = 0; at < batch.size(); at += kBatch) {
    control::StateStore::Batch part(batch.begin() + at, batch.begin() + std::min(batch.size(), at + kBatch));
    MV_RETURN_IF_ERROR(store_->Write(part));
  }
  return r;
}

Result<std::optional<PurgeRecord>> PurgeStore::Get(const std::string& id) const {
  if (!control::ValidJobId(id) || id[0] != 'p') return std::optional<PurgeRecord>();
  MV_ASSIGN_OR_RETURN(std::optional<std::string> v, store_->Get(PurgeKey(id)));
  if (!v) return std::optional<PurgeRecord>();
  json j = json::parse(*v, nullptr, false);
  MV_ASSIGN_OR_RETURN(PurgeRecord r, PurgeRecord::FromJson(j));
  return std::optional<PurgeRecord>(std::move(r));
}

Result<std::vector<PurgeRecord>> PurgeStore::List() const {
  std::vector<PurgeRecord> out;
  Status bad = Status::Ok();
  MV_RETURN_IF_ERROR(store_->Scan(control::kPurgePrefix, [&](std::string_view, std::string_view v) {
    Result<PurgeRecord> r = PurgeRecord::FromJson(json::parse(v, nullptr, false));
    if (!r.ok()) {
      bad = r.status();
      return false;
    }
    out.push_back(std::move(*r));
    return true;
  }));
  MV_RETURN_IF_ERROR(bad);
  std::sort(out.begin(), out.end(), [](const PurgeRecord& a, const PurgeRecord& b) { return a.id > b.id; });
  return out;
}

Result<PurgeRecord> PurgeStore::Update(const std::string& id, const std::function<Status(PurgeRecord&)>& edit) {
  std::lock_guard<std::mutex> l(mu_);
  MV_ASSIGN_OR_RETURN(std::optional<PurgeRecord> r, Get(id));
  if (!r) return NotFound("no purge " + id + " (see `mailvault purge list`)");
  MV_RETURN_IF_ERROR(edit(*r));
  MV_RETURN_IF_ERROR(Put(*r));
  return *r;
}

Result<PurgeRecord> PurgeStore::Approve(const std::string& id, const control::Actor& who, int64_t now) {
  std::lock_guard<std::mutex> l(mu_);
  MV_ASSIGN_OR_RETURN(std::optional<PurgeRecord> r, Get(id));
  if (!r) return NotFound("no purge " + id + " (see `mailvault purge list`)");
  if (r->state != kPurgePending) return Error(ErrorCode::kConflict, "purge " + id + " is " + r->state + ", not pending");
  if (SameUser(r->proposer, who)) {
    return Error(ErrorCode::kConflict, "purge " + id + " was proposed by " + who.user +
                                           "; a purge needs a second person: another compliance officer approves it");
  }
  MV_RETURN_IF_ERROR(audit_->Record(who.Event("purge.approve", id, json{{"messages", r->messages}, {"proposer", r->proposer.user}})));
  r->state = kPurgeApproved;
  r->approver = who;
  r->approved = now;
  MV_RETURN_IF_ERROR(Put(*r));
  return *r;
}

Result<PurgeRecord> PurgeStore::Cancel(const std::string& id, const control::Actor& who, int64_t now) {
  std::lock_guard<std::mutex> l(mu_);
  MV_ASSIGN_OR_RETURN(std::optional<PurgeRecord> r, Get(id));
  if (!r) return NotFound("no purge " + id + " (see `mailvault purge list`)");
  if (r->state != kPurgePending) return Error(ErrorCode::kConflict, "purge " + id + " is " + r->state + "; only a pending purge can be withdrawn");
  MV_RETURN_IF_ERROR(audit_->Record(who.Event("purge.cancel", id, json::object())));
  r->state = kPurgeCancelled;
  r->finished = now;
  MV_RETURN_IF_ERROR(Put(*r));
  return *r;
}

Status PurgeStore::ForEachCandidate(const std::string& id, const std::function<bool(const Candidate&)>& fn) const {
  const std::string prefix = CandidatePrefix(id);
  Status bad = Status::Ok();
  MV_RETURN_IF_ERROR(store_->Scan(prefix, [&](std::string_view k, std::string_view v) {
    json j = json::parse(v, nullptr, false);
    if (!j.is_object()) {
      bad = Corruption("a purge candidate record is damaged: " + std::string(k));
      return false;
    }
    Candidate c{std::string(k.substr(prefix.size())), j.value("e", uint64_t{0}), j.value("b", uint64_t{0}),
                j.value("p", std::vector<std::string>{})};
    return fn(c);
  }));
  return bad;
}

Status PurgeStore::ForEachDisposition(const std::string& id, const std::function<bool(const Disposition&)>& fn) const {
  Status bad = Status::Ok();
  MV_RETURN_IF_ERROR(store_->Scan(DispositionPrefix(id), [&](std::string_view, std::string_view v) {
    Result<Disposition> d = Disposition::FromJson(json::parse(v, nullptr, false));
    if (!d.ok()) {
      bad = d.status();
      return false;
    }
    return fn(*d);
  }));
  return bad;
}

Status PurgeStore::PutDispositions(const std::vector<Disposition>& ds) {
  control::StateStore::Batch batch;
  for (const Disposition& d : ds) batch.emplace_back(DispositionPrefix(d.purge) + d.id, d.ToJson().dump());
  return batch.empty() ? Status::Ok() : store_->Write(batch);
}

Status PurgeStore::DeleteDispositions(const std::string& purge, const std::vector<std::string>& ids) {
  control::StateStore::Batch batch;
  for (const std::string& id : ids) batch.emplace_back(DispositionPrefix(purge) + id, std::nullopt);
  return batch.empty() ? Status::Ok() : store_->Write(batch);
}

}  // namespace mailvault::policy
