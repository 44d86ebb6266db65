#include "vault/catalog.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include "core/bytes.h"
#include "vault/patient_fs.h"

namespace mailvault {
namespace {

constexpr uint8_t kMetaVersion = 1;

std::string MessageKey(const ObjectId& id) { return "m" + std::string(id.bytes()); }
std::string EnvelopeKeyPrefix(const ObjectId& id) { return "e" + std::string(id.bytes()); }
std::string PackKey(uint64_t n) { return "p" + BigEndian64(n); }
std::string SequenceKey(uint64_t s) { return "s" + BigEndian64(s); }
std::string ChangeKey(uint64_t c) { return "c" + BigEndian64(c); }
std::string DictionaryKey(uint32_t d) { return "d" + BigEndian64(d).substr(4); }
const std::string kStatsKey = "xstats";
std::string ShredKey(uint64_t n) { return "z" + BigEndian64(n); }
std::string RetireKey(uint32_t d) { return "r" + BigEndian64(d).substr(4); }

Error FromRocks(const rocksdb::Status& s, const std::string& what) {
  std::string m = "catalog " + what + ": " + s.ToString();
  if (s.IsIOError() && s.ToString().find("lock") != std::string::npos) {
    return Error(ErrorCode::kBusy, m + " (another mailvault process has the vault open)");
  }
  if (s.IsCorruption()) return Corruption(m + " (run `mailvault rebuild` to recreate the catalog from the packs)");
  return IoError(m);
}

void PutLocation(ByteWriter* w, const RecordLocation& l) {
  w->PutVarint(l.pack);
  w->PutVarint(l.offset);
  w->PutVarint(l.length);
}
bool GetLocation(ByteReader* r, RecordLocation* l) {
  uint64_t len;
  if (!r->GetVarint(&l->pack) || !r->GetVarint(&l->offset) || !r->GetVarint(&len)) return false;
  l->length = static_cast<uint32_t>(len);
  return true;
}

std::string EncodePackInfo(const PackInfo& p) {
  ByteWriter w;
  w.PutU8(p.generation ? 2 : 1);  // version 2 adds the generation
  w.PutVarint(p.number);
  w.PutVarint(p.applied_bytes);
  w.PutVarint(p.records);
  w.PutU8(p.sealed ? 1 : p.closed ? 2 : 0);  // 2 (closed) is read as open by older versions
  w.PutString(p.sha256);
  if (p.generation) w.PutVarint(p.generation);
  return w.Take();
}
bool DecodePackInfo(std::string_view b, PackInfo* p) {
  ByteReader r(b);
  uint8_t v, sealed;
  std::string_view sha;
  if (!r.GetU8(&v) || (v != 1 && v != 2) || !r.GetVarint(&p->number) || !r.GetVarint(&p->applied_bytes) ||
      !r.GetVarint(&p->records) || !r.GetU8(&sealed) || !r.GetString(&sha)) {
    return false;
  }
  uint64_t generation = 0;
  if (v == 2 && (!r.GetVarint(&generation) || generation > UINT32_MAX)) return false;
  p->generation = static_cast<uint32_t>(generation);
  p->sealed = sealed == 1;
  p->closed = sealed == 2;
  p->sha256 = std::string(sha);
  return true;
}

std::string EncodeStats(const VaultStats& s) {
  ByteWriter w;
  w.PutU8(2);
  for (uint64_t v : {s.messages, s.raw_bytes, s.stored_bytes, s.envelopes, s.duplicates, s.next_sequence, s.next_change}) {
    w.PutVarint(v);
  }
  return w.Take();
}
bool DecodeStats(std::string_view b, VaultStats* s) {
  ByteReader r(b);
  uint8_t v;
  return r.GetU8(&v) && v == 2 && r.GetVarint(&s->messages) && r.GetVarint(&s->raw_bytes) &&
         r.GetVarint(&s->stored_bytes) && r.GetVarint(&s->envelopes) && r.GetVarint(&s->duplicates) &&
         r.GetVarint(&s->next_sequence) && r.GetVarint(&s->next_change);
}

}  // namespace

std::string EncodeMessageMeta(const MessageMeta& m) {
  ByteWriter w;
  w.PutU8(kMetaVersion);
  PutLocation(&w, m.where);
  w.PutVarint(m.where.offset - m.block_start);
  w.PutVarint(m.sequence);
  w.PutVarint(m.raw_size);
  w.PutU8(m.has_warning ? 1 : 0);
  w.PutVarint(m.envelope_digests.size());
  for (uint64_t d : m.envelope_digests) w.PutU64(d);
  return w.Take();
}

Result<MessageMeta> DecodeMessageMeta(std::string_view bytes) {
  ByteReader r(bytes);
  MessageMeta m;
  uint8_t version, flags;
  uint64_t back, ndig;
  if (!r.GetU8(&version) || version != kMetaVersion || !GetLocation(&r, &m.where) || !r.GetVarint(&back) ||
      back > m.where.offset || !r.GetVarint(&m.sequence) || !r.GetVarint(&m.raw_size) || !r.GetU8(&flags) ||
      !r.GetVarint(&ndig) || ndig > r.remaining() / 8) {
    return Corruption("catalog entry for a message is damaged (run `mailvault rebuild`)");
  }
  m.block_start = m.where.offset - back;
  m.has_warning = flags & 1;
  for (uint64_t i = 0; i < ndig; ++i) {
    uint64_t d;
    if (!r.GetU64(&d)) return Corruption("catalog entry for a message is damaged");
    m.envelope_digests.push_back(d);
  }
  return m;
}

Catalog::Catalog(rocksdb::DB* db, const SecretKey& key, std::string dir) : db_(db), key_(key), dir_(std::move(dir)) {}
// No flush here: its files wait out a full disk, and a close must not wait forever. The vault
// flushes before closing when there is room (Vault::~Vault); otherwise the memtable is lost
// and the next open replays it from the packs.
Catalog::~Catalog() = default;

Result<std::unique_ptr<Catalog>> Catalog::Open(const std::string& dir, const SecretKey& key, bool create) {
  rocksdb::Options options;
  options.create_if_missing = create;
  options.error_if_exists = false;
  // A small footprint: the catalog is a few hundred bytes per message.
  options.write_buffer_size = 16 << 20;
  options.max_write_buffer_number = 2;
  options.keep_log_file_num = 2;
  options.max_log_file_size = 1 << 20;
  options.recycle_log_file_num = 0;
  options.info_log_level = rocksdb::WARN_LEVEL;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(16 << 20);
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  // Values are encrypted and do not compress; keys compress well enough without it.
  options.compression = rocksdb::kNoCompression;
  // Its files wait out a full or failing disk instead of failing: RocksDB 7.8 aborts on a
  // failed flush (vault/patient_fs.h).
  options.env = PatientEnv();
  // Closing never flushes by itself: with the disk full that flush would wait forever (the
  // files are patient). The vault flushes before closing when there is room (Flush below);
  // otherwise the memtable is simply lost and replayed from the packs at the next open.
  options.avoid_flush_during_shutdown = true;
  rocksdb::DB* db = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(options, dir, &db);
  if (!s.ok()) return FromRocks(s, "open " + dir);
  return std::unique_ptr<Catalog>(new Catalog(db, key, dir));
}

std::string Catalog::SealValue(const std::string& key, const std::string& plain) const {
  std::string out;
  Seal(key_, key, plain, &out);
  return out;
}

Result<std::string> Catalog::OpenValue(const std::string& key, const std::string& box) const {
  Result<std::string> r = mailvault::Open(key_, key, box);
  if (!r.ok()) return Corruption("a catalog value fails authentication (damaged, or written with another key); run `mailvault rebuild`");
  return r;
}

Result<std::optional<MessageMeta>> Catalog::GetMessage(const ObjectId& id) const {
  std::string key = MessageKey(id), value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), key, &value);
  if (s.IsNotFound()) return std::optional<MessageMeta>();
  if (!s.ok()) return FromRocks(s, "read");
  MV_ASSIGN_OR_RETURN(MessageMeta m, DecodeMessageMeta(value));
  return std::optional<MessageMeta>(std::move(m));
}

