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
#include "core/text.h"
#include "recovery/imap_client.h"
#include "recovery/restore.h"
#include "tests/test_util.h"
#include "vault/vault.h"

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

// Selection: who a message belongs to, by envelope kind, and the window on capture time.
class Selection : public ::testing::Test {
 protected:
  void SetUp() override {
    InitMessageParsing();
    KeySource keys;
    keys.key_file = tmp_ / "master.key";
    VaultOptions options;
    options.auto_train_messages = 0;
    bool created = false;
    ASSERT_TRUE(Vault::Init(tmp_ / "v", keys, options, &created).ok());
    Result<std::unique_ptr<Vault>> v = Vault::Open(tmp_ / "v", keys, options);
    ASSERT_TRUE(v.ok());
    vault_ = std::move(*v);
  }
  std::string Add(const std::string& headers, Envelope e, int64_t at, const std::string& body = "") {
    e.capture_time_us = at * 1000000;
    Result<IngestResult> r = vault_->Ingest(headers + "\n\n" + (body.empty() ? "body of " + headers : body) + "\n", e);
    EXPECT_TRUE(r.ok());
    return r.ok() ? r->id.Hex() : "";
  }
  // "mailbox folder" -> ids
  std::map<std::string, std::set<std::string>> Select(RestoreCriteria c, RestoreOptions o = {}) {
    Result<std::vector<PlannedTarget>> plan = SelectForRestore(*vault_, nullptr, c, o);
    EXPECT_TRUE(plan.ok()) << (plan.ok() ? "" : plan.error().message());
    std::map<std::string, std::set<std::string>> out;
    if (!plan.ok()) return out;
    for (const PlannedTarget& t : *plan) {
      for (const PlannedMessage& m : t.messages) out[t.mailbox + " " + t.folder].insert(m.id);
    }
    return out;
  }
  testing::TempDir tmp_;
  std::unique_ptr<Vault> vault_;
};

TEST_F(Selection, EnvelopesSayWhoseMailItIsAndTheWindowIsOnCaptureTime) {
  Envelope journal;  // an Exchange report: its recipients (Bcc included) and sender are the truth
  journal.recipients = {"Alice@Example.test", "bcc-bob@example.test"};
  journal.sender = "carol@example.test";
  journal.journal_report = "Sender: carol@example.test\nTo: alice@example.test\nBcc: bcc-bob@example.test\n";
  std::string j = Add("From: carol@example.test\nTo: alice@example.test\nMessage-ID: <j@x>", journal, 1000);
  Envelope bcc;  // Postfix always_bcc: only the archive's address; the headers decide
  bcc.recipients = {"archive@journal.test"};
  std::string b = Add("From: dave@example.test\nTo: alice@example.test\nCc: bob@example.test\nMessage-ID: <b@x>", bcc, 1000);
  Envelope imported;  // imported from alice's mailbox: hers, in Sent when she wrote it
  imported.custodian = "alice@example.test";
  imported.source = "import:alice.mbox";
  std::string mine = Add("From: Alice@example.test\nTo: erin@example.test\nMessage-ID: <s@x>", imported, 1000);
  std::string late = Add("From: frank@example.test\nTo: alice@example.test\nMessage-ID: <late@x>", imported, 5000);
  // Not alice's, although the header says so: the journal's recipient list says otherwise.
  Envelope other = journal;
  other.recipients = {"bob@example.test"};
  std::string not_hers = Add("From: carol@example.test\nTo: alice@example.test\nMessage-ID: <n@x>", other, 1000);
  // A report whose recipients could not be read: RCPT TO stood in (the note says so), so the
  // headers decide after all.
  Envelope unread = journal;
  unread.recipients = {"journal@example.test"};
  unread.sender = "gina@example.test";
  unread.note = "the report names no recipients; the envelope comes from RCPT TO";
  std::string via_headers = Add("From: gina@example.test\nTo: alice@example.test\nMessage-ID: <u@x>", unread, 1000);

  RestoreCriteria c;
  c.users = {"alice@example.test", "carol@example.test", "bob@example.test"};
  c.from = 900;
  c.until = 1100;
  c.margin_before = c.margin_after = 0;
  auto got = Select(c);
  EXPECT_EQ(got["alice@example.test INBOX"], (std::set<std::string>{j, b, via_headers}));
  EXPECT_EQ(got["alice@example.test Sent"], (std::set<std::string>{mine}));
  EXPECT_EQ(got["carol@example.test Sent"], (std::set<std::string>{j, not_hers}));
  EXPECT_EQ(got["bob@example.test INBOX"], (std::set<std::string>{b, not_hers}));
  EXPECT_EQ(got.count("carol@example.test INBOX"), 0u);
  EXPECT_EQ(got.count("bcc-bob@example.test INBOX"), 0u);  // not asked for

  // The margins widen the window; no window at all takes everything.
  c.users = {"alice@example.test"};
  c.margin_after = 4000;
  EXPECT_EQ(Select(c)["alice@example.test INBOX"], (std::set<std::string>{j, b, via_headers, late}));
  c.from.reset();
  c.until.reset();
  RestoreOptions o;
  o.folder = "Recovered";
  o.user_map["alice@example.test"] = "alice.new@example.test";
  got = Select(c, o);
  EXPECT_EQ(got["alice.new@example.test Recovered"], (std::set<std::string>{j, b, via_headers, mine, late}));
  EXPECT_EQ(got.size(), 1u);
  // --by-date reads the Date header; these messages have none.
  c.by_date = true;
  c.from = 0;
  EXPECT_TRUE(Select(c).empty());
  c.users.clear();
  EXPECT_FALSE(SelectForRestore(*vault_, nullptr, c, o).ok());
}

