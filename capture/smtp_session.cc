#include "capture/smtp_session.h"

#include <algorithm>
#include <cstring>

#include "core/bytes.h"

namespace mailvault::capture {
namespace {

char AsciiLower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + ('a' - 'A')) : c; }

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return AsciiLower(x) == AsciiLower(y); });
}

bool IStartsWith(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && IEquals(s.substr(0, prefix.size()), prefix);
}

std::string_view TrimSpaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool ValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // truncated sequence
    for (size_t k = 1; k <= n; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

constexpr size_t kMaxPath = 256;
constexpr size_t kMaxAuthFailures = 3;  // RFC 5321 4.5.3.1.3, with the angle brackets

// Parses "<path>" (or a bare path, as lenient servers accept) at the start of s. On success
// *address is the path without brackets or source route and *rest what follows.
bool ParsePath(std::string_view s, std::string* address, std::string_view* rest, std::string* why) {
  s = TrimSpaces(s);
  std::string_view path;
  if (!s.empty() && s.front() == '<') {
    bool quoted = false;
    size_t i = 1;
    for (; i < s.size(); ++i) {
      if (quoted && s[i] == '\\') {
        ++i;
      } else if (s[i] == '"') {
        quoted = !quoted;
      } else if (s[i] == '>' && !quoted) {
        break;
      }
    }
    if (i >= s.size()) {
      *why = "the address has no closing '>'";
      return false;
    }
    path = s.substr(1, i - 1);
    *rest = s.substr(i + 1);
  } else {
    size_t sp = s.find(' ');
    path = s.substr(0, sp);
    *rest = sp == std::string_view::npos ? std::string_view() : s.substr(sp);
  }
  if (path.size() + 2 > kMaxPath) {
    *why = "the address is longer than 256 characters";
    return false;
  }
  if (!path.empty() && path.front() == '@') {  // a source route: "@relay1,@relay2:user@host"
    size_t colon = path.find(':');
    if (colon == std::string_view::npos) {
      *why = "the source route has no ':'";
      return false;
    }
    path.remove_prefix(colon + 1);
  }
  for (char c : path) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f || c == ' ') {
      *why = "the address contains a space or control character";
      return false;
    }
  }
  if (!ValidUtf8(path)) {
    *why = "the address is not valid UTF-8";
    return false;
  }
  *address = std::string(path);
  return true;
}

}  // namespace

std::string DecodeSubaddress(std::string_view address, char separator) {
  size_t at = address.rfind('@');
  if (at == std::string_view::npos) return std::string(address);
  std::string_view local = address.substr(0, at);
  size_t sep = local.find(separator);
  if (sep == std::string_view::npos) return std::string(address);
  std::string_view encoded = local.substr(sep + 1);
  size_t eq = encoded.rfind('=');
  if (eq == std::string_view::npos || eq == 0 || eq + 1 == encoded.size()) return std::string(address);
  return std::string(encoded.substr(0, eq)) + "@" + std::string(encoded.substr(eq + 1));
}

SmtpSession::SmtpSession(SessionSettings settings, std::string peer)
    : settings_(std::move(settings)), peer_(std::move(peer)) {}

SmtpSession::~SmtpSession() { ReleaseReserved(); }

void SmtpSession::ReleaseReserved() {
  if (reserved_ && settings_.release) settings_.release(reserved_);
  reserved_ = 0;
}

void SmtpSession::Greet() {
  Reply("220 " + settings_.hostname + (settings_.protocol == Protocol::kLmtp ? " LMTP" : " ESMTP") + " mailvault ready");
}

void SmtpSession::Reply(std::string_view line) {
  out_.append(line);
  out_.append("\r\n");
}

void SmtpSession::Error(std::string_view line) {
  Reply(line);
  if (++errors_ >= settings_.limits.max_errors) Abort("4.7.0 too many errors in this session; closing");
}

void SmtpSession::Abort(std::string_view code_and_text) {
  if (state_ == State::kClosed) return;
  Reply("421 " + std::string(code_and_text));
  state_ = State::kClosed;
}

