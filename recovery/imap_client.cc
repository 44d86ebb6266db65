#include "recovery/imap_client.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "core/bytes.h"

namespace mailvault::recovery {

// A TCP connection, plain or TLS, with timeouts on every read and write.
class ImapClient::Conn {
 public:
  ~Conn() {
    if (ssl_) SSL_free(ssl_);
    if (ctx_) SSL_CTX_free(ctx_);
    if (fd_ >= 0) ::close(fd_);
  }

  Status Open(const ImapEndpoint& e) {
    endpoint_ = e;
    struct addrinfo hints = {};
    hints.ai_socktype = SOCK_STREAM;
    struct addrinfo* res = nullptr;
    const std::string port = std::to_string(e.port);
    if (int rc = getaddrinfo(e.host.c_str(), port.c_str(), &hints, &res); rc != 0) {
      return IoError("cannot resolve " + e.host + ": " + gai_strerror(rc));
    }
    std::string last = "no address";
    for (struct addrinfo* a = res; a; a = a->ai_next) {
      int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0) continue;
      struct timeval tv = {static_cast<time_t>(e.timeout.count()), 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // pipelined appends
      if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
        fd_ = fd;
        break;
      }
      last = std::strerror(errno);
      ::close(fd);
    }
    freeaddrinfo(res);
    if (fd_ < 0) return IoError("cannot connect to " + e.host + ":" + port + ": " + last);
    if (e.tls == ImapEndpoint::Tls::kImplicit) return StartTls();
    return Status::Ok();
  }

  Status StartTls() {
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (!ctx_) return Internal("cannot make a TLS context");
    SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
    if (endpoint_.verify_certificate) {
      SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
      SSL_CTX_set_default_verify_paths(ctx_);
      if (!endpoint_.ca_file.empty() && SSL_CTX_load_verify_locations(ctx_, endpoint_.ca_file.c_str(), nullptr) != 1) {
        return InvalidArgument("cannot read the CA file " + endpoint_.ca_file);
      }
    }
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    SSL_set_tlsext_host_name(ssl_, endpoint_.host.c_str());
    if (endpoint_.verify_certificate) SSL_set1_host(ssl_, endpoint_.host.c_str());
    if (SSL_connect(ssl_) != 1) {
      long v = SSL_get_verify_result(ssl_);
      std::string why = v != X509_V_OK ? X509_verify_cert_error_string(v) : ErrorText();
      return IoError("TLS with " + endpoint_.host + " failed: " + why +
                     (v != X509_V_OK ? " (give its CA with the CA file, or --insecure for a lab server)" : ""));
    }
    return Status::Ok();
  }

  Status Write(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ssl_ ? SSL_write(ssl_, data.data(), static_cast<int>(std::min<size_t>(data.size(), 1 << 20)))
                       : ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return IoError("writing to " + endpoint_.host + ": " + (ssl_ ? ErrorText() : std::strerror(errno)));
      data.remove_prefix(static_cast<size_t>(n));
    }
    return Status::Ok();
  }

  Result<std::string> Read() {
    char buf[1 << 16];
    ssize_t n = ssl_ ? SSL_read(ssl_, buf, sizeof buf) : ::recv(fd_, buf, sizeof buf, 0);
    if (n > 0) return std::string(buf, static_cast<size_t>(n));
    if (n == 0 || (ssl_ && SSL_get_error(ssl_, static_cast<int>(n)) == SSL_ERROR_ZERO_RETURN)) {
      return IoError(endpoint_.host + " closed the connection");
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return IoError(endpoint_.host + " sent nothing for " + std::to_string(endpoint_.timeout.count()) + " s");
    }
    return IoError("reading from " + endpoint_.host + ": " + (ssl_ ? ErrorText() : std::strerror(errno)));
  }

 private:
  static std::string ErrorText() {
    unsigned long e = ERR_get_error();
    if (!e) return std::strerror(errno);
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
  }

  ImapEndpoint endpoint_;
  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
};

