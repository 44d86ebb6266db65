#include "capture/server.h"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_set>

#include "capture/password_check.h"
#include "core/file_util.h"
#include "core/text.h"
#include "vault/crypto.h"

namespace mailvault::capture {

namespace asio = boost::asio;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr size_t kInlinePrepareBytes = 256 << 10;

// ---- addresses and networks ----

std::string ListenAddress::ToString() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return (protocol == Protocol::kLmtp ? "lmtp " : "smtp ") + h + ":" + std::to_string(port);
}

Result<ListenAddress> ParseListenAddress(std::string_view text, Protocol protocol) {
  ListenAddress a;
  a.protocol = protocol;
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon + 1 == text.size()) {
    return InvalidArgument("listen address \"" + std::string(text) + "\" needs a port: HOST:PORT (e.g. 127.0.0.1:2525)");
  }
  std::string host(text.substr(0, colon));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "0.0.0.0";
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  if (ec) return InvalidArgument("listen address \"" + std::string(text) + "\": \"" + host + "\" is not an IP address");
  std::string port(text.substr(colon + 1));
  char* end = nullptr;
  unsigned long p = std::strtoul(port.c_str(), &end, 10);
  if (port.empty() || *end || p > 65535) return InvalidArgument("listen address \"" + std::string(text) + "\": bad port");
  a.host = host;
  a.port = static_cast<uint16_t>(p);
  return a;
}

namespace {
std::vector<uint8_t> AddressBytes(const asio::ip::address& a) {
  if (a.is_v4()) {
    auto b = a.to_v4().to_bytes();
    return {b.begin(), b.end()};
  }
  auto v6 = a.to_v6();
  if (v6.is_v4_mapped()) {
    auto b = asio::ip::make_address_v4(asio::ip::v4_mapped, v6).to_bytes();
    return {b.begin(), b.end()};
  }
  auto b = v6.to_bytes();
  return {b.begin(), b.end()};
}
}  // namespace

Result<Network> ParseNetwork(std::string_view text) {
  Network n;
  n.text = std::string(text);
  size_t slash = text.find('/');
  std::string host(text.substr(0, slash));
  boost::system::error_code ec;
  asio::ip::address a = asio::ip::make_address(host, ec);
  if (ec) return InvalidArgument("allow-list entry \"" + n.text + "\" is not an address or network (e.g. 10.0.0.0/8, ::1)");
  n.prefix = AddressBytes(a);
  unsigned max = static_cast<unsigned>(n.prefix.size() * 8);
  n.bits = max;
  if (slash != std::string_view::npos) {
    std::string b(text.substr(slash + 1));
    char* end = nullptr;
    unsigned long v = std::strtoul(b.c_str(), &end, 10);
    if (b.empty() || *end || v > max) return InvalidArgument("allow-list entry \"" + n.text + "\": bad prefix length");
    n.bits = static_cast<unsigned>(v);
  }
  return n;
}

bool NetworkContains(const Network& n, const std::vector<uint8_t>& address) {
  if (address.size() != n.prefix.size()) return false;
  unsigned bits = n.bits;
  for (size_t i = 0; bits > 0; ++i, bits = bits >= 8 ? bits - 8 : 0) {
    uint8_t mask = bits >= 8 ? 0xff : static_cast<uint8_t>(0xff << (8 - bits));
    if ((address[i] & mask) != (n.prefix[i] & mask)) return false;
  }
  return true;
}

// ---- envelopes and replies ----

Envelope MakeEnvelope(const Transaction& t, const UnwrappedMessage& u, std::string_view peer, Protocol protocol,
                      char subaddress_separator, int64_t now_us) {
  Envelope e;
  e.capture_time_us = now_us;
  e.source = std::string(protocol == Protocol::kLmtp ? "lmtp:" : "smtp:") + std::string(peer);
  if (!t.helo.empty()) e.source += " helo=" + ToValidUtf8(t.helo);
  if (u.is_report) e.source += " journal-report";
  std::unordered_set<std::string> seen;
  auto add = [&](std::string a) {
    if (!a.empty() && seen.insert(a).second) e.recipients.push_back(std::move(a));
  };
  if (u.is_report && !u.recipients.empty()) {
    for (const std::string& r : u.recipients) add(r);
  } else {
    for (const std::string& r : t.recipients) add(NormalizeAddress(DecodeSubaddress(r, subaddress_separator)));
  }
  e.sender = u.is_report && !u.sender.empty() ? u.sender : t.mail_from;
  e.journal_report = u.report;
  e.note = u.note;
  return e;
}

