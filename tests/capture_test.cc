// The SMTP/LMTP protocol machine, journal-report unwrapping and the capture settings, without
// sockets. The listener itself is tested over real TCP by tests/capture/*.sh.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "capture/config.h"
#include "capture/journal.h"
#include "capture/server.h"
#include "capture/smtp_session.h"
#include "core/fingerprint.h"
#include "core/bytes.h"
#include "tests/test_util.h"
#include "vault/crypto.h"
#include "vault/vault.h"

namespace mailvault::capture {
namespace {

using testing::ReadFile;

// Drives a session the way the server does; deliveries succeed with "250 ..." unless told.
struct Driver {
  explicit Driver(SessionSettings s = {}) : session(std::move(s), "[127.0.0.1]") {
    session.Greet();
    output = session.TakeOutput();
  }

  // Feeds input in pieces of at most `chunk` bytes; returns everything answered.
  std::string Send(std::string_view input, size_t chunk = SIZE_MAX) {
    for (size_t i = 0; i < input.size() && !closed;) {
      size_t n = std::min(chunk, input.size() - i);
      Handle(session.Feed(input.substr(i, n)));
      i += n;
    }
    std::string out = std::move(output);
    output.clear();
    return out;
  }

  void Handle(SmtpSession::Next next) {
    for (;;) {
      output += session.TakeOutput();
      if (next == SmtpSession::Next::kDeliver) {
        delivered.push_back(session.TakeTransaction());
        session.Delivered(delivery_reply);
        next = session.Resume();
        continue;
      }
      if (next == SmtpSession::Next::kStartTls) {
        starttls = true;
        session.TlsStarted();
        output += session.TakeOutput();
        return;
      }
      if (next == SmtpSession::Next::kClose) closed = true;
      return;
    }
  }

