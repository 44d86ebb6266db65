// Journal-report unwrapping (capture/journal.h) on arbitrary messages. Checks: what is not a
// report, or a report that cannot be unwrapped, is kept byte for byte (nothing is ever lost);
// every recipient found is an address; the limits hold.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "capture/journal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  mailvault::capture::JournalLimits limits;
  limits.max_recipients = 50;
  limits.max_report_bytes = 4096;
  limits.max_parts = 20;
  mailvault::capture::UnwrappedMessage u = mailvault::capture::UnwrapJournalReport(input, limits);
  if (u.is_report != mailvault::capture::IsJournalReport(input)) std::abort();
  if (!u.is_report && u.message != input) std::abort();
  if (u.is_report && u.report.empty() && u.message != input) std::abort();  // stored as received
  if (u.recipients.size() > limits.max_recipients || u.report.size() > limits.max_report_bytes) std::abort();
  for (const std::string& r : u.recipients) {
    if (r.find('@') == std::string::npos) std::abort();
  }
  mailvault::capture::ReportFields f = mailvault::capture::ParseReportText(input, 10);
  if (f.recipients.size() > 10) std::abort();
  return 0;
}