std::string SmtpSession::TakeOutput() {
  std::string out;
  out.swap(out_);
  return out;
}

void SmtpSession::ResetTransaction() {
  ReleaseReserved();
  txn_ = Transaction();
  data_too_big_ = false;
  data_deferred_ = false;
  data_bytes_ = 0;
}

Transaction SmtpSession::TakeTransaction() {
  txn_.helo = helo_;
  txn_.auth_user = auth_user_;
  txn_.tls = tls_active_;
  txn_.reserved = reserved_;
  reserved_ = 0;
  Transaction t = std::move(txn_);
  txn_ = Transaction();
  txn_.recipients.resize(t.recipients.size());  // LMTP answers once per recipient
  return t;
}

void SmtpSession::Delivered(std::string_view reply) {
  if (state_ != State::kDelivering) return;
  size_t replies = settings_.protocol == Protocol::kLmtp ? txn_.recipients.size() : 1;
  for (size_t i = 0; i < replies; ++i) Reply(reply);
  if (!reply.empty() && reply.front() == '2') ++messages_;
  ResetTransaction();
  state_ = State::kReady;
  if (shutting_down_) Abort("4.3.2 the archive is shutting down; try again later");
}

void SmtpSession::TlsStarted() {
  // RFC 3207 4.2: the client must start over; nothing sent before the handshake counts.
  tls_active_ = true;
  in_.clear();
  pos_ = 0;
  helo_.clear();
  ResetTransaction();
  state_ = State::kStart;
}

bool SmtpSession::Shutdown() {
  shutting_down_ = true;
  if (state_ == State::kStart || state_ == State::kReady || state_ == State::kMail || state_ == State::kRcpt ||
      state_ == State::kAuthPlain || state_ == State::kAuthLoginUser || state_ == State::kAuthLoginPassword) {
    Abort("4.3.2 the archive is shutting down; try again later");
    return true;
  }
  return state_ == State::kClosed;
}

SmtpSession::Next SmtpSession::Feed(std::string_view bytes) {
  if (state_ == State::kClosed) return Next::kClose;
  if (state_ == State::kTls) return Next::kStartTls;  // bytes before the handshake are dropped
  in_.append(bytes);
  return Run();
}

SmtpSession::Next SmtpSession::Resume() { return Run(); }

SmtpSession::Next SmtpSession::Run() {
  for (;;) {
    switch (state_) {
      case State::kClosed:
        return Next::kClose;
      case State::kTls:
        in_.clear();
        pos_ = 0;
        return Next::kStartTls;
      case State::kDelivering:
        return Next::kDeliver;
      case State::kAuthChecking:
        return Next::kCheckPassword;
      case State::kData: {
        if (!OnDataBytes()) {
          in_.erase(0, pos_);
          pos_ = 0;
          return Next::kRead;
        }
        if (data_too_big_) {
          // LMTP answers once per accepted recipient (RFC 2033 4.2), refusals included.
          size_t replies = settings_.protocol == Protocol::kLmtp ? txn_.recipients.size() : 1;
          for (size_t i = 0; i < replies; ++i) {
            Reply("552 5.3.4 message exceeds the size limit of " + std::to_string(settings_.limits.max_message_bytes) +
                  " bytes; not stored");
          }
          ResetTransaction();
          state_ = State::kReady;
          continue;
        }
        if (data_deferred_) {
          size_t replies = settings_.protocol == Protocol::kLmtp ? txn_.recipients.size() : 1;
          for (size_t i = 0; i < replies; ++i) {
            Reply("452 4.3.1 the archive holds too many messages in transit; try again later");
          }
          ResetTransaction();
          state_ = State::kReady;
          continue;
        }
        state_ = State::kDelivering;
        return Next::kDeliver;
      }
      default: {
        const char* start = in_.data() + pos_;
        size_t avail = in_.size() - pos_;
        const char* nl = static_cast<const char*>(std::memchr(start, '\n', avail));
        if (!nl) {
          // An over-long line is dropped as it arrives, so it costs no memory.
          if (avail >= settings_.limits.max_command_line) {
            discarding_line_ = true;
            pos_ = in_.size();
          }
          in_.erase(0, pos_);
          pos_ = 0;
          return Next::kRead;
        }
        std::string_view line(start, static_cast<size_t>(nl - start));
        pos_ += line.size() + 1;
        if (discarding_line_ || line.size() + 1 > settings_.limits.max_command_line) {
          discarding_line_ = false;
          if (state_ == State::kAuthPlain || state_ == State::kAuthLoginUser || state_ == State::kAuthLoginPassword) {
            state_ = State::kReady;
          }
          Error("500 5.5.6 line too long (the limit is " + std::to_string(settings_.limits.max_command_line) + " bytes)");
          continue;
        }
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        OnCommand(line);
        continue;
      }
    }
  }
}

