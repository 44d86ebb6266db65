// Turns a stored message into a Xapian document following the schema (schema.h): terms for
// every field, positions for phrase fields, value slots for date and size, and a compact
// summary (document data) that search results are shown from without touching the vault.
//
// Thread-safe: documents are built on every core while one writer adds them.
#pragma once

#include <xapian.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/fingerprint.h"
#include "core/limits.h"
#include "indexer/extract/extract.h"
#include "indexer/schema.h"
#include "vault/vault.h"

namespace mailvault::index {

struct DocumentLimits {
  MessageLimits message;
  // Decoded text indexed per body part; the rest is cut (is:partial, with the reason).
  size_t max_part_text_bytes = 4u << 20;
  ExtractLimits extract;
};

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

// Document data: string(summary) string(zstd(word streams)); docs/formats.md ("index").
std::string EncodeDocumentData(const Summary& s, const WordStreams& w);
Result<Summary> DecodeSummary(std::string_view data);
Result<WordStreams> DecodeWordStreams(std::string_view data);

struct BuiltDocument {
  Xapian::Document doc;
  std::string id_term;  // "Q" + hex id, unique per document
  Summary summary;
};

BuiltDocument BuildDocument(const ObjectId& id, const StoredMessage& message, const DocumentLimits& limits);
// For a message the vault cannot read right now: findable by id and by is:unindexed.
BuiltDocument BuildUnreadableDocument(const ObjectId& id, const Error& why);

}  // namespace mailvault::index
