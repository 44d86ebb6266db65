// Small text helpers shared by every module that shows or matches mail text.
#pragma once

#include <chrono>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "core/result.h"

namespace mailvault {

// Replaces every invalid UTF-8 sequence with U+FFFD, so text from mislabelled mail can be
// printed, put in JSON and indexed.
std::string ToValidUtf8(std::string_view in);

// s without leading and trailing spaces, tabs and CRs (config-file lines).
std::string Trim(std::string_view s);
// "90s", "5m", "2h", "7d" (a bare number is seconds), up to 100 years.
Result<std::chrono::seconds> ParseDuration(std::string_view text);

// An addr-spec as mailvault compares it: trimmed and lower-cased (local parts are case-sensitive
// in theory and never in practice; custodian matching must not miss "John.Doe@X.com").
std::string NormalizeAddress(std::string_view addr);

// Seconds since the epoch of an ISO 8601 time: 2026-11-25, 2026-11-25T10:00,
// 2026-11-25T10:00:00Z, …+01:00, …-0430 (no offset: UTC; fractions of a second dropped). The
// error names the text and says what was expected.
Result<int64_t> ParseIsoTime(const std::string& text);

// Days since 1970-01-01 of a proleptic Gregorian date (month 1-12, day 1-31), and back: the
// calendar arithmetic of dates in queries and of retention periods, for any year (no time_t
// limits, no time zone). Howard Hinnant's algorithms.
int64_t DaysFromCivil(int64_t year, unsigned month, unsigned day);
void CivilFromDays(int64_t days, int64_t* year, unsigned* month, unsigned* day);

// Calls fn(line number from 1, line without its '\n') for every line of text, stopping at the
// first error fn returns: the loop of every line-oriented file mailvault reads (the config
// file, the AUTH users file).
Status ForEachLine(std::string_view text, const std::function<Status(int lineno, std::string_view line)>& fn);

}  // namespace mailvault
