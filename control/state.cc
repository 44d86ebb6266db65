#include "vault/purposes.h"
#include "control/state.h"

#include "core/bytes.h"
#include "vault/patient_fs.h"

#include <sys/stat.h>

#include <cerrno>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <chrono>
#include <map>

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

namespace mailvault::control {
namespace {

Error FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.IsIOError() && s.ToString().find("lock") != std::string::npos) {
    return Error(ErrorCode::kBusy, what + ": another process (a running `mailvault serve`?) has the state store open: " +
                                       s.ToString() + " (stop it, or make the change through the REST API)");
  }
  if (s.IsCorruption()) return Error(ErrorCode::kCorruption, what + ": " + s.ToString());
  return Error(ErrorCode::kIoError, what + ": " + s.ToString());
}

// Sorts before every caller's prefix (they are printable), so no Scan meets it.
const std::string kDigestKey("\0digest", 7);

std::string Hmac(const SecretKey& key, std::string_view a, std::string_view b) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  std::string in;
  in.reserve(8 + a.size() + b.size());
  char n[8];
  EncodeU64(n, a.size());  // length-prefixed: (k, v) pairs cannot run into each other
  in.append(n, 8);
  in.append(a);
  in.append(b);
  HMAC(EVP_sha256(), key.data(), kKeySize, reinterpret_cast<const unsigned char*>(in.data()), in.size(), mac, &len);
  return std::string(reinterpret_cast<const char*>(mac), len);
}

void XorInto(std::string* sum, const std::string& h) {
  for (size_t i = 0; i < sum->size() && i < h.size(); ++i) (*sum)[i] = static_cast<char>((*sum)[i] ^ h[i]);
}

}  // namespace

StateStore::StateStore(std::unique_ptr<rocksdb::DB> db, SecretKey key)
    : db_(std::move(db)), key_(std::move(key)), digest_key_(DeriveKey(key_, "mailvault state", purpose::kStateDigest)) {}
StateStore::~StateStore() {
  std::lock_guard<std::mutex> l(failure_mu_);
  // Closing a RocksDB whose log writer failed runs into the same assertion as writing to it:
  // leave it to the process exit (the log on disk is what the next open replays).
  if (!write_failure_.empty()) (void)db_.release();
}

std::string StateStore::write_failure() const {
  std::lock_guard<std::mutex> l(failure_mu_);
  return write_failure_;
}

Result<std::unique_ptr<StateStore>> StateStore::Open(const std::string& vault_dir, const SecretKey& key) {
  rocksdb::Options options;
  options.create_if_missing = true;
  options.max_open_files = 64;
  options.keep_log_file_num = 4;
  // Its files wait out a full or failing disk rather than fail: RocksDB 7.8 aborts on the next
  // write to a log that failed (vault/patient_fs.h). A write that still fails (an error no
  // waiting cures) stops the store's writes (write_failure()).
  options.env = PatientEnv();
  rocksdb::DB* raw = nullptr;
  const std::string dir = vault_dir + "/state";
  // Owner-only whatever the umask (RocksDB would make it 0755 & ~umask).
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return ErrnoError("cannot create", dir, errno);
  rocksdb::Status s = rocksdb::DB::Open(options, dir, &raw);
  if (!s.ok()) return FromRocks(s, "open " + dir);
  std::unique_ptr<StateStore> store(new StateStore(std::unique_ptr<rocksdb::DB>(raw), key));
  MV_RETURN_IF_ERROR(store->LoadOrStartDigest());
  return store;
}

namespace {
std::string EncodeDigest(uint64_t generation, int64_t started_us, uint64_t adopted, const std::string& sum) {
  ByteWriter w;
  w.PutU8(1);
  w.PutU64(generation);
  w.PutU64(static_cast<uint64_t>(started_us));
  w.PutU64(adopted);
  w.PutBytes(sum);
  return w.Take();
}
}  // namespace

