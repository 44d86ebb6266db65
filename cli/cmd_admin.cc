// init, verify, stats, rebuild: the vault's life cycle.
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"

namespace mailvault::cli {

void AddInitCommand(CLI::App& app, GlobalOptions& g, int* exit_code) {
  auto* cmd = app.add_subcommand("init", "create a vault (and a key file, mode 0600, if none exists)");
  static bool passphrase = false;
  passphrase = false;
  cmd->add_flag("--passphrase", passphrase, "protect the master key with a passphrase instead of a key file "
                                                   "(at least 12 characters; read from MAILVAULT_PASSPHRASE or, with --passphrase-stdin, stdin)");
  cmd->callback([&g, exit_code] {
    if (Status s = ResolveGlobalOptions(&g); !s.ok()) {
      *exit_code = Fail(s.error());
      return;
    }
    KeySource keys = KeySourceFrom(g);
    if (passphrase && !keys.passphrase) {
      *exit_code = Fail("--passphrase needs the passphrase in MAILVAULT_PASSPHRASE or on stdin with --passphrase-stdin");
      return;
    }
    if (!passphrase) keys.passphrase.reset();
    bool created = false;
    Status s = Vault::Init(g.vault_dir, keys, g.vault_options, &created);
    if (!s.ok()) {
      *exit_code = Fail(s.error());
      return;
    }
    Out() << "created vault " << g.vault_dir << "\n";
    if (created) {
      Out() << "created key file " << g.key_file << " (mode 0600): back it up apart from the vault; "
                << "without it nothing in the vault can be read\n";
    }
  });
}

void AddVerifyCommand(CLI::App& app, GlobalOptions& g, int* exit_code) {
  auto* cmd = app.add_subcommand("verify", "recompute every fingerprint and authenticate every ciphertext");
  static double sample = 100.0;
  sample = 100.0;
  static bool json = false;
  json = false;
  cmd->add_option("--sample", sample, "check a random PERCENT of the messages")->check(CLI::Range(0.0, 100.0));
  cmd->add_flag("--json", json, "print the report as JSON");
  cmd->callback([&g, exit_code] {
    if (Status s = ResolveGlobalOptions(&g); !s.ok()) {
      *exit_code = Fail(s.error());
      return;
    }
    Result<Handle<Vault>> v = OpenVault(g);
    if (!v.ok()) {
      *exit_code = Fail(v.error());
      return;
    }
    auto start = std::chrono::steady_clock::now();
    bool tty = StderrIsTerminal() && !json;
    Result<VerifyReport> r = (*v)->Verify(sample, [&](uint64_t done, uint64_t total) {
      if (tty) Err() << "\rverified " << done << " / " << total << std::flush;
    });
    if (tty) Err() << "\n";
    if (!r.ok()) {
      *exit_code = Fail(r.error());
      return;
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (json) {
      nlohmann::json j{{"ok", r->ok()},
                       {"messages_checked", r->messages_checked},
                       {"envelopes_checked", r->envelopes_checked},
                       {"packs_checked", r->packs_checked},
                       {"bytes_checked", r->bytes_checked},
                       {"seconds", secs},
                       {"problems", r->problems}};
      Out() << j.dump(2) << "\n";
    } else {
      for (const std::string& p : r->problems) Out() << "BAD " << p << "\n";
      Out() << (r->ok() ? "ok: " : "FAILED: ") << r->messages_checked << " messages, " << r->envelopes_checked
                << " further envelopes, " << r->packs_checked << " packs (" << FormatBytes(r->bytes_checked)
                << ") checked in " << secs << " s; " << r->problems.size() << " problems\n";
    }
    *exit_code = r->ok() ? 0 : 1;
  });
}

static uint64_t DirBytes(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec); !ec && it != std::filesystem::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->is_regular_file(ec)) total += it->file_size(ec);
  }
  return total;
}

void AddStatsCommand(CLI::App& app, GlobalOptions& g, int* exit_code) {
  auto* cmd = app.add_subcommand("stats", "what the vault holds and how much space it takes");
  static bool json = false;
  json = false;
  cmd->add_flag("--json", json, "print as JSON");
  cmd->callback([&g, exit_code] {
    if (Status s = ResolveGlobalOptions(&g); !s.ok()) {
      *exit_code = Fail(s.error());
      return;
    }
    Result<Handle<Vault>> v = OpenVault(g);
    if (!v.ok()) {
      *exit_code = Fail(v.error());
      return;
    }
    Result<VaultStats> st = (*v)->Stats();
    if (!st.ok()) {
      *exit_code = Fail(st.error());
      return;
    }
    uint64_t pack_bytes = DirBytes(g.vault_dir + "/packs");
    uint64_t catalog_bytes = DirBytes(g.vault_dir + "/catalog");
    uint64_t vault_bytes = DirBytes(g.vault_dir);
    double ratio = st->raw_bytes ? static_cast<double>(vault_bytes) / st->raw_bytes : 0.0;
    if (json) {
      nlohmann::json j{{"messages", st->messages},       {"raw_bytes", st->raw_bytes},
                       {"stored_bytes", st->stored_bytes}, {"duplicates", st->duplicates},
                       {"envelopes", st->envelopes},     {"pack_bytes", pack_bytes},
                       {"catalog_bytes", catalog_bytes}, {"vault_bytes", vault_bytes},
                       {"vault_to_raw", ratio}};
      Out() << j.dump(2) << "\n";
      return;
    }
    Out() << "messages:      " << st->messages << "\n"
              << "raw bytes:     " << st->raw_bytes << " (" << FormatBytes(st->raw_bytes) << ")\n"
              << "stored bytes:  " << st->stored_bytes << " (" << FormatBytes(st->stored_bytes) << ", message records)\n"
              << "duplicates:    " << st->duplicates << "\n"
              << "envelopes:     " << st->envelopes << "\n"
              << "packs:         " << FormatBytes(pack_bytes) << "\n"
              << "catalog:       " << FormatBytes(catalog_bytes) << "\n"
              << "vault on disk: " << FormatBytes(vault_bytes) << " (" << ratio << " of the raw bytes)\n";
  });
}

void AddRebuildCommand(CLI::App& app, GlobalOptions& g, int* exit_code) {
  auto* cmd = app.add_subcommand("rebuild", "recreate the catalog from the packs and the key");
  cmd->callback([&g, exit_code] {
    if (Status s = ResolveGlobalOptions(&g); !s.ok()) {
      *exit_code = Fail(s.error());
      return;
    }
    auto start = std::chrono::steady_clock::now();
    Result<OpenReport> r = Vault::Rebuild(g.vault_dir, KeySourceFrom(g), g.vault_options);
    if (!r.ok()) {
      *exit_code = Fail(r.error());
      return;
    }
    for (const std::string& w : r->warnings) Err() << "mailvault: warning: " << w << "\n";
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    Out() << "rebuilt the catalog from " << r->records_replayed << " pack records in " << secs << " s\n";
    *exit_code = r->warnings.empty() ? 0 : 1;
  });
}

}  // namespace mailvault::cli
