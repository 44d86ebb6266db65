#include "vault/crypto.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <future>

#include "core/file_util.h"
#include "recovery/restore.h"
#include "tests/test_util.h"
#include "vault/vault.h"

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


// ---- issue 13 item 9: secret files are checked on the descriptor that is read, before reading ----

std::string WriteWithMode(const std::string& path, const std::string& text, mode_t mode) {
  std::ofstream(path) << text;
  ::chmod(path.c_str(), mode);
  return path;
}

// Runs f on a thread; if it has not returned within a few seconds (blocked opening a FIFO with
// no writer), opens the FIFO's write end to let it go and reports the hang.
template <typename F>
bool ReturnsPromptly(const std::string& fifo, F f) {
  auto done = std::async(std::launch::async, f);
  if (done.wait_for(std::chrono::seconds(3)) == std::future_status::ready) return true;
  int w = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
  done.wait();
  if (w >= 0) ::close(w);
  return false;
}

TEST(SecretFileTest, KeyFileModeIsCheckedBeforeItsContentsAreRead) {
  testing::TempDir dir;
  // Group/other-readable and too large to be a key file: refused for its mode, which is
  // decided before anything is read (the size limit, a property of the contents, never comes up).
  std::string loose = WriteWithMode(dir / "loose.key", std::string(100 << 10, 'x'), 0644);
  Result<SecretKey> r = KeyFile::Read(loose);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kBadKey) << r.error().ToString();
  EXPECT_NE(r.error().message().find("chmod 600"), std::string::npos) << r.error().message();
  // Group-readable only: refused too; a valid key file's contents are not used.
  SecretKey k = SecretKey::Random();
  std::string group = WriteWithMode(dir / "group.key", KeyFile::Format(k), 0640);
  r = KeyFile::Read(group);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("mode 640"), std::string::npos) << r.error().message();
  // 0600: accepted.
  std::string tight = WriteWithMode(dir / "tight.key", KeyFile::Format(k), 0600);
  r = KeyFile::Read(tight);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->view(), k.view());
}

TEST(SecretFileTest, KeyFileThroughASymlinkIsJudgedByTheFileItNames) {
  // Symbolic links are followed (secret mounts are often links); the link's own mode (0777)
  // means nothing, the opened file's mode decides.
  testing::TempDir dir;
  SecretKey k = SecretKey::Random();
  std::string tight = WriteWithMode(dir / "tight.key", KeyFile::Format(k), 0600);
  std::string loose = WriteWithMode(dir / "loose.key", KeyFile::Format(k), 0644);
  ASSERT_EQ(::symlink(tight.c_str(), (dir / "to-tight").c_str()), 0);
  ASSERT_EQ(::symlink(loose.c_str(), (dir / "to-loose").c_str()), 0);
  Result<SecretKey> r = KeyFile::Read(dir / "to-tight");
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->view(), k.view());
  r = KeyFile::Read(dir / "to-loose");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("chmod 600"), std::string::npos) << r.error().message();
}

TEST(SecretFileTest, KeyFileThatIsNotARegularFileIsRefused) {
  testing::TempDir dir;
  ASSERT_EQ(::mkdir((dir / "d").c_str(), 0700), 0);
  Result<SecretKey> r = KeyFile::Read(dir / "d");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kBadKey) << r.error().ToString();
  EXPECT_NE(r.error().message().find("not a regular file"), std::string::npos) << r.error().message();
  // A FIFO (mode 0600, nobody writing): refused at once, not waited on.
  const std::string fifo = dir / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  Result<SecretKey> f = Error(ErrorCode::kInternal, "not run");
  EXPECT_TRUE(ReturnsPromptly(fifo, [&] { f = KeyFile::Read(fifo); })) << "KeyFile::Read blocked on a FIFO";
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.error().message().find("not a regular file"), std::string::npos) << f.error().message();
}

