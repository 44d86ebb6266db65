#include "indexer/doc_data.h"

#include <zstd.h>

#include <memory>

#include "core/bytes.h"

namespace mailvault::index {
namespace {

constexpr uint8_t kSummaryVersion = 1;
constexpr uint8_t kStreamsVersion = 1;
constexpr size_t kIdBytes = 32;  // a message id (SHA-256)
// Word streams larger than this (decompressed) are refused as damaged.
constexpr size_t kMaxStreamBytes = 64u << 20;

}  // namespace

std::string EncodeSummary(const Summary& s) {
  ByteWriter w;
  w.PutU8(kSummaryVersion);
  w.PutString(s.id);
  w.PutString(s.message_id);
  w.PutVarint(static_cast<uint64_t>(s.date));
  w.PutVarint(static_cast<uint64_t>(static_cast<int64_t>(s.utc_offset_minutes) + 100000));
  w.PutU8(s.date_from_header ? 1 : 0);
  w.PutString(s.from);
  w.PutString(s.subject);
  w.PutVarint(s.size);
  w.PutVarint(s.notes.size());
  for (const std::string& n : s.notes) w.PutString(n);
  return w.Take();
}

bool WordStreams::HasPhrase(size_t field, const std::vector<std::string>& words) const {
  if (field >= parts.size() || words.empty()) return false;
  std::string needle;
  for (const std::string& w : words) {
    if (!needle.empty()) needle.push_back(' ');
    needle += w;
  }
  for (const std::string& part : parts[field]) {
    // Whole words only: the match must start and end at a space or an end of the part.
    for (size_t at = part.find(needle); at != std::string::npos; at = part.find(needle, at + 1)) {
      bool starts = at == 0 || part[at - 1] == ' ';
      size_t end = at + needle.size();
      bool ends = end == part.size() || part[end] == ' ';
      if (starts && ends) return true;
    }
  }
  return false;
}

std::string EncodeWordStreams(std::string_view id_bytes, const WordStreams& w) {
  ByteWriter streams;
  streams.PutU8(kStreamsVersion);
  for (const auto& field : w.parts) {
    streams.PutVarint(field.size());
    for (const std::string& part : field) streams.PutString(part);
  }
  std::string plain = streams.Take();
  std::string out(id_bytes);
  out.resize(kIdBytes + ZSTD_compressBound(plain.size()));
  // Level 1: these are written for every message and read only by phrase checks. With a
  // checksum, so a damaged stream is an error rather than a wrong answer.
  thread_local std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> cctx(ZSTD_createCCtx(), ZSTD_freeCCtx);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, 1);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_checksumFlag, 1);
  size_t n = ZSTD_compress2(cctx.get(), out.data() + kIdBytes, out.size() - kIdBytes, plain.data(), plain.size());
  out.resize(kIdBytes + (ZSTD_isError(n) ? 0 : n));
  return out;
}

Result<std::string> WordStreamsId(std::string_view value) {
  if (value.size() < kIdBytes) return Corruption("an index entry's word streams are damaged; run `mailvault reindex`");
  return HexEncode(value.substr(0, kIdBytes));
}

Result<WordStreams> DecodeWordStreams(std::string_view value) {
  if (value.size() < kIdBytes) return Corruption("an index entry's word streams are damaged; run `mailvault reindex`");
  std::string_view packed = value.substr(kIdBytes);
  unsigned long long size = ZSTD_getFrameContentSize(packed.data(), packed.size());
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > kMaxStreamBytes) {
    return Corruption("an index entry's word streams are damaged; run `mailvault reindex`");
  }
  std::string plain(size, '\0');
  size_t n = ZSTD_decompress(plain.data(), plain.size(), packed.data(), packed.size());
  if (ZSTD_isError(n) || n != size) return Corruption("an index entry's word streams are damaged; run `mailvault reindex`");
  ByteReader r(plain);
  uint8_t version;
  WordStreams w;
  if (!r.GetU8(&version) || version != kStreamsVersion) return Corruption("an index entry's word streams are damaged");
  for (auto& field : w.parts) {
    uint64_t count;
    if (!r.GetVarint(&count) || count > r.remaining()) return Corruption("an index entry's word streams are damaged");
    for (uint64_t i = 0; i < count; ++i) {
      std::string_view part;
      if (!r.GetString(&part, kMaxStreamBytes)) return Corruption("an index entry's word streams are damaged");
      field.emplace_back(part);
    }
  }
  return w;
}

Result<Summary> DecodeSummary(std::string_view data) {
  ByteReader r(data);
  Summary s;
  uint8_t version, from_header;
  uint64_t date, offset, notes;
  std::string_view id, mid, from, subject;
  if (!r.GetU8(&version) || version != kSummaryVersion || !r.GetString(&id, 128) || !r.GetString(&mid, 4096) ||
      !r.GetVarint(&date) || !r.GetVarint(&offset) || !r.GetU8(&from_header) || !r.GetString(&from, 1 << 16) ||
      !r.GetString(&subject, 1 << 20) || !r.GetVarint(&s.size) || !r.GetVarint(&notes) || notes > 1000) {
    return Corruption("an index entry's summary is damaged; run `mailvault reindex`");
  }
  s.id = id;
  s.message_id = mid;
  s.date = static_cast<int64_t>(date);
  s.utc_offset_minutes = static_cast<int>(static_cast<int64_t>(offset) - 100000);
  s.date_from_header = from_header != 0;
  s.from = from;
  s.subject = subject;
  for (uint64_t i = 0; i < notes; ++i) {
    std::string_view n;
    if (!r.GetString(&n, 1 << 16)) return Corruption("an index entry's summary is damaged; run `mailvault reindex`");
    s.notes.emplace_back(n);
  }
  return s;
}

}  // namespace mailvault::index
