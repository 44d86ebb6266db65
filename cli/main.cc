// mailvault-admin: every subcommand of `mailvault` (see `mailvault --help`). The `mailvault`
// front (main_front.cc) answers search and count itself and runs this for everything else.
#include <sys/stat.h>

#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "core/message.h"

int main(int argc, char** argv) {
  using namespace mailvault::cli;
  // Everything mailvault creates (the vault, its catalog, index and state, exports, restore
  // jobs) is for its owner only, whatever the caller's umask: the index holds mail's words in
  // clear. Files and directories that must be shared are chmod'ed explicitly (none today).
  ::umask(077);
  mailvault::InitMessageParsing();
  CLI::App app{"mailvault: an archive that keeps every message once, compressed, encrypted and fingerprinted"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "mailvault " MAILVAULT_VERSION);
  GlobalOptions g;
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
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return exit_code;
}
