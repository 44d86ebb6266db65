#include "indexer/searcher.h"

#include <algorithm>
#include <filesystem>
#include <map>

#include "indexer/layout.h"
#include "indexer/schema.h"

namespace mailvault::index {


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

Result<Xapian::Query> Searcher::Parse(const std::string& query, int64_t now, const TagResolver& tags) {
  return ParseQuery(query, now, [this](const Phrase& p) { return ResolvePhrase(p); }, tags);
}

Result<Xapian::Query> Searcher::ParseRequest(const SearchRequest& req) {
  MV_ASSIGN_OR_RETURN(Xapian::Query q, Parse(req.query, req.now, req.tags));
  if (req.filter.empty()) return q;
  Result<Xapian::Query> f = Parse(req.filter, req.now, req.tags);
  if (!f.ok()) return f.error().With("the scope's query");
  return Xapian::Query(Xapian::Query::OP_FILTER, q, *f);
}

void Searcher::Reopen() {
  try {
    db_.reopen();
    for (Xapian::Database& shard : shards_) shard.reopen();
  } catch (const Xapian::Error&) {
    // A reopen that fails leaves the old view, which stays consistent; the next call retries.
  }
}

Result<std::vector<std::string>> Searcher::MatchingIds(const SearchRequest& req) {
  MV_ASSIGN_OR_RETURN(Xapian::Query q, ParseRequest(req));
  std::vector<std::string> out;
  try {
    Xapian::Enquire enquire(db_);
    enquire.set_query(q);
    enquire.set_weighting_scheme(Xapian::BoolWeight());
    enquire.set_sort_by_value(kSlotDate, false);
    const Xapian::doccount limit = req.limit ? static_cast<Xapian::doccount>(req.limit) : db_.get_doccount();
    Xapian::MSet mset = enquire.get_mset(0, limit);
    for (auto it = mset.begin(); it != mset.end(); ++it) {
      MV_ASSIGN_OR_RETURN(Summary s, DecodeSummary(it.get_document().get_data()));
      out.push_back(std::move(s.id));
    }
  } catch (const Xapian::WildcardError&) {
    return InvalidArgument("query error: a word* matches more than " + std::to_string(kMaxWildcardExpansion) +
                           " different words; make the prefix longer");
  } catch (const Xapian::Error& e) {
    return FromXapian(e, "search");
  }
  return out;
}

Result<bool> Searcher::Matches(const std::string& hex_id, const SearchRequest& req) {
  MV_ASSIGN_OR_RETURN(Xapian::Query q, ParseRequest(req));
  try {
    Xapian::Enquire enquire(db_);
    enquire.set_query(Xapian::Query(Xapian::Query::OP_FILTER, Xapian::Query("Q" + hex_id), q));
    enquire.set_weighting_scheme(Xapian::BoolWeight());
    return enquire.get_mset(0, 1).size() == 1;
  } catch (const Xapian::Error& e) {
    return FromXapian(e, "search");
  }
}

namespace {

// The documents a phrase was confirmed in, as a posting source: per shard (told apart by the
// shard database's UUID, since Xapian hands a source each sub-database of a multi-database
// search in turn), the shard's own docids in ascending order. An OR of one id term per
// confirmed message would have done the same, but opens a B-tree cursor per message: at
// 200,000 messages a common phrase took over a minute and a gigabyte.
class DocidSetSource : public Xapian::PostingSource {
 public:
  using Sets = std::map<std::string, std::vector<Xapian::docid>>;  // shard UUID -> docids
  explicit DocidSetSource(std::shared_ptr<const Sets> sets) : sets_(std::move(sets)) {}

  DocidSetSource* clone() const override { return new DocidSetSource(sets_); }
  void init(const Xapian::Database& db) override {
    auto it = sets_->find(db.get_uuid());
    docids_ = it == sets_->end() ? nullptr : &it->second;
    pos_ = 0;
    started_ = false;
  }
  Xapian::doccount get_termfreq_min() const override { return Count(); }
  Xapian::doccount get_termfreq_est() const override { return Count(); }
  Xapian::doccount get_termfreq_max() const override { return Count(); }
  void next(double) override {
    if (started_) ++pos_;
    started_ = true;
  }
  void skip_to(Xapian::docid did, double) override {
    started_ = true;
    if (!docids_) return;
    pos_ = static_cast<size_t>(std::lower_bound(docids_->begin() + static_cast<std::ptrdiff_t>(pos_), docids_->end(), did) -
                               docids_->begin());
  }
  bool at_end() const override { return !docids_ || pos_ >= docids_->size(); }
  Xapian::docid get_docid() const override { return (*docids_)[pos_]; }
  std::string get_description() const override { return "DocidSetSource"; }