std::string DeliveryReply(const Result<IngestResult>& r) {
  if (r.ok()) {
    std::string id = r->id.Hex().substr(0, 16);
    if (r->duplicate) return "250 2.0.0 Ok: already archived as " + id + (r->envelope_added ? ", capture recorded" : "");
    return "250 2.0.0 Ok: archived as " + id;
  }
  std::string why = r.error().message();
  std::replace(why.begin(), why.end(), '\r', ' ');
  std::replace(why.begin(), why.end(), '\n', ' ');
  if (why.size() > 400) why.resize(400);
  switch (r.error().code()) {
    case ErrorCode::kLimitExceeded:
      return "552 5.3.4 not archived: " + why;
    case ErrorCode::kMalformedInput:
      return "554 5.6.0 not archived: " + why;
    case ErrorCode::kIoError:
      if (why.find("full") != std::string::npos) return "452 4.3.1 insufficient storage; try again later: " + why;
      return "451 4.3.0 temporary failure; try again later: " + why;
    case ErrorCode::kBusy:
      return "451 4.3.2 the archive is busy or closing; try again later";
    default:
      return "451 4.3.0 temporary failure; try again later: " + why;
  }
}

// ---- the server ----

namespace {

// Settings as sessions see them: immutable once built, swapped whole on reload.
struct LiveSettings {
  CaptureSettings settings;
  std::shared_ptr<asio::ssl::context> tls;  // null: no STARTTLS
  PasswordTable passwords;  // the auth-users file
};

Result<std::shared_ptr<const LiveSettings>> Build(const CaptureSettings& s) {
  auto live = std::make_shared<LiveSettings>();
  live->settings = s;
  if (!s.tls_certificate.empty() || !s.tls_key.empty()) {
    if (s.tls_certificate.empty() || s.tls_key.empty()) return InvalidArgument("TLS needs both tls-certificate and tls-key");
    auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
    ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                     asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1 |
                     asio::ssl::context::single_dh_use);
    boost::system::error_code ec;
    ctx->use_certificate_chain_file(s.tls_certificate, ec);
    if (ec) return InvalidArgument("cannot load the TLS certificate " + s.tls_certificate + ": " + ec.message());
    ctx->use_private_key_file(s.tls_key, asio::ssl::context::pem, ec);
    if (ec) return InvalidArgument("cannot load the TLS key " + s.tls_key + ": " + ec.message());
    live->tls = ctx;
  }
  if (s.require_tls && !live->tls) return InvalidArgument("require-tls needs tls-certificate and tls-key");
  if (!s.auth_users_file.empty()) {
    MV_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(s.auth_users_file, 4 << 20));
    std::map<std::string, std::string> users;  // login -> password hash
    MV_RETURN_IF_ERROR(ForEachLine(text, [&](int lineno, std::string_view line) -> Status {
      if (line.empty() || line[0] == '#') return Status::Ok();
      size_t sp = line.find(' ');
      if (sp == std::string_view::npos || line.compare(sp + 1, 8, "$scrypt$") != 0) {
        return InvalidArgument(s.auth_users_file + ":" + std::to_string(lineno) +
                               ": expected \"LOGIN HASH\" with a hash from `mailvault hash-password`");
      }
      users[std::string(line.substr(0, sp))] = std::string(line.substr(sp + 1));
      return Status::Ok();
    }));
    live->passwords = PasswordTable(std::move(users));
    if (!live->tls) return InvalidArgument("SMTP AUTH needs TLS (passwords are never taken in the clear): set tls-certificate and tls-key");
  }
  if (s.require_auth && live->passwords.empty()) return InvalidArgument("require-auth needs an auth-users file with at least one user");
  return std::shared_ptr<const LiveSettings>(live);
}

}  // namespace

class Connection;

class CaptureServer::Impl {
 public:
  Impl(Vault* vault, CaptureConfig config, std::shared_ptr<const LiveSettings> live)
      : vault_(vault),
        config_(std::move(config)),
        live_(std::move(live)),
        io_(),
        accept_strand_(asio::make_strand(io_)),
        ingest_(PoolSize(config_.ingest_threads)),
        passwords_(kPasswordCheckThreads, kMaxPendingPasswordChecks) {}

