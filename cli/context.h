// What every `mailvault` command shares: where the vault and its key are, and how to open it.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "core/result.h"
#include "vault/vault.h"

namespace mailvault::cli {

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
Result<std::unique_ptr<Vault>> OpenVault(const GlobalOptions& g, OpenReport* report = nullptr);

// Prints "mailvault: <error>" and a hint; returns the exit code for it.
int Fail(const Error& e);
int Fail(const std::string& message);

bool StderrIsTerminal();
std::string FormatDate(std::optional<int64_t> t, int offset_minutes = 0);
std::string FormatBytes(uint64_t n);

}  // namespace mailvault::cli
