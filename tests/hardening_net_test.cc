// Issue 13 regression tests for the network-facing parsers and helpers: restore's IMAP APPEND
// flags (item 9), the total size of one IMAP response (item 9), SMTP AUTH's unknown users and
// scrypt off the I/O threads (item 8), and the PDF helper's environment (item 9). Each failed
// before its fix.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <future>
#include <string>
#include <thread>

#include "capture/password_check.h"
#include "capture/smtp_session.h"
#include "core/bytes.h"
#include "indexer/extract/helper_process.h"
#include "recovery/imap_client.h"
#include "recovery/imap_response.h"
#include "vault/crypto.h"

namespace mailvault {
namespace {

// ---- restore --flag: APPEND must never carry a flag that ends the flag list or the line ----

// A one-connection IMAP server on 127.0.0.1 that greets with LITERAL+, answers every APPEND OK
// and keeps every byte the client sent, to see what reached the wire.
class FakeImapServer {
 public:
  FakeImapServer() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    socklen_t len = sizeof a;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    ::listen(listen_fd_, 1);
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeImapServer() {
    ::shutdown(listen_fd_, SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
    ::close(listen_fd_);
  }
  uint16_t port() const { return port_; }
  // Everything received, once the client has closed.
  std::string Received() {
    if (thread_.joinable()) thread_.join();
    return received_;
  }

 private:
  void Serve() {
    int fd = ::accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) return;
    const std::string hello = "* OK [CAPABILITY IMAP4rev1 LITERAL+ UIDPLUS] fake ready\r\n";
    (void)!::write(fd, hello.data(), hello.size());
    std::string pending;
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      received_.append(buf, static_cast<size_t>(n));
      pending.append(buf, static_cast<size_t>(n));
      size_t eol;
      while ((eol = pending.find("\r\n")) != std::string::npos) {
        std::string line = pending.substr(0, eol);
        pending.erase(0, eol + 2);
        size_t sp = line.find(' ');
        if (sp != std::string::npos && line.compare(sp + 1, 7, "APPEND ") == 0) {
          const std::string ok = line.substr(0, sp) + " OK [APPENDUID 1 1] done\r\n";
          (void)!::write(fd, ok.data(), ok.size());
        }
      }
    }
    ::close(fd);
  }

  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
  std::string received_;
};

TEST(RestoreFlags, AFlagThatWouldInjectACommandIsRefusedBeforeAnythingIsSent) {
  FakeImapServer server;
  recovery::ImapEndpoint e;
  e.host = "127.0.0.1";
  e.port = server.port();
  e.tls = recovery::ImapEndpoint::Tls::kNone;
  e.timeout = std::chrono::seconds(10);
  Result<std::unique_ptr<recovery::ImapClient>> c = recovery::ImapClient::Connect(e);
  ASSERT_TRUE(c.ok()) << c.error().ToString();
  recovery::ImapAppend m;
  m.message = "Subject: x\n\nbody\n";
  m.flags = {"\\Seen) {0+}\r\n\r\nx1 CREATE Injected\r\nx2 NOOP (x"};
  Result<std::vector<recovery::ImapAppendResult>> r = (*c)->Append("INBOX", {m});
  EXPECT_FALSE(r.ok());
  if (!r.ok()) {
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message().find("IMAP flag"), std::string::npos) << r.error().message();
  }
  recovery::ImapAppendResult refusal;
  m.flags = {"$Junk", "urgent)"};
  r = (*c)->MultiAppend("INBOX", {m}, &refusal);
  EXPECT_FALSE(r.ok());
  c->reset();  // closes the connection
  const std::string wire = server.Received();
  EXPECT_EQ(wire.find("CREATE"), std::string::npos) << wire;
  EXPECT_EQ(wire.find("APPEND"), std::string::npos) << wire;
}

// ---- one IMAP response has a cap on its total size ----