  // The transit budget (SessionSettings::reserve/release), shared by every session.
  bool Reserve(size_t n) {
    const uint64_t budget = live()->settings.max_transit_bytes;
    if (transit_bytes_.fetch_add(n) + n > budget) {
      transit_bytes_.fetch_sub(n);
      return false;
    }
    return true;
  }
  void ReleaseTransit(size_t n) { transit_bytes_.fetch_sub(n); }

  static size_t PoolSize(size_t n) { return n ? n : std::max(2u, std::thread::hardware_concurrency()); }

  Status Start();
  void Stop(std::chrono::milliseconds drain);
  void Accept(size_t i);
  void Admitted(tcp::socket socket, Protocol protocol);

  std::shared_ptr<const LiveSettings> live() const {
    std::lock_guard<std::mutex> l(mu_);
    return live_;
  }
  void SetLive(std::shared_ptr<const LiveSettings> s) {
    std::lock_guard<std::mutex> l(mu_);
    live_ = std::move(s);
  }

  // Connection accounting: checks the limits and, in the same critical section, counts the
  // connection (refused ones too, until their one reply is written). False when refused.
  bool Admit(const std::shared_ptr<Connection>& c, const std::string& ip, const CaptureSettings& s, bool allowed,
             std::string* refusal);
  void Release(const std::string& ip, Connection* c);

  // First, so it outlives everything that releases into it (sessions die with io_).
  std::atomic<uint64_t> transit_bytes_{0};
  Vault* vault_;
  CaptureConfig config_;
  mutable std::mutex mu_;
  std::shared_ptr<const LiveSettings> live_;  // REQUIRES: mu_
  asio::io_context io_;
  asio::strand<asio::io_context::executor_type> accept_strand_;  // every acceptor operation
  std::atomic<bool> accept_stopping_{false};
  asio::thread_pool ingest_;
  // SMTP AUTH's scrypt runs here, never on the I/O threads: two at a time (each holds 32 MiB or
  // more and a core for a good fraction of a second), at most kMaxPendingPasswordChecks queued
  // or running; beyond that AUTH is answered 454 4.7.0 at once.
  static constexpr size_t kPasswordCheckThreads = 2;
  static constexpr size_t kMaxPendingPasswordChecks = 16;
  PasswordCheckPool passwords_;
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors_;
  std::vector<ListenAddress> bound_;
  std::vector<std::string> warnings_;
  std::vector<std::thread> threads_;
  std::map<std::string, size_t> per_ip_;          // REQUIRES: mu_
  std::set<std::shared_ptr<Connection>> live_connections_;  // REQUIRES: mu_
  std::condition_variable drained_;
  bool stopping_ = false;  // REQUIRES: mu_

  std::atomic<uint64_t> connections_{0}, refused_{0}, messages_{0}, duplicates_{0}, reports_{0}, as_received_{0}, bytes_{0},
      temp_failures_{0}, perm_failures_{0}, in_flight_{0}, accept_stalls_{0};
};

