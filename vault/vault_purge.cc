// Vault: purging (crypto-shredding). docs/purge.md explains the design; docs/formats.md the records.
//
// A purge has two steps, each safe to interrupt at any point:
//  1. Purge() — the committer appends a PURGE record naming the messages and, in the same
//     catalog batch, forgets them: their entries, their envelopes, a "deleted" change for the
//     index, and a shred-queue entry for every pack still holding a record of theirs. Once the
//     record is fsync'd the purge has happened for every reader, and a rebuild replays it.
//  2. Shred() — every queued pack is rewritten into a new file without those records: a purged
//     message's record (with its wrapped data key: the key is gone with it) becomes a tombstone,
//     the survivors of its compression block are re-encoded, and the new file replaces the old
//     by rename once the catalog (flushed: it is the commit point) describes it. Dictionaries
//     that learnt from a purged message are retrained from the surviving mail first, and their
//     blocks re-encoded with the replacement, before their own records are dropped.
// Tombstones keep a rebuilt catalog's change numbering equal to the live one's: a tombstone
// takes the number its record took, and sits before the survivors of its block, so a change can
// only move later (to be indexed again), never earlier (to be skipped).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <set>
#include <thread>
#include <unordered_set>

#include "vault/vault_internal.h"

namespace mailvault {

using vault_internal::PacksPath;

namespace {

constexpr std::string_view kRewriteSuffix = ".rewrite";

std::string RewritePath(const std::string& pack_path) { return pack_path + std::string(kRewriteSuffix); }

}  // namespace

Result<PurgeOutcome> Vault::Purge(const std::vector<PurgeItem>& items) {
  PurgeOutcome total;
  // One PURGE record per kMaxPurgeRecordIds messages, each its own commit group entry.
  for (size_t at = 0; at < items.size(); at += kMaxPurgeRecordIds) {
    auto p = std::make_shared<Pending>();
    p->kind = Pending::kPurge;
    p->purge.assign(items.begin() + at, items.begin() + std::min(items.size(), at + kMaxPurgeRecordIds));
    p->purge_outcome = std::make_shared<PurgeOutcome>();
    Result<IngestResult> r = SubmitAndWait(p);
    if (!r.ok()) return r.error().With("purging messages " + std::to_string(at + 1) + ".." + std::to_string(at + p->purge.size()));
    for (ObjectId& id : p->purge_outcome->purged) total.purged.push_back(id);
    for (auto& s : p->purge_outcome->skipped) total.skipped.push_back(std::move(s));
  }
  MV_ASSIGN_OR_RETURN(auto retiring, catalog_->Retiring());
  std::lock_guard<std::mutex> l(dict_mu_);
  for (const auto& [d, dict] : dictionaries_) {
    if (!dict) continue;
    auto samples = dictionary_samples_.find(d);
    const size_t n = samples == dictionary_samples_.end() ? 0 : samples->second.size();
    if (retiring.count(d)) {
      total.dictionaries.push_back("dictionary " + std::to_string(d) + " learnt from purged mail" +
                                   (n ? " (" + std::to_string(n) + " training samples)" : " (its samples are not recorded)") +
                                   ": it is retrained when the packs are shredded");
    } else {
      total.dictionaries.push_back("dictionary " + std::to_string(d) + " holds none of the purged mail: none of the " +
                                   std::to_string(n) + " messages it was trained from was purged");
    }
  }
  return total;
}

void Vault::TaintDictionaries(const ObjectId& id, Catalog::Batch* batch, std::map<uint32_t, uint32_t>* retiring) {
  std::lock_guard<std::mutex> l(dict_mu_);
  for (const auto& [d, dict] : dictionaries_) {
    if (!dict || retiring->count(d)) continue;  // no dictionary at all, or already being replaced
    auto samples = dictionary_samples_.find(d);
    // A version 1 dictionary does not say what it learnt from: it may hold any message.
    bool may_hold = samples == dictionary_samples_.end() || samples->second.count(id);
    if (!may_hold) continue;
    (*retiring)[d] = 0;
    batch->PutRetire(d, 0);
  }
}

Status Vault::ApplyPurge(const std::vector<ObjectId>& ids, Catalog::Batch* batch, VaultStats* st, FreshMap* fresh,
                         std::set<uint64_t>* touched) {
  MV_ASSIGN_OR_RETURN(auto retiring, catalog_->Retiring());
  for (const ObjectId& id : ids) {
    std::optional<MessageMeta> meta;
    if (auto f = fresh->find(id); f != fresh->end()) {
      meta = f->second;
    } else {
      MV_ASSIGN_OR_RETURN(meta, catalog_->GetMessage(id));
    }
    if (meta) {
      std::set<uint64_t> packs{meta->where.pack};
      if (meta->envelope_digests.size() > 1) {
        MV_ASSIGN_OR_RETURN(std::vector<StoredEnvelope> later, catalog_->GetEnvelopes(id));
        for (const StoredEnvelope& e : later) packs.insert(e.where.pack);
      }
      batch->DeleteMessage(id, *meta);
      for (uint64_t p : packs) {
        batch->PutShred(p);
        if (touched) touched->insert(p);
      }
      st->messages--;
      st->envelopes -= std::min<uint64_t>(st->envelopes, meta->envelope_digests.size());
      st->raw_bytes -= std::min(st->raw_bytes, meta->raw_size);
      st->stored_bytes -= std::min<uint64_t>(st->stored_bytes, meta->where.length);
      TaintDictionaries(id, batch, &retiring);
      fresh->erase(id);
    }
    tombstoned_.erase(id);  // a capture after this purge is a new message again
    batch->PutChange(st->next_change++, id, /*deleted=*/true);
  }
  {
    // Not yet trained on: a purged message must not become a sample now.
    std::lock_guard<std::mutex> l(train_mu_);
    std::unordered_set<ObjectId, ObjectIdHash> gone(ids.begin(), ids.end());
    for (size_t i = training_ids_.size(); i-- > 0;) {
      if (!gone.count(training_ids_[i])) continue;
      training_bytes_ -= std::min(training_bytes_, training_samples_[i].size());
      training_ids_.erase(training_ids_.begin() + static_cast<long>(i));
      training_samples_.erase(training_samples_.begin() + static_cast<long>(i));
    }
  }
  return Status::Ok();
}

Status Vault::ApplyTombstone(const TombstoneRecord& t, Catalog::Batch* batch, VaultStats* st, FreshMap* fresh) {
  bool present = fresh->count(t.id) > 0;
  if (!present) {
    MV_ASSIGN_OR_RETURN(std::optional<MessageMeta> m, catalog_->GetMessage(t.id));
    present = m.has_value();
  }
  if (t.what == TombstoneRecord::kMessage) {
    // Numbered as the record it replaced was: only when the message was not already stored
    // (a second copy of a stored message took no number).
    if (present || tombstoned_.count(t.id)) return Status::Ok();
    tombstoned_[t.id] = true;
    batch->PutChange(st->next_change++, t.id, /*deleted=*/true);
    return Status::Ok();
  }
  if (present || tombstoned_.count(t.id)) batch->PutChange(st->next_change++, t.id, /*deleted=*/true);
  return Status::Ok();
}

Result<size_t> Vault::ShredPending() const {
  MV_ASSIGN_OR_RETURN(std::vector<uint64_t> q, catalog_->ShredQueue());
  return q.size();
}

Status Vault::SealPackIfOpen(uint64_t number) {
  MV_ASSIGN_OR_RETURN(auto infos, catalog_->Packs());
  auto it = infos.find(number);
  if (it == infos.end() || it->second.sealed || it->second.closed) return Status::Ok();
  auto p = std::make_shared<Pending>();
  p->kind = Pending::kSeal;
  p->seal_pack = number;
  MV_RETURN_IF_ERROR(SubmitAndWait(p).status());
  MV_ASSIGN_OR_RETURN(infos, catalog_->Packs());
  if (!infos[number].sealed && !infos[number].closed) {
    return Error(ErrorCode::kBusy, "pack " + PackFileName(number) + " could not be sealed yet (the vault is failing to append); the purge retries");
  }
  return Status::Ok();
}

Status Vault::TrainReplacement(uint32_t retired, ShredReport* report) {
  // Samples from the surviving mail, oldest first, as the automatic training takes them.
  const size_t want = options_.auto_train_messages ? options_.auto_train_messages : 2000;
  std::vector<ObjectId> ids;
  MV_RETURN_IF_ERROR(catalog_->ForEachMessage([&](const ObjectId& id, const MessageMeta&) {
    ids.push_back(id);
    return ids.size() < want;
  }));
  std::vector<std::string> samples;
  std::vector<ObjectId> sample_ids;
  size_t bytes = 0;
  MV_RETURN_IF_ERROR(ReadMany(ids, [&](const ObjectId& id, Result<StoredMessage> m) {
    if (!m.ok() || bytes >= options_.auto_train_bytes) return;
    samples.push_back(TrainingSample(m->envelopes.front(), m->raw));
    sample_ids.push_back(id);
    bytes += samples.back().size();
  }));
  std::vector<std::string_view> views(samples.begin(), samples.end());
  DictionaryContent content;
  content.samples_known = true;
  content.replaces = retired;
  std::shared_ptr<const Dictionary> dict;
  uint32_t id;
  {
    std::lock_guard<std::mutex> l(dict_mu_);
    // Reserved here, under the lock: two trainings at once (automatic, and a purge's
    // replacement) never take one id.
    id = std::max(reserved_dictionary_, dictionaries_.empty() ? 0u : dictionaries_.rbegin()->first) + 1;
    reserved_dictionary_ = id;
  }
  Result<std::string> trained =
      samples.size() >= 100 ? Dictionary::Train(views, options_.compression.dictionary_bytes) : Result<std::string>(NotFound("too few"));
  if (trained.ok()) {
    content.samples = sample_ids;
    content.bytes = std::move(*trained);
    MV_ASSIGN_OR_RETURN(dict, Dictionary::Load(id, content.bytes, options_.compression.level));
    report->dictionaries.push_back("dictionary " + std::to_string(retired) +
                                   " learnt from purged mail: retrained from " + std::to_string(sample_ids.size()) +
                                   " surviving messages as dictionary " + std::to_string(id) +
                                   "; its blocks are re-encoded with it and its own record deleted");
  } else {
    report->dictionaries.push_back("dictionary " + std::to_string(retired) +
                                   " learnt from purged mail: too little mail is left to train another (" +
                                   std::to_string(samples.size()) +
                                   " messages), so its blocks are re-encoded without a dictionary and its record deleted");
  }
  auto p = std::make_shared<Pending>();
  p->kind = Pending::kDictionary;
  p->dictionary_id = id;
  p->dictionary = dict;
  p->replaces = retired;
  p->dictionary_samples = content.samples;
  p->dictionary_body = DictionaryBody(id, content);
  return SubmitAndWait(p).status();
}

Result<ShredReport> Vault::Shred(const std::atomic<bool>* stop) {
  std::lock_guard<std::mutex> one(shred_mu_);
  ShredReport report;
  MV_ASSIGN_OR_RETURN(auto retiring, catalog_->Retiring());
  for (const auto& [d, replacement] : retiring) {
    if (replacement == 0) MV_RETURN_IF_ERROR(TrainReplacement(d, &report));
  }
  MV_ASSIGN_OR_RETURN(retiring, catalog_->Retiring());
  MV_ASSIGN_OR_RETURN(std::vector<uint64_t> queue, catalog_->ShredQueue());
  bool clean = true;
  auto rewrite = [&](uint64_t n, bool drop_retired) {
    Status sealed = SealPackIfOpen(n);
    Result<RewriteResult> r = sealed.ok() ? RewritePack(n, retiring, drop_retired) : Result<RewriteResult>(sealed.error());
    if (!r.ok()) {
      report.problems.push_back(PackFileName(n) + ": " + r.error().message());
      clean = false;
      return;
    }
    if (!r->changed) return;
    report.packs_rewritten++;
    report.messages_removed += r->messages_removed;
    report.envelopes_removed += r->envelopes_removed;
    report.blocks_reencoded += r->blocks_reencoded;
    report.bytes_before += r->bytes_before;
    report.bytes_after += r->bytes_after;
  };
  // A pack another purge touched while it was being rewritten stays queued: go round again.
  for (int pass = 0; pass < 5 && !queue.empty() && clean; ++pass) {
    for (uint64_t n : queue) {
      if (stop && stop->load()) {
        clean = false;
        break;
      }
      rewrite(n, false);
    }
    if (!clean) break;
    MV_ASSIGN_OR_RETURN(queue, catalog_->ShredQueue());
  }
  if (!queue.empty()) clean = false;
  if (clean && !retiring.empty()) {
    // Every block of a retired dictionary is re-encoded now (each pack that existed when its
    // replacement was written was queued): its own record can go.
    MV_ASSIGN_OR_RETURN(auto where, catalog_->Dictionaries());
    std::set<uint64_t> holding;
    for (const auto& [d, replacement] : retiring) {
      if (where.count(d)) holding.insert(where[d].pack);
    }
    for (uint64_t n : holding) rewrite(n, true);
    if (clean) {
      Catalog::Batch batch(catalog_.get());
      for (const auto& [d, replacement] : retiring) {
        batch.DeleteRetire(d);
        batch.DeleteDictionary(d);
      }
      MV_RETURN_IF_ERROR(catalog_->Commit(&batch));
      MV_RETURN_IF_ERROR(catalog_->Flush());
      std::lock_guard<std::mutex> l(dict_mu_);
      for (const auto& [d, replacement] : retiring) {
        dictionaries_.erase(d);
        dictionary_samples_.erase(d);
      }
    }
  }
  MV_ASSIGN_OR_RETURN(queue, catalog_->ShredQueue());
  report.packs_left = queue.size();
  // Deleted catalog values linger in RocksDB's files until compaction rewrites them.
  MV_RETURN_IF_ERROR(catalog_->CompactAll());
  return report;
}

Result<Vault::RewriteResult> Vault::RewritePack(uint64_t number, const std::map<uint32_t, uint32_t>& retiring,
                                                bool drop_retired_records) {
  const std::string path = PackPath(number);
  MV_ASSIGN_OR_RETURN(auto infos, catalog_->Packs());
  PackInfo info = infos[number];
  if (info.closed) {
    return Error(ErrorCode::kCorruption, "the pack was closed after damage was found in it; restore it from a copy "
                                         "(`mailvault verify` names the damage) and the purge finishes rewriting it");
  }
  std::string bytes;
  {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoError("cannot open pack", path, errno);
    struct stat st;
    Status s = ::fstat(fd, &st) != 0 ? ErrnoError("cannot stat", path, errno)
                                     : PreadAll(fd, 0, static_cast<size_t>(st.st_size), &bytes, path);
    ::close(fd);
    MV_RETURN_IF_ERROR(s);
  }
  uint32_t version = 0;
  MV_ASSIGN_OR_RETURN(PackHeader header, DecodePackHeader(bytes, &version));

  // What the new pack holds, in order. A rewritten record keeps its body or gets a new one.
  struct Out {
    RecordType type;
    std::string body;
    ObjectId id;                   // message and envelope records
    uint64_t old_offset = 0;       // of the record it continues (0: new)
    uint32_t old_length = 0;
    size_t block_first = SIZE_MAX;  // message records: index in `out` of its block's first record
    uint32_t dictionary = 0;        // dictionary records
    uint64_t new_offset = 0;
    uint32_t new_length = 0;
  };
  std::vector<Out> out;
  RewriteResult result;
  bool sealed = false;
  // The pack in order as slots: a compression block (re-encoded on a worker thread when a
  // member goes or its dictionary is retired), or one other record. block_first in a slot's
  // outs is relative to the slot until they are joined.
  struct Slot {
    std::vector<RawRecord> block;
    std::vector<Out> outs;
    Status status = Status::Ok();
    uint64_t messages_removed = 0, envelopes_removed = 0, blocks_reencoded = 0;
  };
  std::vector<Slot> slots;
  std::vector<RawRecord> block;
  auto gone = [&](const ObjectId& id) -> Result<bool> {
    MV_ASSIGN_OR_RETURN(std::optional<MessageMeta> m, catalog_->GetMessage(id));
    return !m.has_value();
  };
  auto flush_block = [&] {
    if (block.empty()) return;
    slots.emplace_back();
    slots.back().block = std::move(block);
    block.clear();
  };
  auto single = [&](Out o) {
    slots.emplace_back();
    slots.back().outs.push_back(std::move(o));
    return &slots.back();
  };
  auto encode_block = [&](Slot& slot) -> Status {
    const std::vector<RawRecord>& recs = slot.block;
    std::vector<MessageRecord> mrs;
    std::vector<bool> drop;
    bool any_drop = false;
    for (const RawRecord& rec : recs) {
      MV_ASSIGN_OR_RETURN(MessageRecord mr, DecodeMessageBody(rec.body));
      MV_ASSIGN_OR_RETURN(bool g, gone(mr.id));
      drop.push_back(g);
      any_drop |= g;
      mrs.push_back(std::move(mr));
    }
    const uint32_t dict_id = mrs.front().dictionary_id;
    const bool retired = dict_id && retiring.count(dict_id);
    if (!any_drop && !retired) {
      for (size_t k = 0; k < recs.size(); ++k) {
        slot.outs.push_back(Out{RecordType::kMessage, std::string(recs[k].body), mrs[k].id, recs[k].offset, recs[k].length, 0});
      }
      return Status::Ok();
    }
    // Decode the whole block (members need their predecessors), then encode the survivors
    // again as a block of their own: nothing of a dropped member stays in their history.
    BlockCursor cursor(this);
    std::vector<DecodedMessage> decoded;
    for (const RawRecord& rec : recs) {
      Result<DecodedMessage> d = cursor.Next(rec);
      if (!d.ok()) return d.error().With("re-encoding a compression block of " + PackFileName(number));
      decoded.push_back(std::move(*d));
    }
    std::shared_ptr<const Dictionary> dict;
    uint32_t new_dict_id = retired ? retiring.at(dict_id) : dict_id;
    if (new_dict_id) {
      MV_ASSIGN_OR_RETURN(dict, DictionaryById(new_dict_id));
    }
    if (!dict) new_dict_id = 0;
    for (size_t k = 0; k < recs.size(); ++k) {
      if (!drop[k]) continue;
      slot.outs.push_back(Out{RecordType::kTombstone, EncodeTombstoneBody(TombstoneRecord{mrs[k].id, TombstoneRecord::kMessage}), mrs[k].id});
      slot.messages_removed++;
    }
    BlockEncoder encoder(options_.compression.level);
    encoder.Begin(dict.get());
    const size_t first = slot.outs.size();
    uint32_t index = 0;
    for (size_t k = 0; k < recs.size(); ++k) {
      if (drop[k]) continue;
      std::string input = decoded[k].envelope + decoded[k].raw;
      ByteWriter w;
      w.PutVarint(decoded[k].envelope.size());
      MV_RETURN_IF_ERROR(encoder.Add(input, &w.buffer()));
      MessageRecord mr;
      mr.id = mrs[k].id;
      mr.dictionary_id = new_dict_id;
      mr.raw_size = mrs[k].raw_size;
      mr.block_index = index++;
      mr.wrapped_key = mrs[k].wrapped_key;  // the same data key, still wrapped the same way
      MV_ASSIGN_OR_RETURN(SecretKey dk, UnwrapDataKey(mr.id, mr.wrapped_key));
      Seal(dk, MessageAad(mr), w.buffer(), &mr.box);
      slot.outs.push_back(Out{RecordType::kMessage, EncodeMessageBody(mr), mr.id, recs[k].offset, recs[k].length, first});
    }
    slot.blocks_reencoded++;
    return Status::Ok();
  };

  RecordScanner scanner(bytes, kPackHeaderSize);
  RawRecord rec;
  uint64_t next_seq = 0;
  const bool keyed = version >= kPackFormatVersion;
  while (scanner.Next(&rec)) {
    if (keyed) {
      std::string why = CheckRecordMac(rec, record_key_, vault_id_, number);
      if (!why.empty() || rec.sequence != next_seq) {
        return Corruption("record at offset " + std::to_string(rec.offset) + ": " +
                          (why.empty() ? "out of sequence" : why) + "; run `mailvault verify` before purging");
      }
      ++next_seq;
    }
    if (rec.type == RecordType::kMessage) {
      if (rec.body.size() < kMessageRecordFixed) return Corruption("message record at offset " + std::to_string(rec.offset) + " is truncated");
      if (DecodeU32(rec.body.data() + kMessageRecordFixed - 4) == 0) flush_block();
      block.push_back(rec);
      continue;
    }
    flush_block();
    switch (rec.type) {
      case RecordType::kEnvelope: {
        MV_ASSIGN_OR_RETURN(EnvelopeRecord er, DecodeEnvelopeBody(rec.body));
        MV_ASSIGN_OR_RETURN(bool g, gone(er.id));
        if (g) {
          single(Out{RecordType::kTombstone, EncodeTombstoneBody(TombstoneRecord{er.id, TombstoneRecord::kEnvelope}), er.id})
              ->envelopes_removed++;
        } else {
          single(Out{RecordType::kEnvelope, std::string(rec.body), er.id, rec.offset, rec.length});
        }
        break;
      }
      case RecordType::kDictionary: {
        MV_ASSIGN_OR_RETURN(DictionaryRecord dr, DecodeDictionaryBody(rec.body));
        if (drop_retired_records && retiring.count(dr.dictionary_id)) break;
        Out o{RecordType::kDictionary, std::string(rec.body), ObjectId{}, rec.offset, rec.length};
        o.dictionary = dr.dictionary_id;
        single(std::move(o));
        break;
      }
      case RecordType::kSeal:
        sealed = true;
        break;
      default:  // PURGE records and tombstones stay, in place: a rebuild numbers changes by them
        single(Out{rec.type, std::string(rec.body), ObjectId{}, rec.offset, rec.length});
        break;
    }
  }
  flush_block();
  if (!scanner.at_end()) return Corruption("damaged bytes at offset " + std::to_string(scanner.offset()) + "; run `mailvault verify` before purging");

  // Blocks are independent: decode and encode them on every core, then join in pack order.
  {
    std::atomic<size_t> next{0};
    auto work = [&] {
      for (size_t i; (i = next.fetch_add(1)) < slots.size();) {
        if (!slots[i].block.empty()) slots[i].status = encode_block(slots[i]);
      }
    };
    std::vector<std::thread> helpers;
    const size_t cores = std::max(1u, std::thread::hardware_concurrency());
    for (size_t t = 1; t < cores; ++t) helpers.emplace_back(work);
    work();
    for (auto& t : helpers) t.join();
  }
  for (Slot& slot : slots) {
    MV_RETURN_IF_ERROR(slot.status);
    const size_t base = out.size();
    for (Out& o : slot.outs) {
      if (o.type == RecordType::kMessage) o.block_first += base;
      out.push_back(std::move(o));
    }
    result.messages_removed += slot.messages_removed;
    result.envelopes_removed += slot.envelopes_removed;
    result.blocks_reencoded += slot.blocks_reencoded;
  }

  const bool dropped_dictionary = [&] {
    size_t dict_before = 0, dict_after = 0;
    for (const Out& o : out) dict_after += o.type == RecordType::kDictionary;
    RecordScanner count(bytes, kPackHeaderSize);
    RawRecord r;
    while (count.Next(&r)) dict_before += r.type == RecordType::kDictionary;
    return dict_before != dict_after;
  }();
  // Whether a message kept in the new file was forgotten meanwhile (another purge committed
  // after this one read the catalog): then the pack stays queued and is rewritten again.
  // REQUIRES: layout_mu_ held exclusively (no commit group runs).
  auto forgotten_since = [&]() -> Result<bool> {
    for (const Out& o : out) {
      if (o.type != RecordType::kMessage && o.type != RecordType::kEnvelope) continue;
      MV_ASSIGN_OR_RETURN(bool g, gone(o.id));
      if (g) return true;
    }
    return false;
  };
  if (result.messages_removed == 0 && result.envelopes_removed == 0 && result.blocks_reencoded == 0 && !dropped_dictionary) {
    std::unique_lock<std::shared_mutex> still(layout_mu_);
    MV_ASSIGN_OR_RETURN(bool again, forgotten_since());
    if (!again) {
      Catalog::Batch batch(catalog_.get());
      batch.DeleteShred(number);
      MV_RETURN_IF_ERROR(catalog_->Commit(&batch));
    }
    return result;  // nothing of a purged message or a retired dictionary is in it
  }

  // The new file, beside the old one.
  PackHeader nh{number, vault_id_, kPackFormatVersion, header.generation + 1};
  std::string file = EncodePackHeader(nh);
  for (size_t i = 0; i < out.size(); ++i) {
    std::string framed = FrameKeyedRecord(out[i].type, out[i].body, record_key_,
                                          RecordPlace{vault_id_, number, static_cast<uint32_t>(i)});
    out[i].new_offset = file.size();
    out[i].new_length = static_cast<uint32_t>(framed.size());
    file += framed;
  }
  uint64_t records = out.size();
  std::string sha;
  if (sealed) {
    sha = Sha256Of(file);
    file += FrameKeyedRecord(RecordType::kSeal, EncodeSealBody(SealRecord{records, sha}), record_key_,
                             RecordPlace{vault_id_, number, static_cast<uint32_t>(records)});
    ++records;
  }
  const std::string tmp = RewritePath(path);
  ::unlink(tmp.c_str());
  {
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return ErrnoError("cannot create", tmp, errno);
    Status s = WriteAll(fd, file, tmp);
    if (s.ok() && ::fsync(fd) != 0) s = ErrnoError("cannot fsync", tmp, errno);
    ::close(fd);
    if (!s.ok()) {
      ::unlink(tmp.c_str());
      return s;
    }
  }

  // The swap: catalog first (flushed, so it is the commit point; an interrupted swap is
  // finished on open by SettleRewrites), then the file. Readers and the committer wait.
  std::unique_lock<std::shared_mutex> swap(layout_mu_);
  Catalog::Batch batch(catalog_.get());
  MV_ASSIGN_OR_RETURN(auto dict_where, catalog_->Dictionaries());
  for (const Out& o : out) {
    if (o.type == RecordType::kMessage) {
      MV_ASSIGN_OR_RETURN(std::optional<MessageMeta> m, catalog_->GetMessage(o.id));
      if (!m || m->where.pack != number || m->where.offset != o.old_offset) continue;  // a second copy
      stats_.stored_bytes += o.new_length;
      stats_.stored_bytes -= std::min<uint64_t>(stats_.stored_bytes, m->where.length);
      m->where = RecordLocation{number, o.new_offset, o.new_length};
      m->block_start = out[o.block_first].new_offset;
      batch.PutMessage(o.id, *m);
    } else if (o.type == RecordType::kEnvelope) {
      MV_ASSIGN_OR_RETURN(std::vector<StoredEnvelope> later, catalog_->GetEnvelopes(o.id));
      for (size_t j = 0; j < later.size(); ++j) {
        if (later[j].where.pack != number || later[j].where.offset != o.old_offset) continue;
        later[j].where = RecordLocation{number, o.new_offset, o.new_length};
        batch.PutEnvelope(o.id, static_cast<uint32_t>(j + 1), later[j]);
      }
    } else if (o.type == RecordType::kDictionary) {
      auto d = dict_where.find(o.dictionary);
      if (d != dict_where.end() && d->second.pack == number && d->second.offset == o.old_offset) {
        batch.PutDictionary(o.dictionary, RecordLocation{number, o.new_offset, o.new_length});
      }
    }
  }
  info.applied_bytes = file.size();
  info.records = records;
  info.sealed = sealed;
  info.sha256 = sha;
  info.closed = false;
  info.generation = nh.generation;
  batch.PutPack(info);
  MV_ASSIGN_OR_RETURN(bool again, forgotten_since());
  if (!again) batch.DeleteShred(number);
  batch.PutStats(stats_);
  MV_RETURN_IF_ERROR(catalog_->Commit(&batch));
  MV_RETURN_IF_ERROR(catalog_->Flush());
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return ErrnoError("cannot replace the pack with its rewrite (the vault finishes the swap when it next opens)", path, errno);
  }
  MV_RETURN_IF_ERROR(FsyncDirectory(PacksPath(dir_)));
  {
    std::lock_guard<std::mutex> l(fd_mu_);
    if (auto it = read_fds_.find(number); it != read_fds_.end()) {
      ::close(it->second);
      read_fds_.erase(it);
    }
  }
  result.changed = true;
  result.bytes_before = bytes.size();
  result.bytes_after = file.size();
  return result;
}

