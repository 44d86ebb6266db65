#include "vault/purposes.h"
#include "vault/crypto.h"

#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include "core/bytes.h"
#include "core/file_util.h"

namespace mailvault {

SecretKey::SecretKey(std::string_view b) { std::memcpy(bytes_.data(), b.data(), kKeySize); }
SecretKey::~SecretKey() { OPENSSL_cleanse(bytes_.data(), bytes_.size()); }

SecretKey SecretKey::Random() { return SecretKey(RandomBytes(kKeySize)); }

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    // Without randomness there is no safe nonce; continuing would be worse than stopping.
    std::abort();
  }
  return out;
}

namespace {
struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;

const unsigned char* U8(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }
}  // namespace

void Seal(const SecretKey& key, std::string_view aad, std::string_view plaintext, std::string* out) {
  std::string nonce = RandomBytes(kNonceSize);
  size_t start = out->size();
  out->resize(start + kNonceSize + plaintext.size() + kTagSize);
  auto* dst = reinterpret_cast<unsigned char*>(out->data() + start);
  std::memcpy(dst, nonce.data(), kNonceSize);

  CipherCtx ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  bool ok = ctx && EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), U8(nonce)) == 1 &&
            (aad.empty() || EVP_EncryptUpdate(ctx.get(), nullptr, &len, U8(aad), static_cast<int>(aad.size())) == 1) &&
            EVP_EncryptUpdate(ctx.get(), dst + kNonceSize, &len, U8(plaintext), static_cast<int>(plaintext.size())) == 1 &&
            EVP_EncryptFinal_ex(ctx.get(), dst + kNonceSize + len, &len) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagSize, dst + kNonceSize + plaintext.size()) == 1;
  if (!ok) std::abort();  // only allocation failure gets here
}

Result<std::string> Open(const SecretKey& key, std::string_view aad, std::string_view box) {
  if (box.size() < kSealOverhead) return Corruption("encrypted box is shorter than its nonce and tag");
  size_t n = box.size() - kSealOverhead;
  std::string out(n, '\0');
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  std::string tag(box.substr(kNonceSize + n, kTagSize));
  bool ok = ctx && EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), U8(box)) == 1 &&
            (aad.empty() || EVP_DecryptUpdate(ctx.get(), nullptr, &len, U8(aad), static_cast<int>(aad.size())) == 1) &&
            EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &len, U8(box) + kNonceSize,
                              static_cast<int>(n)) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagSize, tag.data()) == 1 &&
            EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(out.data()) + len, &len) == 1;
  if (!ok) return Corruption("authentication failed (the ciphertext was altered, or the key is wrong)");
  return out;
}

SecretKey DeriveKey(const SecretKey& master, std::string_view salt, std::string_view info) {
  unsigned char out[kKeySize];
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> pctx(EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr),
                                                                     EVP_PKEY_CTX_free);
  size_t outlen = sizeof out;
  bool ok = pctx && EVP_PKEY_derive_init(pctx.get()) == 1 &&
            EVP_PKEY_CTX_set_hkdf_md(pctx.get(), EVP_sha256()) == 1 &&
            EVP_PKEY_CTX_set1_hkdf_salt(pctx.get(), U8(salt), static_cast<int>(salt.size())) == 1 &&
            EVP_PKEY_CTX_set1_hkdf_key(pctx.get(), master.data(), kKeySize) == 1 &&
            EVP_PKEY_CTX_add1_hkdf_info(pctx.get(), U8(info), static_cast<int>(info.size())) == 1 &&
            EVP_PKEY_derive(pctx.get(), out, &outlen) == 1;
  if (!ok) std::abort();
  SecretKey k(std::string_view(reinterpret_cast<char*>(out), kKeySize));
  OPENSSL_cleanse(out, sizeof out);
  return k;
}

std::string HashPassword(std::string_view password, const ScryptParams& params) {
  std::string salt = RandomBytes(16);
  Result<SecretKey> k = ScryptDerive(password, salt, params);
  if (!k.ok()) std::abort();  // the default parameters are valid; only a bug gets here
  int ln = 0;
  while ((1ull << ln) < params.n) ++ln;
  return "$scrypt$ln=" + std::to_string(ln) + ",r=" + std::to_string(params.r) + ",p=" + std::to_string(params.p) + "$" +
         Base64Encode(salt) + "$" + Base64Encode(k->view());
}

bool VerifyPassword(std::string_view password, std::string_view hash) {
  unsigned ln = 0, r = 0, p = 0;
  char salt64[128], hash64[128];
  std::string h(hash);
  if (std::sscanf(h.c_str(), "$scrypt$ln=%u,r=%u,p=%u$%127[^$]$%127s", &ln, &r, &p, salt64, hash64) != 5) return false;
  if (ln < 1 || ln > 22 || r < 1 || r > 32 || p < 1 || p > 16) return false;
  std::string salt, expected;
  if (!Base64Decode(salt64, &salt) || !Base64Decode(hash64, &expected) || expected.size() != kKeySize) return false;
  Result<SecretKey> k = ScryptDerive(password, salt, ScryptParams{1ull << ln, r, p});
  return k.ok() && CRYPTO_memcmp(k->data(), expected.data(), kKeySize) == 0;
}

