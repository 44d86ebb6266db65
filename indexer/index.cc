#include "indexer/index.h"

#include <algorithm>
#include <filesystem>
#include <future>
#include <thread>
#include <unordered_map>

#include "core/file_util.h"
#include "indexer/query.h"
#include "indexer/schema.h"

namespace mailvault::index {
namespace {

const std::string kAppliedKey = "mailvault.applied";

Error FromXapian(const Xapian::Error& e, const std::string& what) {
  std::string m = "index " + what + ": " + e.get_type() + ": " + e.get_msg();
  // Xapian's exceptions are not polymorphic: tell them apart by their type name.
  const std::string type = e.get_type();
  if (type == "DatabaseLockError") {
    return Error(ErrorCode::kBusy, m + " (another mailvault process is writing the index)");
  }
  if (type == "DatabaseCorruptError") {
    return Corruption(m + " (run `mailvault reindex` to rebuild the index from the vault)");
  }
  if (type == "DatabaseOpeningError" || type == "DatabaseNotFoundError") {
    return NotFound(m + " (no index yet: `mailvault reindex` builds it from the vault)");
  }
  return IoError(m);
}

uint64_t ParseApplied(const std::string& s) {
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return 0;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

struct Item {
  ObjectId id;
  uint64_t change = 0;
  std::optional<StoredMessage> message;
  std::optional<Error> error;  // when the vault could not read it
};

// Which shard holds a message: fixed by its id, so a later change finds the document again.
size_t ShardOf(const ObjectId& id, size_t shards) { return static_cast<unsigned char>(id.bytes()[0]) % shards; }

std::string ShardDir(const std::string& dir, size_t k) { return dir + "/shard" + std::to_string(k); }

// The number of shards, written once when the index is created (index/shards).
Result<size_t> ReadShardCount(const std::string& dir) {
  MV_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(dir + "/shards", 64));
  size_t n = 0;
  for (char c : text) {
    if (c >= '0' && c <= '9') n = n * 10 + static_cast<size_t>(c - '0');
  }
  if (n < 1 || n > kMaxShards) return Corruption(dir + "/shards does not hold a shard count (run `mailvault reindex`)");
  return n;
}

}  // namespace

std::string IndexDir(const std::string& vault_dir) { return vault_dir + "/index"; }

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
  std::filesystem::create_directories(w->dir_, ec);
  if (ec) return IoError("cannot create " + w->dir_ + ": " + ec.message());
  // Open every shard with DB_CREATE_OR_OVERWRITE first: that takes each shard's lock, so a
  // running writer is not pulled from under; then drop shards beyond the new count.
  MV_RETURN_IF_ERROR(w->OpenShards(n, Xapian::DB_CREATE_OR_OVERWRITE));
  for (size_t k = n; k < kMaxShards; ++k) std::filesystem::remove_all(ShardDir(w->dir_, k), ec);
  MV_RETURN_IF_ERROR(ReplaceFileDurably(w->dir_ + "/shards", std::to_string(n) + "\n", 0644));
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
      // Shards commit one after another: after a crash between two, the index is level with
      // the vault up to the lowest of their marks, and the catch-up redoes the rest.
      applied = std::min(applied, ParseApplied(shards_.back()->get_metadata(kAppliedKey)));
    } catch (const Xapian::Error& e) {
      return FromXapian(e, "open " + ShardDir(dir_, k));
    }
  }
  committed_ = applied;
  return Status::Ok();
}

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
      shards_[k]->commit();
    } catch (const Xapian::Error& e) {
      return FromXapian(e, "commit " + ShardDir(dir_, k));
    }
    return Status::Ok();
  }));
  committed_ = applied;
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

  // Reads one chunk of changes from the vault (each message once, with its latest change).
  auto read = [&vault](std::vector<Change> changes) -> Result<std::vector<Item>> {
    std::unordered_map<ObjectId, uint64_t, ObjectIdHash> latest;
    std::vector<ObjectId> ids;
    for (const Change& c : changes) {
      auto [it, fresh] = latest.emplace(c.id, c.number);
      if (fresh) ids.push_back(c.id);
      else it->second = c.number;
    }
    std::vector<Item> items;
    items.reserve(ids.size());
    Status s = vault.ReadMany(ids, [&](const ObjectId& id, Result<StoredMessage> m) {
      Item item{id, latest[id], {}, {}};
      if (m.ok()) item.message = std::move(*m);
      else item.error = m.error();
      items.push_back(std::move(item));
    });
    if (!s.ok()) return s.error();
    return items;
  };

  // One thread per shard builds and writes that shard's documents: Xapian's writer is
  // single-threaded per database, so shards are what lets indexing use every core.
  auto write = [&](std::vector<Item>& items) -> Status {
    const size_t n = shards_.size();
    std::vector<Status> status(n);
    std::vector<uint64_t> unreadable(n, 0);
    auto work = [&](size_t k) {
      try {
        for (Item& item : items) {
          if (ShardOf(item.id, n) != k) continue;
          BuiltDocument built = item.message ? BuildDocument(item.id, *item.message, options_.limits)
                                             : BuildUnreadableDocument(item.id, *item.error);
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
      MV_RETURN_IF_ERROR(prefetch());
      if (!pending.valid()) {
        if (!stop || stop->load()) break;
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
    if (since_commit >= options_.commit_every) {
      MV_RETURN_IF_ERROR(Commit(applied));
      since_commit = 0;
    }
    if (progress) progress(applied, vault.last_change());
  }
  if (applied != committed_) MV_RETURN_IF_ERROR(Commit(applied));
  report.last_change = applied;
  return report;
}

// ---- search ----

Result<std::unique_ptr<Searcher>> Searcher::Open(const std::string& vault_dir) {
  const std::string dir = IndexDir(vault_dir);
  std::error_code ec;
  if (!std::filesystem::exists(dir + "/shards", ec)) {
    return NotFound("no full-text index in " + dir + " (`mailvault index run` builds it from the vault)");
  }
  MV_ASSIGN_OR_RETURN(size_t n, ReadShardCount(dir));
  std::unique_ptr<Searcher> s(new Searcher());
  try {
    for (size_t k = 0; k < n; ++k) {
      s->shards_.emplace_back(ShardDir(dir, k), Xapian::DB_BACKEND_GLASS);
      s->db_.add_database(s->shards_.back());
    }
  } catch (const Xapian::Error& e) {
    return FromXapian(e, "open " + dir);
  }
  return s;
}

IndexInfo Searcher::Info() {
  IndexInfo i;
  i.applied_change = UINT64_MAX;
  try {
    for (Xapian::Database& shard : shards_) {
      shard.reopen();
      i.documents += shard.get_doccount();
      i.applied_change = std::min(i.applied_change, ParseApplied(shard.get_metadata(kAppliedKey)));
    }
  } catch (const Xapian::Error&) {
  }
  if (i.applied_change == UINT64_MAX) i.applied_change = 0;
  return i;
}

Result<Xapian::Query> Searcher::Parse(const std::string& query, int64_t now) {
  return ParseQuery(query, now, [this](const Phrase& p) { return ResolvePhrase(p); });
}

Result<Xapian::Query> Searcher::ResolvePhrase(const Phrase& phrase) {
  std::vector<Xapian::Query> per_field;
  std::vector<size_t> fields;
  for (std::string_view name : phrase.fields) {
    std::vector<Xapian::Query> terms;
    for (const std::string& w : phrase.words) terms.emplace_back(std::string(FieldOf(name).prefix) + w);
    per_field.emplace_back(Xapian::Query::OP_AND, terms.begin(), terms.end());
    fields.push_back(static_cast<size_t>(PhraseFieldIndex(name)));
  }
  try {
    Xapian::Enquire enquire(db_);
    enquire.set_query(Xapian::Query(Xapian::Query::OP_OR, per_field.begin(), per_field.end()));
    enquire.set_weighting_scheme(Xapian::BoolWeight());
    enquire.set_docid_order(Xapian::Enquire::ASCENDING);
    Xapian::MSet candidates = enquire.get_mset(0, db_.get_doccount());
    if (candidates.size() > kMaxPhraseCandidates) {
      std::string words;
      for (const std::string& w : phrase.words) words += (words.empty() ? "" : " ") + w;
      return InvalidArgument("the phrase \"" + words + "\" is made of words that " + std::to_string(candidates.size()) +
                             " messages all contain (over kMaxPhraseCandidates): add a rarer word or another condition");
    }
    std::vector<Xapian::Query> hits;
    for (auto it = candidates.begin(); it != candidates.end(); ++it) {
      const std::string data = it.get_document().get_data();
      MV_ASSIGN_OR_RETURN(WordStreams streams, DecodeWordStreams(data));
      bool found = false;
      for (size_t f : fields) found = found || streams.HasPhrase(f, phrase.words);
      if (!found) continue;
      MV_ASSIGN_OR_RETURN(Summary s, DecodeSummary(data));
      hits.emplace_back("Q" + s.id);
    }
    if (hits.empty()) return Xapian::Query(Xapian::Query::MatchNothing);
    return Xapian::Query(Xapian::Query::OP_OR, hits.begin(), hits.end());
  } catch (const Xapian::Error& e) {
    return FromXapian(e, "phrase search");
  }
}

Result<SearchResult> Searcher::Search(const SearchRequest& req) {
  MV_ASSIGN_OR_RETURN(Xapian::Query q, Parse(req.query, req.now));
  try {
    Xapian::Enquire enquire(db_);
    enquire.set_query(q);
    switch (req.sort) {
      case SortOrder::kDateNewestFirst:
        enquire.set_sort_by_value_then_relevance(kSlotDate, true);
        break;
      case SortOrder::kDateOldestFirst:
        enquire.set_sort_by_value_then_relevance(kSlotDate, false);
        break;
      case SortOrder::kRelevance:
        enquire.set_sort_by_relevance_then_value(kSlotDate, true);
        break;
    }
    if (req.sort != SortOrder::kRelevance) enquire.set_weighting_scheme(Xapian::BoolWeight());
    const Xapian::doccount all = db_.get_doccount();
    const Xapian::doccount limit = req.limit ? static_cast<Xapian::doccount>(req.limit) : all;
    // check_at_least = every document: the match counts are exact, not Xapian's estimate.
    Xapian::MSet mset = enquire.get_mset(static_cast<Xapian::doccount>(req.offset), limit, all);
    SearchResult out;
    out.total = mset.get_matches_estimated();
    for (auto it = mset.begin(); it != mset.end(); ++it) {
      MV_ASSIGN_OR_RETURN(Summary s, DecodeSummary(it.get_document().get_data()));
      out.hits.push_back(SearchHit{std::move(s), req.sort == SortOrder::kRelevance ? it.get_weight() : 0.0});
    }
    return out;
  } catch (const Xapian::WildcardError& e) {
    return InvalidArgument("query error: a word* matches more than " + std::to_string(kMaxWildcardExpansion) +
                           " different words; make the prefix longer");
  } catch (const Xapian::Error& e) {
    return FromXapian(e, "search");
  }
}

Result<uint64_t> Searcher::Count(const std::string& query, int64_t now) {
  MV_ASSIGN_OR_RETURN(Xapian::Query q, Parse(query, now));
  try {
    Xapian::Enquire enquire(db_);
    enquire.set_query(q);
    enquire.set_weighting_scheme(Xapian::BoolWeight());
    enquire.set_docid_order(Xapian::Enquire::DONT_CARE);
    Xapian::MSet mset = enquire.get_mset(0, 0, db_.get_doccount());
    return static_cast<uint64_t>(mset.get_matches_estimated());
  } catch (const Xapian::WildcardError& e) {
    return InvalidArgument("query error: a word* matches more than " + std::to_string(kMaxWildcardExpansion) +
                           " different words; make the prefix longer");
  } catch (const Xapian::Error& e) {
    return FromXapian(e, "count");
  }
}

Result<std::vector<std::string>> Searcher::AllIds() {
  std::vector<std::string> out;
  try {
    for (auto it = db_.allterms_begin("Q"); it != db_.allterms_end("Q"); ++it) out.push_back((*it).substr(1));
  } catch (const Xapian::Error& e) {
    return FromXapian(e, "scan");
  }
  return out;
}

Result<std::optional<Summary>> Searcher::Get(const ObjectId& id) {
  try {
    std::string term = "Q" + id.Hex();
    Xapian::PostingIterator p = db_.postlist_begin(term);
    if (p == db_.postlist_end(term)) return std::optional<Summary>();
    MV_ASSIGN_OR_RETURN(Summary s, DecodeSummary(db_.get_document(*p).get_data()));
    return std::optional<Summary>(std::move(s));
  } catch (const Xapian::Error& e) {
    return FromXapian(e, "read");
  }
}

}  // namespace mailvault::index
