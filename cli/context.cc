// Opening the vault from the global options (the admin command only; cli/options.cc has the
// parts the lean search front needs too).
#include <cstdlib>
#include <iostream>

#include "cli/context.h"

namespace mailvault::cli {

KeySource KeySourceFrom(const GlobalOptions& g) {
  KeySource k;
  k.key_file = g.key_file;
  const char* env_value = std::getenv("MAILVAULT_PASSPHRASE");
  std::string env = env_value ? env_value : "";
  if (g.passphrase_stdin) {
    std::string line;
    std::getline(std::cin, line);
    k.passphrase = line;
  } else if (!env.empty()) {
    k.passphrase = env;
  }
  return k;
}

Result<std::unique_ptr<Vault>> OpenVault(const GlobalOptions& g, OpenReport* report) {
  OpenReport local;
  OpenReport* r = report ? report : &local;
  Result<std::unique_ptr<Vault>> v = Vault::Open(g.vault_dir, KeySourceFrom(g), g.vault_options, r);
  if (v.ok()) {
    for (const std::string& w : r->warnings) std::cerr << "mailvault: warning: " << w << "\n";
    if (r->torn_bytes_dropped) {
      std::cerr << "mailvault: recovered from an interrupted write: dropped " << r->torn_bytes_dropped
                << " bytes of an unacknowledged append\n";
    }
  }
  return v;
}

}  // namespace mailvault::cli
