// The full-text index's writer: Xapian shards under <vault>/index, derived from the vault
// (BLUEPRINT decision 2) and kept level with it by following the vault's change log.
//
// Never invisible: the index records, in the same Xapian commit as the documents, the number
// of the last change it has applied (metadata "mailvault.applied"). Catching up means applying
// every change after it; applying one twice is harmless (documents are replaced by id). A crash
// leaves the last commit, which is consistent, and the next catch-up redoes the rest.
//
// One writer at a time (Xapian's lock); any number of readers (Searcher), also while writing.
#pragma once

#include <xapian.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"
#include "indexer/document.h"
#include "indexer/layout.h"
#include "vault/vault.h"

namespace mailvault::index {


class IndexWriter;

struct IndexOptions {
  DocumentLimits limits;
  // Documents per Xapian commit. Commits are what make documents visible to searchers and
  // durable; each costs a few fsyncs. Chosen by measurement (docs/indexing.md).
  size_t commit_every = 1000;
  // While following a live vault (CatchUp with a stop flag), documents wait at most this long
  // to become searchable; 0 commits only every commit_every documents and at the end (an
  // import, which wants few commits). `serve` sets it.
  std::chrono::milliseconds max_commit_delay{0};
  // Changes taken from the log at once (read, then built and written by every shard).
  size_t chunk = 1024;
  // Xapian databases the index is split into, each written by its own thread (documents go
  // by the first byte of their id). Fixed when the index is created; 0: one per core.
  size_t shards = 0;
  // A message's tags (the control plane's, control/records.h), written into its document as
  // tag terms so that tag: works in every search, the command line's included. Called from the
  // shards' threads; null: documents get no tags.
  std::function<std::vector<std::string>(const std::string& hex_id)> tags;
  // While following a live vault, called on the writer's thread whenever the change log is
  // idle: serve applies the tag changes made since (SetTags) there.
  std::function<Status(IndexWriter&)> when_idle;
  // When it becomes true, CatchUp stops after the chunk it is writing, commits, and returns
  // what it did (the index is consistent and level up to report.last_change): a reindex job
  // that is cancelled or paused, or serve's indexer yielding the index to one. Unlike the stop
  // flag of CatchUp, which drains the log first.
  const std::atomic<bool>* abort = nullptr;
};

struct CatchUpReport {
  uint64_t applied = 0;      // changes applied
  uint64_t documents = 0;    // documents written (a message changed twice in a chunk counts once)
  uint64_t unreadable = 0;   // messages the vault could not read (indexed as is:unindexed)
  uint64_t last_change = 0;  // the index is level with the vault up to this change
};

class IndexWriter {
 public:
  ~IndexWriter();
  // Opens (creating if needed) the index of the vault at vault_dir.
  static Result<std::unique_ptr<IndexWriter>> Open(const std::string& vault_dir, const IndexOptions& options = {});
  // Deletes the index and creates an empty one (reindex).
  static Result<std::unique_ptr<IndexWriter>> Recreate(const std::string& vault_dir, const IndexOptions& options = {});

  // The last change whose documents are committed.
  // Safe to call from any thread while CatchUp runs.
  uint64_t applied_change() const { return committed_.load(); }

  // Applies every change in the vault's log after applied_change(), then commits. With `follow`,
  // keeps waiting for new changes until *stop becomes true and the log is drained (the importer
  // runs it beside the ingest). progress(applied_change, vault_last_change) after each chunk.
  Result<CatchUpReport> CatchUp(const Vault& vault, const std::atomic<bool>* stop = nullptr,
                                const std::function<void(uint64_t, uint64_t)>& progress = {});

  // Rewrites every shard compacted (about half the size after many commits). Worth it after
  // indexing many messages at once: reindex, a large import.
  Status Compact();
  // Compacts when the last catch-up wrote at least half of the index's documents: then the
  // part-full blocks it left are most of the index (docs/indexing.md, "Commit cadence").
  Status CompactIfWorthIt(const CatchUpReport& last);
  uint64_t documents() const;

  // Replaces the tag terms of a message's document (nothing when it is not indexed yet: it
  // gets its tags when it is). Made searchable by the next commit, which CatchUp's idle path
  // and Flush do.
  Status SetTags(const std::string& hex_id, const std::vector<std::string>& tags);
  // The last entry of the control plane's tag change log applied (committed with the index).
  uint64_t tags_applied() const { return tags_applied_; }
  void set_tags_applied(uint64_t seq);
  // Commits what SetTags changed, if anything.
  Status Flush();

 private:
  IndexWriter(std::string dir, IndexOptions options);
  Status OpenShards(size_t n, int flags);
  Status ForEachShard(const std::function<Status(size_t)>& fn);
  Status Commit(uint64_t applied);

  std::string dir_;
  IndexOptions options_;
  std::vector<std::unique_ptr<Xapian::WritableDatabase>> shards_;
  std::atomic<uint64_t> committed_{0};
  uint64_t tags_applied_ = 0;
  bool tags_dirty_ = false;  // SetTags wrote since the last commit
};

}  // namespace mailvault::index