SmtpSession::Next SmtpSession::OnCommand(std::string_view line) {
  if (state_ == State::kAuthPlain || state_ == State::kAuthLoginUser || state_ == State::kAuthLoginPassword) {
    AuthResponse(line);
    return Next::kRead;
  }
  if (std::memchr(line.data(), '\0', line.size())) {
    Error("500 5.5.2 NUL byte in the command line");
    return Next::kRead;
  }
  if (!ValidUtf8(line)) {
    Error("500 5.5.2 the command line is not valid UTF-8");
    return Next::kRead;
  }
  if (shutting_down_) {
    Abort("4.3.2 the archive is shutting down; try again later");
    return Next::kClose;
  }
  size_t sp = line.find(' ');
  std::string_view verb = line.substr(0, sp);
  std::string_view arg = sp == std::string_view::npos ? std::string_view() : line.substr(sp + 1);
  const bool lmtp = settings_.protocol == Protocol::kLmtp;

  if (IEquals(verb, "EHLO") || IEquals(verb, "HELO") || IEquals(verb, "LHLO")) {
    if (lmtp != IEquals(verb, "LHLO")) {
      Error(lmtp ? "500 5.5.1 this is an LMTP server: use LHLO" : "500 5.5.1 LHLO is for LMTP; use EHLO");
    } else {
      Ehlo(arg, !IEquals(verb, "HELO"));
    }
  } else if (IEquals(verb, "MAIL")) {
    Mail(arg);
  } else if (IEquals(verb, "RCPT")) {
    Rcpt(arg);
  } else if (IEquals(verb, "DATA")) {
    if (!arg.empty()) {
      Error("501 5.5.4 DATA takes no argument");
    } else if (state_ == State::kMail) {
      // RFC 2033 4.2 asks LMTP for 503 here; SMTP servers answer 554 (RFC 5321 3.3).
      Error(lmtp ? "503 5.5.1 no valid recipients" : "554 5.5.1 no valid recipients");
    } else if (state_ != State::kRcpt) {
      Error(state_ == State::kStart ? "503 5.5.1 send EHLO first" : "503 5.5.1 need MAIL and RCPT first");
    } else {
      Reply("354 end data with <CR><LF>.<CR><LF>");  // no enhanced code: RFC 3463 has no class 3
      state_ = State::kData;
      data_line_start_ = true;
      data_after_crlf_ = true;
      data_too_big_ = false;
      data_bytes_ = 0;
    }
  } else if (IEquals(verb, "RSET")) {
    ResetTransaction();
    if (state_ != State::kStart) state_ = State::kReady;
    Reply("250 2.0.0 Ok");
  } else if (IEquals(verb, "NOOP")) {
    Reply("250 2.0.0 Ok");
  } else if (IEquals(verb, "QUIT")) {
    Reply("221 2.0.0 Bye");
    state_ = State::kClosed;
    return Next::kClose;
  } else if (IEquals(verb, "VRFY")) {
    Reply("252 2.5.2 cannot verify; send the message and it will be archived");
  } else if (IEquals(verb, "HELP")) {
    Reply("214 2.0.0 mailvault journal capture; see RFC 5321");
  } else if (IEquals(verb, "STARTTLS")) {
    if (!arg.empty()) {
      Error("501 5.5.4 STARTTLS takes no argument");
    } else if (tls_active_) {
      Error("503 5.5.1 TLS is already active");
    } else if (!settings_.tls_available) {
      Error("454 4.7.0 TLS not available");
    } else if (state_ != State::kReady) {
      Error(state_ == State::kStart ? "503 5.5.1 send EHLO first" : "503 5.5.1 STARTTLS is not allowed inside a transaction");
    } else {
      Reply("220 2.0.0 Ready to start TLS");
      state_ = State::kTls;
      return Next::kStartTls;
    }
  } else if (IEquals(verb, "AUTH")) {
    Auth(arg);
  } else if (IEquals(verb, "EXPN") || IEquals(verb, "BDAT") || IEquals(verb, "ETRN") || IEquals(verb, "TURN")) {
    Error("502 5.5.1 command not implemented");
  } else {
    Error("500 5.5.2 command not recognised");
  }
  return state_ == State::kClosed ? Next::kClose : Next::kRead;
}

