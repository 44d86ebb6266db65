#include "api/service.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <map>
#include <set>

#include "api/export.h"
#include "core/bytes.h"
#include "core/message.h"
#include "core/text.h"
#include "indexer/searcher.h"
#include "jobs/runner.h"
#include "policy/evaluate.h"
#include "policy/purge.h"
#include "policy/store.h"
#include "replication/shipper.h"
#include "vault/crypto.h"

namespace mailvault::api {

using nlohmann::json;

namespace {

constexpr unsigned kAnonymous = 1u << 8;  // above every role's bit
constexpr unsigned Bit(Role r) { return 1u << static_cast<unsigned>(r); }
constexpr unsigned kAdmin = Bit(Role::kAdmin), kOperator = Bit(Role::kOperator), kReviewer = Bit(Role::kReviewer),
                   kAuditor = Bit(Role::kAuditor), kCompliance = Bit(Role::kCompliance),
                   kAnyRole = kAdmin | kOperator | kReviewer | kAuditor | kCompliance;

// A handler's way out with an error response: caught in Dispatch.
struct HttpError {
  Response response;
};

[[noreturn]] void Fail(int status, const std::string& slug, const std::string& detail) {
  throw HttpError{Problem(status, slug, detail)};
}
[[noreturn]] void BadRequest(const std::string& detail) { Fail(400, "bad-request", detail); }
// One answer for every 404 (an unknown route, a malformed, missing or out-of-scope id), so
// that no probe can tell them apart.
constexpr const char* kNotFoundDetail = "no such resource (or it is outside what you may see); the API is described in docs/openapi.yaml";
[[noreturn]] void NotFound() { Fail(404, "not-found", kNotFoundDetail); }

// An error from below, as its problem (the one table: MeaningOf, core/result.h). A 400 from
// below is a query the index refused: "bad-query", as docs/api.md documents it. A 5xx names the
// error's kind, since only the server can do something about it.
[[noreturn]] void FailWith(const Error& e) {
  const ErrorMeaning m = MeaningOf(e.code());
  if (m.http_status == 400) Fail(400, "bad-query", e.message());
  Fail(m.http_status, m.problem, m.http_status >= 500 && m.http_status != 503 ? e.ToString() : e.message());
}

template <typename T>
T Must(Result<T> r) {
  if (!r.ok()) FailWith(r.error());
  return std::move(*r);
}
void Must(Status s) {
  if (!s.ok()) FailWith(s.error());
}

// Body fields, checked: a wrong type or a missing required field is a 400 naming the field.
std::string StringField(const json& body, const char* name, bool required, size_t max = 16 << 10) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) {
    if (required) BadRequest(std::string("\"") + name + "\" is required");
    return "";
  }
  if (!it->is_string()) BadRequest(std::string("\"") + name + "\" must be a string");
  std::string v = it->get<std::string>();
  if (v.size() > max) BadRequest(std::string("\"") + name + "\" is longer than " + std::to_string(max) + " bytes");
  return v;
}

int64_t IntField(const json& body, const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return fallback;
  if (!it->is_number_integer()) BadRequest(std::string("\"") + name + "\" must be an integer");
  // Unsigned values past INT64_MAX come back negative from get<int64_t>: check both ways.
  if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(hi)) {
    BadRequest(std::string("\"") + name + "\" must be from " + std::to_string(lo) + " to " + std::to_string(hi));
  }
  int64_t v = it->get<int64_t>();
  if (v < lo || v > hi) BadRequest(std::string("\"") + name + "\" must be from " + std::to_string(lo) + " to " + std::to_string(hi));
  return v;
}

std::vector<std::string> TagList(const json& body, const char* name) {
  std::vector<std::string> out;
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return out;
  if (!it->is_array() || it->size() > 100) BadRequest(std::string("\"") + name + "\" must be an array of at most 100 tags");
  for (const json& t : *it) {
    if (!t.is_string() || !ValidTag(t.get<std::string>())) {
      BadRequest("tags are 1 to 64 characters of a-z, 0-9 and . _ : -");
    }
    out.push_back(t.get<std::string>());
  }
  return out;
}

thread_local std::unique_ptr<index::Searcher> tl_searcher;
thread_local std::string tl_searcher_dir;

index::Searcher& SearcherFor(const std::string& vault_dir) {
  if (!tl_searcher || tl_searcher_dir != vault_dir) {
    Result<std::unique_ptr<index::Searcher>> s = index::Searcher::Open(vault_dir);
    if (!s.ok()) Fail(503, "index-unavailable", "the full-text index cannot be opened: " + s.error().message());
    tl_searcher = std::move(*s);
    tl_searcher_dir = vault_dir;
  } else {
    tl_searcher->Reopen();  // see what the indexer committed since
  }
  return *tl_searcher;
}

json EnvelopeJson(const Envelope& e) {
  json j{{"capture_time", Rfc3339(e.capture_time_us / 1000000)}, {"source", e.source}, {"recipients", e.recipients}};
  if (!e.custodian.empty()) j["custodian"] = e.custodian;
  if (!e.sender.empty()) j["sender"] = e.sender;
  if (!e.note.empty()) j["note"] = e.note;
  if (!e.journal_report.empty()) j["journal_report"] = e.journal_report;
  return j;
}

// What of a capture's envelope a reviewer with this scope may see. A scope's custodians
// admit a message because one of its captures is theirs; the message's other captures (other
// people's mailboxes, journal reports whose recipient lists name Bcc recipients) are not. So
// a custodian-scoped reviewer sees only the captures of their custodians, without journal
// report text and with recipients cut to those custodians; a query-only scope limits which
// messages, not which captures (nullopt: not shown at all).
std::optional<Envelope> EnvelopeInScope(const Envelope& e, const Scope& scope) {
  if (scope.custodians.empty()) return e;
  auto theirs = [&](const std::string& address) {
    return std::find(scope.custodians.begin(), scope.custodians.end(), NormalizeAddress(address)) != scope.custodians.end();
  };
  if (e.custodian.empty() || !theirs(e.custodian)) return std::nullopt;
  Envelope shown = e;
  shown.journal_report.clear();
  shown.recipients.clear();
  for (const std::string& r : e.recipients) {
    if (theirs(r)) shown.recipients.push_back(r);
  }
  return shown;
}

}  // namespace

struct ApiService::Context {
  const Request& req;
  Principal* who = nullptr;  // null on anonymous routes
  std::vector<std::string> params;
  json body;  // parsed when the route takes one
  std::string route;
  std::string rid;
};

struct ApiService::Route {
  const char* method;
  const char* path;
  unsigned roles;
  Handler handler;
  bool json_body;
};