  SmtpSession session;
  std::string output;
  std::vector<Transaction> delivered;
  std::string delivery_reply = "250 2.0.0 Ok";
  bool closed = false;
  bool starttls = false;
};

// The three-digit codes of every reply line, in order ("250-" continuation lines skipped).
std::vector<int> Codes(const std::string& out) {
  std::vector<int> codes;
  size_t pos = 0;
  while (pos < out.size()) {
    size_t eol = out.find("\r\n", pos);
    std::string line = out.substr(pos, eol - pos);
    pos = eol == std::string::npos ? out.size() : eol + 2;
    if (line.size() >= 4 && line[3] == '-') continue;
    codes.push_back(std::stoi(line.substr(0, 3)));
  }
  return codes;
}

// RFC 5321 4.5.2: the client's side of transparency, with CRLF line ends.
std::string DotStuff(std::string_view message) {
  std::string out;
  size_t pos = 0;
  while (pos < message.size()) {
    size_t eol = message.find('\n', pos);
    std::string_view line = message.substr(pos, (eol == std::string_view::npos ? message.size() : eol) - pos);
    pos = eol == std::string_view::npos ? message.size() : eol + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.empty() && line.front() == '.') out += '.';
    out.append(line);
    out += "\r\n";
  }
  return out + ".\r\n";
}

const char* kGreeting = "220";

TEST(SmtpSession, WholeTransactionPipelined) {
  Driver d;
  EXPECT_EQ(d.output.substr(0, 3), kGreeting);
  d.output.clear();
  std::string out = d.Send(
      "EHLO client.example\r\nMAIL FROM:<a@example.com> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<b@example.com>\r\n"
      "RCPT TO:<archive+carol=example.org@journal.test>\r\nDATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n");
  EXPECT_EQ(Codes(out), (std::vector<int>{250, 250, 250, 250, 354, 250, 221}));
  EXPECT_NE(out.find("250-PIPELINING"), std::string::npos);
  EXPECT_NE(out.find("250-ENHANCEDSTATUSCODES"), std::string::npos);
  EXPECT_EQ(out.find("STARTTLS"), std::string::npos);  // no certificate: not offered
  EXPECT_EQ(out.find("AUTH"), std::string::npos);
  ASSERT_EQ(d.delivered.size(), 1u);
  EXPECT_EQ(d.delivered[0].mail_from, "a@example.com");
  EXPECT_EQ(d.delivered[0].recipients, (std::vector<std::string>{"b@example.com", "archive+carol=example.org@journal.test"}));
  EXPECT_EQ(d.delivered[0].data, "Subject: hi\n\nbody\n");
  EXPECT_EQ(d.delivered[0].helo, "client.example");
  EXPECT_TRUE(d.closed);
}

TEST(SmtpSession, CommandsOutOfOrder) {
  Driver d;
  d.output.clear();
  EXPECT_EQ(Codes(d.Send("MAIL FROM:<a@b.c>\r\n")), std::vector<int>{503});
  EXPECT_EQ(Codes(d.Send("RCPT TO:<a@b.c>\r\n")), std::vector<int>{503});
  EXPECT_EQ(Codes(d.Send("DATA\r\n")), std::vector<int>{503});
  EXPECT_EQ(Codes(d.Send("EHLO x\r\nRCPT TO:<a@b.c>\r\n")), (std::vector<int>{250, 503}));
  EXPECT_EQ(Codes(d.Send("MAIL FROM:<>\r\nDATA\r\n")), (std::vector<int>{250, 554}));
  EXPECT_EQ(Codes(d.Send("MAIL FROM:<a@b.c>\r\n")), std::vector<int>{503});  // nested
  EXPECT_EQ(Codes(d.Send("RSET\r\nFROB\r\nLHLO x\r\nBDAT 10\r\n")), (std::vector<int>{250, 500, 500, 502}));
  EXPECT_TRUE(d.delivered.empty());
  EXPECT_FALSE(d.closed);
}

TEST(SmtpSession, LongCommandLineIsSkippedWithoutBuffering) {
  SessionSettings s;
  s.limits.max_command_line = 512;
  Driver d(s);
  d.output.clear();
  std::string huge = "NOOP " + std::string(10 << 20, 'x') + "\r\nNOOP\r\n";
  EXPECT_EQ(Codes(d.Send(huge, 4096)), (std::vector<int>{500, 250}));
  // A line of exactly the limit (with CRLF) is fine; one byte more is not.
  std::string at = "NOOP " + std::string(512 - 7, 'y') + "\r\n";
  ASSERT_EQ(at.size(), 512u);
  EXPECT_EQ(Codes(d.Send(at)), std::vector<int>{250});
  EXPECT_EQ(Codes(d.Send("NOOP " + std::string(512 - 6, 'y') + "\r\n")), std::vector<int>{500});
}

TEST(SmtpSession, NulAndInvalidUtf8InCommandsAreRefused) {
  Driver d;
  d.output.clear();
  EXPECT_EQ(Codes(d.Send(std::string("EHLO a\0b\r\n", 10))), std::vector<int>{500});
  EXPECT_EQ(Codes(d.Send("EHLO \xff\xfe\r\n")), std::vector<int>{500});
  EXPECT_EQ(Codes(d.Send("EHLO \xc0\xaf\r\n")), std::vector<int>{500});  // overlong '/'
  EXPECT_EQ(Codes(d.Send("EHLO x\r\nMAIL FROM:<j\xc3\xbcrgen@b\xc3\xa4r.de> SMTPUTF8\r\n")), (std::vector<int>{250, 250}));
}

TEST(SmtpSession, DataKeepsNulAndBareLfAndIsNotSmuggled) {
  Driver d;
  d.output.clear();
  static const char kData[] = "Subject: x\r\n\r\nnul\0byte\r\nbare\nlf\n.\nMAIL FROM:<evil@x>\r\n..dot\r\n.\r\n";
  std::string data(kData, sizeof kData - 1);
  std::string out = d.Send("EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<r@b.c>\r\nDATA\r\n" + data);
  EXPECT_EQ(Codes(out), (std::vector<int>{250, 250, 250, 354, 250}));
  ASSERT_EQ(d.delivered.size(), 1u);  // "\n.\n" did not end the message: one message, not two
  static const char kStored[] = "Subject: x\n\nnul\0byte\nbare\nlf\n.\nMAIL FROM:<evil@x>\n.dot\n";
  EXPECT_EQ(d.delivered[0].data, std::string(kStored, sizeof kStored - 1));
}

TEST(SmtpSession, MessageOverTheLimitIsReadToItsEndAndRefused) {
  SessionSettings s;
  s.limits.max_message_bytes = 1000;
  Driver d(s);
  d.output.clear();
  EXPECT_EQ(Codes(d.Send("EHLO x\r\nMAIL FROM:<a@b.c> SIZE=1001\r\n")), (std::vector<int>{250, 552}));
  std::string big;
  for (int i = 0; i < 100; ++i) big += std::string(70, 'z') + "\r\n";
  std::string out = d.Send("MAIL FROM:<a@b.c>\r\nRCPT TO:<r@b.c>\r\nDATA\r\n" + big + ".\r\nNOOP\r\n", 7);
  EXPECT_EQ(Codes(out), (std::vector<int>{250, 250, 354, 552, 250}));
  EXPECT_TRUE(d.delivered.empty());
  // Exactly at the limit is accepted.
  std::string fits = std::string(999, 'q') + "\r\n";  // stored as 999 + "\n" = 1000 bytes
  EXPECT_EQ(Codes(d.Send("MAIL FROM:<a@b.c>\r\nRCPT TO:<r@b.c>\r\nDATA\r\n" + fits + ".\r\n")), (std::vector<int>{250, 250, 354, 250}));
  ASSERT_EQ(d.delivered.size(), 1u);
  EXPECT_EQ(d.delivered[0].data.size(), 1000u);
}

TEST(SmtpSession, RecipientLimitAndErrorLimit) {
  SessionSettings s;
  s.limits.max_recipients = 2;
  s.limits.max_errors = 3;
  Driver d(s);
  d.output.clear();
  EXPECT_EQ(Codes(d.Send("EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<1@b.c>\r\nRCPT TO:<2@b.c>\r\nRCPT TO:<3@b.c>\r\n")),
            (std::vector<int>{250, 250, 250, 250, 452}));
  EXPECT_EQ(Codes(d.Send("RCPT TO:<nodomain>\r\nRCPT TO:<a@b.c> NOTIFY=NEVER\r\nFOO\r\nNOOP\r\n")), (std::vector<int>{501, 555, 500, 421}));
  EXPECT_TRUE(d.closed);
}

TEST(SmtpSession, LmtpAnswersPerRecipient) {
  SessionSettings s;
  s.protocol = Protocol::kLmtp;
  Driver d(s);
  EXPECT_NE(d.output.find("LMTP"), std::string::npos);
  d.output.clear();
  EXPECT_EQ(Codes(d.Send("EHLO x\r\n")), std::vector<int>{500});
  std::string out = d.Send("LHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<1@b.c>\r\nRCPT TO:<2@b.c>\r\nRCPT TO:<3@b.c>\r\nDATA\r\nx\r\n.\r\n");
  EXPECT_EQ(Codes(out), (std::vector<int>{250, 250, 250, 250, 250, 354, 250, 250, 250}));
  d.delivery_reply = "451 4.3.0 try later";
  out = d.Send("MAIL FROM:<a@b.c>\r\nRCPT TO:<1@b.c>\r\nRCPT TO:<2@b.c>\r\nDATA\r\nx\r\n.\r\n");
  EXPECT_EQ(Codes(out), (std::vector<int>{250, 250, 250, 354, 451, 451}));
}

TEST(SmtpSession, StartTlsDiscardsInjectedPlaintextAndAuthNeedsTls) {
  SessionSettings s;
  s.tls_available = true;
  s.check_password = [](std::string_view u, std::string_view p) { return u == "journal" && p == "secret"; };
  Driver d(s);
  d.output.clear();
  std::string out = d.Send("EHLO x\r\n");
  EXPECT_NE(out.find("STARTTLS"), std::string::npos);
  EXPECT_EQ(out.find("AUTH"), std::string::npos);  // never offered in the clear
  EXPECT_EQ(Codes(d.Send("AUTH PLAIN AGpvdXJuYWwAc2VjcmV0\r\n")), std::vector<int>{538});
  // CVE-2011-0411: a command sent in the same packet as STARTTLS must not run after it.
  out = d.Send("STARTTLS\r\nMAIL FROM:<injected@x>\r\n");
  EXPECT_TRUE(d.starttls);
  EXPECT_EQ(Codes(out), std::vector<int>{220});
  EXPECT_EQ(Codes(d.Send("MAIL FROM:<a@b.c>\r\n")), std::vector<int>{503});  // must EHLO again
  out = d.Send("EHLO x\r\n");
  EXPECT_NE(out.find("AUTH PLAIN LOGIN"), std::string::npos);
  EXPECT_EQ(out.find("STARTTLS"), std::string::npos);
  EXPECT_EQ(Codes(d.Send("AUTH PLAIN " + Base64Encode(std::string("\0journal\0wrong", 14)) + "\r\n")), std::vector<int>{535});
  EXPECT_EQ(Codes(d.Send("AUTH LOGIN\r\n" + Base64Encode("journal") + "\r\n" + Base64Encode("secret") + "\r\n")),
            (std::vector<int>{334, 334, 235}));
  EXPECT_EQ(Codes(d.Send("AUTH PLAIN\r\n")), std::vector<int>{503});
  EXPECT_EQ(Codes(d.Send("MAIL FROM:<a@b.c>\r\nRCPT TO:<r@b.c>\r\nDATA\r\nx\r\n.\r\n")), (std::vector<int>{250, 250, 354, 250}));
  ASSERT_EQ(d.delivered.size(), 1u);
  EXPECT_EQ(d.delivered[0].auth_user, "journal");
  EXPECT_TRUE(d.delivered[0].tls);
}

TEST(SmtpSession, TransitBudgetDefersWithA452AndReleasesEverything) {
  size_t held = 0, budget = 300;
  SessionSettings s;
  s.reserve = [&](size_t n) {
    if (held + n > budget) return false;
    held += n;
    return true;
  };
  s.release = [&](size_t n) { held -= n; };
  {
    Driver d(s);
    d.output.clear();
    std::string small = "MAIL FROM:<a@b.c>\r\nRCPT TO:<r@b.c>\r\nDATA\r\n" + std::string(100, 's') + "\r\n.\r\n";
    EXPECT_EQ(Codes(d.Send("EHLO x\r\n" + small)), (std::vector<int>{250, 250, 250, 354, 250}));
    ASSERT_EQ(d.delivered.size(), 1u);
    EXPECT_EQ(d.delivered[0].reserved, 101u);  // the taker (the server) releases it after storing
    held -= d.delivered[0].reserved;
    std::string big = "MAIL FROM:<a@b.c>\r\nRCPT TO:<r@b.c>\r\nDATA\r\n" + std::string(200, 'b') + "\r\n" +
                      std::string(200, 'b') + "\r\n.\r\n";
    EXPECT_EQ(Codes(d.Send(big)), (std::vector<int>{250, 250, 354, 452}));
    EXPECT_EQ(held, 0u);
    d.Send("MAIL FROM:<a@b.c>\r\nRCPT TO:<r@b.c>\r\nDATA\r\nhalf a message\r\n");
    EXPECT_GT(held, 0u);
  }
  EXPECT_EQ(held, 0u);  // a session that goes away mid-DATA gives its bytes back
}

TEST(SmtpSession, ThreeFailedAuthenticationsCloseTheSession) {
  SessionSettings s;
  s.tls_available = true;
  s.check_password = [](std::string_view, std::string_view) { return false; };
  Driver d(s);
  d.Send("STARTTLS\r\n");
  d.Send("EHLO x\r\nSTARTTLS\r\n");
  ASSERT_TRUE(d.starttls);
  d.Send("EHLO x\r\n");
  std::string bad = "AUTH PLAIN " + Base64Encode(std::string("\0u\0p", 4)) + "\r\n";
  EXPECT_EQ(Codes(d.Send(bad + bad + bad)), (std::vector<int>{535, 535, 535, 421}));
  EXPECT_TRUE(d.closed);
}

TEST(SmtpSession, RequireAuthRefusesMail) {
  SessionSettings s;
  s.require_auth = true;
  Driver d(s);
  d.output.clear();
  EXPECT_EQ(Codes(d.Send("EHLO x\r\nMAIL FROM:<a@b.c>\r\n")), (std::vector<int>{250, 530}));
}

TEST(SmtpSession, ShutdownFinishesTheMessageInProgressThenCloses) {
  Driver d;
  d.output.clear();
  d.Send("EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<r@b.c>\r\nDATA\r\nhalf");
  EXPECT_FALSE(d.session.Shutdown());  // inside DATA: not closed yet
  std::string out = d.Send(" done\r\n.\r\n");
  EXPECT_EQ(Codes(out), (std::vector<int>{250, 421}));
  EXPECT_EQ(d.delivered.size(), 1u);
  Driver idle;
  EXPECT_TRUE(idle.session.Shutdown());
}

// Every corpus message, dot-stuffed as a client sends it and fed in random pieces, comes out
// byte for byte as the file (the corpus uses LF line ends, the vault's stored form).
TEST(SmtpSession, CorpusMessagesSurviveTransparencyInAnyChunking) {
  std::mt19937 rng(7);
  size_t checked = 0;
  std::vector<std::string> files = testing::CorpusFiles();
  for (size_t i = 0; i < files.size(); i += 7) {
    std::string raw = ReadFile(files[i]);
    if (raw.find('\r') != std::string::npos || raw.empty() || raw.back() != '\n') continue;
    SessionSettings s;
    Driver d(s);
    std::string input = "EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<r@b.c>\r\nDATA\r\n" + DotStuff(raw);
    size_t pos = 0;
    while (pos < input.size()) {
      size_t n = std::min<size_t>(input.size() - pos, 1 + rng() % 3000);
      d.Send(input.substr(pos, n));
      pos += n;
    }
    ASSERT_EQ(d.delivered.size(), 1u) << files[i];
    ASSERT_EQ(d.delivered[0].data, raw) << files[i];
    ++checked;
  }
  EXPECT_GT(checked, 700u);
}

TEST(Subaddress, DecodesPostfixStyleEncodings) {
  EXPECT_EQ(DecodeSubaddress("archive+alice=example.com@journal.test"), "alice@example.com");
  EXPECT_EQ(DecodeSubaddress("archive+first.last=sub.example.com@j"), "first.last@sub.example.com");
  EXPECT_EQ(DecodeSubaddress("archive@journal.test"), "archive@journal.test");
  EXPECT_EQ(DecodeSubaddress("user+tag@example.com"), "user+tag@example.com");  // no '=': a plain tag
  EXPECT_EQ(DecodeSubaddress("archive+=x@j"), "archive+=x@j");
  EXPECT_EQ(DecodeSubaddress("archive+a=@j"), "archive+a=@j");
  EXPECT_EQ(DecodeSubaddress("archive-bob=example.org@j", '-'), "bob@example.org");
}

TEST(CaptureSettings, NetworksDurationsListenAddresses) {
  auto contains = [](const char* net, const char* ip) {
    Result<Network> n = ParseNetwork(net);
    EXPECT_TRUE(n.ok()) << net;
    Result<Network> a = ParseNetwork(ip);
    return NetworkContains(*n, a->prefix);
  };
  EXPECT_TRUE(contains("10.0.0.0/8", "10.200.3.4"));
  EXPECT_FALSE(contains("10.0.0.0/8", "11.0.0.1"));
  EXPECT_TRUE(contains("192.168.1.0/25", "192.168.1.127"));
  EXPECT_FALSE(contains("192.168.1.0/25", "192.168.1.128"));
  EXPECT_TRUE(contains("0.0.0.0/0", "8.8.8.8"));
  EXPECT_TRUE(contains("127.0.0.1", "::ffff:127.0.0.1"));  // v4-mapped matches v4
  EXPECT_TRUE(contains("2001:db8::/32", "2001:db8:1::5"));
  EXPECT_FALSE(contains("::1/128", "127.0.0.1"));
  EXPECT_FALSE(ParseNetwork("10.0.0.0/33").ok());
  EXPECT_FALSE(ParseNetwork("example.com").ok());

  EXPECT_EQ(ParseDuration("90s")->count(), 90);
  EXPECT_EQ(ParseDuration("5m")->count(), 300);
  EXPECT_EQ(ParseDuration("2h")->count(), 7200);
  EXPECT_EQ(ParseDuration("42")->count(), 42);
  EXPECT_FALSE(ParseDuration("5 minutes").ok());
  EXPECT_FALSE(ParseDuration("m").ok());

  EXPECT_EQ(ParseListenAddress("127.0.0.1:2525", Protocol::kSmtp)->port, 2525);
  EXPECT_EQ(ParseListenAddress("[::1]:24", Protocol::kLmtp)->host, "::1");
  EXPECT_FALSE(ParseListenAddress("127.0.0.1", Protocol::kSmtp).ok());
  EXPECT_FALSE(ParseListenAddress("localhost:25", Protocol::kSmtp).ok());
  EXPECT_FALSE(ParseListenAddress("127.0.0.1:70000", Protocol::kSmtp).ok());
}

TEST(CaptureSettings, ConfigFileSectionAndErrors) {
  testing::TempDir dir;
  testing::WriteFile(dir / "ok.conf",
                     "vault = /x\n[capture]\nsmtp-listen = 127.0.0.1:25, [::1]:25\nlmtp-listen = 127.0.0.1:24\n"
                     "allow = 10.0.0.0/8\nmax-connections = 10\nidle-timeout = 2m\nrequire-tls = no\n");
  CaptureConfig c = DefaultCaptureConfig();
  ASSERT_TRUE(ApplyCaptureConfigFile(dir / "ok.conf", &c).ok());
  ASSERT_EQ(c.listen.size(), 3u);
  EXPECT_EQ(c.listen[2].protocol, Protocol::kLmtp);
  ASSERT_EQ(c.settings.allow.size(), 1u);  // replaces the loopback default
  EXPECT_EQ(c.settings.max_connections, 10u);
  EXPECT_EQ(c.settings.idle_timeout.count(), 120);
  testing::WriteFile(dir / "bad.conf", "[capture]\nmax-connections = lots\n");
  Status s = ApplyCaptureConfigFile(dir / "bad.conf", &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("bad.conf:2"), std::string::npos) << s.error().message();
  testing::WriteFile(dir / "unknown.conf", "[capture]\nsmtp-lisen = 1.2.3.4:25\n");
  EXPECT_FALSE(ApplyCaptureConfigFile(dir / "unknown.conf", &c).ok());
}

TEST(Passwords, HashVerifiesAndRejects) {
  ScryptParams fast{1 << 10, 8, 1};
  std::string h = HashPassword("correct horse", fast);
  EXPECT_EQ(h.rfind("$scrypt$ln=10,r=8,p=1$", 0), 0u) << h;
  EXPECT_TRUE(VerifyPassword("correct horse", h));
  EXPECT_FALSE(VerifyPassword("correct horsf", h));
  EXPECT_FALSE(VerifyPassword("correct horse", h.substr(0, h.size() - 2)));
  EXPECT_FALSE(VerifyPassword("x", "plaintext"));
  EXPECT_NE(HashPassword("correct horse", fast), h);  // fresh salt
}

// ---- journal reports: the fixtures in tests/fixtures/journal (make_reports.py) ----

struct Fixture {
  std::string name;
  std::string report;
  nlohmann::json expected;
};

std::vector<Fixture> JournalFixtures() {
  std::vector<Fixture> out;
  std::string dir = std::string(MAILVAULT_FIXTURES) + "/journal";
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() != ".eml") continue;
    Fixture f;
    f.name = e.path().stem().string();
    f.report = ReadFile(e.path().string());
    f.expected = nlohmann::json::parse(ReadFile(dir + "/" + f.name + ".expected.json"));
    out.push_back(std::move(f));
  }
  std::sort(out.begin(), out.end(), [](const Fixture& a, const Fixture& b) { return a.name < b.name; });
  return out;
}