 private:
  Xapian::doccount Count() const { return docids_ ? static_cast<Xapian::doccount>(docids_->size()) : 0; }
  std::shared_ptr<const Sets> sets_;
  const std::vector<Xapian::docid>* docids_ = nullptr;
  size_t pos_ = 0;
  bool started_ = false;
};

}  // namespace

Result<Xapian::Query> Searcher::ResolvePhrase(const Phrase& phrase) {
  std::vector<Xapian::Query> per_field;
  std::vector<size_t> fields;
  for (std::string_view name : phrase.fields) {
    std::vector<Xapian::Query> terms;
    for (const std::string& w : phrase.words) terms.emplace_back(std::string(FieldOf(name).prefix) + w);
    per_field.emplace_back(Xapian::Query::OP_AND, terms.begin(), terms.end());
    fields.push_back(static_cast<size_t>(PhraseFieldIndex(name)));
  }
  const Xapian::Query candidates_query(Xapian::Query::OP_OR, per_field.begin(), per_field.end());
  auto sets = std::make_shared<DocidSetSource::Sets>();
  size_t candidates = 0;
  try {
    // Shard by shard: the candidates in docid order, and the word streams read alongside them
    // from the value slot's stream (skip_to moves forward through its chunks; no per-document
    // lookups).
    for (Xapian::Database& shard : shards_) {
      std::vector<Xapian::docid>& confirmed = (*sets)[shard.get_uuid()];
      Xapian::ValueIterator streams_it = shard.valuestream_begin(kSlotWords);
      const Xapian::ValueIterator streams_end = shard.valuestream_end(kSlotWords);
      Xapian::Enquire enquire(shard);
      enquire.set_query(candidates_query);
      enquire.set_weighting_scheme(Xapian::BoolWeight());
      enquire.set_docid_order(Xapian::Enquire::ASCENDING);
      Xapian::MSet mset = enquire.get_mset(0, shard.get_doccount());
      candidates += mset.size();
      if (candidates > kMaxPhraseCandidates) {
        std::string words;
        for (const std::string& w : phrase.words) words += (words.empty() ? "" : " ") + w;
        return InvalidArgument("the phrase \"" + words + "\" is made of words that more than " +
                               std::to_string(kMaxPhraseCandidates) +
                               " messages all contain (kMaxPhraseCandidates): add a rarer word or another condition");
      }
      for (auto it = mset.begin(); it != mset.end(); ++it) {
        const Xapian::docid did = *it;
        if (streams_it == streams_end) break;
        streams_it.skip_to(did);
        if (streams_it == streams_end || streams_it.get_docid() != did) continue;
        MV_ASSIGN_OR_RETURN(WordStreams streams, DecodeWordStreams(*streams_it));
        bool found = false;
        for (size_t f : fields) found = found || streams.HasPhrase(f, phrase.words);
        if (found) confirmed.push_back(did);
      }
    }
  } catch (const Xapian::Error& e) {
    return FromXapian(e, "phrase search");
  }
  auto source = std::make_unique<DocidSetSource>(sets);
  return Xapian::Query(source.release()->release());
}

Result<SearchResult> Searcher::Search(const SearchRequest& req) {
  MV_ASSIGN_OR_RETURN(Xapian::Query q, ParseRequest(req));
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

namespace {

Result<Searcher::Facts> FactsOf(const Xapian::Document& doc, const std::string& custodian_prefix) {
  Searcher::Facts f;
  MV_ASSIGN_OR_RETURN(f.summary, DecodeSummary(doc.get_data()));
  if (std::string v = doc.get_value(kSlotCaptured); !v.empty()) f.first_capture = static_cast<int64_t>(Xapian::sortable_unserialise(v));
  Xapian::TermIterator t = doc.termlist_begin();
  for (t.skip_to(custodian_prefix); t != doc.termlist_end(); ++t) {
    const std::string term = *t;
    if (term.compare(0, custodian_prefix.size(), custodian_prefix) != 0) break;
    f.custodians.push_back(term.substr(custodian_prefix.size()));
  }
  return f;
}

}  // namespace

Status Searcher::ForEachFacts(const std::function<bool(const Facts&)>& fn) {
  const std::string prefix(FieldOf("custodian").exact_prefix);
  try {
    for (auto it = db_.postlist_begin(""); it != db_.postlist_end(""); ++it) {
      MV_ASSIGN_OR_RETURN(Facts f, FactsOf(db_.get_document(*it), prefix));
      if (!fn(f)) break;
    }
  } catch (const Xapian::Error& e) {
    return FromXapian(e, "scan");
  }
  return Status::Ok();
}

Result<std::optional<Searcher::Facts>> Searcher::GetFacts(const std::string& hex_id) {
  try {
    std::string term = "Q" + hex_id;
    Xapian::PostingIterator p = db_.postlist_begin(term);
    if (p == db_.postlist_end(term)) return std::optional<Facts>();
    MV_ASSIGN_OR_RETURN(Facts f, FactsOf(db_.get_document(*p), std::string(FieldOf("custodian").exact_prefix)));
    return std::optional<Facts>(std::move(f));
  } catch (const Xapian::Error& e) {
    return FromXapian(e, "read");
  }
}

Result<std::optional<Summary>> Searcher::Get(const std::string& hex_id) {
  try {
    std::string term = "Q" + hex_id;
    Xapian::PostingIterator p = db_.postlist_begin(term);
    if (p == db_.postlist_end(term)) return std::optional<Summary>();
    MV_ASSIGN_OR_RETURN(Summary s, DecodeSummary(db_.get_document(*p).get_data()));
    return std::optional<Summary>(std::move(s));
  } catch (const Xapian::Error& e) {
    return FromXapian(e, "read");
  }
}

}  // namespace mailvault::index