const std::vector<ApiService::Route>& ApiService::Table() {
  static const std::vector<Route> table = {
      {"GET", "/healthz", kAnonymous, &ApiService::Healthz, false},
      {"GET", "/metrics", kAdmin | kOperator, &ApiService::Metrics, false},
      {"POST", "/api/v1/auth/login", kAnonymous, &ApiService::Login, true},
      {"POST", "/api/v1/auth/logout", kAnyRole, &ApiService::Logout, false},
      {"GET", "/api/v1/me", kAnyRole, &ApiService::Me, false},
      {"GET", "/api/v1/users", kAdmin | kAuditor, &ApiService::ListUsers, false},
      {"POST", "/api/v1/users", kAdmin, &ApiService::CreateUser, true},
      {"PUT", "/api/v1/users/{name}", kAdmin, &ApiService::UpdateUser, true},
      {"GET", "/api/v1/config", kAdmin, &ApiService::GetConfig, false},
      {"GET", "/api/v1/tokens", kAnyRole, &ApiService::ListTokens, false},
      {"POST", "/api/v1/tokens", kAnyRole, &ApiService::CreateToken, true},
      {"DELETE", "/api/v1/tokens/{id}", kAnyRole, &ApiService::RevokeToken, false},
      {"GET", "/api/v1/status", kAdmin | kOperator, &ApiService::GetStatus, false},
      {"GET", "/api/v1/offsite", kAdmin | kOperator, &ApiService::GetOffsite, false},
      {"GET", "/api/v1/jobs", kAdmin | kOperator, &ApiService::ListJobs, false},
      {"POST", "/api/v1/jobs", kAdmin, &ApiService::CreateJob, true},
      {"GET", "/api/v1/jobs/{id}", kAdmin | kOperator, &ApiService::GetJob, false},
      {"POST", "/api/v1/jobs/{id}/cancel", kAdmin | kOperator, &ApiService::CancelJob, false},
      {"POST", "/api/v1/jobs/{id}/pause", kAdmin | kOperator, &ApiService::PauseJob, false},
      {"POST", "/api/v1/jobs/{id}/resume", kAdmin | kOperator, &ApiService::ResumeJob, false},
      {"GET", "/api/v1/jobs/{id}/events", kAdmin | kOperator, &ApiService::JobEvents, false},
      {"POST", "/api/v1/restores", kAdmin | kOperator, &ApiService::CreateRestore, true},
      {"GET", "/api/v1/restore-targets", kAdmin | kOperator, &ApiService::ListRestoreTargets, false},
      {"POST", "/api/v1/search", kReviewer, &ApiService::Search, true},
      {"POST", "/api/v1/search/tags", kReviewer, &ApiService::BulkTag, true},
      {"GET", "/api/v1/messages/{id}", kReviewer, &ApiService::GetMessage, false},
      {"GET", "/api/v1/messages/{id}/raw", kReviewer, &ApiService::GetRaw, false},
      {"PUT", "/api/v1/messages/{id}/tags/{tag}", kReviewer, &ApiService::PutTag, false},
      {"DELETE", "/api/v1/messages/{id}/tags/{tag}", kReviewer, &ApiService::DeleteTag, false},
      {"GET", "/api/v1/saved-searches", kReviewer, &ApiService::ListSavedSearches, false},
      {"POST", "/api/v1/saved-searches", kReviewer, &ApiService::CreateSavedSearch, true},
      {"POST", "/api/v1/saved-searches/{id}/run", kReviewer, &ApiService::RunSavedSearch, true},
      {"DELETE", "/api/v1/saved-searches/{id}", kReviewer, &ApiService::DeleteSavedSearch, false},
      {"GET", "/api/v1/exports", kReviewer, &ApiService::ListExports, false},
      {"POST", "/api/v1/exports", kReviewer, &ApiService::CreateExport, true},
      {"GET", "/api/v1/exports/{id}", kReviewer, &ApiService::GetExport, false},
      {"GET", "/api/v1/exports/{id}/download", kReviewer, &ApiService::DownloadExport, false},
      {"GET", "/api/v1/exports/{id}/manifest", kReviewer, &ApiService::ExportManifest, false},
      {"DELETE", "/api/v1/exports/{id}", kReviewer, &ApiService::DeleteExport, false},
      {"GET", "/api/v1/audit", kAuditor, &ApiService::ReadAudit, false},
      {"GET", "/api/v1/policies", kCompliance | kAdmin | kAuditor, &ApiService::GetPolicies, false},
      {"PUT", "/api/v1/policies", kCompliance, &ApiService::PutPolicies, true},
      {"POST", "/api/v1/policies/what-if", kCompliance, &ApiService::PolicyWhatIf, true},
      {"POST", "/api/v1/policies/lock", kCompliance, &ApiService::LockPolicies, true},
      {"GET", "/api/v1/policies/{name}", kCompliance | kAdmin | kAuditor, &ApiService::GetPolicy, false},
      {"GET", "/api/v1/messages/{id}/policy", kCompliance, &ApiService::ExplainMessage, false},
      {"GET", "/api/v1/holds", kCompliance | kAdmin | kAuditor, &ApiService::ListHolds, false},
      {"POST", "/api/v1/holds", kCompliance, &ApiService::PlaceHold, true},
      {"DELETE", "/api/v1/holds/{name}", kCompliance, &ApiService::ReleaseHold, false},
      {"GET", "/api/v1/purges", kCompliance | kAdmin | kAuditor, &ApiService::ListPurges, false},
      {"POST", "/api/v1/purges", kCompliance, &ApiService::CreatePurge, false},
      {"GET", "/api/v1/purges/{id}", kCompliance | kAdmin | kAuditor, &ApiService::GetPurge, false},
      {"POST", "/api/v1/purges/{id}/approve", kCompliance, &ApiService::ApprovePurge, false},
      {"DELETE", "/api/v1/purges/{id}", kCompliance, &ApiService::CancelPurge, false},
      {"GET", "/api/v1/purges/{id}/dispositions", kCompliance | kAuditor, &ApiService::PurgeDispositions, false},
      {"GET", "/api/v1/audit/head", kAuditor, &ApiService::AuditHeadOf, false},
  };
  return table;
}

std::vector<RouteInfo> ApiService::Routes() {
  std::vector<RouteInfo> out;
  for (const Route& r : Table()) {
    RouteInfo info{r.method, r.path, {}};
    if (r.roles & kAnonymous) info.roles.push_back("anonymous");
    for (Role role : control::kAllRoles) {
      if (r.roles & Bit(role)) info.roles.push_back(RoleName(role));
    }
    out.push_back(std::move(info));
  }
  return out;
}

ApiService::ApiService(Vault* vault, std::string vault_dir, Records* records, Authenticator* auth, AuditLog* audit,
                       ExportRunner* exports, std::function<json()> status, json config, ApiSettings settings)
    : vault_(vault),
      vault_dir_(std::move(vault_dir)),
      records_(records),
      auth_(auth),
      audit_(audit),
      exports_(exports),
      status_(std::move(status)),
      config_(std::move(config)),
      settings_(settings),
      request_prefix_(HexEncode(RandomBytes(4))) {}

ApiService::~ApiService() = default;

Status ApiService::Audit(Context& c, const std::string& action, const std::string& target, int status, json details) {
  AuditEvent e;
  if (c.who) {
    e.user = c.who->name;
    e.role = RoleName(c.who->role);
    e.auth = c.who->auth;
    // A token an admin made for someone else: every entry it causes names the admin too.
    if (!c.who->issued_by.empty()) details["issued_by"] = c.who->issued_by;
  }
  e.source = c.req.peer;
  e.action = action;
  e.target = target;
  e.status = status;
  e.details = std::move(details);
  e.details["request_id"] = c.rid;
  return audit_->Record(std::move(e));
}

bool ApiService::RefusalToAudit(const std::string& peer, uint64_t* suppressed) {
  const int64_t minute = NowSeconds() / 60;
  std::lock_guard<std::mutex> l(refusals_mu_);
  if (refusals_.size() > 10000) refusals_.clear();  // a spray of addresses: start over
  auto [it, fresh] = refusals_.try_emplace(peer, RefusalCount{minute, 0});
  if (!fresh && it->second.minute == minute) {
    ++it->second.suppressed;
    return false;
  }
  *suppressed = fresh ? 0 : it->second.suppressed;
  it->second = RefusalCount{minute, 0};
  return true;
}

Response ApiService::Handle(const Request& request) {
  const auto start = std::chrono::steady_clock::now();
  Principal who;
  std::string route;
  Response r = Dispatch(request, &who, &route);
  if (r.content_type == "application/problem+json") {
    // Every problem names the request it answers, however deep it was made.
    json j = json::parse(r.body, nullptr, false);
    if (!j.is_discarded()) {
      j["instance"] = "urn:mailvault:request:" + request.request_id;
      r.body = j.dump(-1, ' ', false, json::error_handler_t::replace);
    }
  }
  metrics_.Observe(r.status, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  r.headers.emplace_back("X-Request-Id", request.request_id);
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}

namespace {

bool MatchPattern(const char* pattern, const std::vector<std::string>& segs, std::vector<std::string>* params) {
  std::vector<std::string> pat;
  if (!SplitPath(pattern, &pat) || pat.size() != segs.size()) return false;
  params->clear();
  for (size_t i = 0; i < pat.size(); ++i) {
    if (pat[i].size() > 2 && pat[i].front() == '{') params->push_back(segs[i]);
    else if (pat[i] != segs[i]) return false;
  }
  return true;
}

}  // namespace

Response ApiService::Dispatch(const Request& req, Principal* who, std::string* route_out) {
  const std::string& rid = req.request_id;
  std::vector<std::string> segs;
  if (!SplitPath(req.path, &segs)) return Problem(404, "not-found", kNotFoundDetail, rid);
  const Route* route = nullptr;
  std::vector<std::string> params;
  std::string allow;
  for (const Route& r : Table()) {
    std::vector<std::string> p;
    if (!MatchPattern(r.path, segs, &p)) continue;
    if (req.method == r.method) {
      route = &r;
      params = std::move(p);
      break;
    }
    allow += (allow.empty() ? "" : ", ") + std::string(r.method);
  }
  if (!route) {
    if (allow.empty()) return Problem(404, "not-found", kNotFoundDetail, rid);
    Response r = Problem(405, "method-not-allowed", "this resource answers " + allow, rid);
    r.headers.emplace_back("Allow", allow);
    return r;
  }
  *route_out = route->path;
  Context c{req, nullptr, std::move(params), json(), route->path, rid};
  try {
    if (!(route->roles & kAnonymous)) {
      auto h = req.headers.find("authorization");
      std::variant<Principal, AuthRefusal> a = auth_->Authenticate(h == req.headers.end() ? "" : h->second, req.authorization_headers);
      if (const AuthRefusal* no = std::get_if<AuthRefusal>(&a)) {
        Response r = Problem(no->status, no->status == 401 ? "unauthenticated" : "busy", no->detail, rid);
        if (no->status == 401) r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"mailvault\"");
        // Refused credentials are audited (nobody is authenticated: the route is the target),
        // at most once a minute per address with the count of the others, so that anyone who
        // can reach the port cannot fill the disk with audit entries (an IPv6 /64 counts as
        // one address, ClientKey).
        if (uint64_t suppressed = 0; RefusalToAudit(ClientKey(req.peer), &suppressed)) {
          (void)Audit(c, "auth.refused", std::string(req.method) + " " + route->path, no->status,
                      json{{"reason", no->detail}, {"refusals_not_recorded_since_last", suppressed}});
        }
        return r;
      }
      *who = std::get<Principal>(std::move(a));
      c.who = who;
      if (!(route->roles & Bit(who->role))) {
        (void)Audit(c, "access.refused", std::string(req.method) + " " + route->path, 403);
        return Problem(403, "forbidden", std::string("the ") + RoleName(who->role) + " role may not do this", rid);
      }
    }
    if (route->json_body) {
      if (req.body.size() > settings_.max_body_bytes) {
        return Problem(413, "too-large", "request bodies are limited to " + std::to_string(settings_.max_body_bytes) + " bytes", rid);
      }
      // The body is read as JSON whatever its Content-Type says (curl's -d sends a form type).
      Result<json> body = ParseJsonBody(req.body, settings_.max_json_depth);
      if (!body.ok()) return Problem(400, "bad-request", body.error().message(), rid);
      c.body = std::move(*body);
    }
    return (this->*route->handler)(c);
  } catch (HttpError& e) {
    return e.response;
  } catch (const std::exception& e) {
    return Problem(500, "internal", std::string("unexpected error: ") + e.what(), rid);
  }
}

