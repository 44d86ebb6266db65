#include "indexer/searcher.h"

#include <filesystem>

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
      const std::string value = it.get_document().get_value(kSlotWords);
      MV_ASSIGN_OR_RETURN(WordStreams streams, DecodeWordStreams(value));
      bool found = false;
      for (size_t f : fields) found = found || streams.HasPhrase(f, phrase.words);
      if (!found) continue;
      MV_ASSIGN_OR_RETURN(std::string id, WordStreamsId(value));
      hits.emplace_back("Q" + id);
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