// A server that announces literal after literal: the reader refuses the response as soon as it
// would be over the cap, instead of buffering the whole of it.
TEST(ImapResponseCap, DefaultLimitsRefuseAResponseOfManyLargeLiterals) {
  recovery::ImapResponseReader r;
  r.Feed("* 1 FETCH (BODY[1] {104857600}\r\n");
  const std::string mib(1 << 20, 'x');
  for (int i = 0; i < 100; ++i) {
    r.Feed(mib);
    Result<std::optional<recovery::ImapResponse>> n = r.Next();
    ASSERT_TRUE(n.ok());
    ASSERT_FALSE(*n);
  }
  // Each literal is under max_literal_bytes; together they would be 200 MiB in one response.
  r.Feed(" BODY[2] {104857600}\r\n");
  Result<std::optional<recovery::ImapResponse>> n = r.Next();
  EXPECT_FALSE(n.ok()) << "a 200 MiB response was accepted";
}

// At the limit and one byte over, fed whole and a byte at a time; over is refused when the
// literal that takes it over is announced, before its bytes arrive.
TEST(ImapResponseCap, AtTheLimitAndOneByteOver) {
  recovery::ImapLimits limits;
  limits.max_line_bytes = 100;
  limits.max_literal_bytes = 1000;
  limits.max_response_bytes = 2000;
  auto response = [](size_t second) {
    return "* 1 FETCH (A {1000}\r\n" + std::string(1000, 'a') + " B {" + std::to_string(second) + "}\r\n" +
           std::string(second, 'b') + ")\r\n";
  };
  ASSERT_EQ(response(966).size(), 2000u);
  auto read = [&](const std::string& wire, size_t piece) -> std::string {
    recovery::ImapResponseReader r(limits);
    for (size_t i = 0; i < wire.size(); i += piece) {
      r.Feed(std::string_view(wire).substr(i, piece));
      Result<std::optional<recovery::ImapResponse>> n = r.Next();
      if (!n.ok()) return n.error().ToString();
      if (*n) return "response with " + std::to_string((*n)->tokens.size()) + " tokens";
    }
    return "(needs more)";
  };
  for (size_t piece : {size_t{1}, size_t{7}, size_t{4096}}) {
    EXPECT_EQ(read(response(966), piece), "response with 3 tokens") << piece;
    std::string over = read(response(967), piece);
    EXPECT_NE(over.find("over 2000 bytes (limits.max_response_bytes)"), std::string::npos) << piece << ": " << over;
  }
  // 969 bytes more and the CRLF that must follow cannot fit: refused with the announcement.
  const std::string announced = response(969).substr(0, response(969).size() - 969 - 3);  // up to "{969}\r\n"
  EXPECT_NE(read(announced, 4096).find("limits.max_response_bytes"), std::string::npos);
  // A response that never ends its line is refused at the limit too, not buffered on.
  recovery::ImapLimits lines = limits;
  lines.max_line_bytes = 4096;
  recovery::ImapResponseReader r(lines);
  r.Feed("* 1 FETCH (A {10}\r\n0123456789" + std::string(1971, 'x'));  // 2000 bytes
  Result<std::optional<recovery::ImapResponse>> n = r.Next();
  ASSERT_TRUE(n.ok());
  EXPECT_FALSE(*n);
  r.Feed("x");
  EXPECT_FALSE(r.Next().ok());
}

// ---- SMTP AUTH: unknown users cost a scrypt; checks run off the I/O threads ----

