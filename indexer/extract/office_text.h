// Internal to indexer/extract: text from zip-based documents (Office Open XML and OpenDocument),
// read from memory with libarchive. Exposed for extract.cc and the fuzz target, which must reach
// this path without the format detection in front of it.
#pragma once

#include <string_view>

#include "indexer/extract/extract.h"

namespace mailvault::extract_internal {

enum class OfficeKind { kUnknown, kDocx, kXlsx, kPptx, kOdt, kOds, kOdp };

// "DOCX", "ODS", ... ("Office document" for kUnknown).
const char* OfficeKindName(OfficeKind kind);

// `zip` is the whole file. Which document it is comes from its members (_rels/.rels,
// mimetype); `declared` (from the content type or extension) only names the format in reasons
// when the members say nothing. A zip that holds no known document is kNotText when nothing
// declared it a document, kUnreadable otherwise.
Extracted ExtractOfficeText(std::string_view zip, OfficeKind declared, const ExtractLimits& limits);

}  // namespace mailvault::extract_internal