// ---- operations -----------------------------------------------------------------------------

Response ApiService::Healthz(Context&) {
  // A load balancer or a monitor reads this: a vault that refuses mail is not healthy, even
  // though the API answers. The vault's state comes from serve's status (refreshed each second).
  json s = status_ ? status_() : json::object();
  if (s.contains("vault") && s["vault"].value("state", "ok") != "ok") {
    return Response::Json(503, json{{"status", "failing"}, {"vault", s["vault"]}});
  }
  return Response::Json(200, json{{"status", "ok"}});
}

Response ApiService::Metrics(Context&) {
  Response r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = metrics_.Render(auth_->failed_logins(), auth_->sessions());
  json s = status_ ? status_() : json::object();
  auto gauge = [&](const char* name, const char* help, const char* type, const json& v) {
    if (!v.is_number()) return;
    r.body += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " + v.dump() + "\n";
  };
  Result<VaultStats> vs = vault_->Stats();
  if (vs.ok()) {
    gauge("mailvault_messages", "Messages in the vault.", "gauge", json(vs->messages));
    gauge("mailvault_raw_bytes", "Bytes of the messages as received.", "gauge", json(vs->raw_bytes));
    gauge("mailvault_stored_bytes", "Bytes the vault's packs take.", "gauge", json(vs->stored_bytes));
  }
  gauge("mailvault_ingest_messages_per_second", "Messages captured per second over the last 10 s.", "gauge",
        s.value("messages_per_second", json()));
  gauge("mailvault_capture_messages_total", "Messages captured by this serve.", "counter", s.value("messages", json()));
  if (s.contains("index")) gauge("mailvault_index_lag_changes", "Vault changes not yet searchable.", "gauge", s["index"].value("lag", json()));
  if (s.contains("queues")) {
    gauge("mailvault_capture_in_flight", "Messages being received or stored.", "gauge", s["queues"].value("in_flight", json()));
    gauge("mailvault_vault_commit_queue", "Messages waiting for the vault's committer.", "gauge", s["queues"].value("vault_commit", json()));
  }
  // One series per offsite target (replication/shipper.h); the state as 1 on its own label.
  if (s.contains("offsite") && s["offsite"].is_array() && !s["offsite"].empty()) {
    auto family = [&](const char* name, const char* help, const char* field) {
      r.body += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " gauge\n";
      for (const json& t : s["offsite"]) {
        if (t.contains(field) && t[field].is_number()) {
          r.body += std::string(name) + "{target=\"" + t.value("name", "") + "\"} " + t[field].dump() + "\n";
        }
      }
    };
    family("mailvault_offsite_lag_bytes", "Durable bytes not yet offsite.", "lag_bytes");
    family("mailvault_offsite_lag_objects", "Objects (packs, state) with bytes not yet offsite.", "lag_objects");
    family("mailvault_offsite_shipped_bytes", "Bytes the target's newest manifest names.", "shipped_bytes");
    r.body += "# HELP mailvault_offsite_state The target's state (ok, behind, down, paused).\n# TYPE mailvault_offsite_state gauge\n";
    for (const json& t : s["offsite"]) {
      for (const char* st : {"ok", "behind", "down", "paused"}) {
        r.body += "mailvault_offsite_state{target=\"" + t.value("name", "") + "\",state=\"" + st + "\"} " +
                  (t.value("state", "") == st ? "1" : "0") + "\n";
      }
    }
  }
  return r;
}

Response ApiService::Login(Context& c) {
  // The field is "username"; "name" is accepted too (our own user records use it).
  std::string name = c.body.contains("username") ? StringField(c.body, "username", true, 64) : StringField(c.body, "name", true, 64);
  std::string password = StringField(c.body, "password", true, 1024);
  std::variant<LoginResult, AuthRefusal> r = auth_->Login(name, password, c.req.peer);
  if (const AuthRefusal* no = std::get_if<AuthRefusal>(&r)) {
    // A password that was checked and wrong (401) is always recorded. A refusal made without
    // checking one (429 backoff or lock, 503 busy) costs the client nothing and comes back at
    // once, so a login storm would turn into thousands of synced entries a second: those are
    // recorded like refused credentials, the first per address each minute with the count of
    // the others.
    uint64_t suppressed = 0;
    if (no->status == 401) {
      (void)Audit(c, "auth.login_failed", name, no->status, json{{"reason", no->detail}});
    } else if (RefusalToAudit("login " + ClientKey(c.req.peer), &suppressed)) {
      (void)Audit(c, "auth.login_failed", name, no->status,
                  json{{"reason", no->detail}, {"refusals_not_recorded_since_last", suppressed}});
    }
    Response resp = Problem(no->status, no->status == 401 ? "unauthenticated" : no->status == 429 ? "too-many-attempts" : "busy", no->detail);
    if (no->retry_after > 0) resp.headers.emplace_back("Retry-After", std::to_string(no->retry_after));
    return resp;
  }
  LoginResult& ok = std::get<LoginResult>(r);
  Principal who{ok.user.name, ok.user.role, ok.user.scope, "session", ""};
  c.who = &who;
  // The session exists only once its login is on the audit trail.
  if (Status s = Audit(c, "auth.login", name, 200); !s.ok()) {
    auth_->Logout(Sha256Hex(ok.token));
    Fail(503, "audit-unavailable", s.error().message());
  }
  return Response::Json(200, json{{"token", ok.token}, {"expires_at", Rfc3339(ok.expires)},
                                   {"user", json{{"name", ok.user.name}, {"role", RoleName(ok.user.role)}}}});
}

Response ApiService::Logout(Context& c) {
  if (!c.who->session_hash.empty()) auth_->Logout(c.who->session_hash);
  (void)Audit(c, "auth.logout", c.who->name, 204);
  return Response::Empty(204);
}

Response ApiService::Me(Context& c) {
  json j{{"name", c.who->name}, {"role", RoleName(c.who->role)}, {"auth", c.who->auth}};
  if (!c.who->issued_by.empty()) j["issued_by"] = c.who->issued_by;
  if (!c.who->scope.empty()) j["scope"] = c.who->scope.ToJson();
  return Response::Json(200, j);
}

Response ApiService::ListUsers(Context& c) {
  json list = json::array();
  for (const User& u : Must(records_->Users())) list.push_back(u.PublicJson());
  (void)c;
  return Response::Json(200, json{{"users", list}});
}

Response ApiService::CreateUser(Context& c) {
  std::string name = StringField(c.body, "name", true, 64);
  if (!ValidUserName(name)) BadRequest("user names are 1 to 64 characters of a-z, 0-9 and . _ @ -");
  std::optional<Role> role = ParseRole(StringField(c.body, "role", true, 16));
  if (!role) BadRequest("\"role\" is one of admin, operator, reviewer, auditor, compliance");
  std::string password = StringField(c.body, "password", true, 1024);
  if (password.size() < settings_.min_password_length) {
    BadRequest("passwords are at least " + std::to_string(settings_.min_password_length) + " characters");
  }
  User u;
  u.name = name;
  u.role = *role;
  if (c.body.contains("scope")) {
    Result<Scope> s = Scope::FromJson(c.body["scope"]);
    if (!s.ok()) BadRequest(s.error().message());
    u.scope = *s;
    if (!u.scope.empty() && u.role != Role::kReviewer) BadRequest("only reviewers are scoped");
    if (Result<Xapian::Query> q = index::ParseQuery(u.scope.query, 0); !u.scope.query.empty() && !q.ok()) {
      Fail(400, "bad-query", "scope.query: " + q.error().message());
    }
  }
  // Checked here to spare a slow password hash for a name that is taken; CreateUser checks
  // again, atomically, so that two admins creating one name make one user and one entry.
  if (Must(records_->GetUser(name))) Fail(409, "conflict", "a user named " + name + " exists");
  u.password_hash = HashPassword(password);
  u.created = u.credentials_changed = NowSeconds();
  Status s = records_->CreateUser(
      u, [&] { return Audit(c, "user.create", name, 201, json{{"role", RoleName(u.role)}, {"scope", u.scope.ToJson()}}); });
  if (!s.ok() && s.error().code() == ErrorCode::kAlreadyExists) Fail(409, "conflict", s.error().message());
  Must(s);
  return Response::Json(201, u.PublicJson());
}

