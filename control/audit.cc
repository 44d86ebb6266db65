#include "control/audit.h"
#include "control/keys.h"

#include <openssl/hmac.h>

#include <chrono>

#include "core/bytes.h"

namespace mailvault::control {

struct AuditLog::Waiter {
  bool done = false;
  Status result;
};

namespace {

using nlohmann::json;

const std::string kGenesis(64, '0');

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json EntryBody(const AuditEntry& e) {
  // nlohmann's json objects keep keys sorted, so this dump is canonical.
  return json{{"seq", e.seq},         {"time_us", e.time_us},   {"user", e.event.user},
              {"role", e.event.role}, {"auth", e.event.auth},   {"source", e.event.source},
              {"action", e.event.action}, {"target", e.event.target}, {"status", e.event.status},
              {"details", e.event.details}, {"prev", e.prev}};
}

Result<AuditEntry> EntryFromJson(const json& j) {
  try {
    AuditEntry e;
    e.seq = j.at("seq").get<uint64_t>();
    e.time_us = j.at("time_us").get<int64_t>();
    e.event.user = j.at("user").get<std::string>();
    e.event.role = j.at("role").get<std::string>();
    e.event.auth = j.at("auth").get<std::string>();
    e.event.source = j.at("source").get<std::string>();
    e.event.action = j.at("action").get<std::string>();
    e.event.target = j.at("target").get<std::string>();
    e.event.status = j.at("status").get<int>();
    e.event.details = j.at("details");
    e.prev = j.at("prev").get<std::string>();
    e.hash = j.at("hash").get<std::string>();
    return e;
  } catch (const json::exception& ex) {
    return Corruption(std::string("audit entry: ") + ex.what());
  }
}

std::string FormatTime(int64_t us) {
  time_t t = static_cast<time_t>(us / 1000000);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(us % 1000000));
  return buf;
}

}  // namespace

std::string AuditCanonical(const AuditEntry& e) { return Dump(EntryBody(e)); }

std::string AuditHash(const SecretKey& key, const std::string& prev_hex, const AuditEntry& e) {
  const std::string msg = prev_hex + "\n" + AuditCanonical(e);
  unsigned char mac[32];
  unsigned int len = sizeof mac;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(kKeySize), reinterpret_cast<const unsigned char*>(msg.data()), msg.size(),
       mac, &len);
  return HexEncode(std::string_view(reinterpret_cast<const char*>(mac), len));
}

json AuditEntry::ToJson() const {
  json j = EntryBody(*this);
  j["hash"] = hash;
  j["time"] = FormatTime(time_us);
  return j;
}

std::string AuditLog::KeyOf(uint64_t seq) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%s%016llx", kAuditPrefix, static_cast<unsigned long long>(seq));
  return buf;
}

AuditLog::AuditLog(StateStore* store, SecretKey key, AuditHead head)
    : store_(store), key_(std::move(key)), head_(head), durable_head_(head) {
  committer_ = std::thread([this] { CommitLoop(); });
}

AuditLog::~AuditLog() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  committer_.join();
}

Result<std::unique_ptr<AuditLog>> AuditLog::Open(StateStore* store, const SecretKey& key) {
  AuditHead head{0, kGenesis};
  MV_ASSIGN_OR_RETURN(std::optional<std::string> h, store->Get(kHeadKey));
  if (h) {
    json j = json::parse(*h, nullptr, false);
    if (j.is_discarded() || !j.contains("seq") || !j["seq"].is_number_unsigned() || !j.contains("hash") || !j["hash"].is_string()) {
      return Corruption("audit head record is unreadable (`mailvault audit verify` says more)");
    }
    head.seq = j["seq"].get<uint64_t>();
    head.hash = j["hash"].get<std::string>();
  }
  return std::unique_ptr<AuditLog>(new AuditLog(store, key, head));
}

AuditHead AuditLog::head() const {
  std::lock_guard<std::mutex> l(mu_);
  return durable_head_;
}

