// Little-endian fixed-width integers, LEB128 varints and length-prefixed strings: the building
// blocks of every on-disk record (see docs/formats.md). ByteReader never reads past its input;
// every Get* returns false on truncation so parsers of outside bytes can report corruption.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mailvault {

class ByteWriter {
 public:
  void PutU8(uint8_t v) { buf_.push_back(static_cast<char>(v)); }
  void PutU16(uint16_t v) { PutFixed(v, 2); }
  void PutU32(uint32_t v) { PutFixed(v, 4); }
  void PutU64(uint64_t v) { PutFixed(v, 8); }
  void PutVarint(uint64_t v);
  void PutBytes(std::string_view b) { buf_.append(b.data(), b.size()); }
  // Varint length, then the bytes.
  void PutString(std::string_view s) {
    PutVarint(s.size());
    PutBytes(s);
  }

  std::string& buffer() { return buf_; }
  std::string Take() { return std::move(buf_); }
  size_t size() const { return buf_.size(); }

 private:
  void PutFixed(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) buf_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  std::string buf_;
};

class ByteReader {
 public:
  explicit ByteReader(std::string_view in) : in_(in) {}

  [[nodiscard]] bool GetU8(uint8_t* v);
  [[nodiscard]] bool GetU16(uint16_t* v);
  [[nodiscard]] bool GetU32(uint32_t* v);
  [[nodiscard]] bool GetU64(uint64_t* v);
  [[nodiscard]] bool GetVarint(uint64_t* v);
  [[nodiscard]] bool GetBytes(size_t n, std::string_view* out);
  // A string of at most max_len bytes.
  [[nodiscard]] bool GetString(std::string_view* out, size_t max_len = 1 << 20);

  size_t remaining() const { return in_.size() - pos_; }
  size_t position() const { return pos_; }
  std::string_view rest() const { return in_.substr(pos_); }

 private:
  [[nodiscard]] bool GetFixed(uint64_t* v, int n);
  std::string_view in_;
  size_t pos_ = 0;
};

uint32_t DecodeU32(const char* p);
uint64_t DecodeU64(const char* p);
void EncodeU32(char* p, uint32_t v);
void EncodeU64(char* p, uint64_t v);
// Big-endian, for RocksDB keys that must sort numerically.
std::string BigEndian64(uint64_t v);
uint64_t FromBigEndian64(std::string_view s);

std::string HexEncode(std::string_view bytes);
// False on odd length or a non-hex digit.
[[nodiscard]] bool HexDecode(std::string_view hex, std::string* out);
std::string Base64Encode(std::string_view bytes);
[[nodiscard]] bool Base64Decode(std::string_view b64, std::string* out);

// CRC-32C (Castagnoli), the frame checksum of pack records: it catches torn writes and
// flipped bits in the framing; the content itself is authenticated by AES-GCM.
uint32_t Crc32c(std::string_view data, uint32_t crc = 0);

}  // namespace mailvault
