// Vault: reading messages, envelopes, ids, stats and the change log.
#include <fcntl.h>

#include <algorithm>

#include "vault/vault_internal.h"

namespace mailvault {

Result<Vault::DecodedMessage> Vault::DecodeStored(const ObjectId& id, const MessageMeta& meta) const {
  // The message's block, from its first record through the message's own.
  MV_ASSIGN_OR_RETURN(int fd, PackFd(meta.where.pack));
  const std::string path = PackPath(meta.where.pack);
  std::string bytes;
  uint64_t end = meta.where.offset + meta.where.length;
  if (meta.block_start > meta.where.offset) return Corruption("message " + id.Hex() + ": its catalog entry is inconsistent");
  MV_RETURN_IF_ERROR(PreadAll(fd, meta.block_start, end - meta.block_start, &bytes, path));
  BlockCursor cursor(this);
  RecordScanner scanner(bytes, meta.block_start, meta.block_start);
  RawRecord rec;
  while (scanner.Next(&rec)) {
    if (rec.type != RecordType::kMessage) return Corruption("message " + id.Hex() + ": its compression block is interrupted");
    Result<DecodedMessage> d = cursor.Next(rec);
    if (!d.ok()) return d.error().With(PackFileName(meta.where.pack));
    if (rec.offset == meta.where.offset) {
      if (!(d->id == id)) return Corruption("the catalog points message " + id.Hex() + " at another message's record");
      d->where.pack = meta.where.pack;
      return d;
    }
  }
  return Corruption("message " + id.Hex() + " in " + PackFileName(meta.where.pack) + " at offset " +
                    std::to_string(meta.where.offset) + ": " + (scanner.error().empty() ? "record not found" : scanner.error()));
}

Result<std::string> Vault::ReadMessage(const ObjectId& id) {
  std::shared_lock<std::shared_mutex> layout(layout_mu_);  // a purge swaps packs under it
  MV_ASSIGN_OR_RETURN(MessageMeta meta, GetMeta(id));
  MV_ASSIGN_OR_RETURN(DecodedMessage d, DecodeStored(id, meta));
  return std::move(d.raw);
}

Result<MessageMeta> Vault::GetMeta(const ObjectId& id) const {
  MV_ASSIGN_OR_RETURN(std::optional<MessageMeta> m, catalog_->GetMessage(id));
  if (!m) return NotFound("no message " + id.Hex() + " in this vault");
  return *m;
}

Result<std::vector<StoredEnvelope>> Vault::GetEnvelopes(const ObjectId& id) const {
  std::shared_lock<std::shared_mutex> layout(layout_mu_);
  return EnvelopesOf(id);
}

Result<std::vector<StoredEnvelope>> Vault::EnvelopesOf(const ObjectId& id) const {
  // The first envelope travels inside the message record; later ones are in the catalog.
  MV_ASSIGN_OR_RETURN(MessageMeta meta, GetMeta(id));
  MV_ASSIGN_OR_RETURN(DecodedMessage d, DecodeStored(id, meta));
  MV_ASSIGN_OR_RETURN(Envelope first, Envelope::Decode(d.envelope));
  std::vector<StoredEnvelope> out{StoredEnvelope{first, meta.where}};
  MV_ASSIGN_OR_RETURN(std::vector<StoredEnvelope> later, catalog_->GetEnvelopes(id));
  out.insert(out.end(), later.begin(), later.end());
  return out;
}

Result<std::string> Vault::Warning(const ObjectId& id) {
  MV_ASSIGN_OR_RETURN(std::string raw, ReadMessage(id));
  return AnalysisWarning(raw);
}

Result<ObjectId> Vault::Resolve(const std::string& s) const {
  if (auto full = ObjectId::FromHex(s)) return *full;
  if (s.size() < 6) return InvalidArgument("'" + s + "' is too short for a message id: give at least 6 hex digits");
  MV_ASSIGN_OR_RETURN(std::vector<ObjectId> ids, catalog_->FindByPrefix(s, 2));
  if (ids.empty()) return NotFound("no message id starts with " + s + " (see `mailvault list`)");
  if (ids.size() > 1) return InvalidArgument("the prefix " + s + " matches more than one message; give more digits");
  return ids[0];
}

Result<VaultStats> Vault::Stats() const { return catalog_->Stats(); }

Result<std::vector<Change>> Vault::ChangesAfter(uint64_t after, size_t limit) const {
  return catalog_->ChangesAfter(after, limit);
}

uint64_t Vault::last_change() const {
  std::lock_guard<std::mutex> l(change_mu_);
  return last_change_;
}

uint64_t Vault::WaitForChange(uint64_t after, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> l(change_mu_);
  change_cv_.wait_for(l, timeout, [&] { return last_change_ > after; });
  return last_change_;
}

Status Vault::ReadMany(const std::vector<ObjectId>& ids,
                       const std::function<void(const ObjectId&, Result<StoredMessage>)>& fn) const {
  std::shared_lock<std::shared_mutex> layout(layout_mu_);
  // Group the wanted messages by compression block, so each block is read and decoded once
  // (reading them one by one would decode a block's leading members again for each).
  struct Wanted {
    ObjectId id;
    MessageMeta meta;
  };
  std::map<std::pair<uint64_t, uint64_t>, std::vector<Wanted>> blocks;
  for (const ObjectId& id : ids) {
    Result<std::optional<MessageMeta>> m = catalog_->GetMessage(id);
    if (!m.ok()) {
      fn(id, m.error());
    } else if (!*m) {
      fn(id, NotFound("no message " + id.Hex() + " in the vault"));
    } else {
      blocks[{(*m)->where.pack, (*m)->block_start}].push_back(Wanted{id, **m});
    }
  }
  for (auto& entry : blocks) {
    // Named, not a structured binding: the lambda below captures them (clang 14 cannot).
    const uint64_t pack = entry.first.first, block_start = entry.first.second;
    std::vector<Wanted>& members = entry.second;
    std::sort(members.begin(), members.end(), [](const Wanted& a, const Wanted& b) { return a.meta.where.offset < b.meta.where.offset; });
    auto fail_rest = [&](size_t from, const Error& e) {
      for (size_t k = from; k < members.size(); ++k) fn(members[k].id, e);
    };
    Result<int> fd = PackFd(pack);
    if (!fd.ok()) {
      fail_rest(0, fd.error());
      continue;
    }
    const std::string path = PackPath(pack);
    const MessageMeta& last = members.back().meta;
    std::string bytes;
    if (Status s = PreadAll(*fd, block_start, last.where.offset + last.where.length - block_start, &bytes, path); !s.ok()) {
      fail_rest(0, s.error());
      continue;
    }
    BlockCursor cursor(this);
    RecordScanner scanner(bytes, block_start, block_start);
    RawRecord rec;
    size_t k = 0;
    while (k < members.size() && scanner.Next(&rec)) {
      if (rec.type != RecordType::kMessage) break;
      Result<DecodedMessage> d = cursor.Next(rec);
      if (!d.ok()) break;
      if (rec.offset != members[k].meta.where.offset) continue;
      StoredMessage out;
      out.meta = members[k].meta;
      Result<Envelope> first = Envelope::Decode(d->envelope);
      if (!first.ok()) {
        fn(members[k].id, first.error());
        ++k;
        continue;
      }
      out.envelopes.push_back(std::move(*first));
      if (out.meta.envelope_digests.size() > 1) {
        Result<std::vector<StoredEnvelope>> later = catalog_->GetEnvelopes(members[k].id);
        if (!later.ok()) {
          fn(members[k].id, later.error());
          ++k;
          continue;
        }
        for (StoredEnvelope& se : *later) out.envelopes.push_back(std::move(se.envelope));
      }
      out.raw = std::move(d->raw);
      fn(members[k].id, std::move(out));
      ++k;
    }
    // What the block walk did not reach: read each one alone, for its own precise error.
    for (; k < members.size(); ++k) {
      Result<DecodedMessage> d = DecodeStored(members[k].id, members[k].meta);
      if (!d.ok()) {
        fn(members[k].id, d.error());
        continue;
      }
      Result<std::vector<StoredEnvelope>> all = EnvelopesOf(members[k].id);
      if (!all.ok()) {
        fn(members[k].id, all.error());
        continue;
      }
      StoredMessage out;
      out.meta = members[k].meta;
      out.raw = std::move(d->raw);
      for (StoredEnvelope& se : *all) out.envelopes.push_back(std::move(se.envelope));
      fn(members[k].id, std::move(out));
    }
  }
  return Status::Ok();
}

Status Vault::ForEachMessage(const std::function<bool(const ObjectId&, const MessageMeta&)>& fn) const {
  return catalog_->ForEachMessage(fn);
}

}  // namespace mailvault

