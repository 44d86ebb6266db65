// A message's identity: the SHA-256 of its original bytes (BLUEPRINT decision 3).
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace mailvault {

class ObjectId {
 public:
  static constexpr size_t kSize = 32;

  ObjectId() { bytes_.fill(0); }
  static ObjectId FromBytes(std::string_view b);  // REQUIRES: b.size() == kSize
  // Accepts the full 64-digit hex form.
  static std::optional<ObjectId> FromHex(std::string_view hex);
  static ObjectId Of(std::string_view content);  // SHA-256

  std::string_view bytes() const { return {reinterpret_cast<const char*>(bytes_.data()), kSize}; }
  std::string Hex() const;
  // The first 12 hex digits: what `list` prints; `show` accepts any unique prefix.
  std::string ShortHex() const { return Hex().substr(0, 12); }

  bool operator==(const ObjectId& o) const { return bytes_ == o.bytes_; }
  bool operator<(const ObjectId& o) const { return bytes_ < o.bytes_; }

 private:
  std::array<uint8_t, kSize> bytes_;
};

struct ObjectIdHash {
  size_t operator()(const ObjectId& id) const {
    size_t h;
    std::memcpy(&h, id.bytes().data(), sizeof h);
    return h;
  }
};

// Incremental SHA-256 (OpenSSL EVP) for streams too large to hold twice.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(std::string_view data);
  std::string Final();  // 32 bytes

 private:
  void* ctx_;
};

std::string Sha256Of(std::string_view data);

}  // namespace mailvault
