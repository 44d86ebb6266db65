// Message-ID normalisation: the same id written by different servers must compare equal.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace mailvault {

// Normalises one Message-ID header value (or In-Reply-To token) to "<local@domain>":
// unfolds, drops RFC 5322 comments (nested), takes the first <...> token (or the bare value),
// removes whitespace and quoting inside it, lower-cases the domain (the local part is case
// sensitive). Returns "" when nothing usable is left.
std::string NormalizeMessageId(std::string_view header_value);

// Every <...> id in a References or In-Reply-To value, normalised, in order, duplicates dropped.
std::vector<std::string> ParseMessageIdList(std::string_view header_value);

}  // namespace mailvault
