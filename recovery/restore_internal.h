// Restore's internals shared by its source files: journal keys, matching keys, content fingerprints.
#pragma once

#include "core/message.h"
#include "recovery/restore.h"

namespace mailvault::recovery::restore_internal {

int64_t Now();

// State store keys (docs/formats.md, "restore jobs"): one header per job, one record per
// target with its planned messages, and one journal record per (target, message).
std::string HeaderKey(const std::string& job);
std::string TargetKey(const std::string& job, size_t t);
std::string OutcomePrefix(const std::string& job, size_t t);

std::string EncodeOutcome(const Outcome& o);

Result<std::map<std::string, Outcome>> LoadOutcomes(control::StateStore* store, const std::string& job, size_t t);
void Tally(const PlannedTarget& t, const std::map<std::string, Outcome>& outcomes, TargetReport* r);

// What identifies a message for matching, before its content is compared: the normalised
// Message-ID and the Date. Mail without a Message-ID gets From and Subject in its key instead
// (the synthetic id hashes the body, which a server may have re-encoded).
std::string MatchKey(const MessageSummary& s);

std::string UpperAscii(std::string s);

// The decoded-part hashes, or nullopt when the message cannot be parsed. The size limit is
// raised by a tenth: a message near the vault's ceiling grows past it when sent with CRLF.
std::optional<std::set<std::string>> ContentHashesOf(std::string_view raw);

// For mail that cannot be parsed: the body after the header block, line ends made LF. Our own
// earlier append of such a message still matches (the same body), so it is not sent twice.
std::string BodyDigest(std::string_view raw);

// What a folder's copy is compared by: the part hashes, or the body digest when unparseable.
struct Fingerprint {
  std::optional<std::set<std::string>> parts;
  std::string body;
  static Fingerprint Of(std::string_view raw) { return Fingerprint{ContentHashesOf(raw), BodyDigest(raw)}; }
  bool Same(const Fingerprint& o) const { return parts && o.parts ? *parts == *o.parts : body == o.body; }
};

}  // namespace mailvault::recovery::restore_internal
