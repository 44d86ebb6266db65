// Vault: the ingest path and the committer thread (group commit, sealing, reopening after a failure).
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <unordered_set>

#include "vault/vault_internal.h"

namespace mailvault {
namespace {

constexpr size_t kMaxGroupBytes = 64 << 20;  // one commit group's appended bytes

}  // namespace

using vault_internal::ListPackNumbers;
using vault_internal::PacksPath;

Status Vault::OpenPackForAppend(uint64_t number, bool create) {
  auto p = std::make_unique<OpenPack>();
  p->number = number;
  p->sha = std::make_unique<Sha256>();
  std::string path = PackPath(number);
  if (create) {
    p->fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (p->fd < 0) return ErrnoError("cannot create pack", path, errno);
    std::string header = EncodePackHeader(PackHeader{number, vault_id_, kPackFormatVersion});
    p->keyed = true;
    Status s = WriteAll(p->fd, header, path);
    if (s.ok() && ::fsync(p->fd) != 0) s = ErrnoError("cannot fsync", path, errno);
    if (s.ok()) s = FsyncDirectory(PacksPath(dir_));
    if (!s.ok()) {
      ::unlink(path.c_str());
      return s;
    }
    p->sha->Update(header);
    p->size = header.size();
    Catalog::Batch batch(catalog_.get());
    batch.PutPack(PackInfo{number, p->size, 0, false, ""});
    MV_RETURN_IF_ERROR(catalog_->Commit(&batch));
  } else {
    p->fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (p->fd < 0) return ErrnoError("cannot open pack", path, errno);
    struct stat st;
    if (::fstat(p->fd, &st) != 0) return ErrnoError("cannot stat", path, errno);
    std::string bytes;
    MV_RETURN_IF_ERROR(PreadAll(p->fd, 0, static_cast<size_t>(st.st_size), &bytes, path));
    p->sha->Update(bytes);
    p->size = bytes.size();
    uint32_t version = 0;
    MV_ASSIGN_OR_RETURN(PackHeader header, DecodePackHeader(bytes, &version));
    p->keyed = version >= kPackFormatVersion;
    // The next sequence number is the count of records: walk them (any damage, and the pack
    // is not appended to).
    RecordScanner scanner(bytes, kPackHeaderSize);
    RawRecord rec;
    uint64_t count = 0;
    while (scanner.Next(&rec)) {
      if (p->keyed && (!rec.keyed || rec.sequence != count)) break;
      ++count;
    }
    if (!scanner.at_end()) return Corruption(path + " does not end in whole, consecutive records; not appending to it");
    p->records = count;
  }
  if (::lseek(p->fd, static_cast<off_t>(p->size), SEEK_SET) < 0) return ErrnoError("cannot seek", path, errno);
  pack_ = std::move(p);
  return Status::Ok();
}

Status Vault::SealCurrentPack() {
  OpenPack& p = *pack_;
  std::string path = PackPath(p.number);
  SealRecord seal{p.records, p.sha->Final()};
  std::string rec = Frame(RecordType::kSeal, EncodeSealBody(seal), p.records);
  MV_RETURN_IF_ERROR(WriteAll(p.fd, rec, path));
  if (::fdatasync(p.fd) != 0) return ErrnoError("cannot fsync", path, errno);
  Catalog::Batch batch(catalog_.get());
  batch.PutPack(PackInfo{p.number, p.size + rec.size(), p.records + 1, true, seal.sha256});
  MV_RETURN_IF_ERROR(catalog_->Commit(&batch));
  uint64_t next = p.number + 1;
  pack_.reset();
  return OpenPackForAppend(next, true);
}

std::string Vault::TrainingSample(const Envelope& envelope, std::string_view raw) {
  // What the block encoder sees for each message: its envelope, then its bytes.
  return envelope.Encode() + std::string(raw.substr(0, 64 << 10));
}

void Vault::MaybeAutoTrain(const Envelope& envelope, std::string_view raw) {
  if (options_.auto_train_messages == 0) return;
  std::vector<std::string> samples;
  std::vector<ObjectId> ids;
  {
    std::lock_guard<std::mutex> l(train_mu_);
    if (training_done_ || has_dictionary()) return;
    training_samples_.push_back(TrainingSample(envelope, raw));
    training_ids_.push_back(ObjectId::Of(raw));
    training_bytes_ += training_samples_.back().size();
    if (training_samples_.size() < options_.auto_train_messages && training_bytes_ < options_.auto_train_bytes) return;
    training_done_ = true;
    samples.swap(training_samples_);
    ids.swap(training_ids_);
  }
  std::vector<std::string_view> views(samples.begin(), samples.end());
  // Failing to train only costs compression; the messages are stored either way.
  (void)TrainDictionary(views, ids);
}

Result<std::shared_ptr<Vault::Pending>> Vault::Prepare(std::string_view raw, const Envelope& envelope) {
  if (raw.size() > options_.limits.max_message_bytes) {
    return LimitExceeded("the message is " + std::to_string(raw.size()) + " bytes, over the limit of " +
                         std::to_string(options_.limits.max_message_bytes) + " bytes (limits.max_message_bytes)");
  }
  if (raw.empty()) return MalformedInput("the message is empty (0 bytes)");
  struct statvfs fs;
  if (::statvfs(dir_.c_str(), &fs) == 0 &&
      static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize < options_.min_free_bytes + raw.size()) {
    Error e(ErrorCode::kIoError, "the vault's file system is nearly full (less than " +
                                     std::to_string(options_.min_free_bytes >> 20) +
                                     " MiB free); free space and retry (No space left for new messages)");
    SetFailing(e);  // cleared by the next group that commits
    return e;
  }
  auto p = std::make_shared<Pending>();
  p->id = ObjectId::Of(raw);
  p->envelope = envelope;
  MV_ASSIGN_OR_RETURN(std::optional<MessageMeta> existing, catalog_->GetMessage(p->id));
  if (existing) return p;  // the committer adds the envelope, if it is new
  MaybeAutoTrain(envelope, raw);
  p->warning = AnalysisWarning(raw);
  p->raw = std::string(raw);
  return p;
}

Result<IngestResult> Vault::Ingest(std::string_view raw, const Envelope& envelope) {
  return IngestAsync(raw, envelope).get();
}

std::future<Result<IngestResult>> Vault::IngestAsync(std::string_view raw, const Envelope& envelope) {
  auto promise = std::make_shared<std::promise<Result<IngestResult>>>();
  std::future<Result<IngestResult>> f = promise->get_future();
  IngestAsync(raw, envelope, [promise](Result<IngestResult> r) { promise->set_value(std::move(r)); });
  return f;
}

void Vault::IngestAsync(std::string_view raw, const Envelope& envelope, std::function<void(Result<IngestResult>)> done) {
  Result<std::shared_ptr<Pending>> p = Prepare(raw, envelope);
  if (!p.ok()) {
    done(p.error());
    return;
  }
  (*p)->done = std::move(done);
  Submit(std::move(*p));
}

size_t Vault::queued() const {
  std::lock_guard<std::mutex> l(queue_mu_);
  return queue_.size();
}

void Vault::Submit(std::shared_ptr<Pending> p) {
  {
    std::lock_guard<std::mutex> l(queue_mu_);
    if (stopping_) {
      p->done(Error(ErrorCode::kBusy, "the vault is closing"));
      return;
    }
    queue_.push_back(std::move(p));
  }
  queue_cv_.notify_one();
}

void Vault::CommitLoop() {
  std::vector<std::shared_ptr<Pending>> group;
  for (;;) {
    {
      std::unique_lock<std::mutex> l(queue_mu_);
      queue_cv_.wait(l, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything submitted has been committed
      size_t bytes = 0, n = 0;
      while (n < queue_.size() && bytes < kMaxGroupBytes) {
        bytes += queue_[n]->raw.size() + queue_[n]->dictionary_body.size();
        ++n;
      }
      group.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.begin() + n));
      queue_.erase(queue_.begin(), queue_.begin() + n);
    }
    CommitGroup(group);
    group.clear();
  }
}