TEST(JournalReport, EveryFixtureUnwrapsAsExpected) {
  std::vector<Fixture> fixtures = JournalFixtures();
  ASSERT_GE(fixtures.size(), 12u);
  for (const Fixture& f : fixtures) {
    SCOPED_TRACE(f.name);
    ASSERT_TRUE(IsJournalReport(f.report));
    UnwrappedMessage u = UnwrapJournalReport(f.report);
    EXPECT_TRUE(u.is_report);
    EXPECT_EQ(HexEncode(Sha256Of(u.message)), f.expected["stored_sha256"].get<std::string>());
    std::vector<std::string> got = u.recipients;
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, f.expected["recipients"].get<std::vector<std::string>>());
    EXPECT_EQ(u.sender, f.expected["sender"].get<std::string>());
    bool broken = !f.expected["note"].is_null();
    EXPECT_EQ(!u.note.empty(), broken) << u.note;
    if (!broken) {
      // Provenance: the report with the original cut out, and nothing of the original in it.
      EXPECT_FALSE(u.report.empty());
      EXPECT_NE(u.report.find("X-MS-Journal-Report"), std::string::npos);
      EXPECT_LT(u.report.size(), f.report.size());
    }
  }
}

TEST(JournalReport, PlainMessagesAreNotReports) {
  std::string m = "From: a@b.c\nX-MS-Journal-Report-Not: 1\nSubject: x\n\nbody X-MS-Journal-Report:\n";
  EXPECT_FALSE(IsJournalReport(m));
  UnwrappedMessage u = UnwrapJournalReport(m);
  EXPECT_FALSE(u.is_report);
  EXPECT_EQ(u.message, m);
  EXPECT_TRUE(u.note.empty());
}