Result<SecretKey> ScryptDerive(std::string_view passphrase, std::string_view salt, const ScryptParams& p) {
  unsigned char out[kKeySize];
  if (EVP_PBE_scrypt(passphrase.data(), passphrase.size(), U8(salt), salt.size(), p.n, p.r, p.p,
                     1ull << 30, out, sizeof out) != 1) {
    return InvalidArgument("scrypt refused its parameters (N must be a power of two; memory at most 1 GiB)");
  }
  SecretKey k(std::string_view(reinterpret_cast<char*>(out), kKeySize));
  OPENSSL_cleanse(out, sizeof out);
  return k;
}

VaultKeys VaultKeys::Derive(const SecretKey& master, std::string_view vault_id) {
  return VaultKeys{master, DeriveKey(master, vault_id, purpose::kWrap),
                   DeriveKey(master, vault_id, purpose::kCatalog),
                   DeriveKey(master, vault_id, purpose::kDictionary)};
}

std::string VaultKeys::CheckValue(const SecretKey& master, std::string_view vault_id) {
  std::string msg = "mailvault key check";
  msg.append(vault_id);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), master.data(), kKeySize, U8(msg), msg.size(), mac, &len);
  return HexEncode(std::string_view(reinterpret_cast<char*>(mac), 16));
}

// ---- key file ----

static constexpr std::string_view kKeyFileMagic = "mailvault-key v1";

std::string KeyFile::Format(const SecretKey& key) {
  return std::string(kKeyFileMagic) +
         "\n# The master key of a mailvault vault. Keep it secret, and back it up apart from the vault:\n"
         "# without it nothing in the vault can be read.\n"
         "key: " + Base64Encode(key.view()) + "\n";
}

Result<SecretKey> KeyFile::Parse(std::string_view text, const std::string& path) {
  std::istringstream in{std::string(text)};
  std::string line;
  if (!std::getline(in, line) || line != kKeyFileMagic) {
    return Error(ErrorCode::kBadKey, path + " is not a mailvault key file (its first line must be \"mailvault-key v1\")");
  }
  while (std::getline(in, line)) {
    if (line.rfind("key: ", 0) != 0) continue;
    std::string raw;
    if (!Base64Decode(line.substr(5), &raw) || raw.size() != kKeySize) {
      return Error(ErrorCode::kBadKey, path + ": the key line does not hold 32 base64-encoded bytes");
    }
    return SecretKey(raw);
  }
  return Error(ErrorCode::kBadKey, path + " has no \"key:\" line");
}

Result<SecretKey> KeyFile::Read(const std::string& path) {
  // The mode is checked on the open descriptor before a byte is read (ReadPrivateFile).
  Result<std::string> text = ReadPrivateFile(path, 64 << 10);
  if (!text.ok()) {
    if (text.error().code() == ErrorCode::kInvalidArgument) return Error(ErrorCode::kBadKey, text.error().message());
    return text.error();
  }
  return Parse(*text, path);
}

Status KeyFile::Create(const std::string& path, const SecretKey& key) {
  return WriteNewFileDurably(path, Format(key), 0600);
}

// ---- passphrase keyslot ----

static constexpr std::string_view kKeyslotMagic = "mailvault-keyslot v1";
static constexpr std::string_view kKeyslotAad = "mailvault keyslot v1";

std::string Keyslot::Create(const SecretKey& master, std::string_view passphrase, const ScryptParams& params) {
  std::string salt = RandomBytes(16);
  Result<SecretKey> kek = ScryptDerive(passphrase, salt, params);
  std::string wrapped;
  Seal(*kek, kKeyslotAad, master.view(), &wrapped);
  return std::string(kKeyslotMagic) + "\nkdf: scrypt N=" + std::to_string(params.n) + " r=" + std::to_string(params.r) +
         " p=" + std::to_string(params.p) + "\nsalt: " + Base64Encode(salt) + "\nwrapped: " + Base64Encode(wrapped) + "\n";
}

Result<SecretKey> Keyslot::Unlock(std::string_view text, std::string_view passphrase) {
  std::istringstream in{std::string(text)};
  std::string line, salt, wrapped;
  ScryptParams p;
  bool have_kdf = false;
  if (!std::getline(in, line) || line != kKeyslotMagic) return Corruption("the vault's keyslot file is damaged (bad first line)");
  while (std::getline(in, line)) {
    unsigned long long n = 0;
    unsigned r = 0, pp = 0;
    if (std::sscanf(line.c_str(), "kdf: scrypt N=%llu r=%u p=%u", &n, &r, &pp) == 3) {
      p = {n, r, pp};
      have_kdf = true;
    } else if (line.rfind("salt: ", 0) == 0) {
      if (!Base64Decode(line.substr(6), &salt)) return Corruption("the vault's keyslot file is damaged (salt)");
    } else if (line.rfind("wrapped: ", 0) == 0) {
      if (!Base64Decode(line.substr(9), &wrapped)) return Corruption("the vault's keyslot file is damaged (wrapped key)");
    }
  }
  if (!have_kdf || salt.empty() || wrapped.size() != kKeySize + kSealOverhead) {
    return Corruption("the vault's keyslot file is incomplete");
  }
  MV_ASSIGN_OR_RETURN(SecretKey kek, ScryptDerive(passphrase, salt, p));
  Result<std::string> master = Open(kek, kKeyslotAad, wrapped);
  if (!master.ok()) return Error(ErrorCode::kBadKey, "the passphrase does not open this vault");
  return SecretKey(*master);
}

}  // namespace mailvault