// One client connection: the socket, the TLS layer once started, the protocol session.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(CaptureServer::Impl* server, tcp::socket socket, Protocol protocol, std::shared_ptr<const LiveSettings> live,
             std::string peer)
      : server_(server),
        strand_(socket.get_executor()),
        live_(std::move(live)),
        socket_(std::move(socket)),
        timer_(strand_),
        protocol_(protocol),
        peer_(std::move(peer)),
        session_(MakeSessionSettings(), peer_) {}

  // Refuses the connection with one reply line, then closes.
  void Refuse(std::string line) {
    refused_ = true;
    auto self = shared_from_this();
    auto text = std::make_shared<std::string>(line + "\r\n");
    asio::async_write(socket_, asio::buffer(*text), asio::bind_executor(strand_, [this, self, text](auto, auto) {
                        Close();
                      }));
  }

  void Start() {
    started_ = Clock::now();
    last_activity_ = started_;
    ArmTimer();
    session_.Greet();
    Act(SmtpSession::Next::kRead);
  }

  // Called (on the strand) when the server stops.
  void Shutdown() {
    if (closed_ || refused_) return;  // a refusal is being written; it closes by itself
    if (session_.Shutdown() && !writing_ && !delivering_ && !checking_) Act(SmtpSession::Next::kClose);
  }
  void ForceClose() { Close(); }
  asio::any_io_executor get_executor_for_post() const { return strand_; }

 private:

  SessionSettings MakeSessionSettings() {
    SessionSettings s;
    s.protocol = protocol_;
    s.hostname = live_->settings.hostname;
    s.limits = live_->settings.limits;
    s.tls_available = live_->tls != nullptr;
    s.require_tls = live_->settings.require_tls;
    s.require_auth = live_->settings.require_auth;
    CaptureServer::Impl* server = server_;
    s.reserve = [server](size_t n) { return server->Reserve(n); };
    s.release = [server](size_t n) { server->ReleaseTransit(n); };
    if (!live_->passwords.empty()) {
      std::shared_ptr<const LiveSettings> live = live_;
      s.check_password = [live](std::string_view user, std::string_view password) {
        return live->passwords.Check(user, password);
      };
      s.defer_password_checks = true;  // CheckPassword() runs it on the server's password pool
    }
    return s;
  }

  void ArmTimer() {
    const CaptureSettings& s = live_->settings;
    ArmTimerAt(std::min(last_activity_ + s.idle_timeout, started_ + s.session_timeout));
  }

  void ArmTimerAt(Clock::time_point deadline) {
    auto self = shared_from_this();
    timer_.expires_at(deadline);
    timer_.async_wait(asio::bind_executor(strand_, [this, self](boost::system::error_code ec) {
      if (ec || closed_) return;
      const CaptureSettings& st = live_->settings;
      Clock::time_point now = Clock::now();
      bool idle = now >= last_activity_ + st.idle_timeout;
      bool too_long = now >= started_ + st.session_timeout;
      if (delivering_ || checking_) {
        // The vault (or the password pool) is slow, not the client; look again later (the session limit, already
        // past perhaps, must not make this fire at once over and over).
        last_activity_ = now;
        ArmTimerAt(now + st.idle_timeout);
        return;
      }
      if (!idle && !too_long) {
        ArmTimer();
        return;
      }
      if (writing_) {
        Close();  // the client does not even read its replies
        return;
      }
      session_.Abort(too_long ? "4.4.2 session time limit reached; closing" : "4.4.2 idle timeout; closing");
      Act(SmtpSession::Next::kClose);
    }));
  }

  // Writes what the session has to say, then does what it asked.
  void Act(SmtpSession::Next next) {
    std::string out = session_.TakeOutput();
    if (out.empty()) return Then(next);
    auto self = shared_from_this();
    auto text = std::make_shared<std::string>(std::move(out));
    writing_ = true;
    auto done = asio::bind_executor(strand_, [this, self, text, next](boost::system::error_code ec, size_t) {
      writing_ = false;
      if (ec) return Close();
      Then(next);
    });
    if (tls_) {
      asio::async_write(*tls_, asio::buffer(*text), done);
    } else {
      asio::async_write(socket_, asio::buffer(*text), done);
    }
  }

  void Then(SmtpSession::Next next) {
    if (closed_) return;
    if (session_.closed()) return Close();  // e.g. shut down while a reply was being written
    switch (next) {
      case SmtpSession::Next::kRead:
        return Read();
      case SmtpSession::Next::kDeliver:
        return Deliver();
      case SmtpSession::Next::kStartTls:
        return Handshake();
      case SmtpSession::Next::kClose:
        return Close();
      case SmtpSession::Next::kCheckPassword:
        return CheckPassword();
    }
  }

  void Read() {
    auto self = shared_from_this();
    auto done = asio::bind_executor(strand_, [this, self](boost::system::error_code ec, size_t n) {
      if (ec || closed_) return Close();
      last_activity_ = Clock::now();
      Act(session_.Feed(std::string_view(buffer_.data(), n)));
    });
    if (tls_) {
      tls_->async_read_some(asio::buffer(buffer_), done);
    } else {
      socket_.async_read_some(asio::buffer(buffer_), done);
    }
  }

  // The session waits (reading nothing) while its password is checked on the password pool.
  void CheckPassword() {
    checking_ = true;
    auto self = shared_from_this();
    auto check = std::make_shared<SmtpSession::PasswordCheck>(session_.TakePasswordCheck());
    std::shared_ptr<const LiveSettings> live = live_;
    bool queued = server_->passwords_.Submit([this, self, check, live] {
      const bool ok = live->passwords.Check(check->user, check->password);
      asio::post(strand_, [this, self, ok] {
        checking_ = false;
        last_activity_ = Clock::now();
        if (closed_) return;
        session_.PasswordChecked(ok ? SmtpSession::PasswordVerdict::kOk : SmtpSession::PasswordVerdict::kWrong);
        Act(session_.Resume());
      });
    });
    if (!queued) {
      checking_ = false;
      session_.PasswordChecked(SmtpSession::PasswordVerdict::kBusy);
      Act(session_.Resume());
    }
  }

  void Handshake() {
    // The TLS layer is made only when asked for: most journal connections never use it.
    auto self = shared_from_this();
    handshaking_ = std::make_unique<asio::ssl::stream<tcp::socket&>>(socket_, *live_->tls);
    handshaking_->async_handshake(asio::ssl::stream_base::server,
                                  asio::bind_executor(strand_, [this, self](boost::system::error_code ec) {
                                    if (ec || closed_) return Close();
                                    tls_ = std::move(handshaking_);
                                    session_.TlsStarted();
                                    Read();
                                  }));
  }

  void Deliver() {
    delivering_ = true;
    ++server_->in_flight_;
    auto self = shared_from_this();
    auto txn = std::make_shared<Transaction>(session_.TakeTransaction());
    auto store = [this, self, txn] {
      const CaptureSettings& s = live_->settings;
      UnwrappedMessage u;
      if (s.unwrap_journal_reports && IsJournalReport(txn->data)) {
        u = UnwrapJournalReport(txn->data, s.journal);
      } else {
        u.message = std::move(txn->data);  // most mail: no copy
      }
      std::string().swap(txn->data);
      int64_t now_us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
      Envelope env = MakeEnvelope(*txn, u, peer_, protocol_, s.subaddress_separator, now_us);
      bool report = u.is_report, as_received = u.is_report && !u.note.empty() && u.report.empty();
      uint64_t size = u.message.size();
      size_t reserved = txn->reserved;
      server_->vault_->IngestAsync(u.message, env, [this, self, report, as_received, size, reserved](Result<IngestResult> r) {
        server_->ReleaseTransit(reserved);
        // On the committer's thread: count, then hand the reply to the session's strand.
        std::string reply = DeliveryReply(r);
        --server_->in_flight_;
        if (r.ok()) {
          ++server_->messages_;
          server_->bytes_ += size;
          if (r->duplicate) ++server_->duplicates_;
          if (report) ++server_->reports_;
          if (as_received) ++server_->as_received_;
        } else if (reply[0] == '4') {
          ++server_->temp_failures_;
        } else {
          ++server_->perm_failures_;
        }
        asio::post(strand_, [this, self, reply = std::move(reply)] {
          delivering_ = false;
          last_activity_ = Clock::now();
          if (closed_) return;
          session_.Delivered(reply);
          Act(session_.Resume());
        });
      });
    };
    // Preparing a small message (hash, catalog lookup, MIME check) costs less than handing it
    // to another thread; a large one goes to the ingest pool so it cannot stall other sessions.
    if (txn->data.size() <= kInlinePrepareBytes) {
      store();
    } else {
      asio::post(server_->ingest_, std::move(store));
    }
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    boost::system::error_code ignored;
    timer_.cancel();
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    server_->Release(ip_, this);
  }

 public:
  std::string ip_;

 private:
  CaptureServer::Impl* server_;
  asio::any_io_executor strand_;  // the socket's own executor: a strand (see Accept)
  std::shared_ptr<const LiveSettings> live_;
  tcp::socket socket_;
  std::unique_ptr<asio::ssl::stream<tcp::socket&>> handshaking_, tls_;
  asio::steady_timer timer_;
  Protocol protocol_;
  std::string peer_;
  SmtpSession session_;
  std::array<char, 16384> buffer_;
  bool writing_ = false;
  bool delivering_ = false;
  bool checking_ = false;  // a password check is on the password pool
  bool closed_ = false;
  bool refused_ = false;
  Clock::time_point started_, last_activity_;
};

