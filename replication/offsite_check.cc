#include "replication/offsite_check.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "control/state.h"
#include "core/bytes.h"
#include "core/file_util.h"
#include "core/fingerprint.h"
#include "vault/pack.h"
#include "vault/purposes.h"

namespace mailvault::replication {
namespace {

std::string ShaHex(std::string_view b) { return HexEncode(Sha256Of(b)); }

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

Result<std::string> ShaOfFileRange(int fd, uint64_t off, uint64_t len, const std::string& path) {
  Sha256 h;
  std::string buf;
  for (uint64_t done = 0; done < len;) {
    size_t n = size_t(std::min<uint64_t>(4 << 20, len - done));
    buf.clear();
    MV_RETURN_IF_ERROR(PreadAll(fd, off + done, n, &buf, path));
    h.Update(buf);
    done += n;
  }
  return HexEncode(h.Final());
}

}  // namespace

nlohmann::json OffsiteVerifyReport::ToJson() const {
  nlohmann::json diffs = nlohmann::json::array();
  for (const auto& d : differences) diffs.push_back({{"kind", d.kind}, {"object", d.object}, {"detail", d.detail}});
  return {{"target", target},         {"ok", ok()},
          {"manifest_seq", manifest_seq}, {"objects_checked", objects_checked},
          {"bytes_downloaded", bytes_downloaded}, {"lag_bytes", lag_bytes},
          {"differences", diffs}};
}

Result<Manifest> NewestManifest(ObjectStore& store, const SecretKey& key, int* skipped) {
  MV_ASSIGN_OR_RETURN(std::vector<ObjectInfo> all, store.List("manifests/"));
  std::vector<uint64_t> seqs;
  for (const ObjectInfo& o : all) {
    if (auto s = ManifestSeqOf(o.name)) seqs.push_back(*s);
  }
  std::sort(seqs.rbegin(), seqs.rend());
  if (seqs.empty()) return NotFound(store.Describe() + " holds no manifest: nothing was replicated there yet");
  std::optional<Error> first;
  int passed = 0;
  for (uint64_t s : seqs) {
    Result<std::string> bytes = store.GetBytes(ManifestName(s));
    Result<Manifest> m = bytes.ok() ? DecodeManifest(*bytes, key) : Result<Manifest>(bytes.error());
    if (m.ok()) {
      if (skipped) *skipped = passed;
      return m;
    }
    if (!first) first = m.error().With(ManifestName(s));
    if (m.error().code() == ErrorCode::kIoError) return m.error();  // the link, not the manifest
    ++passed;
  }
  return *first;
}

Result<OffsiteVerifyReport> VerifyOffsite(ObjectStore& store, const VerifyInputs& in) {
  OffsiteVerifyReport r;
  auto diff = [&](std::string kind, std::string object, std::string detail) {
    r.differences.push_back({std::move(kind), std::move(object), std::move(detail)});
  };
  MV_ASSIGN_OR_RETURN(std::vector<ObjectInfo> listing, store.List(""));
  std::map<std::string, uint64_t> present;
  for (const ObjectInfo& o : listing) present[o.name] = o.size;

  int skipped = 0;
  Result<Manifest> newest = NewestManifest(store, in.manifest_key, &skipped);
  if (!newest.ok()) {
    if (newest.error().code() == ErrorCode::kIoError) return newest.error();
    diff("manifest", "", newest.error().message());
    return r;
  }
  const Manifest& m = *newest;
  r.manifest_seq = m.seq;
  r.manifest_time_us = m.time_us;
  if (skipped) diff("manifest", ManifestName(m.seq + 1), std::to_string(skipped) + " newer manifest(s) fail authentication (edited or forged)");
  if (m.vault != in.vault_id_hex) diff("manifest", ManifestName(m.seq), "the manifest is vault " + m.vault + "'s, not this vault's");

  // The chain against this appliance's own record of the newest manifest.
  if (!in.record_dir.empty()) {
    Result<std::string> local = ReadSmallFile(in.record_dir + "/manifest", kMaxManifestBytes);
    if (local.ok()) {
      Result<Manifest> lm = DecodeManifest(*local, in.manifest_key);
      if (!lm.ok()) {
        diff("chain", in.record_dir + "/manifest", "this appliance's record fails authentication: " + lm.error().message());
      } else if (lm->seq > m.seq) {
        diff("chain", ManifestName(lm->seq), "this appliance wrote manifest " + std::to_string(lm->seq) +
                                                 " but the target's newest is " + std::to_string(m.seq) +
                                                 " (manifests lost or rolled back offsite)");
      } else {
        // Follow the target's chain back to the local head.
        std::string want = ShaHex(*local);
        uint64_t seq = m.seq;
        Result<std::string> bytes = store.GetBytes(ManifestName(seq));
        bool reached = false;
        while (bytes.ok()) {
          if (seq == lm->seq) {
            reached = ShaHex(*bytes) == want;
            break;
          }
          Result<Manifest> cur = DecodeManifestUnauthenticated(*bytes);
          if (!cur.ok() || seq == 0) break;
          bytes = store.GetBytes(ManifestName(--seq));
          if (bytes.ok() && ShaHex(*bytes) != cur->prev) {
            diff("chain", ManifestName(seq), "manifest " + std::to_string(seq + 1) + " names a different predecessor");
            break;
          }
        }
        if (!reached && lm->seq + 8 > m.seq) {
          diff("chain", ManifestName(lm->seq), "the target's manifest " + std::to_string(lm->seq) +
                                                   " is not the one this appliance wrote (replaced offsite)");
        }
      }
    }
  }

  // Every named object present, with its size (and, --deep, its bytes).
  std::set<std::string> named;
  auto check = [&](const ShippedObject& o) -> Status {
    named.insert(o.name);
    ++r.objects_checked;
    auto it = present.find(o.name);
    if (it == present.end()) {
      diff("missing", o.name, "named by manifest " + std::to_string(m.seq) + " but not on the target");
      return Status::Ok();
    }
    if (it->second != o.size) {
      diff("size", o.name, std::to_string(it->second) + " bytes on the target, " + std::to_string(o.size) + " in the manifest");
      return Status::Ok();
    }
    if (!in.deep) return Status::Ok();
    Result<std::string> bytes = store.GetBytes(o.name);
    if (!bytes.ok()) {
      if (bytes.error().code() == ErrorCode::kIoError) return bytes.status();
      diff("unreadable", o.name, bytes.error().message());
      return Status::Ok();
    }
    r.bytes_downloaded += bytes->size();
    if (ShaHex(*bytes) != o.sha256) diff("content", o.name, "its SHA-256 is not the manifest's: damaged or replaced offsite");
    return Status::Ok();
  };
  for (const auto& o : m.identity) MV_RETURN_IF_ERROR(check(o));
  for (const auto& p : m.packs) {
    for (const auto& s : p.segments) MV_RETURN_IF_ERROR(check(s));
  }
  for (const auto& o : m.state.objects) {
    MV_RETURN_IF_ERROR(check(o));
    if (in.deep && present.count(o.name)) {
      Result<std::string> box = store.GetBytes(o.name);
      if (box.ok() && !DecodeStateObject(*box, in.state_key, o.name).ok()) {
        diff("content", o.name, "the state object does not open with this vault's key");
      }
    }
  }
  if (m.index) {
    for (const auto& o : m.index->objects) {
      MV_RETURN_IF_ERROR(check(o));
      if (in.deep && present.count(o.name)) {
        Result<std::string> box = store.GetBytes(o.name);
        if (box.ok() && !OpenIndexChunk(*box, in.state_key, o.name).ok()) {
          diff("content", o.name, "the index chunk does not open with this vault's key");
        }
      }
    }
  }
  for (const auto& [name, size] : present) {
    if (named.count(name) || ManifestSeqOf(name)) continue;
    diff("extra", name, "on the target but named by no manifest" +
                            std::string(name.rfind("packs/", 0) == 0 ? " (a pack generation the vault no longer has: it may hold purged mail)" : ""));
  }

  // The manifest against the vault.
  if (in.vault) {
    MV_ASSIGN_OR_RETURN(std::vector<Vault::PackExtent> extents, in.vault->PackExtents());
    std::map<uint64_t, const ShippedPack*> offsite;
    for (const auto& p : m.packs) offsite[p.number] = &p;
    for (const auto& e : extents) {
      auto it = offsite.find(e.number);
      const std::string name = "pack " + std::to_string(e.number);
      if (it == offsite.end()) {
        r.lag_bytes += e.durable_bytes;
        continue;
      }
      const ShippedPack& p = *it->second;
      if (p.generation != e.generation) {
        diff("stale", name, "offsite holds generation " + std::to_string(p.generation) + ", the vault " +
                                std::to_string(e.generation) + " (rewritten by a purge: the offsite copy still holds purged mail until replication ships it)");
      } else if (p.bytes > e.durable_bytes) {
        diff("size", name, "offsite holds " + std::to_string(p.bytes) + " bytes, the vault " + std::to_string(e.durable_bytes));
      } else {
        r.lag_bytes += e.durable_bytes - p.bytes;
      }
    }
  }

  // The audit anchor.
  if (in.audit_hash_at && m.audit_seq > 0) {
    MV_ASSIGN_OR_RETURN(std::optional<std::string> hash, in.audit_hash_at(m.audit_seq));
    if (!hash) {
      diff("audit", "", "offsite anchors audit entry " + std::to_string(m.audit_seq) +
                            " but the local trail has no such entry (entries removed here)");
    } else if (*hash != m.audit_head) {
      diff("audit", "", "local audit entry " + std::to_string(m.audit_seq) + " is not the one anchored offsite (the trail was rewritten here)");
    }
  }
  return r;
}

Result<uint64_t> FetchPack(ObjectStore& store, const ShippedPack& pack, const std::string& path) {
  const std::string part = path + ".fetch";
  int fd = ::open(part.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoError("creating", part, errno);
  Status st;
  for (const ShippedObject& s : pack.segments) {
    Result<std::string> bytes = store.GetBytes(s.name);
    if (!bytes.ok()) {
      st = bytes.status();
      break;
    }
    if (bytes->size() != s.size || ShaHex(*bytes) != s.sha256) {
      st = Corruption(store.Describe() + " " + s.name + ": its bytes are not the manifest's (damaged offsite)");
      break;
    }
    st = WriteAll(fd, *bytes, part);
    if (!st.ok()) break;
  }
  if (st.ok() && ::fsync(fd) != 0) st = ErrnoError("fsync", part, errno);
  ::close(fd);
  if (st.ok() && ::rename(part.c_str(), path.c_str()) != 0) st = ErrnoError("renaming", part, errno);
  if (!st.ok()) {
    ::unlink(part.c_str());
    return st.error();
  }
  MV_RETURN_IF_ERROR(FsyncDirectory(DirName(path)));
  return pack.bytes;
}

Result<DrFetchReport> FetchVaultFromOffsite(const OffsiteTargetConfig& target, const KeySource& keys,
                                            const std::string& vault_dir, const std::function<void(const std::string&)>& say) {
  auto tell = [&](const std::string& s) {
    if (say) say(s);
  };
  std::error_code ec;
  if (std::filesystem::exists(vault_dir + "/VAULT", ec)) {
    return Error(ErrorCode::kAlreadyExists, vault_dir + " already holds a vault; dr restore fills an empty directory");
  }
  std::filesystem::create_directories(vault_dir + "/packs", ec);
  if (ec) return IoError("cannot create " + vault_dir + "/packs: " + ec.message());
  ::chmod(vault_dir.c_str(), 0700);
  ::chmod((vault_dir + "/packs").c_str(), 0700);

  const int parallel = std::max(1, target.parallel);
  std::vector<std::unique_ptr<ObjectStore>> stores;
  for (int i = 0; i < parallel; ++i) {
    MV_ASSIGN_OR_RETURN(std::unique_ptr<ObjectStore> s, OpenObjectStore(target, ""));
    stores.push_back(std::move(s));
  }
  ObjectStore& store = *stores[0];
  MV_RETURN_IF_ERROR(store.Prepare(false));
  DrFetchReport report;
  auto t0 = std::chrono::steady_clock::now();

  // The identity first: with it and the key, the manifests can be authenticated.
  MV_ASSIGN_OR_RETURN(std::string vault_file, store.GetBytes("VAULT"));
  MV_RETURN_IF_ERROR(WriteNewFileDurably(vault_dir + "/VAULT.dr", vault_file, 0600));
  if (Result<std::string> slot = store.GetBytes("keyslot"); slot.ok()) {
    MV_RETURN_IF_ERROR(WriteNewFileDurably(vault_dir + "/keyslot", *slot, 0600));
  } else if (slot.error().code() != ErrorCode::kNotFound) {
    return slot.error();
  }
  // VAULT is written under its own name last (a directory without it is not a vault), so read
  // the key check from the staged copy.
  if (::rename((vault_dir + "/VAULT.dr").c_str(), (vault_dir + "/VAULT").c_str()) != 0) {
    return ErrnoError("renaming", vault_dir + "/VAULT.dr", errno);
  }
  std::string vault_id;
  Result<SecretKey> manifest_key = Vault::SubkeyFromFiles(vault_dir, keys, purpose::kManifest, &vault_id);
  if (!manifest_key.ok()) {
    ::unlink((vault_dir + "/VAULT").c_str());
    return manifest_key.error();
  }
  MV_ASSIGN_OR_RETURN(SecretKey state_key, Vault::SubkeyFromFiles(vault_dir, keys, purpose::kState));
  MV_ASSIGN_OR_RETURN(SecretKey offsite_key, Vault::SubkeyFromFiles(vault_dir, keys, purpose::kOffsite));
  ::unlink((vault_dir + "/VAULT").c_str());  // back in place at the end

  MV_ASSIGN_OR_RETURN(report.manifest, NewestManifest(store, *manifest_key, &report.manifests_skipped));
  const Manifest& m = report.manifest;
  if (m.vault != vault_id) return Corruption("the newest manifest is vault " + m.vault + "'s, not " + vault_id + "'s");
  tell("manifest " + std::to_string(m.seq) + " of vault " + vault_id + ": " + std::to_string(m.packs.size()) + " packs");

  // The packs, several at once.
  std::atomic<size_t> next{0};
  std::mutex mu;
  std::optional<Error> failed;
  auto work = [&](ObjectStore* s) {
    for (;;) {
      size_t i = next.fetch_add(1);
      if (i >= m.packs.size()) return;
      {
        std::lock_guard l(mu);
        if (failed) return;
      }
      const ShippedPack& p = m.packs[i];
      Result<uint64_t> got = FetchPack(*s, p, vault_dir + "/packs/" + PackFileName(p.number));
      std::lock_guard l(mu);
      if (!got.ok()) {
        if (!failed) failed = got.error().With("pack " + std::to_string(p.number));
        return;
      }
      report.packs++;
      report.pack_bytes += *got;
    }
  };
  std::vector<std::thread> threads;
  for (size_t w = 1; w < stores.size() && w < m.packs.size(); ++w) threads.emplace_back(work, stores[w].get());
  work(stores[0].get());
  for (auto& t : threads) t.join();
  if (failed) return *failed;
  MV_RETURN_IF_ERROR(FsyncDirectory(vault_dir + "/packs"));
  report.seconds_download = Since(t0);
  tell("packs: " + std::to_string(report.packs) + ", " + std::to_string(report.pack_bytes) + " bytes");

  // The control plane: the snapshot, then each delta in order.
  auto t1 = std::chrono::steady_clock::now();
  std::map<std::string, std::string> state;
  uint64_t generation = 0;
  for (size_t i = 0; i < m.state.objects.size(); ++i) {
    const ShippedObject& o = m.state.objects[i];
    MV_ASSIGN_OR_RETURN(std::string box, store.GetBytes(o.name));
    if (ShaHex(box) != o.sha256) return Corruption(o.name + ": its bytes are not the manifest's (damaged offsite)");
    MV_ASSIGN_OR_RETURN(StateObject so, DecodeStateObject(box, offsite_key, o.name));
    if (i == 0 && !so.snapshot) return Corruption(o.name + ": the state objects do not start with a snapshot");
    if (i > 0 && (so.snapshot || so.base_generation != generation)) {
      return Corruption(o.name + ": a delta from generation " + std::to_string(so.base_generation) + " after generation " +
                        std::to_string(generation));
    }
    for (auto& rec : so.records) {
      if (rec.value) state[rec.key] = std::move(*rec.value);
      else state.erase(rec.key);
    }
    generation = so.generation;
    report.state_objects++;
  }
  {
    MV_ASSIGN_OR_RETURN(std::unique_ptr<control::StateStore> st, control::StateStore::Open(vault_dir, state_key));
    control::StateStore::Batch batch;
    for (auto& [k, v] : state) {
      batch.emplace_back(k, std::move(v));
      if (batch.size() >= 4096) {
        MV_RETURN_IF_ERROR(st->WriteRaw(batch, false));
        batch.clear();
      }
    }
    MV_RETURN_IF_ERROR(st->WriteRaw(batch, true));
    report.state_keys = state.size();
  }
  report.seconds_state = Since(t1);
  // The index, when a snapshot was shipped: the restore then only catches it up.
  if (m.index) {
    auto t2 = std::chrono::steady_clock::now();
    std::string archive;
    archive.reserve(size_t(m.index->bytes));
    for (const ShippedObject& o : m.index->objects) {
      MV_ASSIGN_OR_RETURN(std::string box, store.GetBytes(o.name));
      if (ShaHex(box) != o.sha256) return Corruption(o.name + ": its bytes are not the manifest's (damaged offsite)");
      MV_ASSIGN_OR_RETURN(std::string chunk, OpenIndexChunk(box, offsite_key, o.name));
      archive += chunk;
    }
    if (archive.size() != m.index->bytes) return Corruption("the offsite index snapshot is " + std::to_string(archive.size()) + " bytes, not " + std::to_string(m.index->bytes));
    MV_RETURN_IF_ERROR(ReadIndexArchive(archive, vault_dir + "/index"));
    report.index_change = m.index->change;
    report.index_bytes = archive.size();
    report.seconds_index = Since(t2);
    tell("index snapshot: " + std::to_string(archive.size()) + " bytes, level with change " + std::to_string(m.index->change));
  }
  tell("control plane: " + std::to_string(report.state_keys) + " keys from " + std::to_string(report.state_objects) + " objects");
  MV_RETURN_IF_ERROR(WriteNewFileDurably(vault_dir + "/VAULT", vault_file, 0600));
  return report;
}

Result<RepairReport> RepairPacksFromOffsite(ObjectStore& store, const std::string& vault_dir, const SecretKey& manifest_key,
                                            const std::string& target_name) {
  RepairReport report;
  MV_ASSIGN_OR_RETURN(Manifest m, NewestManifest(store, manifest_key));
  for (const ShippedPack& p : m.packs) {
    const std::string path = vault_dir + "/packs/" + PackFileName(p.number);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    std::string why;
    uint64_t local_size = 0;
    if (fd < 0) {
      why = "missing here";
    } else {
      struct stat stbuf{};
      ::fstat(fd, &stbuf);
      local_size = uint64_t(stbuf.st_size);
      std::string head;
      uint32_t version = 0;
      Result<PackHeader> h = PreadAll(fd, 0, kPackHeaderSize, &head, path).ok() ? DecodePackHeader(head, &version)
                                                                             : Result<PackHeader>(Corruption("short"));
      if (!h.ok()) {
        why = "its header is damaged";
      } else if (h->generation != p.generation) {
        ::close(fd);
        continue;  // a different generation (a purge since the manifest): not this copy's to fix
      } else if (local_size < p.bytes) {
        why = "shorter here (" + std::to_string(local_size) + " bytes) than offsite (" + std::to_string(p.bytes) + ")";
      } else {
        uint64_t off = 0;
        for (const ShippedObject& s : p.segments) {
          Result<std::string> sha = ShaOfFileRange(fd, off, s.size, path);
          if (!sha.ok() || *sha != s.sha256) {
            why = "bytes " + std::to_string(off) + "-" + std::to_string(off + s.size) + " differ from the offsite copy";
            break;
          }
          off += s.size;
        }
      }
    }
    if (why.empty()) {
      ::close(fd);
      continue;
    }
    // Keep a local tail beyond the offsite copy (mail not yet shipped).
    std::string tail;
    if (fd >= 0 && local_size > p.bytes) {
      Status st = PreadAll(fd, p.bytes, size_t(local_size - p.bytes), &tail, path);
      if (!st.ok()) tail.clear();
    }
    if (fd >= 0) ::close(fd);
    const std::string fetched = path + ".repair";
    Result<uint64_t> got = FetchPack(store, p, fetched);
    if (!got.ok()) {
      report.problems.push_back("pack " + std::to_string(p.number) + ": " + why + "; fetching it failed: " + got.error().message());
      continue;
    }
    if (!tail.empty()) {
      int out = ::open(fetched.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
      Status st = out >= 0 ? WriteAll(out, tail, fetched) : ErrnoError("opening", fetched, errno);
      if (st.ok() && ::fsync(out) != 0) st = ErrnoError("fsync", fetched, errno);
      if (out >= 0) ::close(out);
      if (!st.ok()) {
        report.problems.push_back("pack " + std::to_string(p.number) + ": " + st.error().message());
        continue;
      }
    }
    if (::rename(fetched.c_str(), path.c_str()) != 0) {
      report.problems.push_back(ErrnoError("renaming", fetched, errno).message());
      continue;
    }
    MV_RETURN_IF_ERROR(FsyncDirectory(vault_dir + "/packs"));
    report.repaired.push_back("pack " + std::to_string(p.number) + ": " + why + "; fetched " + std::to_string(*got) +
                              " bytes from " + target_name);
  }
  return report;
}

}  // namespace mailvault::replication
