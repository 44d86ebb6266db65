#include "vault/crypto.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "tests/test_util.h"

namespace mailvault {
namespace {

TEST(CryptoTest, SealOpensWithTheSameKeyAndAad) {
  SecretKey k = SecretKey::Random();
  std::string box;
  Seal(k, "aad", "secret message", &box);
  EXPECT_EQ(box.size(), 14 + kSealOverhead);
  EXPECT_EQ(box.find("secret"), std::string::npos);
  Result<std::string> plain = Open(k, "aad", box);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(*plain, "secret message");
}

TEST(CryptoTest, EveryTamperingFailsAuthentication) {
  SecretKey k = SecretKey::Random();
  std::string box;
  Seal(k, "aad", "secret message", &box);
  for (size_t i = 0; i < box.size(); ++i) {
    std::string bad = box;
    bad[i] ^= 0x01;
    EXPECT_FALSE(Open(k, "aad", bad).ok()) << "flip at byte " << i;
  }
  EXPECT_FALSE(Open(k, "other aad", box).ok());
  EXPECT_FALSE(Open(SecretKey::Random(), "aad", box).ok());
  EXPECT_FALSE(Open(k, "aad", box.substr(0, 20)).ok());
}

TEST(CryptoTest, NoncesAreUnique) {
  SecretKey k = SecretKey::Random();
  std::string a, b;
  Seal(k, "", "same", &a);
  Seal(k, "", "same", &b);
  EXPECT_NE(a.substr(0, kNonceSize), b.substr(0, kNonceSize));
  EXPECT_NE(a, b);
}

TEST(CryptoTest, HkdfSeparatesPurposes) {
  SecretKey m = SecretKey::Random();
  VaultKeys k = VaultKeys::Derive(m, "0123456789abcdef");
  EXPECT_NE(k.wrap.view(), k.catalog.view());
  EXPECT_NE(k.catalog.view(), k.dictionary.view());
  EXPECT_EQ(VaultKeys::Derive(m, "0123456789abcdef").wrap.view(), k.wrap.view());
  EXPECT_NE(VaultKeys::Derive(m, "fedcba9876543210").wrap.view(), k.wrap.view());
}

TEST(CryptoTest, KeyFileRoundTripAndMode) {
  testing::TempDir dir;
  std::string path = dir / "master.key";
  SecretKey k = SecretKey::Random();
  ASSERT_TRUE(KeyFile::Create(path, k).ok());
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  Result<SecretKey> back = KeyFile::Read(path);
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  EXPECT_EQ(back->view(), k.view());
  EXPECT_EQ(KeyFile::Create(path, k).error().code(), ErrorCode::kAlreadyExists);
  ::chmod(path.c_str(), 0644);
  Result<SecretKey> loose = KeyFile::Read(path);
  ASSERT_FALSE(loose.ok());
  EXPECT_NE(loose.error().message().find("chmod 600"), std::string::npos);
}

TEST(CryptoTest, KeyFileRejectsGarbage) {
  EXPECT_EQ(KeyFile::Parse("hello\n", "f").error().code(), ErrorCode::kBadKey);
  EXPECT_EQ(KeyFile::Parse("mailvault-key v1\nkey: c2hvcnQ=\n", "f").error().code(), ErrorCode::kBadKey);
  EXPECT_EQ(KeyFile::Parse("mailvault-key v1\n", "f").error().code(), ErrorCode::kBadKey);
}

TEST(CryptoTest, KeyslotOpensOnlyWithThePassphrase) {
  SecretKey m = SecretKey::Random();
  ScryptParams fast{1 << 10, 8, 1};
  std::string slot = Keyslot::Create(m, "correct horse battery", fast);
  Result<SecretKey> ok = Keyslot::Unlock(slot, "correct horse battery");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->view(), m.view());
  Result<SecretKey> bad = Keyslot::Unlock(slot, "wrong horse");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), ErrorCode::kBadKey);
}

}  // namespace
}  // namespace mailvault