// A report must be exactly the report text and one original; anything more would be lost by
// unwrapping, so such a message is stored as received.
TEST(JournalReport, ExtraPartsMeanStoredAsReceived) {
  std::string report =
      "X-MS-Journal-Report:\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\n"
      "Sender: a@x.test\nRecipient: ceo@x.test\n--b\nContent-Type: message/rfc822\n\nSubject: fake\n\nfake\n"
      "--b\nContent-Type: application/pdf\n\n%PDF-1.4 the real attachment\n--b--\n";
  UnwrappedMessage u = UnwrapJournalReport(report);
  EXPECT_TRUE(u.is_report);
  EXPECT_EQ(u.message, report);
  EXPECT_NE(u.note.find("application/pdf"), std::string::npos) << u.note;
  JournalLimits small;
  small.max_report_bytes = 64;
  std::string ok = report.substr(0, report.find("--b\nContent-Type: application/pdf")) + "--b--\n";
  UnwrappedMessage v = UnwrapJournalReport(ok, small);
  EXPECT_EQ(v.message, ok);  // the report part is over the provenance limit: nothing is cut
  EXPECT_NE(v.note.find("provenance"), std::string::npos) << v.note;
  EXPECT_EQ(UnwrapJournalReport(ok).message, "Subject: fake\n\nfake");  // its last line break belongs to the delimiter
}