Response ApiService::UpdateUser(Context& c) {
  const std::string& name = c.params[0];
  if (!ValidUserName(name) || !Must(records_->GetUser(name))) NotFound();
  // Validate the whole request first; then apply it to the record as it is when written.
  std::optional<Role> role;
  if (c.body.contains("role")) {
    role = ParseRole(StringField(c.body, "role", true, 16));
    if (!role) BadRequest("\"role\" is one of admin, operator, reviewer, auditor, compliance");
  }
  std::optional<std::string> password_hash;
  if (c.body.contains("password")) {
    std::string password = StringField(c.body, "password", true, 1024);
    if (password.size() < settings_.min_password_length) {
      BadRequest("passwords are at least " + std::to_string(settings_.min_password_length) + " characters");
    }
    password_hash = HashPassword(password);
  }
  std::optional<bool> disabled;
  if (c.body.contains("disabled")) {
    if (!c.body["disabled"].is_boolean()) BadRequest("\"disabled\" must be true or false");
    disabled = c.body["disabled"].get<bool>();
  }
  std::optional<Scope> scope;
  if (c.body.contains("scope")) {
    Result<Scope> s = Scope::FromJson(c.body["scope"]);
    if (!s.ok()) BadRequest(s.error().message());
    if (Result<Xapian::Query> q = index::ParseQuery(s->query, 0); !s->query.empty() && !q.ok()) {
      Fail(400, "bad-query", "scope.query: " + q.error().message());
    }
    scope = *s;
  }
  bool unlock = false;
  if (c.body.contains("unlock")) {
    if (!c.body["unlock"].is_boolean() || !c.body["unlock"].get<bool>()) BadRequest("\"unlock\" takes true");
    unlock = true;
  }
  if (!role && !password_hash && !disabled && !scope && !unlock) {
    BadRequest("nothing to change: send any of role, password, disabled, scope, unlock");
  }
  json changed = json::object();
  if (role) changed["role"] = RoleName(*role);
  if (password_hash) changed["password"] = "changed";
  if (disabled) changed["disabled"] = *disabled;
  if (scope) changed["scope"] = scope->ToJson();
  if (unlock) changed["unlock"] = true;
  const bool end_sessions = role || password_hash || scope || (disabled && *disabled);
  User written;
  // The entry is written inside the update, once the change is known to be valid against the
  // record as it is now: a change refused there (or a user gone meanwhile) leaves no entry.
  Status s = records_->UpdateUser(name, [&](User& u) -> Status {
    if (role) u.role = *role;
    if (password_hash) u.password_hash = *password_hash;
    if (disabled) u.disabled = *disabled;
    if (scope) u.scope = *scope;
    if (unlock) {
      u.failures = 0;
      u.locked_until = 0;
    }
    if (!u.scope.empty() && u.role != Role::kReviewer) return InvalidArgument("only reviewers are scoped (clear the scope with \"scope\": null)");
    if (end_sessions) u.credentials_changed = NowSeconds();
    written = u;
    return Audit(c, "user.update", name, 200, changed);
  });
  if (!s.ok() && s.error().code() == ErrorCode::kInvalidArgument) BadRequest(s.error().message());
  Must(s);
  if (end_sessions || unlock) auth_->EndSessionsOf(name);
  return Response::Json(200, written.PublicJson());
}

Response ApiService::GetConfig(Context& c) {
  Must(Audit(c, "config.read", "", 200));
  return Response::Json(200, config_);
}

Response ApiService::ListTokens(Context& c) {
  json list = json::array();
  for (const Token& t : Must(records_->Tokens())) {
    if (c.who->role == Role::kAdmin || t.user == c.who->name) list.push_back(t.PublicJson());
  }
  return Response::Json(200, json{{"tokens", list}});
}

Response ApiService::CreateToken(Context& c) {
  std::string label = StringField(c.body, "label", false, 200);
  int days = static_cast<int>(IntField(c.body, "expires_days", settings_.default_token_days, 1, settings_.max_token_days));
  std::string user = c.who->name, issued_by;
  if (c.body.contains("user")) {
    user = StringField(c.body, "user", true, 64);
    if (user != c.who->name && c.who->role != Role::kAdmin) Fail(403, "forbidden", "only an admin creates tokens for others");
    std::optional<User> holder = ValidUserName(user) ? Must(records_->GetUser(user)) : std::nullopt;
    if (!holder) BadRequest("no user named " + user);
    if (user != c.who->name) {
      // Separation of duties: an admin reads no mail and no audit trail, so may not hold a
      // credential that does. Such people create their own tokens; a service account that
      // needs one gets it from `mailvault token create` on the host (also audited).
      if (ReadsContent(holder->role)) {
        (void)Audit(c, "token.create", user, 403, json{{"label", label}, {"role", RoleName(holder->role)}});
        Fail(403, "forbidden", std::string("an admin may not create a token for ") + user + " (role " + RoleName(holder->role) +
                                   "): that role's acts must be its holder's own; " + user + " logs in and creates their own");
      }
      issued_by = c.who->name;
    }
  }
  json details{{"label", label}, {"expires_days", days}};
  if (!issued_by.empty()) details["for_other_user"] = true;
  Must(Audit(c, "token.create", user, 201, details));
  auto [token, secret] = Must(records_->CreateToken(user, label, days, issued_by));
  json j = token.PublicJson();
  j["token"] = secret;
  return Response::Json(201, j);
}

Response ApiService::RevokeToken(Context& c) {
  const std::string& id = c.params[0];
  std::optional<Token> t = ValidRecordId(id) ? Must(records_->TokenById(id)) : std::nullopt;
  if (!t || (t->user != c.who->name && c.who->role != Role::kAdmin)) NotFound();
  Must(Audit(c, "token.revoke", id, 204, json{{"user", t->user}}));
  Must(records_->DeleteToken(*t));
  return Response::Empty(204);
}

Response ApiService::GetOffsite(Context&) {
  json s = status_ ? status_() : json::object();
  json targets = s.contains("offsite") && s["offsite"].is_array() ? s["offsite"] : json::array();
  return Response::Json(200, json{{"targets", targets}});
}

Response ApiService::GetStatus(Context&) {
  json j = status_ ? status_() : json::object();
  // "messages" is what the vault holds; what this serve captured since it started is
  // "captured" (the status file's "messages").
  if (j.contains("messages")) j["captured"] = j["messages"];
  Result<VaultStats> vs = vault_->Stats();
  if (vs.ok()) {
    j["messages"] = vs->messages;
    j["vault"] = json{{"messages", vs->messages}, {"raw_bytes", vs->raw_bytes}, {"stored_bytes", vs->stored_bytes}};
  }
  j["api"] = json{{"sessions", auth_->sessions()}, {"failed_logins", auth_->failed_logins()}};
  return Response::Json(200, j);
}

// ---- jobs and restores ------------------------------------------------------------------------

namespace {

// An export (api/export.h keeps its own records) in the job vocabulary of control/jobs.h.
json ExportAsJob(const ExportJob& e) {
  // An export that expired or was deleted had finished: "done" (its report keeps the state).
  static const std::map<std::string, std::string> kStates = {
      {"queued", "queued"}, {"running", "running"},   {"done", "done"},      {"failed", "failed"},
      {"expired", "done"},  {"deleted", "done"},      {"cancelled", "cancelled"}};
  auto st = kStates.find(e.state);
  json j{{"id", e.id},
         {"kind", "export"},
         {"state", st == kStates.end() ? "done" : st->second},
         {"created", Rfc3339(e.created)},
         {"started", nullptr},
         {"finished", e.finished ? json(Rfc3339(e.finished)) : json(nullptr)},
         {"started_by", e.owner},
         {"progress", json{{"total", e.total}, {"done", e.done}}},
         {"report", json{{"format", e.format}, {"bytes", e.bytes}, {"export_state", e.state}}}};
  if (!e.error.empty()) j["error"] = e.error;
  return j;
}

}  // namespace

jobs::JobRunner& ApiService::Runner() {
  if (!jobs_) Fail(503, "jobs-unavailable", "this server runs no jobs (mailvault serve starts the job runner with the API)");
  return *jobs_;
}

control::Actor ApiService::ActorOf(const Context& c) const {
  control::Actor a;
  a.user = c.who->name;
  a.role = RoleName(c.who->role);
  a.auth = c.who->auth;
  a.source = c.req.peer;
  a.issued_by = c.who->issued_by;
  return a;
}

Response ApiService::ListJobs(Context& c) {
  std::optional<control::JobKind> kind;
  std::optional<control::JobState> state;
  if (auto k = c.req.query.find("kind"); k != c.req.query.end()) {
    kind = control::ParseJobKind(k->second);
    if (!kind) BadRequest("\"kind\" is restore, export, verify, import or reindex");
  }
  if (auto s = c.req.query.find("state"); s != c.req.query.end()) {
    state = control::ParseJobState(s->second);
    if (!state) BadRequest("\"state\" is queued, running, paused, done, failed or cancelled");
  }
  json list = json::array();
  if (jobs_) {
    for (const control::JobRecord& j : Must(jobs_->store().List(kind, state))) list.push_back(j.PublicJson());
  }
  if (!kind || *kind == control::JobKind::kExport) {
    for (const ExportJob& e : Must(records_->Jobs())) {
      json j = ExportAsJob(e);
      if (!state || j["state"] == control::JobStateName(*state)) list.push_back(std::move(j));
    }
  }
  return Response::Json(200, json{{"jobs", list}});
}

Response ApiService::GetJob(Context& c) {
  const std::string& id = c.params[0];
  if (control::ValidJobId(id)) {
    std::optional<control::JobRecord> j = Must(Runner().store().Get(id));
    if (!j) NotFound();
    return Response::Json(200, j->PublicJson());
  }
  if (!ValidRecordId(id)) NotFound();
  std::optional<ExportJob> e = Must(records_->GetJob(id));
  if (!e) NotFound();
  return Response::Json(200, ExportAsJob(*e));
}