TEST(SmtpAuth, AnUnknownUserCostsAScryptWithTheSameParameters) {
  const std::string alice = HashPassword("alice's password", ScryptParams{1 << 4, 8, 1});
  std::vector<std::string> verified;  // the hashes scrypt ran against
  capture::PasswordTable table({{"alice", alice}}, [&](std::string_view password, std::string_view hash) {
    verified.emplace_back(hash);
    return VerifyPassword(password, hash);
  });
  EXPECT_TRUE(table.Check("alice", "alice's password"));
  EXPECT_FALSE(table.Check("alice", "a guess"));
  ASSERT_EQ(verified.size(), 2u);
  verified.clear();
  EXPECT_FALSE(table.Check("mallory", "a guess"));
  EXPECT_FALSE(table.Check("", "a guess"));
  // One derivation per attempt, known login or not, with alice's parameters.
  ASSERT_EQ(verified.size(), 2u);
  for (const std::string& h : verified) {
    EXPECT_EQ(h.rfind("$scrypt$ln=4,r=8,p=1$", 0), 0u) << h;
    EXPECT_EQ(h, table.dummy_hash());
  }
  // The dummy is a well-formed hash (so VerifyPassword derives, rather than refusing it on
  // sight) that no password matches: salt and hash decode to 16 and 32 bytes.
  std::string salt, hash;
  const std::string& d = table.dummy_hash();
  size_t a = d.find('$', 8), b = d.find('$', a + 1);
  ASSERT_NE(b, std::string::npos);
  EXPECT_TRUE(Base64Decode(d.substr(a + 1, b - a - 1), &salt));
  EXPECT_TRUE(Base64Decode(d.substr(b + 1), &hash));
  EXPECT_EQ(salt.size(), 16u);
  EXPECT_EQ(hash.size(), 32u);
  EXPECT_FALSE(VerifyPassword("", d));
}

// The session, driven as the server drives it with defer_password_checks: the check leaves
// the session (and so the I/O thread) and its outcome comes back later.
struct AuthDriver {
  explicit AuthDriver(capture::SessionSettings s) : session(std::move(s), "[192.0.2.1]") {
    session.Greet();
    next = session.Feed("EHLO client\r\nSTARTTLS\r\n");
    EXPECT_EQ(next, capture::SmtpSession::Next::kStartTls);
    session.TlsStarted();
    session.TakeOutput();
  }
  std::string Send(const std::string& bytes) {
    next = session.Feed(bytes);
    return session.TakeOutput();
  }
  capture::SmtpSession session;
  capture::SmtpSession::Next next;
};

TEST(SmtpAuth, PasswordChecksLeaveTheSessionAndABusyPoolAnswers454) {
  std::atomic<int> inline_checks{0};
  capture::SessionSettings s;
  s.tls_available = true;
  s.check_password = [&](std::string_view, std::string_view) {
    ++inline_checks;
    return true;
  };
  s.require_auth = true;
  s.defer_password_checks = true;
  AuthDriver d(s);
  const std::string plain = "AUTH PLAIN " + Base64Encode(std::string("\0alice\0secret", 13)) + "\r\n";
  std::string out = d.Send("EHLO client\r\n" + plain + "MAIL FROM:<a@example.test>\r\n");
  EXPECT_EQ(d.next, capture::SmtpSession::Next::kCheckPassword);
  EXPECT_EQ(inline_checks.load(), 0);
  EXPECT_EQ(out.find("250 2.1.0"), std::string::npos) << out;  // MAIL waits for the verdict
  capture::SmtpSession::PasswordCheck check = d.session.TakePasswordCheck();
  EXPECT_EQ(check.user, "alice");
  EXPECT_EQ(check.password, "secret");
  d.session.PasswordChecked(capture::SmtpSession::PasswordVerdict::kBusy);
  d.next = d.session.Resume();
  out = d.session.TakeOutput();
  EXPECT_EQ(out.rfind("454 4.7.0", 0), 0u) << out;
  EXPECT_NE(out.find("530 5.7.0"), std::string::npos) << out;  // not authenticated: MAIL refused
  // Busy is not a failed guess: the session stays open for a retry, which succeeds.
  for (int i = 0; i < 3; ++i) {
    d.Send(plain);
    ASSERT_EQ(d.next, capture::SmtpSession::Next::kCheckPassword);
    d.session.TakePasswordCheck();
    d.session.PasswordChecked(capture::SmtpSession::PasswordVerdict::kBusy);
    d.next = d.session.Resume();
    EXPECT_EQ(d.session.TakeOutput().rfind("454 4.7.0", 0), 0u);
  }
  EXPECT_FALSE(d.session.closed());
  out = d.Send("AUTH LOGIN " + Base64Encode("alice") + "\r\n");
  EXPECT_EQ(out.rfind("334 ", 0), 0u) << out;
  out = d.Send(Base64Encode("secret") + "\r\n");
  ASSERT_EQ(d.next, capture::SmtpSession::Next::kCheckPassword);
  check = d.session.TakePasswordCheck();
  EXPECT_EQ(check.user, "alice");
  EXPECT_EQ(check.password, "secret");
  d.session.PasswordChecked(capture::SmtpSession::PasswordVerdict::kOk);
  d.next = d.session.Resume();
  EXPECT_EQ(d.session.TakeOutput().rfind("235 2.7.0", 0), 0u);
  EXPECT_NE(d.Send("MAIL FROM:<a@example.test>\r\n").find("250 2.1.0"), std::string::npos);
  EXPECT_EQ(inline_checks.load(), 0);
}