Result<std::vector<StoredEnvelope>> Catalog::GetEnvelopes(const ObjectId& id) const {
  std::vector<StoredEnvelope> out;
  std::string prefix = EnvelopeKeyPrefix(id);
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    MV_ASSIGN_OR_RETURN(std::string plain, OpenValue(it->key().ToString(), it->value().ToString()));
    ByteReader r(plain);
    StoredEnvelope se;
    std::string_view env;
    if (!GetLocation(&r, &se.where) || !r.GetString(&env, 1 << 26)) return Corruption("catalog envelope entry is damaged");
    MV_ASSIGN_OR_RETURN(se.envelope, Envelope::Decode(env));
    out.push_back(std::move(se));
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scan");
  return out;
}

Result<std::map<uint64_t, PackInfo>> Catalog::Packs() const {
  std::map<uint64_t, PackInfo> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek("p"); it->Valid() && it->key().starts_with("p"); it->Next()) {
    PackInfo p;
    if (!DecodePackInfo(it->value().ToStringView(), &p)) return Corruption("catalog pack entry is damaged; run `mailvault rebuild`");
    out[p.number] = p;
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scan");
  return out;
}

Result<std::map<uint32_t, RecordLocation>> Catalog::Dictionaries() const {
  std::map<uint32_t, RecordLocation> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek("d"); it->Valid() && it->key().starts_with("d"); it->Next()) {
    ByteReader r(it->value().ToStringView());
    RecordLocation l;
    if (it->key().size() != 5 || !GetLocation(&r, &l)) return Corruption("catalog dictionary entry is damaged");
    out[static_cast<uint32_t>(FromBigEndian64(std::string(4, '\0') + it->key().ToString().substr(1)))] = l;
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scan");
  return out;
}