std::string ToCrlf(std::string_view m) {
  std::string out;
  out.reserve(m.size() + m.size() / 40);
  for (size_t i = 0; i < m.size(); ++i) {
    char c = m[i];
    if (c == '\r') {
      out += "\r\n";
      if (i + 1 < m.size() && m[i + 1] == '\n') ++i;
    } else if (c == '\n') {
      out += "\r\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

namespace {

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// "25-Nov-2026 10:00:00 +0000" (RFC 3501 date-time).
std::string ImapDate(int64_t t) {
  time_t tt = static_cast<time_t>(t);
  struct tm tm;
  gmtime_r(&tt, &tm);
  static const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char buf[40];
  std::snprintf(buf, sizeof buf, "%02d-%s-%04d %02d:%02d:%02d +0000", tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900,
                tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

uint32_t ToU32(const std::string& s) { return static_cast<uint32_t>(std::strtoul(s.c_str(), nullptr, 10)); }

// A refusal, in the server's words. Wrong credentials are the caller's to fix (kInvalidArgument).
Error Refused(const std::string& what, const ImapResponse& r) {
  return Error(what == "login" ? ErrorCode::kInvalidArgument : ErrorCode::kIoError,
               what + " refused by the server: " + r.status + (r.code.empty() ? "" : " [" + r.code + "]") + " " + r.text);
}

}  // namespace

ImapClient::ImapClient(std::unique_ptr<Conn> conn) : conn_(std::move(conn)) {}
ImapClient::~ImapClient() = default;

std::string ImapClient::NextTag() { return "m" + std::to_string(++tag_); }

bool ImapClient::Has(const std::string& capability) const { return caps_.count(Upper(capability)) > 0; }

void ImapClient::NoteCapabilities(const ImapResponse& r) {
  std::vector<std::string> words;
  if (r.code_name() == "CAPABILITY") {
    std::string rest = r.code.substr(r.code.find(' ') == std::string::npos ? r.code.size() : r.code.find(' ') + 1);
    size_t i = 0;
    while (i < rest.size()) {
      size_t sp = rest.find(' ', i);
      words.push_back(rest.substr(i, sp == std::string::npos ? std::string::npos : sp - i));
      if (sp == std::string::npos) break;
      i = sp + 1;
    }
  } else if (!r.tokens.empty() && r.tokens[0].atom_is("CAPABILITY")) {
    for (size_t i = 1; i < r.tokens.size(); ++i) words.push_back(r.tokens[i].text);
  } else {
    return;
  }
  caps_.clear();
  for (const std::string& w : words) caps_.insert(Upper(w));
}

Result<ImapResponse> ImapClient::ReadResponse() {
  for (;;) {
    MV_ASSIGN_OR_RETURN(std::optional<ImapResponse> r, reader_.Next());
    if (r) {
      NoteCapabilities(*r);
      return std::move(*r);
    }
    MV_ASSIGN_OR_RETURN(std::string bytes, conn_->Read());
    reader_.Feed(bytes);
  }
}

Result<std::vector<ImapResponse>> ImapClient::Command(const std::string& command, ImapResponse* tagged) {
  const std::string tag = NextTag();
  MV_RETURN_IF_ERROR(conn_->Write(tag + " " + command + "\r\n"));
  std::vector<ImapResponse> untagged;
  for (;;) {
    MV_ASSIGN_OR_RETURN(ImapResponse r, ReadResponse());
    if (r.kind == ImapResponse::Kind::kTagged) {
      if (r.tag != tag) return MalformedInput("the server answered tag " + r.tag + " while " + tag + " was pending");
      *tagged = std::move(r);
      return untagged;
    }
    if (r.kind == ImapResponse::Kind::kUntagged && r.status == "BYE") {
      return IoError("the server closed the session: " + r.text);
    }
    untagged.push_back(std::move(r));
  }
}

Result<std::unique_ptr<ImapClient>> ImapClient::Connect(const ImapEndpoint& endpoint) {
  auto conn = std::make_unique<Conn>();
  MV_RETURN_IF_ERROR(conn->Open(endpoint));
  std::unique_ptr<ImapClient> c(new ImapClient(std::move(conn)));
  MV_ASSIGN_OR_RETURN(ImapResponse greeting, c->ReadResponse());
  if (greeting.status != "OK" && greeting.status != "PREAUTH") {
    return IoError(endpoint.host + " did not greet with OK: " + greeting.status + " " + greeting.text);
  }
  if (endpoint.tls == ImapEndpoint::Tls::kStartTls) {
    ImapResponse done;
    MV_RETURN_IF_ERROR(c->Command("STARTTLS", &done).status());
    if (done.status != "OK") return Refused("STARTTLS", done);
    if (c->reader_.buffered() != 0) {
      return MalformedInput("the server sent data after its STARTTLS answer (a plaintext injection attempt)");
    }
    MV_RETURN_IF_ERROR(c->conn_->StartTls());
    c->caps_.clear();  // capabilities from before TLS are not to be trusted
  }
  if (c->caps_.empty()) {
    ImapResponse done;
    MV_RETURN_IF_ERROR(c->Command("CAPABILITY", &done).status());
  }
  return c;
}

Status ImapClient::Login(const ImapCredentials& cred) {
  ImapResponse done;
  if (Has("AUTH=PLAIN") || !cred.as_user.empty()) {
    // PLAIN: authzid \0 authcid \0 password; the authzid makes an administrator act as the user.
    std::string plain = cred.as_user + std::string(1, '\0') + cred.login + std::string(1, '\0') + cred.password;
    std::string b64 = Base64Encode(plain);
    if (Has("SASL-IR")) {
      MV_RETURN_IF_ERROR(Command("AUTHENTICATE PLAIN " + b64, &done).status());
    } else {
      const std::string tag = NextTag();
      MV_RETURN_IF_ERROR(conn_->Write(tag + " AUTHENTICATE PLAIN\r\n"));
      MV_ASSIGN_OR_RETURN(ImapResponse go, ReadResponse());
      if (go.kind != ImapResponse::Kind::kContinuation) return Refused("login", go);
      MV_RETURN_IF_ERROR(conn_->Write(b64 + "\r\n"));
      for (;;) {
        MV_ASSIGN_OR_RETURN(ImapResponse r, ReadResponse());
        if (r.kind == ImapResponse::Kind::kTagged) {
          done = std::move(r);
          break;
        }
      }
    }
  } else {
    MV_RETURN_IF_ERROR(Command("LOGIN " + ImapQuote(cred.login) + " " + ImapQuote(cred.password), &done).status());
  }
  if (done.status != "OK") return Refused("login", done);
  if (done.code_name() != "CAPABILITY") {
    ImapResponse caps;
    MV_RETURN_IF_ERROR(Command("CAPABILITY", &caps).status());
  }
  return Status::Ok();
}

Result<ImapMailbox> ImapClient::Select(const std::string& mailbox, bool read_only) {
  ImapResponse done;
  MV_ASSIGN_OR_RETURN(std::vector<ImapResponse> rs, Command((read_only ? "EXAMINE " : "SELECT ") + ImapQuote(mailbox), &done));
  if (done.status != "OK") return Error(done.code_name() == "NONEXISTENT" ? ErrorCode::kNotFound : ErrorCode::kIoError,
                                        "SELECT " + mailbox + ": " + done.status + " " + done.text);
  ImapMailbox m;
  for (const ImapResponse& r : rs) {
    if (r.tokens.size() == 2 && r.tokens[1].atom_is("EXISTS")) m.exists = ToU32(r.tokens[0].text);
    if (r.code_name() == "UIDVALIDITY") m.uid_validity = ToU32(r.code.substr(12));
    if (r.code_name() == "UIDNEXT") m.uid_next = ToU32(r.code.substr(8));
  }
  return m;
}

Result<std::string> ImapClient::PersonalPrefix() {
  if (!Has("NAMESPACE")) return std::string();
  ImapResponse done;
  MV_ASSIGN_OR_RETURN(std::vector<ImapResponse> rs, Command("NAMESPACE", &done));
  if (done.status != "OK") return Refused("NAMESPACE", done);
  for (const ImapResponse& r : rs) {
    // * NAMESPACE (("INBOX/" "/")) NIL NIL: the first personal namespace's prefix.
    if (r.tokens.size() < 2 || !r.tokens[0].atom_is("NAMESPACE")) continue;
    const ImapToken& personal = r.tokens[1];
    if (personal.kind != ImapToken::Kind::kList || personal.children.empty()) return std::string();
    const ImapToken& first = personal.children[0];
    if (first.kind != ImapToken::Kind::kList || first.children.empty()) return std::string();
    return first.children[0].text;
  }
  return std::string();
}

Status ImapClient::Create(const std::string& mailbox) {
  ImapResponse done;
  MV_RETURN_IF_ERROR(Command("CREATE " + ImapQuote(mailbox), &done).status());
  if (done.status == "OK" || done.code_name() == "ALREADYEXISTS") return Status::Ok();
  // Cyrus says "NO Mailbox already exists" without the ALREADYEXISTS code (RFC 5530): ask
  // whether it exists rather than read the words.
  ImapResponse listed;
  MV_ASSIGN_OR_RETURN(std::vector<ImapResponse> rs, Command("LIST \"\" " + ImapQuote(mailbox), &listed));
  for (const ImapResponse& r : rs) {
    if (!r.tokens.empty() && r.tokens[0].atom_is("LIST")) return Status::Ok();
  }
  return Refused("CREATE " + mailbox, done);
}

Result<std::vector<ImapMessageInfo>> ImapClient::FetchHeaders(const std::vector<std::string>& fields) {
  std::string section = "HEADER";
  if (!fields.empty()) {
    section = "HEADER.FIELDS (";
    for (size_t i = 0; i < fields.size(); ++i) section += (i ? " " : "") + fields[i];
    section += ")";
  }
  ImapResponse done;
  MV_ASSIGN_OR_RETURN(std::vector<ImapResponse> rs, Command("UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[" + section + "])", &done));
  if (done.status != "OK") return Refused("UID FETCH", done);
  std::vector<ImapMessageInfo> out;
  for (const ImapResponse& r : rs) {
    if (r.tokens.size() != 3 || !r.tokens[1].atom_is("FETCH") || r.tokens[2].kind != ImapToken::Kind::kList) continue;
    const std::vector<ImapToken>& items = r.tokens[2].children;
    ImapMessageInfo info;
    for (size_t i = 0; i + 1 < items.size(); i += 2) {
      const std::string name = Upper(items[i].text);
      if (name == "UID") info.uid = ToU32(items[i + 1].text);
      else if (name == "RFC822.SIZE") info.size = std::strtoull(items[i + 1].text.c_str(), nullptr, 10);
      else if (name.rfind("BODY[HEADER", 0) == 0) info.header = items[i + 1].text;
      else if (name == "FLAGS") {
        for (const ImapToken& f : items[i + 1].children) info.deleted |= f.atom_is("\\Deleted");
      }
    }
    if (info.uid) out.push_back(std::move(info));
  }
  return out;
}

Result<std::string> ImapClient::FetchMessage(uint32_t uid) {
  MV_ASSIGN_OR_RETURN(auto got, FetchMessages({uid}));
  if (got.empty()) return NotFound("no message with UID " + std::to_string(uid));
  return std::move(got.front().second);
}

Result<std::vector<std::pair<uint32_t, std::string>>> ImapClient::FetchMessages(const std::vector<uint32_t>& uids) {
  std::vector<std::pair<uint32_t, std::string>> out;
  // A few hundred UIDs per command keep each command line short whatever the gaps.
  constexpr size_t kPerCommand = 256;
  std::vector<uint32_t> sorted = uids;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  for (size_t at = 0; at < sorted.size(); at += kPerCommand) {
    std::vector<uint32_t> part(sorted.begin() + at, sorted.begin() + std::min(sorted.size(), at + kPerCommand));
    ImapResponse done;
    MV_ASSIGN_OR_RETURN(std::vector<ImapResponse> rs, Command("UID FETCH " + UidSet(part) + " (UID BODY.PEEK[])", &done));
    if (done.status != "OK") return Refused("UID FETCH", done);
    for (ImapResponse& r : rs) {
      if (r.tokens.size() != 3 || !r.tokens[1].atom_is("FETCH") || r.tokens[2].kind != ImapToken::Kind::kList) continue;
      std::vector<ImapToken>& items = r.tokens[2].children;
      uint32_t uid = 0;
      std::string* body = nullptr;
      for (size_t i = 0; i + 1 < items.size(); i += 2) {
        const std::string name = Upper(items[i].text);
        if (name == "UID") uid = ToU32(items[i + 1].text);
        else if (name == "BODY[]") body = &items[i + 1].text;
      }
      if (uid && body) out.emplace_back(uid, std::move(*body));
    }
  }
  return out;
}

Status ValidateImapFlag(std::string_view flag) {
  auto bad = [&](const std::string& why) {
    std::string shown;
    for (unsigned char c : flag.substr(0, 64)) {
      if (c >= 0x20 && c < 0x7f) {
        shown.push_back(static_cast<char>(c));
      } else {
        static const char kHex[] = "0123456789abcdef";
        shown += std::string("\\x") + kHex[c >> 4] + kHex[c & 15];
      }
    }
    if (flag.size() > 64) shown += "...";
    return InvalidArgument("\"" + shown + "\" is not an IMAP flag: " + why +
                           " (give a system flag such as \\Seen or \\Flagged, or a keyword such as $Junk)");
  };
  if (flag.size() > kMaxImapFlagBytes) return bad("longer than " + std::to_string(kMaxImapFlagBytes) + " bytes");
  std::string_view atom = flag;
  if (!atom.empty() && atom[0] == '\\') atom.remove_prefix(1);  // a system flag: "\\" atom
  if (atom.empty()) return bad("it is empty");
  for (unsigned char c : atom) {
    if (c < 0x20 || c >= 0x7f) return bad("it holds a control character, a line break or a non-ASCII byte");
    if (std::strchr(" (){%*\"\\]", c)) return bad(std::string("it holds '") + static_cast<char>(c) + "'");
  }
  if (flag.size() == atom.size() + 1) {
    if (Upper(std::string(atom)) == "RECENT") return bad("\\Recent is set by the server alone");
  }
  return Status::Ok();
}

std::string UidSet(std::vector<uint32_t> uids) {
  std::sort(uids.begin(), uids.end());
  uids.erase(std::unique(uids.begin(), uids.end()), uids.end());
  std::string out;
  for (size_t i = 0; i < uids.size();) {
    size_t j = i;
    while (j + 1 < uids.size() && uids[j + 1] == uids[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(uids[i]);
    if (j > i) out += ':' + std::to_string(uids[j]);
    i = j + 1;
  }
  return out;
}

Result<std::vector<ImapAppendResult>> ImapClient::Append(const std::string& mailbox, const std::vector<ImapAppend>& messages,
                                                         size_t window) {
  // Flags go into the command as atoms: one that is not an atom could end the flag list or the
  // line and run a command of its own. Nothing is sent when one is bad.
  for (const ImapAppend& m : messages) {
    for (const std::string& f : m.flags) MV_RETURN_IF_ERROR(ValidateImapFlag(f));
  }
  const bool literal_plus = Has("LITERAL+");
  if (!literal_plus) window = 1;  // a synchronising literal waits for "+" each time
  std::vector<ImapAppendResult> out(messages.size());
  std::vector<std::string> tags(messages.size());
  size_t sent = 0, answered = 0;
  while (answered < messages.size()) {
    while (sent < messages.size() && sent - answered < std::max<size_t>(window, 1)) {
      const ImapAppend& m = messages[sent];
      std::string body = ToCrlf(m.message);
      std::string flags;
      for (const std::string& f : m.flags) flags += (flags.empty() ? "" : " ") + f;
      tags[sent] = NextTag();
      std::string cmd = tags[sent] + " APPEND " + ImapQuote(mailbox) + " (" + flags + ")";
      if (m.internal_date) cmd += " \"" + ImapDate(m.internal_date) + "\"";
      if (literal_plus) {
        MV_RETURN_IF_ERROR(conn_->Write(cmd + " {" + std::to_string(body.size()) + "+}\r\n" + body + "\r\n"));
      } else {
        MV_RETURN_IF_ERROR(conn_->Write(cmd + " {" + std::to_string(body.size()) + "}\r\n"));
        MV_ASSIGN_OR_RETURN(ImapResponse go, ReadResponse());
        if (go.kind != ImapResponse::Kind::kContinuation) {
          // Refused before the literal (too large, no such mailbox): that is this message's answer.
          if (go.tag != tags[sent]) return MalformedInput("unexpected answer to APPEND: " + go.status + " " + go.text);
          out[sent] = ImapAppendResult{false, 0, 0, go.code_name(), go.text};
          ++sent;
          ++answered;
          continue;
        }
        MV_RETURN_IF_ERROR(conn_->Write(body + "\r\n"));
      }
      ++sent;
    }
    if (answered == sent) continue;
    MV_ASSIGN_OR_RETURN(ImapResponse r, ReadResponse());
    if (r.kind == ImapResponse::Kind::kUntagged && r.status == "BYE") return IoError("the server closed the session: " + r.text);
    if (r.kind != ImapResponse::Kind::kTagged) continue;
    // Answers come in command order (RFC 3501 §5.5 lets a server reorder only commands that
    // do not depend on each other; APPENDs to one mailbox are answered in order in practice,
    // and a tag is matched here either way).
    size_t k = answered;
    while (k < sent && tags[k] != r.tag) ++k;
    if (k == sent) return MalformedInput("the server answered unknown tag " + r.tag);
    ImapAppendResult& res = out[k];
    res.ok = r.status == "OK";
    res.code = r.code_name();
    res.text = r.text;
    if (res.ok && res.code == "APPENDUID") {
      // "APPENDUID <uidvalidity> <uid>"
      size_t a = r.code.find(' '), b = r.code.find(' ', a + 1);
      if (a != std::string::npos && b != std::string::npos) {
        res.uid_validity = ToU32(r.code.substr(a + 1, b - a - 1));
        res.uid = ToU32(r.code.substr(b + 1));
      }
    }
    tags[k] = "";
    while (answered < sent && tags[answered].empty()) ++answered;
  }
  return out;
}

namespace {

// The UIDs of an APPENDUID uid-set ("7", "7:9", "7,9:10"), in order; empty when malformed.
std::vector<uint32_t> ExpandUidSet(const std::string& set) {
  std::vector<uint32_t> out;
  size_t i = 0;
  while (i < set.size()) {
    size_t comma = set.find(',', i);
    std::string range = set.substr(i, comma == std::string::npos ? std::string::npos : comma - i);
    size_t colon = range.find(':');
    uint32_t a = ToU32(range.substr(0, colon)), b = colon == std::string::npos ? a : ToU32(range.substr(colon + 1));
    if (a == 0 || b == 0 || (b > a ? b - a : a - b) > (1u << 20)) return {};
    // 64-bit counters: a range ending at 4294967295 must end, not wrap.
    if (a <= b) {
      for (uint64_t u = a; u <= b; ++u) out.push_back(static_cast<uint32_t>(u));
    } else {
      for (int64_t u = a; u >= static_cast<int64_t>(b); --u) out.push_back(static_cast<uint32_t>(u));
    }
    if (comma == std::string::npos) break;
    i = comma + 1;
  }
  return out;
}

}  // namespace

Result<std::vector<ImapAppendResult>> ImapClient::MultiAppend(const std::string& mailbox, const std::vector<ImapAppend>& messages,
                                                              ImapAppendResult* refusal) {
  for (const ImapAppend& m : messages) {  // as in Append: flags are atoms, or nothing is sent
    for (const std::string& f : m.flags) MV_RETURN_IF_ERROR(ValidateImapFlag(f));
  }
  const bool literal_plus = Has("LITERAL+");
  const std::string tag = NextTag();
  std::string out = tag + " APPEND " + ImapQuote(mailbox);
  for (size_t i = 0; i < messages.size(); ++i) {
    const ImapAppend& m = messages[i];
    std::string body = ToCrlf(m.message);
    std::string flags;
    for (const std::string& f : m.flags) flags += (flags.empty() ? "" : " ") + f;
    out += " (" + flags + ")";
    if (m.internal_date) out += " \"" + ImapDate(m.internal_date) + "\"";
    out += " {" + std::to_string(body.size()) + (literal_plus ? "+" : "") + "}\r\n";
    if (!literal_plus) {
      MV_RETURN_IF_ERROR(conn_->Write(out));
      out.clear();
      MV_ASSIGN_OR_RETURN(ImapResponse go, ReadResponse());
      if (go.kind != ImapResponse::Kind::kContinuation) {
        if (go.tag != tag) return MalformedInput("unexpected answer to APPEND: " + go.status + " " + go.text);
        *refusal = ImapAppendResult{false, 0, 0, go.code_name(), go.text};
        return std::vector<ImapAppendResult>{};
      }
    }
    out += body;
    if (out.size() >= (1 << 20)) {
      MV_RETURN_IF_ERROR(conn_->Write(out));
      out.clear();
    }
  }
  out += "\r\n";
  MV_RETURN_IF_ERROR(conn_->Write(out));
  for (;;) {
    MV_ASSIGN_OR_RETURN(ImapResponse r, ReadResponse());
    if (r.kind == ImapResponse::Kind::kUntagged && r.status == "BYE") return IoError("the server closed the session: " + r.text);
    if (r.kind != ImapResponse::Kind::kTagged) continue;
    if (r.tag != tag) return MalformedInput("the server answered unknown tag " + r.tag);
    if (r.status != "OK") {
      *refusal = ImapAppendResult{false, 0, 0, r.code_name(), r.text};
      return std::vector<ImapAppendResult>{};
    }
    std::vector<ImapAppendResult> results(messages.size(), ImapAppendResult{true, 0, 0, r.code_name(), r.text});
    if (r.code_name() == "APPENDUID") {
      // "APPENDUID <uidvalidity> <uid-set>", one UID per message in order.
      size_t a = r.code.find(' '), b = r.code.find(' ', a + 1);
      if (a != std::string::npos && b != std::string::npos) {
        const uint32_t validity = ToU32(r.code.substr(a + 1, b - a - 1));
        std::vector<uint32_t> uids = ExpandUidSet(r.code.substr(b + 1));
        if (uids.size() == messages.size()) {
          for (size_t i = 0; i < uids.size(); ++i) {
            results[i].uid = uids[i];
            results[i].uid_validity = validity;
          }
        }
      }
    }
    return results;
  }
}

Status ImapClient::Logout() {
  ImapResponse done;
  Result<std::vector<ImapResponse>> r = Command("LOGOUT", &done);
  // The BYE comes first; a server that closes right after it is fine.
  if (!r.ok() && r.error().message().find("closed the session") == std::string::npos) return r.status();
  return Status::Ok();
}

}  // namespace mailvault::recovery
