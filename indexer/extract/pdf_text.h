// Internal to indexer/extract: PDF text through the mailvault-pdftotext helper process.
#pragma once

#include <string_view>

#include "indexer/extract/extract.h"

namespace mailvault::extract_internal {

// `pdf` is the whole file (already checked against limits.max_input_bytes).
Extracted ExtractPdfText(std::string_view pdf, const ExtractLimits& limits);

}  // namespace mailvault::extract_internal
