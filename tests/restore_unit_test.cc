// recovery/restore.h's inputs (the --to URL, ISO 8601 times, the auth file) and what the
// matching relies on: a message's decoded-part hashes do not change when IMAP carries it (CRLF
// line ends, a bare CR made a line end). The jobs themselves run against real servers in
// tests/recovery/restore_test.sh.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/message.h"
#include "recovery/imap_client.h"
#include "recovery/restore.h"

namespace mailvault::recovery {
namespace {

TEST(RestoreInputs, IsoTimesWithAndWithoutOffsets) {
  EXPECT_EQ(*ParseIsoTime("2026-11-25T10:00:00Z"), 1795600800);
  EXPECT_EQ(*ParseIsoTime("2026-11-25T10:00:00"), 1795600800);  // no offset: UTC
  EXPECT_EQ(*ParseIsoTime("2026-11-25T11:00:00+01:00"), 1795600800);
  EXPECT_EQ(*ParseIsoTime("2026-11-25T05:30:00-0430"), 1795600800);
  EXPECT_EQ(*ParseIsoTime("2026-11-25T10:00Z"), 1795600800);
  EXPECT_EQ(*ParseIsoTime("2026-11-25T10:00:00.750Z"), 1795600800);
  EXPECT_EQ(*ParseIsoTime("2026-11-25"), 1795564800);
  for (const char* bad : {"", "yesterday", "2026-13-01", "2026-11-25T25:00", "2026-11-25T10:00:00+1", "2026-11-25T10:00:00Zjunk",
                          "1795600800", "2026-11-25T10"}) {
    Result<int64_t> r = ParseIsoTime(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_NE(r.error().message().find("time"), std::string::npos) << r.error().message();
    }
  }
}

TEST(RestoreInputs, ImapUrls) {
  Result<ImapEndpoint> e = ParseImapUrl("imap://mail.example.test", false);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->host, "mail.example.test");
  EXPECT_EQ(e->port, 143);
  EXPECT_EQ(e->tls, ImapEndpoint::Tls::kStartTls);
  e = ParseImapUrl("imaps://[::1]:10993/", false);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->host, "::1");
  EXPECT_EQ(e->port, 10993);
  EXPECT_EQ(e->tls, ImapEndpoint::Tls::kImplicit);
  e = ParseImapUrl("imap://127.0.0.1:1430", true);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->tls, ImapEndpoint::Tls::kNone);
  // Plain IMAP would send the passwords in clear: loopback only.
  EXPECT_FALSE(ParseImapUrl("imap://mail.example.test", true).ok());
  for (const char* bad : {"mail.example.test", "http://x", "imap://", "imap://x:0", "imap://x:65536", "imap://x:12ab",
                          "imap://user:pw@x", "imap://x/INBOX"}) {
    EXPECT_FALSE(ParseImapUrl(bad, false).ok()) << bad;
  }
}

class AuthFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("mv-auth-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& text, mode_t mode = 0600) {
    std::string p = (dir_ / ("f" + std::to_string(++n_))).string();
    std::ofstream(p) << text;
    ::chmod(p.c_str(), mode);
    return p;
  }
  std::filesystem::path dir_;
  int n_ = 0;
};

TEST_F(AuthFile, PerUserLinesAndAnAdministrator) {
  Result<Credentials> c = ReadCredentials(Write("# restore identities\n\nAlice@Example.test alice s3cret with spaces\n* mvadmin adm1n\n"));
  ASSERT_TRUE(c.ok()) << c.error().message();
  Result<ImapCredentials> a = c->For("alice@example.test");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->login, "alice");
  EXPECT_EQ(a->password, "s3cret with spaces");
  EXPECT_EQ(a->as_user, "");
  Result<ImapCredentials> b = c->For("bob@example.test");  // no line of its own: the administrator acts as bob
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->login, "mvadmin");
  EXPECT_EQ(b->as_user, "bob@example.test");
}

TEST_F(AuthFile, MistakesAreNamedWithTheirLine) {
  Result<Credentials> c = ReadCredentials(Write("alice@example.test alice pw\n", 0644));
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message().find("chmod 600"), std::string::npos) << c.error().message();
  c = ReadCredentials(Write("alice@example.test alice\n"));
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message().find(":1: expected"), std::string::npos) << c.error().message();
  c = ReadCredentials(Write("a@x l p\na@x l2 p2\n"));
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message().find(":2: a@x is listed twice"), std::string::npos) << c.error().message();
  c = ReadCredentials(Write("* a p\n* b q\n"));
  EXPECT_FALSE(c.ok());
  c = ReadCredentials(Write("# nothing\n"));
  EXPECT_FALSE(c.ok());
  EXPECT_FALSE(ReadCredentials((dir_ / "missing").string()).ok());
  c = ReadCredentials(Write("a@x l p\n"));
  ASSERT_TRUE(c.ok());
  Result<ImapCredentials> none = c->For("b@x");
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.error().message().find("no line for b@x"), std::string::npos);
}

TEST(RestoreInputs, UidSetsAreRanges) {
  EXPECT_EQ(UidSet({9, 1, 2, 3, 7, 10, 3}), "1:3,7,9:10");
  EXPECT_EQ(UidSet({5}), "5");
  EXPECT_EQ(UidSet({}), "");
}

// The copy a server hands back: CRLF everywhere, a bare CR made a line end (what ToCrlf sends).
std::set<std::string> Hashes(const std::string& raw) {
  Result<ParsedMessage> p = ParseMessage(raw, MessageLimits{});
  EXPECT_TRUE(p.ok());
  return p.ok() ? p->ContentHashes() : std::set<std::string>{};
}

TEST(RestoreMatching, DecodedPartHashesSurviveImapLineEnds) {
  InitMessageParsing();
  const std::string signed_mail =
      "From: a@x\nMessage-ID: <s@x>\nDate: Thu, 22 Aug 2002 10:25:52 -0500\n"
      "Content-Type: multipart/signed; boundary=b; protocol=\"application/pgp-signature\"\n\n"
      "--b\nContent-Type: text/plain\n\nsigned text\n--b\nContent-Type: application/pgp-signature\n\n"
      "-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n--b--\n";
  EXPECT_EQ(Hashes(signed_mail), Hashes(ToCrlf(signed_mail)));
  EXPECT_EQ(Hashes(signed_mail).size(), 2u);
  // Quoted-printable with a bare CR before a soft line break (real spam in the corpus).
  const std::string qp =
      "From: a@x\nMessage-ID: <q@x>\nContent-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n"
      "price list.\r=\nNOTICE: not related \r=\nin any way\n";
  EXPECT_EQ(Hashes(qp), Hashes(ToCrlf(qp)));
  // Base64 bytes are the content: a different payload is a different hash.
  const std::string b64a = "From: a@x\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\nAAEC\n";
  const std::string b64b = "From: a@x\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\nAAED\n";
  EXPECT_EQ(Hashes(b64a), Hashes(ToCrlf(b64a)));
  EXPECT_NE(Hashes(b64a), Hashes(b64b));
}

}  // namespace
}  // namespace mailvault::recovery