Status Vault::SettleRewrites(OpenReport* report) {
  const std::string packs = PacksPath(dir_);
  DIR* d = ::opendir(packs.c_str());
  if (!d) return ErrnoError("cannot list", packs, errno);
  std::vector<std::string> found;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.size() == 13 + kRewriteSuffix.size() && name.substr(8) == ".pack" + std::string(kRewriteSuffix)) found.push_back(name);
  }
  ::closedir(d);
  if (found.empty()) return Status::Ok();
  MV_ASSIGN_OR_RETURN(auto infos, catalog_->Packs());
  for (const std::string& name : found) {
    const std::string tmp = packs + "/" + name;
    const std::string path = tmp.substr(0, tmp.size() - kRewriteSuffix.size());
    uint64_t number = std::strtoull(name.c_str(), nullptr, 10);
    std::string head;
    int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
    uint32_t version = 0;
    Result<PackHeader> h = Corruption("unreadable");
    if (fd >= 0) {
      if (PreadAll(fd, 0, kPackHeaderSize, &head, tmp).ok()) h = DecodePackHeader(head, &version);
      ::close(fd);
    }
    auto it = infos.find(number);
    if (h.ok() && it != infos.end() && it->second.generation == h->generation && h->generation > 0) {
      // The catalog already describes the rewrite: finish the swap it committed to.
      if (::rename(tmp.c_str(), path.c_str()) != 0) return ErrnoError("cannot finish replacing", path, errno);
      report->warnings.push_back(path + ": finished replacing it with its purge rewrite (interrupted by a crash)");
    } else {
      // The catalog never adopted it: the old pack is intact and the purge rewrites it again.
      ::unlink(tmp.c_str());
    }
  }
  return FsyncDirectory(packs);
}

}  // namespace mailvault