Response ApiService::JobRequest(Context& c, const char* what) {
  const std::string& id = c.params[0];
  if (!control::ValidJobId(id)) {
    if (ValidRecordId(id) && Must(records_->GetJob(id))) {
      Fail(409, "conflict", "exports run to their end; delete one with DELETE /api/v1/exports/{id}");
    }
    NotFound();
  }
  jobs::JobRunner& runner = Runner();
  const control::Actor who = ActorOf(c);
  const std::string action = what;
  Result<control::JobRecord> r = action == "cancel" ? runner.Cancel(id, who)
                                 : action == "pause" ? runner.Pause(id, who)
                                                     : runner.Resume(id, who);
  if (!r.ok() && r.error().code() == ErrorCode::kNotFound) NotFound();
  return Response::Json(200, Must(std::move(r)).PublicJson());
}

Response ApiService::CancelJob(Context& c) { return JobRequest(c, "cancel"); }
Response ApiService::PauseJob(Context& c) { return JobRequest(c, "pause"); }
Response ApiService::ResumeJob(Context& c) { return JobRequest(c, "resume"); }

Response ApiService::JobEvents(Context& c) {
  const std::string id = c.params[0];
  if (!control::ValidJobId(id)) NotFound();
  jobs::JobRunner& runner = Runner();
  if (!Must(runner.store().Get(id))) NotFound();
  if (event_streams_.load() >= kMaxEventStreams) {
    Fail(503, "busy", std::to_string(kMaxEventStreams) + " event streams are open; poll GET /api/v1/jobs/{id} or try again");
  }
  Response r;
  r.status = 200;
  r.content_type = "text/event-stream";
  r.headers.emplace_back("X-Accel-Buffering", "no");
  // Each change of the job is one "progress" event whose data is the job as GET
  // /api/v1/jobs/{id} gives it, with the record's version as the event id; the last is an
  // "end" event once the job is done, failed, cancelled or paused. A comment every 15 s keeps
  // proxies from closing a quiet stream. A browser's EventSource reconnects by itself after
  // an end; the stream then starts with the current state again.
  control::JobStore* store = &runner.store();
  std::atomic<bool>* stopping = &stopping_;
  std::atomic<int>* streams = &event_streams_;
  r.stream = [store, id, stopping, streams](const std::function<bool(std::string_view)>& write) {
    ++*streams;
    struct Release {
      std::atomic<int>* n;
      ~Release() { --*n; }
    } release{streams};
    if (!write("retry: 2000\n\n")) return;
    uint64_t seen_version = 0;
    auto quiet_since = std::chrono::steady_clock::now();
    for (;;) {
      const uint64_t changes = store->changes();
      Result<std::optional<control::JobRecord>> j = store->Get(id);
      if (!j.ok() || !*j) return;
      const control::JobRecord& job = **j;
      const bool over = control::IsFinal(job.state) || job.state == control::JobState::kPaused;
      if (job.version != seen_version) {
        seen_version = job.version;
        std::string data = job.PublicJson().dump(-1, ' ', false, json::error_handler_t::replace);
        if (!write("id: " + std::to_string(job.version) + "\nevent: progress\ndata: " + data + "\n\n")) return;
        quiet_since = std::chrono::steady_clock::now();
      }
      if (over) {
        (void)write("event: end\ndata: " + json{{"id", id}, {"state", control::JobStateName(job.state)}}.dump() + "\n\n");
        return;
      }
      if (stopping->load()) return;
      if (std::chrono::steady_clock::now() - quiet_since > std::chrono::seconds(15)) {
        if (!write(": still running\n\n")) return;
        quiet_since = std::chrono::steady_clock::now();
      }
      store->WaitForChange(changes, std::chrono::steady_clock::now() + std::chrono::seconds(1));
    }
  };
  return r;
}

Response ApiService::CreateRestore(Context& c) {
  jobs::JobRunner& runner = Runner();
  auto dry = c.body.find("dry_run");
  const bool dry_run = dry != c.body.end() && dry->is_boolean() && dry->get<bool>();
  auto refused = [&](const Error& e) -> Response {
    // An unknown target, user or field is the request's fault (400), not a missing resource.
    if (e.code() == ErrorCode::kNotFound || e.code() == ErrorCode::kInvalidArgument) Fail(400, "bad-request", e.message());
    FailWith(e);
  };
  if (dry_run) {
    Result<json> plan = runner.PlanRestore(c.body, ActorOf(c));
    if (!plan.ok()) return refused(plan.error());
    return Response::Json(200, *plan);
  }
  Result<control::JobRecord> job = runner.SubmitRestore(c.body, ActorOf(c));
  if (!job.ok()) return refused(job.error());
  Response r = Response::Json(202, job->PublicJson());
  r.headers.emplace_back("Location", "/api/v1/jobs/" + job->id);
  return r;
}

// The service's own maintenance, started by an admin: {"kind": "verify", "sample": P} or
// {"kind": "reindex", "compact": B}. Restores have POST /api/v1/restores, exports
// POST /api/v1/exports; imports come from the command line (they read the server's files).
Response ApiService::CreateJob(Context& c) {
  jobs::JobRunner& runner = Runner();
  auto kind = c.body.find("kind");
  if (kind == c.body.end() || !kind->is_string()) BadRequest("\"kind\" is verify or reindex");
  json request = c.body;
  request.erase("kind");
  Result<control::JobRecord> job = InvalidArgument("");
  if (*kind == "verify") {
    for (const auto& [k, v] : request.items()) {
      if (k != "sample") BadRequest("\"" + k + "\" is not a field of a verify job (sample)");
    }
    job = runner.SubmitVerify(request, ActorOf(c));
  } else if (*kind == "reindex") {
    job = runner.SubmitReindex(request, ActorOf(c));
  } else if (*kind == "restore" || *kind == "export") {
    BadRequest("a " + kind->get<std::string>() + " is started with POST /api/v1/" + kind->get<std::string>() + "s");
  } else {
    BadRequest("\"kind\" is verify or reindex");
  }
  if (!job.ok()) {
    if (job.error().code() == ErrorCode::kInvalidArgument) BadRequest(job.error().message());
    FailWith(job.error());
  }
  Response r = Response::Json(202, job->PublicJson());
  r.headers.emplace_back("Location", "/api/v1/jobs/" + job->id);
  return r;
}

Response ApiService::ListRestoreTargets(Context&) {
  json list = json::array();
  for (const auto& [name, t] : Runner().targets()) list.push_back(t.PublicJson());
  return Response::Json(200, json{{"targets", list}});
}

// ---- policies and holds (policy/) -------------------------------------------------------------

namespace {

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A policy-store refusal as an answer: a bad set is 400 (the message has the position), the
// preservation lock or a name in use 409, a missing hold 404.
[[noreturn]] void PolicyFail(const Error& e) {
  if (e.code() == ErrorCode::kInvalidArgument) BadRequest(e.message());
  if (e.code() == ErrorCode::kNotFound) Fail(404, "not-found", e.message());
  FailWith(e);
}

json SetJson(const policy::PolicySet& s, const policy::LockState& lock) {
  json j = s.ToJson();
  j["locked"] = lock.locked;
  if (lock.locked) j["lock"] = json{{"since", Rfc3339(lock.since)}, {"by", lock.by}};
  return j;
}

}  // namespace

policy::PolicyStore& ApiService::Policies() {
  if (!policies_) Fail(503, "policies-unavailable", "this server keeps no policy store (mailvault serve starts it with the API)");
  return *policies_;
}

std::vector<policy::Policy> ApiService::PolicyBody(Context& c) {
  auto it = c.body.find("policies");
  if (it == c.body.end()) BadRequest("\"policies\" is required: the whole set, a JSON array of policies");
  Result<std::vector<policy::Policy>> set = policy::ParsePolicyArray(*it, policy::QueryLanguageCheck());
  if (!set.ok()) BadRequest(set.error().message());
  return std::move(*set);
}

Response ApiService::GetPolicies(Context&) {
  policy::PolicySet s = Must(Policies().Current());
  return Response::Json(200, SetJson(s, Must(Policies().Lock())));
}

Response ApiService::PutPolicies(Context& c) {
  std::vector<policy::Policy> next = PolicyBody(c);
  policy::PolicyStore& store = Policies();
  policy::SetDiff diff;
  Result<policy::PolicySet> saved = store.Replace(std::move(next), ActorOf(c), NowSeconds(), &diff);
  if (!saved.ok()) PolicyFail(saved.error());
  json j = SetJson(*saved, Must(store.Lock()));
  j["diff"] = diff.ToJson();
  return Response::Json(200, j);
}

Response ApiService::GetPolicy(Context& c) {
  policy::PolicySet s = Must(Policies().Current());
  const policy::Policy* p = s.Find(c.params[0]);
  if (!p) NotFound();
  return Response::Json(200, p->ToJsonWithEffective());
}

