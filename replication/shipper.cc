#include "replication/shipper.h"

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <set>
#include <thread>

#include "core/bytes.h"
#include "core/file_util.h"
#include "core/fingerprint.h"
#include "vault/layout.h"
#include "vault/pack.h"
#include "vault/purposes.h"
#include "vault/vault.h"

namespace mailvault::replication {
namespace {

// Replication yields the CPU to capture and the indexer (serve's jobs run at the same nice).
constexpr int kShipperNice = 10;
// A segment of an open pack is at most this large (it is held in memory while it goes up).
constexpr uint64_t kMaxSegmentBytes = 32ull << 20;
// Manifests before the newest that stay offsite: the chain can be followed back this far.
constexpr uint64_t kManifestsKept = 8;

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

nlohmann::json IsoOrNull(int64_t us) {
  if (us <= 0) return nullptr;
  std::time_t t = us / 1000000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

struct Fds {
  std::vector<int> fds;
  ~Fds() {
    for (int fd : fds) ::close(fd);
  }
};

std::string ShaHex(std::string_view b) { return HexEncode(Sha256Of(b)); }

std::set<std::string> NamesOf(const Manifest& m) {
  std::set<std::string> out;
  if (m.index) {
    for (const auto& o : m.index->objects) out.insert(o.name);
  }
  for (const auto& o : m.identity) out.insert(o.name);
  for (const auto& p : m.packs) {
    for (const auto& s : p.segments) out.insert(s.name);
  }
  for (const auto& o : m.state.objects) out.insert(o.name);
  return out;
}

int LocalMinuteOfDay() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  return tm.tm_hour * 60 + tm.tm_min;
}

}  // namespace

const std::vector<std::string>& ShippedEntries() {
  static const std::vector<std::string> kEntries = {"VAULT", "keyslot", "packs", "state"};
  return kEntries;
}

std::string ObjectLockImpact(const std::string& target, int64_t lock_seconds) {
  return "offsite " + target + ": the bucket's object lock keeps every object " + std::to_string(lock_seconds / 86400) +
         " days after it is written: offsite packs written less than that ago that hold purged messages stay there "
         "(encrypted; their keys are shredded here) until the lock lets replication delete them";
}

nlohmann::json TargetStatus::ToJson() const {
  return {{"name", name},
          {"url", url},
          {"state", state},
          {"lag_objects", lag_objects},
          {"lag_bytes", lag_bytes},
          {"oldest_unshipped", IsoOrNull(oldest_unshipped_us)},
          {"shipped_bytes", shipped_bytes},
          {"shipped_objects", shipped_objects},
          {"last_error", last_error},
          {"last_error_at", IsoOrNull(last_error_us)},
          {"last_success", IsoOrNull(last_success_us)},
          {"manifest_seq", manifest_seq},
          {"shipped_change", shipped_change},
          {"object_lock_seconds", object_lock_seconds}};
}

Shipper::Shipper(Vault* vault, control::StateStore* state, std::function<control::AuditHead()> audit_head,
                 OffsiteTargetConfig config)
    : vault_(vault), state_(state), audit_head_(std::move(audit_head)), config_(std::move(config)) {
  status_.name = config_.name;
  status_.url = config_.url;
  state_key_ = vault_->DeriveSubkey(purpose::kOffsite);
  manifest_key_ = vault_->DeriveSubkey(purpose::kManifest);
  vault_id_hex_ = HexEncode(vault_->vault_id());
}

Shipper::~Shipper() { Stop(); }

std::string Shipper::RecordDir() const { return vault_->dir() + "/offsite/" + config_.name; }

std::optional<Manifest> Shipper::last_manifest() const {
  std::lock_guard l(mu_);
  return manifest_;
}

TargetStatus Shipper::status() const {
  std::lock_guard l(mu_);
  TargetStatus s = status_;
  if (!s.last_error.empty()) {
    s.state = "down";
  } else if (!config_.ActiveAt(LocalMinuteOfDay())) {
    s.state = "paused";
  } else if (s.oldest_unshipped_us && NowUs() - s.oldest_unshipped_us > int64_t(config_.max_unshipped_age_seconds) * 1000000) {
    s.state = "behind";
  } else {
    s.state = "ok";
  }
  return s;
}

void Shipper::SetFailure(const Error& e) {
  std::lock_guard l(mu_);
  status_.last_error = e.ToString();
  status_.last_error_us = NowUs();
}

Status Shipper::Load() {
  // Replication ships the vault's truth, by its layout table: a truth entry it does not know
  // would be lost with the machine.
  for (const layout::Entry& e : layout::kEntries) {
    if (e.kind != layout::Kind::kTruth) continue;
    if (std::find(ShippedEntries().begin(), ShippedEntries().end(), e.name) == ShippedEntries().end()) {
      return Internal(std::string("vault/layout.h names \"") + e.name + "\" as truth, but replication does not ship it");
    }
  }
  if (stores_.empty()) {
    const std::string uploads = RecordDir() + "/uploads";
    std::filesystem::create_directories(uploads);
    ::chmod((vault_->dir() + "/offsite").c_str(), 0700);
    ::chmod(RecordDir().c_str(), 0700);
    for (int i = 0; i < config_.parallel; ++i) {
      MV_ASSIGN_OR_RETURN(std::unique_ptr<ObjectStore> s, OpenObjectStore(config_, uploads));
      stores_.push_back(std::move(s));
    }
  }
  if (loaded_) return Status::Ok();
  ObjectStore& store = *stores_[0];
  if (!prepared_) {
    MV_RETURN_IF_ERROR(store.Prepare(true));
    prepared_ = true;
    // A bucket without object lock answers an error here on some servers: that is "none".
    Result<int64_t> lock = store.LockSeconds();
    std::lock_guard l(mu_);
    status_.object_lock_seconds = lock.ok() ? *lock : 0;
  }
  // The local record of the newest manifest, then the target's own newest: a lost or older
  // local record is replaced by the target's (when it authenticates and is this vault's).
  std::optional<Manifest> local;
  std::string local_hash;
  if (Result<std::string> bytes = ReadSmallFile(RecordDir() + "/manifest", kMaxManifestBytes); bytes.ok()) {
    if (Result<Manifest> m = DecodeManifest(*bytes, manifest_key_); m.ok() && m->vault == vault_id_hex_) {
      local = std::move(*m);
      local_hash = ShaHex(*bytes);
    }
  }
  MV_ASSIGN_OR_RETURN(std::vector<ObjectInfo> manifests, store.List("manifests/"));
  std::optional<uint64_t> newest;
  for (const ObjectInfo& o : manifests) {
    if (auto seq = ManifestSeqOf(o.name)) newest = std::max(newest.value_or(0), *seq);
  }
  if (newest && (!local || *newest > local->seq)) {
    MV_ASSIGN_OR_RETURN(std::string bytes, store.GetBytes(ManifestName(*newest)));
    Result<Manifest> plain = DecodeManifestUnauthenticated(bytes);
    if (plain.ok() && plain->vault != vault_id_hex_) {
      return FailedPrecondition(store.Describe() + " holds the offsite copy of another vault (" + plain->vault +
                                "); give each vault a bucket or directory of its own");
    }
    Result<Manifest> m = DecodeManifest(bytes, manifest_key_);
    if (!m.ok()) return m.error().With(store.Describe() + " " + ManifestName(*newest));
    local = std::move(*m);
    local_hash = ShaHex(bytes);
    MV_RETURN_IF_ERROR(ReplaceFileDurably(RecordDir() + "/manifest", bytes, 0600));
  }
  manifest_ = local;
  manifest_hash_ = local_hash;
  last_deep_check_us_ = NowUs();  // a start lists the target; downloading it all waits for the interval
  MV_RETURN_IF_ERROR(Reconcile(false));
  // Objects a crash left behind (uploaded, never named by a manifest) go now.
  if (manifest_) {
    std::set<std::string> named = NamesOf(*manifest_);
    std::vector<std::string> stray;
    for (const char* prefix : {"packs/", "state/", "index/"}) {
      MV_ASSIGN_OR_RETURN(std::vector<ObjectInfo> all, store.List(prefix));
      for (const ObjectInfo& o : all) {
        if (!named.count(o.name)) stray.push_back(o.name);
      }
    }
    pending_deletes_.insert(pending_deletes_.end(), stray.begin(), stray.end());
  }
  {
    std::lock_guard l(mu_);
    if (manifest_) {
      status_.manifest_seq = manifest_->seq;
      status_.shipped_bytes = 0;
      status_.shipped_objects = 0;
      for (const auto& p : manifest_->packs) status_.shipped_bytes += p.bytes;
      status_.shipped_objects = NamesOf(*manifest_).size();
    }
  }
  loaded_ = true;
  return Status::Ok();
}

Status Shipper::Reconcile(bool deep) {
  last_check_us_ = NowUs();
  if (deep) last_deep_check_us_ = last_check_us_;
  if (!manifest_) return Status::Ok();
  ObjectStore& store = *stores_[0];
  MV_ASSIGN_OR_RETURN(std::vector<ObjectInfo> all, store.List(""));
  std::map<std::string, uint64_t> present;
  for (const ObjectInfo& o : all) present[o.name] = o.size;
  auto bad = [&](const ShippedObject& o) -> Result<bool> {
    auto it = present.find(o.name);
    if (it == present.end() || it->second != o.size) return true;
    if (!deep) return false;
    Result<std::string> bytes = store.GetBytes(o.name);
    if (!bytes.ok()) {
      if (bytes.error().code() == ErrorCode::kNotFound) return true;
      return bytes.error();
    }
    return ShaHex(*bytes) != o.sha256;
  };
  Manifest m = *manifest_;
  bool changed = false;
  std::vector<ShippedObject> identity;
  for (const auto& o : m.identity) {
    MV_ASSIGN_OR_RETURN(bool b, bad(o));
    if (b) changed = true;
    else identity.push_back(o);
  }
  m.identity = identity;
  std::vector<ShippedPack> packs;
  for (auto& p : m.packs) {
    bool damaged = false;
    for (const auto& seg : p.segments) {
      MV_ASSIGN_OR_RETURN(bool b, bad(seg));
      damaged = damaged || b;
    }
    // The whole pack goes again (as one object): the damaged segment's bytes are ours too.
    if (damaged) {
      changed = true;
      for (const auto& seg : p.segments) pending_deletes_.push_back(seg.name);
    } else {
      packs.push_back(std::move(p));
    }
  }
  m.packs = std::move(packs);
  for (const auto& o : m.state.objects) {
    MV_ASSIGN_OR_RETURN(bool b, bad(o));
    if (b) {
      force_snapshot_ = true;
      changed = true;
    }
  }
  if (m.index) {
    bool damaged = false;
    for (const auto& o : m.index->objects) {
      MV_ASSIGN_OR_RETURN(bool b, bad(o));
      damaged = damaged || b;
    }
    if (damaged) {
      for (const auto& o : m.index->objects) pending_deletes_.push_back(o.name);
      m.index.reset();  // the next pass ships a new snapshot
      changed = true;
    }
  }
  if (changed) {
    std::lock_guard l(mu_);
    manifest_ = std::move(m);  // the next pass ships what was forgotten, and a manifest naming it
  }
  return Status::Ok();
}

Result<bool> Shipper::CopyIndex() {
  const std::string tmp = RecordDir() + "/index-copy";
  std::error_code ec;
  std::filesystem::remove_all(tmp, ec);
  const int64_t t0 = NowUs();
  Result<uint64_t> change = index_copier_(tmp);
  if (!change.ok()) {
    std::filesystem::remove_all(tmp, ec);
    if (change.error().code() == ErrorCode::kNotFound) return false;  // no index yet
    return change.error().With("copying the index for its offsite snapshot");
  }
  index_copy_ = ShippedIndex{*change, t0, 0, {}};
  return true;
}

Status Shipper::ShipIndexCopy() {
  const std::string tmp = RecordDir() + "/index-copy";
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code e;
      std::filesystem::remove_all(dir, e);
    }
  } cleanup{tmp};
  ShippedIndex si = *index_copy_;
  index_copy_.reset();
  Manifest next = *manifest_;
  next.seq = manifest_->seq + 1;
  next.prev = manifest_hash_;
  next.time_us = NowUs();
  std::string chunk;
  auto flush = [&]() -> Status {
    const std::string name = IndexObjectName(next.seq, si.objects.size());
    std::string box = SealIndexChunk(chunk, state_key_, name);
    MV_RETURN_IF_ERROR(stores_[0]->PutBytes(name, box));
    si.objects.push_back({name, box.size(), ShaHex(box)});
    chunk.clear();
    return Status::Ok();
  };
  MV_RETURN_IF_ERROR(WriteIndexArchive(tmp, [&](std::string_view piece) -> Status {
    si.bytes += piece.size();
    while (!piece.empty()) {
      size_t take = std::min(piece.size(), kIndexChunkBytes - chunk.size());
      chunk.append(piece.substr(0, take));
      piece.remove_prefix(take);
      if (chunk.size() == kIndexChunkBytes) MV_RETURN_IF_ERROR(flush());
    }
    return Status::Ok();
  }));
  if (!chunk.empty()) MV_RETURN_IF_ERROR(flush());
  next.index = std::move(si);
  index_snapshot_due_ = false;
  return WriteManifest(next);
}

