// serve: the appliance's long-running process (journal capture over SMTP/LMTP, and the
// indexer following the vault); status: what a running serve is doing; hash-password.
//
// serve publishes its state once a second to <vault>/run/serve.json (written atomically), so
// `status` needs no connection to it and works while serve holds the vault's lock.
#include <signal.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <deque>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "vault/purposes.h"
#include "control/audit.h"
#include "api/auth.h"
#include "api/config.h"
#include "api/export.h"
#include "api/http_beast.h"
#include "api/http_cpprest.h"
#include "api/service.h"
#include "jobs/indexer.h"
#include "jobs/policy_tagger.h"
#include "jobs/runner.h"
#include "replication/shipper.h"
#include "jobs/targets.h"
#include "policy/store.h"
#include "control/state.h"
#include "capture/config.h"
#include "capture/server.h"
#include "cli/commands.h"
#include "cli/control_socket.h"
#include "core/file_util.h"
#include "indexer/index.h"
#include "vault/crypto.h"

namespace mailvault::cli {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string StatusPath(const std::string& vault_dir) { return vault_dir + "/run/serve.json"; }

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void Log(const std::string& line) {
  std::fprintf(stderr, "%s mailvault serve: %s\n", FormatDate(NowSeconds()).c_str(), line.c_str());
  std::fflush(stderr);
}

// The capture configuration: defaults, then the [capture] section of the config file, then
// the --smtp / --lmtp flags.
Result<capture::CaptureConfig> LoadCaptureConfig(const GlobalOptions& g, const std::vector<std::string>& smtp,
                                                 const std::vector<std::string>& lmtp) {
  capture::CaptureConfig c = capture::DefaultCaptureConfig();
  if (!g.config_file.empty()) MV_RETURN_IF_ERROR(capture::ApplyCaptureConfigFile(g.config_file, &c));
  if (!smtp.empty() || !lmtp.empty()) c.listen.clear();
  for (const std::string& a : smtp) {
    MV_ASSIGN_OR_RETURN(capture::ListenAddress la, capture::ParseListenAddress(a, capture::Protocol::kSmtp));
    c.listen.push_back(la);
  }
  for (const std::string& a : lmtp) {
    MV_ASSIGN_OR_RETURN(capture::ListenAddress la, capture::ParseListenAddress(a, capture::Protocol::kLmtp));
    c.listen.push_back(la);
  }
  c.settings.limits.max_message_bytes = g.vault_options.limits.max_message_bytes;
  return c;
}

// The status file is padded to a fixed size, so that when the disk is full (exactly when an
// administrator runs `mailvault status`) it can still be rewritten in place, in blocks it
// already owns, after the atomic replace has failed for want of a new block.
constexpr size_t kStatusFileBytes = 32 << 10;

Status WriteStatusFile(const std::string& path, const json& j) {
  std::string text = j.dump(2) + "\n";
  if (text.size() < kStatusFileBytes) text.append(kStatusFileBytes - text.size(), ' ');  // JSON allows trailing space
  Status s = ReplaceFileDurably(path, text, 0600);
  if (s.ok()) return s;
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
  struct stat st;
  if (fd < 0) return s;
  bool fits = ::fstat(fd, &st) == 0 && static_cast<uint64_t>(st.st_size) == text.size();
  bool wrote = fits && ::pwrite(fd, text.data(), text.size(), 0) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return wrote ? Status::Ok() : s;
}

json StatusJson(const Vault& vault, const capture::CaptureServer* server, const jobs::IndexFollower* indexer,
                const std::vector<capture::ListenAddress>& bound, int64_t started, double rate) {
  capture::CaptureStats s = server ? server->stats() : capture::CaptureStats{};
  json listen = json::array();
  for (const auto& a : bound) listen.push_back(a.ToString());
  uint64_t last = vault.last_change();
  json j{{"pid", ::getpid()},
         {"started", FormatDate(started)},
         {"updated", NowSeconds()},
         {"listen", listen},
         {"sessions", s.sessions},
         {"connections", s.connections},
         {"refused_connections", s.refused_connections},
         {"messages", s.messages},
         {"duplicates", s.duplicates},
         {"journal_reports", s.journal_reports},
         {"stored_as_received", s.stored_as_received},
         {"bytes", s.bytes},
         {"temporary_failures", s.temporary_failures},
         {"permanent_failures", s.permanent_failures},
         {"accept_stalls", s.accept_stalls},
         {"messages_per_second", rate},
         {"queues", json{{"in_flight", s.in_flight}, {"vault_commit", vault.queued()}}},
         {"vault_changes", last}};
  VaultHealth h = vault.health();
  j["vault"] = json{{"state", h.ok ? "ok" : "failing"}, {"recoveries", h.recoveries}};
  if (!h.ok) {
    j["vault"]["error"] = h.error;
    j["vault"]["since"] = FormatDate(h.since_us / 1000000);
    j["vault"]["failed_groups"] = h.failed_groups;
  }
  if (indexer) {
    uint64_t applied = indexer->applied();
    uint64_t lag = last > applied ? last - applied : 0;
    j["index"] = json{{"indexed_changes", applied}, {"lag", lag}};
    if (lag) {
      Result<std::vector<Change>> next = vault.ChangesAfter(applied, 1);
      if (next.ok() && !next->empty()) {
        Result<std::vector<StoredEnvelope>> envs = vault.GetEnvelopes(next->front().id);
        if (envs.ok() && !envs->empty()) {
          int64_t t = envs->back().envelope.capture_time_us / 1000000;
          j["index"]["oldest_unindexed"] = json{{"id", next->front().id.Hex()}, {"captured", FormatDate(t)},
                                                {"age_seconds", std::max<int64_t>(0, NowSeconds() - t)}};
        }
      }
    }
    if (std::string e = indexer->last_error(); !e.empty()) j["index"]["last_error"] = e;
  } else {
    j["index"] = json{{"disabled", true}};
  }
  return j;
}

// The control plane (state store, audit trail, records, the job runner) and the REST API on
// top of it, in the order they start (and stop in reverse). The control plane runs in every
// serve: jobs and the command line's requests need it even without the API.
struct ServiceParts {
  std::unique_ptr<control::StateStore> store;
  std::unique_ptr<control::AuditLog> audit;
  std::unique_ptr<control::Records> records;
  std::unique_ptr<jobs::JobRunner> runner;
  std::unique_ptr<policy::PolicyStore> policies;
  std::unique_ptr<jobs::PolicyTagger> tagger;  // tag policies, behind the indexer
  std::vector<std::unique_ptr<replication::Shipper>> shippers;  // one per [offsite NAME]
  ServiceResources lent;                   // what the control socket's commands use
  std::unique_ptr<ControlServer> control;  // the command line's way in (control_socket.h)
  std::unique_ptr<api::Authenticator> auth;
  std::unique_ptr<api::ExportRunner> exports;
  std::unique_ptr<api::ApiService> service;
  std::unique_ptr<api::BeastServer> beast;  // the transport: one of these two
  std::unique_ptr<api::HttpServer> http;