Response ApiService::PolicyWhatIf(Context& c) {
  std::vector<policy::Policy> draft = PolicyBody(c);
  policy::PolicySet current = Must(Policies().Current());
  const int64_t now = NowSeconds();
  for (policy::Policy& p : draft) {
    const policy::Policy* old = current.Find(p.name);
    p.effective = old && old->SameDefinition(p) ? old->effective : now;
  }
  index::Searcher& searcher = SearcherFor(vault_dir_);
  searcher.Reopen();
  json j = Must(policy::WhatIf(searcher, draft, current.policies, now));
  const uint64_t behind = vault_->last_change() > searcher.Info().applied_change ? vault_->last_change() - searcher.Info().applied_change : 0;
  j["index_behind"] = behind;
  if (Status a = Audit(c, "policy.what-if", "policies", 200, json{{"purgeable", j["purgeable"]}, {"held", j["held"]}, {"policies", draft.size()}});
      !a.ok()) {
    FailWith(a.error());
  }
  return Response::Json(200, j);
}

Response ApiService::LockPolicies(Context& c) {
  auto confirm = c.body.find("confirm");
  if (confirm == c.body.end() || !confirm->is_boolean() || !confirm->get<bool>()) {
    BadRequest("the preservation lock cannot be lifted by anyone: send {\"confirm\": true} to set it");
  }
  Result<policy::LockState> l = Policies().SetLock(ActorOf(c), NowSeconds());
  if (!l.ok()) PolicyFail(l.error());
  return Response::Json(200, json{{"locked", true}, {"since", Rfc3339(l->since)}, {"by", l->by}});
}

Response ApiService::ExplainMessage(Context& c) {
  ObjectId id = MessageInScope(c);
  policy::PolicySet s = Must(Policies().Current());
  index::Searcher& searcher = SearcherFor(vault_dir_);
  searcher.Reopen();
  Result<policy::Decision> d = policy::Explain(searcher, s.policies, id.Hex(), NowSeconds());
  if (!d.ok()) PolicyFail(d.error());
  if (Status a = Audit(c, "policy.explain", id.Hex(), 200, json{{"outcome", policy::VerdictName(d->verdict)}}); !a.ok()) FailWith(a.error());
  json j = d->ToJson();
  j["id"] = id.Hex();
  j["version"] = s.version;
  return Response::Json(200, j);
}

Response ApiService::ListHolds(Context&) {
  policy::PolicySet s = Must(Policies().Current());
  json list = json::array();
  for (const policy::Policy& p : s.policies) {
    if (p.kind == policy::Kind::kHold) list.push_back(p.ToJsonWithEffective());
  }
  return Response::Json(200, json{{"holds", list}, {"version", s.version}});
}

Response ApiService::PlaceHold(Context& c) {
  json j = c.body;
  if (j.contains("kind") && !j["kind"].is_null() && j["kind"] != "hold") BadRequest("\"kind\" of a hold is hold (other policies: PUT /api/v1/policies)");
  j["kind"] = "hold";
  Result<policy::Policy> h = policy::ParsePolicy(j, 0, policy::QueryLanguageCheck());
  if (!h.ok()) BadRequest(h.error().message());
  Result<policy::PolicySet> saved = Policies().Add(*h, ActorOf(c), NowSeconds(), "hold.place");
  if (!saved.ok()) PolicyFail(saved.error());
  const policy::Policy* placed = saved->Find(h->name);
  Response r = Response::Json(201, placed ? placed->ToJsonWithEffective() : h->ToJson());
  r.headers.emplace_back("Location", "/api/v1/policies/" + h->name);
  return r;
}

Response ApiService::ReleaseHold(Context& c) {
  Result<policy::PolicySet> saved = Policies().Remove(c.params[0], policy::Kind::kHold, ActorOf(c), NowSeconds(), "hold.release");
  if (!saved.ok()) PolicyFail(saved.error());
  return Response::Json(200, json{{"released", c.params[0]}, {"version", saved->version}});
}

// ---- purges (policy/purge.h, jobs/purge.h) -----------------------------------------------------

namespace {

// The purge's view: its record, with the job's state once it runs (the job is the truth
// about running, paused and interrupted).
json PurgeJson(const policy::PurgeRecord& r, const std::optional<control::JobRecord>& job) {
  json j = r.PublicJson();
  if (job && (r.state == policy::kPurgeApproved || r.state == policy::kPurgeRunning)) {
    j["job_state"] = control::JobStateName(job->state);
    j["progress"] = job->progress;
  }
  return j;
}

// What an offsite object lock means for a purge (docs/replication.md "Purges"): the copies of
// the purged mail in the old packs stay offsite until the lock lets them go.
json OffsiteImpact(const json& status) {
  json out = json::array();
  if (!status.contains("offsite") || !status["offsite"].is_array()) return out;
  for (const json& t : status["offsite"]) {
    int64_t lock = t.value("object_lock_seconds", int64_t{0});
    if (lock <= 0) continue;
    out.push_back(replication::ObjectLockImpact(t.value("name", ""), lock));
  }
  return out;
}

}  // namespace

Response ApiService::ListPurges(Context&) {
  policy::PurgeStore purges(records_->store(), audit_);
  json list = json::array();
  for (const policy::PurgeRecord& r : Must(purges.List())) list.push_back(r.PublicJson());
  return Response::Json(200, json{{"purges", list}});
}

Response ApiService::CreatePurge(Context& c) {
  policy::PurgeStore purges(records_->store(), audit_);
  index::Searcher& searcher = SearcherFor(vault_dir_);
  searcher.Reopen();
  Result<policy::PurgeRecord> r = purges.Propose(searcher, *vault_, Policies(), ActorOf(c), NowSeconds());
  if (!r.ok() && r.error().code() == ErrorCode::kConflict) Fail(409, "index-behind", r.error().message());
  policy::PurgeRecord p = Must(std::move(r));
  json body = p.PublicJson();
  body["offsite_impact"] = OffsiteImpact(status_ ? status_() : json::object());
  Response out = Response::Json(201, body);
  out.headers.emplace_back("Location", "/api/v1/purges/" + p.id);
  return out;
}

Response ApiService::GetPurge(Context& c) {
  policy::PurgeStore purges(records_->store(), audit_);
  std::optional<policy::PurgeRecord> r = Must(purges.Get(c.params[0]));
  if (!r) NotFound();
  std::optional<control::JobRecord> job;
  if (jobs_) job = Must(jobs_->store().Get(r->id));
  json body = PurgeJson(*r, job);
  if (r->state == policy::kPurgePending) body["offsite_impact"] = OffsiteImpact(status_ ? status_() : json::object());
  return Response::Json(200, body);
}

Response ApiService::ApprovePurge(Context& c) {
  policy::PurgeStore purges(records_->store(), audit_);
  std::optional<policy::PurgeRecord> r = Must(purges.Get(c.params[0]));
  if (!r) NotFound();
  const control::Actor who = ActorOf(c);
  if (policy::PurgeStore::SameUser(r->proposer, who)) {
    (void)Audit(c, "purge.approve", r->id, 403, json{{"refused", "the proposer cannot approve"}});
    Fail(403, "second-person-required", "you proposed this purge: another compliance officer must approve it");
  }
  jobs::JobRunner& runner = Runner();
  Result<policy::PurgeRecord> approved = purges.Approve(r->id, who, NowSeconds());
  if (!approved.ok()) {
    if (approved.error().code() == ErrorCode::kConflict) Fail(409, "conflict", approved.error().message());
    FailWith(approved.error());
  }
  control::JobRecord job = Must(runner.SubmitPurge(approved->id, who));
  return Response::Json(202, PurgeJson(*approved, job));
}

Response ApiService::CancelPurge(Context& c) {
  policy::PurgeStore purges(records_->store(), audit_);
  Result<policy::PurgeRecord> r = purges.Cancel(c.params[0], ActorOf(c), NowSeconds());
  if (!r.ok()) {
    if (r.error().code() == ErrorCode::kNotFound) NotFound();
    if (r.error().code() == ErrorCode::kConflict) Fail(409, "conflict", r.error().message());
    FailWith(r.error());
  }
  return Response::Json(200, r->PublicJson());
}

Response ApiService::PurgeDispositions(Context& c) {
  policy::PurgeStore purges(records_->store(), audit_);
  std::optional<policy::PurgeRecord> r = Must(purges.Get(c.params[0]));
  if (!r) NotFound();
  auto format = c.req.query.find("format");
  const bool csv = format != c.req.query.end() && format->second == "csv";
  if (format != c.req.query.end() && format->second != "csv" && format->second != "json") BadRequest("format is csv or json");
  if (Status a = Audit(c, "purge.dispositions", r->id, 200); !a.ok()) FailWith(a.error());
  std::string body = csv ? policy::DispositionCsvHeader() : "";
  json list = json::array();
  Must(purges.ForEachDisposition(r->id, [&](const policy::Disposition& d) {
    if (d.state != "purged") return true;  // intended only: the vault has not forgotten it (yet)
    if (csv) body += policy::DispositionCsvLine(d);
    else list.push_back(d.ToJson());
    return true;
  }));
  if (!csv) return Response::Json(200, json{{"purge", r->id}, {"dispositions", list}});
  Response out;
  out.content_type = "text/csv; charset=utf-8";
  out.body = std::move(body);
  return out;
}

// ---- search and messages ----------------------------------------------------------------------

