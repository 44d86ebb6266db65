#include "control/records.h"
#include "control/keys.h"

#include <openssl/sha.h>

#include <chrono>
#include <cstring>
#include <set>
#include <stdexcept>

#include "core/bytes.h"
#include "core/text.h"
#include "vault/crypto.h"

namespace mailvault::control {

using nlohmann::json;

const char* RoleName(Role r) {
  switch (r) {
    case Role::kAdmin: return "admin";
    case Role::kOperator: return "operator";
    case Role::kReviewer: return "reviewer";
    case Role::kAuditor: return "auditor";
    case Role::kCompliance: return "compliance";
  }
  return "reviewer";
}

bool ReadsContent(Role r) { return r == Role::kReviewer || r == Role::kAuditor || r == Role::kCompliance; }

std::optional<Role> ParseRole(std::string_view s) {
  for (Role r : kAllRoles) {
    if (s == RoleName(r)) return r;
  }
  return std::nullopt;
}

namespace {

bool AllOf(std::string_view s, size_t min, size_t max, std::string_view extra) {
  if (s.size() < min || s.size() > max) return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || extra.find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

// Reads a JSON field with a type check; a record that fails is corruption (we wrote it).
template <typename T>
T Field(const json& j, const char* name, T fallback) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return fallback;
  return it->get<T>();
}

// Custodian addresses never hold quotes or backslashes (Scope::FromJson refuses them).
std::string QuoteForQuery(const std::string& s) { return "\"" + s + "\""; }

}  // namespace

bool ValidUserName(std::string_view s) { return AllOf(s, 1, 64, "._@-"); }
bool ValidTag(std::string_view s) { return AllOf(s, 1, 64, "._:-"); }
bool ValidMessageId(std::string_view s) { return AllOf(s, 64, 64, "") && s.find_first_of("ghijklmnopqrstuvwxyz") == std::string_view::npos; }
bool ValidRecordId(std::string_view s) { return AllOf(s, 16, 16, "") && s.find_first_of("ghijklmnopqrstuvwxyz") == std::string_view::npos; }
std::string NewRecordId() { return HexEncode(RandomBytes(8)); }

std::string Sha256Hex(std::string_view data) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), d);
  return HexEncode(std::string_view(reinterpret_cast<const char*>(d), sizeof d));
}

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string Rfc3339(int64_t seconds) {
  time_t t = static_cast<time_t>(seconds);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::optional<int64_t> ParseRfc3339(std::string_view s) {
  Result<int64_t> t = ParseIsoTime(std::string(s));
  if (!t.ok()) return std::nullopt;
  return *t;
}

std::string Scope::AsQuery() const {
  std::string q;
  if (!custodians.empty()) {
    q = "(";
    for (size_t i = 0; i < custodians.size(); ++i) q += (i ? " OR custodian:" : "custodian:") + QuoteForQuery(custodians[i]);
    q += ")";
  }
  if (!query.empty()) q += (q.empty() ? "(" : " AND (") + query + ")";
  return q;
}

json Scope::ToJson() const { return json{{"custodians", custodians}, {"query", query}}; }

Result<Scope> Scope::FromJson(const json& j) {
  Scope s;
  if (j.is_null()) return s;
  if (!j.is_object()) return InvalidArgument("scope must be an object {\"custodians\": [...], \"query\": \"...\"}");
  if (j.contains("custodians")) {
    if (!j["custodians"].is_array()) return InvalidArgument("scope.custodians must be an array of addresses");
    for (const json& c : j["custodians"]) {
      // The query language has no escapes inside quotes: an address with a quote or a
      // backslash could not be written as a custodian: term, so it is refused here.
      if (!c.is_string() || c.get<std::string>().find('@') == std::string::npos || c.get<std::string>().size() > 200 ||
          c.get<std::string>().find_first_of("\"\\ ") != std::string::npos) {
        return InvalidArgument("scope.custodians holds addresses like alice@example.com");
      }
      s.custodians.push_back(NormalizeAddress(c.get<std::string>()));
    }
  }
  if (j.contains("query")) {
    if (!j["query"].is_string()) return InvalidArgument("scope.query must be a string");
    s.query = j["query"].get<std::string>();
  }
  return s;
}

json User::ToJson() const {
  return json{{"name", name},       {"role", RoleName(role)}, {"password_hash", password_hash},
              {"disabled", disabled}, {"scope", scope.ToJson()}, {"created", created},
              {"credentials_changed", credentials_changed}, {"failures", failures}, {"locked_until", locked_until}};
}

json User::PublicJson() const {
  json j{{"name", name}, {"role", RoleName(role)}, {"disabled", disabled}, {"created", Rfc3339(created)}};
  if (!scope.empty()) j["scope"] = scope.ToJson();
  if (locked_until > NowSeconds()) j["locked_until"] = Rfc3339(locked_until);
  return j;
}

Result<User> User::FromJson(const json& j) {
  try {
    User u;
    u.name = j.at("name").get<std::string>();
    std::optional<Role> r = ParseRole(j.at("role").get<std::string>());
    if (!r) return Corruption("user " + u.name + ": unknown role");
    u.role = *r;
    u.password_hash = Field<std::string>(j, "password_hash", "");
    u.disabled = Field<bool>(j, "disabled", false);
    MV_ASSIGN_OR_RETURN(u.scope, Scope::FromJson(j.value("scope", json())));
    u.created = Field<int64_t>(j, "created", 0);
    u.credentials_changed = Field<int64_t>(j, "credentials_changed", 0);
    u.failures = Field<int>(j, "failures", 0);
    u.locked_until = Field<int64_t>(j, "locked_until", 0);
    return u;
  } catch (const json::exception& e) {
    return Corruption(std::string("user record: ") + e.what());
  }
}

json Token::ToJson() const {
  json j{{"id", id}, {"hash", hash}, {"user", user}, {"label", label},
         {"created", created}, {"expires", expires}, {"last_used", last_used}};
  if (!issued_by.empty()) j["issued_by"] = issued_by;
  return j;
}

json Token::PublicJson() const {
  json j{{"id", id}, {"user", user}, {"label", label}, {"created", Rfc3339(created)}, {"expires_at", Rfc3339(expires)}};
  if (last_used) j["last_used"] = Rfc3339(last_used);
  if (!issued_by.empty()) j["issued_by"] = issued_by;
  return j;
}

Result<Token> Token::FromJson(const json& j) {
  try {
    Token t;
    t.id = j.at("id").get<std::string>();
    t.hash = j.at("hash").get<std::string>();
    t.user = j.at("user").get<std::string>();
    t.label = Field<std::string>(j, "label", "");
    t.issued_by = Field<std::string>(j, "issued_by", "");
    t.created = Field<int64_t>(j, "created", 0);
    t.expires = Field<int64_t>(j, "expires", 0);
    t.last_used = Field<int64_t>(j, "last_used", 0);
    return t;
  } catch (const json::exception& e) {
    return Corruption(std::string("token record: ") + e.what());
  }
}

json SavedSearch::ToJson() const {
  return json{{"id", id}, {"owner", owner}, {"name", name}, {"query", query}, {"created", Rfc3339(created)}, {"created_s", created}};
}

Result<SavedSearch> SavedSearch::FromJson(const json& j) {
  try {
    return SavedSearch{j.at("id").get<std::string>(), j.at("owner").get<std::string>(), j.at("name").get<std::string>(),
                       j.at("query").get<std::string>(), Field<int64_t>(j, "created_s", 0)};
  } catch (const json::exception& e) {
    return Corruption(std::string("saved search record: ") + e.what());
  }
}

json ExportJob::ToJson() const {
  json j{{"id", id}, {"owner", owner}, {"format", format}, {"query", query}, {"filter", filter},
         {"state", state}, {"error", error}, {"total", total}, {"done", done}, {"bytes", bytes},
         {"manifest_sha256", manifest_sha256}, {"artefact_sha256", artefact_sha256},
         {"created", created}, {"finished", finished}, {"expires_at", expires_at}};
  if (!custodians.empty()) j["custodians"] = custodians;
  return j;
}

json ExportJob::PublicJson(bool with_query) const {
  json j{{"id", id}, {"owner", owner}, {"format", format}, {"state", state}, {"total", total}, {"done", done},
         {"bytes", bytes}, {"created", Rfc3339(created)}};
  if (with_query) j["query"] = query;
  if (total) j["percent"] = static_cast<int>(done * 100 / total);
  if (!manifest_sha256.empty()) j["manifest_sha256"] = manifest_sha256;
  if (!artefact_sha256.empty()) j["artefact_sha256"] = artefact_sha256;
  if (finished) j["finished"] = Rfc3339(finished);
  if (expires_at) j["expires_at"] = Rfc3339(expires_at);
  if (!error.empty()) j["error"] = error;
  return j;
}

Result<ExportJob> ExportJob::FromJson(const json& j) {
  try {
    ExportJob e;
    e.id = j.at("id").get<std::string>();
    e.owner = j.at("owner").get<std::string>();
    e.format = j.at("format").get<std::string>();
    e.query = j.at("query").get<std::string>();
    e.filter = Field<std::string>(j, "filter", "");
    e.custodians = Field<std::vector<std::string>>(j, "custodians", {});
    e.state = j.at("state").get<std::string>();
    e.error = Field<std::string>(j, "error", "");
    e.total = Field<uint64_t>(j, "total", 0);
    e.done = Field<uint64_t>(j, "done", 0);
    e.bytes = Field<uint64_t>(j, "bytes", 0);
    e.manifest_sha256 = Field<std::string>(j, "manifest_sha256", "");
    e.artefact_sha256 = Field<std::string>(j, "artefact_sha256", "");
    e.created = Field<int64_t>(j, "created", 0);
    e.finished = Field<int64_t>(j, "finished", 0);
    e.expires_at = Field<int64_t>(j, "expires_at", 0);
    return e;
  } catch (const json::exception& ex) {
    return Corruption(std::string("export job record: ") + ex.what());
  }
}

namespace {

template <typename T>
Result<std::optional<T>> GetRecord(const StateStore* store, const std::string& key) {
  MV_ASSIGN_OR_RETURN(std::optional<std::string> v, store->Get(key));
  if (!v) return std::optional<T>();
  json j = json::parse(*v, nullptr, false);
  if (j.is_discarded()) return Corruption("state record " + key + " is not JSON");
  MV_ASSIGN_OR_RETURN(T t, T::FromJson(j));
  return std::optional<T>(std::move(t));
}

template <typename T>
Result<std::vector<T>> ScanRecords(const StateStore* store, const std::string& prefix) {
  std::vector<T> out;
  Status failed;
  MV_RETURN_IF_ERROR(store->Scan(prefix, [&](std::string_view, std::string_view v) {
    json j = json::parse(v, nullptr, false);
    Result<T> t = j.is_discarded() ? Result<T>(Corruption("a state record is not JSON")) : T::FromJson(j);
    if (!t.ok()) {
      failed = t.error();
      return false;
    }
    out.push_back(std::move(*t));
    return true;
  }));
  if (!failed.ok()) return failed.error();
  return out;
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace

Result<std::optional<User>> Records::GetUser(const std::string& name) const { return GetRecord<User>(store_, kUserPrefix + name); }
Status Records::PutUser(const User& u) {
  std::lock_guard<std::mutex> l(rmw_);
  return store_->Write({{kUserPrefix + u.name, Dump(u.ToJson())}});
}

Status Records::CreateUser(const User& u, const std::function<Status()>& before_write) {
  std::lock_guard<std::mutex> l(rmw_);
  MV_ASSIGN_OR_RETURN(std::optional<std::string> existing, store_->Get(kUserPrefix + u.name));
  if (existing) return Error(ErrorCode::kAlreadyExists, "a user named " + u.name + " exists");
  MV_RETURN_IF_ERROR(before_write());
  return store_->Write({{kUserPrefix + u.name, Dump(u.ToJson())}});
}

Status Records::UpdateUser(const std::string& name, const std::function<Status(User&)>& edit) {
  std::lock_guard<std::mutex> l(rmw_);
  MV_ASSIGN_OR_RETURN(std::optional<User> u, GetRecord<User>(store_, kUserPrefix + name));
  if (!u) return NotFound("no user named " + name);
  MV_RETURN_IF_ERROR(edit(*u));
  return store_->Write({{kUserPrefix + u->name, Dump(u->ToJson())}});
}
Result<std::vector<User>> Records::Users() const { return ScanRecords<User>(store_, kUserPrefix); }

Result<std::optional<Token>> Records::TokenByHash(const std::string& hash) const { return GetRecord<Token>(store_, kTokenPrefix + hash); }
Result<std::optional<Token>> Records::TokenById(const std::string& id) const {
  MV_ASSIGN_OR_RETURN(std::optional<std::string> hash, store_->Get(kTokenIdPrefix + id));
  if (!hash) return std::optional<Token>();
  return TokenByHash(*hash);
}
Status Records::PutToken(const Token& t) { return store_->Write({{kTokenPrefix + t.hash, Dump(t.ToJson())}, {kTokenIdPrefix + t.id, t.hash}}); }
Status Records::DeleteToken(const Token& t) {
  std::lock_guard<std::mutex> l(rmw_);
  return store_->Write({{kTokenPrefix + t.hash, std::nullopt}, {kTokenIdPrefix + t.id, std::nullopt}});
}

Status Records::TouchToken(const std::string& hash, int64_t when) {
  std::lock_guard<std::mutex> l(rmw_);
  MV_ASSIGN_OR_RETURN(std::optional<Token> t, GetRecord<Token>(store_, kTokenPrefix + hash));
  if (!t) return Status::Ok();  // revoked meanwhile: stays revoked
  t->last_used = when;
  return store_->Write({{kTokenPrefix + t->hash, Dump(t->ToJson())}, {kTokenIdPrefix + t->id, t->hash}});
}
Result<std::vector<Token>> Records::Tokens() const { return ScanRecords<Token>(store_, kTokenPrefix); }

Result<std::pair<Token, std::string>> Records::CreateToken(const std::string& user, const std::string& label, int days,
                                                           const std::string& issued_by) {
  Token t;
  t.id = NewRecordId();
  // 32 random bytes: the entropy makes a slow hash unnecessary; only SHA-256 is stored.
  std::string secret = "mvt_" + HexEncode(RandomBytes(32));
  t.hash = Sha256Hex(secret);
  t.user = user;
  t.label = label;
  t.issued_by = issued_by;
  t.created = NowSeconds();
  t.expires = t.created + int64_t{days} * 86400;
  MV_RETURN_IF_ERROR(PutToken(t));
  return std::make_pair(t, secret);
}

Result<std::optional<SavedSearch>> Records::GetSavedSearch(const std::string& id) const { return GetRecord<SavedSearch>(store_, kSavedSearchPrefix + id); }
Status Records::PutSavedSearch(const SavedSearch& s) { return store_->Write({{kSavedSearchPrefix + s.id, Dump(s.ToJson())}}); }
Status Records::DeleteSavedSearch(const std::string& id) { return store_->Write({{kSavedSearchPrefix + id, std::nullopt}}); }
Result<std::vector<SavedSearch>> Records::SavedSearches(const std::string& owner) const {
  MV_ASSIGN_OR_RETURN(std::vector<SavedSearch> all, ScanRecords<SavedSearch>(store_, kSavedSearchPrefix));
  std::vector<SavedSearch> out;
  for (SavedSearch& s : all) {
    if (s.owner == owner) out.push_back(std::move(s));
  }
  return out;
}

Result<std::optional<ExportJob>> Records::GetJob(const std::string& id) const { return GetRecord<ExportJob>(store_, kExportPrefix + id); }
Status Records::PutJob(const ExportJob& j) { return store_->Write({{kExportPrefix + j.id, Dump(j.ToJson())}}); }
Result<std::vector<ExportJob>> Records::Jobs() const { return ScanRecords<ExportJob>(store_, kExportPrefix); }

Result<std::vector<std::string>> Records::TagsOf(const std::string& message_id) const {
  MV_ASSIGN_OR_RETURN(std::optional<std::string> v, store_->Get(kTagsPrefix + message_id));
  std::vector<std::string> out;
  if (!v) return out;
  json j = json::parse(*v, nullptr, false);
  if (!j.is_array()) return Corruption("the tags of " + message_id + " are unreadable");
  for (const json& t : j) out.push_back(t.get<std::string>());
  return out;
}

Status Records::ChangeTags(const std::vector<std::string>& ids, const std::vector<std::string>& add,
                           const std::vector<std::string>& remove) {
  std::lock_guard<std::mutex> l(rmw_);
  StateStore::Batch batch;
  for (const std::string& id : ids) {
    MV_ASSIGN_OR_RETURN(std::vector<std::string> current, TagsOf(id));
    std::set<std::string> tags(current.begin(), current.end());
    for (const std::string& t : add) {
      tags.insert(t);
      batch.emplace_back(kTagIndexPrefix + t + "/" + id, "");
    }
    for (const std::string& t : remove) {
      tags.erase(t);
      batch.emplace_back(kTagIndexPrefix + t + "/" + id, std::nullopt);
    }
    if (tags.empty()) batch.emplace_back(kTagsPrefix + id, std::nullopt);
    else batch.emplace_back(kTagsPrefix + id, Dump(json(std::vector<std::string>(tags.begin(), tags.end()))));
  }
  // The change log the index follows (tag: in searches that do not ask the records), in the
  // same synced batch: a tag change is never in the records without its log entry.
  MV_ASSIGN_OR_RETURN(uint64_t last, LastTagChange());
  batch.emplace_back(TagChangeKey(last + 1), Dump(json(ids)));
  return store_->Write(batch);
}

Status Records::ForgetMessages(const std::vector<std::string>& ids) {
  std::lock_guard<std::mutex> l(rmw_);
  StateStore::Batch batch;
  for (const std::string& id : ids) {
    MV_ASSIGN_OR_RETURN(std::vector<std::string> current, TagsOf(id));
    if (current.empty()) continue;
    for (const std::string& t : current) batch.emplace_back(kTagIndexPrefix + t + "/" + id, std::nullopt);
    batch.emplace_back(kTagsPrefix + id, std::nullopt);
  }
  return batch.empty() ? Status::Ok() : store_->Write(batch);
}

std::string Records::TagChangeKey(uint64_t seq) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%s%016llx", kTagChangePrefix, static_cast<unsigned long long>(seq));
  return buf;
}

Result<uint64_t> Records::LastTagChange() const {
  MV_ASSIGN_OR_RETURN(std::optional<std::string> key, store_->LastKey(kTagChangePrefix));
  if (!key) return uint64_t{0};
  return static_cast<uint64_t>(std::strtoull(key->c_str() + std::strlen(kTagChangePrefix), nullptr, 16));
}

Status Records::ForEachTagChange(uint64_t after, const std::function<bool(uint64_t, const std::vector<std::string>&)>& fn) const {
  Status bad = Status::Ok();
  MV_RETURN_IF_ERROR(store_->Scan(kTagChangePrefix, [&](std::string_view key, std::string_view value) {
    const uint64_t seq = std::strtoull(std::string(key.substr(std::strlen(kTagChangePrefix))).c_str(), nullptr, 16);
    if (seq <= after) return true;
    json j = json::parse(value, nullptr, false);
    if (!j.is_array()) {
      bad = Corruption("tag change " + std::to_string(seq) + " is unreadable");
      return false;
    }
    std::vector<std::string> ids;
    for (const json& v : j) {
      if (v.is_string()) ids.push_back(v.get<std::string>());
    }
    return fn(seq, ids);
  }));
  return bad;
}

Result<std::vector<std::string>> Records::MessagesTagged(const std::string& tag) const {
  std::vector<std::string> out;
  const std::string prefix = kTagIndexPrefix + tag + "/";
  MV_RETURN_IF_ERROR(store_->Scan(prefix, [&](std::string_view k, std::string_view) {
    out.emplace_back(k.substr(prefix.size()));
    return true;
  }));
  return out;
}

index::TagResolver TagQuery(const Records* records) {
  return [records](const std::string& tag) {
    Result<std::vector<std::string>> ids = records->MessagesTagged(tag);
    if (!ids.ok()) throw std::runtime_error("cannot read the tag " + tag + ": " + ids.error().message());
    std::vector<Xapian::Query> terms;
    for (const std::string& id : *ids) terms.emplace_back("Q" + id);
    if (terms.empty()) return Xapian::Query::MatchNothing;
    // A synonym matches what an OR would; the query language counts it as one term.
    return Xapian::Query(Xapian::Query::OP_SYNONYM, terms.begin(), terms.end());
  };
}

}  // namespace mailvault::control