bool CaptureServer::Impl::Admit(const std::shared_ptr<Connection>& c, const std::string& ip, const CaptureSettings& s,
                               bool allowed, std::string* refusal) {
  std::lock_guard<std::mutex> l(mu_);
  if (!allowed) {
    *refusal = "554 5.7.1 " + ip + " is not allowed to connect to this archive";
  } else if (stopping_) {
    *refusal = "421 4.3.2 the archive is shutting down; try again later";
  } else if (live_connections_.size() >= s.max_connections) {
    *refusal = "421 4.7.0 too many connections; try again later";
  } else if (per_ip_[ip] >= s.max_connections_per_ip) {
    *refusal = "421 4.7.0 too many connections from " + ip + "; try again later";
  }
  live_connections_.insert(c);
  ++per_ip_[ip];
  return refusal->empty();
}

void CaptureServer::Impl::Release(const std::string& ip, Connection* c) {
  std::lock_guard<std::mutex> l(mu_);
  for (auto it = live_connections_.begin(); it != live_connections_.end(); ++it) {
    if (it->get() == c) {
      live_connections_.erase(it);
      if (--per_ip_[ip] == 0) per_ip_.erase(ip);
      break;
    }
  }
  drained_.notify_all();
}

void CaptureServer::Impl::Accept(size_t i) {
  tcp::acceptor& acceptor = *acceptors_[i];
  Protocol protocol = bound_[i].protocol;
  auto handler = [this, i, protocol](boost::system::error_code ec, tcp::socket socket) {
    if (accept_stopping_ || ec == asio::error::operation_aborted) return;
    if (ec && ec != asio::error::connection_aborted) {
      // Out of descriptors (or another lasting error): accepting again at once would spin.
      // Waiting clients stay in the listen backlog; try again shortly.
      ++accept_stalls_;
      auto timer = std::make_shared<asio::steady_timer>(accept_strand_, std::chrono::milliseconds(100));
      timer->async_wait([this, i, timer](boost::system::error_code) {
        if (!accept_stopping_) Accept(i);
      });
      return;
    }
    if (!ec) Admitted(std::move(socket), protocol);
    Accept(i);
  };
  acceptor.async_accept(asio::make_strand(io_), asio::bind_executor(accept_strand_, std::move(handler)));
}

