#include "vault/pack.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "core/bytes.h"
#include "vault/crypto.h"

namespace mailvault {

std::string EncodePackHeader(const PackHeader& h) {
  ByteWriter w;
  w.PutBytes(kPackMagic);
  w.PutU32(h.version);
  w.PutU32(0);  // flags, none defined
  w.PutU64(h.pack_number);
  w.PutBytes(h.vault_id);
  w.PutU32(h.generation);
  w.PutU32(Crc32c(w.buffer()));
  return w.Take();
}

Result<PackHeader> DecodePackHeader(std::string_view b, uint32_t* version) {
  if (b.size() < kPackHeaderSize) return Corruption("pack header is truncated");
  if (b.substr(0, 8) != kPackMagic) return Corruption("not a mailvault pack (bad magic)");
  if (Crc32c(b.substr(0, kPackHeaderSize - 4)) != DecodeU32(b.data() + kPackHeaderSize - 4)) {
    return Corruption("pack header checksum mismatch");
  }
  *version = DecodeU32(b.data() + 8);
  if (*version != kPackFormatVersion && *version != kPackFormatUnkeyed) {
    return Error(ErrorCode::kUnsupported, "pack format version " + std::to_string(*version) +
                                              " is newer than this mailvault reads (" +
                                              std::to_string(kPackFormatVersion) + "); upgrade mailvault");
  }
  PackHeader h;
  h.version = *version;
  h.pack_number = DecodeU64(b.data() + 16);
  h.vault_id = std::string(b.substr(24, 16));
  h.generation = DecodeU32(b.data() + 40);
  return h;
}

std::string FrameRecord(RecordType type, std::string_view body) {
  std::string out;
  out.resize(kRecordHeaderSize);
  EncodeU32(out.data(), kRecordMagic);
  out[4] = static_cast<char>(type);
  out[5] = 0;
  out[6] = out[7] = 0;
  EncodeU32(out.data() + 8, static_cast<uint32_t>(body.size()));
  out.append(body);
  uint32_t crc = Crc32c(out);
  char t[4];
  EncodeU32(t, crc);
  out.append(t, 4);
  return out;
}

std::string RecordMac(const SecretKey& key, const RecordPlace& place, std::string_view head_and_body) {
  ByteWriter w;
  w.PutBytes("mailvault record v2");
  w.PutBytes(place.vault_id);
  w.PutU64(place.pack);
  w.PutU32(place.sequence);
  // Fetched once: the lookup takes a lock, and every record append comes through here.
  static EVP_MAC* const hmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(hmac);
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", const_cast<char*>("SHA256"), 0), OSSL_PARAM_construct_end()};
  unsigned char mac[EVP_MAX_MD_SIZE];
  size_t out_len = 0;
  bool ok = ctx && EVP_MAC_init(ctx, key.data(), kKeySize, params) == 1 &&
            EVP_MAC_update(ctx, reinterpret_cast<const unsigned char*>(w.buffer().data()), w.buffer().size()) == 1 &&
            EVP_MAC_update(ctx, reinterpret_cast<const unsigned char*>(head_and_body.data()), head_and_body.size()) == 1 &&
            EVP_MAC_final(ctx, mac, &out_len, sizeof mac) == 1;
  EVP_MAC_CTX_free(ctx);
  // OpenSSL failing to compute an HMAC is not a state to go on in: nothing could be written.
  if (!ok || out_len < kRecordMacSize) std::abort();
  return std::string(reinterpret_cast<const char*>(mac), kRecordMacSize);
}

std::string FrameKeyedRecord(RecordType type, std::string_view body, const SecretKey& key, const RecordPlace& place) {
  std::string out;
  out.reserve(kKeyedRecordOverhead + body.size());
  out.resize(kRecordHeaderSize);
  EncodeU32(out.data(), kRecordMagic);
  out[4] = static_cast<char>(type);
  out[5] = static_cast<char>(kRecordFlagKeyed);
  out[6] = out[7] = 0;
  EncodeU32(out.data() + 8, static_cast<uint32_t>(body.size()));
  out.append(body);
  std::string mac = RecordMac(key, place, out);
  char seq[4];
  EncodeU32(seq, place.sequence);
  out.append(seq, 4);
  out.append(mac);
  char t[4];
  EncodeU32(t, Crc32c(out));
  out.append(t, 4);
  return out;
}

std::string CheckRecordMac(const RawRecord& rec, const SecretKey& key, std::string_view vault_id, uint64_t pack) {
  if (!rec.keyed) return "the record carries no MAC";
  std::string want = RecordMac(key, RecordPlace{vault_id, pack, rec.sequence}, rec.head_and_body);
  if (CRYPTO_memcmp(want.data(), rec.mac.data(), kRecordMacSize) != 0) {
    return "the record fails its keyed check (altered with its CRC recomputed, or moved here from another pack)";
  }
  return "";
}

std::string EncodeMessageBody(const MessageRecord& r) {
  ByteWriter w;
  w.PutBytes(r.id.bytes());
  w.PutU32(r.dictionary_id);
  w.PutU64(r.raw_size);
  w.PutU32(r.block_index);
  w.PutBytes(r.wrapped_key);
  w.PutBytes(r.box);
  return w.Take();
}

Result<MessageRecord> DecodeMessageBody(std::string_view body) {
  constexpr size_t kWrapped = kKeySize + kSealOverhead;
  ByteReader r(body);
  std::string_view id, wrapped;
  MessageRecord m;
  if (!r.GetBytes(ObjectId::kSize, &id) || !r.GetU32(&m.dictionary_id) || !r.GetU64(&m.raw_size) ||
      !r.GetU32(&m.block_index) || !r.GetBytes(kWrapped, &wrapped) ||
      r.remaining() < kSealOverhead) {
    return Corruption("message record is truncated");
  }
  m.id = ObjectId::FromBytes(id);
  m.wrapped_key = std::string(wrapped);
  m.box = std::string(r.rest());
  return m;
}

std::string EncodeEnvelopeBody(const EnvelopeRecord& r) {
  std::string s(r.id.bytes());
  s.append(r.box);
  return s;
}

Result<EnvelopeRecord> DecodeEnvelopeBody(std::string_view body) {
  if (body.size() < ObjectId::kSize + kSealOverhead) return Corruption("envelope record is truncated");
  return EnvelopeRecord{ObjectId::FromBytes(body.substr(0, ObjectId::kSize)), std::string(body.substr(ObjectId::kSize))};
}

std::string EncodeDictionaryBody(const DictionaryRecord& r) {
  ByteWriter w;
  w.PutU32(r.dictionary_id);
  w.PutBytes(r.box);
  return w.Take();
}

Result<DictionaryRecord> DecodeDictionaryBody(std::string_view body) {
  if (body.size() < 4 + kSealOverhead) return Corruption("dictionary record is truncated");
  return DictionaryRecord{DecodeU32(body.data()), std::string(body.substr(4))};
}

std::string EncodePurgeBody(const PurgeRecord& r) {
  ByteWriter w;
  w.PutU8(1);
  w.PutVarint(r.ids.size());
  for (const ObjectId& id : r.ids) w.PutBytes(id.bytes());
  return w.Take();
}

Result<PurgeRecord> DecodePurgeBody(std::string_view body) {
  ByteReader r(body);
  uint8_t version;
  uint64_t n;
  if (!r.GetU8(&version) || version != 1) return Corruption("purge record: unknown version");
  if (!r.GetVarint(&n) || n > kMaxPurgeRecordIds || r.remaining() != n * ObjectId::kSize) {
    return Corruption("purge record is truncated or its count is damaged");
  }
  PurgeRecord out;
  for (uint64_t i = 0; i < n; ++i) {
    std::string_view id;
    (void)r.GetBytes(ObjectId::kSize, &id);
    out.ids.push_back(ObjectId::FromBytes(id));
  }
  return out;
}

std::string EncodeTombstoneBody(const TombstoneRecord& r) {
  std::string s(r.id.bytes());
  s.push_back(static_cast<char>(r.what));
  return s;
}

Result<TombstoneRecord> DecodeTombstoneBody(std::string_view body) {
  if (body.size() != ObjectId::kSize + 1) return Corruption("tombstone record has the wrong size");
  uint8_t what = static_cast<uint8_t>(body[ObjectId::kSize]);
  if (what != TombstoneRecord::kMessage && what != TombstoneRecord::kEnvelope) return Corruption("tombstone record: unknown kind");
  return TombstoneRecord{ObjectId::FromBytes(body.substr(0, ObjectId::kSize)), static_cast<TombstoneRecord::What>(what)};
}

namespace {
std::string DictionaryAadV2(uint32_t id) {
  ByteWriter w;
  w.PutBytes("mailvault dictionary v2");
  w.PutU32(id);
  return w.Take();
}
}  // namespace

std::string SealDictionary(const SecretKey& key, uint32_t id, const DictionaryContent& c) {
  ByteWriter w;
  w.PutU8(2);
  w.PutVarint(c.replaces);
  w.PutVarint(c.samples.size());
  for (const ObjectId& s : c.samples) w.PutBytes(s.bytes());
  w.PutBytes(c.bytes);
  std::string box;
  Seal(key, DictionaryAadV2(id), w.buffer(), &box);
  return box;
}

Result<DictionaryContent> OpenDictionary(const SecretKey& key, const DictionaryRecord& r) {
  DictionaryContent c;
  if (Result<std::string> v2 = mailvault::Open(key, DictionaryAadV2(r.dictionary_id), r.box); v2.ok()) {
    ByteReader rd(*v2);
    uint8_t version;
    uint64_t replaces, n;
    if (!rd.GetU8(&version) || version != 2 || !rd.GetVarint(&replaces) || replaces > UINT32_MAX || !rd.GetVarint(&n) ||
        n > rd.remaining() / ObjectId::kSize) {
      return Corruption("dictionary " + std::to_string(r.dictionary_id) + ": its content is damaged");
    }
    c.samples_known = true;
    c.replaces = static_cast<uint32_t>(replaces);
    for (uint64_t i = 0; i < n; ++i) {
      std::string_view id;
      (void)rd.GetBytes(ObjectId::kSize, &id);
      c.samples.push_back(ObjectId::FromBytes(id));
    }
    c.bytes = std::string(rd.rest());
    return c;
  }
  MV_ASSIGN_OR_RETURN(c.bytes, mailvault::Open(key, DictionaryAad(r.dictionary_id), r.box));
  return c;
}

std::string EncodeSealBody(const SealRecord& r) {
  ByteWriter w;
  w.PutU64(r.record_count);
  w.PutBytes(r.sha256);
  return w.Take();
}

Result<SealRecord> DecodeSealBody(std::string_view body) {
  if (body.size() != 8 + 32) return Corruption("seal record has the wrong size");
  return SealRecord{DecodeU64(body.data()), std::string(body.substr(8))};
}

std::string MessageAad(const MessageRecord& r) {
  ByteWriter w;
  w.PutBytes("mailvault message v1");
  w.PutBytes(r.id.bytes());
  w.PutU32(r.dictionary_id);
  w.PutU64(r.raw_size);
  w.PutU32(r.block_index);
  return w.Take();
}
std::string DataKeyAad(const ObjectId& id) { return "mailvault data key v1" + std::string(id.bytes()); }
std::string EnvelopeAad(const ObjectId& id) { return "mailvault envelope v1" + std::string(id.bytes()); }
std::string DictionaryAad(uint32_t dictionary_id) {
  ByteWriter w;
  w.PutBytes("mailvault dictionary v1");
  w.PutU32(dictionary_id);
  return w.Take();
}

RecordScanner::RecordScanner(std::string_view pack_bytes, uint64_t start_offset, uint64_t base)
    : data_(pack_bytes), base_(base), pos_(start_offset - base) {}

bool RecordScanner::Next(RawRecord* rec) {
  if (pos_ >= data_.size()) return false;
  Result<RawRecord> r = ParseFramedRecord(data_.substr(pos_), base_ + pos_);
  if (!r.ok()) {
    error_ = r.error().message();
    return false;
  }
  error_.clear();
  *rec = *r;
  pos_ += rec->length;
  return true;
}

namespace {
// Could these bytes be the start of a frame the writer was still appending? Every byte that is
// present must be what a writer puts there: the magic, a known type, zero flags and reserved
// bytes, and a length the format allows.
bool PlausibleFrameStart(std::string_view b) {
  char magic[4];
  EncodeU32(magic, kRecordMagic);
  for (size_t i = 0; i < 4 && i < b.size(); ++i) {
    if (b[i] != magic[i]) return false;
  }
  if (b.size() > 4 && (static_cast<uint8_t>(b[4]) < 1 || static_cast<uint8_t>(b[4]) > kMaxRecordType)) return false;
  if (b.size() > 5 && b[5] != 0 && b[5] != static_cast<char>(kRecordFlagKeyed)) return false;
  for (size_t i = 6; i < 8 && i < b.size(); ++i) {
    if (b[i] != 0) return false;
  }
  if (b.size() >= kRecordHeaderSize && DecodeU32(b.data() + 8) > kMaxRecordBody) return false;
  return true;
}
}  // namespace

bool RecordScanner::torn() const {
  if (pos_ >= data_.size()) return false;
  std::string_view rest = data_.substr(pos_);
  if (!PlausibleFrameStart(rest)) return false;
  const size_t overhead = rest.size() > 5 && rest[5] == static_cast<char>(kRecordFlagKeyed) ? kKeyedRecordOverhead : kRecordOverhead;
  if (rest.size() >= kRecordHeaderSize && overhead + static_cast<uint64_t>(DecodeU32(rest.data() + 8)) <= rest.size()) {
    return false;  // the whole frame is present, and wrong: damage
  }
  // A complete frame whose length field alone was damaged: with the length that reaches
  // exactly to the end, its CRC checks out. That record was written whole: not torn.
  if (rest.size() >= overhead) {
    std::string patched(rest.substr(0, rest.size() - kRecordTrailerSize));
    EncodeU32(patched.data() + 8, static_cast<uint32_t>(rest.size() - overhead));
    if (Crc32c(patched) == DecodeU32(rest.data() + rest.size() - kRecordTrailerSize)) return false;
  }
  // A valid frame after it means the length was damaged, not that the write was cut short.
  return FindFrame(pos_ + 1) == data_.size();
}

size_t RecordScanner::FindFrame(size_t from) const {
  char magic[4];
  EncodeU32(magic, kRecordMagic);
  std::string_view needle(magic, 4);
  for (size_t at = from; at < data_.size();) {
    size_t hit = data_.find(needle, at);
    if (hit == std::string_view::npos) break;
    if (ParseFramedRecord(data_.substr(hit), base_ + hit).ok()) return hit;
    at = hit + 1;
  }
  return data_.size();
}

RecordScanner::Damage RecordScanner::Skip() {
  Damage d;
  d.begin = base_ + pos_;
  d.why = error_;
  pos_ = FindFrame(pos_ + 1);
  d.end = base_ + pos_;
  error_.clear();
  return d;
}

Result<RawRecord> ParseFramedRecord(std::string_view b, uint64_t offset) {
  auto where = [&] { return "record at offset " + std::to_string(offset) + ": "; };
  if (b.size() < kRecordHeaderSize) return Corruption(where() + "truncated header");
  if (DecodeU32(b.data()) != kRecordMagic) return Corruption(where() + "bad record magic");
  uint32_t len = DecodeU32(b.data() + 8);
  if (len > kMaxRecordBody) return Corruption(where() + "declared length " + std::to_string(len) + " is impossible");
  const uint8_t flags = static_cast<uint8_t>(b[5]);
  if (flags != 0 && flags != kRecordFlagKeyed) return Corruption(where() + "unknown record flags " + std::to_string(flags));
  const bool keyed = flags == kRecordFlagKeyed;
  const size_t overhead = keyed ? kKeyedRecordOverhead : kRecordOverhead;
  if (b.size() < overhead + len) return Corruption(where() + "truncated (declared length runs past the end)");
  const size_t crc_at = overhead - kRecordTrailerSize + len;
  if (Crc32c(b.substr(0, crc_at)) != DecodeU32(b.data() + crc_at)) return Corruption(where() + "checksum mismatch");
  uint8_t type = static_cast<uint8_t>(b[4]);
  if (type < 1 || type > kMaxRecordType) return Corruption(where() + "unknown record type " + std::to_string(type));
  RawRecord r;
  r.type = static_cast<RecordType>(type);
  r.offset = offset;
  r.length = static_cast<uint32_t>(overhead + len);
  r.body = b.substr(kRecordHeaderSize, len);
  r.keyed = keyed;
  r.head_and_body = b.substr(0, kRecordHeaderSize + len);
  if (keyed) {
    r.sequence = DecodeU32(b.data() + kRecordHeaderSize + len);
    r.mac = b.substr(kRecordHeaderSize + len + 4, kRecordMacSize);
  }
  return r;
}

std::string PackFileName(uint64_t n) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%08llu.pack", static_cast<unsigned long long>(n));
  return buf;
}

}  // namespace mailvault