Status Shipper::WriteManifest(const Manifest& next) {
  const std::string bytes = EncodeManifest(next, manifest_key_);
  MV_RETURN_IF_ERROR(stores_[0]->PutBytes(ManifestName(next.seq), bytes));
  // The target holds the manifest: remember it (a crash before this is a manifest found on
  // the target at the next start, and adopted).
  MV_RETURN_IF_ERROR(ReplaceFileDurably(RecordDir() + "/manifest", bytes, 0600));
  std::set<std::string> keep = NamesOf(next);
  if (manifest_) {
    for (const std::string& n : NamesOf(*manifest_)) {
      if (!keep.count(n)) pending_deletes_.push_back(n);
    }
  }
  if (next.seq > kManifestsKept) pending_deletes_.push_back(ManifestName(next.seq - kManifestsKept));
  {
    std::lock_guard l(mu_);
    manifest_ = next;
  }
  manifest_hash_ = ShaHex(bytes);
  return Status::Ok();
}

Status Shipper::RunUploads(std::vector<Upload>& uploads) {
  if (uploads.empty()) return Status::Ok();
  std::atomic<size_t> next{0};
  std::mutex err_mu;
  std::optional<Error> first_error;
  auto work = [&](ObjectStore* store) {
    ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), kShipperNice);
    for (;;) {
      size_t i = next.fetch_add(1);
      if (i >= uploads.size()) return;
      {
        std::lock_guard l(err_mu);
        if (first_error) return;
      }
      Upload& u = uploads[i];
      auto keep_going = [this](uint64_t, uint64_t) {
        std::lock_guard l(loop_mu_);
        return !stopping_;
      };
      Status st = u.fd >= 0 ? store->PutFile(u.name, "/proc/self/fd/" + std::to_string(u.fd), u.size, keep_going, &u.sha256)
                            : store->PutBytes(u.name, u.bytes);
      if (!st.ok()) {
        std::lock_guard l(err_mu);
        if (!first_error) first_error = st.error();
        return;
      }
    }
  };
  size_t workers = std::min(uploads.size(), stores_.size());
  std::vector<std::thread> threads;
  for (size_t w = 1; w < workers; ++w) threads.emplace_back(work, stores_[w].get());
  work(stores_[0].get());
  for (auto& t : threads) t.join();
  if (first_error) return *first_error;
  return Status::Ok();
}