void SmtpSession::Ehlo(std::string_view arg, bool extended) {
  arg = TrimSpaces(arg);
  if (arg.empty()) {
    Error("501 5.5.4 a domain name or address literal is required");
    return;
  }
  ResetTransaction();
  helo_ = std::string(arg.substr(0, 255));
  state_ = State::kReady;
  if (!extended) {
    Reply("250 " + settings_.hostname);
    return;
  }
  std::vector<std::string> lines = {settings_.hostname, "PIPELINING", "SIZE " + std::to_string(settings_.limits.max_message_bytes),
                                    "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"};
  if (settings_.tls_available && !tls_active_) lines.push_back("STARTTLS");
  if (settings_.check_password && tls_active_) lines.push_back("AUTH PLAIN LOGIN");
  for (size_t i = 0; i < lines.size(); ++i) Reply((i + 1 < lines.size() ? "250-" : "250 ") + lines[i]);
}

void SmtpSession::Mail(std::string_view arg) {
  if (state_ == State::kStart) return Error("503 5.5.1 send EHLO first");
  if (state_ != State::kReady) return Error("503 5.5.1 nested MAIL command");
  if (!IStartsWith(arg, "FROM:")) return Error("501 5.5.4 syntax: MAIL FROM:<address>");
  if (settings_.require_tls && !tls_active_) return Error("530 5.7.0 must issue a STARTTLS command first");
  if (settings_.require_auth && auth_user_.empty()) return Error("530 5.7.0 authentication required");
  std::string address, why;
  std::string_view rest;
  if (!ParsePath(arg.substr(5), &address, &rest, &why)) return Error("501 5.1.7 bad sender address: " + why);
  // Parameters: only those of the extensions offered in EHLO.
  rest = TrimSpaces(rest);
  while (!rest.empty()) {
    size_t sp = rest.find(' ');
    std::string_view param = rest.substr(0, sp);
    rest = sp == std::string_view::npos ? std::string_view() : TrimSpaces(rest.substr(sp));
    size_t eq = param.find('=');
    std::string_view key = param.substr(0, eq);
    std::string_view value = eq == std::string_view::npos ? std::string_view() : param.substr(eq + 1);
    if (IEquals(key, "SIZE")) {
      uint64_t n = 0;
      if (value.empty() || value.size() > 19 || !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return Error("501 5.5.4 bad SIZE parameter");
      }
      for (char c : value) n = n * 10 + static_cast<uint64_t>(c - '0');
      if (n > settings_.limits.max_message_bytes) {
        return Error("552 5.3.4 message size exceeds the limit of " + std::to_string(settings_.limits.max_message_bytes) + " bytes");
      }
    } else if (IEquals(key, "BODY")) {
      if (!IEquals(value, "7BIT") && !IEquals(value, "8BITMIME")) return Error("501 5.5.4 BODY must be 7BIT or 8BITMIME");
    } else if (IEquals(key, "SMTPUTF8") && value.empty()) {
    } else if (IEquals(key, "AUTH")) {  // RFC 4954 5: accepted and not trusted
    } else {
      return Error("555 5.5.4 unsupported MAIL parameter " + std::string(key.substr(0, 64)));
    }
  }
  ResetTransaction();
  txn_.mail_from = std::move(address);
  state_ = State::kMail;
  Reply("250 2.1.0 Ok");
}

