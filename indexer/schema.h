// The index schema: every searchable field declared once, here (as mu's mu-fields.hh). The
// document builder and the query parser both read this table; docs/query-language.md and
// docs/formats.md ("index") describe it for people.
//
// Terms are the field's prefix followed by a lower-case word (or exact value). Prefixes are
// upper case, so a term never needs a separator between prefix and value.
#pragma once

#include <array>
#include <optional>
#include <string_view>

namespace mailvault::index {

enum class FieldKind {
  kWords,    // free text split into words; phrases where `phrases`
  kAddress,  // words of addresses and display names, plus each whole address (exact_prefix)
  kExact,    // one whole lower-cased value per term (Message-ID, MIME type, tag)
  kId,       // the vault id (hex), the document's unique term
  kDate,     // a value slot, queried by range
  kSize,     // a value slot, queried by range
  kFlag,     // has:/is: flags (exact terms under the flag prefix)
};

struct Field {
  std::string_view name;          // as written in queries: "from"
  std::string_view alias;         // a second name, or ""
  FieldKind kind;
  std::string_view prefix;        // terms of words (or exact values for kExact/kId/kFlag)
  std::string_view exact_prefix;  // kAddress: whole addresses; kWords: whole names (attachments)
  bool phrases = false;           // the field's word stream is kept (phrase search), see below
  bool in_default = false;        // searched by a word without a field
};

// Value slots.
constexpr unsigned kSlotDate = 0;  // Xapian::sortable_serialise(seconds since the epoch, UTC)
constexpr unsigned kSlotSize = 1;  // Xapian::sortable_serialise(bytes)
constexpr unsigned kSlotWords = 2; // id + word streams of the phrase fields (document.h)
constexpr unsigned kSlotCaptured = 3;  // Xapian::sortable_serialise(first capture, seconds); absent in indexes built before it

// The has:/is: flags, each stored as the term kFlagPrefix + flag.
constexpr std::string_view kFlagPrefix = "XH";
constexpr std::string_view kFlagAttachment = "attachment";  // has:attachment
constexpr std::string_view kFlagPartial = "partial";        // is:partial: some text cut at a limit
constexpr std::string_view kFlagUnindexed = "unindexed";    // is:unindexed: some part not readable

inline constexpr std::array<Field, 17> kFields{{
    {"from", "", FieldKind::kAddress, "F", "XAF", false, true},
    {"to", "", FieldKind::kAddress, "T", "XAT", false, true},
    {"cc", "", FieldKind::kAddress, "C", "XAC", false, true},
    {"bcc", "", FieldKind::kAddress, "XB", "XAB", false, false},
    {"envelope", "rcpt", FieldKind::kAddress, "E", "XAE", false, false},
    {"custodian", "", FieldKind::kAddress, "K", "XAK", false, false},
    {"subject", "", FieldKind::kWords, "S", "", true, true},
    {"body", "", FieldKind::kWords, "", "", true, true},
    {"attachment", "file", FieldKind::kWords, "N", "XN", false, true},
    {"atext", "", FieldKind::kWords, "W", "", true, true},
    {"mime", "type", FieldKind::kExact, "XM", "", false, false},
    {"msgid", "message-id", FieldKind::kExact, "XI", "", false, false},
    {"tag", "", FieldKind::kExact, "XG", "", false, false},
    {"id", "", FieldKind::kId, "Q", "", false, false},
    {"date", "", FieldKind::kDate, "", "", false, false},
    {"size", "", FieldKind::kSize, "", "", false, false},
    {"has", "is", FieldKind::kFlag, kFlagPrefix, "", false, false},
}};

constexpr std::optional<Field> FieldNamed(std::string_view name) {
  for (const Field& f : kFields) {
    if (f.name == name || (!f.alias.empty() && f.alias == name)) return f;
  }
  return std::nullopt;
}

constexpr const Field& FieldOf(std::string_view name) {
  for (const Field& f : kFields) {
    if (f.name == name) return f;
  }
  return kFields[0];  // unreachable for the names used in this code base (checked by the tests)
}

// Words longer than this are not indexed (Xapian's own term limit is 245 bytes; such "words"
// are base64 runs and URLs that nobody searches for word by word).
constexpr size_t kMaxWordBytes = 64;

// Phrases. Xapian's positional index would take more room than the mail itself (a position
// list per word per message, key-dominated). Instead each message keeps, in its document data,
// the word streams of its phrase fields (subject, body, attachment text), zstd-compressed. A
// phrase query finds candidates by its words and confirms each candidate against its stream
// (docs/indexing.md, "Phrases").
constexpr size_t kPhraseFieldCount = 3;
constexpr std::array<std::string_view, kPhraseFieldCount> kPhraseFields{"subject", "body", "atext"};
constexpr int PhraseFieldIndex(std::string_view name) {
  for (size_t i = 0; i < kPhraseFields.size(); ++i) {
    if (kPhraseFields[i] == name) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace mailvault::index