Status Shipper::CollectGarbage(std::vector<std::string> names) {
  ObjectStore& store = *stores_[0];
  std::vector<std::string> left;
  Status result;
  for (const std::string& n : names) {
    if (!result.ok()) {
      left.push_back(n);
      continue;
    }
    Status st = store.Delete(n);
    if (!st.ok()) {
      result = st;
      left.push_back(n);
    }
  }
  pending_deletes_ = std::move(left);
  return result;
}

Status Shipper::SyncOnce() {
  std::lock_guard pass(pass_mu_);
  Status st = PassLocked();
  if (!st.ok()) {
    SetFailure(st.error());
    // The next pass starts over: it reads the record and lists the target again (what a fault
    // took away offsite is shipped again), and after a missing bucket it prepares it again.
    loaded_ = false;
    if (st.error().code() == ErrorCode::kNotFound) prepared_ = false;
  }
  return st;
}

Status Shipper::PassLocked() {
  const int64_t started = NowUs();
  MV_RETURN_IF_ERROR(Load());
  if (started - last_deep_check_us_ > int64_t(config_.deep_check_interval_seconds) * 1000000) {
    MV_RETURN_IF_ERROR(Reconcile(true));
  } else if (started - last_check_us_ > int64_t(config_.check_interval_seconds) * 1000000) {
    MV_RETURN_IF_ERROR(Reconcile(false));
  }
  Manifest next = manifest_.value_or(Manifest{});
  const uint64_t seq = (manifest_ ? manifest_->seq : 0) + 1;
  // A pack at another generation than the manifest's: a purge rewrote it since, so the shipped
  // index snapshot holds the purged mail's words (sealed). A new one replaces it in this pass
  // (the purge levelled and compacted the index before it rewrote a pack).
  if (index_copier_ && next.index) {
    MV_ASSIGN_OR_RETURN(std::vector<Vault::PackExtent> now, vault_->PackExtents());
    std::map<uint64_t, uint32_t> shipped;
    for (const ShippedPack& p : next.packs) shipped[p.number] = p.generation;
    for (const Vault::PackExtent& e : now) {
      auto it = shipped.find(e.number);
      if (it != shipped.end() && it->second != e.generation) index_snapshot_due_ = true;
    }
  }
  // The index is copied first, before the packs are read: the copy then holds nothing the packs
  // below lack. It goes up after them, with a manifest of its own (a day's index upload must not
  // hold back the new mail's).
  bool index_copied = false;
  if (index_copier_ && config_.index_snapshot_interval_seconds > 0 &&
      (index_snapshot_due_ || !next.index ||
       started - next.index->time_us > int64_t(config_.index_snapshot_interval_seconds) * 1000000)) {
    MV_ASSIGN_OR_RETURN(index_copied, CopyIndex());
  }
  const uint64_t change = vault_->last_change();  // every change up to it is in the durable bytes below
  MV_ASSIGN_OR_RETURN(std::vector<Vault::PackExtent> extents, vault_->PackExtents());

  next.vault = vault_id_hex_;
  next.target = config_.name;
  next.seq = seq;
  next.prev = manifest_hash_;
  next.time_us = started;
  bool changed = !manifest_;
  std::vector<Upload> uploads;
  Fds fds;
  uint64_t lag_bytes = 0, lag_objects = 0;

  // The vault's identity (VAULT, and keyslot for a passphrase vault).
  {
    std::vector<ShippedObject> identity;
    for (const char* name : {"VAULT", "keyslot"}) {
      Result<std::string> bytes = ReadSmallFile(vault_->dir() + "/" + name, 1 << 20);
      if (!bytes.ok()) {
        if (bytes.error().code() == ErrorCode::kNotFound) continue;
        return bytes.error();
      }
      ShippedObject o{name, bytes->size(), ShaHex(*bytes)};
      auto old = std::find_if(next.identity.begin(), next.identity.end(), [&](const ShippedObject& x) { return x.name == o.name; });
      if (old == next.identity.end() || old->sha256 != o.sha256) {
        uploads.push_back({o.name, std::move(*bytes), -1, o.size});
        ++lag_objects;
        lag_bytes += o.size;
        changed = true;
      }
      identity.push_back(o);
    }
    next.identity = identity;
  }

  // The packs: what is durable beyond what the target holds goes up as a new segment.
  std::map<uint64_t, ShippedPack> old;
  for (ShippedPack& p : next.packs) old[p.number] = std::move(p);
  next.packs.clear();
  std::vector<std::string> problems;
  for (const Vault::PackExtent& e : extents) {
    ShippedPack sp;
    auto it = old.find(e.number);
    if (it != old.end() && it->second.generation == e.generation) {
      sp = it->second;
    } else {
      sp.number = e.number;
      sp.generation = e.generation;
    }
    if (e.durable_bytes < sp.bytes) {
      // The offsite copy is longer than ours: never shrink it (`verify --repair` fetches it back).
      problems.push_back("pack " + std::to_string(e.number) + " is shorter here (" + std::to_string(e.durable_bytes) +
                         " bytes) than offsite (" + std::to_string(sp.bytes) + ")");
      next.packs.push_back(std::move(sp));
      continue;
    }
    if (e.durable_bytes > sp.bytes) {
      Result<int> fd = vault_->OpenPackGeneration(e.number, e.generation);
      if (!fd.ok()) {
        const std::string path = vault_->dir() + "/packs/" + PackFileName(e.number);
        if (fd.error().code() == ErrorCode::kNotFound && ::access(path.c_str(), F_OK) != 0) {
          // Gone here (deleted, a disk fault): the offsite copy is kept as it is, and said so.
          problems.push_back("pack " + std::to_string(e.number) + " is missing here (" + path + ")");
          if (it != old.end()) next.packs.push_back(it->second);
          continue;
        }
        // A purge swapped the file since PackExtents: the next pass ships the new generation.
        if (fd.error().code() == ErrorCode::kNotFound && it != old.end()) {
          next.packs.push_back(it->second.generation == e.generation ? std::move(sp) : it->second);
          changed = changed || it->second.generation != e.generation;
          continue;
        }
        return fd.error().With("pack " + std::to_string(e.number) + " (`mailvault verify --repair` fetches a missing pack back)");
      }
      fds.fds.push_back(*fd);
      lag_bytes += e.durable_bytes - sp.bytes;
      ++lag_objects;
      if (sp.bytes == 0 && e.sealed) {
        // One object, hashed as it goes up (RunUploads fills the segment's sha256).
        ShippedObject o{SegmentName(e.number, e.generation, 0), e.durable_bytes, ""};
        uploads.push_back({o.name, "", *fd, o.size, next.packs.size(), ""});
        sp.segments.push_back(o);
        sp.bytes = e.durable_bytes;
      } else {
        while (sp.bytes < e.durable_bytes) {
          uint64_t n = std::min(kMaxSegmentBytes, e.durable_bytes - sp.bytes);
          std::string bytes;
          MV_RETURN_IF_ERROR(PreadAll(*fd, sp.bytes, size_t(n), &bytes, "pack " + std::to_string(e.number)));
          ShippedObject o{SegmentName(e.number, e.generation, sp.bytes), n, ShaHex(bytes)};
          uploads.push_back({o.name, std::move(bytes), -1, n});
          sp.segments.push_back(o);
          sp.bytes += n;
        }
      }
      changed = true;
    }
    if (sp.sealed != e.sealed && sp.bytes == e.durable_bytes) {
      sp.sealed = e.sealed;
      changed = true;
    }
    next.packs.push_back(std::move(sp));
  }

  // The control plane: a delta against what was shipped, or a snapshot.
  std::map<std::string, std::string> state_now;
  bool state_shipped = false;
  if (force_snapshot_) {
    next.state.objects.clear();
    have_shipped_state_ = false;
  }
  if (state_ && (next.state.objects.empty() || state_->generation() != next.state.generation)) {
    MV_ASSIGN_OR_RETURN(uint64_t gen, state_->ScanAllRaw([&](std::string_view k, std::string_view v) {
                          state_now.emplace(std::string(k), std::string(v));
                        }));
    if (next.state.objects.empty() || gen != next.state.generation) {
      force_snapshot_ = false;
      StateObject obj;
      obj.generation = gen;
      uint64_t full = 0, shipped_deltas = 0;
      for (const auto& [k, v] : state_now) full += k.size() + v.size() + 8;
      for (size_t i = 1; i < next.state.objects.size(); ++i) shipped_deltas += next.state.objects[i].size;
      if (have_shipped_state_ && !next.state.objects.empty()) {
        obj.snapshot = false;
        obj.base_generation = next.state.generation;
        for (const auto& [k, v] : state_now) {
          auto was = shipped_state_.find(k);
          if (was == shipped_state_.end() || was->second != v) obj.records.push_back({k, v});
        }
        for (const auto& [k, v] : shipped_state_) {
          if (!state_now.count(k)) obj.records.push_back({k, std::nullopt});
        }
      }
      uint64_t delta = 0;
      for (const auto& r : obj.records) delta += r.key.size() + (r.value ? r.value->size() : 0) + 8;
      // Deltas pile up; once they outweigh half a snapshot, a snapshot replaces them all.
      if (obj.snapshot || shipped_deltas + delta > full / 2) {
        obj.snapshot = true;
        obj.base_generation = 0;
        obj.records.clear();
        for (const auto& [k, v] : state_now) obj.records.push_back({k, v});
      }
      const std::string name = StateObjectName(gen, obj.snapshot);
      std::string box = EncodeStateObject(obj, state_key_, name);
      ShippedObject o{name, box.size(), ShaHex(box)};
      if (obj.snapshot) next.state.objects.clear();
      next.state.objects.push_back(o);
      next.state.generation = gen;
      lag_bytes += box.size();
      ++lag_objects;
      uploads.push_back({name, std::move(box), -1, o.size});
      state_shipped = true;
      changed = true;
    }
  }

  if (audit_head_) {
    control::AuditHead head = audit_head_();
    if (head.seq != next.audit_seq || head.hash != next.audit_head) {
      next.audit_seq = head.seq;
      next.audit_head = head.hash;
      changed = true;
    }
  }

  {
    std::lock_guard l(mu_);
    status_.lag_bytes = lag_bytes;
    status_.lag_objects = lag_objects;
    if (lag_bytes && !unshipped_since_us_) unshipped_since_us_ = started;
    status_.oldest_unshipped_us = unshipped_since_us_;
  }

  if (changed) {
    MV_RETURN_IF_ERROR(RunUploads(uploads));
    for (const Upload& u : uploads) {
      if (u.fd < 0) continue;
      if (u.sha256.size() != 64) return Internal("offsite: the upload of " + u.name + " reported no SHA-256");
      next.packs[u.pack_index].segments.at(0).sha256 = u.sha256;
    }
    MV_RETURN_IF_ERROR(WriteManifest(next));
    if (state_shipped) {
      shipped_state_ = std::move(state_now);
      have_shipped_state_ = true;
    }
  }
  if (index_copied) MV_RETURN_IF_ERROR(ShipIndexCopy());
  Status garbage = Status::Ok();
  if (!pending_deletes_.empty()) {
    // Never what the newest manifest names (a pack shipped again may reuse an old name).
    std::set<std::string> keep = manifest_ ? NamesOf(*manifest_) : std::set<std::string>{};
    std::vector<std::string> go;
    for (auto& n : pending_deletes_) {
      if (!keep.count(n)) go.push_back(std::move(n));
    }
    garbage = CollectGarbage(std::move(go));
  }

  std::lock_guard l(mu_);
  status_.manifest_seq = manifest_ ? manifest_->seq : 0;
  status_.shipped_bytes = 0;
  if (manifest_) {
    for (const auto& p : manifest_->packs) status_.shipped_bytes += p.bytes;
    for (const auto& o : manifest_->state.objects) status_.shipped_bytes += o.size;
    for (const auto& o : manifest_->identity) status_.shipped_bytes += o.size;
    status_.shipped_objects = NamesOf(*manifest_).size();
  }
  status_.shipped_change = std::max(status_.shipped_change, change);
  status_.lag_bytes = 0;
  status_.lag_objects = 0;
  // Bytes that became durable during this pass wait for the next one: they were first seen no
  // earlier than this pass's start.
  unshipped_since_us_ = vault_->last_change() > change ? started : 0;
  status_.oldest_unshipped_us = unshipped_since_us_;
  if (!garbage.ok()) return garbage.error().With("deleting objects no manifest names any more");
  if (!problems.empty()) {
    std::string all;
    for (const auto& p : problems) all += (all.empty() ? "" : "; ") + p;
    return Corruption(all + " (`mailvault verify --repair` fetches the offsite copy back)");
  }
  status_.last_error.clear();
  status_.last_success_us = NowUs();
  return Status::Ok();
}

