// Small text helpers shared by every module that shows or matches mail text.
#pragma once

#include <string>
#include <string_view>

namespace mailvault {

// Replaces every invalid UTF-8 sequence with U+FFFD, so text from mislabelled mail can be
// printed, put in JSON and indexed.
std::string ToValidUtf8(std::string_view in);

// An addr-spec as mailvault compares it: trimmed and lower-cased (local parts are case-sensitive
// in theory and never in practice; custodian matching must not miss "John.Doe@X.com").
std::string NormalizeAddress(std::string_view addr);

}  // namespace mailvault