Vault::EncodedBlock Vault::EncodeBlock(const std::vector<std::shared_ptr<Pending>>& group, const std::vector<size_t>& members,
                                       const Dictionary* dict) const {
  thread_local std::unique_ptr<BlockEncoder> encoder;
  thread_local int encoder_level = -1;
  if (!encoder || encoder_level != options_.compression.level) {
    encoder = std::make_unique<BlockEncoder>(options_.compression.level);
    encoder_level = options_.compression.level;
  }
  EncodedBlock out;
  encoder->Begin(dict);
  std::string input;
  MessageRecord mr;
  for (size_t k = 0; k < members.size(); ++k) {
    const Pending& p = *group[members[k]];
    input = p.envelope.Encode();
    size_t env_len = input.size();
    input += p.raw;
    ByteWriter w;
    w.PutVarint(env_len);
    Status s = encoder->Add(input, &w.buffer());
    if (!s.ok()) {
      out.error = s;
      return out;
    }
    mr.id = p.id;
    mr.dictionary_id = dict ? dict->id() : 0;
    mr.raw_size = p.raw.size();
    mr.block_index = static_cast<uint32_t>(k);
    SecretKey dk = SecretKey::Random();
    mr.wrapped_key.clear();
    Seal(keys_.wrap, DataKeyAad(p.id), dk.view(), &mr.wrapped_key);
    mr.box.clear();
    Seal(dk, MessageAad(mr), w.buffer(), &mr.box);
    out.bodies.push_back(EncodeMessageBody(mr));
  }
  return out;
}

