// The journal listener: SMTP and LMTP over TCP (Boost.Asio), STARTTLS (OpenSSL), each
// accepted message stored in the vault before it is acknowledged.
//
//   socket ──bytes──▶ SmtpSession (protocol) ──Transaction──▶ ingest pool (journal unwrap,
//   envelope, Vault::IngestAsync) ──durable──▶ reply 250 on the session's strand
//
// Threads: io threads run the sessions (one strand each); an ingest pool does the CPU work of
// preparing messages; the vault's committer appends and fsyncs a whole group at once, so 250s
// to many sessions share one fsync (BLUEPRINT decision 1).
//
// While a message is being stored its session reads nothing more: a client cannot pile up
// input, so memory per connection stays at one read buffer plus one message.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "capture/journal.h"
#include "capture/smtp_session.h"
#include "core/result.h"
#include "vault/vault.h"

namespace mailvault::capture {

struct ListenAddress {
  Protocol protocol = Protocol::kSmtp;
  std::string host;  // an IP address ("127.0.0.1", "::", "0.0.0.0")
  uint16_t port = 0;
  std::string ToString() const;
};
// "127.0.0.1:2525", "[::1]:24".
Result<ListenAddress> ParseListenAddress(std::string_view text, Protocol protocol);

// An allow-list entry: "10.0.0.0/8", "::1/128", "192.0.2.7" (one address).
struct Network {
  std::vector<uint8_t> prefix;  // 4 or 16 bytes
  unsigned bits = 0;
  std::string text;
};
Result<Network> ParseNetwork(std::string_view text);
// IPv4-mapped IPv6 addresses match IPv4 networks.
bool NetworkContains(const Network& n, const std::vector<uint8_t>& address);

// What can change while serving (SIGHUP): everything but the listen addresses.
struct CaptureSettings {
  std::string hostname = "localhost";
  std::vector<Network> allow;  // empty: nobody may connect
  size_t max_connections = 2000;
  size_t max_connections_per_ip = 500;
  SessionLimits limits;
  std::chrono::seconds idle_timeout{300};      // RFC 5321 4.5.3.2.7: at least 5 minutes
  std::chrono::seconds session_timeout{3600};  // a whole session, however active
  std::string tls_certificate;                 // PEM chain; empty: no STARTTLS
  std::string tls_key;
  bool require_tls = false;
  bool require_auth = false;
  std::string auth_users_file;  // lines "LOGIN $scrypt$..." (mailvault hash-password)
  char subaddress_separator = '+';
  // Unwrap envelope journal reports (else store them as received). Turn off where mail from
  // outside can reach the journal address (BCC journaling), as it may be dressed as a report.
  bool unwrap_journal_reports = true;
  JournalLimits journal;
  // Message bytes all sessions together may hold in transit; beyond it, 452 4.3.1.
  uint64_t max_transit_bytes = 1ull << 30;
};

struct CaptureConfig {
  std::vector<ListenAddress> listen;
  CaptureSettings settings;
  size_t io_threads = 0;      // 0: one per core
  size_t ingest_threads = 0;  // 0: one per core
};

struct CaptureStats {
  uint64_t sessions = 0;          // open now
  uint64_t connections = 0;       // accepted since start
  uint64_t refused_connections = 0;
  uint64_t messages = 0;          // stored (acknowledged 250)
  uint64_t duplicates = 0;        // of which already in the vault (an envelope was added)
  uint64_t journal_reports = 0;   // of which unwrapped from envelope journal reports
  uint64_t stored_as_received = 0;  // journal reports that could not be unwrapped
  uint64_t bytes = 0;             // message bytes acknowledged
  uint64_t temporary_failures = 0;  // 4xx after DATA
  uint64_t permanent_failures = 0;  // 5xx after DATA
  uint64_t in_flight = 0;         // messages being stored now
  uint64_t accept_stalls = 0;     // accepts deferred for want of file descriptors
};

class CaptureServer {
 public:
  // Builds a server that stores into vault (which must outlive it). Nothing listens yet.
  static Result<std::unique_ptr<CaptureServer>> Create(Vault* vault, const CaptureConfig& config);
  ~CaptureServer();

  // Binds every listen address and starts serving. Errors name the address.
  Status Start();
  // Replaces the reloadable settings (new sessions get them; open ones keep theirs). An error
  // (unreadable certificate, auth file) leaves the old settings in force.
  Status Reload(const CaptureSettings& settings);
  // Stops accepting, asks every session to finish (those in the middle of a message complete
  // it), waits up to drain for them, then closes what is left and returns.
  void Stop(std::chrono::milliseconds drain);

  CaptureStats stats() const;
  // The bound addresses (port 0 in the config gives a free port).
  std::vector<ListenAddress> bound() const;
  // What Start found worth telling the operator (e.g. a low open-file limit).
  std::vector<std::string> warnings() const;

  class Impl;

 private:
  explicit CaptureServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The envelope of one capture: journal report recipients when there was a report, else the
// RCPT TO addresses with sub-address encodings decoded; each address once, lower-cased.
Envelope MakeEnvelope(const Transaction& t, const UnwrappedMessage& u, std::string_view peer, Protocol protocol,
                      char subaddress_separator, int64_t now_us);

// The reply for a delivery's outcome ("250 2.0.0 ..." or a 4xx/5xx with the reason).
std::string DeliveryReply(const Result<IngestResult>& r);

}  // namespace mailvault::capture
