// init, verify, stats, rebuild: the vault's life cycle.
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/control_socket.h"
#include "cli/shell_state.h"
#include "control/jobs.h"
#include "jobs/runner.h"

namespace mailvault::cli {

void AddInitCommand(CLI::App& app, GlobalOptions& g, int* exit_code) {
  auto* cmd = app.add_subcommand("init", "create a vault (and a key file, mode 0600, if none exists)");
  thread_local bool passphrase = false;
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

namespace {

// The report as `verify` prints it, from the vault's or from a verify job's report.
int PrintVerifyReport(const nlohmann::json& r, double secs, bool as_json) {
  const bool ok = r.value("ok", false);
  if (as_json) {
    nlohmann::json j{{"ok", ok},
                     {"messages_checked", r.value("messages_checked", uint64_t{0})},
                     {"envelopes_checked", r.value("envelopes_checked", uint64_t{0})},
                     {"packs_checked", r.value("packs_checked", uint64_t{0})},
                     {"bytes_checked", r.value("bytes_checked", uint64_t{0})},
                     {"seconds", secs},
                     {"problems", r.value("problems", nlohmann::json::array())}};
    Out() << j.dump(2) << "\n";
  } else {
    const nlohmann::json problems = r.value("problems", nlohmann::json::array());
    for (const auto& p : problems) Out() << "BAD " << p.get<std::string>() << "\n";
    Out() << (ok ? "ok: " : "FAILED: ") << r.value("messages_checked", uint64_t{0}) << " messages, "
          << r.value("envelopes_checked", uint64_t{0}) << " further envelopes, " << r.value("packs_checked", uint64_t{0})
          << " packs (" << FormatBytes(r.value("bytes_checked", uint64_t{0})) << ") checked in " << secs << " s; "
          << problems.size() << " problems\n";
  }
  return ok ? 0 : 1;
}

// serve holds the vault: the verify is one of its jobs (on its workers, below capture's
// priority, in GET /api/v1/jobs), followed here with the same progress and report.
int VerifyInService(const ServiceResources& svc, double sample, bool as_json) {
  Result<control::JobRecord> job = svc.runner->SubmitVerify(nlohmann::json{{"sample", sample}}, ShellActor());
  if (!job.ok()) return Fail(job.error());
  const bool tty = StderrIsTerminal() && !as_json;
  Result<control::JobRecord> end = FollowToEnd(svc, job->id, [&](const control::JobRecord& rec) {
    if (tty && rec.progress.contains("checked")) {
      Err() << "\rverified " << rec.progress["checked"] << " / " << rec.progress.value("total", uint64_t{0}) << std::flush;
    }
  });
  if (!end.ok()) return Fail(end.error());
  const control::JobRecord& rec = *end;
  if (tty) Err() << "\n";
  if (!rec.report.is_object()) return Fail("verify job " + job->id + " " + control::JobStateName(rec.state) + ": " + rec.error);
  return PrintVerifyReport(rec.report, rec.report.value("seconds", 0.0), as_json);
}

}  // namespace

void AddVerifyCommand(CLI::App& app, GlobalOptions& g, int* exit_code) {
  auto* cmd = app.add_subcommand("verify", "recompute every fingerprint and authenticate every ciphertext");
  thread_local double sample = 100.0;
  sample = 100.0;
  thread_local bool json = false;
  json = false;
  cmd->add_option("--sample", sample, "check a random PERCENT of the messages")->check(CLI::Range(0.0, 100.0));
  cmd->add_flag("--json", json, "print the report as JSON");
  thread_local bool repair = false;
  repair = false;
  cmd->add_flag("--repair", repair, "first fetch every missing or damaged pack back from the offsite copy ([offsite NAME])");
  cmd->callback([&g, exit_code] {
    if (Status s = ResolveGlobalOptions(&g); !s.ok()) {
      *exit_code = Fail(s.error());
      return;
    }
    if (repair) {
      if (Service()) return void(*exit_code = Fail(FailedPrecondition("verify --repair replaces pack files: stop `mailvault serve` first")));
      if (int rc = RepairFromOffsite(g); rc != 0) return void(*exit_code = rc);
    }
    if (const ServiceResources* svc = Service(); svc && svc->runner) {
      *exit_code = VerifyInService(*svc, sample, json);
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
    nlohmann::json report{{"ok", r->ok()},
                          {"messages_checked", r->messages_checked},
                          {"envelopes_checked", r->envelopes_checked},
                          {"packs_checked", r->packs_checked},
                          {"bytes_checked", r->bytes_checked},
                          {"problems", r->problems}};
    *exit_code = PrintVerifyReport(report, secs, json);
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
  thread_local bool json = false;
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