Status AuditLog::Record(AuditEvent event) {
  auto waiter = std::make_shared<Waiter>();
  std::unique_lock<std::mutex> l(mu_);
  if (stop_) return Error(ErrorCode::kInternal, "the audit log is closed");
  AuditEntry e;
  e.seq = head_.seq + 1;
  e.time_us = NowMicros();
  e.event = std::move(event);
  e.prev = head_.hash;
  e.hash = AuditHash(key_, e.prev, e);
  head_ = AuditHead{e.seq, e.hash};
  queue_.emplace_back(std::move(e), waiter);
  work_cv_.notify_one();
  done_cv_.wait(l, [&] { return waiter->done; });
  return waiter->result;
}

void AuditLog::CommitLoop() {
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    work_cv_.wait(l, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and everything queued is written
    std::vector<std::pair<AuditEntry, std::shared_ptr<Waiter>>> batch(std::make_move_iterator(queue_.begin()),
                                                                       std::make_move_iterator(queue_.end()));
    queue_.clear();
    l.unlock();
    StateStore::Batch writes;
    for (const auto& [e, w] : batch) {
      json j = EntryBody(e);
      j["hash"] = e.hash;
      std::string box;
      Seal(store_->key(), kSealAad, Dump(j), &box);
      writes.emplace_back(KeyOf(e.seq), std::move(box));
    }
    // The head rides in the same synced batch, sealed like any state value.
    const AuditEntry& last = batch.back().first;
    std::string head_box;
    Seal(store_->key(), kHeadKey, Dump(json{{"seq", last.seq}, {"hash", last.hash}}), &head_box);
    writes.emplace_back(kHeadKey, std::move(head_box));
    Status s = store_->WriteRaw(writes);
    l.lock();
    Status failed = s.ok() ? Status::Ok()
                           : Status(Error(ErrorCode::kIoError, "the audit entry could not be written (" + s.error().message() +
                                                                   "); nothing was shown. Check the disk holding the vault."));
    if (s.ok()) {
      durable_head_ = AuditHead{last.seq, last.hash};
    } else {
      // Entries queued meanwhile were chained onto the lost ones: they fail too, and the
      // chain goes on from the last entry on disk.
      for (auto& q : queue_) batch.push_back(std::move(q));
      queue_.clear();
      head_ = durable_head_;
    }
    for (auto& [e, w] : batch) {
      w->done = true;
      w->result = failed;
    }
    done_cv_.notify_all();
  }
}

Result<std::vector<AuditEntry>> AuditLog::Read(const Filter& f) const {
  std::vector<AuditEntry> out;
  // Entries are sealed with kSealAad, not their key: read them raw.
  uint64_t seq = f.after_seq + 1;
  const uint64_t last = head().seq;
  for (; seq <= last && out.size() < f.limit; ++seq) {
    MV_ASSIGN_OR_RETURN(std::optional<std::string> box, store_->GetRaw(KeyOf(seq)));
    if (!box) continue;
    Result<std::string> plain = mailvault::Open(store_->key(), kSealAad, *box);
    if (!plain.ok()) return Corruption("audit entry " + std::to_string(seq) + " fails authentication (`mailvault audit verify`)");
    json j = json::parse(*plain, nullptr, false);
    if (j.is_discarded()) return Corruption("audit entry " + std::to_string(seq) + " is not JSON");
    MV_ASSIGN_OR_RETURN(AuditEntry e, EntryFromJson(j));
    if (e.time_us < f.from_us || e.time_us > f.to_us) continue;
    if (!f.user.empty() && e.event.user != f.user) continue;
    if (!f.action.empty() && e.event.action != f.action && e.event.action.rfind(f.action + ".", 0) != 0) continue;
    if (!f.target.empty() && e.event.target != f.target) continue;
    out.push_back(std::move(e));
  }
  return out;
}

