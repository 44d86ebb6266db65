// Authenticated encryption and key management for the vault (BLUEPRINT decision 5).
//
//   master key (32 random bytes) ── from a key file, or unwrapped from the vault's keyslot by a
//   │                               passphrase through scrypt
//   ├─ HKDF "wrap"        wraps each object's random data key (AES-256-GCM, AAD = object id)
//   ├─ HKDF "catalog"     encrypts catalog values (AAD = the RocksDB key)
//   └─ HKDF "dictionary"  encrypts compression dictionaries (trained from mail, so secret)
//
// Every encryption draws a fresh 96-bit nonce from the OS CSPRNG. A sealed box is
// nonce (12) || ciphertext || tag (16). See docs/formats.md.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/result.h"

namespace mailvault {

constexpr size_t kKeySize = 32;
constexpr size_t kNonceSize = 12;
constexpr size_t kTagSize = 16;
constexpr size_t kSealOverhead = kNonceSize + kTagSize;

// 32 secret bytes, wiped from memory when destroyed.
class SecretKey {
 public:
  SecretKey() { bytes_.fill(0); }
  explicit SecretKey(std::string_view b);  // REQUIRES: b.size() == kKeySize
  ~SecretKey();
  SecretKey(const SecretKey&) = default;
  SecretKey& operator=(const SecretKey&) = default;

  static SecretKey Random();
  const uint8_t* data() const { return bytes_.data(); }
  std::string_view view() const { return {reinterpret_cast<const char*>(bytes_.data()), kKeySize}; }

 private:
  std::array<uint8_t, kKeySize> bytes_;
};

std::string RandomBytes(size_t n);

// AES-256-GCM. Seal appends nonce || ciphertext || tag to *out.
void Seal(const SecretKey& key, std::string_view aad, std::string_view plaintext, std::string* out);
// Fails with kCorruption when the box was altered, the AAD differs or the key is wrong.
Result<std::string> Open(const SecretKey& key, std::string_view aad, std::string_view box);

// HKDF-SHA256.
SecretKey DeriveKey(const SecretKey& master, std::string_view salt, std::string_view info);

// The default follows OWASP's advice (N = 2^17, r = 8, p = 1: 128 MiB, about 0.4 s here). Each
// hash and keyslot stores the parameters it was made with, so ones made under the earlier
// default (2^15) keep verifying.
struct ScryptParams {
  uint64_t n = 1 << 17;
  uint32_t r = 8;
  uint32_t p = 1;
};
Result<SecretKey> ScryptDerive(std::string_view passphrase, std::string_view salt, const ScryptParams& params);

// Password storage for people and services that log in (SMTP AUTH, the API):
// "$scrypt$ln=17,r=8,p=1$<salt base64>$<hash base64>", a fresh 16-byte salt each time.
std::string HashPassword(std::string_view password, const ScryptParams& params = {});
// Constant-time comparison; false for a malformed hash.
bool VerifyPassword(std::string_view password, std::string_view hash);

// The keys a vault works with, all derived from the master key.
struct VaultKeys {
  SecretKey master;
  SecretKey wrap;
  SecretKey catalog;
  SecretKey dictionary;
  static VaultKeys Derive(const SecretKey& master, std::string_view vault_id);
  // A short value stored in the vault so that a wrong key is recognised before anything is
  // decrypted: HMAC-SHA256(master, "mailvault key check" || vault id), first 16 bytes, hex.
  static std::string CheckValue(const SecretKey& master, std::string_view vault_id);
};

// The key file: a small text file, mode 0600, holding the master key. Format in docs/formats.md.
//
//   mailvault-key v1
//   key: <base64 of 32 bytes>
struct KeyFile {
  static Result<SecretKey> Read(const std::string& path);
  // Creates the file with mode 0600, failing if it already exists; fsyncs it and its directory.
  static Status Create(const std::string& path, const SecretKey& key);
  static std::string Format(const SecretKey& key);
  static Result<SecretKey> Parse(std::string_view text, const std::string& path);
};

// A passphrase keyslot: the master key wrapped by a key that scrypt derives from a passphrase.
//
//   mailvault-keyslot v1
//   kdf: scrypt N=131072 r=8 p=1
//   salt: <base64 16 bytes>
//   wrapped: <base64 of the sealed master key, AAD "mailvault keyslot v1">
struct Keyslot {
  static std::string Create(const SecretKey& master, std::string_view passphrase, const ScryptParams& params);
  static Result<SecretKey> Unlock(std::string_view text, std::string_view passphrase);
};

}  // namespace mailvault
