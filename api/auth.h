// Who is calling: password logins (scrypt, with backoff and lockout), in-memory login sessions
// and long-lived API tokens, both sent as "Authorization: Bearer". docs/api.md ("logging in").
//
//   - A failed login for a name makes the next attempt wait min(2^(k-1), 60) s after failure k
//     (429 + Retry-After, no password check); 10 in a row lock the name for 15 min. Unknown
//     names are treated the same, and checked against a dummy hash, so neither the answer nor
//     its timing tells whether a user exists. An address (an IPv6 /64: ClientKey) with 30
//     failures in the last 10 min is refused until fewer than 30 remain in that window (at
//     most 10 min). Nothing locks forever: anyone could lock out the CEO.
//   - At most password_checks_at_once scrypt checks run at a time; a login that finds them all
//     busy gets 503 + Retry-After at once instead of waiting, so a login storm holds at most
//     that many API workers and every other request keeps being answered.
//   - Sessions ("mvs_…") expire after 30 min idle and 8 h at most; logout, a password or role
//     change and disabling the user end them. Only SHA-256 of a token is kept.
//   - A token acts with its user's current role and scope; disabling the user stops it.
#pragma once

#include <chrono>
#include <variant>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "api/control.h"
#include "core/result.h"

namespace mailvault::api {

struct Principal {
  std::string name;
  Role role = Role::kReviewer;
  Scope scope;
  std::string auth;          // "session" or "token:<id>"
  std::string session_hash;  // for logout
  std::string issued_by;     // the admin who created the token for this user, if one did
};

struct AuthSettings {
  int64_t session_idle_seconds = 30 * 60;
  int64_t session_max_seconds = 8 * 3600;
  int max_failures_before_lock = 10;
  int64_t lock_seconds = 15 * 60;
  int64_t max_backoff_seconds = 60;
  int per_address_failures = 30;
  int64_t per_address_window = 10 * 60;
  // Password checks (scrypt: 32 MiB and ~0.1 s each at N=2^15, 4x both at 2^17) at once; a
  // login past this is refused with 503 at once, never queued (see Login).
  size_t password_checks_at_once = 2;
};

// Whom the per-address login limit counts a peer address as: an IPv4 address as it is (also
// when it arrives IPv4-mapped, ::ffff:a.b.c.d), an IPv6 address as its /64 ("2001:db8::/64"):
// one subscriber gets a whole /64, so counting single addresses would let one client
// try without limit.
std::string ClientKey(const std::string& peer);

// Why a login or a credential was refused: the HTTP status, what to say, and when to retry.
struct AuthRefusal {
  int status = 401;
  std::string detail;
  int64_t retry_after = 0;
};

struct LoginResult {
  std::string token;
  int64_t expires = 0;
  User user;
};

class Authenticator {
 public:
  Authenticator(Records* records, AuthSettings settings = {});

  // Result: the session, or the refusal (401 wrong, 429 wait, 503 busy). A refusal is also
  // counted in failed_logins().
  std::variant<LoginResult, AuthRefusal> Login(const std::string& name, const std::string& password,
                                               const std::string& peer);
  // The caller behind an Authorization header value (count: how many such headers came).
  std::variant<Principal, AuthRefusal> Authenticate(const std::string& header, int count);
  void Logout(const std::string& session_hash);
  // Ends every session of a user (after a password, role or scope change, or disabling).
  void EndSessionsOf(const std::string& name);
  uint64_t failed_logins() const;
  size_t sessions() const;

 private:
  struct Session {
    std::string user;
    int64_t created = 0, last_used = 0;
  };
  struct Failures {
    int count = 0;
    int64_t last = 0;     // seconds, for forgetting quiet entries
    int64_t last_ms = 0;  // steady clock: the backoff is timed from the failure, not the attempt
    int64_t locked_until = 0;
  };
  int64_t Now() const;
  void RecordFailure(const std::string& name, const std::string& peer, int64_t now);

  Records* records_;
  AuthSettings settings_;
  std::string dummy_hash_;
  mutable std::mutex mu_;
  std::map<std::string, Session> sessions_;         // SHA-256(token) -> session
  std::map<std::string, Failures> by_name_;         // failed logins per name
  std::map<std::string, std::deque<int64_t>> by_peer_;  // failure times per address
  std::map<std::string, int64_t> last_used_flushed_;    // token id -> last_used written
  uint64_t failed_logins_ = 0;
  std::mutex checks_mu_;
  size_t checks_running_ = 0;  // REQUIRES: checks_mu_
};

}  // namespace mailvault::api
