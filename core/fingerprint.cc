#include "core/fingerprint.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "core/bytes.h"

namespace mailvault {

ObjectId ObjectId::FromBytes(std::string_view b) {
  ObjectId id;
  std::memcpy(id.bytes_.data(), b.data(), kSize);
  return id;
}

std::optional<ObjectId> ObjectId::FromHex(std::string_view hex) {
  std::string raw;
  if (hex.size() != 2 * kSize || !HexDecode(hex, &raw)) return std::nullopt;
  return FromBytes(raw);
}

ObjectId ObjectId::Of(std::string_view content) { return FromBytes(Sha256Of(content)); }

std::string ObjectId::Hex() const { return HexEncode(bytes()); }

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr);
}
Sha256::~Sha256() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }
void Sha256::Update(std::string_view data) {
  EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data.data(), data.size());
}
std::string Sha256::Final() {
  std::string out(32, '\0');
  unsigned int n = 0;
  EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), reinterpret_cast<unsigned char*>(out.data()), &n);
  return out;
}

std::string Sha256Of(std::string_view data) {
  std::string out(32, '\0');
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(),
         reinterpret_cast<unsigned char*>(out.data()));
  return out;
}

}  // namespace mailvault
