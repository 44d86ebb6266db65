// What the index stores per message besides terms: the summary search results are shown from
// (document data) and the word streams phrases are confirmed against (value slot kSlotWords).
// docs/formats.md ("index") has the byte layout; tests/index_test.cc reads a fixture of each.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "indexer/schema.h"

namespace mailvault::index {

// What search shows of a message: read from the index, not the vault.
struct Summary {
  std::string id;          // hex
  std::string message_id;  // normalised
  int64_t date = 0;        // seconds, UTC (the first capture time when the message has no Date)
  int utc_offset_minutes = 0;
  bool date_from_header = false;
  std::string from;
  std::string subject;
  uint64_t size = 0;
  std::vector<std::string> notes;  // why something was cut or not indexed, one line each
};

// The words of a message's phrase fields (schema.h, kPhraseFields), in order: per field, one
// string per text part, its words joined by single spaces. A phrase matches inside one part.
struct WordStreams {
  std::array<std::vector<std::string>, kPhraseFieldCount> parts;
  // Whether the words appear next to each other, in order, in one part of the field.
  bool HasPhrase(size_t field, const std::vector<std::string>& words) const;
};

// Document data is the summary; value slot kSlotWords holds the message id (32 bytes) and the
// zstd-compressed word streams: docs/formats.md ("index"). Values are kept out of Xapian's own
// zlib compression (which document data and term lists go through), and a phrase check reads
// them in document order, as value chunks are stored.
std::string EncodeSummary(const Summary& s);
Result<Summary> DecodeSummary(std::string_view data);
std::string EncodeWordStreams(std::string_view id_bytes, const WordStreams& w);
Result<WordStreams> DecodeWordStreams(std::string_view value);
// The message id (hex) the word streams belong to.
Result<std::string> WordStreamsId(std::string_view value);

}  // namespace mailvault::index