namespace mailvault {

Result<std::vector<Vault::PackExtent>> Vault::PackExtents() const {
  std::shared_lock<std::shared_mutex> layout(layout_mu_);
  MV_ASSIGN_OR_RETURN(auto infos, catalog_->Packs());
  std::vector<PackExtent> out;
  out.reserve(infos.size());
  for (const auto& [n, info] : infos) out.push_back({n, info.generation, info.applied_bytes, info.sealed || info.closed});
  return out;
}

Result<int> Vault::OpenPackGeneration(uint64_t number, uint32_t generation) const {
  std::shared_lock<std::shared_mutex> layout(layout_mu_);
  const std::string path = PackPath(number);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return NotFound("pack " + std::to_string(number) + " is gone");
    return ErrnoError("cannot open pack", path, errno);
  }
  std::string head;
  Status st = PreadAll(fd, 0, kPackHeaderSize, &head, path);
  uint32_t version = 0;
  Result<PackHeader> h = st.ok() ? DecodePackHeader(head, &version) : Result<PackHeader>(st.error());
  if (!h.ok() || h->generation != generation) {
    ::close(fd);
    if (!h.ok()) return h.error();
    return NotFound("pack " + std::to_string(number) + " is now generation " + std::to_string(h->generation));
  }
  return fd;
}

}  // namespace mailvault
