// Searching the full-text index: opens every shard read-only as one database. Needs nothing of
// the vault (no key, no lock), so searches run beside a writer, and the `mailvault` command can
// answer them without loading the vault's libraries (cli/main_front.cc).
#pragma once

#include <xapian.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"
#include "indexer/doc_data.h"
#include "indexer/query.h"

namespace mailvault::index {

// A phrase's candidates (messages with all its words) are each confirmed against their word
// streams; a phrase of such common words that more messages than this have them all is refused.
constexpr size_t kMaxPhraseCandidates = 2000000;

enum class SortOrder { kDateNewestFirst, kDateOldestFirst, kRelevance };

struct SearchRequest {
  std::string query;
  size_t offset = 0;
  size_t limit = 50;  // 0: all
  SortOrder sort = SortOrder::kDateNewestFirst;
  int64_t now = 0;    // for relative dates; 0: the clock
  // A second query in the same language that every hit must also match, applied as a filter
  // (never spliced into `query`, so a query cannot escape it): the REST API's reviewer scope.
  std::string filter;
  // Answers tag: (query.h); empty: the index's own tag terms.
  TagResolver tags;
};

struct SearchHit {
  Summary summary;
  double relevance = 0;  // Xapian's weight (0 when sorted by date)
};

struct SearchResult {
  uint64_t total = 0;  // exact
  std::vector<SearchHit> hits;
};

struct IndexInfo {
  uint64_t documents = 0;
  uint64_t applied_change = 0;
};

class Searcher {
 public:
  static Result<std::unique_ptr<Searcher>> Open(const std::string& vault_dir);
  Result<SearchResult> Search(const SearchRequest& request);
  Result<uint64_t> Count(const std::string& query, int64_t now = 0);
  // The matching ids (hex), oldest first, at most request.limit of them (0: all): for exports
  // and bulk tags, which refuse a set over their limit after asking for one more.
  Result<std::vector<std::string>> MatchingIds(const SearchRequest& request);
  // Whether the message with this full id matches the request's query and filter.
  Result<bool> Matches(const std::string& hex_id, const SearchRequest& request);
  // Sees what the writer committed since the last call (a long-lived searcher's view is fixed
  // at open, as Xapian's is).
  void Reopen();
  IndexInfo Info();
  // Every indexed id (hex), for `mailvault check`.
  Result<std::vector<std::string>> AllIds();
  // The summary of one message, when indexed.
  Result<std::optional<Summary>> Get(const std::string& hex_id);

  // What the policy engine needs of every indexed message, in index order: its summary (id,
  // date, size), its custodians, and its first capture (0 in documents indexed before the
  // index kept it: schema.h kSlotCaptured). fn returns false to stop.
  struct Facts {
    Summary summary;
    std::vector<std::string> custodians;
    int64_t first_capture = 0;
  };
  Status ForEachFacts(const std::function<bool(const Facts&)>& fn);
  // The same for one message; nullopt when it is not indexed.
  Result<std::optional<Facts>> GetFacts(const std::string& hex_id);

 private:
  Searcher() = default;
  Result<Xapian::Query> ResolvePhrase(const Phrase& phrase);
  Result<Xapian::Query> Parse(const std::string& query, int64_t now, const TagResolver& tags = {});
  // The request's query with its filter applied.
  Result<Xapian::Query> ParseRequest(const SearchRequest& request);
  std::vector<Xapian::Database> shards_;
  Xapian::Database db_;  // all shards as one
};

}  // namespace mailvault::index