  void ServerEvent(const std::string& action) {
    control::AuditEvent e;
    e.auth = "system";
    e.action = action;
    e.details = json{{"pid", ::getpid()}};
    if (Status s = audit->Record(e); !s.ok()) Log("audit: " + s.error().ToString());
  }
  void Stop() {
    if (control) control->Stop();  // running commands finish; a following restore lets go
    if (service) service->Stop();  // event streams end
    if (beast) beast->Stop();      // in-flight requests are answered first
    if (http) http->Stop();
    if (exports) exports->Stop();
    if (runner) runner->Stop();    // running jobs stop at their next batch and resume at the next start
    if (tagger) tagger->Stop();
    for (auto& s : shippers) s->Stop();  // an upload in flight is abandoned; the next start resumes it
    if (audit) ServerEvent("server.stop");
    beast.reset();
    http.reset();
    service.reset();
    exports.reset();
    auth.reset();
    control.reset();
    runner.reset();
    tagger.reset();
    // The store, audit trail and records stay until the parts are destroyed: the indexer
    // follows the records' tags until it has stopped.
  }
};

// The control plane, and the jobs once serve's indexer follows the tags of its records: the
// indexer starts between the two (a queued reindex job must find it following).
Result<std::unique_ptr<ServiceParts>> StartControl(Vault* vault, const GlobalOptions& g, jobs::IndexFollower* index,
                                                   const std::function<void()>& start_index, const std::string& exports_dir) {
  auto p = std::make_unique<ServiceParts>();
  std::function<uint64_t()> indexed_change;
  if (index->following() || start_index) indexed_change = [index] { return index->applied(); };
  MV_ASSIGN_OR_RETURN(p->store, control::StateStore::Open(g.vault_dir, vault->DeriveSubkey(purpose::kState)));
  MV_ASSIGN_OR_RETURN(p->audit, control::AuditLog::Open(p->store.get(), vault->DeriveSubkey(purpose::kAudit)));
  p->records = std::make_unique<control::Records>(p->store.get());
  MV_ASSIGN_OR_RETURN(auto targets, jobs::LoadRestoreTargets(g.config_file));
  p->runner = std::make_unique<jobs::JobRunner>(vault, g.vault_dir, p->store.get(), p->audit.get(), std::move(targets),
                                                indexed_change);
  p->runner->SetIndex(index);
  p->policies = std::make_unique<policy::PolicyStore>(p->store.get(), p->audit.get());
  p->runner->SetPurgeEnv(p->policies.get(), p->records.get(), exports_dir.empty() ? g.vault_dir + "/exports" : exports_dir);
  if (indexed_change) {
    p->tagger = std::make_unique<jobs::PolicyTagger>(g.vault_dir, p->policies.get(), p->records.get(), indexed_change);
  }
  index->SetRecords(p->records.get());
  MV_ASSIGN_OR_RETURN(auto offsite, replication::LoadOffsiteTargets(g.config_file));
  for (auto& [name, t] : offsite) {
    control::AuditLog* audit = p->audit.get();
    p->shippers.push_back(std::make_unique<replication::Shipper>(vault, p->store.get(), [audit] { return audit->head(); }, t));
    // The index's offsite snapshot: copied with serve's indexer parked (jobs/indexer.h).
    p->shippers.back()->SetIndexCopier([index](const std::string& dest) { return index->CopyTo(dest); });
    p->lent.shippers.push_back(p->shippers.back().get());
  }
  if (start_index) start_index();
  p->ServerEvent("server.start");
  MV_RETURN_IF_ERROR(p->runner->Start());
  if (p->tagger) p->tagger->Start();
  for (auto& s : p->shippers) {
    s->Start();
    Log("offsite " + s->config().name + ": replicating to " + s->config().url);
  }
  p->lent.vault = vault;
  p->lent.store = p->store.get();
  p->lent.audit = p->audit.get();
  p->lent.records = p->records.get();
  p->lent.runner = p->runner.get();
  p->lent.policies = p->policies.get();
  p->lent.indexed_change = indexed_change;
  p->lent.options = g;
  MV_ASSIGN_OR_RETURN(p->control, ControlServer::Start(&p->lent));
  return p;
}

Status StartApi(ServiceParts* p, Vault* vault, const GlobalOptions& g, const api::ApiConfig& config, std::function<json()> status) {
  api::AuthSettings auth;
  auth.session_idle_seconds = config.session_idle_seconds;
  auth.session_max_seconds = config.session_max_seconds;
  p->auth = std::make_unique<api::Authenticator>(p->records.get(), auth);
  p->exports = std::make_unique<api::ExportRunner>(vault, g.vault_dir, p->records.get(), p->audit.get(), config.exports);
  MV_RETURN_IF_ERROR(p->exports->Start());
  p->service = std::make_unique<api::ApiService>(vault, g.vault_dir, p->records.get(), p->auth.get(), p->audit.get(),
                                                 p->exports.get(), std::move(status), config.ToJson(), config.settings);
  p->service->SetJobRunner(p->runner.get());
  p->service->SetPolicyStore(p->policies.get());
  if (config.http.transport == "cpprest") {
    MV_ASSIGN_OR_RETURN(p->http, api::HttpServer::Start(p->service.get(), config.http));
  } else {
    MV_ASSIGN_OR_RETURN(p->beast, api::BeastServer::Start(p->service.get(), config.http));
  }
  return Status::Ok();
}

void Serve(GlobalOptions& g, const std::vector<std::string>& smtp, const std::vector<std::string>& lmtp, bool no_index,
           const std::string& http_flag, int* exit_code) {
  if (!ResolveOrFail(g, exit_code)) return;
  Result<capture::CaptureConfig> config = LoadCaptureConfig(g, smtp, lmtp);
  if (!config.ok()) {
    *exit_code = Fail(config.error());
    return;
  }
  api::ApiConfig api_config;
  if (Status s = g.config_file.empty() ? Status::Ok() : api::ApplyApiConfigFile(g.config_file, &api_config); !s.ok()) {
    *exit_code = Fail(s.error());
    return;
  }
  if (!http_flag.empty()) {
    if (Status s = api::ApplyHttpFlag(http_flag, &api_config); !s.ok()) {
      *exit_code = Fail(s.error());
      return;
    }
  }
  // Signals are taken synchronously by this thread (sigtimedwait); every thread started from
  // here on inherits the mask. SIGCHLD stays default: the PDF extractor waits for its child.
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&signals, s);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  OpenReport report;
  Result<Handle<Vault>> vault = OpenVault(g, &report);
  if (!vault.ok()) {
    *exit_code = Fail(vault.error());
    return;
  }
  for (const std::string& w : report.warnings) Log("vault: " + w);
  // Capture runs when something is to be listened on; `serve --http ADDR` alone runs the API
  // and the jobs (any combination of --smtp, --lmtp and --http is valid).
  if (config->listen.empty() && !api_config.enabled) {
    *exit_code = Fail(InvalidArgument("nothing to serve: give --smtp, --lmtp or --http (or smtp-listen, lmtp-listen or [api] listen in the config)"));
    return;
  }
  std::unique_ptr<capture::CaptureServer> server;
  if (!config->listen.empty()) {
    Result<std::unique_ptr<capture::CaptureServer>> created = capture::CaptureServer::Create(vault->get(), *config);
    if (!created.ok()) {
      *exit_code = Fail(created.error());
      return;
    }
    server = std::move(*created);
    if (Status s = server->Start(); !s.ok()) {
      *exit_code = Fail(s.error());
      return;
    }
  }
  // Without --no-index the indexer follows the vault, once the control plane (its tags) is up;
  // either way it holds the index for reindex jobs.
  auto indexer = std::make_unique<jobs::IndexFollower>(vault->get(), g.vault_dir);
  std::vector<capture::ListenAddress> bound;
  if (server) bound = server->bound();
  for (const auto& a : bound) Log("listening on " + a.ToString());
  auto stop_early = [&](const Error& e) {
    if (server) server->Stop(std::chrono::seconds(5));
    indexer->Stop();
    *exit_code = Fail(e);
  };
  std::function<void()> start_index;
  if (!no_index) start_index = [&indexer] { indexer->Start(); };
  Result<std::unique_ptr<ServiceParts>> parts = StartControl(vault->get(), g, indexer.get(), start_index, api_config.exports.dir);
  if (!parts.ok()) return stop_early(parts.error());
  // The API reads the same status the status file gets, refreshed every second below.
  auto last_status = std::make_shared<std::pair<std::mutex, json>>();
  if (api_config.enabled) {
    Status a = StartApi(parts->get(), vault->get(), g, api_config, [last_status] {
      std::lock_guard<std::mutex> l(last_status->first);
      return last_status->second;
    });
    if (!a.ok()) {
      (*parts)->Stop();
      return stop_early(a.error());
    }
    Log("API listening on " + api_config.http.uri + " (" + api_config.http.transport + ")");
  }
  if (server) {
    for (const std::string& w : server->warnings()) Log("warning: " + w);
  }
  ::mkdir((g.vault_dir + "/run").c_str(), 0700);
  const int64_t started = NowSeconds();
  std::deque<std::pair<Clock::time_point, uint64_t>> samples;  // for messages/s over 10 s