void CaptureServer::Impl::Admitted(tcp::socket socket, Protocol protocol) {
  boost::system::error_code pe;
  tcp::endpoint remote = socket.remote_endpoint(pe);
  if (pe) return;  // the client is already gone
  socket.set_option(tcp::no_delay(true), pe);
  std::shared_ptr<const LiveSettings> live = this->live();
  const CaptureSettings& s = live->settings;
  std::vector<uint8_t> bytes = AddressBytes(remote.address());
  std::string ip = remote.address().is_v6() && remote.address().to_v6().is_v4_mapped()
                       ? asio::ip::make_address_v4(asio::ip::v4_mapped, remote.address().to_v6()).to_string()
                       : remote.address().to_string();
  auto conn = std::make_shared<Connection>(this, std::move(socket), protocol, live, "[" + ip + "]");
  conn->ip_ = ip;
  bool allowed = std::any_of(s.allow.begin(), s.allow.end(), [&](const Network& n) { return NetworkContains(n, bytes); });
  ++connections_;
  std::string refusal;
  if (Admit(conn, ip, s, allowed, &refusal)) {
    asio::post(conn->get_executor_for_post(), [conn] { conn->Start(); });
  } else {
    ++refused_;
    asio::post(conn->get_executor_for_post(), [conn, refusal] { conn->Refuse(refusal); });
  }
}

Status CaptureServer::Impl::Start() {
  // Each session is a descriptor; services often start with a soft limit of 1024. Take what
  // the hard limit allows, and say so when max-connections cannot fit.
  struct rlimit nofile;
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &nofile);
  }
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY &&
      nofile.rlim_cur < live()->settings.max_connections + 64) {
    warnings_.push_back("the open-file limit (" + std::to_string(nofile.rlim_cur) + ") is below max-connections (" +
                        std::to_string(live()->settings.max_connections) +
                        ") plus what the vault needs; raise LimitNOFILE or lower max-connections");
  }
  for (const ListenAddress& a : config_.listen) {
    boost::system::error_code ec;
    tcp::endpoint ep(asio::ip::make_address(a.host), a.port);
    auto acc = std::make_unique<tcp::acceptor>(io_);
    acc->open(ep.protocol(), ec);
    if (!ec) acc->set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acc->bind(ep, ec);
    if (!ec) acc->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return Error(ErrorCode::kIoError, "cannot listen on " + a.ToString() + ": " + ec.message());
    ListenAddress b = a;
    b.port = acc->local_endpoint().port();
    bound_.push_back(b);
    acceptors_.push_back(std::move(acc));
  }
  for (size_t i = 0; i < acceptors_.size(); ++i) Accept(i);
  size_t n = config_.io_threads ? config_.io_threads : std::max(2u, std::thread::hardware_concurrency());
  for (size_t i = 0; i < n; ++i) threads_.emplace_back([this] { io_.run(); });
  return Status::Ok();
}

