// The message model: what mailvault knows about one RFC 5322 message, parsed with GMime 3.
//
// Parsing never fails on merely odd mail (broken MIME, unknown charsets, missing headers are
// everyday input); it fails only when a named limit in MessageLimits is exceeded or the bytes are
// not mail at all. Callers that store mail (the vault) store the bytes regardless and record the
// parse error next to them.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/limits.h"
#include "core/result.h"

namespace mailvault {

struct Address {
  std::string name;     // display name, decoded to UTF-8
  std::string address;  // addr-spec; the domain lower-cased

  bool operator==(const Address&) const = default;
};

struct MimePart {
  int depth = 0;             // 0 for the message itself
  std::string content_type;  // "text/plain", lower case
  std::string charset;       // as declared, lower case; "" when none
  std::string filename;      // decoded; "" when none
  std::string disposition;   // "attachment", "inline" or ""
  uint64_t decoded_size = 0; // bytes after transfer decoding
  bool is_attachment = false;
  bool is_multipart = false;
  std::string content_hash;  // hex SHA-256 of the decoded content (normalised text for text parts)
};

// The structure of a message found by a linear scan of its bytes, before any recursive parser
// sees them: this is what enforces the MIME limits.
struct MimeShape {
  uint64_t header_bytes = 0;  // the top-level header block
  int parts = 0;              // entities, the message itself included
  int depth = 0;              // deepest nesting, 0 when not multipart
  // Why the bytes look cut short ("" when they do not): they end mid-line inside a header block,
  // or mid-line inside a multipart that was never closed. Such mail is kept; the reason recorded.
  std::string truncation;
};
Result<MimeShape> ScanMimeShape(std::string_view raw, const MessageLimits& limits);

struct MessageSummary {
  std::string message_id;         // normalised, "<local@domain>"
  bool message_id_synthetic = false;
  std::optional<int64_t> date;    // seconds since the epoch, UTC
  int date_utc_offset_minutes = 0;
  std::string from;               // first From address (addr-spec); "" when none
  std::string from_name;
  std::string subject;            // decoded UTF-8
  bool has_attachments = false;   // a Content-Disposition: attachment or a named part seen by the scan
};

struct ParsedMessage {
  MessageSummary summary;
  std::vector<Address> from, sender, reply_to, to, cc, bcc, delivered_to;
  std::vector<std::string> in_reply_to, references;  // normalised ids
  std::vector<MimePart> parts;                        // pre-order; parts[0] is the message body root
  std::vector<std::string> text;                      // decoded UTF-8 of text parts, when asked for
  std::vector<size_t> text_part;                      // the index in `parts` of each text[i]
  // Decoded bytes of attachments, when asked for (ParseOptions::collect_attachments_up_to).
  struct AttachmentBytes {
    size_t part = 0;     // index in `parts`
    std::string bytes;   // empty when the attachment is larger than the limit asked for
    bool over_limit = false;
  };
  std::vector<AttachmentBytes> attachments;
  MimeShape shape;

  // BLUEPRINT decision 10: normalised Message-ID + Date; necessary, not sufficient, for identity.
  std::string HeaderKey() const;
  // Hashes of decoded text parts and attachments: survives re-encoding by another server.
  std::set<std::string> ContentHashes() const;
};

struct ParseOptions {
  bool collect_text = false;  // fill ParsedMessage::text
  // Fill MimePart::content_hash (BLUEPRINT decision 10: restore dedup). The indexer does not
  // need them and skips the hashing.
  bool content_hashes = true;
  // Fill ParsedMessage::attachments with attachments of at most this many decoded bytes
  // (0: none). message/rfc822 parts are walked into, not collected.
  uint64_t collect_attachments_up_to = 0;
};

// Full parse. Every limit exceeded is an error naming the limit.
Result<ParsedMessage> ParseMessage(std::string_view raw, const MessageLimits& limits,
                                   const ParseOptions& options = {});

// Only the top-level headers: fast enough for the ingest path. Never fails on well-sized input;
// the shape's limits are checked separately with ScanMimeShape.
MessageSummary SummarizeHeaders(std::string_view raw);

// The stable id given to a message without a usable Message-ID: derived from From, Date,
// Subject and the body, so the same message re-encoded by a server gets the same id.
std::string SyntheticMessageId(std::string_view raw);

// Must be called once before any parsing, from main(); idempotent.
void InitMessageParsing();

}  // namespace mailvault