  for (bool first = true;; first = false) {
    struct timespec one_second = {1, 0};
    // The status file is written at once, then every second.
    int sig = first ? 0 : sigtimedwait(&signals, nullptr, &one_second);
    if (sig == SIGTERM || sig == SIGINT) {
      Log(std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") + ": draining sessions");
      break;
    }
    if (sig == SIGHUP && server) {
      Result<capture::CaptureConfig> fresh = LoadCaptureConfig(g, smtp, lmtp);
      Status s = fresh.ok() ? server->Reload(fresh->settings) : Status(fresh.error());
      Log(s.ok() ? "SIGHUP: settings reloaded (listen addresses and the vault need a restart)"
                 : "SIGHUP: reload refused, old settings kept: " + s.error().ToString());
    }
    if (std::string why = (*parts)->store->write_failure(); !why.empty()) {
      // The state store cannot write again in this process (state.h): stop cleanly, with a
      // failure exit, so the service manager starts a fresh one. Capture drains first.
      Log("the state store failed a write (" + why + "); stopping so that the service manager restarts mailvault");
      *exit_code = kExitRestart;
      break;
    }
    uint64_t messages = server ? server->stats().messages : 0;
    samples.emplace_back(Clock::now(), messages);
    while (samples.size() > 11) samples.pop_front();
    double secs = std::chrono::duration<double>(samples.back().first - samples.front().first).count();
    double rate = secs > 0 ? (samples.back().second - samples.front().second) / secs : 0;
    json j = StatusJson(**vault, server.get(), no_index ? nullptr : indexer.get(), bound, started, rate);
    if (api_config.enabled) j["api"] = api_config.http.uri;
    json offsite = json::array();
    for (const auto& s : (*parts)->shippers) offsite.push_back(s->status().ToJson());
    j["offsite"] = offsite;
    {
      std::lock_guard<std::mutex> l(last_status->first);
      last_status->second = j;
    }
    if (Status s = WriteStatusFile(StatusPath(g.vault_dir), j); !s.ok()) {
      Log("cannot write status: " + s.error().ToString());
    }
  }
  (*parts)->Stop();
  Log(api_config.enabled ? "API and jobs stopped" : "jobs stopped");
  if (server) {
    server->Stop(std::chrono::seconds(30));
    Log("capture stopped: " + std::to_string(server->stats().messages) + " messages stored this run");
  }
  indexer->Stop();
  if (!no_index) Log("indexer stopped at change " + std::to_string(indexer->applied()));
  ::unlink(StatusPath(g.vault_dir).c_str());
  parts->reset();
  server.reset();
  vault->reset();
  Log("stopped cleanly");
}

}  // namespace

