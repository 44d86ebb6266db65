#include "core/bytes.h"

#include <array>

namespace mailvault {

void ByteWriter::PutVarint(uint64_t v) {
  while (v >= 0x80) {
    buf_.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  buf_.push_back(static_cast<char>(v));
}

bool ByteReader::GetFixed(uint64_t* v, int n) {
  if (remaining() < static_cast<size_t>(n)) return false;
  uint64_t r = 0;
  for (int i = 0; i < n; ++i) r |= static_cast<uint64_t>(static_cast<uint8_t>(in_[pos_ + i])) << (8 * i);
  pos_ += n;
  *v = r;
  return true;
}

bool ByteReader::GetU8(uint8_t* v) {
  uint64_t t;
  if (!GetFixed(&t, 1)) return false;
  *v = static_cast<uint8_t>(t);
  return true;
}
bool ByteReader::GetU16(uint16_t* v) {
  uint64_t t;
  if (!GetFixed(&t, 2)) return false;
  *v = static_cast<uint16_t>(t);
  return true;
}
bool ByteReader::GetU32(uint32_t* v) {
  uint64_t t;
  if (!GetFixed(&t, 4)) return false;
  *v = static_cast<uint32_t>(t);
  return true;
}
bool ByteReader::GetU64(uint64_t* v) { return GetFixed(v, 8); }

bool ByteReader::GetVarint(uint64_t* v) {
  uint64_t r = 0;
  for (int shift = 0; shift <= 63; shift += 7) {
    if (pos_ >= in_.size()) return false;
    uint8_t b = static_cast<uint8_t>(in_[pos_++]);
    if (shift == 63 && b > 1) return false;  // would overflow 64 bits
    r |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = r;
      return true;
    }
  }
  return false;
}

bool ByteReader::GetBytes(size_t n, std::string_view* out) {
  if (remaining() < n) return false;
  *out = in_.substr(pos_, n);
  pos_ += n;
  return true;
}

bool ByteReader::GetString(std::string_view* out, size_t max_len) {
  uint64_t n;
  if (!GetVarint(&n) || n > max_len) return false;
  return GetBytes(static_cast<size_t>(n), out);
}

uint32_t DecodeU32(const char* p) {
  const auto* u = reinterpret_cast<const uint8_t*>(p);
  return u[0] | (u[1] << 8) | (u[2] << 16) | (static_cast<uint32_t>(u[3]) << 24);
}
uint64_t DecodeU64(const char* p) {
  return DecodeU32(p) | (static_cast<uint64_t>(DecodeU32(p + 4)) << 32);
}
void EncodeU32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
void EncodeU64(char* p, uint64_t v) {
  EncodeU32(p, static_cast<uint32_t>(v));
  EncodeU32(p + 4, static_cast<uint32_t>(v >> 32));
}

std::string BigEndian64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 7; i >= 0; --i) {
    s[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  return s;
}
uint64_t FromBigEndian64(std::string_view s) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8 && i < s.size(); ++i) v = (v << 8) | static_cast<uint8_t>(s[i]);
  return v;
}

std::string HexEncode(std::string_view bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

static int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool HexDecode(std::string_view hex, std::string* out) {
  if (hex.size() % 2) return false;
  std::string r;
  r.reserve(hex.size() / 2);
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = HexValue(hex[i]), lo = HexValue(hex[i + 1]);
    if (hi < 0 || lo < 0) return false;
    r.push_back(static_cast<char>(hi << 4 | lo));
  }
  *out = std::move(r);
  return true;
}

static const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string Base64Encode(std::string_view in) {
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t n = static_cast<uint8_t>(in[i]) << 16 | static_cast<uint8_t>(in[i + 1]) << 8 |
                 static_cast<uint8_t>(in[i + 2]);
    out += {kB64[n >> 18], kB64[(n >> 12) & 63], kB64[(n >> 6) & 63], kB64[n & 63]};
  }
  if (i + 1 == in.size()) {
    uint32_t n = static_cast<uint8_t>(in[i]) << 16;
    out += {kB64[n >> 18], kB64[(n >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    uint32_t n = static_cast<uint8_t>(in[i]) << 16 | static_cast<uint8_t>(in[i + 1]) << 8;
    out += {kB64[n >> 18], kB64[(n >> 12) & 63], kB64[(n >> 6) & 63], '='};
  }
  return out;
}

bool Base64Decode(std::string_view in, std::string* out) {
  std::string r;
  uint32_t acc = 0;
  int bits = 0;
  size_t pad = 0;
  for (char c : in) {
    if (c == '=') {
      ++pad;
      continue;
    }
    if (pad) return false;  // data after padding
    const char* p = std::char_traits<char>::find(kB64, 64, c);
    if (!p) return false;
    acc = (acc << 6) | static_cast<uint32_t>(p - kB64);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      r.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  if (pad > 2 || (in.size() % 4) != 0) return false;
  *out = std::move(r);
  return true;
}

static std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0x82f63b78u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}

uint32_t Crc32c(std::string_view data, uint32_t crc) {
  static const std::array<uint32_t, 256> kTable = MakeCrcTable();
  crc = ~crc;
  for (unsigned char c : data) crc = kTable[(crc ^ c) & 0xff] ^ (crc >> 8);
  return ~crc;
}

}  // namespace mailvault