Result<VaultStats> Catalog::Stats() const {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), kStatsKey, &value);
  VaultStats st;
  if (s.IsNotFound()) return st;
  if (!s.ok()) return FromRocks(s, "read");
  if (!DecodeStats(value, &st)) return Corruption("catalog statistics are damaged; run `mailvault rebuild`");
  return st;
}

Result<std::vector<ObjectId>> Catalog::FindByPrefix(const std::string& hex_prefix, size_t limit) const {
  std::string even = hex_prefix.substr(0, hex_prefix.size() & ~size_t{1}), bytes;
  if (!HexDecode(even, &bytes)) return InvalidArgument("'" + hex_prefix + "' is not a message id (hex digits expected)");
  std::vector<ObjectId> out;
  std::string prefix = "m" + bytes;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix) && out.size() < limit; it->Next()) {
    if (it->key().size() != 1 + ObjectId::kSize) continue;
    ObjectId id = ObjectId::FromBytes(it->key().ToStringView().substr(1));
    if (id.Hex().compare(0, hex_prefix.size(), hex_prefix) == 0) out.push_back(id);
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scan");
  return out;
}

Result<std::vector<Change>> Catalog::ChangesAfter(uint64_t after, size_t limit) const {
  std::vector<Change> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(ChangeKey(after + 1)); it->Valid() && it->key().starts_with("c") && out.size() < limit; it->Next()) {
    const std::string_view v = it->value().ToStringView();
    const bool deleted = v.size() == ObjectId::kSize + 1 && v.back() == 'D';
    if (it->key().size() != 9 || (v.size() != ObjectId::kSize && !deleted)) {
      return Corruption("catalog change-log entry is damaged; run `mailvault rebuild`");
    }
    out.push_back(Change{FromBigEndian64(it->key().ToString().substr(1)), ObjectId::FromBytes(v.substr(0, ObjectId::kSize)), deleted});
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scan");
  return out;
}

Result<std::vector<uint64_t>> Catalog::ShredQueue() const {
  std::vector<uint64_t> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek("z"); it->Valid() && it->key().starts_with("z"); it->Next()) {
    if (it->key().size() != 9) return Corruption("catalog shred-queue entry is damaged; run `mailvault rebuild`");
    out.push_back(FromBigEndian64(it->key().ToString().substr(1)));
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scan");
  return out;
}

Result<std::map<uint32_t, uint32_t>> Catalog::Retiring() const {
  std::map<uint32_t, uint32_t> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek("r"); it->Valid() && it->key().starts_with("r"); it->Next()) {
    ByteReader r(it->value().ToStringView());
    uint64_t replacement;
    if (it->key().size() != 5 || !r.GetVarint(&replacement) || replacement > UINT32_MAX) {
      return Corruption("catalog dictionary-retirement entry is damaged; run `mailvault rebuild`");
    }
    out[static_cast<uint32_t>(FromBigEndian64(std::string(4, '\0') + it->key().ToString().substr(1)))] =
        static_cast<uint32_t>(replacement);
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scan");
  return out;
}

Status Catalog::ForEachMessage(const std::function<bool(const ObjectId&, const MessageMeta&)>& fn) const {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek("s"); it->Valid() && it->key().starts_with("s"); it->Next()) {
    if (it->value().size() != ObjectId::kSize) return Corruption("catalog sequence entry is damaged; run `mailvault rebuild`");
    ObjectId id = ObjectId::FromBytes(it->value().ToStringView());
    MV_ASSIGN_OR_RETURN(std::optional<MessageMeta> m, GetMessage(id));
    if (!m) return Corruption("catalog lists message " + id.Hex() + " but has no entry for it; run `mailvault rebuild`");
    if (!fn(id, *m)) break;
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scan");
  return Status::Ok();
}