void AddServeCommands(CLI::App& app, GlobalOptions& g, int* exit_code) {
  auto* serve = app.add_subcommand("serve", "run journal capture (SMTP/LMTP) and the indexer until SIGTERM");
  thread_local std::vector<std::string> smtp, lmtp;
  smtp = {}; lmtp = {};
  thread_local bool no_index = false;
  no_index = false;
  serve->add_option("--smtp", smtp, "listen for SMTP on ADDR:PORT (repeatable; replaces smtp-listen/lmtp-listen from the config)");
  serve->add_option("--lmtp", lmtp, "listen for LMTP on ADDR:PORT (repeatable)");
  serve->add_flag("--no-index", no_index, "do not run the indexer (`mailvault index run` catches up later)");
  thread_local std::string http;
  http = {};
  serve->add_option("--http", http, "serve the REST API over plain HTTP on ADDR:PORT (loopback only; [api] in the config for HTTPS)");
  serve->callback([&g, exit_code] { Serve(g, smtp, lmtp, no_index, http, exit_code); });

  auto* status = app.add_subcommand("status", "what a running `mailvault serve` is doing: sessions, rate, queues, index lag");
  thread_local bool as_json = false;
  as_json = false;
  status->add_flag("--json", as_json, "print JSON");
  status->callback([&g, exit_code] {
    if (!ResolveOrFail(g, exit_code)) return;
    Result<std::string> text = ReadSmallFile(StatusPath(g.vault_dir), 1 << 20);
    json j;
    std::string why;
    if (!text.ok()) {
      why = "mailvault serve is not running on this vault (no " + StatusPath(g.vault_dir) + ")";
    } else {
      j = json::parse(*text, nullptr, false);
      if (j.is_discarded() || !j.contains("pid")) {
        why = "cannot read " + StatusPath(g.vault_dir);
      } else if (::kill(j["pid"].get<int>(), 0) != 0) {
        why = "mailvault serve (pid " + std::to_string(j["pid"].get<int>()) + ") is not running; it did not stop cleanly";
      } else if (NowSeconds() - j.value("updated", int64_t{0}) > 10) {
        why = "mailvault serve (pid " + std::to_string(j["pid"].get<int>()) + ") has not updated its status for over 10 s";
      }
    }
    if (!why.empty()) {
      if (as_json) std::cout << json{{"running", false}, {"reason", why}}.dump(2) << "\n";
      else std::cerr << "mailvault: " << why << "\n";
      *exit_code = kExitPartly;
      return;
    }
    j["running"] = true;
    if (as_json) {
      std::cout << j.dump(2) << "\n";
      return;
    }
    std::cout << "running:        pid " << j["pid"] << " since " << j["started"].get<std::string>() << "\n";
    if (j.contains("vault") && j["vault"].value("state", "ok") != "ok") {
      std::cout << "VAULT FAILING:  since " << j["vault"].value("since", "") << ", " << j["vault"].value("failed_groups", 0)
                << " commit groups refused (mail gets 4xx and is retried): " << j["vault"].value("error", "")
                << "\n                it resumes by itself once the cause is gone\n";
    }
    for (const auto& a : j["listen"]) std::cout << "listening:      " << a.get<std::string>() << "\n";
    std::cout << "sessions:       " << j["sessions"] << " open, " << j["connections"] << " since start ("
              << j["refused_connections"] << " refused)\n"
              << "messages:       " << j["messages"] << " stored (" << j["duplicates"] << " already archived, "
              << j["journal_reports"] << " from journal reports), " << FormatBytes(j["bytes"].get<uint64_t>()) << "\n"
              << "rate:           " << j["messages_per_second"].get<double>() << " messages/s (last 10 s)\n"
              << "failures:       " << j["temporary_failures"] << " temporary, " << j["permanent_failures"] << " permanent\n"
              << "queues:         " << j["queues"]["in_flight"] << " being stored, " << j["queues"]["vault_commit"]
              << " waiting for the committer\n";
    const json& ix = j["index"];
    if (ix.contains("disabled")) {
      std::cout << "index:          not run by this serve (--no-index)\n";
    } else {
      std::cout << "index lag:      " << ix["lag"] << " changes";
      if (ix.contains("oldest_unindexed")) {
        std::cout << "; oldest unindexed captured " << ix["oldest_unindexed"]["captured"].get<std::string>() << " ("
                  << ix["oldest_unindexed"]["age_seconds"] << " s ago)";
      }
      std::cout << "\n";
      if (ix.contains("last_error")) std::cout << "index error:    " << ix["last_error"].get<std::string>() << "\n";
    }
  });

  auto* hash = app.add_subcommand("hash-password", "read a password from stdin, print its scrypt hash (for auth-users files)");
  hash->callback([exit_code] {
    std::string password;
    if (!std::getline(std::cin, password) || password.empty()) {
      *exit_code = Fail("hash-password reads the password from the first line of stdin; it was empty");
      return;
    }
    std::cout << HashPassword(password) << "\n";
  });
}

}  // namespace mailvault::cli