Status StateStore::LoadOrStartDigest() {
  std::lock_guard<std::mutex> l(write_mu_);
  MV_ASSIGN_OR_RETURN(std::optional<std::string> rec, GetRaw(kDigestKey));
  if (rec) {
    // body || HMAC(body)
    if (rec->size() != 1 + 24 + 32 + 32 || Hmac(digest_key_, kDigestKey, rec->substr(0, rec->size() - 32)) != rec->substr(rec->size() - 32)) {
      return Error(ErrorCode::kCorruption, "state store: its digest record fails authentication (edited, or another vault's key); "
                                           "`mailvault audit verify` says more");
    }
    digest_.generation = DecodeU64(rec->data() + 1);
    digest_.started_us = static_cast<int64_t>(DecodeU64(rec->data() + 9));
    digest_.adopted = DecodeU64(rec->data() + 17);
    digest_.xor_sum = rec->substr(25, 32);
    generation_.store(digest_.generation);
    return Status::Ok();
  }
  // A new store, or one written before digests: start from what is there, and say so (the
  // record keeps how many values were adopted, and when).
  Digest d;
  d.started_us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    if (it->key() == rocksdb::Slice(kDigestKey)) continue;
    XorInto(&d.xor_sum, Hmac(digest_key_, it->key().ToStringView(), it->value().ToStringView()));
    ++d.adopted;
  }
  if (!it->status().ok()) return FromRocks(it->status(), "state store scan");
  std::string body = EncodeDigest(0, d.started_us, d.adopted, d.xor_sum);
  rocksdb::WriteOptions wo;
  wo.sync = true;
  rocksdb::Status s = db_->Put(wo, kDigestKey, body + Hmac(digest_key_, kDigestKey, body));
  if (!s.ok()) return FromRocks(s, "state store write");
  digest_ = d;
  return Status::Ok();
}

Result<StateStore::DigestReport> StateStore::VerifyDigest() const {
  DigestReport r;
  MV_ASSIGN_OR_RETURN(std::optional<std::string> rec, GetRaw(kDigestKey));
  if (!rec) {
    r.problem = "the digest record is missing (removed; the store may have been rolled back)";
    return r;
  }
  if (rec->size() != 1 + 24 + 32 + 32 || Hmac(digest_key_, kDigestKey, rec->substr(0, rec->size() - 32)) != rec->substr(rec->size() - 32)) {
    r.problem = "the digest record fails authentication (edited without the vault's key)";
    return r;
  }
  r.generation = DecodeU64(rec->data() + 1);
  r.started_us = static_cast<int64_t>(DecodeU64(rec->data() + 9));
  r.adopted_values = DecodeU64(rec->data() + 17);
  std::string want = rec->substr(25, 32);
  std::string sum(32, '\0');
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    if (it->key() == rocksdb::Slice(kDigestKey)) continue;
    XorInto(&sum, Hmac(digest_key_, it->key().ToStringView(), it->value().ToStringView()));
    ++r.values;
  }
  if (!it->status().ok()) return FromRocks(it->status(), "state store scan");
  if (sum != want) {
    r.problem = "the stored values do not match the store's digest (generation " + std::to_string(r.generation) +
                "): a value was rolled back to an older version, removed or put back without the vault's key";
  }
  return r;
}

Result<std::string> StateStore::Unseal(std::string_view key, std::string_view box) const {
  Result<std::string> plain = mailvault::Open(key_, key, box);
  if (!plain.ok()) {
    return Error(ErrorCode::kCorruption, "state store: the value of a \"" + std::string(key.substr(0, 2)) +
                                             "\" key fails authentication (edited, or another vault's key)");
  }
  return plain;
}

Result<std::optional<std::string>> StateStore::Get(std::string_view key) const {
  MV_ASSIGN_OR_RETURN(std::optional<std::string> box, GetRaw(key));
  if (!box) return std::optional<std::string>();
  MV_ASSIGN_OR_RETURN(std::string plain, Unseal(key, *box));
  return std::optional<std::string>(std::move(plain));
}

Result<std::optional<std::string>> StateStore::GetRaw(std::string_view key) const {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), rocksdb::Slice(key.data(), key.size()), &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) return FromRocks(s, "state store read");
  return std::optional<std::string>(std::move(value));
}

Status StateStore::Write(const Batch& batch, bool durable) {
  Batch sealed;
  sealed.reserve(batch.size());
  for (const auto& [k, v] : batch) {
    if (!v) {
      sealed.emplace_back(k, std::nullopt);
      continue;
    }
    std::string box;
    Seal(key_, k, *v, &box);
    sealed.emplace_back(k, std::move(box));
  }
  return WriteRaw(sealed, durable);
}

