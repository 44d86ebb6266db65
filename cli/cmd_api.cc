// The REST API's administration from the shell: users, API tokens, the audit trail's check,
// and the route table. These open the vault (for its keys) and the state store, so they run
// while `mailvault serve` is stopped; with serve running, use the API (an admin's
// POST/PUT /api/v1/users, POST /api/v1/tokens).
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "vault/purposes.h"
#include "control/audit.h"
#include "control/records.h"
#include "api/service.h"
#include "control/state.h"
#include "cli/commands.h"
#include "cli/shell_state.h"
#include "indexer/searcher.h"
#include "core/text.h"
#include "vault/crypto.h"

namespace mailvault::cli {
namespace {

using nlohmann::json;

Result<std::string> ReadPassword() {
  std::string password;
  if (!std::getline(In(), password)) password.clear();
  if (!password.empty() && password.back() == '\r') password.pop_back();
  if (password.size() < api::ApiSettings{}.min_password_length) {
    return InvalidArgument("the password (the first line of stdin) must be at least " +
                           std::to_string(api::ApiSettings{}.min_password_length) + " characters");
  }
  return password;
}

// Runs fn on the opened state; prints the error and sets the exit code on failure.
void WithState(GlobalOptions& g, int* exit_code, const std::function<Status(ShellState&)>& fn) {
  if (!ResolveOrFail(g, exit_code)) return;
  Result<ShellState> s = OpenShellState(g, "users and tokens are changed here only while `mailvault serve` is stopped; "
                                              "while it runs, an admin uses the REST API (POST /api/v1/users, POST /api/v1/tokens)");
  if (!s.ok()) {
    *exit_code = Fail(s.error());
    return;
  }
  if (Status st = fn(*s); !st.ok()) *exit_code = Fail(st.error());
}

}  // namespace

void AddApiCommands(CLI::App& app, GlobalOptions& g, int* exit_code) {
  // ---- user ----
  auto* user = app.add_subcommand("user", "REST API users: add, passwd, role, disable, enable, unlock, list");
  user->require_subcommand(1);
  thread_local std::string name, role_name, scope_query;
  name = {}; role_name = {}; scope_query = {};
  thread_local std::vector<std::string> custodians;
  custodians = {};
  thread_local bool as_json = false;
  as_json = false;

  auto* add = user->add_subcommand("add", "add a user (password: the first line of stdin)");
  add->add_option("name", name, "user name (a-z 0-9 . _ @ -)")->required();
  add->add_option("--role", role_name, "admin, operator, reviewer, auditor or compliance")->required();
  add->add_option("--custodian", custodians, "scope a reviewer to this custodian's mail (repeatable)");
  add->add_option("--scope-query", scope_query, "scope a reviewer to messages matching this query");
  add->callback([&g, exit_code] {
    WithState(g, exit_code, [](ShellState& s) -> Status {
      if (!control::ValidUserName(name)) return InvalidArgument("user names are 1 to 64 characters of a-z, 0-9 and . _ @ -");
      std::optional<control::Role> role = control::ParseRole(role_name);
      if (!role) return InvalidArgument("--role is admin, operator, reviewer, auditor or compliance");
      MV_ASSIGN_OR_RETURN(std::optional<control::User> existing, s.records->GetUser(name));
      if (existing) return Error(ErrorCode::kAlreadyExists, "a user named " + name + " exists (`mailvault user passwd` changes a password)");
      control::User u;
      u.name = name;
      u.role = *role;
      json scope_json{{"custodians", custodians}, {"query", scope_query}};
      MV_ASSIGN_OR_RETURN(u.scope, control::Scope::FromJson(scope_json));
      if (!scope_query.empty()) {
        if (Result<Xapian::Query> q = index::ParseQuery(scope_query, 0); !q.ok()) return q.error().With("--scope-query");
      }
      if (!u.scope.empty() && u.role != control::Role::kReviewer) return InvalidArgument("only reviewers are scoped");
      MV_ASSIGN_OR_RETURN(std::string password, ReadPassword());
      u.password_hash = HashPassword(password);
      u.created = u.credentials_changed = control::NowSeconds();
      MV_RETURN_IF_ERROR(AuditShell(s, "user.create", name, json{{"role", role_name}, {"scope", u.scope.ToJson()}}));
      MV_RETURN_IF_ERROR(s.records->PutUser(u));
      Out() << "user " << name << " added (" << role_name << ")\n";
      return Status::Ok();
    });
  });

  // passwd, role, disable, enable, unlock: one change each to an existing user.
  auto change = [&g, exit_code](const char* action, std::function<Status(control::User&, json&)> edit) {
    WithState(g, exit_code, [&](ShellState& s) -> Status {
      MV_ASSIGN_OR_RETURN(std::optional<control::User> u, s.records->GetUser(name));
      if (!u) return NotFound("no user named " + name + " (`mailvault user list`)");
      json details = json::object();
      MV_RETURN_IF_ERROR(edit(*u, details));
      u->credentials_changed = control::NowSeconds();
      MV_RETURN_IF_ERROR(AuditShell(s, action, name, details));
      MV_RETURN_IF_ERROR(s.records->PutUser(*u));
      Out() << "user " << name << ": " << details.dump() << "\n";
      return Status::Ok();
    });
  };
  auto* passwd = user->add_subcommand("passwd", "set a user's password (the first line of stdin)");
  passwd->add_option("name", name)->required();
  passwd->callback([change] {
    change("user.update", [](control::User& u, json& d) -> Status {
      MV_ASSIGN_OR_RETURN(std::string password, ReadPassword());
      u.password_hash = HashPassword(password);
      d["password"] = "changed";
      return Status::Ok();
    });
  });
  auto* role = user->add_subcommand("role", "change a user's role");
  role->add_option("name", name)->required();
  role->add_option("role", role_name, "admin, operator, reviewer, auditor or compliance")->required();
  role->callback([change] {
    change("user.update", [](control::User& u, json& d) -> Status {
      std::optional<control::Role> r = control::ParseRole(role_name);
      if (!r) return InvalidArgument("the role is admin, operator, reviewer, auditor or compliance");
      u.role = *r;
      d["role"] = role_name;
      return Status::Ok();
    });
  });
  for (const char* which : {"disable", "enable", "unlock"}) {
    auto* cmd = user->add_subcommand(which, std::string(which) + " a user");
    cmd->add_option("name", name)->required();
    std::string w = which;
    cmd->callback([change, w] {
      change("user.update", [w](control::User& u, json& d) -> Status {
        if (w == "unlock") {
          u.failures = 0;
          u.locked_until = 0;
          d["unlock"] = true;
        } else {
          u.disabled = w == "disable";
          d["disabled"] = u.disabled;
        }
        return Status::Ok();
      });
    });
  }
  auto* list = user->add_subcommand("list", "list users");
  list->add_flag("--json", as_json, "print JSON");
  list->callback([&g, exit_code] {
    WithState(g, exit_code, [](ShellState& s) -> Status {
      MV_ASSIGN_OR_RETURN(std::vector<control::User> users, s.records->Users());
      json out = json::array();
      for (const control::User& u : users) out.push_back(u.PublicJson());
      if (as_json) {
        Out() << out.dump(2) << "\n";
      } else {
        for (const control::User& u : users) {
          Out() << u.name << "  " << control::RoleName(u.role) << (u.disabled ? "  disabled" : "")
                    << (u.scope.empty() ? "" : "  scope: " + u.scope.AsQuery()) << "\n";
        }
      }
      return Status::Ok();
    });
  });

  // ---- token ----
  auto* token = app.add_subcommand("token", "REST API tokens for scripts: create, revoke, list");
  token->require_subcommand(1);
  thread_local std::string label, token_id;
  label = {}; token_id = {};
  thread_local int days = 90;
  days = 90;
  auto* create = token->add_subcommand("create", "create an API token for a user; prints it once");
  create->add_option("name", name, "the user the token acts as")->required();
  create->add_option("--label", label, "what the token is for");
  create->add_option("--expires-days", days, "days until it expires (1 to 365; default 90)")->check(CLI::Range(1, 365));
  create->callback([&g, exit_code] {
    WithState(g, exit_code, [](ShellState& s) -> Status {
      MV_ASSIGN_OR_RETURN(std::optional<control::User> u, s.records->GetUser(name));
      if (!u) return NotFound("no user named " + name);
      MV_RETURN_IF_ERROR(AuditShell(s, "token.create", name, json{{"label", label}, {"expires_days", days}}));
      MV_ASSIGN_OR_RETURN(auto created, s.records->CreateToken(name, label, days));
      Err() << "token " << created.first.id << " for " << name << ", expires " << control::Rfc3339(created.first.expires)
                << "; it is shown only now:\n";
      Out() << created.second << "\n";
      return Status::Ok();
    });
  });
  auto* revoke = token->add_subcommand("revoke", "revoke an API token by its id");
  revoke->add_option("id", token_id, "the token's id (`mailvault token list`)")->required();
  revoke->callback([&g, exit_code] {
    WithState(g, exit_code, [](ShellState& s) -> Status {
      MV_ASSIGN_OR_RETURN(std::optional<control::Token> t, s.records->TokenById(token_id));
      if (!t) return NotFound("no token with id " + token_id);
      MV_RETURN_IF_ERROR(AuditShell(s, "token.revoke", token_id, json{{"user", t->user}}));
      MV_RETURN_IF_ERROR(s.records->DeleteToken(*t));
      Out() << "token " << token_id << " revoked\n";
      return Status::Ok();
    });
  });
  auto* tlist = token->add_subcommand("list", "list API tokens (not their secrets)");
  tlist->callback([&g, exit_code] {
    WithState(g, exit_code, [](ShellState& s) -> Status {
      MV_ASSIGN_OR_RETURN(std::vector<control::Token> tokens, s.records->Tokens());
      for (const control::Token& t : tokens) Out() << t.PublicJson().dump() << "\n";
      return Status::Ok();
    });
  });

  // ---- audit ----
  auto* audit = app.add_subcommand("audit", "the audit trail");
  audit->require_subcommand(1);
  auto* verify = audit->add_subcommand("verify", "check every audit entry and the hash chain; exit 1 on an edit, a gap or a reorder");
  verify->add_flag("--json", as_json, "print JSON");
  verify->callback([&g, exit_code] {
    WithState(g, exit_code, [exit_code](ShellState& s) -> Status {
      MV_ASSIGN_OR_RETURN(control::AuditVerifyReport r, control::AuditLog::Verify(*s.store, s.vault->DeriveSubkey(purpose::kAudit)));
      if (as_json) {
        json problems = json::array();
        for (const auto& p : r.problems) problems.push_back(json{{"seq", p.seq}, {"kind", p.kind}, {"detail", p.detail}});
        Out() << json{{"entries", r.entries}, {"head", json{{"seq", r.head.seq}, {"hash", r.head.hash}}},
                          {"state", json{{"values", r.state_values}, {"generation", r.state_generation}}},
                          {"ok", r.ok()}, {"problems", problems}}.dump(2)
                  << "\n";
      } else if (r.ok()) {
        Out() << "audit trail ok: " << r.entries << " entries, head " << r.head.seq << " " << r.head.hash << "\n"
                  << "state store ok: " << r.state_values << " values match its digest (generation " << r.state_generation << ")\n";
      } else {
        for (const auto& p : r.problems) Out() << "entry " << p.seq << ": " << p.kind << ": " << p.detail << "\n";
      }
      if (!r.ok()) *exit_code = 1;
      return Status::Ok();
    });
  });

  thread_local uint64_t after_seq = 0;
  after_seq = 0;
  thread_local size_t list_limit = 1000;
  list_limit = 1000;
  thread_local std::string list_action, list_user;
  list_action = {}; list_user = {};
  auto* alist = audit->add_subcommand("list", "print audit entries, oldest first (itself recorded as audit.read)");
  alist->add_option("--after-seq", after_seq, "only entries after this sequence number");
  alist->add_option("--action", list_action, "only this action (\"message\" also matches message.view, message.raw, ...)");
  alist->add_option("--user", list_user, "only this user");
  alist->add_option("--limit", list_limit, "at most this many entries (default 1000)");
  alist->add_flag("--json", as_json, "one JSON object a line");
  alist->callback([&g, exit_code] {
    WithState(g, exit_code, [](ShellState& s) -> Status {
      json filters{{"after_seq", after_seq}, {"limit", list_limit}};
      if (!list_action.empty()) filters["action"] = list_action;
      if (!list_user.empty()) filters["user"] = list_user;
      MV_RETURN_IF_ERROR(AuditShell(s, "audit.read", "", json{{"filters", filters}}));
      control::AuditLog::Filter f;
      f.after_seq = after_seq;
      f.limit = list_limit;
      f.action = list_action;
      f.user = list_user;
      MV_ASSIGN_OR_RETURN(std::vector<control::AuditEntry> entries, s.audit->Read(f));
      for (const control::AuditEntry& e : entries) {
        if (as_json) {
          Out() << e.ToJson().dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
        } else {
          json j = e.ToJson();
          Out() << e.seq << "  " << j.value("time", "") << "  " << (e.event.user.empty() ? "-" : e.event.user) << "  "
                    << e.event.source << "  " << e.event.action << "  " << (e.event.target.empty() ? "-" : e.event.target)
                    << (e.event.details.empty() ? "" : "  " + e.event.details.dump(-1, ' ', false, json::error_handler_t::replace))
                    << "\n";
        }
      }
      return Status::Ok();
    });
  });

  // ---- api bench-search: the in-process side of bench/api_bench.sh ----
  // The same queries the API is timed with, run by N threads straight on the index (one
  // Searcher each, as the API's workers have), for the same time: what a search costs here
  // without HTTP, JSON, authentication and the audit entry, at the same concurrency.
  thread_local std::string queries_file;
  queries_file = {};
  thread_local int bench_threads = 1, bench_seconds = 10;
  bench_threads = 1; bench_seconds = 10;
  thread_local size_t bench_limit = 50;
  bench_limit = 50;
  // ---- api routes ----
  auto* apicmd = app.add_subcommand("api", "the REST API's route table");
  apicmd->require_subcommand(1);
  auto* bench = apicmd->add_subcommand("bench-search", "time searches in-process at a concurrency (bench/api_bench.sh compares the API with it)");
  bench->add_option("--queries", queries_file, "a file with one query per line")->required();
  bench->add_option("--threads", bench_threads, "concurrent searchers")->check(CLI::Range(1, 1000));
  bench->add_option("--seconds", bench_seconds, "how long to run")->check(CLI::Range(1, 3600));
  bench->add_option("--limit", bench_limit, "hits per search, as the API's page");
  bench->callback([&g, exit_code] {
    if (!ResolveOrFail(g, exit_code)) return;
    std::ifstream in(queries_file);
    std::vector<std::string> queries;
    for (std::string line; std::getline(in, line);) {
      if (!line.empty()) queries.push_back(line);
    }
    if (queries.empty()) {
      *exit_code = Fail("no queries in " + queries_file);
      return;
    }
    std::atomic<bool> stop{false}, failed{false};
    std::mutex mu;
    std::vector<double> latencies;
    std::vector<std::thread> threads;
    const size_t limit = bench_limit;  // the flags are this thread's (thread_local)
    for (int t = 0; t < bench_threads; ++t) {
      threads.emplace_back([&, t] {
        Result<std::unique_ptr<index::Searcher>> s = index::Searcher::Open(g.vault_dir);
        if (!s.ok()) {
          failed = true;
          return;
        }
        std::vector<double> mine;
        for (size_t i = static_cast<size_t>(t); !stop; ++i) {
          index::SearchRequest req;
          req.query = queries[i % queries.size()];
          req.limit = limit;
          auto start = std::chrono::steady_clock::now();
          (*s)->Reopen();  // as the API's workers do before each search
          Result<index::SearchResult> r = (*s)->Search(req);
          mine.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
          if (!r.ok()) failed = true;
        }
        std::lock_guard<std::mutex> l(mu);
        latencies.insert(latencies.end(), mine.begin(), mine.end());
      });
    }
    std::this_thread::sleep_for(std::chrono::seconds(bench_seconds));
    stop = true;
    for (auto& t : threads) t.join();
    if (failed || latencies.empty()) {
      *exit_code = Fail("a search failed (run the queries with `mailvault search` to see which)");
      return;
    }
    std::sort(latencies.begin(), latencies.end());
    auto pct = [&](double p) { return latencies[std::min(latencies.size() - 1, static_cast<size_t>(p * static_cast<double>(latencies.size())))]; };
    Out() << json{{"threads", bench_threads}, {"seconds", bench_seconds}, {"searches", latencies.size()},
                      {"per_second", static_cast<double>(latencies.size()) / bench_seconds}, {"p50_ms", pct(0.50)},
                      {"p95_ms", pct(0.95)}, {"p99_ms", pct(0.99)}}
                     .dump()
              << "\n";
  });

  auto* routes = apicmd->add_subcommand("routes", "print every route and the roles it admits");
  routes->add_flag("--json", as_json, "print JSON");
  routes->callback([] {
    json out = json::array();
    for (const api::RouteInfo& r : api::ApiService::Routes()) out.push_back(json{{"method", r.method}, {"path", r.path}, {"roles", r.roles}});
    if (as_json) {
      Out() << out.dump(2) << "\n";
    } else {
      for (const api::RouteInfo& r : api::ApiService::Routes()) {
        std::string roles;
        for (const std::string& x : r.roles) roles += (roles.empty() ? "" : ",") + x;
        Out() << r.method << " " << r.path << "  " << roles << "\n";
      }
    }
  });
}

}  // namespace mailvault::cli