TEST(JournalReport, RecipientLineGrammar) {
  ReportFields f = ParseReportText(
      "Sender: Boss@Example.com\nSubject: To: not-a-recipient@x.com\nMessage-Id: <1@x>\n"
      "To: a@example.com\nCc: B@Example.com, Forwarded: orig@example.com\nRecipient: c@example.com, Expanded: dl@example.com\n"
      "Bcc: \"Display\" <d@example.com>\nTo: a@example.com\nGarbage line\nTo: not an address\n",
      100);
  EXPECT_EQ(f.sender, "boss@example.com");
  EXPECT_EQ(f.recipients, (std::vector<std::string>{"a@example.com", "b@example.com", "orig@example.com", "c@example.com",
                                                    "dl@example.com", "d@example.com"}));
  ReportFields capped = ParseReportText("To: a@x.y\nTo: b@x.y\nTo: c@x.y\n", 2);
  EXPECT_EQ(capped.recipients.size(), 2u);
  EXPECT_TRUE(capped.truncated);
}

// Two reports of one original (different recipients) are stored once, with both envelopes;
// the union of their recipients is what the fixtures say.
TEST(JournalReport, CopiesOfOneOriginalMergeInTheVault) {
  std::vector<Fixture> fixtures = JournalFixtures();
  testing::TempDir dir;
  bool created = false;
  ASSERT_TRUE(Vault::Init(dir / "v", KeySource{dir / "key", std::nullopt}, VaultOptions(), &created).ok());
  Result<std::unique_ptr<Vault>> vault = Vault::Open(dir / "v", KeySource{dir / "key", std::nullopt}, VaultOptions());
  ASSERT_TRUE(vault.ok());
  std::set<std::string> expected_union;
  std::string id_hex;
  int merged = 0;
  for (const Fixture& f : fixtures) {
    bool pair = f.expected.contains("same_original_as") || f.name.rfind("same_original", 0) == 0;
    if (!pair) continue;
    UnwrappedMessage u = UnwrapJournalReport(f.report);
    Transaction t;
    t.recipients = {"journal@vault.example.net"};
    Envelope env = MakeEnvelope(t, u, "[127.0.0.1]", Protocol::kSmtp, '+', 1);
    Result<IngestResult> r = (*vault)->Ingest(u.message, env);
    ASSERT_TRUE(r.ok());
    id_hex = r->id.Hex();
    for (const auto& a : f.expected["recipients"]) expected_union.insert(a.get<std::string>());
    ++merged;
  }
  ASSERT_EQ(merged, 2);
  Result<ObjectId> id = (*vault)->Resolve(id_hex);
  ASSERT_TRUE(id.ok());
  Result<std::vector<StoredEnvelope>> envs = (*vault)->GetEnvelopes(*id);
  ASSERT_TRUE(envs.ok());
  ASSERT_EQ(envs->size(), 2u);
  std::set<std::string> got;
  for (const StoredEnvelope& e : *envs) {
    got.insert(e.envelope.recipients.begin(), e.envelope.recipients.end());
    EXPECT_NE(e.envelope.journal_report.find("X-MS-Journal-Report"), std::string::npos);
    EXPECT_NE(e.envelope.source.find("journal-report"), std::string::npos);
  }
  EXPECT_EQ(got, expected_union);
  EXPECT_EQ((*vault)->Stats()->messages, 1u);
}

