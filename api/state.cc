#include "api/state.h"

#include <sys/stat.h>

#include <cerrno>

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

namespace mailvault::api {
namespace {

Error FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.IsIOError() && s.ToString().find("lock") != std::string::npos) {
    return Error(ErrorCode::kBusy, what + ": another process (a running `mailvault serve`?) has the state store open: " +
                                       s.ToString() + " (stop it, or make the change through the REST API)");
  }
  if (s.IsCorruption()) return Error(ErrorCode::kCorruption, what + ": " + s.ToString());
  return Error(ErrorCode::kIoError, what + ": " + s.ToString());
}

}  // namespace

StateStore::StateStore(std::unique_ptr<rocksdb::DB> db, SecretKey key) : db_(std::move(db)), key_(std::move(key)) {}
StateStore::~StateStore() = default;

Result<std::unique_ptr<StateStore>> StateStore::Open(const std::string& vault_dir, const SecretKey& key) {
  rocksdb::Options options;
  options.create_if_missing = true;
  options.max_open_files = 64;
  options.keep_log_file_num = 4;
  rocksdb::DB* raw = nullptr;
  const std::string dir = vault_dir + "/state";
  // Owner-only whatever the umask (RocksDB would make it 0755 & ~umask).
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return ErrnoError("cannot create", dir, errno);
  rocksdb::Status s = rocksdb::DB::Open(options, dir, &raw);
  if (!s.ok()) return FromRocks(s, "open " + dir);
  return std::unique_ptr<StateStore>(new StateStore(std::unique_ptr<rocksdb::DB>(raw), key));
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
  rocksdb::WriteBatch wb;
  for (const auto& [k, v] : batch) {
    if (v) wb.Put(k, *v);
    else wb.Delete(k);
  }
  rocksdb::WriteOptions wo;
  wo.sync = durable;  // acknowledged means on disk, unless the caller can recompute it
  rocksdb::Status s = db_->Write(wo, &wb);
  if (!s.ok()) return FromRocks(s, "state store write");
  return Status::Ok();
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

}  // namespace mailvault::api
