#include "cli/shell_state.h"

#include <pwd.h>
#include <unistd.h>

#include <cstdlib>

#include "vault/purposes.h"

namespace mailvault::cli {

Result<ShellState> OpenShellState(GlobalOptions& g, const std::string& busy_hint) {
  ShellState s;
  if (const ServiceResources* svc = Service()) {
    s.vault = Borrowed(svc->vault);
    s.store = Borrowed(svc->store);
    s.audit = Borrowed(svc->audit);
    s.records = Borrowed(svc->records);
    return s;
  }
  Result<Handle<Vault>> v = OpenVault(g);
  if (!v.ok()) {
    if (v.error().code() == ErrorCode::kBusy) return v.error().With(busy_hint);
    return v.error();
  }
  s.vault = std::move(*v);
  MV_ASSIGN_OR_RETURN(std::unique_ptr<control::StateStore> store, control::StateStore::Open(g.vault_dir, s.vault->DeriveSubkey(purpose::kState)));
  s.store = Owned(std::move(store));
  MV_ASSIGN_OR_RETURN(std::unique_ptr<control::AuditLog> audit, control::AuditLog::Open(s.store.get(), s.vault->DeriveSubkey(purpose::kAudit)));
  s.audit = Owned(std::move(audit));
  s.records = Owned(std::make_unique<control::Records>(s.store.get()));
  return s;
}

// The person at the command line: this process's, or the service's client's (its peer uid,
// and the SUDO_USER it sent, trusted because only root and the service's user may connect).
unsigned ShellUid() { return Client() ? Client()->uid : ::getuid(); }

std::string ShellUser() {
  const char* sudo = Client() ? Client()->sudo_user.c_str() : std::getenv("SUDO_USER");
  if (sudo && *sudo) return sudo;
  struct passwd* pw = ::getpwuid(ShellUid());
  return pw ? pw->pw_name : "uid " + std::to_string(ShellUid());
}

control::Actor ShellActor() {
  control::Actor a;
  a.user = ShellUser();
  a.role = "shell";
  a.auth = "cli:uid=" + std::to_string(ShellUid());
  a.source = "cli";
  return a;
}

Status AuditShell(ShellState& s, const std::string& action, const std::string& target, nlohmann::json details) {
  control::AuditEvent e;
  e.user = ShellUser();
  e.role = "shell";
  e.auth = "cli:uid=" + std::to_string(ShellUid());
  e.source = "cli";
  e.action = action;
  e.target = target;
  e.details = std::move(details);
  return s.audit->Record(std::move(e));
}

}  // namespace mailvault::cli
