#include "capture/password_check.h"

#include "core/bytes.h"
#include "vault/crypto.h"

namespace mailvault::capture {
namespace {

// "$scrypt$ln=15,r=8,p=1$" of "$scrypt$ln=15,r=8,p=1$<salt>$<hash>": the parameters.
std::string_view ParamsOf(std::string_view hash) {
  size_t third = hash.find('$', 8);
  return third == std::string_view::npos ? std::string_view() : hash.substr(0, third + 1);
}

}  // namespace

PasswordTable::PasswordTable(std::map<std::string, std::string> users, VerifyFn verify)
    : verify_(verify ? std::move(verify) : VerifyFn([](std::string_view p, std::string_view h) { return VerifyPassword(p, h); })) {
  std::map<std::string_view, size_t> params;
  for (auto& [login, hash] : users) {
    if (!ParamsOf(hash).empty()) ++params[ParamsOf(hash)];
  }
  std::string_view common = "$scrypt$ln=17,r=8,p=1$";  // HashPassword's default (vault/crypto.h)
  size_t most = 0;
  for (const auto& [p, n] : params) {
    if (n > most) {
      most = n;
      common = p;
    }
  }
  dummy_ = std::string(common) + Base64Encode(RandomBytes(16)) + "$" + Base64Encode(RandomBytes(32));
  for (auto& [login, hash] : users) users_.emplace(login, std::move(hash));
}

bool PasswordTable::Check(std::string_view user, std::string_view password) const {
  auto it = users_.find(user);
  if (it == users_.end()) {
    // The same work as for a real login, so that the time an answer takes does not say which
    // logins exist. The dummy's hash is random: no password matches it.
    verify_(password, dummy_);
    return false;
  }
  return verify_(password, it->second);
}

PasswordCheckPool::PasswordCheckPool(size_t threads, size_t max_pending) : max_pending_(std::max<size_t>(max_pending, 1)) {
  for (size_t i = 0; i < std::max<size_t>(threads, 1); ++i) threads_.emplace_back([this] { Work(); });
}

PasswordCheckPool::~PasswordCheckPool() { Stop(); }

bool PasswordCheckPool::Submit(std::function<void()> check) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_ || queue_.size() + running_ >= max_pending_) return false;
    queue_.push_back(std::move(check));
  }
  wake_.notify_one();
  return true;
}

void PasswordCheckPool::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
    queue_.clear();
  }
  wake_.notify_all();
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

size_t PasswordCheckPool::pending() const {
  std::lock_guard<std::mutex> l(mu_);
  return queue_.size() + running_;
}

void PasswordCheckPool::Work() {
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    wake_.wait(l, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    std::function<void()> check = std::move(queue_.front());
    queue_.pop_front();
    ++running_;
    l.unlock();
    check();
    l.lock();
    --running_;
  }
}

}  // namespace mailvault::capture
