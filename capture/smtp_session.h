// One SMTP (RFC 5321) or LMTP (RFC 2033) session as a state machine over bytes: no sockets,
// no threads, no clock. The server (capture/server.h) feeds it what the client sent, writes
// what it answers, and acts on what it asks for (deliver a message, start TLS, close). Kept
// apart from the transport so it can be tested and fuzzed byte by byte.
//
// What it enforces (docs/capture.md has the reply codes):
//   - command order (EHLO/LHLO before MAIL, MAIL before RCPT, RCPT before DATA);
//   - a command line of at most limits.max_command_line bytes; longer lines are skipped to
//     their end without being buffered, and answered 500 5.5.6;
//   - NUL bytes and invalid UTF-8 in commands are refused; in DATA they are kept (it is mail);
//   - DATA ends only at CRLF "." CRLF: a "." line after a bare LF is content, not the end
//     (the "SMTP smuggling" ambiguity). Lines ending in bare LF are kept as line ends.
//     Stored form: dot-unstuffed, CRLF turned into LF (the vault keeps mail in the local
//     line-ending form, as Maildir and mbox do);
//   - a message over the size limit is read to its end and refused (552 5.3.4), never
//     buffered past the limit;
//   - after STARTTLS every byte the client sent before the handshake is discarded
//     (CVE-2011-0411: commands injected into the plaintext phase);
//   - AUTH only over TLS; too many protocol errors end the session (421).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace mailvault::capture {

enum class Protocol { kSmtp, kLmtp };

struct SessionLimits {
  size_t max_command_line = 2048;  // bytes including CRLF; RFC 5321 asks for at least 512
  uint64_t max_message_bytes = 150ull << 20;  // advertised as SIZE
  size_t max_recipients = 1000;  // per transaction; more are answered 452 4.5.3
  size_t max_errors = 20;        // protocol errors before the session is closed
};

struct SessionSettings {
  Protocol protocol = Protocol::kSmtp;
  std::string hostname = "localhost";
  SessionLimits limits;
  bool tls_available = false;  // a certificate is configured: STARTTLS is offered
  bool require_tls = false;    // MAIL is refused until STARTTLS
  bool require_auth = false;   // MAIL is refused until AUTH
  // Checks a user name and password (AUTH PLAIN/LOGIN); null: AUTH is not offered.
  std::function<bool(std::string_view user, std::string_view password)> check_password;
  // The transport checks passwords itself, elsewhere (scrypt is slow by design and must not
  // run on an I/O thread): the session asks with Next::kCheckPassword instead of calling
  // check_password, and waits for PasswordChecked().
  bool defer_password_checks = false;
  // A memory budget shared by all sessions for message bytes in transit: reserve(n) is asked
  // before n more bytes are held (false: over budget: the message is read to its end and
  // answered 452 4.3.1, nothing kept); release(n) gives bytes back. Null: no budget.
  std::function<bool(size_t)> reserve;
  std::function<void(size_t)> release;
};

// A complete message and its envelope, as the client gave them.
struct Transaction {
  std::string mail_from;                // reverse-path without <>; "" for the null sender
  std::vector<std::string> recipients;  // forward-paths without <>, in the order accepted
  std::string data;                     // dot-unstuffed, LF line endings
  std::string helo;                     // what the client called itself
  std::string auth_user;                // who authenticated, if anyone
  bool tls = false;
  size_t reserved = 0;  // bytes of the transit budget this message holds; the taker releases them
};

class SmtpSession {
 public:
  // What the transport must do before feeding more input.
  enum class Next {
    kRead,     // write the output, then read more
    kDeliver,  // write the output, store TakeTransaction(), then call Delivered()
    kStartTls, // write the output, run the TLS handshake, then call TlsStarted()
    kClose,    // write the output, then close the connection
    kCheckPassword,  // write the output, check TakePasswordCheck(), then call PasswordChecked()
  };