Catalog::Batch::Batch(Catalog* c) : catalog_(c), batch_(new rocksdb::WriteBatch) {}
Catalog::Batch::~Batch() = default;
size_t Catalog::Batch::count() const { return static_cast<size_t>(batch_->Count()); }
void Catalog::Batch::Clear() { batch_->Clear(); }

void Catalog::Batch::PutMessage(const ObjectId& id, const MessageMeta& meta) {
  batch_->Put(MessageKey(id), EncodeMessageMeta(meta));
  batch_->Put(SequenceKey(meta.sequence), std::string(id.bytes()));
}

void Catalog::Batch::PutEnvelope(const ObjectId& id, uint32_t index, const StoredEnvelope& env) {
  std::string key = EnvelopeKeyPrefix(id) + BigEndian64(index).substr(4);
  ByteWriter w;
  PutLocation(&w, env.where);
  w.PutString(env.envelope.Encode());
  batch_->Put(key, catalog_->SealValue(key, w.Take()));
}

void Catalog::Batch::PutPack(const PackInfo& info) { batch_->Put(PackKey(info.number), EncodePackInfo(info)); }

void Catalog::Batch::PutDictionary(uint32_t id, const RecordLocation& where) {
  ByteWriter w;
  PutLocation(&w, where);
  batch_->Put(DictionaryKey(id), w.Take());
}

void Catalog::Batch::PutStats(const VaultStats& stats) { batch_->Put(kStatsKey, EncodeStats(stats)); }

void Catalog::Batch::PutChange(uint64_t number, const ObjectId& id, bool deleted) {
  batch_->Put(ChangeKey(number), std::string(id.bytes()) + (deleted ? "D" : ""));
}

void Catalog::Batch::DeleteMessage(const ObjectId& id, const MessageMeta& meta) {
  batch_->Delete(MessageKey(id));
  batch_->Delete(SequenceKey(meta.sequence));
  for (size_t n = 1; n < meta.envelope_digests.size(); ++n) {
    batch_->Delete(EnvelopeKeyPrefix(id) + BigEndian64(n).substr(4));
  }
}

void Catalog::Batch::DeleteDictionary(uint32_t id) { batch_->Delete(DictionaryKey(id)); }
void Catalog::Batch::PutShred(uint64_t pack) { batch_->Put(ShredKey(pack), ""); }
void Catalog::Batch::DeleteShred(uint64_t pack) { batch_->Delete(ShredKey(pack)); }
void Catalog::Batch::PutRetire(uint32_t dictionary, uint32_t replacement) {
  ByteWriter w;
  w.PutVarint(replacement);
  batch_->Put(RetireKey(dictionary), w.Take());
}
void Catalog::Batch::DeleteRetire(uint32_t dictionary) { batch_->Delete(RetireKey(dictionary)); }

Status Catalog::Commit(Batch* batch) {
  rocksdb::WriteOptions wo;
  // The packs are the write-ahead log: every catalog write can be redone from them, and
  // PackInfo::applied_bytes travels in the same batch, so a lost memtable is simply replayed.
  wo.disableWAL = true;
  rocksdb::Status s = db_->Write(wo, batch->batch_.get());
  if (!s.ok()) return FromRocks(s, "write");
  return Status::Ok();
}

uint64_t Catalog::MemtableBytes() const {
  uint64_t bytes = 0;
  if (!db_->GetIntProperty("rocksdb.cur-size-all-mem-tables", &bytes)) return 0;
  return bytes;
}

Status Catalog::Flush() {
  rocksdb::Status s = db_->Flush(rocksdb::FlushOptions());
  if (!s.ok()) return FromRocks(s, "flush");
  return Status::Ok();
}

Status Catalog::CompactAll() {
  rocksdb::CompactRangeOptions o;
  o.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  rocksdb::Status s = db_->CompactRange(o, nullptr, nullptr);
  if (!s.ok()) return FromRocks(s, "compact");
  return Status::Ok();
}

Status Catalog::Resume() {
  rocksdb::Status s = db_->Resume();
  if (!s.ok()) return FromRocks(s, "resume after an error");
  return Status::Ok();
}

}  // namespace mailvault