Status StateStore::WriteRaw(const Batch& batch, bool durable) {
  std::lock_guard<std::mutex> l(write_mu_);
  if (std::string failure = write_failure(); !failure.empty()) {
    return Error(ErrorCode::kIoError, "the state store takes no more writes after a failed one (" + failure +
                                          "); restart mailvault once the disk is fixed (the packaged service restarts by itself)");
  }
  // The digest moves with the batch: out go the old values' terms, in go the new ones.
  std::string sum = digest_.xor_sum;
  std::map<std::string, std::optional<std::string>, std::less<>> current;  // this batch's own earlier writes
  rocksdb::WriteBatch wb;
  for (const auto& [k, v] : batch) {
    if (k == kDigestKey) return InvalidArgument("state store: the digest key is the store's own");
    std::optional<std::string> old;
    if (auto it = current.find(k); it != current.end()) {
      old = it->second;
    } else {
      MV_ASSIGN_OR_RETURN(old, GetRaw(k));
    }
    if (old) XorInto(&sum, Hmac(digest_key_, k, *old));
    if (v) XorInto(&sum, Hmac(digest_key_, k, *v));
    current[k] = v;
    if (v) wb.Put(k, *v);
    else wb.Delete(k);
  }
  std::string body = EncodeDigest(digest_.generation + 1, digest_.started_us, digest_.adopted, sum);
  wb.Put(kDigestKey, body + Hmac(digest_key_, kDigestKey, body));
  rocksdb::WriteOptions wo;
  wo.sync = durable;  // acknowledged means on disk, unless the caller can recompute it
  rocksdb::Status s = db_->Write(wo, &wb);
  if (!s.ok()) {
    // Not retried and not resumed: see write_failure().
    std::lock_guard<std::mutex> f(failure_mu_);
    write_failure_ = s.ToString();
    return FromRocks(s, "state store write");
  }
  digest_.generation++;
  generation_.store(digest_.generation);
  digest_.xor_sum = std::move(sum);
  return Status::Ok();
}

Result<uint64_t> StateStore::ScanAllRaw(const std::function<void(std::string_view, std::string_view)>& fn) const {
  const rocksdb::Snapshot* snap = nullptr;
  uint64_t generation = 0;
  {
    std::lock_guard<std::mutex> l(write_mu_);  // no write between the snapshot and its generation
    snap = db_->GetSnapshot();
    generation = digest_.generation;
  }
  rocksdb::ReadOptions ro;
  ro.snapshot = snap;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    std::string_view k(it->key().data(), it->key().size());
    if (k == kDigestKey) continue;
    fn(k, std::string_view(it->value().data(), it->value().size()));
  }
  rocksdb::Status s = it->status();
  it.reset();
  db_->ReleaseSnapshot(snap);
  if (!s.ok()) return FromRocks(s, "state store scan");
  return generation;
}

Status StateStore::Scan(std::string_view prefix, const std::function<bool(std::string_view, std::string_view)>& fn) const {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(rocksdb::Slice(prefix.data(), prefix.size())); it->Valid() && it->key().starts_with(rocksdb::Slice(prefix.data(), prefix.size())); it->Next()) {
    std::string_view k(it->key().data(), it->key().size());
    MV_ASSIGN_OR_RETURN(std::string v, Unseal(k, std::string_view(it->value().data(), it->value().size())));
    if (!fn(k, v)) break;
  }
  if (!it->status().ok()) return FromRocks(it->status(), "state store scan");
  return Status::Ok();
}

Result<std::optional<std::string>> StateStore::LastKey(std::string_view prefix) const {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  std::string upper(prefix);
  upper.push_back('\xff');  // callers' keys continue with printable characters
  it->SeekForPrev(upper);
  if (!it->status().ok()) return FromRocks(it->status(), "state store scan");
  if (!it->Valid() || !it->key().starts_with(rocksdb::Slice(prefix.data(), prefix.size()))) return std::optional<std::string>();
  return std::optional<std::string>(it->key().ToString());
}

}  // namespace mailvault::control