void Shipper::Start(std::chrono::milliseconds interval) {
  std::lock_guard l(loop_mu_);
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this, interval] { Loop(interval); });
}

void Shipper::Stop() {
  {
    std::lock_guard l(loop_mu_);
    stopping_ = true;
  }
  loop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Shipper::Loop(std::chrono::milliseconds interval) {
  ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), kShipperNice);
  std::chrono::seconds backoff(1);
  uint64_t seen_change = 0;
  for (;;) {
    {
      std::lock_guard l(loop_mu_);
      if (stopping_) return;
    }
    std::chrono::milliseconds wait = interval;
    if (!config_.ActiveAt(LocalMinuteOfDay())) {
      wait = std::chrono::milliseconds(30000);
    } else {
      Status st = SyncOnce();
      if (st.ok()) {
        backoff = std::chrono::seconds(1);
      } else {
        wait = backoff;
        backoff = std::min<std::chrono::seconds>(backoff * 2, std::chrono::seconds(60));
      }
      seen_change = vault_->last_change();
    }
    // Sleep until the vault changes (a new capture), or the wait passes; a stop ends it.
    auto until = std::chrono::steady_clock::now() + wait;
    while (std::chrono::steady_clock::now() < until) {
      {
        std::unique_lock l(loop_mu_);
        if (stopping_) return;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      auto slice = std::min<std::chrono::milliseconds>(left, std::chrono::milliseconds(200));
      if (slice.count() <= 0) break;
      if (vault_->WaitForChange(seen_change, slice) > seen_change && wait == interval) {
        // New mail: ship it soon, but batch what arrives in the next moment with it.
        std::unique_lock l(loop_mu_);
        loop_cv_.wait_for(l, std::chrono::milliseconds(200), [this] { return stopping_; });
        break;
      }
    }
  }
}

}  // namespace mailvault::replication
