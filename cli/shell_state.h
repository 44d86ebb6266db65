// The vault with its state store and audit trail, opened by a shell command that changes
// control data (users, tokens, restore jobs). These need `mailvault serve` stopped: the vault
// and the state store are held by one process at a time.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "control/audit.h"
#include "control/records.h"
#include "control/state.h"
#include "cli/context.h"

namespace mailvault::cli {

struct ShellState {
  std::unique_ptr<Vault> vault;
  std::unique_ptr<control::StateStore> store;
  std::unique_ptr<control::AuditLog> audit;
  std::unique_ptr<control::Records> records;
};

// busy_hint: what to do instead while another process (serve) holds the vault.
Result<ShellState> OpenShellState(GlobalOptions& g, const std::string& busy_hint);

// Who ran the command, for the audit trail: the login behind sudo when there is one.
std::string ShellUser();

// Appends an audit entry for a shell action (role "shell", auth "cli:uid=N").
Status AuditShell(ShellState& s, const std::string& action, const std::string& target,
                  nlohmann::json details = nlohmann::json::object());

}  // namespace mailvault::cli