TEST_F(Selection, CopiesOfOneMessageAreSelectedOnce) {
  Envelope e;
  e.custodian = "alice@example.test";
  const std::string head = "From: a@x\nTo: alice@example.test\nDate: Mon, 1 Jan 2024 10:00:00 +0000\nMessage-ID: <same@x>";
  std::string first = Add("Received: from a by b\n" + head, e, 100, "the text");
  std::string copy = Add("Received: from c by d\nReturn-Path: <a@x>\n" + head, e, 101, "the text");  // other trace, same message
  // Same Message-ID and Date, different text: a different message, kept.
  std::string other = Add(head, e, 102, "another text");
  RestoreCriteria c;
  c.users = {"alice@example.test"};
  Result<std::vector<PlannedTarget>> plan = SelectForRestore(*vault_, nullptr, c, RestoreOptions{});
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->size(), 1u);
  std::set<std::string> ids;
  for (const PlannedMessage& m : (*plan)[0].messages) ids.insert(m.id);
  EXPECT_EQ(ids.size(), 2u);
  EXPECT_TRUE(ids.count(other));
  EXPECT_EQ(ids.count(first) + ids.count(copy), 1u);
  ASSERT_EQ((*plan)[0].copies.size(), 1u);
}

// Issue 13: a --flag value went into APPEND as it was, so "\\Seen)\r\nx CREATE y" ran a
// command on the server. A job with such a flag is refused before anything is planned or sent.
TEST_F(Selection, FlagsThatAreNotImapFlagsAreRefusedUpFront) {
  Envelope e;
  e.custodian = "alice@example.test";
  Add("From: a@x\nTo: alice@example.test\nMessage-ID: <f@x>", e, 100);
  RestoreCriteria c;
  c.users = {"alice@example.test"};
  for (const char* bad : {"\\Seen)\r\nx1 CREATE Injected", "urgent)", "a b", "\\", "", "{5}", "%", "x\"y", "]",
                          "\\Recent", "caf\xc3\xa9"}) {
    RestoreOptions o;
    o.flags = {"\\Seen", bad};
    Result<std::vector<PlannedTarget>> plan = SelectForRestore(*vault_, nullptr, c, o);
    EXPECT_FALSE(plan.ok()) << bad;
    if (!plan.ok()) {
      EXPECT_EQ(plan.error().code(), ErrorCode::kInvalidArgument) << bad;
      EXPECT_NE(plan.error().message().find("--flag"), std::string::npos) << plan.error().message();
    }
    // A dry run refuses it too, before connecting anywhere.
    RestoreTarget target{"imap://127.0.0.1:1", {}, ""};
    target.endpoint.host = "127.0.0.1";
    target.endpoint.port = 1;
    Result<JobReport> dry = DryRun(*vault_, target, Credentials{}, o, {});
    EXPECT_FALSE(dry.ok()) << bad;
  }
  for (const char* good : {"\\Seen", "\\Flagged", "\\Answered", "\\Draft", "\\Deleted", "$Junk", "$label1", "Restored",
                           "\\X-Extension", "a.b-c_d"}) {
    RestoreOptions o;
    o.flags = {good};
    EXPECT_TRUE(SelectForRestore(*vault_, nullptr, c, o).ok()) << good;
  }
}

}  // namespace
}  // namespace mailvault::recovery
