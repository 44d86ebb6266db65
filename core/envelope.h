// The envelope of one capture: when, from where, and for whom a message reached the archive.
// A message stored once may have many envelopes (one per journal copy or import).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace mailvault {

struct Envelope {
  int64_t capture_time_us = 0;          // microseconds since the epoch, UTC
  std::string source;                   // "import:/srv/mail/inbox.mbox", "smtp:10.0.0.5", ...
  std::vector<std::string> recipients;  // envelope recipients (journal report or RCPT TO)
  std::string custodian;                // whose mailbox this copy belongs to, when known
  std::string sender;                   // envelope sender (MAIL FROM), when known
  // Provenance of a journal capture: the journal report itself (its headers and text part,
  // without the original it carried), kept as the mail server sent it.
  std::string journal_report;
  // Why the capture is not what it seemed, e.g. a journal report that could not be unwrapped
  // and was stored as-is. Empty when nothing went wrong.
  std::string note;

  bool operator==(const Envelope&) const = default;

  // Compact binary form; see docs/formats.md ("envelope").
  std::string Encode() const;
  static Result<Envelope> Decode(std::string_view bytes);
  // Identifies the envelope's content apart from its capture time: a second capture that adds
  // nothing new (the same file imported again) is recognised and not stored twice.
  uint64_t ContentDigest() const;
};

}  // namespace mailvault
