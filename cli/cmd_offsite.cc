// offsite status|verify|sync, dr restore, and the offsite half of `verify --repair`: the vault's
// offsite copy (replication/, docs/replication.md). While serve runs, status and sync ask its
// shippers; verify reads the targets itself.
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/shell_state.h"
#include "control/audit.h"
#include "core/bytes.h"
#include "core/file_util.h"
#include "indexer/searcher.h"
#include "jobs/indexer.h"
#include "replication/config.h"
#include "replication/offsite_check.h"
#include "replication/shipper.h"
#include "vault/purposes.h"

namespace mailvault::cli {
namespace {

using nlohmann::json;

std::string Dump(const json& j) { return j.dump(2, ' ', false, json::error_handler_t::replace); }

Result<std::map<std::string, replication::OffsiteTargetConfig>> Targets(const GlobalOptions& g, const std::string& only) {
  MV_ASSIGN_OR_RETURN(auto all, replication::LoadOffsiteTargets(g.config_file));
  if (all.empty()) {
    return NotFound("no offsite target is configured: add an [offsite NAME] section to the config file (docs/replication.md)");
  }
  if (only.empty()) return all;
  auto it = all.find(only);
  if (it == all.end()) return NotFound("no offsite target \"" + only + "\" in " + g.config_file);
  return std::map<std::string, replication::OffsiteTargetConfig>{{it->first, it->second}};
}

std::function<Result<std::optional<std::string>>(uint64_t)> AuditHashAt(control::AuditLog* audit) {
  return [audit](uint64_t seq) -> Result<std::optional<std::string>> {
    control::AuditLog::Filter f;
    f.after_seq = seq - 1;
    f.limit = 1;
    MV_ASSIGN_OR_RETURN(std::vector<control::AuditEntry> e, audit->Read(f));
    if (e.empty() || e.front().seq != seq) return std::optional<std::string>();
    return std::optional<std::string>(e.front().hash);
  };
}

void PrintStatus(const replication::TargetStatus& s) {
  Out() << s.name << " (" << s.url << "): " << s.state << "\n"
        << "  shipped:  " << FormatBytes(s.shipped_bytes) << " in " << s.shipped_objects << " objects, manifest " << s.manifest_seq << "\n"
        << "  lag:      " << s.lag_objects << " objects, " << FormatBytes(s.lag_bytes) << "\n";
  if (s.oldest_unshipped_us) Out() << "  oldest unshipped: " << FormatDate(s.oldest_unshipped_us / 1000000) << "\n";
  if (!s.last_error.empty()) Out() << "  last error: " << s.last_error << "\n";
}

// What a target holds by this appliance's record, without serve (nothing ships meanwhile).
replication::TargetStatus OfflineStatus(const GlobalOptions& g, Vault& vault, const replication::OffsiteTargetConfig& t) {
  replication::TargetStatus s;
  s.name = t.name;
  s.url = t.url;
  std::map<uint64_t, std::pair<uint32_t, uint64_t>> shipped;
  Result<std::string> bytes = ReadSmallFile(g.vault_dir + "/offsite/" + t.name + "/manifest", replication::kMaxManifestBytes);
  if (bytes.ok()) {
    if (auto m = replication::DecodeManifest(*bytes, vault.DeriveSubkey(purpose::kManifest)); m.ok()) {
      s.manifest_seq = m->seq;
      for (const auto& p : m->packs) {
        shipped[p.number] = {p.generation, p.bytes};
        s.shipped_bytes += p.bytes;
        s.shipped_objects += p.segments.size();
      }
    }
  }
  if (auto extents = vault.PackExtents(); extents.ok()) {
    for (const auto& e : *extents) {
      auto it = shipped.find(e.number);
      uint64_t have = it != shipped.end() && it->second.first == e.generation ? it->second.second : 0;
      if (e.durable_bytes > have) {
        s.lag_bytes += e.durable_bytes - have;
        s.lag_objects++;
      }
    }
  }
  s.state = s.lag_bytes ? "down" : "ok";
  if (s.lag_bytes) s.last_error = "mailvault serve is not running, so nothing ships (`mailvault offsite sync` ships once)";
  return s;
}

int StatusCommand(GlobalOptions& g, const std::string& only, bool as_json) {
  std::vector<replication::TargetStatus> all;
  if (const ServiceResources* svc = Service(); svc && !svc->shippers.empty()) {
    for (replication::Shipper* s : svc->shippers) {
      if (only.empty() || s->config().name == only) all.push_back(s->status());
    }
    if (all.empty()) return Fail(NotFound("no offsite target \"" + only + "\" is running in serve"));
  } else {
    Result<std::map<std::string, replication::OffsiteTargetConfig>> targets = Targets(g, only);
    if (!targets.ok()) return Fail(targets.error());
    Result<Handle<Vault>> v = OpenVault(g);
    if (!v.ok()) return Fail(v.error());
    for (const auto& [name, t] : *targets) all.push_back(OfflineStatus(g, **v, t));
  }
  if (as_json) {
    json j = json::array();
    for (const auto& s : all) j.push_back(s.ToJson());
    Out() << Dump(json{{"targets", j}}) << "\n";
  } else {
    for (const auto& s : all) PrintStatus(s);
  }
  for (const auto& s : all) {
    if (s.state != "ok" && s.state != "paused") return 1;
  }
  return 0;
}

int SyncCommand(GlobalOptions& g, const std::string& only) {
  Result<ShellState> st = OpenShellState(g, "");
  if (!st.ok()) return Fail(st.error());
  std::vector<std::unique_ptr<replication::Shipper>> own;
  std::vector<replication::Shipper*> shippers;
  if (const ServiceResources* svc = Service(); svc && !svc->shippers.empty()) {
    for (replication::Shipper* s : svc->shippers) {
      if (only.empty() || s->config().name == only) shippers.push_back(s);
    }
  } else {
    Result<std::map<std::string, replication::OffsiteTargetConfig>> targets = Targets(g, only);
    if (!targets.ok()) return Fail(targets.error());
    control::AuditLog* audit = st->audit.get();
    for (const auto& [name, t] : *targets) {
      own.push_back(std::make_unique<replication::Shipper>(st->vault.get(), st->store.get(), [audit] { return audit->head(); }, t));
      // This command holds the vault, so nobody writes the index while it is copied.
      const std::string dir = g.vault_dir;
      own.back()->SetIndexCopier([dir](const std::string& dest) { return jobs::CopyIndexFiles(dir, dest); });
      shippers.push_back(own.back().get());
    }
  }
  if (shippers.empty()) return Fail(NotFound("no offsite target \"" + only + "\""));
  int rc = 0;
  for (replication::Shipper* s : shippers) {
    auto t0 = std::chrono::steady_clock::now();
    Status done = s->SyncOnce();
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    (void)AuditShell(*st, "offsite.sync", s->config().name, {{"ok", done.ok()}});
    if (!done.ok()) {
      rc = Fail(done.error().With("offsite " + s->config().name));
      continue;
    }
    replication::TargetStatus status = s->status();
    Out() << s->config().name << ": level at manifest " << status.manifest_seq << " (" << FormatBytes(status.shipped_bytes)
          << " offsite) in " << secs << " s\n";
  }
  return rc;
}

int VerifyCommand(GlobalOptions& g, const std::string& only, bool deep, bool as_json) {
  Result<std::map<std::string, replication::OffsiteTargetConfig>> targets = Targets(g, only);
  if (!targets.ok()) return Fail(targets.error());
  Result<ShellState> st = OpenShellState(g, "");
  if (!st.ok()) return Fail(st.error());
  json out = json::array();
  int rc = 0;
  for (const auto& [name, t] : *targets) {
    Result<std::unique_ptr<replication::ObjectStore>> store = replication::OpenObjectStore(t, "");
    if (!store.ok()) return Fail(store.error().With("offsite " + name));
    replication::VerifyInputs in;
    in.vault = st->vault.get();
    in.record_dir = g.vault_dir + "/offsite/" + name;
    in.manifest_key = st->vault->DeriveSubkey(purpose::kManifest);
    in.state_key = st->vault->DeriveSubkey(purpose::kOffsite);
    in.vault_id_hex = HexEncode(st->vault->vault_id());
    in.audit_hash_at = AuditHashAt(st->audit.get());
    in.deep = deep;
    Result<replication::OffsiteVerifyReport> r = replication::VerifyOffsite(**store, in);
    if (!r.ok()) {
      rc = Fail(r.error().With("offsite verify " + name));
      continue;
    }
    r->target = name;
    (void)AuditShell(*st, "offsite.verify", name, {{"deep", deep}, {"differences", r->differences.size()}});
    if (!r->ok()) rc = 1;
    if (as_json) {
      out.push_back(r->ToJson());
      continue;
    }
    Out() << name << ": manifest " << r->manifest_seq << ", " << r->objects_checked << " objects"
          << (deep ? ", " + FormatBytes(r->bytes_downloaded) + " downloaded and checked" : "") << ": "
          << (r->ok() ? "ok" : std::to_string(r->differences.size()) + " differences") << "\n";
    for (const auto& d : r->differences) Out() << "  " << d.kind << ": " << (d.object.empty() ? "" : d.object + ": ") << d.detail << "\n";
    if (r->lag_bytes) Out() << "  on its way: " << FormatBytes(r->lag_bytes) << " durable here, not yet offsite\n";
  }
  if (as_json) Out() << Dump(json{{"targets", out}}) << "\n";
  return rc;
}

struct DrArgs {
  std::string from, credentials_file, identity_file, known_hosts, region = "us-east-1";
  bool no_tls = false;
  int parallel = 4;
};

int DrRestore(GlobalOptions& g, const DrArgs& a) {
  if (g.vault_dir.empty()) return Fail(InvalidArgument("dr restore needs --vault DIR (an empty directory for the rebuilt vault)"));
  replication::OffsiteTargetConfig t;
  t.name = "dr";
  t.url = a.from;
  t.sftp = a.from.rfind("sftp://", 0) == 0;
  t.credentials_file = a.credentials_file;
  t.identity_file = a.identity_file;
  t.known_hosts = a.known_hosts;
  t.region = a.region;
  t.no_tls = a.no_tls;
  t.parallel = a.parallel;
  auto t0 = std::chrono::steady_clock::now();
  auto secs = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  Result<replication::DrFetchReport> fetched =
      replication::FetchVaultFromOffsite(t, KeySourceFrom(g), g.vault_dir, [](const std::string& s) { Out() << s << "\n" << std::flush; });
  if (!fetched.ok()) return Fail(fetched.error().With("dr restore from " + a.from));
  Out() << "downloaded in " << fetched->seconds_download << " s\n";
  if (fetched->manifests_skipped) {
    Out() << "warning: " << fetched->manifests_skipped << " newer manifest(s) did not authenticate and were passed over\n";
  }
  // The catalog is rebuilt from the packs as the vault opens; then the index; then every
  // fingerprint is checked.
  Result<ShellState> st = OpenShellState(g, "");
  if (!st.ok()) return Fail(st.error().With("opening the rebuilt vault"));
  Result<VaultStats> stats = st->vault->Stats();
  Out() << "catalog rebuilt: " << (stats.ok() ? stats->messages : 0) << " messages (" << secs() << " s)\n" << std::flush;
  // With the offsite index snapshot the index only catches up from the change it holds; without
  // one (or when it cannot be opened) it is rebuilt from the vault.
  Result<jobs::RebuildReport> idx = Error(ErrorCode::kNotFound, "no index snapshot");
  if (fetched->index_change) {
    idx = jobs::LevelIndex(*st->vault, g.vault_dir, st->records.get());
    if (idx.ok()) {
      Out() << "index from the offsite snapshot (change " << *fetched->index_change << "), caught up with "
            << idx->catch_up.applied << " changes: " << idx->documents << " documents in " << idx->seconds << " s\n" << std::flush;
    } else {
      Out() << "the offsite index snapshot could not be used (" << idx.error().message() << "); rebuilding the index\n";
    }
  }
  if (!idx.ok()) {
    idx = jobs::RebuildIndex(*st->vault, g.vault_dir, st->records.get(), index::IndexOptions{}, /*from_scratch=*/true, {});
    if (!idx.ok()) return Fail(idx.error().With("rebuilding the index"));
    Out() << "index rebuilt: " << idx->documents << " documents in " << idx->seconds << " s\n" << std::flush;
  }
  Result<VerifyReport> v = st->vault->Verify(100.0);
  if (!v.ok()) return Fail(v.error());
  Out() << "verified " << v->messages_checked << " fingerprints, " << v->envelopes_checked << " envelopes: "
        << (v->ok() ? "ok" : std::to_string(v->problems.size()) + " problems") << "\n";
  for (const auto& p : v->problems) Out() << "  " << p << "\n";
  Result<control::AuditVerifyReport> audit = control::AuditLog::Verify(*st->store, st->vault->DeriveSubkey(purpose::kAudit));
  if (!audit.ok()) return Fail(audit.error());
  const replication::Manifest& m = fetched->manifest;
  bool anchored = audit->head.seq >= m.audit_seq;
  Out() << "audit trail: " << audit->entries << " entries, " << (audit->ok() ? "chain intact" : "PROBLEMS") << "; offsite anchor "
        << m.audit_seq << (anchored ? " present" : " MISSING") << "\n";
  Result<std::vector<control::User>> users = st->records->Users();
  Out() << "users: " << (users.ok() ? users->size() : 0) << "\n";
  (void)AuditShell(*st, "offsite.dr-restore", a.from,
                   {{"manifest", m.seq}, {"packs", fetched->packs}, {"messages", v->messages_checked}, {"ok", v->ok() && audit->ok()}});
  Out() << "dr restore: " << (v->ok() && audit->ok() && anchored ? "done" : "done with problems") << " in " << secs() << " s\n";
  return v->ok() && audit->ok() && anchored ? 0 : 1;
}

}  // namespace

int RepairFromOffsite(GlobalOptions& g) {
  Result<std::map<std::string, replication::OffsiteTargetConfig>> targets = Targets(g, "");
  if (!targets.ok()) return Fail(targets.error().With("verify --repair fetches packs from the offsite copy"));
  Result<SecretKey> key = Vault::SubkeyFromFiles(g.vault_dir, KeySourceFrom(g), purpose::kManifest);
  if (!key.ok()) return Fail(key.error());
  int rc = 0;
  for (const auto& [name, t] : *targets) {
    Result<std::unique_ptr<replication::ObjectStore>> store = replication::OpenObjectStore(t, "");
    if (!store.ok()) return Fail(store.error());
    Result<replication::RepairReport> r = replication::RepairPacksFromOffsite(**store, g.vault_dir, *key, name);
    if (!r.ok()) {
      rc = Fail(r.error().With("offsite " + name));
      continue;
    }
    for (const auto& s : r->repaired) Out() << "repaired " << s << "\n";
    for (const auto& s : r->problems) Out() << "not repaired: " << s << "\n";
    if (!r->problems.empty()) rc = 1;
    if (r->problems.empty()) return 0;  // one good copy is enough
  }
  return rc;
}

void AddOffsiteCommands(CLI::App& app, GlobalOptions& g, int* exit_code) {
  auto* off = app.add_subcommand("offsite", "the offsite copy: status, verify, sync (docs/replication.md)");
  off->require_subcommand(1);
  thread_local std::string target;
  target.clear();
  thread_local bool as_json = false, deep = false;
  as_json = deep = false;

  auto* status = off->add_subcommand("status", "how each offsite target stands: ok, behind, down or paused, and its lag");
  status->add_flag("--json", as_json, "print JSON");
  status->add_option("--target", target, "only this [offsite NAME]");
  status->callback([&g, exit_code] {
    if (!ResolveOrFail(g, exit_code)) return;
    *exit_code = StatusCommand(g, target, as_json);
  });

  auto* verify = off->add_subcommand("verify", "compare each target with its manifests, the vault and the audit trail");
  verify->add_flag("--deep", deep, "download every object and authenticate it with the key");
  verify->add_flag("--json", as_json, "print JSON");
  verify->add_option("--target", target, "only this [offsite NAME]");
  verify->callback([&g, exit_code] {
    if (!ResolveOrFail(g, exit_code)) return;
    *exit_code = VerifyCommand(g, target, deep, as_json);
  });

  auto* sync = off->add_subcommand("sync", "ship everything durable now and wait until each target is level");
  sync->add_option("--target", target, "only this [offsite NAME]");
  sync->callback([&g, exit_code] {
    if (!ResolveOrFail(g, exit_code)) return;
    *exit_code = SyncCommand(g, target);
  });

  auto* dr = app.add_subcommand("dr", "disaster recovery from the offsite copy");
  dr->require_subcommand(1);
  auto* restore = dr->add_subcommand("restore", "rebuild the vault, its control plane and index from an offsite copy");
  thread_local DrArgs args;
  args = {};
  restore->add_option("--from", args.from, "the target: s3://HOST:PORT/BUCKET or sftp://USER@HOST:PORT/PATH")->required();
  restore->add_option("--credentials-file", args.credentials_file, "S3: the file with \"ACCESS_KEY_ID SECRET\" (mode 0600)");
  restore->add_option("--identity-file", args.identity_file, "SFTP: the private key");
  restore->add_option("--known-hosts", args.known_hosts, "SFTP: the pinned host key");
  restore->add_option("--region", args.region, "S3 region")->capture_default_str();
  restore->add_flag("--no-tls", args.no_tls, "S3 over plain http (a loopback address only)");
  restore->add_option("--parallel", args.parallel, "downloads at once")->capture_default_str();
  restore->add_option("--key-file", g.key_file, "the vault's master key file");
  restore->add_option("--vault", g.vault_dir, "an empty directory for the rebuilt vault");
  restore->callback([&g, exit_code] {
    // The vault does not exist yet: only the environment fills what flags left empty.
    if (g.key_file.empty()) {
      if (const char* k = std::getenv("MAILVAULT_KEY_FILE")) g.key_file = k;
    }
    if (g.vault_dir.empty()) {
      if (const char* v = std::getenv("MAILVAULT_VAULT")) g.vault_dir = v;
    }
    if (args.from.rfind("sftp://", 0) != 0 && args.credentials_file.empty()) {
      *exit_code = Fail(InvalidArgument("dr restore from S3 needs --credentials-file"));
      return;
    }
    *exit_code = DrRestore(g, args);
  });
}

}  // namespace mailvault::cli