  struct PasswordCheck {
    std::string user, password;
  };
  enum class PasswordVerdict {
    kOk,
    kWrong,
    kBusy,  // no capacity to check now: answered 454 4.7.0, the client may try again later
  };

  SmtpSession(SessionSettings settings, std::string peer);
  ~SmtpSession();
  SmtpSession(const SmtpSession&) = delete;
  SmtpSession& operator=(const SmtpSession&) = delete;

  // The 220 banner (written first, before any input).
  void Greet();
  // Appends input and runs as far as it can.
  Next Feed(std::string_view bytes);
  // Continues with input buffered earlier (after a delivery or a handshake).
  Next Resume();
  std::string TakeOutput();
  Transaction TakeTransaction();

  // The outcome of a delivery: a complete reply line without CRLF, e.g. "250 2.0.0 Ok: ...".
  // LMTP repeats it once per accepted recipient (the message is stored once for all).
  void Delivered(std::string_view reply);
  // The credentials to check (after Next::kCheckPassword).
  PasswordCheck TakePasswordCheck();
  // The outcome of that check.
  void PasswordChecked(PasswordVerdict verdict);
  // The handshake succeeded: the session starts over (RFC 3207), with nothing buffered.
  void TlsStarted();
  // The server is stopping: the next command (or the end of the current transaction) is
  // answered 421 and the session closes. Returns true when the session can close at once.
  bool Shutdown();
  // Answers 421 with the given enhanced code and text, and closes (timeouts, limits).
  void Abort(std::string_view code_and_text);

  bool in_data() const { return state_ == State::kData; }
  bool closed() const { return state_ == State::kClosed; }
  bool busy() const { return state_ == State::kData || state_ == State::kDelivering || state_ == State::kRcpt; }
  uint64_t messages() const { return messages_; }
  bool tls_active() const { return tls_active_; }

 private:
  enum class State { kStart, kReady, kMail, kRcpt, kData, kDelivering, kAuthPlain, kAuthLoginUser, kAuthLoginPassword, kAuthChecking, kTls, kClosed };

  Next Run();
  Next OnCommand(std::string_view line);
  bool OnDataBytes();  // consumes DATA input; true when the message is complete
  void Reply(std::string_view line);
  void Error(std::string_view line);  // a protocol error: counted
  void ResetTransaction();
  void Ehlo(std::string_view arg, bool extended);
  void Mail(std::string_view arg);
  void Rcpt(std::string_view arg);
  void Auth(std::string_view arg);
  void AuthResponse(std::string_view line);
  void FinishAuth(std::string_view user, std::string_view password);
  void ReleaseReserved();

  SessionSettings settings_;
  std::string peer_;
  State state_ = State::kStart;
  std::string in_;
  size_t pos_ = 0;
  std::string out_;
  bool discarding_line_ = false;  // inside an over-long command line
  size_t errors_ = 0;
  bool tls_active_ = false;
  bool shutting_down_ = false;
  std::string helo_;
  std::string auth_user_;
  std::string auth_login_user_;
  PasswordCheck pending_check_;  // kAuthChecking: the credentials the transport is checking
  uint64_t messages_ = 0;

  Transaction txn_;
  bool data_line_start_ = true;  // the next DATA byte starts a line
  bool data_after_crlf_ = true;  // ... and that line follows a CRLF (or the DATA command)
  bool data_too_big_ = false;
  bool data_deferred_ = false;   // over the transit budget: read on, answer 452
  size_t reserved_ = 0;          // transit budget held by txn_.data
  size_t auth_failures_ = 0;
  uint64_t data_bytes_ = 0;      // as received, for the size limit
};

// "archive+alice=example.com@journal.host" -> "alice@example.com" (Postfix recipient_bcc_maps
// and similar sub-address encodings); other addresses are returned unchanged.
std::string DecodeSubaddress(std::string_view address, char separator = '+');

}  // namespace mailvault::capture
