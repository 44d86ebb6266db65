// The query language (docs/query-language.md) parsed into a Xapian query, with the fields of
// schema.h. Errors name the 1-based character position and what was expected there.
#pragma once

#include <xapian.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace mailvault::index {

// Limits on a query: it comes from outside (a person, the REST API).
constexpr size_t kMaxQueryBytes = 16 << 10;
constexpr int kMaxQueryDepth = 64;           // nested parentheses and NOTs
constexpr Xapian::termcount kMaxWildcardExpansion = 50000;
// Terms a query may expand to (a word without a field is one term per default field). Xapian
// 1.4 builds a query's match tree in time that grows with the square of its terms: 16 KiB of
// "a OR b OR ..." (14,000 terms) took 13 s of CPU before matching anything, 2,000 take 0.15 s.
// Lucene's maxClauseCount (1,024) exists for the same reason.
constexpr size_t kMaxQueryTerms = 2000;

// A phrase to be matched: its words next to each other in one part of any of these phrase
// fields (schema.h, kPhraseFields).
struct Phrase {
  std::vector<std::string_view> fields;
  std::vector<std::string> words;  // at least two
};
// Turns a phrase into a query for exactly the messages that contain it (the searcher confirms
// candidates against their word streams).
using PhraseResolver = std::function<Result<Xapian::Query>(const Phrase&)>;
// Tags live outside the index (the API's state store), so `tag:NAME` is answered by a resolver
// that returns the query for exactly the messages carrying the tag (an OP_SYNONYM of id terms,
// which counts as one term towards kMaxQueryTerms). Without one, tag: matches the index's own
// XG terms.
using TagResolver = std::function<Xapian::Query(const std::string& tag)>;

// `now` (seconds since the epoch) anchors relative dates such as date:30d.. Without a resolver,
// a phrase stands for all of its words (what a phrase's candidates are): enough to check syntax.
Result<Xapian::Query> ParseQuery(std::string_view query, int64_t now, const PhraseResolver& phrases = {},
                                 const TagResolver& tags = {});

}  // namespace mailvault::index