void SmtpSession::Rcpt(std::string_view arg) {
  if (state_ == State::kStart) return Error("503 5.5.1 send EHLO first");
  if (state_ != State::kMail && state_ != State::kRcpt) return Error("503 5.5.1 need MAIL before RCPT");
  if (!IStartsWith(arg, "TO:")) return Error("501 5.5.4 syntax: RCPT TO:<address>");
  std::string address, why;
  std::string_view rest;
  if (!ParsePath(arg.substr(3), &address, &rest, &why)) return Error("501 5.1.3 bad recipient address: " + why);
  if (!TrimSpaces(rest).empty()) return Error("555 5.5.4 RCPT parameters are not supported");
  if (address.empty()) return Error("501 5.1.3 the recipient address is empty");
  if (address.find('@') == std::string::npos && !IEquals(address, "postmaster")) {
    return Error("501 5.1.3 the recipient address needs a domain");
  }
  if (txn_.recipients.size() >= settings_.limits.max_recipients) {
    // Not counted as an error: the client sends the rest in another transaction (RFC 5321 4.5.3.1.10).
    Reply("452 4.5.3 too many recipients");
    return;
  }
  txn_.recipients.push_back(std::move(address));
  state_ = State::kRcpt;
  Reply("250 2.1.5 Ok");
}

void SmtpSession::Auth(std::string_view arg) {
  if (!settings_.check_password) return Error("502 5.5.1 AUTH not available");
  if (!tls_active_) return Error("538 5.7.11 encryption required for requested authentication mechanism");
  if (state_ == State::kStart) return Error("503 5.5.1 send EHLO first");
  if (!auth_user_.empty()) return Error("503 5.5.1 already authenticated");
  if (state_ != State::kReady) return Error("503 5.5.1 AUTH is not allowed inside a transaction");
  size_t sp = arg.find(' ');
  std::string_view mech = arg.substr(0, sp);
  std::string_view initial = sp == std::string_view::npos ? std::string_view() : TrimSpaces(arg.substr(sp + 1));
  if (IEquals(mech, "PLAIN")) {
    state_ = State::kAuthPlain;
    if (initial.empty()) {
      Reply("334 ");
    } else {
      AuthResponse(initial == "=" ? std::string_view() : initial);
    }
  } else if (IEquals(mech, "LOGIN")) {
    if (initial.empty()) {
      state_ = State::kAuthLoginUser;
      Reply("334 VXNlcm5hbWU6");  // "Username:"
    } else {
      state_ = State::kAuthLoginUser;
      AuthResponse(initial);
    }
  } else {
    Error("504 5.5.4 unrecognised authentication mechanism");
  }
}

void SmtpSession::AuthResponse(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  State was = state_;
  state_ = State::kReady;
  if (line == "*") return Error("501 5.0.0 authentication cancelled");
  std::string decoded;
  if (!Base64Decode(line, &decoded)) return Error("501 5.5.2 cannot decode the response (not base64)");
  if (was == State::kAuthPlain) {
    // authzid NUL authcid NUL password (RFC 4616)
    size_t a = decoded.find('\0');
    size_t b = a == std::string::npos ? std::string::npos : decoded.find('\0', a + 1);
    if (b == std::string::npos) return Error("501 5.5.2 malformed PLAIN response");
    std::string_view authzid(decoded.data(), a);
    std::string_view user(decoded.data() + a + 1, b - a - 1);
    std::string_view password(decoded.data() + b + 1, decoded.size() - b - 1);
    if (!authzid.empty() && authzid != user) return Error("535 5.7.8 authentication credentials invalid");
    return FinishAuth(user, password);
  }
  if (was == State::kAuthLoginUser) {
    auth_login_user_ = decoded;
    state_ = State::kAuthLoginPassword;
    Reply("334 UGFzc3dvcmQ6");  // "Password:"
    return;
  }
  FinishAuth(auth_login_user_, decoded);
  auth_login_user_.clear();
}

