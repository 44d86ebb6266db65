// One Add*Command per subcommand; each registers its flags and, when chosen, sets *exit_code.
// Flags are bound to thread_local variables, and each Add*Command sets them back to their
// defaults: a running serve builds and parses a command line for every client of its control
// socket (control_socket.h), each on the client's own thread and side by side, so one client's
// flags are never another's, and a flag given to one command must not stay set for the next on
// that thread. A flag read by a thread the command starts must be copied to a local first.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/context.h"

namespace mailvault::cli {

void AddInitCommand(CLI::App& app, GlobalOptions& g, int* exit_code);
void AddImportCommand(CLI::App& app, GlobalOptions& g, int* exit_code);
void AddListCommand(CLI::App& app, GlobalOptions& g, int* exit_code);
void AddShowCommand(CLI::App& app, GlobalOptions& g, int* exit_code);
void AddCatCommand(CLI::App& app, GlobalOptions& g, int* exit_code);
void AddExportCommand(CLI::App& app, GlobalOptions& g, int* exit_code);
void AddVerifyCommand(CLI::App& app, GlobalOptions& g, int* exit_code);
void AddStatsCommand(CLI::App& app, GlobalOptions& g, int* exit_code);
void AddRebuildCommand(CLI::App& app, GlobalOptions& g, int* exit_code);
void AddSearchCommands(CLI::App& app, GlobalOptions& g, int* exit_code);  // search, count
void AddIndexCommands(CLI::App& app, GlobalOptions& g, int* exit_code);   // index, reindex, check
void AddServeCommands(CLI::App& app, GlobalOptions& g, int* exit_code);   // serve, status, hash-password
void AddApiCommands(CLI::App& app, GlobalOptions& g, int* exit_code);     // user, token, audit, api
void AddRestoreCommands(CLI::App& app, GlobalOptions& g, int* exit_code); // restore, job
void AddPolicyCommands(CLI::App& app, GlobalOptions& g, int* exit_code);  // policy, hold
void AddPurgeCommands(CLI::App& app, GlobalOptions& g, int* exit_code);   // purge
void AddOffsiteCommands(CLI::App& app, GlobalOptions& g, int* exit_code); // offsite, dr
// verify --repair: fetches missing or damaged packs back from the offsite copy (cmd_offsite.cc).
int RepairFromOffsite(GlobalOptions& g);

}  // namespace mailvault::cli
