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
  IndexInfo Info();
  // Every indexed id (hex), for `mailvault check`.
  Result<std::vector<std::string>> AllIds();
  // The summary of one message, when indexed.
  Result<std::optional<Summary>> Get(const std::string& hex_id);

 private:
  Searcher() = default;
  Result<Xapian::Query> ResolvePhrase(const Phrase& phrase);
  Result<Xapian::Query> Parse(const std::string& query, int64_t now);
  std::vector<Xapian::Database> shards_;
  Xapian::Database db_;  // all shards as one
};

}  // namespace mailvault::index