void SmtpSession::FinishAuth(std::string_view user, std::string_view password) {
  state_ = State::kAuthChecking;
  pending_check_ = PasswordCheck{std::string(user), std::string(password)};
  // Deferred: Run() hands the check to the transport and reads nothing more until it answers.
  if (settings_.defer_password_checks) return;
  const bool ok = !user.empty() && settings_.check_password(user, password);
  PasswordChecked(ok ? PasswordVerdict::kOk : PasswordVerdict::kWrong);
}

SmtpSession::PasswordCheck SmtpSession::TakePasswordCheck() {
  PasswordCheck c;
  c.user = pending_check_.user;  // kept: PasswordChecked needs the user name
  c.password = std::move(pending_check_.password);
  pending_check_.password.clear();
  return c;
}

void SmtpSession::PasswordChecked(PasswordVerdict verdict) {
  if (state_ != State::kAuthChecking) return;
  state_ = State::kReady;
  std::string user = std::move(pending_check_.user);
  pending_check_ = {};
  switch (verdict) {
    case PasswordVerdict::kOk:
      auth_user_ = std::move(user);
      Reply("235 2.7.0 authentication successful");
      break;
    case PasswordVerdict::kWrong:
      // Each guess costs the server a scrypt; three per session is plenty for a real client.
      if (++auth_failures_ >= kMaxAuthFailures) {
        Reply("535 5.7.8 authentication credentials invalid");
        return Abort("4.7.0 too many failed authentications; closing");
      }
      Error("535 5.7.8 authentication credentials invalid");
      break;
    case PasswordVerdict::kBusy:
      // RFC 4954 6: not a wrong password, so not counted as a guess or a protocol error.
      Reply("454 4.7.0 temporary authentication failure: too many logins being checked; try again later");
      break;
  }
  if (shutting_down_) Abort("4.3.2 the archive is shutting down; try again later");
}

bool SmtpSession::OnDataBytes() {
  for (;;) {
    size_t avail = in_.size() - pos_;
    if (avail == 0) return false;
    const char* p = in_.data() + pos_;
    const char* nl = static_cast<const char*>(std::memchr(p, '\n', avail));
    auto append = [&](const char* s, size_t n) {
      data_bytes_ += n;
      if (data_too_big_ || data_deferred_) return;
      if (txn_.data.size() + n > settings_.limits.max_message_bytes) {
        data_too_big_ = true;  // read on to the end, keep nothing
      } else if (settings_.reserve && !settings_.reserve(n)) {
        data_deferred_ = true;
      } else {
        reserved_ += settings_.reserve ? n : 0;
        txn_.data.append(s, n);
        return;
      }
      ReleaseReserved();
      std::string().swap(txn_.data);
    };
    if (!nl) {
      // A partial line. A '.' at a line start may be the terminator or a stuffed dot, and a
      // trailing CR may begin a CRLF: wait for the bytes that decide.
      if (data_line_start_ && p[0] == '.' && avail < 3) return false;
      size_t take = p[avail - 1] == '\r' ? avail - 1 : avail;
      if (take == 0) return false;
      if (data_line_start_ && p[0] == '.') {
        // With no line end in sight this cannot be the lone "." line: the dot is stuffing.
        ++p, --take, ++pos_;
      }
      append(p, take);
      pos_ += take;
      data_line_start_ = false;
      continue;
    }
    size_t len = static_cast<size_t>(nl - p) + 1;
    bool crlf = len >= 2 && nl[-1] == '\r';
    bool lone_dot = data_line_start_ && p[0] == '.' && (len == 2 || (len == 3 && crlf));
    if (lone_dot && crlf && data_after_crlf_) {
      pos_ += len;
      return true;  // CRLF "." CRLF: the end of the message
    }
    size_t skip = (data_line_start_ && p[0] == '.' && !lone_dot) ? 1 : 0;
    append(p + skip, len - skip - (crlf ? 2 : 1));
    append("\n", 1);
    pos_ += len;
    data_line_start_ = true;
    data_after_crlf_ = crlf;
  }
}

}  // namespace mailvault::capture
