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
#include "indexer/doc_data.h"
#include "indexer/schema.h"
#include "vault/vault.h"

namespace mailvault::index {

struct DocumentLimits {
  MessageLimits message;
  // Decoded text indexed per body part; the rest is cut (is:partial, with the reason).
  size_t max_part_text_bytes = 4u << 20;
  ExtractLimits extract;
};

struct BuiltDocument {
  Xapian::Document doc;
  std::string id_term;  // "Q" + hex id, unique per document
  Summary summary;
};

BuiltDocument BuildDocument(const ObjectId& id, const StoredMessage& message, const DocumentLimits& limits);
// For a message the vault cannot read right now: findable by id and by is:unindexed.
BuiltDocument BuildUnreadableDocument(const ObjectId& id, const Error& why);

}  // namespace mailvault::index
