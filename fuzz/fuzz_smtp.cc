// The SMTP/LMTP command and DATA parser (capture/smtp_session.h), fed whole and in pieces.
// Input: byte 0 picks the protocol, STARTTLS, whether password checks are deferred to the
// transport (as the server does) and the piece size; the rest is what a client
// sends. Checks: every reply line is "ddd" + ' ' or '-' and ends in CRLF; nothing stored is
// over the size limit; without STARTTLS (which drops what arrived with it, by design) the
// answers and the messages do not depend on how the input was cut.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "capture/smtp_session.h"

using mailvault::capture::Protocol;
using mailvault::capture::SessionSettings;
using mailvault::capture::SmtpSession;

namespace {

struct Run {
  std::string output;
  std::vector<std::string> messages;
};

Run Drive(const SessionSettings& settings, std::string_view input, size_t piece) {
  SmtpSession session(settings, "[192.0.2.1]");
  Run r;
  session.Greet();
  bool closed = false;
  size_t delivered = 0;
  size_t checks = 0;
  auto handle = [&](SmtpSession::Next next) {
    for (;;) {
      r.output += session.TakeOutput();
      if (next == SmtpSession::Next::kDeliver) {
        mailvault::capture::Transaction t = session.TakeTransaction();
        if (t.data.size() > settings.limits.max_message_bytes) std::abort();
        r.messages.push_back(t.data);
        session.Delivered(++delivered % 3 ? "250 2.0.0 Ok" : "451 4.3.0 later");
        next = session.Resume();
        continue;
      }
      if (next == SmtpSession::Next::kCheckPassword) {
        // As the server's password pool answers: the check, or "busy" every third time.
        mailvault::capture::SmtpSession::PasswordCheck c = session.TakePasswordCheck();
        using Verdict = mailvault::capture::SmtpSession::PasswordVerdict;
        session.PasswordChecked(++checks % 3 == 0                          ? Verdict::kBusy
                                : settings.check_password(c.user, c.password) ? Verdict::kOk
                                                                              : Verdict::kWrong);
        next = session.Resume();
        continue;
      }
      if (next == SmtpSession::Next::kStartTls) session.TlsStarted();
      if (next == SmtpSession::Next::kClose) closed = true;
      r.output += session.TakeOutput();
      return;
    }
  };
  for (size_t i = 0; i < input.size() && !closed; i += piece) handle(session.Feed(input.substr(i, piece)));
  return r;
}

void CheckReplies(const std::string& out) {
  size_t pos = 0;
  while (pos < out.size()) {
    size_t eol = out.find("\r\n", pos);
    if (eol == std::string::npos || eol - pos < 4) std::abort();
    for (size_t k = 0; k < 3; ++k) {
      if (out[pos + k] < '0' || out[pos + k] > '9') std::abort();
    }
    if (out[pos + 3] != ' ' && out[pos + 3] != '-') std::abort();
    if (out.substr(pos, eol - pos).find('\n') != std::string::npos) std::abort();
    pos = eol + 2;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  uint8_t mode = data[0];
  std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  SessionSettings s;
  s.protocol = mode & 1 ? Protocol::kLmtp : Protocol::kSmtp;
  s.tls_available = mode & 2;
  s.limits.max_command_line = 512;
  s.limits.max_message_bytes = 4096;
  s.limits.max_recipients = 5;
  s.check_password = [](std::string_view u, std::string_view p) { return u == "u" && p == "p"; };
  s.defer_password_checks = mode & 4;
  size_t piece = 1 + (mode >> 3);
  Run whole = Drive(s, input, input.size() ? input.size() : 1);
  Run cut = Drive(s, input, piece);
  CheckReplies(whole.output);
  CheckReplies(cut.output);
  if (!s.tls_available && (whole.output != cut.output || whole.messages != cut.messages)) std::abort();
  return 0;
}
