// Opening the vault from the global options (the admin command only; cli/options.cc has the
// parts the lean search front needs too).
#include <cstdlib>
#include <iostream>

#include "cli/context.h"

#include "cli/control_socket.h"
#include "control/jobs.h"
#include "jobs/runner.h"

namespace mailvault::cli {

KeySource KeySourceFrom(const GlobalOptions& g) {
  KeySource k;
  k.key_file = g.key_file;
  const char* env_value = std::getenv("MAILVAULT_PASSPHRASE");
  std::string env = env_value ? env_value : "";
  if (g.passphrase_stdin) {
    std::string line;
    std::getline(In(), line);
    k.passphrase = line;
  } else if (!env.empty()) {
    k.passphrase = env;
  }
  return k;
}

namespace {
thread_local const ServiceResources* tl_service = nullptr;
}  // namespace

const ServiceResources* Service() { return tl_service; }
void SetService(const ServiceResources* service) { tl_service = service; }

Result<Handle<Vault>> OpenVault(const GlobalOptions& g, OpenReport* report) {
  if (tl_service) return Borrowed(tl_service->vault);
  OpenReport local;
  OpenReport* r = report ? report : &local;
  Result<std::unique_ptr<Vault>> v = Vault::Open(g.vault_dir, KeySourceFrom(g), g.vault_options, r);
  if (!v.ok()) return v.error();
  for (const std::string& w : r->warnings) Err() << "mailvault: warning: " << w << "\n";
  if (r->torn_bytes_dropped) {
    Err() << "mailvault: recovered from an interrupted write: dropped " << r->torn_bytes_dropped
          << " bytes of an unacknowledged append\n";
  }
  return Owned(std::move(*v));
}

Result<control::JobRecord> FollowToEnd(const ServiceResources& svc, const std::string& id,
                                       const std::function<void(const control::JobRecord&)>& tick) {
  control::JobStore& store = svc.runner->store();
  for (;;) {
    const uint64_t seen = store.changes();
    MV_ASSIGN_OR_RETURN(std::optional<control::JobRecord> now, store.Get(id));
    if (!now) return NotFound("job " + id + " is gone");
    if (control::IsFinal(now->state) || now->state == control::JobState::kPaused) return std::move(*now);
    if (ClientGone()) return FailedPrecondition("the client went; job " + id + " goes on");
    if (tick) tick(*now);
    store.WaitForChange(seen, std::chrono::steady_clock::now() + std::chrono::milliseconds(250));
  }
}

}  // namespace mailvault::cli