TEST(CaptureEnvelope, BccJournalingUsesDecodedRcptTo) {
  Transaction t;
  t.mail_from = "sender@example.com";
  t.recipients = {"archive+Alice=Example.com@journal.test", "archive+bob=example.com@journal.test", "archive+alice=example.com@journal.test"};
  t.helo = "mx1";
  UnwrappedMessage u;
  u.message = "Subject: x\n\nbody\n";
  Envelope e = MakeEnvelope(t, u, "[10.0.0.5]", Protocol::kSmtp, '+', 42);
  EXPECT_EQ(e.recipients, (std::vector<std::string>{"alice@example.com", "bob@example.com"}));
  EXPECT_EQ(e.sender, "sender@example.com");
  EXPECT_EQ(e.source, "smtp:[10.0.0.5] helo=mx1");
  EXPECT_EQ(e.capture_time_us, 42);
  Envelope round = *Envelope::Decode(e.Encode());
  EXPECT_EQ(round, e);
}

TEST(CaptureEnvelope, RepliesNameTheOutcome) {
  EXPECT_EQ(DeliveryReply(Error(ErrorCode::kLimitExceeded, "too big")).substr(0, 9), "552 5.3.4");
  EXPECT_EQ(DeliveryReply(Error(ErrorCode::kIoError, "the vault's file system is nearly full")).substr(0, 9), "452 4.3.1");
  EXPECT_EQ(DeliveryReply(Error(ErrorCode::kIoError, "write failed\r\nQUIT")).find('\n'), std::string::npos);
  EXPECT_EQ(DeliveryReply(Error(ErrorCode::kBusy, "closing")).substr(0, 3), "451");
}

}  // namespace
}  // namespace mailvault::capture