Response ApiService::RunSearch(Context& c, const std::string& query, const json& body, const std::string& action,
                               const std::string& target) {
  index::SearchRequest sr;
  sr.query = query;
  sr.offset = static_cast<size_t>(IntField(body, "offset", 0, 0, 1000000000));
  sr.limit = static_cast<size_t>(IntField(body, "limit", 50, 1, static_cast<int64_t>(settings_.max_page)));
  std::string sort = StringField(body, "sort", false, 16);
  if (sort.empty() || sort == "newest") sr.sort = index::SortOrder::kDateNewestFirst;
  else if (sort == "oldest") sr.sort = index::SortOrder::kDateOldestFirst;
  else if (sort == "relevance") sr.sort = index::SortOrder::kRelevance;
  else BadRequest("\"sort\" is newest, oldest or relevance");
  sr.filter = c.who->scope.AsQuery();
  sr.tags = TagQuery(records_);
  index::Searcher& searcher = SearcherFor(vault_dir_);
  Result<index::SearchResult> r = searcher.Search(sr);
  if (!r.ok()) {
    (void)Audit(c, action, target, 400, json{{"query", query}, {"error", r.error().message()}});
    if (r.error().code() == ErrorCode::kInvalidArgument || r.error().code() == ErrorCode::kLimitExceeded) {
      Fail(400, "bad-query", r.error().message());
    }
    FailWith(r.error());
  }
  json hits = json::array();
  for (const index::SearchHit& h : r->hits) {
    const index::Summary& s = h.summary;
    json hit{{"id", s.id}, {"message_id", s.message_id}, {"date", Rfc3339(s.date)}, {"from", s.from},
             {"subject", s.subject}, {"size", s.size}, {"tags", Must(records_->TagsOf(s.id))}};
    if (sr.sort == index::SortOrder::kRelevance) hit["relevance"] = h.relevance;
    hits.push_back(std::move(hit));
  }
  json details{{"query", query}, {"total", r->total}, {"offset", sr.offset}, {"returned", r->hits.size()}};
  if (!sr.filter.empty()) details["scope"] = sr.filter;
  // Audit before content: if the entry cannot be written, the results are not shown.
  if (Status s = Audit(c, action, target, 200, details); !s.ok()) Fail(503, "audit-unavailable", s.error().message());
  return Response::Json(200, json{{"total", r->total}, {"offset", sr.offset}, {"limit", sr.limit}, {"hits", hits}});
}

Response ApiService::Search(Context& c) {
  std::string query = StringField(c.body, "query", true, SIZE_MAX);
  if (query.size() > index::kMaxQueryBytes) {
    (void)Audit(c, "search", "", 400, json{{"query", query.substr(0, 1024) + "..."}, {"error", "over kMaxQueryBytes"}});
    Fail(400, "bad-query", "the query is over the limit of " + std::to_string(index::kMaxQueryBytes) + " bytes (kMaxQueryBytes)");
  }
  return RunSearch(c, query, c.body, "search", "");
}

ObjectId ApiService::MessageInScope(Context& c) {
  const std::string& hex = c.params[0];
  // Only full ids: Vault::Resolve takes prefixes, which would let a caller probe for ids.
  std::optional<ObjectId> id = ValidMessageId(hex) ? ObjectId::FromHex(hex) : std::nullopt;
  bool visible = false;
  if (id) {
    // A scoped reviewer's id is checked against the index first, and only a hit reaches the
    // vault: a missing and a hidden id then cost the same, so timing tells them nothing apart.
    visible = true;
    if (!c.who->scope.empty()) {
      index::SearchRequest sr;
      sr.query = c.who->scope.AsQuery();
      sr.tags = TagQuery(records_);
      Result<bool> in = SearcherFor(vault_dir_).Matches(hex, sr);
      visible = in.ok() && *in;
    }
    visible = visible && vault_->GetMeta(*id).ok();
  }
  if (!visible) {
    // Out of scope, unindexed, missing or malformed: one answer, audited with the id asked for.
    (void)Audit(c, "message.refused", hex.substr(0, 80), 404);
    NotFound();
  }
  return *id;
}

Response ApiService::GetMessage(Context& c) {
  ObjectId id = MessageInScope(c);
  const std::string hex = id.Hex();
  MessageMeta meta = Must(vault_->GetMeta(id));
  json j{{"id", hex}, {"sha256", hex}, {"size", meta.raw_size}, {"tags", Must(records_->TagsOf(hex))}};
  Result<std::optional<index::Summary>> s = SearcherFor(vault_dir_).Get(hex);
  if (s.ok() && *s) {
    j["message_id"] = (*s)->message_id;
    j["date"] = Rfc3339((*s)->date);
    j["from"] = (*s)->from;
    j["subject"] = (*s)->subject;
    if (!(*s)->notes.empty()) j["index_notes"] = (*s)->notes;
  }
  json envs = json::array();
  for (const StoredEnvelope& e : Must(vault_->GetEnvelopes(id))) {
    std::optional<Envelope> shown = EnvelopeInScope(e.envelope, c.who->scope);
    if (shown) envs.push_back(EnvelopeJson(*shown));
  }
  j["envelopes"] = envs;
  // The fingerprints beyond the id: the header key and the SHA-256 of each decoded part (what
  // recovery matches a mailbox's copy by, BLUEPRINT decision 10), as `mailvault show` prints.
  Result<ParsedMessage> parsed = ParseMessage(Must(vault_->ReadMessage(id)), MessageLimits{});
  if (parsed.ok()) {
    auto addresses = [](const std::vector<Address>& list) {
      json a = json::array();
      for (const Address& x : list) a.push_back(json{{"name", x.name}, {"address", x.address}});
      return a;
    };
    j["to"] = addresses(parsed->to);
    j["cc"] = addresses(parsed->cc);
    j["header_key"] = parsed->HeaderKey();
    j["content_hashes"] = parsed->ContentHashes();
    json parts = json::array();
    for (const MimePart& mp : parsed->parts) {
      json pj{{"content_type", mp.content_type}, {"size", mp.decoded_size}};
      if (!mp.filename.empty()) pj["filename"] = mp.filename;
      if (mp.is_attachment) pj["attachment"] = true;
      if (!mp.content_hash.empty()) pj["sha256"] = mp.content_hash;
      parts.push_back(pj);
    }
    j["parts"] = parts;
  } else {
    j["parse_error"] = parsed.error().message();
  }
  if (meta.has_warning) j["warning"] = Must(vault_->Warning(id));
  if (Status st = Audit(c, "message.view", hex, 200); !st.ok()) Fail(503, "audit-unavailable", st.error().message());
  return Response::Json(200, j);
}

Response ApiService::GetRaw(Context& c) {
  ObjectId id = MessageInScope(c);
  std::string raw = Must(vault_->ReadMessage(id));
  if (Status st = Audit(c, "message.raw", id.Hex(), 200, json{{"bytes", raw.size()}}); !st.ok()) {
    Fail(503, "audit-unavailable", st.error().message());
  }
  Response r;
  r.content_type = "message/rfc822";
  r.body = std::move(raw);
  r.headers.emplace_back("Content-Disposition", "attachment; filename=\"" + id.Hex() + ".eml\"");
  return r;
}

Response ApiService::TagChange(Context& c, bool add) {
  const std::string tag = c.params[1];
  ObjectId id = MessageInScope(c);
  if (!ValidTag(tag)) BadRequest("tags are 1 to 64 characters of a-z, 0-9 and . _ : -");
  Must(Audit(c, add ? "tag.add" : "tag.remove", id.Hex(), 204, json{{"tag", tag}}));
  std::vector<std::string> tags{tag};
  Must(records_->ChangeTags({id.Hex()}, add ? tags : std::vector<std::string>{}, add ? std::vector<std::string>{} : tags));
  return Response::Empty(204);
}

Response ApiService::PutTag(Context& c) { return TagChange(c, true); }
Response ApiService::DeleteTag(Context& c) { return TagChange(c, false); }

Response ApiService::BulkTag(Context& c) {
  std::string query = StringField(c.body, "query", true, index::kMaxQueryBytes);
  std::vector<std::string> add = TagList(c.body, "add"), remove = TagList(c.body, "remove");
  if (add.empty() && remove.empty()) BadRequest("send \"add\" and/or \"remove\": arrays of tags");
  index::SearchRequest sr;
  sr.query = query;
  sr.filter = c.who->scope.AsQuery();
  sr.tags = TagQuery(records_);
  sr.limit = settings_.max_bulk_tag + 1;  // one more than allowed is enough to refuse
  std::vector<std::string> ids = Must(SearcherFor(vault_dir_).MatchingIds(sr));
  if (ids.size() > settings_.max_bulk_tag) {
    BadRequest("more than " + std::to_string(settings_.max_bulk_tag) + " messages match; one bulk tag changes at most that many");
  }
  Must(Audit(c, "tag.bulk", "", 200, json{{"query", query}, {"add", add}, {"remove", remove}, {"matched", ids.size()}}));
  for (size_t i = 0; i < ids.size(); i += 5000) {
    std::vector<std::string> part(ids.begin() + static_cast<std::ptrdiff_t>(i),
                                  ids.begin() + static_cast<std::ptrdiff_t>(std::min(ids.size(), i + 5000)));
    Must(records_->ChangeTags(part, add, remove));
  }
  return Response::Json(200, json{{"matched", ids.size()}});
}

// ---- saved searches -------------------------------------------------------------------------

