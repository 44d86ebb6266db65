// The `mailvault-admin` command line: every subcommand, built fresh for each run. main.cc runs
// it once per process; a running serve runs it for each client of its control socket.
#include <CLI/CLI.hpp>

#include "cli/commands.h"

namespace mailvault::cli {

// Command lines run side by side inside a service, each on its client's thread: the flags are
// thread_local (commands.h), so nothing here is shared between two clients' parses.
int RunCommandLine(const std::vector<std::string>& args, const GlobalOptions* base) {
  CLI::App app{"mailvault: an archive that keeps every message once, compressed, encrypted and fingerprinted"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "mailvault " MAILVAULT_VERSION);
  GlobalOptions g = base ? *base : GlobalOptions{};
  app.add_option("--vault", g.vault_dir, "vault directory (or MAILVAULT_VAULT)");
  app.add_option("--key-file", g.key_file, "master key file (or MAILVAULT_KEY_FILE)");
  app.add_option("--config", g.config_file, "config file with \"key = value\" lines (or MAILVAULT_CONFIG)");
  app.add_flag("--passphrase-stdin", g.passphrase_stdin,
               "read the vault passphrase from the first line of stdin (or set MAILVAULT_PASSPHRASE)");
  int exit_code = 0;
  AddInitCommand(app, g, &exit_code);
  AddImportCommand(app, g, &exit_code);
  AddListCommand(app, g, &exit_code);
  AddShowCommand(app, g, &exit_code);
  AddCatCommand(app, g, &exit_code);
  AddExportCommand(app, g, &exit_code);
  AddVerifyCommand(app, g, &exit_code);
  AddStatsCommand(app, g, &exit_code);
  AddRebuildCommand(app, g, &exit_code);
  AddSearchCommands(app, g, &exit_code);
  AddIndexCommands(app, g, &exit_code);
  AddServeCommands(app, g, &exit_code);
  AddApiCommands(app, g, &exit_code);
  AddRestoreCommands(app, g, &exit_code);
  AddPolicyCommands(app, g, &exit_code);
  AddPurgeCommands(app, g, &exit_code);
  AddOffsiteCommands(app, g, &exit_code);
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  try {
    app.parse(static_cast<int>(argv.size()), const_cast<char**>(argv.data()));
  } catch (const CLI::ParseError& e) {
    exit_code = app.exit(e, Out(), Err());
  }
  return exit_code;
}

}  // namespace mailvault::cli
