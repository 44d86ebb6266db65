// Pack files: the vault's only source of truth (BLUEPRINT decisions 2 and 4).
//
// A pack is a 48-byte header followed by framed records, appended and never rewritten in place;
// it is sealed with a SEAL record once it reaches the configured size. Every record is
// self-describing, so the catalog can be rebuilt from packs plus the master key alone.
// The byte layout is documented in docs/formats.md and pinned by tests/format_fixture_test.cc.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/fingerprint.h"
#include "core/result.h"
#include "vault/crypto.h"

namespace mailvault {

constexpr std::string_view kPackMagic{"MVPACK\r\n", 8};
// Version 2 packs hold keyed records (below); version 1 packs, written before, stay readable.
constexpr uint32_t kPackFormatVersion = 2;
constexpr uint32_t kPackFormatUnkeyed = 1;
constexpr size_t kPackHeaderSize = 48;
constexpr uint32_t kRecordMagic = 0x3152564d;  // "MVR1" on disk
constexpr size_t kRecordHeaderSize = 12;        // magic, type, flags, reserved, body length
constexpr size_t kRecordTrailerSize = 4;        // CRC-32C of header and body
constexpr size_t kRecordOverhead = kRecordHeaderSize + kRecordTrailerSize;
// A keyed record (flags bit 0, every record of a version 2 pack) carries before its CRC its
// sequence number in the pack (u32, from 0) and a 16-byte MAC:
//   HMAC-SHA256(records key, "mailvault record v2" || vault id || pack number (u64) ||
//               sequence (u32) || header || body), first 16 bytes.
// Removing, reordering, moving or replaying a record then needs the key to go unnoticed: a
// removed record leaves a gap in the sequence, a reordered or replayed one runs it backwards,
// one moved from another pack fails its MAC, and the CRC alone, which anyone can recompute, no
// longer vouches for anything. The offset is deliberately not bound: records after a removal
// still verify (and are kept), so a removal costs exactly what was removed, and says so.
constexpr uint8_t kRecordFlagKeyed = 1;
constexpr size_t kRecordMacSize = 16;
constexpr size_t kKeyedTrailerSize = 4 + kRecordMacSize + kRecordTrailerSize;
constexpr size_t kKeyedRecordOverhead = kRecordHeaderSize + kKeyedTrailerSize;
// No record body is larger: the largest message limit a config may set (kMaxMessageBytesCeiling)
// plus room for keys and the envelope.
constexpr uint32_t kMaxRecordBody = (1u << 30) + (64u << 20);

enum class RecordType : uint8_t {
  kMessage = 1,     // one message: wrapped data key + encrypted (first envelope, compressed bytes)
  kEnvelope = 2,    // a further capture of a stored message
  kDictionary = 3,  // a zstd dictionary, encrypted
  kSeal = 4,        // the last record of a sealed pack
  kPurge = 5,       // messages purged (crypto-shredded): the catalog forgets them here
  kTombstone = 6,   // where a purged message's record (or envelope) was before its pack was rewritten
};
constexpr uint8_t kMaxRecordType = 6;

struct PackHeader {
  uint64_t pack_number = 0;
  std::string vault_id;  // 16 bytes
  uint32_t version = kPackFormatVersion;
  // 0 for a pack as first written; each rewrite by a purge (a new file replacing the old one,
  // never an edit in place) counts one up, so an interrupted swap is recognised on open.
  uint32_t generation = 0;
};
std::string EncodePackHeader(const PackHeader& h);
Result<PackHeader> DecodePackHeader(std::string_view bytes, uint32_t* version);

// Frames a record body: header + body + CRC (an unkeyed record, as in version 1 packs).
std::string FrameRecord(RecordType type, std::string_view body);

// Where a keyed record sits: what its MAC binds.
struct RecordPlace {
  std::string_view vault_id;
  uint64_t pack = 0;
  uint32_t sequence = 0;
};
// Frames a keyed record: header (flags = keyed) + body + sequence + MAC + CRC.
std::string FrameKeyedRecord(RecordType type, std::string_view body, const SecretKey& key, const RecordPlace& place);
// The MAC a keyed record at `place` must carry; frame_head_and_body is its header and body.
std::string RecordMac(const SecretKey& key, const RecordPlace& place, std::string_view frame_head_and_body);

struct MessageRecord {
  ObjectId id;
  uint32_t dictionary_id = 0;  // 0: compressed without a dictionary
  uint64_t raw_size = 0;
  uint32_t block_index = 0;    // position in its compression block; 0 starts a block
  std::string wrapped_key;     // 60 bytes: the data key sealed under the wrap key
  std::string box;             // nonce || ciphertext || tag
};
// Bytes of a message record body before the wrapped key.
constexpr size_t kMessageRecordFixed = 32 + 4 + 8 + 4;
struct EnvelopeRecord {
  ObjectId id;
  std::string box;  // sealed under the message's data key
};
struct DictionaryRecord {
  uint32_t dictionary_id = 0;
  std::string box;  // sealed under the dictionary key
};
// What a DICTIONARY box holds. Version 2 (AAD "mailvault dictionary v2") names the messages it
// was trained from, so a purge knows whether the dictionary can hold any of a purged message,
// and the dictionary it replaces (0: none), whose blocks are re-encoded with this one. Empty
// bytes in a replacement mean "no dictionary": the replaced blocks are re-encoded without one.
// Version 1 boxes (AAD "... v1") hold the dictionary bytes alone; their samples are unknown.
struct DictionaryContent {
  bool samples_known = false;
  std::vector<ObjectId> samples;
  uint32_t replaces = 0;
  std::string bytes;
};
// The records of purged messages: one PURGE record per purge batch, written to the open pack.
struct PurgeRecord {
  std::vector<ObjectId> ids;
};
constexpr size_t kMaxPurgeRecordIds = 4096;
struct TombstoneRecord {
  ObjectId id;
  enum What : uint8_t { kMessage = 1, kEnvelope = 2 } what = kMessage;
};
struct SealRecord {
  uint64_t record_count = 0;  // records before this one
  std::string sha256;         // of every pack byte before this record
};

std::string EncodeMessageBody(const MessageRecord& r);
std::string EncodeEnvelopeBody(const EnvelopeRecord& r);
std::string EncodeDictionaryBody(const DictionaryRecord& r);
std::string EncodeSealBody(const SealRecord& r);
std::string EncodePurgeBody(const PurgeRecord& r);
std::string EncodeTombstoneBody(const TombstoneRecord& r);
Result<PurgeRecord> DecodePurgeBody(std::string_view body);
Result<TombstoneRecord> DecodeTombstoneBody(std::string_view body);
// Seals / opens a dictionary's content (version 2 sealing; opening reads versions 1 and 2).
std::string SealDictionary(const SecretKey& key, uint32_t id, const DictionaryContent& c);
Result<DictionaryContent> OpenDictionary(const SecretKey& key, const DictionaryRecord& r);
Result<MessageRecord> DecodeMessageBody(std::string_view body);
Result<EnvelopeRecord> DecodeEnvelopeBody(std::string_view body);
Result<DictionaryRecord> DecodeDictionaryBody(std::string_view body);
Result<SealRecord> DecodeSealBody(std::string_view body);

// Associated data binding each box to its place: a box moved to another object, or given
// another dictionary id or size, fails authentication.
std::string MessageAad(const MessageRecord& r);
std::string DataKeyAad(const ObjectId& id);
std::string EnvelopeAad(const ObjectId& id);
std::string DictionaryAad(uint32_t dictionary_id);

// One framed record found by the scanner.
struct RawRecord {
  RecordType type;
  uint64_t offset = 0;  // of the record header within the pack
  uint32_t length = 0;  // header + body + trailer
  std::string_view body;
  bool keyed = false;
  uint32_t sequence = 0;      // keyed records only
  std::string_view mac;       // keyed records only
  std::string_view head_and_body;  // what the MAC covers after the place
};
// Checks a keyed record's MAC against the place it was found at; "" when it holds, else why.
std::string CheckRecordMac(const RawRecord& rec, const SecretKey& key, std::string_view vault_id, uint64_t pack);

// Walks the records of a pack held in memory. Next() stops at the end, or at the first frame
// that does not parse; then torn() says whether that is the unfinished tail of an interrupted
// append (the only bytes a caller may ever cut off), and Skip() steps over damage to the next
// valid frame, so one bad frame never hides the intact records after it.
class RecordScanner {
 public:
  // pack_bytes holds the pack from offset `base` on (0: the whole pack); offsets are pack offsets.
  RecordScanner(std::string_view pack_bytes, uint64_t start_offset, uint64_t base = 0);
  // False at the end or at a bad frame (then error() says why).
  bool Next(RawRecord* rec);
  uint64_t offset() const { return base_ + pos_; }
  bool at_end() const { return pos_ >= data_.size(); }
  // Set when Next() stopped before the end of the bytes.
  const std::string& error() const { return error_; }
  // True when what follows the last good record can only be a partial write: a plausible
  // frame header (or a prefix of one) whose declared length runs past the end of the bytes,
  // with no valid frame anywhere after it. An impossible length, a bad magic, zeros (what a
  // power loss leaves in a file extended but never written) or a valid frame further on are
  // damage, not a torn tail: cutting there would cut acknowledged records.
  bool torn() const;
  // After Next() stopped at a bad frame: moves to the next valid frame (magic, sane length,
  // CRC) or to the end, and returns where the damage began and ended.
  struct Damage {
    uint64_t begin = 0;
    uint64_t end = 0;
    std::string why;
  };
  Damage Skip();

 private:
  // The offset within data_ of the next valid frame at or after from, or data_.size().
  size_t FindFrame(size_t from) const;

  std::string_view data_;
  uint64_t base_;
  uint64_t pos_;  // within data_
  std::string error_;
};

// Parses one framed record at the start of bytes (for reads through the catalog).
Result<RawRecord> ParseFramedRecord(std::string_view bytes, uint64_t offset);

std::string PackFileName(uint64_t pack_number);  // "00000001.pack"

}  // namespace mailvault
