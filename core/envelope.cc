#include "core/envelope.h"

#include "core/bytes.h"
#include "core/fingerprint.h"

namespace mailvault {
namespace {
// Optional fields are tagged, so later versions can add some without breaking old readers.
enum Tag : uint8_t { kCustodian = 1, kSender = 2, kJournalReport = 3, kNote = 4 };
constexpr uint8_t kEnvelopeVersion = 1;
constexpr size_t kMaxRecipients = 100000;
}  // namespace

std::string Envelope::Encode() const {
  ByteWriter w;
  w.PutU8(kEnvelopeVersion);
  w.PutU64(static_cast<uint64_t>(capture_time_us));
  w.PutString(source);
  w.PutVarint(recipients.size());
  for (const std::string& r : recipients) w.PutString(r);
  if (!custodian.empty()) {
    w.PutU8(kCustodian);
    w.PutString(custodian);
  }
  if (!sender.empty()) {
    w.PutU8(kSender);
    w.PutString(sender);
  }
  if (!journal_report.empty()) {
    w.PutU8(kJournalReport);
    w.PutString(journal_report);
  }
  if (!note.empty()) {
    w.PutU8(kNote);
    w.PutString(note);
  }
  return w.Take();
}

Result<Envelope> Envelope::Decode(std::string_view bytes) {
  ByteReader r(bytes);
  Envelope e;
  uint8_t version;
  uint64_t t, n;
  std::string_view s;
  if (!r.GetU8(&version)) return Corruption("envelope is empty");
  if (version != kEnvelopeVersion) return Error(ErrorCode::kUnsupported, "envelope version " + std::to_string(version));
  if (!r.GetU64(&t) || !r.GetString(&s) || !r.GetVarint(&n) || n > kMaxRecipients) {
    return Corruption("envelope is truncated");
  }
  e.capture_time_us = static_cast<int64_t>(t);
  e.source = std::string(s);
  for (uint64_t i = 0; i < n; ++i) {
    if (!r.GetString(&s)) return Corruption("envelope recipient list is truncated");
    e.recipients.emplace_back(s);
  }
  while (r.remaining()) {
    uint8_t tag;
    if (!r.GetU8(&tag) || !r.GetString(&s)) return Corruption("envelope field is truncated");
    if (tag == kCustodian) e.custodian = std::string(s);
    else if (tag == kSender) e.sender = std::string(s);
    else if (tag == kJournalReport) e.journal_report = std::string(s);
    else if (tag == kNote) e.note = std::string(s);
    // Unknown tags come from a newer writer; skipping them keeps the rest readable.
  }
  return e;
}

uint64_t Envelope::ContentDigest() const {
  Envelope copy = *this;
  copy.capture_time_us = 0;
  std::string h = Sha256Of(copy.Encode());
  return DecodeU64(h.data());
}

}  // namespace mailvault
