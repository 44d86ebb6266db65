// The vault with its state store and audit trail, for a shell command that changes control
// data (users, tokens, restore jobs). The vault and the state store are held by one process at
// a time: while `mailvault serve` runs, such commands run inside it (control_socket.h) and
// use its.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "control/audit.h"
#include "control/jobs.h"
#include "control/records.h"
#include "control/state.h"
#include "cli/context.h"

namespace mailvault::cli {

// Opened by the command, or the running service's (borrowed) when it runs the command.
struct ShellState {
  Handle<Vault> vault;
  Handle<control::StateStore> store;
  Handle<control::AuditLog> audit;
  Handle<control::Records> records;
};

// busy_hint: what to do instead while another process (serve) holds the vault.
Result<ShellState> OpenShellState(GlobalOptions& g, const std::string& busy_hint);

// Who ran the command, for the audit trail: the login behind sudo when there is one.
std::string ShellUser();

// The same person as a job's starter (role "shell").
control::Actor ShellActor();

// Appends an audit entry for a shell action (role "shell", auth "cli:uid=N").
Status AuditShell(ShellState& s, const std::string& action, const std::string& target,
                  nlohmann::json details = nlohmann::json::object());

}  // namespace mailvault::cli
