// The catalog: a RocksDB database that answers "where is message X and what is it" without
// reading packs. It is derived data (BLUEPRINT decision 2): `rebuild` recreates it from the packs.
//
// Keys (docs/formats.md, "catalog"):
//   "m" id(32)             -> MessageMeta          (locations and sizes only)
//   "e" id(32) BE32(n)     -> Envelope n >= 1 of id (encrypted; envelope 0 is in the message record)
//   "s" BE64(sequence)     -> id                   (capture order, for list)
//   "p" BE64(pack number)  -> PackInfo
//   "d" BE32(dictionary)   -> location of a dictionary record
//   "c" BE64(change)       -> id [+ "D"]           (the change log: the index's persistent queue)
//   "z" BE64(pack)         -> ""                   (packs still holding purged records: to rewrite)
//   "r" BE32(dictionary)   -> varint replacement   (dictionaries a purge retires: trained on purged mail)
//   "x" "stats"            -> VaultStats
// Envelopes, the only values holding mail metadata, are sealed with the catalog key (AAD = the
// RocksDB key), so no address is readable on disk.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/envelope.h"
#include "core/fingerprint.h"
#include "core/result.h"
#include "vault/crypto.h"

namespace rocksdb {
class DB;
class WriteBatch;
}  // namespace rocksdb

namespace mailvault {

struct RecordLocation {
  uint64_t pack = 0;
  uint64_t offset = 0;
  uint32_t length = 0;  // the whole framed record
};

// What the catalog keeps per message: where it is, nothing of what it says. Headers are read
// from the message itself (it is one block decode away), which keeps the catalog small and
// free of mail content.
struct MessageMeta {
  RecordLocation where;      // the message's own record
  uint64_t block_start = 0;  // offset of the first record of its compression block
  uint64_t sequence = 0;     // capture order across the vault
  uint64_t raw_size = 0;
  bool has_warning = false;  // MIME analysis stopped short (a named limit, or truncation)
  std::vector<uint64_t> envelope_digests;  // keyed digests, see Vault::EnvelopeDigest
};

struct StoredEnvelope {
  Envelope envelope;
  RecordLocation where;  // the record that carries it (the message record for the first)
};

struct PackInfo {
  uint64_t number = 0;
  uint64_t applied_bytes = 0;  // pack bytes whose records are reflected in the catalog
  uint64_t records = 0;
  bool sealed = false;
  std::string sha256;          // of the sealed pack's bytes before its SEAL record
  // Closed without a seal: damage was found in it (or it is shorter than the catalog knew),
  // so nothing is ever appended to it again. Its intact records stay readable.
  bool closed = false;
  uint32_t generation = 0;  // PackHeader::generation of the file the catalog describes
};

struct VaultStats {
  uint64_t messages = 0;
  uint64_t raw_bytes = 0;
  uint64_t stored_bytes = 0;   // framed message records
  uint64_t envelopes = 0;
  uint64_t duplicates = 0;     // captures of a message already stored
  uint64_t next_sequence = 1;
  uint64_t next_change = 1;    // the change log's next number; the last change is next_change - 1
};

// One entry of the change log: a message was stored, a capture added an envelope to it, or it
// was purged (deleted). Everything derived from the vault (the full-text index) follows this log.
struct Change {
  uint64_t number = 0;
  ObjectId id;
  bool deleted = false;
};

class Catalog {
 public:
  ~Catalog();
  // Opens (creating if asked) the RocksDB database at dir.
  static Result<std::unique_ptr<Catalog>> Open(const std::string& dir, const SecretKey& catalog_key, bool create);

  Result<std::optional<MessageMeta>> GetMessage(const ObjectId& id) const;
  // Envelopes 1.. of a message (the first is inside its message record).
  Result<std::vector<StoredEnvelope>> GetEnvelopes(const ObjectId& id) const;
  Result<std::map<uint64_t, PackInfo>> Packs() const;
  Result<std::map<uint32_t, RecordLocation>> Dictionaries() const;
  Result<VaultStats> Stats() const;
  // Ids whose hex form starts with prefix (at most `limit` of them).
  Result<std::vector<ObjectId>> FindByPrefix(const std::string& hex_prefix, size_t limit) const;
  // Up to `limit` changes numbered above `after`, in order.
  Result<std::vector<Change>> ChangesAfter(uint64_t after, size_t limit) const;
  // Packs that still hold records of purged messages (or blocks of a retired dictionary).
  Result<std::vector<uint64_t>> ShredQueue() const;
  // Dictionaries retired by a purge -> their replacement (0 while none is trained yet).
  Result<std::map<uint32_t, uint32_t>> Retiring() const;
  // Visits messages in capture order until fn returns false.
  Status ForEachMessage(const std::function<bool(const ObjectId&, const MessageMeta&)>& fn) const;

  // Writes collected by the vault's single writer and applied atomically.
  class Batch {
   public:
    explicit Batch(Catalog* c);
    ~Batch();
    void PutMessage(const ObjectId& id, const MessageMeta& meta);
    void PutEnvelope(const ObjectId& id, uint32_t index, const StoredEnvelope& env);
    void PutPack(const PackInfo& info);
    void PutDictionary(uint32_t id, const RecordLocation& where);
    void PutStats(const VaultStats& stats);
    void PutChange(uint64_t number, const ObjectId& id, bool deleted = false);
    // Forgets a message: its entry, its place in capture order and its later envelopes.
    void DeleteMessage(const ObjectId& id, const MessageMeta& meta);
    void DeleteDictionary(uint32_t id);
    void PutShred(uint64_t pack);
    void DeleteShred(uint64_t pack);
    void PutRetire(uint32_t dictionary, uint32_t replacement);
    void DeleteRetire(uint32_t dictionary);
    size_t count() const;
    void Clear();

   private:
    friend class Catalog;
    Catalog* catalog_;
    std::unique_ptr<rocksdb::WriteBatch> batch_;
  };
  // Neither synced nor logged: the packs are the write-ahead log, and opening the vault replays
  // any pack bytes beyond PackInfo::applied_bytes.
  Status Commit(Batch* batch);
  // Writes the memtable out (the vault does before closing, when the disk has room). A purge's
  // pack rewrite flushes before it swaps the file in: the catalog is then its commit point.
  Status Flush();
  // Rewrites every file, dropping deleted values (after a purge: nothing of it stays in an SST).
  Status CompactAll();
  uint64_t MemtableBytes() const;
  // Clears RocksDB's background error after a failed write or flush (a full disk, EIO), once
  // the cause may have gone; until then every write fails. Ok when there was no error.
  Status Resume();

 private:
  Catalog(rocksdb::DB* db, const SecretKey& key, std::string dir);
  std::string SealValue(const std::string& key, const std::string& plain) const;
  Result<std::string> OpenValue(const std::string& key, const std::string& box) const;

  std::unique_ptr<rocksdb::DB> db_;
  SecretKey key_;
  std::string dir_;
};

std::string EncodeMessageMeta(const MessageMeta& m);
Result<MessageMeta> DecodeMessageMeta(std::string_view bytes);

}  // namespace mailvault
