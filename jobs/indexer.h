// The full-text index as a running service keeps it: serve's indexer follows the vault's
// change log (and the control plane's tag log) on its own thread, and lends the index's writer
// to a reindex or compaction job when one runs. Xapian allows one writer; this class is where
// the service decides who holds it.
//
// The index follows the control plane's tags: each document carries its message's tags as
// terms (the tag field's prefix), so `tag:` works in every search, the command line's (which
// reads the index alone) included. The records are the truth (control/records.h); the index
// catches up from their change log, as it does from the vault's.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "control/records.h"
#include "core/result.h"
#include "indexer/index.h"
#include "vault/vault.h"

namespace mailvault::jobs {

// options with its tag source set to the records (a message's tags when its document is built).
index::IndexOptions WithTags(index::IndexOptions options, const control::Records* records);

// Applies every tag change logged after the index's mark and moves the mark (committed by the
// writer's next commit, or Flush).
Status ApplyTagChanges(index::IndexWriter& writer, const control::Records& records);

using IndexProgress = std::function<void(uint64_t indexed_change, uint64_t vault_change)>;

struct RebuildReport {
  index::CatchUpReport catch_up;
  bool finished = false;  // false: stopped by the abort flag part-way (the index is consistent, and behind)
  uint64_t documents = 0; // in the index at the end (catch_up.documents counts this run's only)
  double seconds = 0;
};

// Builds the index from the vault: from scratch (the index is emptied first), or on from a
// rebuild that stopped part-way (its documents are kept). Documents get their tags as they are
// built; the tag log is applied to its end; the result is compacted. options.abort stops it
// after the current chunk, consistent.
Result<RebuildReport> RebuildIndex(const Vault& vault, const std::string& vault_dir, const control::Records* records,
                                   index::IndexOptions options, bool from_scratch, const IndexProgress& progress = {});

// Copies the index's files (<vault>/index) into dest, an empty directory, and returns the vault
// change the index holds everything up to. The caller makes sure nobody writes the index
// meanwhile (IndexFollower::CopyTo, or a command that holds the vault). kNotFound: no index.
Result<uint64_t> CopyIndexFiles(const std::string& vault_dir, const std::string& dest);

// Brings an existing index level with the vault (what `mailvault index run` does): catches up
// from the index's own mark, applies the tag log, compacts when worth it. Disaster recovery
// uses it on the offsite index snapshot.
Result<RebuildReport> LevelIndex(const Vault& vault, const std::string& vault_dir, const control::Records* records);

// What a job asks of the index.
enum class IndexTask {
  kRebuild,        // from scratch
  kResumeRebuild,  // a rebuild that a stop, pause or crash interrupted: on from where it was
  kCompact,        // rewrite the shards compacted
  kLevelCompact,   // catch up with the vault (a purge's deletes), then compact: no freed page keeps a word
};

// serve's indexer. Follows the vault once started; lends the writer to Maintain.
class IndexFollower {
 public:
  IndexFollower(const Vault* vault, std::string vault_dir) : vault_(vault), dir_(std::move(vault_dir)) {}
  ~IndexFollower() { Stop(); }
  IndexFollower(const IndexFollower&) = delete;
  IndexFollower& operator=(const IndexFollower&) = delete;
  // The records whose tags the index follows (set before Start and before any Maintain).
  void SetRecords(const control::Records* records) { records_ = records; }
  // Starts following on a thread of its own, at a lower CPU priority than capture. Without it
  // (serve --no-index) the index is touched only by Maintain. Call before any Maintain.
  void Start();
  // Stops once everything stored so far is indexed (the vault must take no more messages).
  void Stop();
  bool following() const { return follow_; }
  // The last change the index has committed (searchable), a rebuild's included.
  uint64_t applied() const;
  std::string last_error() const;

  // Runs task with the index's writer to itself, on the calling thread: the follower stops
  // after the chunk it is writing, waits, and follows again afterwards (so a rebuild that was
  // cancelled part-way is finished by the follower itself). *abort stops a rebuild part-way.
  // One task at a time; a second waits. The report: {"documents", "changes", "unreadable",
  // "finished", "seconds"} for a rebuild; {"documents", "seconds"} for a compaction.
  Result<nlohmann::json> Maintain(IndexTask task, const std::atomic<bool>* abort, const IndexProgress& progress);
  // CopyIndexFiles with the writer parked (replication's index snapshot): a consistent copy,
  // of committed files only; the follower goes on afterwards.
  Result<uint64_t> CopyTo(const std::string& dest);

 private:
  void Run();
  void SetError(std::string e);
  // Runs fn with the writer to itself: parks the follower (it stops after the chunk it is
  // writing and lets the writer go), runs fn, and lets it follow again. One at a time.
  template <typename T, typename Fn>
  Result<T> WithWriter(const char* stopping, Fn&& fn) {
    std::lock_guard<std::mutex> one_task(task_mu_);
    if (follow_) {
      std::unique_lock<std::mutex> l(mu_);
      yield_ = true;
      cv_.notify_all();
      cv_.wait(l, [&] { return parked_ || stop_; });
      if (!parked_) {
        yield_ = false;
        return FailedPrecondition(stopping);
      }
    }
    Result<T> r = fn();
    if (follow_) {
      std::lock_guard<std::mutex> l(mu_);
      yield_ = false;
    }
    cv_.notify_all();
    return r;
  }
  Result<nlohmann::json> RunTask(IndexTask task, const std::atomic<bool>* abort, const IndexProgress& progress);

  const Vault* vault_;
  const control::Records* records_ = nullptr;
  std::string dir_;
  bool follow_ = false;             // set by Start, before any Maintain
  std::atomic<bool> stop_{false};   // drain, then end (serve stopping)
  std::atomic<bool> yield_{false};  // stop after the current chunk: a task wants the writer
  std::atomic<uint64_t> applied_{0};
  std::mutex task_mu_;  // one Maintain at a time

  mutable std::mutex mu_;
  std::condition_variable cv_;
  const index::IndexWriter* writer_ = nullptr;  // REQUIRES: mu_; the open writer, whoever holds it
  bool parked_ = false;                         // REQUIRES: mu_; the follower has let the writer go
  std::string error_;                           // REQUIRES: mu_
  std::thread thread_;
};

}  // namespace mailvault::jobs