void Vault::DropPack(const Error& why) {
  pack_.reset();
  pack_fault_ = why.message();
}

Status Vault::ReopenForAppend() {
  pack_.reset();
  MV_RETURN_IF_ERROR(catalog_->Resume());
  MV_ASSIGN_OR_RETURN(std::vector<uint64_t> on_disk, ListPackNumbers(PacksPath(dir_)));
  MV_ASSIGN_OR_RETURN(auto infos, catalog_->Packs());
  MV_ASSIGN_OR_RETURN(stats_, catalog_->Stats());
  OpenReport report;
  if (!on_disk.empty()) {
    uint64_t last = on_disk.back();
    PackInfo info = infos.count(last) ? infos[last] : PackInfo{last, 0, 0, false, ""};
    MV_RETURN_IF_ERROR(ReplayPack(last, info, true, &report));
    MV_ASSIGN_OR_RETURN(infos, catalog_->Packs());
  }
  {
    std::lock_guard<std::mutex> l(change_mu_);
    last_change_ = stats_.next_change - 1;
  }
  change_cv_.notify_all();
  uint64_t last = on_disk.empty() ? 0 : on_disk.back();
  if (last && infos.count(last) && !infos[last].sealed && !infos[last].closed &&
      ::access(PackPath(last).c_str(), F_OK) == 0) {
    MV_RETURN_IF_ERROR(OpenPackForAppend(last, false));
    if (pack_->size >= options_.seal_bytes) return SealCurrentPack();  // the seal that failed
    return Status::Ok();
  }
  return OpenPackForAppend(last + 1, true);
}