// A line naming a mailbox must name an address: "alice l p" was accepted and then matched
// nobody, so the restore failed later with "no credentials for alice@…" instead of here.
TEST(SecretFileTest, RestoreAuthFileRefusesALineWithoutAnAddress) {
  testing::TempDir dir;
  Result<recovery::Credentials> c = recovery::ReadCredentials(WriteWithMode(dir / "noat", "a@x l p\nalice l2 p2\n", 0600));
  ASSERT_FALSE(c.ok()) << "a line whose first field has no '@' was accepted";
  EXPECT_EQ(c.error().code(), ErrorCode::kInvalidArgument) << c.error().ToString();
  EXPECT_NE(c.error().message().find(":2: "), std::string::npos) << c.error().message();
  EXPECT_NE(c.error().message().find("alice"), std::string::npos) << c.error().message();
}

TEST(SecretFileTest, RestoreAuthFileIsCheckedOnItsDescriptor) {
  testing::TempDir dir;
  Result<recovery::Credentials> c = recovery::ReadCredentials(WriteWithMode(dir / "loose", "a@x l p\n", 0644));
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message().find("chmod 600"), std::string::npos) << c.error().message();
  c = recovery::ReadCredentials(WriteWithMode(dir / "group", "a@x l p\n", 0660));
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message().find("chmod 600"), std::string::npos) << c.error().message();
  c = recovery::ReadCredentials(WriteWithMode(dir / "tight", "a@x l p\n", 0600));
  ASSERT_TRUE(c.ok()) << c.error().ToString();
  ASSERT_EQ(::symlink((dir / "tight").c_str(), (dir / "link").c_str()), 0);
  c = recovery::ReadCredentials(dir / "link");
  ASSERT_TRUE(c.ok()) << c.error().ToString();
  // A directory (mode 0700 passes a mode check by path) is not a file of credentials.
  ASSERT_EQ(::mkdir((dir / "d").c_str(), 0700), 0);
  c = recovery::ReadCredentials(dir / "d");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code(), ErrorCode::kInvalidArgument) << c.error().ToString();
  EXPECT_NE(c.error().message().find("not a regular file"), std::string::npos) << c.error().message();
  // A FIFO of mode 0600 with nobody writing: refused at once, not waited on forever.
  const std::string fifo = dir / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  Result<recovery::Credentials> f = Error(ErrorCode::kInternal, "not run");
  EXPECT_TRUE(ReturnsPromptly(fifo, [&] { f = recovery::ReadCredentials(fifo); })) << "ReadCredentials blocked on a FIFO";
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.error().message().find("not a regular file"), std::string::npos) << f.error().message();
}

// ---- issue 13 item 9: scrypt at OWASP's advice, a 12-character minimum master passphrase ----

TEST(CryptoTest, DefaultScryptIsAtLeastOwaspsAdvice) {
  ScryptParams d;
  EXPECT_GE(d.n, 1u << 17);
  EXPECT_GE(d.r, 8u);
  EXPECT_GE(d.p, 1u);
  // The defaults run (EVP_PBE_scrypt's memory cap allows them) and say so in the hash.
  std::string h = HashPassword("correct horse battery staple");
  EXPECT_EQ(h.rfind("$scrypt$ln=17,r=8,p=1$", 0), 0u) << h;
  EXPECT_TRUE(VerifyPassword("correct horse battery staple", h));
  // Hashes and keyslots made with the old default keep verifying: their parameters are stored.
  std::string old = HashPassword("old password", ScryptParams{1 << 15, 8, 1});
  EXPECT_EQ(old.rfind("$scrypt$ln=15,r=8,p=1$", 0), 0u) << old;
  EXPECT_TRUE(VerifyPassword("old password", old));
  SecretKey m = SecretKey::Random();
  std::string slot = Keyslot::Create(m, "an old passphrase", ScryptParams{1 << 15, 8, 1});
  EXPECT_NE(slot.find("kdf: scrypt N=32768 r=8 p=1"), std::string::npos) << slot;
  Result<SecretKey> back = Keyslot::Unlock(slot, "an old passphrase");
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  EXPECT_EQ(back->view(), m.view());
}

TEST(CryptoTest, NewMasterPassphrasesHaveAtLeastTwelveCharacters) {
  testing::TempDir dir;
  KeySource keys;
  keys.passphrase = "elevenchars";  // 11
  bool created = false;
  Status s = Vault::Init(dir / "v", keys, VaultOptions{}, &created);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(s.error().message().find("at least 12"), std::string::npos) << s.error().message();
}

}  // namespace
}  // namespace mailvault
