// The REST API's handlers and router, independent of any HTTP library: a transport
// (http_cpprest.h) turns bytes into a Request and sends back the Response that Handle returns.
// Every route is one row of the table in service.cc, with the roles it admits; that table is
// also what `mailvault-admin api routes --json` prints and tests/api/check_openapi.py compares
// with docs/openapi.yaml.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "api/control.h"
#include "api/auth.h"
#include "api/http.h"
#include "api/metrics.h"
#include "policy/policy.h"
#include "vault/vault.h"

namespace mailvault::api {

class ExportRunner;
}  // namespace mailvault::api
namespace mailvault::policy {
class PolicyStore;
}
namespace mailvault::jobs {
class JobRunner;
}  // namespace mailvault::jobs
namespace mailvault::api {

struct ApiSettings {
  size_t max_body_bytes = 1 << 20;     // a request body past this gets 413
  int max_json_depth = 32;
  size_t max_page = 1000;              // search limit
  size_t max_bulk_tag = 100000;        // messages one bulk tag may change
  size_t max_saved_searches = 1000;    // per user
  int default_token_days = 90, max_token_days = 365;
  size_t min_password_length = 10;
};

struct RouteInfo {
  std::string method, path;
  std::vector<std::string> roles;  // "anonymous" for routes open to all
};

class ApiService {
 public:
  // status: what serve knows beyond the vault (capture rates, index lag, queues), as JSON with
  // numeric fields; used by /status and /metrics. export_runner may be null (no exports).
  ApiService(Vault* vault, std::string vault_dir, Records* records, Authenticator* auth, AuditLog* audit,
             ExportRunner* exports, std::function<nlohmann::json()> status, nlohmann::json config, ApiSettings settings = {});
  ~ApiService();

  Response Handle(const Request& request);
  // Restores and the job routes need the job runner; without one they answer 503.
  void SetJobRunner(jobs::JobRunner* runner) { jobs_ = runner; }
  // The policy routes need the service's policy store; without one they answer 503.
  void SetPolicyStore(policy::PolicyStore* policies) { policies_ = policies; }
  // Event streams end within a second (serve is stopping).
  void Stop() { stopping_ = true; }
  static std::vector<RouteInfo> Routes();
  const ApiMetrics& metrics() const { return metrics_; }

  struct Context;  // one request being handled (service.cc)

 private:
  using Handler = Response (ApiService::*)(Context&);
  struct Route;
  static const std::vector<Route>& Table();

  Response Dispatch(const Request& request, Principal* who_out, std::string* route_out);
  Status Audit(Context& c, const std::string& action, const std::string& target, int status,
               nlohmann::json details = nlohmann::json::object());

  Response Healthz(Context& c);
  Response Metrics(Context& c);
  Response Login(Context& c);
  Response Logout(Context& c);
  Response Me(Context& c);
  Response ListUsers(Context& c);
  Response CreateUser(Context& c);
  Response UpdateUser(Context& c);
  Response GetConfig(Context& c);
  Response ListTokens(Context& c);
  Response CreateToken(Context& c);
  Response RevokeToken(Context& c);
  Response GetStatus(Context& c);
  Response GetOffsite(Context& c);  // the offsite targets' status (the serve status's "offsite")
  Response ListJobs(Context& c);
  Response CreateJob(Context& c);
  Response GetJob(Context& c);
  Response CancelJob(Context& c);
  Response PauseJob(Context& c);
  Response ResumeJob(Context& c);
  Response JobEvents(Context& c);
  Response CreateRestore(Context& c);
  Response ListRestoreTargets(Context& c);
  Response Search(Context& c);
  Response BulkTag(Context& c);
  Response GetMessage(Context& c);
  Response GetRaw(Context& c);
  Response PutTag(Context& c);
  Response DeleteTag(Context& c);
  Response ListSavedSearches(Context& c);
  Response CreateSavedSearch(Context& c);
  Response RunSavedSearch(Context& c);
  Response DeleteSavedSearch(Context& c);
  Response ListExports(Context& c);
  Response CreateExport(Context& c);
  Response GetExport(Context& c);
  Response DownloadExport(Context& c);
  Response ExportManifest(Context& c);
  Response DeleteExport(Context& c);
  Response ReadAudit(Context& c);
  Response GetPolicies(Context& c);
  Response PutPolicies(Context& c);
  Response GetPolicy(Context& c);
  Response PolicyWhatIf(Context& c);
  Response LockPolicies(Context& c);
  Response ExplainMessage(Context& c);
  Response ListHolds(Context& c);
  Response PlaceHold(Context& c);
  Response ReleaseHold(Context& c);
  Response ListPurges(Context& c);
  Response CreatePurge(Context& c);
  Response GetPurge(Context& c);
  Response ApprovePurge(Context& c);
  Response CancelPurge(Context& c);
  Response PurgeDispositions(Context& c);
  policy::PolicyStore& Policies();
  // The "policies" array of a request body, validated as a set (400 naming the first error).
  std::vector<policy::Policy> PolicyBody(Context& c);
  Response AuditHeadOf(Context& c);

  Response RunSearch(Context& c, const std::string& query, const nlohmann::json& body, const std::string& action,
                     const std::string& target);
  // The message named by the path's id, when it exists and the caller's scope admits it;
  // otherwise throws the same 404 whichever it was.
  ObjectId MessageInScope(Context& c);
  ExportJob OwnJob(Context& c);
  jobs::JobRunner& Runner();
  control::Actor ActorOf(const Context& c) const;
  Response JobRequest(Context& c, const char* what);
  Response TagChange(Context& c, bool add);

  Vault* vault_;
  std::string vault_dir_;
  Records* records_;
  Authenticator* auth_;
  AuditLog* audit_;
  ExportRunner* exports_;
  jobs::JobRunner* jobs_ = nullptr;
  policy::PolicyStore* policies_ = nullptr;
  std::atomic<bool> stopping_{false};
  // Each open event stream holds one of the transport's workers: at most this many at once, so
  // that browsers watching jobs never take the API from everyone else.
  static constexpr int kMaxEventStreams = 8;
  std::atomic<int> event_streams_{0};
  std::function<nlohmann::json()> status_;
  nlohmann::json config_;
  ApiSettings settings_;
  ApiMetrics metrics_;
  std::atomic<uint64_t> next_request_{0};
  // Unauthenticated refusals audited per address: the first each minute (see Dispatch).
  bool RefusalToAudit(const std::string& peer, uint64_t* suppressed);
  struct RefusalCount {
    int64_t minute = 0;
    uint64_t suppressed = 0;
  };
  std::mutex refusals_mu_;
  std::map<std::string, RefusalCount> refusals_;
  std::string request_prefix_;
};

}  // namespace mailvault::api
