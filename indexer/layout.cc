#include "indexer/layout.h"

#include "core/file_util.h"

namespace mailvault::index {

std::string IndexDir(const std::string& vault_dir) { return vault_dir + "/index"; }


Error FromXapian(const Xapian::Error& e, const std::string& what) {
  std::string m = "index " + what + ": " + e.get_type() + ": " + e.get_msg();
  // Xapian's exceptions are not polymorphic: tell them apart by their type name.
  const std::string type = e.get_type();
  if (type == "DatabaseLockError") {
    return Error(ErrorCode::kBusy, m + " (another mailvault process is writing the index)");
  }
  if (type == "DatabaseCorruptError") {
    return Corruption(m + " (run `mailvault reindex` to rebuild the index from the vault)");
  }
  if (type == "DatabaseOpeningError" || type == "DatabaseNotFoundError") {
    return NotFound(m + " (no index yet: `mailvault reindex` builds it from the vault)");
  }
  return IoError(m);
}

uint64_t ParseApplied(const std::string& s) {
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return 0;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

std::string ShardDir(const std::string& dir, size_t k) { return dir + "/shard" + std::to_string(k); }

Result<size_t> ReadShardCount(const std::string& dir) {
  MV_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(dir + "/shards", 64));
  size_t n = 0;
  for (char c : text) {
    if (c >= '0' && c <= '9') n = n * 10 + static_cast<size_t>(c - '0');
  }
  if (n < 1 || n > kMaxShards) return Corruption(dir + "/shards does not hold a shard count (run `mailvault reindex`)");
  return n;
}


}  // namespace mailvault::index