Result<AuditVerifyReport> AuditLog::Verify(const StateStore& store, const SecretKey& key) {
  AuditVerifyReport r;
  auto problem = [&](uint64_t seq, std::string kind, std::string detail) {
    if (r.problems.size() < 20) r.problems.push_back(AuditProblem{seq, std::move(kind), std::move(detail)});
  };
  AuditHead head{0, kGenesis};
  MV_ASSIGN_OR_RETURN(std::optional<std::string> h, store.Get(kHeadKey));
  bool have_head = false;
  if (h) {
    json j = json::parse(*h, nullptr, false);
    if (!j.is_discarded() && j.contains("seq") && j["seq"].is_number_unsigned() && j.contains("hash") && j["hash"].is_string()) {
      head.seq = j["seq"].get<uint64_t>();
      head.hash = j["hash"].get<std::string>();
      have_head = true;
    } else {
      problem(0, "unreadable", "the head record is not what mailvault writes");
    }
  }
  std::string prev = kGenesis;
  uint64_t expected = 1;
  // Every position from 1 to the highest key present (Last() only finds the key: entries are
  // sealed with kSealAad, so they are read raw, one by one).
  MV_ASSIGN_OR_RETURN(auto last, store.LastKey(kAuditPrefix));
  uint64_t max_seq = 0;
  if (last) max_seq = std::strtoull(last->c_str() + 2, nullptr, 16);
  for (uint64_t key_seq = 1; key_seq <= max_seq; ++key_seq) {
    MV_ASSIGN_OR_RETURN(std::optional<std::string> box, store.GetRaw(KeyOf(key_seq)));
    if (!box) continue;  // a gap: reported when the next entry's seq or prev does not follow
    ++r.entries;
    Result<std::string> plain = mailvault::Open(store.key(), kSealAad, *box);
    if (!plain.ok()) {
      problem(key_seq, "edited", "the stored bytes fail authentication (changed without the vault's key)");
      ++expected;
      prev.clear();
      continue;
    }
    json j = json::parse(*plain, nullptr, false);
    Result<AuditEntry> e = j.is_discarded() ? Result<AuditEntry>(Corruption("not JSON")) : EntryFromJson(j);
    if (!e.ok()) {
      problem(key_seq, "edited", e.error().message());
      ++expected;
      prev.clear();
      continue;
    }
    if (e->seq != key_seq) {
      problem(key_seq, "reordered", "the entry stored at position " + std::to_string(key_seq) + " is entry " + std::to_string(e->seq));
    } else if (e->seq != expected) {
      problem(key_seq, "removed", "entries " + std::to_string(expected) + " to " + std::to_string(e->seq - 1) + " are missing");
    } else if (!prev.empty() && e->prev != prev) {
      problem(key_seq, "removed", "its previous-entry hash does not match the entry before it (an entry was removed or replaced)");
    }
    if (AuditHash(key, e->prev, *e) != e->hash) {
      problem(key_seq, "edited", "its content does not match its hash (changed after it was written)");
    }
    prev = e->hash;
    expected = key_seq + 1;
    r.head = AuditHead{e->seq, e->hash};
  }
  if (have_head) {
    if (head.seq > max_seq) {
      problem(head.seq, "truncated", "the head record says the log reaches entry " + std::to_string(head.seq) +
                                         " but the last entry is " + std::to_string(max_seq));
    } else if (head.seq < max_seq) {
      problem(head.seq, "inserted", "entries after the head record's entry " + std::to_string(head.seq) + " were added");
    } else if (max_seq && head.hash != r.head.hash) {
      problem(head.seq, "edited", "the last entry's hash differs from the head record's");
    }
  } else if (max_seq) {
    problem(0, "truncated", "the head record is missing");
  }
  // A consistent chain can still be an older one: the head put back with the entries after it
  // deleted. The store's digest (state.h) catches any value rolled back, removed or put back.
  MV_ASSIGN_OR_RETURN(StateStore::DigestReport d, store.VerifyDigest());
  r.state_values = d.values;
  r.state_generation = d.generation;
  if (!d.problem.empty()) problem(0, "rolled back", "state store: " + d.problem);
  return r;
}

}  // namespace mailvault::control