TEST(SmtpAuth, WrongPasswordsCheckedLaterStillCloseAfterThree) {
  capture::SessionSettings s;
  s.tls_available = true;
  s.check_password = [](std::string_view, std::string_view) { return false; };
  s.defer_password_checks = true;
  AuthDriver d(s);
  d.Send("EHLO client\r\n");
  for (int i = 0; i < 3; ++i) {
    d.Send("AUTH PLAIN " + Base64Encode(std::string("\0mallory\0guess", 14)) + "\r\n");
    ASSERT_EQ(d.next, capture::SmtpSession::Next::kCheckPassword);
    d.session.TakePasswordCheck();
    d.session.PasswordChecked(capture::SmtpSession::PasswordVerdict::kWrong);
    d.next = d.session.Resume();
    EXPECT_EQ(d.session.TakeOutput().rfind("535 5.7.8", 0), 0u);
  }
  EXPECT_EQ(d.next, capture::SmtpSession::Next::kClose);
}

TEST(SmtpAuth, ThePoolRefusesWorkBeyondItsCapInsteadOfQueueing) {
  capture::PasswordCheckPool pool(2, 3);
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  std::atomic<int> ran{0};
  auto blocked = [&] {
    gate.wait();
    ++ran;
  };
  EXPECT_TRUE(pool.Submit(blocked));
  EXPECT_TRUE(pool.Submit(blocked));
  EXPECT_TRUE(pool.Submit(blocked));  // two running, one queued: at the cap
  EXPECT_FALSE(pool.Submit(blocked));
  EXPECT_EQ(pool.pending(), 3u);
  release.set_value();
  while (pool.pending() != 0) std::this_thread::yield();
  EXPECT_EQ(ran.load(), 3);
  EXPECT_TRUE(pool.Submit([&] { ++ran; }));
  pool.Stop();
  EXPECT_FALSE(pool.Submit([&] { ++ran; }));
}

// ---- the PDF helper starts with a clean environment ----

TEST(PdfHelperEnvironment, ThePassphraseDoesNotReachTheHelper) {
  ASSERT_EQ(::setenv("MAILVAULT_PASSPHRASE", "correct horse battery staple", 1), 0);
  ASSERT_EQ(::setenv("MAILVAULT_KEY_FILE", "/etc/mailvault/master.key", 1), 0);
  extract_internal::HelperLimits limits;
  limits.timeout_ms = 5000;
  // env(1) stands in for the helper: it prints the environment it was given.
  extract_internal::HelperRun run = extract_internal::RunHelperProcess("/usr/bin/env", "", limits);
  ::unsetenv("MAILVAULT_PASSPHRASE");
  ::unsetenv("MAILVAULT_KEY_FILE");
  ASSERT_EQ(run.end, extract_internal::HelperRun::End::kExited) << run.error;
  EXPECT_EQ(run.out.find("MAILVAULT"), std::string::npos) << run.out;
  EXPECT_EQ(run.out.find("correct horse"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("PATH=/usr/bin:/bin\n"), std::string::npos) << run.out;
}

}  // namespace
}  // namespace mailvault
