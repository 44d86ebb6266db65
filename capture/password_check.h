// SMTP AUTH password checks, kept off the I/O threads and uniform in cost.
//
//   - PasswordTable: the auth-users file's logins and hashes. A login that is not in it costs
//     a scrypt with the same parameters as the real ones (a dummy hash), so how long an answer
//     takes does not tell which logins exist.
//   - PasswordCheckPool: a few threads that run the checks, with a cap on checks queued or
//     running. scrypt takes tens of megabytes and a good fraction of a second by design; run on
//     the I/O threads, a storm of AUTH attempts would stall every other session. When the pool
//     is full the caller answers 454 4.7.0 (try again later) instead of queueing without end.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace mailvault::capture {

class PasswordTable {
 public:
  // How a password is checked against a hash: VerifyPassword (vault/crypto.h); tests count.
  using VerifyFn = std::function<bool(std::string_view password, std::string_view hash)>;

  PasswordTable() : PasswordTable(std::map<std::string, std::string>{}) {}
  // users: login -> "$scrypt$..." hash.
  explicit PasswordTable(std::map<std::string, std::string> users, VerifyFn verify = {});

  bool empty() const { return users_.empty(); }
  // True when `password` is `user`'s. Runs one scrypt derivation whether or not the user
  // exists (an unknown user is checked against the dummy hash).
  bool Check(std::string_view user, std::string_view password) const;
  // The hash unknown users are checked against: the parameters most users' hashes have, a
  // random salt and a random hash no password derives to.
  const std::string& dummy_hash() const { return dummy_; }

 private:
  std::map<std::string, std::string, std::less<>> users_;
  std::string dummy_;
  VerifyFn verify_;
};

class PasswordCheckPool {
 public:
  // threads: how many checks run at once; max_pending: checks queued or running, at most.
  PasswordCheckPool(size_t threads, size_t max_pending);
  ~PasswordCheckPool();
  PasswordCheckPool(const PasswordCheckPool&) = delete;
  PasswordCheckPool& operator=(const PasswordCheckPool&) = delete;

  // Queues a check. False (and nothing queued) when max_pending are already queued or
  // running, or the pool is stopping: the caller answers "454 4.7.0" at once.
  bool Submit(std::function<void()> check);
  // Drops what is queued (those checks never run), waits for the running ones and joins.
  void Stop();
  size_t pending() const;

 private:
  void Work();

  const size_t max_pending_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> queue_;  // REQUIRES: mu_
  size_t running_ = 0;                       // REQUIRES: mu_
  bool stopping_ = false;                    // REQUIRES: mu_
  std::vector<std::thread> threads_;
};

}  // namespace mailvault::capture