Response ApiService::ListSavedSearches(Context& c) {
  json list = json::array();
  for (const SavedSearch& s : Must(records_->SavedSearches(c.who->name))) {
    json j = s.ToJson();
    j.erase("created_s");
    list.push_back(j);
  }
  return Response::Json(200, json{{"saved_searches", list}});
}

Response ApiService::CreateSavedSearch(Context& c) {
  SavedSearch s;
  s.name = StringField(c.body, "name", true, 200);
  s.query = StringField(c.body, "query", true, index::kMaxQueryBytes);
  if (Result<Xapian::Query> q = index::ParseQuery(s.query, 0); !q.ok()) Fail(400, "bad-query", q.error().message());
  if (Must(records_->SavedSearches(c.who->name)).size() >= settings_.max_saved_searches) {
    BadRequest("at most " + std::to_string(settings_.max_saved_searches) + " saved searches per user");
  }
  s.id = NewRecordId();
  s.owner = c.who->name;
  s.created = NowSeconds();
  Must(Audit(c, "saved_search.create", s.id, 201, json{{"name", s.name}, {"query", s.query}}));
  Must(records_->PutSavedSearch(s));
  json j = s.ToJson();
  j.erase("created_s");
  return Response::Json(201, j);
}

Response ApiService::RunSavedSearch(Context& c) {
  const std::string& id = c.params[0];
  std::optional<SavedSearch> s = ValidRecordId(id) ? Must(records_->GetSavedSearch(id)) : std::nullopt;
  if (!s || s->owner != c.who->name) NotFound();
  return RunSearch(c, s->query, c.body, "saved_search.run", id);
}

Response ApiService::DeleteSavedSearch(Context& c) {
  const std::string& id = c.params[0];
  std::optional<SavedSearch> s = ValidRecordId(id) ? Must(records_->GetSavedSearch(id)) : std::nullopt;
  if (!s || s->owner != c.who->name) NotFound();
  Must(Audit(c, "saved_search.delete", id, 204));
  Must(records_->DeleteSavedSearch(id));
  return Response::Empty(204);
}

// ---- exports --------------------------------------------------------------------------------

ExportJob ApiService::OwnJob(Context& c) {
  if (!exports_) Fail(503, "exports-unavailable", "this server runs no export jobs");
  const std::string& id = c.params[0];
  std::optional<ExportJob> j = ValidRecordId(id) ? Must(records_->GetJob(id)) : std::nullopt;
  if (!j || j->owner != c.who->name) NotFound();
  if (exports_) exports_->ExpireOld();
  return *Must(records_->GetJob(id));
}

Response ApiService::ListExports(Context& c) {
  if (exports_) exports_->ExpireOld();
  json list = json::array();
  for (const ExportJob& j : Must(records_->Jobs())) {
    if (j.owner == c.who->name) list.push_back(j.PublicJson(true));
  }
  return Response::Json(200, json{{"exports", list}});
}

Response ApiService::CreateExport(Context& c) {
  if (!exports_) Fail(503, "exports-unavailable", "this server runs no export jobs");
  ExportJob j;
  j.format = StringField(c.body, "format", false, 8);
  if (j.format.empty()) j.format = "zip";
  if (j.format != "zip" && j.format != "mbox") BadRequest("\"format\" is zip or mbox");
  std::string saved = StringField(c.body, "saved_search_id", false, 16);
  j.query = StringField(c.body, "query", false, index::kMaxQueryBytes);
  if (j.query.empty() == saved.empty()) BadRequest("send either \"query\" or \"saved_search_id\"");
  if (!saved.empty()) {
    std::optional<SavedSearch> s = ValidRecordId(saved) ? Must(records_->GetSavedSearch(saved)) : std::nullopt;
    if (!s || s->owner != c.who->name) Fail(404, "not-found", "no saved search " + saved);
    j.query = s->query;
  }
  if (Result<Xapian::Query> q = index::ParseQuery(j.query, 0); !q.ok()) Fail(400, "bad-query", q.error().message());
  // The scope in force now is stored with the job: the export is what the reviewer could see
  // when they asked.
  j.filter = c.who->scope.AsQuery();
  j.custodians = c.who->scope.custodians;  // the manifest names only these (export.h)
  j.id = NewRecordId();
  j.owner = c.who->name;
  j.created = NowSeconds();
  Must(Audit(c, "export.create", j.id, 202, json{{"query", j.query}, {"format", j.format}, {"scope", j.filter}}));
  Must(records_->PutJob(j));
  exports_->Enqueue(j.id);
  Response r = Response::Json(202, j.PublicJson(true));
  r.headers.emplace_back("Location", "/api/v1/exports/" + j.id);
  return r;
}

Response ApiService::GetExport(Context& c) { return Response::Json(200, OwnJob(c).PublicJson(true)); }

Response ApiService::DownloadExport(Context& c) {
  ExportJob j = OwnJob(c);
  if (j.state == "expired") Fail(410, "expired", "this export's file expired and was deleted; create the export again");
  if (j.state == "purged") Fail(410, "purged", "this export held purged messages; a purge deleted its files (" + j.error + ")");
  if (j.state != "done") Fail(409, "not-ready", "the export is " + j.state + "; download it when its state is done");
  std::string path = exports_->ArtefactPath(j);
  if (Status s = Audit(c, "export.download", j.id, 200, json{{"bytes", j.bytes}, {"sha256", j.artefact_sha256}}); !s.ok()) {
    Fail(503, "audit-unavailable", s.error().message());
  }
  Response r;
  r.content_type = j.format == "zip" ? "application/zip" : "application/mbox";
  r.file = path;
  r.file_size = j.bytes;
  r.headers.emplace_back("Content-Disposition", "attachment; filename=\"mailvault-export-" + j.id + (j.format == "zip" ? ".zip\"" : ".mbox\""));
  std::string digest;
  if (HexDecode(j.artefact_sha256, &digest)) r.headers.emplace_back("Repr-Digest", "sha-256=:" + Base64Encode(digest) + ":");
  return r;
}

Response ApiService::ExportManifest(Context& c) {
  ExportJob j = OwnJob(c);
  if (j.state == "expired") Fail(410, "expired", "this export's files expired and were deleted");
  if (j.state == "purged") Fail(410, "purged", "this export held purged messages; a purge deleted its files (" + j.error + ")");
  if (j.state != "done") Fail(409, "not-ready", "the export is " + j.state);
  if (Status s = Audit(c, "export.manifest", j.id, 200); !s.ok()) Fail(503, "audit-unavailable", s.error().message());
  Response r;
  r.content_type = "text/csv; charset=utf-8";
  r.file = exports_->ManifestPath(j);
  struct stat st;
  r.file_size = ::stat(r.file.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  return r;
}

Response ApiService::DeleteExport(Context& c) {
  ExportJob j = OwnJob(c);
  // Recorded with the state the job has when it is cancelled (not when it was read above):
  // an expiry in between would otherwise make the entry say "done" of an expired export.
  Must(exports_->Cancel(j.id, [&](const ExportJob& now) { return Audit(c, "export.delete", j.id, 204, json{{"state", now.state}}); }));
  return Response::Empty(204);
}

// ---- audit ----------------------------------------------------------------------------------

Response ApiService::ReadAudit(Context& c) {
  AuditLog::Filter f;
  const auto& q = c.req.query;
  auto time_param = [&](const char* name, int64_t fallback) -> int64_t {
    auto it = q.find(name);
    if (it == q.end()) return fallback;
    std::optional<int64_t> t = ParseRfc3339(it->second);
    if (!t) BadRequest(std::string(name) + " is a time like 2026-11-25T10:00:00Z");
    return *t * 1000000;
  };
  f.from_us = time_param("from", 0);
  f.to_us = time_param("to", INT64_MAX);
  if (auto it = q.find("user"); it != q.end()) f.user = it->second;
  if (auto it = q.find("action"); it != q.end()) f.action = it->second;
  if (auto it = q.find("target"); it != q.end()) f.target = it->second;
  auto num = [&](const char* name, uint64_t fallback, uint64_t hi) -> uint64_t {
    auto it = q.find(name);
    if (it == q.end()) return fallback;
    char* end = nullptr;
    errno = 0;
    unsigned long long v = std::strtoull(it->second.c_str(), &end, 10);
    if (it->second.empty() || *end || errno || v > hi || it->second[0] == '-') {
      BadRequest(std::string(name) + " is a number up to " + std::to_string(hi));
    }
    return v;
  };
  f.after_seq = num("after_seq", 0, UINT64_MAX - 1);
  f.limit = num("limit", 100, 1000);
  if (f.limit == 0) BadRequest("limit is 1 to 1000");
  std::vector<AuditEntry> entries = Must(audit_->Read(f));
  json list = json::array();
  for (const AuditEntry& e : entries) list.push_back(e.ToJson());
  AuditHead head = audit_->head();
  json filters = json::object();
  for (const auto& [k, v] : q) filters[k] = v;
  if (Status s = Audit(c, "audit.read", "", 200, json{{"filters", filters}, {"returned", entries.size()}}); !s.ok()) {
    Fail(503, "audit-unavailable", s.error().message());
  }
  return Response::Json(200, json{{"entries", list}, {"head", json{{"seq", head.seq}, {"hash", head.hash}}}});
}

Response ApiService::AuditHeadOf(Context&) {
  AuditHead head = audit_->head();
  return Response::Json(200, json{{"seq", head.seq}, {"hash", head.hash}});
}

}  // namespace mailvault::api
