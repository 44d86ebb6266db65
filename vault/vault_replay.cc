// Vault: recovery at opening, replaying the pack records the catalog has not seen into it.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "vault/vault_internal.h"

namespace mailvault {
namespace {

constexpr size_t kReplayBatchRecords = 1024;

}  // namespace

using vault_internal::ListPackNumbers;
using vault_internal::PacksPath;

Status Vault::Recover(OpenReport* report) {
  MV_RETURN_IF_ERROR(SettleRewrites(report));
  MV_ASSIGN_OR_RETURN(stats_, catalog_->Stats());
  MV_ASSIGN_OR_RETURN(auto infos, catalog_->Packs());
  MV_ASSIGN_OR_RETURN(std::vector<uint64_t> on_disk, ListPackNumbers(PacksPath(dir_)));
  for (const auto& [n, info] : infos) {
    if (!std::binary_search(on_disk.begin(), on_disk.end(), n)) {
      report->warnings.push_back("pack " + PackFileName(n) + " is in the catalog but missing from " + PacksPath(dir_) +
                                 "; its messages cannot be read (restore it from the offsite copy)");
    }
  }
  // Dictionaries first: replaying a message compressed with one needs it.
  MV_ASSIGN_OR_RETURN(auto dict_locs, catalog_->Dictionaries());
  for (const auto& [id, loc] : dict_locs) {
    MV_ASSIGN_OR_RETURN(int fd, PackFd(loc.pack));
    std::string bytes;
    MV_RETURN_IF_ERROR(PreadAll(fd, loc.offset, loc.length, &bytes, PackPath(loc.pack)));
    MV_ASSIGN_OR_RETURN(RawRecord rec, ParseFramedRecord(bytes, loc.offset));
    MV_ASSIGN_OR_RETURN(DictionaryRecord dr, DecodeDictionaryBody(rec.body));
    MV_ASSIGN_OR_RETURN(DictionaryContent content, OpenDictionary(keys_.dictionary, dr));
    content.replaces = 0;  // already applied when the record was first replayed
    MV_RETURN_IF_ERROR(LoadDictionary(id, content, nullptr));
  }
  // A purge re-encodes old blocks with a newer dictionary whose record sits in a later pack:
  // a pack replayed from the start (a rebuild) needs every dictionary before its blocks.
  for (uint64_t n : on_disk) {
    auto it = infos.find(n);
    if (it == infos.end() || it->second.applied_bytes <= kPackHeaderSize) PreloadDictionaries(n);
  }
  for (size_t i = 0; i < on_disk.size(); ++i) {
    uint64_t n = on_disk[i];
    auto it = infos.find(n);
    PackInfo info = it != infos.end() ? it->second : PackInfo{n, 0, 0, false, ""};
    MV_RETURN_IF_ERROR(ReplayPack(n, info, i + 1 == on_disk.size(), report));
  }
  MV_ASSIGN_OR_RETURN(infos, catalog_->Packs());
  if (!on_disk.empty() && infos.count(on_disk.back()) && !infos[on_disk.back()].sealed && !infos[on_disk.back()].closed) {
    Status s = OpenPackForAppend(on_disk.back(), false);
    if (s.ok()) return s;
    report->warnings.push_back(s.error().message() + "; new messages go to a new pack");
  }
  uint64_t next = on_disk.empty() ? 1 : on_disk.back() + 1;
  return OpenPackForAppend(next, true);
}

Status Vault::ReplayPack(uint64_t number, PackInfo info, bool last, OpenReport* report) {
  std::string path = PackPath(number);
  struct stat fst;
  if (::stat(path.c_str(), &fst) != 0) return ErrnoError("cannot stat", path, errno);
  uint64_t size = static_cast<uint64_t>(fst.st_size);
  if (info.applied_bytes > size) {
    // Acknowledged records were in the bytes that are gone. Appending at the shorter size
    // would bury the gap under new records: close the pack and say what is missing.
    report->warnings.push_back(path + " is " + std::to_string(size) + " bytes, shorter than the " +
                               std::to_string(info.applied_bytes) +
                               " bytes the catalog recorded: acknowledged records past byte " + std::to_string(size) +
                               " are missing (restore this pack from a copy; `mailvault verify` names the messages)");
    if (!info.closed && !info.sealed) {
      info.closed = true;
      Catalog::Batch batch(catalog_.get());
      batch.PutPack(info);
      return catalog_->Commit(&batch);
    }
    return Status::Ok();
  }
  if (info.applied_bytes == size && info.applied_bytes > 0) return Status::Ok();
  MV_ASSIGN_OR_RETURN(int fd, PackFd(number));
  std::string bytes;
  MV_RETURN_IF_ERROR(PreadAll(fd, 0, size, &bytes, path));
  uint32_t version = 0;
  Result<PackHeader> header = DecodePackHeader(bytes, &version);
  if (!header.ok()) {
    if (last && size < kPackHeaderSize) {
      // A pack whose creation was interrupted: nothing in it was ever acknowledged.
      ::unlink(path.c_str());
      report->torn_bytes_dropped += size;
      return FsyncDirectory(PacksPath(dir_));
    }
    report->warnings.push_back(path + ": " + header.error().message() + "; skipped");
    return Status::Ok();
  }
  if (header->vault_id != vault_id_) {
    report->warnings.push_back(path + " belongs to another vault; skipped");
    return Status::Ok();
  }
  info.generation = header->generation;
  // Commit groups end on block boundaries, so applied_bytes is always at one: decoding can
  // start right there.
  uint64_t start = std::max<uint64_t>(info.applied_bytes, kPackHeaderSize);
  RecordScanner scanner(bytes, start);
  RawRecord rec;
  Catalog::Batch batch(catalog_.get());
  VaultStats st = stats_;
  std::unordered_map<ObjectId, MessageMeta, ObjectIdHash> fresh;
  BlockCursor cursor(this);
  size_t in_batch = 0;
  auto flush = [&](uint64_t applied) -> Status {
    info.applied_bytes = applied;
    batch.PutPack(info);
    batch.PutStats(st);
    MV_RETURN_IF_ERROR(catalog_->Commit(&batch));
    stats_ = st;
    batch.Clear();
    fresh.clear();
    in_batch = 0;
    return Status::Ok();
  };
  // In a keyed pack, each record must carry its place's MAC and the next sequence number. The
  // sequence is known from the start of the pack; from a catalog's mid-pack resume point it is
  // taken from the first record there.
  const bool keyed_pack = version >= kPackFormatVersion;
  std::optional<uint64_t> next_seq;
  if (start == kPackHeaderSize) next_seq = 0;
  bool after_damage = false;  // a sequence gap right after damage is that damage, reported already
  for (;;) {
    while (scanner.Next(&rec)) {
      if (keyed_pack) {
        std::string why = CheckRecordMac(rec, record_key_, vault_id_, number);
        if (!why.empty()) {
          // Not this vault's record at this place: never let it into the catalog.
          report->warnings.push_back(path + " offset " + std::to_string(rec.offset) + ": " + why + "; not applied");
          continue;
        }
        if (next_seq && rec.sequence != *next_seq && !(after_damage && rec.sequence > *next_seq)) {
          report->warnings.push_back(path + " offset " + std::to_string(rec.offset) + ": " +
                                     (rec.sequence > *next_seq
                                          ? "records " + std::to_string(*next_seq) + ".." + std::to_string(rec.sequence - 1) +
                                                " of this pack are missing before it (removed, or damaged)"
                                          : "its sequence number " + std::to_string(rec.sequence) +
                                                " goes back (a record replayed)"));
        }
        next_seq = static_cast<uint64_t>(rec.sequence) + 1;
        after_damage = false;
      }
      // Flush only where a block starts, so applied_bytes always lands on a block boundary.
      bool starts_block = (rec.type != RecordType::kMessage) ||
                          (rec.body.size() >= kMessageRecordFixed && DecodeU32(rec.body.data() + kMessageRecordFixed - 4) == 0);
      if (starts_block && in_batch >= kReplayBatchRecords) MV_RETURN_IF_ERROR(flush(rec.offset));
      Status s = Status::Ok();
      if (rec.type == RecordType::kMessage) {
        Result<DecodedMessage> d = cursor.Next(rec);
        s = d.ok() ? ApplyMessage(*d, number, &batch, &st, &fresh) : d.status();
      } else if (rec.type == RecordType::kSeal) {
        Result<SealRecord> seal = DecodeSealBody(rec.body);
        if (seal.ok()) {
          info.sealed = true;
          info.closed = false;
          info.sha256 = seal->sha256;
        }
        s = seal.status();
      } else {
        // A purge reads envelopes from the catalog: everything before it must be there.
        if (rec.type == RecordType::kPurge && in_batch) MV_RETURN_IF_ERROR(flush(rec.offset));
        s = ApplyRecord(rec, number, &batch, &st, &fresh);
      }
      if (!s.ok()) report->warnings.push_back(path + " offset " + std::to_string(rec.offset) + ": " + s.error().message());
      ++info.records;
      ++report->records_replayed;
      ++in_batch;
    }
    if (scanner.at_end()) break;
    if (last && scanner.torn()) {
      // An append cut short by a crash: it was never acknowledged (acknowledgement follows the
      // fdatasync of the whole group). Drop it, and only it.
      uint64_t good_end = scanner.offset();
      if (::truncate(path.c_str(), static_cast<off_t>(good_end)) != 0) return ErrnoError("cannot truncate", path, errno);
      int tfd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (tfd >= 0) {
        ::fsync(tfd);
        ::close(tfd);
      }
      report->torn_bytes_dropped += size - good_end;
      size = good_end;
      break;
    }
    // Damage: step over it to the next valid frame and go on. Only the damaged record is lost,
    // and the members after it in its compression block (they need it as history; the cursor
    // names them). Nothing is cut, and nothing more is appended to this pack.
    RecordScanner::Damage d = scanner.Skip();
    after_damage = true;
    report->warnings.push_back(path + ": damaged bytes at offset " + std::to_string(d.begin) + ".." + std::to_string(d.end) +
                               " (" + d.why + "); the record there is lost, the records after it were read. Run `mailvault verify`.");
    if (!info.sealed) info.closed = true;  // never append after damage
  }
  return flush(size);
}

Status Vault::ApplyMessage(const DecodedMessage& d, uint64_t pack, Catalog::Batch* batch, VaultStats* st,
                           std::unordered_map<ObjectId, MessageMeta, ObjectIdHash>* fresh) {
  if (fresh->count(d.id)) return Status::Ok();
  MV_ASSIGN_OR_RETURN(std::optional<MessageMeta> existing, catalog_->GetMessage(d.id));
  if (existing) return Status::Ok();  // a second copy (an interrupted commit retried): the first wins
  MV_ASSIGN_OR_RETURN(Envelope env, Envelope::Decode(d.envelope));
  MessageMeta meta;
  meta.where = RecordLocation{pack, d.where.offset, d.where.length};
  meta.block_start = d.block_start;
  meta.sequence = st->next_sequence++;
  meta.raw_size = d.raw.size();
  meta.has_warning = !AnalysisWarning(d.raw).empty();
  meta.envelope_digests = {EnvelopeDigest(env)};
  batch->PutMessage(d.id, meta);
  batch->PutChange(st->next_change++, d.id);
  (*fresh)[d.id] = meta;
  st->messages++;
  st->envelopes++;
  st->raw_bytes += meta.raw_size;
  st->stored_bytes += d.where.length;
  return Status::Ok();
}

Status Vault::ApplyRecord(const RawRecord& rec, uint64_t pack, Catalog::Batch* batch, VaultStats* st,
                          std::unordered_map<ObjectId, MessageMeta, ObjectIdHash>* fresh) {
  RecordLocation loc{pack, rec.offset, rec.length};
  if (rec.type == RecordType::kDictionary) {
    MV_ASSIGN_OR_RETURN(DictionaryRecord dr, DecodeDictionaryBody(rec.body));
    MV_ASSIGN_OR_RETURN(DictionaryContent content, OpenDictionary(keys_.dictionary, dr));
    MV_RETURN_IF_ERROR(LoadDictionary(dr.dictionary_id, content, batch));
    batch->PutDictionary(dr.dictionary_id, loc);
    return Status::Ok();
  }
  if (rec.type == RecordType::kPurge) {
    MV_ASSIGN_OR_RETURN(PurgeRecord pr, DecodePurgeBody(rec.body));
    return ApplyPurge(pr.ids, batch, st, fresh, nullptr);
  }
  if (rec.type == RecordType::kTombstone) {
    MV_ASSIGN_OR_RETURN(TombstoneRecord t, DecodeTombstoneBody(rec.body));
    return ApplyTombstone(t, batch, st, fresh);
  }
  if (rec.type != RecordType::kEnvelope) return Status::Ok();
  MV_ASSIGN_OR_RETURN(EnvelopeRecord er, DecodeEnvelopeBody(rec.body));
  std::optional<MessageMeta> meta;
  if (auto f = fresh->find(er.id); f != fresh->end()) {
    meta = f->second;
  } else {
    MV_ASSIGN_OR_RETURN(meta, catalog_->GetMessage(er.id));
  }
  if (!meta && tombstoned_.count(er.id)) {
    // An envelope of a purged message whose pack a purge has not rewritten yet: numbered as it
    // was, and queued for the rewrite that replaces it with a tombstone.
    batch->PutChange(st->next_change++, er.id, /*deleted=*/true);
    batch->PutShred(pack);
    return Status::Ok();
  }
  if (!meta) return Corruption("envelope for message " + er.id.Hex() + ", which no earlier record stores");
  MV_ASSIGN_OR_RETURN(SecretKey dk, DataKeyOf(er.id, *meta, nullptr, 0));
  MV_ASSIGN_OR_RETURN(std::string env_bytes, mailvault::Open(dk, EnvelopeAad(er.id), er.box));
  MV_ASSIGN_OR_RETURN(Envelope env, Envelope::Decode(env_bytes));
  meta->envelope_digests.push_back(EnvelopeDigest(env));
  batch->PutEnvelope(er.id, static_cast<uint32_t>(meta->envelope_digests.size() - 1), StoredEnvelope{env, loc});
  batch->PutMessage(er.id, *meta);
  batch->PutChange(st->next_change++, er.id);
  (*fresh)[er.id] = *meta;
  st->envelopes++;
  st->duplicates++;
  return Status::Ok();
}

void Vault::PreloadDictionaries(uint64_t number) {
  // Walks the record headers only (a pread of 12 bytes per record), reading DICTIONARY records
  // whole. Anything that does not parse ends the walk: replay reports it.
  Result<int> fd = PackFd(number);
  if (!fd.ok()) return;
  const std::string path = PackPath(number);
  uint64_t at = kPackHeaderSize;
  std::string head;
  for (;;) {
    if (!PreadAll(*fd, at, kRecordHeaderSize, &head, path).ok() || head.size() < kRecordHeaderSize) return;
    if (DecodeU32(head.data()) != kRecordMagic) return;
    const uint32_t len = DecodeU32(head.data() + 8);
    if (len > kMaxRecordBody) return;
    const bool keyed = head[5] == static_cast<char>(kRecordFlagKeyed);
    const uint64_t total = (keyed ? kKeyedRecordOverhead : kRecordOverhead) + static_cast<uint64_t>(len);
    if (static_cast<RecordType>(head[4]) == RecordType::kDictionary) {
      std::string bytes;
      if (!PreadAll(*fd, at, total, &bytes, path).ok()) return;
      Result<RawRecord> rec = ParseFramedRecord(bytes, at);
      if (!rec.ok()) return;
      Result<DictionaryRecord> dr = DecodeDictionaryBody(rec->body);
      if (!dr.ok()) return;
      Result<DictionaryContent> content = OpenDictionary(keys_.dictionary, *dr);
      if (!content.ok()) return;
      content->replaces = 0;  // replay applies the retirement at the record's own place
      (void)LoadDictionary(dr->dictionary_id, *content, nullptr);
    }
    at += total;
  }
}

Status Vault::LoadDictionary(uint32_t id, const DictionaryContent& content, Catalog::Batch* batch) {
  std::shared_ptr<const Dictionary> d;
  if (!content.bytes.empty()) {
    MV_ASSIGN_OR_RETURN(d, Dictionary::Load(id, content.bytes, options_.compression.level));
  }
  bool retires = false;
  {
    std::lock_guard<std::mutex> l(dict_mu_);
    dictionaries_[id] = d;
    if (content.samples_known) {
      auto& set = dictionary_samples_[id];
      for (const ObjectId& s : content.samples) set[s] = true;
    }
    current_dictionary_ = std::max(current_dictionary_, id);
    retires = content.replaces && dictionaries_.count(content.replaces);
  }
  if (retires && batch) {
    batch->PutRetire(content.replaces, id);
    MV_ASSIGN_OR_RETURN(auto infos, catalog_->Packs());
    for (const auto& [n, info] : infos) batch->PutShred(n);
  }
  return Status::Ok();
}

}  // namespace mailvault
