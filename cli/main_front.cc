// mailvault: the command people and scripts run. It answers `search` and `count` itself and
// hands every other subcommand to mailvault-admin (beside it), as git hands subcommands to
// git-*.
//
// Why two binaries: a search is a few hundred microseconds of work, but loading the vault's
// libraries (RocksDB, GMime and theirs: 39 shared objects) costs about 10 ms per process. This
// binary links only Xapian and zstd, so `mailvault search` in a script's loop starts in about
// 2 ms (docs/benchmarks.md). Everything else pays one extra exec, well under a millisecond.
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <string>

#include "cli/commands.h"

namespace {

// The subcommand: the first argument that is neither a global option nor its value.
std::string Subcommand(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--vault" || a == "--key-file" || a == "--config") {
      ++i;
    } else if (a.rfind("-", 0) != 0) {
      return a;
    }
  }
  return "";
}

std::string AdminPath() {
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return "mailvault-admin";
  std::string path(self, static_cast<size_t>(n));
  return path.substr(0, path.rfind('/') + 1) + "mailvault-admin";
}

}  // namespace

int main(int argc, char** argv) {
  using namespace mailvault::cli;
  ::umask(077);  // owner-only, as in mailvault-admin (main.cc), which inherits it
  const std::string sub = Subcommand(argc, argv);
  if (sub != "search" && sub != "count") {
    const std::string admin = AdminPath();
    ::execv(admin.c_str(), argv);
    std::cerr << "mailvault: cannot run " << admin << ": " << std::strerror(errno)
              << " (it is installed beside the mailvault command; reinstall mailvault)\n";
    return 1;
  }
  CLI::App app{"mailvault: search the archive (every other subcommand: mailvault --help)"};
  app.require_subcommand(1);
  GlobalOptions g;
  app.add_option("--vault", g.vault_dir, "vault directory (or MAILVAULT_VAULT)");
  app.add_option("--key-file", g.key_file, "master key file (or MAILVAULT_KEY_FILE); not needed to search");
  app.add_option("--config", g.config_file, "config file with \"key = value\" lines (or MAILVAULT_CONFIG)");
  app.add_flag("--passphrase-stdin", g.passphrase_stdin, "not needed to search");
  int exit_code = 0;
  AddSearchCommands(app, g, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return exit_code;
}