void CaptureServer::Impl::Stop(std::chrono::milliseconds drain) {
  std::vector<std::shared_ptr<Connection>> conns;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_) return;
    stopping_ = true;
    conns.assign(live_connections_.begin(), live_connections_.end());
  }
  accept_stopping_ = true;
  asio::post(accept_strand_, [this] {
    for (auto& a : acceptors_) {
      boost::system::error_code ignored;
      a->close(ignored);
    }
  });
  for (auto& c : conns) asio::post(c->get_executor_for_post(), [c] { c->Shutdown(); });
  {
    std::unique_lock<std::mutex> l(mu_);
    drained_.wait_for(l, drain, [this] { return live_connections_.empty(); });
    conns.assign(live_connections_.begin(), live_connections_.end());
  }
  for (auto& c : conns) asio::post(c->get_executor_for_post(), [c] { c->ForceClose(); });
  {
    // A connection waiting for the vault closes when its delivery returns; the vault is
    // still open, so that is soon.
    std::unique_lock<std::mutex> l(mu_);
    drained_.wait_for(l, std::chrono::seconds(30), [this] { return live_connections_.empty(); });
  }
  // Deliveries still in the vault call back into this object: wait for every one (each ends
  // at a group commit, or with an error; the vault always answers).
  while (in_flight_.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  // Queued password checks are dropped (their connections are closed by now); a running one
  // finishes and posts to its strand, which io_.stop() then discards with the connection.
  passwords_.Stop();
  io_.stop();
  for (auto& t : threads_) t.join();
  threads_.clear();
  ingest_.join();
}

// ---- CaptureServer ----

CaptureServer::CaptureServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CaptureServer::~CaptureServer() { Stop(std::chrono::milliseconds(0)); }

Result<std::unique_ptr<CaptureServer>> CaptureServer::Create(Vault* vault, const CaptureConfig& config) {
  if (config.listen.empty()) return InvalidArgument("nothing to listen on: give --smtp or --lmtp, or smtp-listen / lmtp-listen in the config");
  MV_ASSIGN_OR_RETURN(std::shared_ptr<const LiveSettings> live, Build(config.settings));
  return std::unique_ptr<CaptureServer>(new CaptureServer(std::make_unique<Impl>(vault, config, std::move(live))));
}

Status CaptureServer::Start() { return impl_->Start(); }

Status CaptureServer::Reload(const CaptureSettings& settings) {
  MV_ASSIGN_OR_RETURN(std::shared_ptr<const LiveSettings> live, Build(settings));
  impl_->SetLive(std::move(live));
  return Status::Ok();
}

void CaptureServer::Stop(std::chrono::milliseconds drain) {
  if (!impl_->threads_.empty()) impl_->Stop(drain);
}

CaptureStats CaptureServer::stats() const {
  CaptureStats s;
  {
    std::lock_guard<std::mutex> l(impl_->mu_);
    s.sessions = impl_->live_connections_.size();
  }
  s.connections = impl_->connections_;
  s.refused_connections = impl_->refused_;
  s.messages = impl_->messages_;
  s.duplicates = impl_->duplicates_;
  s.journal_reports = impl_->reports_;
  s.stored_as_received = impl_->as_received_;
  s.bytes = impl_->bytes_;
  s.temporary_failures = impl_->temp_failures_;
  s.permanent_failures = impl_->perm_failures_;
  s.in_flight = impl_->in_flight_;
  s.accept_stalls = impl_->accept_stalls_;
  return s;
}

std::vector<ListenAddress> CaptureServer::bound() const { return impl_->bound_; }
std::vector<std::string> CaptureServer::warnings() const { return impl_->warnings_; }

}  // namespace mailvault::capture
