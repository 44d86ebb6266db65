// index status|run, reindex, check: keeping the full-text index level with the vault.
#include <chrono>
#include <functional>
#include <memory>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "cli/commands.h"
#include "cli/control_socket.h"
#include "cli/shell_state.h"
#include "control/jobs.h"
#include "indexer/index.h"
#include "indexer/searcher.h"
#include "jobs/indexer.h"
#include "jobs/runner.h"

namespace mailvault::cli {
namespace {

using nlohmann::json;

std::string Dump(const json& j) { return j.dump(2, ' ', false, json::error_handler_t::replace); }

// The "indexing: change N of M" line on a terminal, redrawn at most five times a second.
std::function<void(uint64_t, uint64_t)> IndexingProgress(bool tty) {
  auto last = std::make_shared<std::chrono::steady_clock::time_point>(std::chrono::steady_clock::now());
  return [tty, last](uint64_t done, uint64_t total) {
    auto now = std::chrono::steady_clock::now();
    if (tty && now - *last > std::chrono::milliseconds(200)) {
      *last = now;
      ErrPrintf("\r\033[Kindexing: change %llu of %llu", static_cast<unsigned long long>(done),
                static_cast<unsigned long long>(total));
    }
  };
}

// Applies what the vault holds and the index does not yet, with a progress line on a terminal.
Result<index::CatchUpReport> CatchUpNow(const Vault& vault, index::IndexWriter& writer, bool quiet) {
  const bool tty = StderrIsTerminal() && !quiet;
  auto r = writer.CatchUp(vault, nullptr, IndexingProgress(tty));
  if (tty) Err() << "\r\033[K";
  return r;
}

// A reindex or compaction as a job of the running service (serve's indexer lends it the
// index), followed here with the progress line and the summary a local run prints.
int IndexJobInService(const ServiceResources& svc, bool compact, bool quiet) {
  Result<control::JobRecord> job = svc.runner->SubmitReindex(json{{"compact", compact}}, ShellActor());
  if (!job.ok()) return Fail(job.error());
  const bool tty = StderrIsTerminal() && !quiet;
  auto progress = IndexingProgress(tty);
  Result<control::JobRecord> end = FollowToEnd(svc, job->id, [&](const control::JobRecord& rec) {
    const uint64_t total = rec.progress.value("total", uint64_t{0});
    if (!compact && total) progress(rec.progress.value("indexed", uint64_t{0}), total);
  });
  if (tty && !compact) Err() << "\r\033[K";
  if (!end.ok()) return Fail(end.error());
  if (end->state != control::JobState::kDone) {
    return Fail((compact ? "compaction job " : "reindex job ") + job->id + " " + control::JobStateName(end->state) +
                (end->error.empty() ? "" : ": " + end->error) +
                (end->state == control::JobState::kPaused ? "; `mailvault job resume " + job->id + "` goes on" : ""));
  }
  const json& r = end->report;
  if (compact) {
    Out() << "compacted " << r.value("documents", uint64_t{0}) << " documents in " << r.value("seconds", 0.0) << " s\n";
  } else {
    Out() << "reindexed " << r.value("documents", uint64_t{0}) << " messages in " << r.value("seconds", 0.0) << " s\n";
  }
  return 0;
}

}  // namespace

void AddIndexCommands(CLI::App& app, GlobalOptions& g, int* exit_code) {
  // ---- index status | run ----
  auto* idx = app.add_subcommand("index", "the full-text index: status, run (bring it level with the vault), compact");
  idx->require_subcommand(1);
  auto* status = idx->add_subcommand("status", "how far the index lags behind the vault");
  thread_local bool status_json = false;
  status_json = false;
  status->add_flag("--json", status_json, "print JSON");
  status->callback([&g, exit_code] {
    if (!ResolveOrFail(g, exit_code)) return;
    Result<Handle<Vault>> v = OpenVault(g);
    if (!v.ok()) {
      *exit_code = Fail(v.error());
      return;
    }
    uint64_t last = (*v)->last_change();
    index::IndexInfo info;
    Result<std::unique_ptr<index::Searcher>> s = index::Searcher::Open(g.vault_dir);
    if (s.ok()) info = (*s)->Info();
    uint64_t lag = last > info.applied_change ? last - info.applied_change : 0;
    std::string oldest_id, oldest_time;
    if (lag) {
      Result<std::vector<Change>> next = (*v)->ChangesAfter(info.applied_change, 1);
      if (next.ok() && !next->empty()) {
        oldest_id = next->front().id.Hex();
        Result<std::vector<StoredEnvelope>> envs = (*v)->GetEnvelopes(next->front().id);
        if (envs.ok() && !envs->empty()) oldest_time = FormatDate(envs->back().envelope.capture_time_us / 1000000);
      }
    }
    if (status_json) {
      json j{{"vault_changes", last}, {"indexed_changes", info.applied_change}, {"lag", lag}, {"documents", info.documents}};
      if (lag) j["oldest_unindexed"] = json{{"id", oldest_id}, {"captured", oldest_time}};
      Out() << Dump(j) << "\n";
      return;
    }
    Out() << "documents:       " << info.documents << "\n"
              << "vault changes:   " << last << "\n"
              << "indexed changes: " << info.applied_change << "\n"
              << "lag:             " << lag << (lag ? " changes not yet searchable (run `mailvault index run`)" : "") << "\n";
    if (lag) Out() << "oldest unindexed: " << oldest_id << " captured " << oldest_time << "\n";
  });
  auto* run = idx->add_subcommand("run", "index what the vault holds and the index does not yet");
  thread_local bool run_quiet = false;
  run_quiet = false;
  run->add_flag("--quiet,-q", run_quiet, "no progress line");
  run->callback([&g, exit_code] {
    if (!ResolveOrFail(g, exit_code)) return;
    if (const ServiceResources* svc = Service()) {
      // serve's indexer follows the vault (it holds the index's writer lock): wait for it.
      if (!svc->indexed_change) return void(*exit_code = Fail("this serve runs without its indexer (--no-index); stop it and run `mailvault index run`"));
      const uint64_t want = svc->vault->last_change();
      auto t0 = std::chrono::steady_clock::now();
      while (svc->indexed_change() < want && !ClientGone()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      Out() << "the service's indexer is level with the vault at change " << svc->indexed_change() << " (waited " << secs << " s)\n";
      return;
    }
    // With the records: documents carry their messages' tags, and the tag changes made since
    // the last run are applied (jobs/indexer.h).
    Result<ShellState> s = OpenShellState(g, "while `mailvault serve` runs, its indexer follows the vault");
    if (!s.ok()) {
      *exit_code = Fail(s.error());
      return;
    }
    Result<std::unique_ptr<index::IndexWriter>> w = index::IndexWriter::Open(g.vault_dir, jobs::WithTags({}, s->records.get()));
    if (!w.ok()) {
      *exit_code = Fail(w.error());
      return;
    }
    auto t0 = std::chrono::steady_clock::now();
    Result<index::CatchUpReport> r = CatchUpNow(*s->vault, **w, run_quiet);
    if (r.ok()) {
      if (Status t = jobs::ApplyTagChanges(**w, *s->records); !t.ok()) r = t.error();
    }
    if (r.ok()) {
      if (Status t = (*w)->Flush(); !t.ok()) r = t.error();
    }
    if (!r.ok()) {
      *exit_code = Fail(r.error());
      return;
    }
    if (Status c = (*w)->CompactIfWorthIt(*r); !c.ok()) {
      *exit_code = Fail(c.error());
      return;
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    Out() << "indexed " << r->documents << " messages (" << r->applied << " changes) in " << secs
              << " s; the index is level with the vault at change " << r->last_change << "\n";
    if (r->unreadable) Out() << r->unreadable << " messages could not be read from the vault (is:unindexed; run `mailvault verify`)\n";
  });

  auto* compact = idx->add_subcommand("compact", "rewrite the index compacted (about half the size after many small imports)");
  compact->callback([&g, exit_code] {
    if (!ResolveOrFail(g, exit_code)) return;
    if (const ServiceResources* svc = Service()) return void(*exit_code = IndexJobInService(*svc, /*compact=*/true, true));
    Result<std::unique_ptr<index::IndexWriter>> w = index::IndexWriter::Open(g.vault_dir);
    if (!w.ok()) {
      *exit_code = Fail(w.error());
      return;
    }
    auto t0 = std::chrono::steady_clock::now();
    if (Status c = (*w)->Compact(); !c.ok()) {
      *exit_code = Fail(c.error());
      return;
    }
    Out() << "compacted " << (*w)->documents() << " documents in "
              << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s\n";
  });

  // ---- reindex ----
  auto* reindex = app.add_subcommand("reindex", "rebuild the full-text index from the vault");
  thread_local bool reindex_quiet = false;
  reindex_quiet = false;
  thread_local index::IndexOptions reindex_options;
  reindex_options = {};
  reindex->add_flag("--quiet,-q", reindex_quiet, "no progress line");
  reindex->add_option("--commit-every", reindex_options.commit_every, "documents per index commit (tuning; docs/indexing.md)")
      ->capture_default_str();
  reindex->add_option("--shards", reindex_options.shards, "Xapian shards, written in parallel (0: one per core)")
      ->capture_default_str();
  reindex->callback([&g, exit_code] {
    if (!ResolveOrFail(g, exit_code)) return;
    if (const ServiceResources* svc = Service()) {
      // The service's indexer holds the index: the rebuild is a job of the service (with its
      // own settings; --commit-every and --shards are for a stopped vault).
      return void(*exit_code = IndexJobInService(*svc, /*compact=*/false, reindex_quiet));
    }
    Result<ShellState> s = OpenShellState(g, "reindex needs the vault to itself: stop `mailvault serve` first");
    if (!s.ok()) {
      *exit_code = Fail(s.error());
      return;
    }
    const bool tty = StderrIsTerminal() && !reindex_quiet;
    Result<jobs::RebuildReport> r = jobs::RebuildIndex(*s->vault, g.vault_dir, s->records.get(), reindex_options,
                                                       /*from_scratch=*/true, IndexingProgress(tty));
    if (tty) Err() << "\r\033[K";
    if (!r.ok()) {
      *exit_code = Fail(r.error());
      return;
    }
    Out() << "reindexed " << r->documents << " messages in " << r->seconds << " s\n";
  });

  // ---- check ----
  auto* check = app.add_subcommand("check", "compare the vault with the index and list every difference");
  check->callback([&g, exit_code] {
    if (!ResolveOrFail(g, exit_code)) return;
    Result<Handle<Vault>> v = OpenVault(g);
    if (!v.ok()) {
      *exit_code = Fail(v.error());
      return;
    }
    // No index at all is a difference like any other: every message is missing from it.
    Result<std::unique_ptr<index::Searcher>> s = index::Searcher::Open(g.vault_dir);
    if (!s.ok() && s.error().code() != ErrorCode::kNotFound) {
      *exit_code = Fail(s.error());
      return;
    }
    std::set<std::string> in_index, in_vault;
    if (s.ok()) {
      Result<std::vector<std::string>> indexed = (*s)->AllIds();
      if (!indexed.ok()) {
        *exit_code = Fail(indexed.error());
        return;
      }
      in_index.insert(indexed->begin(), indexed->end());
    } else {
      Out() << "no full-text index yet\n";
    }
    Status st = (*v)->ForEachMessage([&](const ObjectId& id, const MessageMeta&) {
      in_vault.insert(id.Hex());
      return true;
    });
    if (!st.ok()) {
      *exit_code = Fail(st.error());
      return;
    }
    uint64_t problems = 0;
    for (const std::string& id : in_vault) {
      if (!in_index.count(id)) {
        Out() << "not indexed: " << id << "\n";
        ++problems;
      }
    }
    for (const std::string& id : in_index) {
      if (!in_vault.count(id)) {
        Out() << "indexed but not in the vault: " << id << "\n";
        ++problems;
      }
    }
    index::IndexInfo info = s.ok() ? (*s)->Info() : index::IndexInfo{};
    uint64_t last = (*v)->last_change();
    if (info.applied_change < last) {
      Out() << "the index lags the vault by " << last - info.applied_change << " changes (run `mailvault index run`)\n";
    }
    Out() << (problems ? "differences: " + std::to_string(problems) : std::string("ok")) << ": " << in_vault.size()
              << " messages in the vault, " << in_index.size() << " in the index\n";
    if (problems) {
      Out() << "fix: `mailvault index run` indexes what is missing; `mailvault reindex` rebuilds the index\n";
      *exit_code = 1;
    }
  });
}

}  // namespace mailvault::cli
