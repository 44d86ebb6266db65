// What every `mailvault` command shares: where the vault and its key are, and how to open it.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/io.h"
#include "core/result.h"
#include "vault/vault.h"

namespace mailvault {
namespace control {
class StateStore;
class AuditLog;
class Records;
}  // namespace control
namespace control {
struct JobRecord;
}  // namespace control
namespace jobs {
class JobRunner;
}  // namespace jobs
namespace policy {
class PolicyStore;
}  // namespace policy
namespace replication {
class Shipper;
}  // namespace replication
}  // namespace mailvault

namespace mailvault::cli {

// A pointer that owns its object or borrows it: a command opens the vault itself, or, run by
// a service for a client, uses the service's (which it must not close).
template <typename T>
struct MaybeOwned {
  bool owned = true;
  void operator()(T* p) const {
    if (owned) delete p;
  }
};
template <typename T>
using Handle = std::unique_ptr<T, MaybeOwned<T>>;
template <typename T>
Handle<T> Owned(std::unique_ptr<T> p) { return Handle<T>(p.release(), MaybeOwned<T>{true}); }
template <typename T>
Handle<T> Borrowed(T* p) { return Handle<T>(p, MaybeOwned<T>{false}); }

struct GlobalOptions {
  std::string vault_dir;   // --vault, MAILVAULT_VAULT, config "vault"
  std::string key_file;    // --key-file, MAILVAULT_KEY_FILE, config "key-file"
  std::string config_file; // --config, MAILVAULT_CONFIG
  bool passphrase_stdin = false;
  VaultOptions vault_options;
};

// Fills what flags left empty from the environment, then the config file, then the defaults.
Status ResolveGlobalOptions(GlobalOptions* g);
// The same, reporting a failure (and setting *exit_code); false when the command cannot go on.
bool ResolveOrFail(GlobalOptions& g, int* exit_code);
KeySource KeySourceFrom(const GlobalOptions& g);
// The vault: opened here, or the running service's when it runs this command for a client.
Result<Handle<Vault>> OpenVault(const GlobalOptions& g, OpenReport* report = nullptr);

// What a running serve lends the commands it runs for clients of its control socket.
struct ServiceResources {
  Vault* vault = nullptr;
  control::StateStore* store = nullptr;
  control::AuditLog* audit = nullptr;
  control::Records* records = nullptr;
  jobs::JobRunner* runner = nullptr;
  policy::PolicyStore* policies = nullptr;   // the one writer of the policy set
  std::function<uint64_t()> indexed_change;  // null when serve runs no indexer
  std::vector<replication::Shipper*> shippers;  // one per [offsite NAME]
  GlobalOptions options;                     // serve's own: the vault, key and config
};
// The calling thread's service, or nullptr when the command runs in its own process.
const ServiceResources* Service();
void SetService(const ServiceResources* service);

// Follows a job of the service until it ends or is paused: tick(record) at each change of its record (at
// most every 250 ms). The record as it ended; an error when it is gone, or when the client of
// the control socket has gone (the job goes on: `mailvault job cancel` stops it).
Result<control::JobRecord> FollowToEnd(const ServiceResources& svc, const std::string& id,
                                       const std::function<void(const control::JobRecord&)>& tick);

// Runs one command line (argv[0] is the program) as `mailvault-admin` does; returns the exit
// code. base: the global options to start from (a service's own, for its clients).
int RunCommandLine(const std::vector<std::string>& argv, const GlobalOptions* base = nullptr);

// Prints "mailvault: <error>" and a hint; returns the exit code for it.
int Fail(const Error& e);
int Fail(const std::string& message);

bool StderrIsTerminal();
std::string FormatDate(std::optional<int64_t> t, int offset_minutes = 0);
std::string FormatBytes(uint64_t n);

}  // namespace mailvault::cli
