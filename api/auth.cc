#include "api/auth.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

#include "core/bytes.h"
#include "vault/crypto.h"

namespace mailvault::api {

Authenticator::Authenticator(Records* records, AuthSettings settings)
    : records_(records), settings_(settings), dummy_hash_(HashPassword(HexEncode(RandomBytes(16)))) {}

int64_t Authenticator::Now() const { return NowSeconds(); }

namespace {
// The backoff is counted in milliseconds from the moment the failure was known: counted in whole
// seconds from the start of the attempt, a 1 s wait could be over before the slow password check
// that earned it had finished.
int64_t SteadyMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

std::string ClientKey(const std::string& peer) {
  in6_addr a6;
  if (::inet_pton(AF_INET6, peer.c_str(), &a6) != 1) return peer;  // IPv4 (or not an address): as it is
  if (IN6_IS_ADDR_V4MAPPED(&a6)) {
    char v4[INET_ADDRSTRLEN];
    if (::inet_ntop(AF_INET, &a6.s6_addr[12], v4, sizeof v4)) return v4;
    return peer;
  }
  // One site or one customer line gets a whole /64 (RFC 6177): its 2^64 addresses are one client.
  std::memset(&a6.s6_addr[8], 0, 8);
  char v6[INET6_ADDRSTRLEN];
  if (!::inet_ntop(AF_INET6, &a6, v6, sizeof v6)) return peer;
  return std::string(v6) + "/64";
}

uint64_t Authenticator::failed_logins() const {
  std::lock_guard<std::mutex> l(mu_);
  return failed_logins_;
}

size_t Authenticator::sessions() const {
  std::lock_guard<std::mutex> l(mu_);
  return sessions_.size();
}

void Authenticator::RecordFailure(const std::string& name, const std::string& peer, int64_t now) {
  // REQUIRES: mu_
  ++failed_logins_;
  Failures& f = by_name_[name];
  ++f.count;
  f.last = now;
  f.last_ms = SteadyMillis();
  if (f.count >= settings_.max_failures_before_lock) f.locked_until = now + settings_.lock_seconds;
  std::deque<int64_t>& times = by_peer_[peer];
  times.push_back(now);
  while (!times.empty() && times.front() < now - settings_.per_address_window) times.pop_front();
  // Bounded memory under a spray of random names or addresses: forget quiet entries.
  if (by_name_.size() > 100000) {
    for (auto it = by_name_.begin(); it != by_name_.end();) {
      it = it->second.last < now - settings_.lock_seconds && it->second.locked_until < now ? by_name_.erase(it) : std::next(it);
    }
  }
  if (by_peer_.size() > 100000) {
    for (auto it = by_peer_.begin(); it != by_peer_.end();) {
      it = it->second.empty() || it->second.back() < now - settings_.per_address_window ? by_peer_.erase(it) : std::next(it);
    }
  }
}

std::variant<LoginResult, AuthRefusal> Authenticator::Login(const std::string& name, const std::string& password,
                                                            const std::string& peer_address) {
  const int64_t now = Now();
  const std::string peer = ClientKey(peer_address);
  {
    std::lock_guard<std::mutex> l(mu_);
    auto p = by_peer_.find(peer);
    if (p != by_peer_.end()) {
      while (!p->second.empty() && p->second.front() < now - settings_.per_address_window) p->second.pop_front();
      if (static_cast<int>(p->second.size()) >= settings_.per_address_failures) {
        ++failed_logins_;
        return AuthRefusal{429, "too many failed logins from this address; try again later",
                           p->second.front() + settings_.per_address_window - now};
      }
    }
    auto it = by_name_.find(name);
    if (it != by_name_.end() && it->second.count > 0) {
      const Failures& f = it->second;
      if (f.locked_until > now) {
        ++failed_logins_;
        return AuthRefusal{429, "this account is locked after repeated failed logins; an admin can unlock it", f.locked_until - now};
      }
      const int64_t wait_ms = 1000 * std::min<int64_t>(int64_t{1} << std::min(f.count - 1, 20), settings_.max_backoff_seconds);
      const int64_t left_ms = f.last_ms + wait_ms - SteadyMillis();
      if (left_ms > 0) {
        ++failed_logins_;
        return AuthRefusal{429, "wait before trying this name again (failed logins slow down)", (left_ms + 999) / 1000};
      }
    }
  }
  Result<std::optional<User>> user = ValidUserName(name) ? records_->GetUser(name) : Result<std::optional<User>>(std::optional<User>());
  if (!user.ok()) return AuthRefusal{503, "cannot read the user store: " + user.error().message(), 5};
  // An admin's unlock clears a persisted lock; a lock in the record also survives restarts.
  if (*user && (*user)->locked_until > now) {
    std::lock_guard<std::mutex> l(mu_);
    ++failed_logins_;
    return AuthRefusal{429, "this account is locked after repeated failed logins; an admin can unlock it", (*user)->locked_until - now};
  }
  {
    // scrypt takes tens of MiB and a large fraction of a second: only a few at once, or a
    // login storm takes the memory and the CPU. A login that finds every slot taken is
    // refused at once rather than parked: a parked login holds an API worker, and a few
    // hundred of them held every worker and stalled every other request for seconds.
    std::lock_guard<std::mutex> l(checks_mu_);
    if (checks_running_ >= settings_.password_checks_at_once) {
      return AuthRefusal{503, "too many logins at once; try again in a moment", 1};
    }
    ++checks_running_;
  }
  const std::string hash = *user && !(*user)->password_hash.empty() ? (*user)->password_hash : dummy_hash_;
  bool good = VerifyPassword(password, hash) && *user && !(*user)->disabled && !(*user)->password_hash.empty();
  {
    std::lock_guard<std::mutex> l(checks_mu_);
    --checks_running_;
  }
  if (!good) {
    int64_t lock_until = 0;
    int count = 0;
    {
      std::lock_guard<std::mutex> l(mu_);
      RecordFailure(name, peer, now);
      const Failures& f = by_name_[name];
      lock_until = f.locked_until;
      count = f.count;
    }
    if (*user && lock_until > now && (*user)->locked_until < lock_until) {
      // Persisted so that a restart does not lift it; only the lock fields are written, on
      // the record as it is now (not the copy read before the password check).
      (void)records_->UpdateUser(name, [&](User& u) {
        u.locked_until = std::max(u.locked_until, lock_until);
        u.failures = count;
        return Status::Ok();
      });
    }
    return AuthRefusal{401, "wrong user name or password, or the account is disabled", 0};
  }
  // The password may have changed (or the user been disabled) while it was being checked: the
  // session must not outlive that change.
  Result<std::optional<User>> current = records_->GetUser(name);
  if (!current.ok() || !*current || (*current)->disabled || (*current)->password_hash != hash) {
    return AuthRefusal{401, "wrong user name or password, or the account is disabled", 0};
  }
  std::lock_guard<std::mutex> l(mu_);
  by_name_.erase(name);
  // Sessions nobody presents again expire here rather than piling up.
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    bool dead = it->second.last_used + settings_.session_idle_seconds < now || it->second.created + settings_.session_max_seconds < now;
    it = dead ? sessions_.erase(it) : std::next(it);
  }
  LoginResult r;
  r.token = "mvs_" + HexEncode(RandomBytes(32));
  r.expires = now + settings_.session_max_seconds;
  r.user = **user;
  sessions_[Sha256Hex(r.token)] = Session{name, now, now};
  return r;
}

std::variant<Principal, AuthRefusal> Authenticator::Authenticate(const std::string& header, int count) {
  static const AuthRefusal kMissing{401, "send a valid session or API token as \"Authorization: Bearer <token>\"", 0};
  if (count != 1) return count == 0 ? kMissing : AuthRefusal{401, "send exactly one Authorization header", 0};
  if (header.size() < 8 || header.size() > 200 || header.compare(0, 7, "Bearer ") != 0) return kMissing;
  const std::string token = header.substr(7);
  const std::string hash = Sha256Hex(token);
  const int64_t now = Now();
  Principal p;
  int64_t issued = 0;
  if (token.rfind("mvs_", 0) == 0) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = sessions_.find(hash);
    if (it == sessions_.end()) return AuthRefusal{401, "the session has ended or never existed; log in again", 0};
    if (it->second.last_used + settings_.session_idle_seconds < now || it->second.created + settings_.session_max_seconds < now) {
      sessions_.erase(it);
      return AuthRefusal{401, "the session has expired; log in again", 0};
    }
    it->second.last_used = now;
    p.name = it->second.user;
    p.auth = "session";
    p.session_hash = hash;
    issued = it->second.created;
  } else if (token.rfind("mvt_", 0) == 0) {
    Result<std::optional<Token>> t = records_->TokenByHash(hash);
    if (!t.ok()) return AuthRefusal{503, "cannot read the token store: " + t.error().message(), 5};
    if (!*t) return AuthRefusal{401, "the API token is unknown or revoked", 0};
    if ((*t)->expires < now) return AuthRefusal{401, "the API token has expired; create a new one", 0};
    p.name = (*t)->user;
    p.auth = "token:" + (*t)->id;
    p.issued_by = (*t)->issued_by;
    issued = 0;  // tokens outlive password changes (they are revoked one by one)
    // last_used is written at most once a minute per token: not a synced write per request.
    bool flush = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      int64_t& last = last_used_flushed_[(*t)->id];
      if (last + 60 <= now) {
        last = now;
        flush = true;
      }
    }
    if (flush) (void)records_->TouchToken(hash, now);
  } else {
    return AuthRefusal{401, "the token is not a mailvault token", 0};
  }
  Result<std::optional<User>> user = records_->GetUser(p.name);
  if (!user.ok()) return AuthRefusal{503, "cannot read the user store: " + user.error().message(), 5};
  if (!*user || (*user)->disabled) return AuthRefusal{401, "the account is disabled or deleted", 0};
  if (issued && issued < (*user)->credentials_changed) {
    Logout(hash);
    return AuthRefusal{401, "the account's password or role changed since this session began; log in again", 0};
  }
  // Checked at every use, not only when the token was made: a role changed since must not
  // turn an admin's token into a way to read mail as someone else.
  if (!p.issued_by.empty() && ReadsContent((*user)->role)) {
    return AuthRefusal{401, "this API token was created by the admin " + p.issued_by + ", and a " + RoleName((*user)->role) +
                                " acts only with credentials of their own; log in and create a token (POST /api/v1/tokens)", 0};
  }
  p.role = (*user)->role;
  p.scope = (*user)->scope;
  return p;
}

void Authenticator::Logout(const std::string& session_hash) {
  std::lock_guard<std::mutex> l(mu_);
  sessions_.erase(session_hash);
}

void Authenticator::EndSessionsOf(const std::string& name) {
  std::lock_guard<std::mutex> l(mu_);
  for (auto it = sessions_.begin(); it != sessions_.end();) it = it->second.user == name ? sessions_.erase(it) : std::next(it);
  by_name_.erase(name);
}

}  // namespace mailvault::api