void Vault::CommitGroup(std::vector<std::shared_ptr<Pending>>& group) {
  // A purge's pack swap waits until this group is written and its catalog batch applied.
  std::shared_lock<std::shared_mutex> layout(layout_mu_);
  auto fail_all = [&](const Error& e) {
    SetFailing(e);
    for (auto& p : group) p->done(e);
  };
  if (!pack_) {
    // An earlier failure dropped the pack. Try again (not more than every 200 ms, so a disk
    // that stays full is not hammered): the cause may be gone.
    auto now = std::chrono::steady_clock::now();
    if (now - last_reopen_try_ >= std::chrono::milliseconds(200)) {
      last_reopen_try_ = now;
      Status s = ReopenForAppend();
      if (!s.ok()) DropPack(s.error());
    }
    if (!pack_) {
      fail_all(IoError("the vault cannot append (" + pack_fault_ + "); it retries by itself"));
      return;
    }
  }
  OpenPack& pack = *pack_;
  const std::string path = PackPath(pack.number);
  const uint64_t base = pack.size;
  std::string buf;
  Catalog::Batch batch(catalog_.get());
  VaultStats st = stats_;
  std::unordered_map<ObjectId, MessageMeta, ObjectIdHash> fresh;  // written or updated in this group
  std::vector<std::optional<Result<IngestResult>>> results(group.size());
  uint64_t records = 0;
  auto append = [&](RecordType type, std::string_view body) {
    RecordLocation loc{pack.number, base + buf.size(), 0};
    std::string rec = Frame(type, body, pack.records + records);
    loc.length = static_cast<uint32_t>(rec.size());
    buf += rec;
    ++records;
    return loc;
  };

  bool seal_after = false;  // a purge or a retired dictionary needs the open pack sealed (to rewrite it)
  // Dictionaries first: a block written after them in this group may use them.
  for (size_t i = 0; i < group.size(); ++i) {
    if (group[i]->kind != Pending::kDictionary) continue;
    batch.PutDictionary(group[i]->dictionary_id, append(RecordType::kDictionary, group[i]->dictionary_body));
    if (group[i]->replaces) {
      // Every pack may hold blocks of the retired dictionary: queue them all for re-encoding.
      batch.PutRetire(group[i]->replaces, group[i]->dictionary_id);
      Result<std::map<uint64_t, PackInfo>> infos = catalog_->Packs();
      if (!infos.ok()) {
        // Nothing of the group is written: a replacement without its retirement must not be.
        fail_all(infos.error().With("queueing packs for a dictionary's replacement; nothing of this group was stored"));
        return;
      }
      for (const auto& [n, info] : *infos) batch.PutShred(n);
      seal_after = true;
    }
    results[i] = IngestResult{};
  }

  // New messages, in compression blocks. The first copy of a message in the group is stored;
  // later copies (and copies of messages stored meanwhile) become envelopes below.
  std::shared_ptr<const Dictionary> dict = CurrentDictionary();
  for (size_t i = 0; i < group.size(); ++i) {
    if (group[i]->kind == Pending::kDictionary && results[i]->ok()) dict = group[i]->dictionary;
  }
  std::vector<std::vector<size_t>> blocks;  // indices into group
  {
    std::unordered_set<ObjectId, ObjectIdHash> taken;
    size_t block_input = kBlockInputBytes;
    for (size_t i = 0; i < group.size(); ++i) {
      Pending& p = *group[i];
      if (p.kind != Pending::kMessage || p.raw.empty() || !taken.insert(p.id).second) continue;
      Result<std::optional<MessageMeta>> stored = catalog_->GetMessage(p.id);
      if (!stored.ok()) {
        results[i] = stored.error();
        continue;
      }
      if (*stored) continue;  // stored since preparation: an envelope
      if (block_input >= kBlockInputBytes) {
        blocks.emplace_back();
        block_input = 0;
      }
      blocks.back().push_back(i);
      block_input += p.raw.size();
    }
  }
  // Blocks are independent: compress and encrypt them on every core. A block never spans
  // commit groups, so a crash cuts only whole blocks and applied_bytes stays on a boundary.
  std::vector<EncodedBlock> encoded(blocks.size());
  std::atomic<size_t> next_block{0};
  auto encode = [&] {
    for (size_t b; (b = next_block.fetch_add(1)) < blocks.size();) encoded[b] = EncodeBlock(group, blocks[b], dict.get());
  };
  std::vector<std::thread> helpers;
  size_t cores = std::max(1u, std::thread::hardware_concurrency());
  for (size_t t = 1; t < std::min(cores, blocks.size()); ++t) helpers.emplace_back(encode);
  encode();
  for (auto& t : helpers) t.join();
  for (size_t b = 0; b < blocks.size(); ++b) {
    uint64_t block_start = base + buf.size();
    for (size_t k = 0; k < blocks[b].size(); ++k) {
      size_t i = blocks[b][k];
      Pending& p = *group[i];
      if (!encoded[b].error.ok()) {
        results[i] = encoded[b].error.error();
        continue;
      }
      RecordLocation loc = append(RecordType::kMessage, encoded[b].bodies[k]);
      MessageMeta meta;
      meta.where = loc;
      meta.block_start = block_start;
      meta.sequence = st.next_sequence++;
      meta.raw_size = p.raw.size();
      meta.has_warning = !p.warning.empty();
      meta.envelope_digests = {EnvelopeDigest(p.envelope)};
      batch.PutMessage(p.id, meta);
      batch.PutChange(st.next_change++, p.id);
      fresh[p.id] = meta;
      st.messages++;
      st.envelopes++;
      st.raw_bytes += meta.raw_size;
      st.stored_bytes += loc.length;
      IngestResult r;
      r.id = p.id;
      r.warning = p.warning;
      results[i] = r;
    }
  }

  // Further captures of stored messages: an envelope record when the envelope is new.
  for (size_t i = 0; i < group.size(); ++i) {
    Pending& p = *group[i];
    if (p.kind != Pending::kMessage || results[i]) continue;
    IngestResult r;
    r.id = p.id;
    r.duplicate = true;
    std::optional<MessageMeta> meta;
    if (auto f = fresh.find(p.id); f != fresh.end()) {
      meta = f->second;
    } else {
      Result<std::optional<MessageMeta>> m = catalog_->GetMessage(p.id);
      if (!m.ok() || !*m) {
        results[i] = m.ok() ? Internal("message " + p.id.Hex() + " was prepared as stored but is not") : m.error();
        continue;
      }
      meta = **m;
    }
    st.duplicates++;
    uint64_t digest = EnvelopeDigest(p.envelope);
    if (std::find(meta->envelope_digests.begin(), meta->envelope_digests.end(), digest) == meta->envelope_digests.end()) {
      Result<SecretKey> dk = DataKeyOf(p.id, *meta, &buf, base);
      if (!dk.ok()) {
        results[i] = dk.error();
        continue;
      }
      EnvelopeRecord er{p.id, ""};
      Seal(*dk, EnvelopeAad(p.id), p.envelope.Encode(), &er.box);
      RecordLocation loc = append(RecordType::kEnvelope, EncodeEnvelopeBody(er));
      meta->envelope_digests.push_back(digest);
      batch.PutEnvelope(p.id, static_cast<uint32_t>(meta->envelope_digests.size() - 1), StoredEnvelope{p.envelope, loc});
      batch.PutMessage(p.id, *meta);
      batch.PutChange(st.next_change++, p.id);
      fresh[p.id] = *meta;
      st.envelopes++;
      r.envelope_added = true;
    }
    results[i] = r;
  }

  // Purges, after this group's captures: a message captured in the same group is kept.
  {
    std::unordered_set<ObjectId, ObjectIdHash> captured;
    for (const auto& p : group) {
      if (p->kind == Pending::kMessage) captured.insert(p->id);
    }
    for (size_t i = 0; i < group.size(); ++i) {
      Pending& p = *group[i];
      if (p.kind == Pending::kSeal) {
        seal_after |= p.seal_pack == pack.number;
        results[i] = IngestResult{};
        continue;
      }
      if (p.kind != Pending::kPurge) continue;
      PurgeOutcome& outcome = *p.purge_outcome;
      std::vector<ObjectId> ids;
      Status checked = Status::Ok();
      for (const PurgeItem& item : p.purge) {
        std::optional<MessageMeta> meta;
        if (auto f = fresh.find(item.id); f != fresh.end()) {
          meta = f->second;
        } else {
          Result<std::optional<MessageMeta>> m = catalog_->GetMessage(item.id);
          if (!m.ok()) {
            checked = m.status();
            break;
          }
          meta = *m;
        }
        if (!meta) {
          outcome.skipped.emplace_back(item.id, "not stored (purged already)");
        } else if (captured.count(item.id)) {
          outcome.skipped.emplace_back(item.id, "captured again while the purge ran");
        } else if (meta->envelope_digests.size() != item.envelopes) {
          outcome.skipped.emplace_back(item.id, "captured again since the purge was decided (" +
                                                    std::to_string(meta->envelope_digests.size()) + " captures now, " +
                                                    std::to_string(item.envelopes) + " then)");
        } else {
          ids.push_back(item.id);
        }
      }
      std::set<uint64_t> touched;
      if (checked.ok()) checked = ApplyPurge(ids, &batch, &st, &fresh, &touched);
      if (!checked.ok()) {
        // The batch may hold part of the purge: write nothing of the group (all retry).
        fail_all(checked.error().With("purging; nothing of this group was stored"));
        return;
      }
      if (!ids.empty()) append(RecordType::kPurge, EncodePurgeBody(PurgeRecord{ids}));
      seal_after |= touched.count(pack.number) > 0;
      outcome.purged = std::move(ids);
      results[i] = IngestResult{};
    }
  }

  Status s = WriteAll(pack.fd, buf, path);
  if (s.ok() && ::fdatasync(pack.fd) != 0) s = ErrnoError("cannot fsync", path, errno);
  if (!s.ok()) {
    // Take the partial append back, so the pack ends at a record boundary again.
    if (::ftruncate(pack.fd, static_cast<off_t>(base)) != 0 || ::lseek(pack.fd, static_cast<off_t>(base), SEEK_SET) < 0) {
      DropPack(s.error());  // unknown state: the next group reopens the pack (replay cuts the partial append)
    }
    fail_all(s.error().With("nothing of this group was stored"));
    return;
  }
  commit_groups_++;
  pack.sha->Update(buf);
  pack.size += buf.size();
  pack.records += records;
  batch.PutPack(PackInfo{pack.number, pack.size, pack.records, false, ""});
  batch.PutStats(st);
  s = catalog_->Commit(&batch);
  if (!s.ok()) {
    // The pack holds the messages durably, but the catalog does not know them: drop the pack,
    // so the next group first replays them into the catalog (ReopenForAppend). The senders
    // hear a temporary failure and send again, which finds them stored.
    DropPack(s.error());
    fail_all(s.error().With("stored in the pack, but the catalog could not be updated; the vault retries by itself"));
    return;
  }
  stats_ = st;
  SetHealthy();
  {
    std::lock_guard<std::mutex> l(change_mu_);
    last_change_ = st.next_change - 1;
  }
  change_cv_.notify_all();
  for (size_t i = 0; i < group.size(); ++i) {
    if (group[i]->kind == Pending::kDictionary) {
      std::lock_guard<std::mutex> l(dict_mu_);
      dictionaries_[group[i]->dictionary_id] = group[i]->dictionary;
      auto& samples = dictionary_samples_[group[i]->dictionary_id];
      for (const ObjectId& id : group[i]->dictionary_samples) samples[id] = true;
      current_dictionary_ = std::max(current_dictionary_, group[i]->dictionary_id);
    }
    group[i]->done(std::move(*results[i]));
  }
  if (pack.size >= options_.seal_bytes || seal_after) {
    Status seal = SealCurrentPack();
    if (!seal.ok()) {
      // The group is durable and answered; the next group reopens (and seals) by itself.
      DropPack(seal.error().With("sealing or starting a pack"));
      SetFailing(seal.error().With("sealing or starting a pack"));
    }
  }
}

}  // namespace mailvault
