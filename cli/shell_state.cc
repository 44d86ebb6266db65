#include "vault/purposes.h"
#include "cli/shell_state.h"

#include <pwd.h>
#include <unistd.h>

#include <cstdlib>

namespace mailvault::cli {

Result<ShellState> OpenShellState(GlobalOptions& g, const std::string& busy_hint) {
  ShellState s;
  Result<std::unique_ptr<Vault>> v = OpenVault(g);
  if (!v.ok()) {
    if (v.error().code() == ErrorCode::kBusy) return v.error().With(busy_hint);
    return v.error();
  }
  s.vault = std::move(*v);
  MV_ASSIGN_OR_RETURN(s.store, control::StateStore::Open(g.vault_dir, s.vault->DeriveSubkey(purpose::kState)));
  MV_ASSIGN_OR_RETURN(s.audit, control::AuditLog::Open(s.store.get(), s.vault->DeriveSubkey(purpose::kAudit)));
  s.records = std::make_unique<control::Records>(s.store.get());
  return s;
}

std::string ShellUser() {
  if (const char* sudo = std::getenv("SUDO_USER"); sudo && *sudo) return sudo;
  struct passwd* pw = ::getpwuid(::getuid());
  return pw ? pw->pw_name : "uid " + std::to_string(::getuid());
}

Status AuditShell(ShellState& s, const std::string& action, const std::string& target, nlohmann::json details) {
  control::AuditEvent e;
  e.user = ShellUser();
  e.role = "shell";
  e.auth = "cli:uid=" + std::to_string(::getuid());
  e.source = "cli";
  e.action = action;
  e.target = target;
  e.details = std::move(details);
  return s.audit->Record(std::move(e));
}

}  // namespace mailvault::cli
