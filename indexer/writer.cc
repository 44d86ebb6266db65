#include "indexer/index.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <future>
#include <thread>
#include <unordered_map>

#include "core/file_util.h"
#include "indexer/layout.h"
#include "indexer/schema.h"

namespace mailvault::index {
namespace {

struct Item {
  ObjectId id;
  uint64_t change = 0;
  std::optional<StoredMessage> message;
  std::optional<Error> error;  // when the vault could not read it
  bool deleted = false;        // purged: its document goes
};

// Which shard holds a message: fixed by its id, so a later change finds the document again.
size_t ShardOf(const ObjectId& id, size_t shards) { return static_cast<unsigned char>(id.bytes()[0]) % shards; }

}  // namespace

IndexWriter::IndexWriter(std::string dir, IndexOptions options) : dir_(std::move(dir)), options_(options) {}
IndexWriter::~IndexWriter() {
  for (auto& db : shards_) {
    try {
      db->close();
    } catch (const Xapian::Error&) {
      // Uncommitted documents are simply redone by the next catch-up.
    }
  }
}

Result<std::unique_ptr<IndexWriter>> IndexWriter::Open(const std::string& vault_dir, const IndexOptions& options) {
  std::unique_ptr<IndexWriter> w(new IndexWriter(IndexDir(vault_dir), options));
  std::error_code ec;
  size_t n;
  if (std::filesystem::exists(w->dir_ + "/shards", ec)) {
    MV_ASSIGN_OR_RETURN(n, ReadShardCount(w->dir_));
  } else {
    return Recreate(vault_dir, options);
  }
  MV_RETURN_IF_ERROR(w->OpenShards(n, Xapian::DB_CREATE_OR_OPEN));
  return w;
}

Result<std::unique_ptr<IndexWriter>> IndexWriter::Recreate(const std::string& vault_dir, const IndexOptions& options) {
  std::unique_ptr<IndexWriter> w(new IndexWriter(IndexDir(vault_dir), options));
  size_t n = options.shards ? options.shards : std::clamp<size_t>(std::thread::hardware_concurrency(), 1, kMaxShards);
  std::error_code ec;
  std::filesystem::create_directories(DirName(w->dir_), ec);
  // Owner-only whatever the umask: the index holds the words of every message in clear.
  if (!ec && ::mkdir(w->dir_.c_str(), 0700) != 0 && errno != EEXIST) ec = std::error_code(errno, std::generic_category());
  if (ec) return IoError("cannot create " + w->dir_ + ": " + ec.message());
  // Open every shard with DB_CREATE_OR_OVERWRITE first: that takes each shard's lock, so a
  // running writer is not pulled from under; then drop shards beyond the new count.
  MV_RETURN_IF_ERROR(w->OpenShards(n, Xapian::DB_CREATE_OR_OVERWRITE));
  for (size_t k = n; k < kMaxShards; ++k) std::filesystem::remove_all(ShardDir(w->dir_, k), ec);
  MV_RETURN_IF_ERROR(ReplaceFileDurably(w->dir_ + "/shards", std::to_string(n) + "\n", 0600));
  return w;
}

Status IndexWriter::OpenShards(size_t n, int flags) {
  uint64_t applied = UINT64_MAX;
  for (size_t k = 0; k < n; ++k) {
    // Finish a compaction a crash interrupted between its two renames (see Compact).
    std::error_code ec;
    const std::string dir = ShardDir(dir_, k);
    if (!std::filesystem::exists(dir, ec) && std::filesystem::exists(dir + ".compact", ec)) {
      std::filesystem::rename(dir + ".compact", dir, ec);
    }
    std::filesystem::remove_all(dir + ".compact", ec);
    std::filesystem::remove_all(dir + ".old", ec);
    try {
      shards_.push_back(std::make_unique<Xapian::WritableDatabase>(ShardDir(dir_, k), flags | Xapian::DB_BACKEND_GLASS));
      // Shards commit separately: after a crash between two commits, the index is level with
      // the vault up to the lowest of their marks, and the catch-up redoes the rest.
      applied = std::min(applied, ParseApplied(shards_.back()->get_metadata(kAppliedKey)));
    } catch (const Xapian::Error& e) {
      return FromXapian(e, "open " + ShardDir(dir_, k));
    }
  }
  committed_ = applied;
  try {
    tags_applied_ = ParseApplied(shards_.front()->get_metadata(kTagsAppliedKey));
  } catch (const Xapian::Error& e) {
    return FromXapian(e, "read " + ShardDir(dir_, 0));
  }
  return Status::Ok();
}

Status IndexWriter::SetTags(const std::string& hex_id, const std::vector<std::string>& tags) {
  std::optional<ObjectId> id = ObjectId::FromHex(hex_id);
  if (!id) return InvalidArgument("not a message id: " + hex_id);
  Xapian::WritableDatabase& db = *shards_[ShardOf(*id, shards_.size())];
  const std::string prefix(FieldOf("tag").prefix);
  try {
    Xapian::PostingIterator p = db.postlist_begin("Q" + hex_id);
    if (p == db.postlist_end("Q" + hex_id)) return Status::Ok();
    const Xapian::docid did = *p;
    Xapian::Document doc = db.get_document(did);
    std::vector<std::string> old;
    for (Xapian::TermIterator t = doc.termlist_begin(); t != doc.termlist_end(); ++t) {
      t.skip_to(prefix);
      if (t == doc.termlist_end() || (*t).compare(0, prefix.size(), prefix) != 0) break;
      old.push_back(*t);
    }
    for (const std::string& t : old) doc.remove_term(t);
    for (const std::string& t : tags) doc.add_boolean_term(prefix + t);
    db.replace_document(did, doc);
  } catch (const Xapian::Error& e) {
    return FromXapian(e, "tag " + hex_id);
  }
  tags_dirty_ = true;
  return Status::Ok();
}

void IndexWriter::set_tags_applied(uint64_t seq) {
  if (seq != tags_applied_) tags_dirty_ = true;
  tags_applied_ = seq;
}

Status IndexWriter::Flush() { return tags_dirty_ ? Commit(committed_) : Status::Ok(); }

Status IndexWriter::ForEachShard(const std::function<Status(size_t)>& fn) {
  std::vector<Status> status(shards_.size());
  std::vector<std::thread> pool;
  for (size_t k = 1; k < shards_.size(); ++k) pool.emplace_back([&, k] { status[k] = fn(k); });
  status[0] = fn(0);
  for (auto& t : pool) t.join();
  for (const Status& s : status) {
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

Status IndexWriter::Commit(uint64_t applied) {
  // Each shard flushes its own postings: in parallel, as they were written.
  MV_RETURN_IF_ERROR(ForEachShard([&](size_t k) -> Status {
    try {
      shards_[k]->set_metadata(kAppliedKey, std::to_string(applied));
      if (k == 0) shards_[k]->set_metadata(kTagsAppliedKey, std::to_string(tags_applied_));
      shards_[k]->commit();
    } catch (const Xapian::Error& e) {
      return FromXapian(e, "commit " + ShardDir(dir_, k));
    }
    return Status::Ok();
  }));
  committed_ = applied;
  tags_dirty_ = false;
  return Status::Ok();
}

Status IndexWriter::Compact() {
  // Frequent commits leave B-tree blocks part-full; a compacted copy is about half the size.
  // Each shard is copied compacted beside itself, then swapped in by two renames; a crash in
  // between leaves either the old shard or the ".compact" copy, which OpenShards completes.
  return ForEachShard([&](size_t k) -> Status {
    const std::string dir = ShardDir(dir_, k), tmp = dir + ".compact", old = dir + ".old";
    std::error_code ec;
    try {
      std::filesystem::remove_all(tmp, ec);
      Xapian::Database(dir, Xapian::DB_BACKEND_GLASS).compact(tmp, Xapian::DBCOMPACT_NO_RENUMBER);
      shards_[k]->close();
      shards_[k].reset();
    } catch (const Xapian::Error& e) {
      return FromXapian(e, "compact " + dir);
    }
    std::filesystem::remove_all(old, ec);
    std::filesystem::rename(dir, old, ec);
    if (!ec) std::filesystem::rename(tmp, dir, ec);
    if (ec) return IoError("cannot swap in the compacted " + dir + ": " + ec.message());
    MV_RETURN_IF_ERROR(FsyncDirectory(dir_));
    std::filesystem::remove_all(old, ec);
    try {
      shards_[k] = std::make_unique<Xapian::WritableDatabase>(dir, Xapian::DB_OPEN | Xapian::DB_BACKEND_GLASS);
    } catch (const Xapian::Error& e) {
      return FromXapian(e, "open " + dir);
    }
    return Status::Ok();
  });
}

uint64_t IndexWriter::documents() const {
  uint64_t n = 0;
  for (const auto& db : shards_) n += db->get_doccount();
  return n;
}

Status IndexWriter::CompactIfWorthIt(const CatchUpReport& last) {
  if (last.documents < 1000 || last.documents * 2 < documents()) return Status::Ok();
  return Compact();
}

Result<CatchUpReport> IndexWriter::CatchUp(const Vault& vault, const std::atomic<bool>* stop,
                                           const std::function<void(uint64_t, uint64_t)>& progress) {
  CatchUpReport report;
  uint64_t applied = committed_;
  size_t since_commit = 0;
  auto last_commit = std::chrono::steady_clock::now();

  // Reads one chunk of changes from the vault (each message once, with its latest change).
  auto read = [&vault](std::vector<Change> changes) -> Result<std::vector<Item>> {
    std::unordered_map<ObjectId, uint64_t, ObjectIdHash> latest;
    std::unordered_map<ObjectId, bool, ObjectIdHash> deleted;  // by its latest change
    std::vector<ObjectId> ids;
    for (const Change& c : changes) {
      auto [it, fresh] = latest.emplace(c.id, c.number);
      if (fresh) ids.push_back(c.id);
      else it->second = c.number;
      deleted[c.id] = c.deleted;
    }
    std::vector<Item> items;
    items.reserve(ids.size());
    std::vector<ObjectId> to_read;
    for (const ObjectId& id : ids) {
      if (deleted[id]) items.push_back(Item{id, latest[id], {}, {}, true});
      else to_read.push_back(id);
    }
    Status s = vault.ReadMany(to_read, [&](const ObjectId& id, Result<StoredMessage> m) {
      Item item{id, latest[id], {}, {}};
      if (m.ok()) item.message = std::move(*m);
      else if (m.error().code() == ErrorCode::kNotFound) item.deleted = true;  // purged since: its delete change follows
      else item.error = m.error();
      items.push_back(std::move(item));
    });
    if (!s.ok()) return s.error();
    return items;
  };

  // One thread per shard builds and writes that shard's documents: Xapian's writer is
  // single-threaded per database, so shards are what lets indexing use every core.
  const std::string tag_prefix(FieldOf("tag").prefix);
  auto write = [&](std::vector<Item>& items) -> Status {
    const size_t n = shards_.size();
    std::vector<Status> status(n);
    std::vector<uint64_t> unreadable(n, 0);
    auto work = [&](size_t k) {
      try {
        for (Item& item : items) {
          if (ShardOf(item.id, n) != k) continue;
          if (item.deleted) {
            shards_[k]->delete_document("Q" + item.id.Hex());
            continue;
          }
          BuiltDocument built = item.message ? BuildDocument(item.id, *item.message, options_.limits)
                                             : BuildUnreadableDocument(item.id, *item.error);
          if (options_.tags) {
            for (const std::string& t : options_.tags(item.id.Hex())) built.doc.add_boolean_term(tag_prefix + t);
          }
          if (!item.message) ++unreadable[k];
          item.message.reset();
          shards_[k]->replace_document(built.id_term, built.doc);
        }
      } catch (const Xapian::Error& e) {
        status[k] = FromXapian(e, "write " + ShardDir(dir_, k));
      } catch (const std::bad_alloc&) {
        status[k] = IoError("out of memory while indexing");
      }
    };
    std::vector<std::thread> pool;
    for (size_t k = 1; k < n; ++k) pool.emplace_back(work, k);
    work(0);
    for (auto& t : pool) t.join();
    for (size_t k = 0; k < n; ++k) {
      if (!status[k].ok()) return status[k];
      report.unreadable += unreadable[k];
    }
    report.documents += items.size();
    return Status::Ok();
  };

  // Pipelined: while the shards write chunk k, chunk k+1 is read from the vault.
  uint64_t fetched_to = applied;
  std::future<Result<std::vector<Item>>> pending;
  auto prefetch = [&]() -> Status {
    MV_ASSIGN_OR_RETURN(std::vector<Change> more, vault.ChangesAfter(fetched_to, options_.chunk));
    if (!more.empty()) {
      fetched_to = more.back().number;
      pending = std::async(std::launch::async, read, std::move(more));
    }
    return Status::Ok();
  };
  while (true) {
    if (!pending.valid()) {
      // Read the stop flag before looking at the log: the caller sets it only after its last
      // change is durable, so a log found empty after seeing it set really is drained.
      const bool stopping = !stop || stop->load();
      MV_RETURN_IF_ERROR(prefetch());
      if (!pending.valid()) {
        if (stopping || (options_.abort && options_.abort->load())) break;
        if (options_.when_idle) MV_RETURN_IF_ERROR(options_.when_idle(*this));
        // Following a live vault: what is written becomes searchable within max_commit_delay,
        // not when the next thousand messages arrive.
        if (options_.max_commit_delay.count() > 0 && (applied != committed_ || tags_dirty_) &&
            std::chrono::steady_clock::now() - last_commit >= options_.max_commit_delay) {
          MV_RETURN_IF_ERROR(Commit(applied));
          since_commit = 0;
          last_commit = std::chrono::steady_clock::now();
        }
        vault.WaitForChange(fetched_to, std::chrono::milliseconds(100));
        continue;
      }
    }
    Result<std::vector<Item>> items = pending.get();
    if (!items.ok()) return items.error();
    MV_RETURN_IF_ERROR(prefetch());
    // Applied in change order, so "applied" always means "everything up to here".
    std::sort(items->begin(), items->end(), [](const Item& a, const Item& b) { return a.change < b.change; });
    MV_RETURN_IF_ERROR(write(*items));
    uint64_t chunk_end = items->empty() ? applied : items->back().change;
    report.applied += chunk_end - applied;
    applied = chunk_end;
    since_commit += items->size();
    if (since_commit >= options_.commit_every ||
        (stop && since_commit && options_.max_commit_delay.count() > 0 &&
         std::chrono::steady_clock::now() - last_commit >= options_.max_commit_delay)) {
      MV_RETURN_IF_ERROR(Commit(applied));
      since_commit = 0;
      last_commit = std::chrono::steady_clock::now();
    }
    if (progress) progress(applied, vault.last_change());
    if (options_.abort && options_.abort->load()) break;
  }
  if (pending.valid()) (void)pending.get();  // the chunk read ahead is dropped, not written
  if (applied != committed_) MV_RETURN_IF_ERROR(Commit(applied));
  report.last_change = applied;
  return report;
}

}  // namespace mailvault::index
