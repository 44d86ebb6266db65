// Where the index lives and how its shards are laid out (docs/formats.md, "index"); shared by
// the writer and the searcher. Xapian's exceptions are turned into errors here too.
#pragma once

#include <xapian.h>

#include <cstdint>
#include <string>

#include "core/result.h"

namespace mailvault::index {

std::string IndexDir(const std::string& vault_dir);
constexpr size_t kMaxShards = 16;
// Per shard: the last change-log number whose documents are in the shard's last commit.
inline const std::string kAppliedKey = "mailvault.applied";
// Shard 0: the last entry of the control plane's tag change log the index has applied.
inline const std::string kTagsAppliedKey = "mailvault.tags_applied";

std::string ShardDir(const std::string& index_dir, size_t k);
// The number of shards, written once when the index is created (index/shards).
Result<size_t> ReadShardCount(const std::string& index_dir);
uint64_t ParseApplied(const std::string& s);
Error FromXapian(const Xapian::Error& e, const std::string& what);

}  // namespace mailvault::index
