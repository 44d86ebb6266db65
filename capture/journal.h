// Journal reports: what a journaling mail server wraps around the message it journals.
//
// Microsoft Exchange and Microsoft 365 send an "envelope journal report": a message with an
// X-MS-Journal-Report header whose text part lists the sender and every recipient (Bcc and
// expanded distribution lists included: the only record of them anywhere), and whose
// message/rfc822 part is the original, unaltered. The archive stores the original and makes
// the report's recipients the capture's envelope. docs/journal-formats.md has the grammar.
//
// Bad reports are never dropped: a report that cannot be unwrapped is stored as received,
// with the reason, and its recipients as far as they could be read.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace mailvault::capture {

struct JournalLimits {
  size_t max_recipients = 100000;        // recipient lines read from one report
  size_t max_report_bytes = 512 << 10;   // provenance kept per capture (the report minus the original)
  size_t max_parts = 1000;               // MIME parts looked at in the report
};

struct UnwrappedMessage {
  bool is_report = false;  // the input was an envelope journal report
  // What to store: the original the report carried, or the input itself (not a report, or a
  // report that could not be unwrapped: then note says why).
  std::string message;
  std::vector<std::string> recipients;  // from the report: lower-cased, each once, report order
  std::string sender;                   // the report's Sender: line, lower-cased
  std::string report;                   // provenance: the report without the original
  std::string note;                     // "" when all went well
};

// True when the message's top-level header has X-MS-Journal-Report.
bool IsJournalReport(std::string_view message);

UnwrappedMessage UnwrapJournalReport(std::string_view message, const JournalLimits& limits = {});

// The recipient lines of a report's text part ("To: a@b", "Recipient: c@d, Expanded: dl@d",
// ...), lower-cased and each once. Exposed for tests and the fuzzer.
struct ReportFields {
  std::string sender;
  std::string subject;
  std::string message_id;
  std::vector<std::string> recipients;
  bool truncated = false;  // more recipients than the limit
};
ReportFields ParseReportText(std::string_view text, size_t max_recipients);

}  // namespace mailvault::capture
