#include "vault/vault.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <filesystem>
#include <random>
#include <sstream>

#include "core/bytes.h"
#include "core/message.h"
#include "vault/pack.h"

namespace mailvault {
namespace {

constexpr std::string_view kVaultFileMagic = "mailvault-vault v1";
constexpr size_t kMaxGroupBytes = 64 << 20;  // one commit group's appended bytes
constexpr size_t kReplayBatchRecords = 1024;

std::string VaultFilePath(const std::string& dir) { return dir + "/VAULT"; }
std::string KeyslotPath(const std::string& dir) { return dir + "/keyslot"; }
std::string CatalogPath(const std::string& dir) { return dir + "/catalog"; }
std::string PacksPath(const std::string& dir) { return dir + "/packs"; }

struct VaultFile {
  std::string id;  // 16 raw bytes
  std::string key_check;
  bool passphrase = false;
};

std::string FormatVaultFile(const VaultFile& v) {
  return std::string(kVaultFileMagic) + "\nid: " + HexEncode(v.id) + "\nkey-check: " + v.key_check +
         "\nkey: " + (v.passphrase ? "passphrase" : "key-file") + "\n";
}

Result<VaultFile> ReadVaultFile(const std::string& dir) {
  Result<std::string> text = ReadSmallFile(VaultFilePath(dir), 64 << 10);
  if (!text.ok()) {
    if (text.error().code() == ErrorCode::kNotFound) {
      return NotFound("no vault in " + dir + " (create one with `mailvault --vault " + dir + " init`)");
    }
    return text.error();
  }
  std::istringstream in(*text);
  std::string line;
  VaultFile v;
  if (!std::getline(in, line) || line != kVaultFileMagic) return Corruption(VaultFilePath(dir) + " is not a mailvault vault file");
  while (std::getline(in, line)) {
    if (line.rfind("id: ", 0) == 0 && !HexDecode(line.substr(4), &v.id)) return Corruption("bad id line in " + VaultFilePath(dir));
    if (line.rfind("key-check: ", 0) == 0) v.key_check = line.substr(11);
    if (line == "key: passphrase") v.passphrase = true;
  }
  if (v.id.size() != 16 || v.key_check.empty()) return Corruption(VaultFilePath(dir) + " is incomplete");
  return v;
}

Result<SecretKey> LoadMasterKey(const std::string& dir, const VaultFile& vf, const KeySource& keys) {
  Result<SecretKey> master = Error(ErrorCode::kBadKey, "");
  if (keys.passphrase) {
    Result<std::string> slot = ReadSmallFile(KeyslotPath(dir), 64 << 10);
    if (!slot.ok()) {
      return Error(ErrorCode::kBadKey, "this vault has no passphrase keyslot; open it with its key file (--key-file)");
    }
    master = Keyslot::Unlock(*slot, *keys.passphrase);
  } else {
    if (keys.key_file.empty()) {
      return Error(ErrorCode::kBadKey, vf.passphrase
                                           ? "this vault is opened with a passphrase: set MAILVAULT_PASSPHRASE or use --passphrase-stdin"
                                           : "no key file given: use --key-file FILE or set MAILVAULT_KEY_FILE");
    }
    master = KeyFile::Read(keys.key_file);
  }
  if (!master.ok()) return master.error();
  if (VaultKeys::CheckValue(*master, vf.id) != vf.key_check) {
    return Error(ErrorCode::kBadKey, keys.passphrase ? std::string("the passphrase does not open this vault")
                                                     : "the key in " + keys.key_file + " does not open the vault in " + dir +
                                                           " (vault id " + HexEncode(vf.id) +
                                                           "); use the key file that was created with this vault");
  }
  return master;
}

Status MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) return ErrnoError("cannot create directory", path, errno);
  return Status::Ok();
}

Result<std::vector<uint64_t>> ListPackNumbers(const std::string& dir) {
  std::vector<uint64_t> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return ErrnoError("cannot list", dir, errno);
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.size() != 13 || name.substr(8) != ".pack") continue;
    char* end = nullptr;
    uint64_t n = std::strtoull(name.c_str(), &end, 10);
    if (end == name.c_str() + 8 && n > 0) out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

thread_local std::unique_ptr<Compressor> t_compressor;
Compressor& ThreadCompressor(int level) {
  if (!t_compressor) t_compressor = std::make_unique<Compressor>(level);
  return *t_compressor;
}

// The catalog's view of a message's bytes: its summary, and why MIME analysis stopped short.
void Summarize(std::string_view raw, const MessageLimits& limits, MessageMeta* meta) {
  meta->summary = SummarizeHeaders(raw);
  meta->raw_size = raw.size();
  Result<MimeShape> shape = ScanMimeShape(raw, limits);
  if (!shape.ok()) {
    meta->parse_warning = "stored, but not analysed: " + shape.error().message();
  } else if (!shape->truncation.empty()) {
    meta->parse_warning = "stored, but the message looks truncated: " + shape->truncation;
  }
}

// The plaintext inside a message box: varint envelope length, envelope, compressed message.
Status SplitMessagePlaintext(std::string_view plain, std::string_view* envelope, std::string_view* compressed) {
  ByteReader r(plain);
  if (!r.GetString(envelope, 1 << 26)) return Corruption("message record's envelope is truncated");
  *compressed = r.rest();
  return Status::Ok();
}

}  // namespace

// One message (or dictionary) on its way to the committer.
struct Vault::Pending {
  enum Kind { kMessage, kDictionary } kind = kMessage;
  ObjectId id;
  Envelope envelope;
  std::string message_body;  // the encoded MessageRecord body, when prepared as new
  MessageMeta meta;          // the summary part, when prepared as new
  uint32_t dictionary_id = 0;
  std::shared_ptr<const Dictionary> dictionary;  // kDictionary: activated once durable
  std::promise<Result<IngestResult>> promise;
};

// The pack that receives appends.
struct Vault::OpenPack {
  uint64_t number = 0;
  int fd = -1;
  uint64_t size = 0;
  uint64_t records = 0;
  std::unique_ptr<Sha256> sha;  // of every byte written so far
  ~OpenPack() {
    if (fd >= 0) ::close(fd);
  }
};

Vault::Vault(std::string dir, std::string vault_id, VaultKeys keys, VaultOptions options, FileLock lock)
    : dir_(std::move(dir)), vault_id_(std::move(vault_id)), keys_(std::move(keys)), options_(options), lock_(std::move(lock)) {}

Vault::~Vault() {
  {
    std::lock_guard<std::mutex> l(queue_mu_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  if (committer_.joinable()) committer_.join();
  for (auto& [n, fd] : read_fds_) ::close(fd);
}

std::string Vault::PackPath(uint64_t n) const { return PacksPath(dir_) + "/" + PackFileName(n); }

Status Vault::Init(const std::string& dir, const KeySource& keys, const VaultOptions& options, bool* created_key_file) {
  (void)options;
  *created_key_file = false;
  if (::access(VaultFilePath(dir).c_str(), F_OK) == 0) {
    return Error(ErrorCode::kAlreadyExists, "a vault already exists in " + dir);
  }
  MV_RETURN_IF_ERROR(MakeDir(dir));
  SecretKey master;
  VaultFile vf;
  vf.id = RandomBytes(16);
  if (keys.passphrase) {
    if (keys.passphrase->size() < 8) return InvalidArgument("the passphrase is too short (at least 8 characters)");
    master = SecretKey::Random();
    MV_RETURN_IF_ERROR(WriteNewFileDurably(KeyslotPath(dir), Keyslot::Create(master, *keys.passphrase, ScryptParams{}), 0600));
    vf.passphrase = true;
  } else {
    if (keys.key_file.empty()) return InvalidArgument("no key file given: use --key-file FILE (it is created if missing)");
    if (::access(keys.key_file.c_str(), F_OK) == 0) {
      MV_ASSIGN_OR_RETURN(master, KeyFile::Read(keys.key_file));
    } else {
      master = SecretKey::Random();
      MV_RETURN_IF_ERROR(KeyFile::Create(keys.key_file, master));
      *created_key_file = true;
    }
  }
  vf.key_check = VaultKeys::CheckValue(master, vf.id);
  MV_RETURN_IF_ERROR(MakeDir(PacksPath(dir)));
  MV_RETURN_IF_ERROR(FsyncDirectory(dir));
  // Written last: a directory without VAULT is not a vault, so a failed init can be retried.
  return WriteNewFileDurably(VaultFilePath(dir), FormatVaultFile(vf), 0600);
}

Result<std::unique_ptr<Vault>> Vault::Open(const std::string& dir, const KeySource& keys, const VaultOptions& options,
                                           OpenReport* report) {
  MV_ASSIGN_OR_RETURN(VaultFile vf, ReadVaultFile(dir));
  MV_ASSIGN_OR_RETURN(FileLock lock, FileLock::Acquire(dir + "/lock"));
  MV_ASSIGN_OR_RETURN(SecretKey master, LoadMasterKey(dir, vf, keys));
  std::unique_ptr<Vault> v(new Vault(dir, vf.id, VaultKeys::Derive(master, vf.id), options, std::move(lock)));
  MV_ASSIGN_OR_RETURN(v->catalog_, Catalog::Open(CatalogPath(dir), v->keys_.catalog, true));
  OpenReport local;
  MV_RETURN_IF_ERROR(v->Recover(report ? report : &local));
  v->committer_ = std::thread([p = v.get()] { p->CommitLoop(); });
  return v;
}

Result<OpenReport> Vault::Rebuild(const std::string& dir, const KeySource& keys, const VaultOptions& options) {
  MV_ASSIGN_OR_RETURN(VaultFile vf, ReadVaultFile(dir));
  {
    // Check the key and the lock before deleting anything.
    MV_ASSIGN_OR_RETURN(FileLock lock, FileLock::Acquire(dir + "/lock"));
    MV_ASSIGN_OR_RETURN(SecretKey master, LoadMasterKey(dir, vf, keys));
    std::error_code ec;
    std::filesystem::remove_all(CatalogPath(dir), ec);
    if (ec) return IoError("cannot remove the old catalog " + CatalogPath(dir) + ": " + ec.message());
  }
  OpenReport report;
  MV_ASSIGN_OR_RETURN(std::unique_ptr<Vault> v, Open(dir, keys, options, &report));
  return report;
}

// ---- recovery and replay ----

Status Vault::Recover(OpenReport* report) {
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
    MV_ASSIGN_OR_RETURN(std::string dict, mailvault::Open(keys_.dictionary, DictionaryAad(dr.dictionary_id), dr.box));
    MV_ASSIGN_OR_RETURN(auto d, Dictionary::Load(id, std::move(dict), options_.compression.level));
    dictionaries_[id] = d;
    current_dictionary_ = std::max(current_dictionary_, id);
  }
  for (size_t i = 0; i < on_disk.size(); ++i) {
    uint64_t n = on_disk[i];
    auto it = infos.find(n);
    PackInfo info = it != infos.end() ? it->second : PackInfo{n, 0, 0, false, ""};
    MV_RETURN_IF_ERROR(ReplayPack(n, info, i + 1 == on_disk.size(), report));
  }
  MV_ASSIGN_OR_RETURN(infos, catalog_->Packs());
  if (!on_disk.empty() && infos.count(on_disk.back()) && !infos[on_disk.back()].sealed) {
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
  if (info.applied_bytes >= size && info.applied_bytes > 0) return Status::Ok();
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
  uint64_t start = std::max<uint64_t>(info.applied_bytes, kPackHeaderSize);
  RecordScanner scanner(bytes, start);
  RawRecord rec;
  Catalog::Batch batch(catalog_.get());
  VaultStats st = stats_;
  std::unordered_map<ObjectId, MessageMeta, ObjectIdHash> fresh;
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
  while (scanner.Next(&rec)) {
    if (rec.type == RecordType::kSeal) {
      MV_ASSIGN_OR_RETURN(SealRecord seal, DecodeSealBody(rec.body));
      info.sealed = true;
      info.sha256 = seal.sha256;
    } else {
      Status s = ApplyRecord(rec, number, &batch, &st, &fresh);
      if (!s.ok()) report->warnings.push_back(path + " offset " + std::to_string(rec.offset) + ": " + s.error().message());
    }
    ++info.records;
    ++report->records_replayed;
    if (++in_batch >= kReplayBatchRecords) MV_RETURN_IF_ERROR(flush(scanner.offset()));
  }
  uint64_t good_end = scanner.offset();
  if (good_end < size) {
    if (last && scanner.torn()) {
      // An append cut short by a crash: it was never acknowledged. Drop it.
      if (::truncate(path.c_str(), static_cast<off_t>(good_end)) != 0) return ErrnoError("cannot truncate", path, errno);
      int tfd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (tfd >= 0) {
        ::fsync(tfd);
        ::close(tfd);
      }
      report->torn_bytes_dropped += size - good_end;
    } else {
      report->warnings.push_back(path + ": damaged record at offset " + std::to_string(good_end) + " (" + scanner.error() +
                                 "); later records of this pack are not in the catalog. Run `mailvault verify`.");
      info.sealed = true;  // never append after damage
    }
  }
  return flush(good_end);
}

Status Vault::ApplyRecord(const RawRecord& rec, uint64_t pack, Catalog::Batch* batch, VaultStats* st,
                          std::unordered_map<ObjectId, MessageMeta, ObjectIdHash>* fresh) {
  RecordLocation loc{pack, rec.offset, rec.length};
  auto lookup = [&](const ObjectId& id) -> Result<std::optional<MessageMeta>> {
    auto f = fresh->find(id);
    if (f != fresh->end()) return std::optional<MessageMeta>(f->second);
    return catalog_->GetMessage(id);
  };
  switch (rec.type) {
    case RecordType::kDictionary: {
      MV_ASSIGN_OR_RETURN(DictionaryRecord dr, DecodeDictionaryBody(rec.body));
      MV_ASSIGN_OR_RETURN(std::string dict, mailvault::Open(keys_.dictionary, DictionaryAad(dr.dictionary_id), dr.box));
      MV_ASSIGN_OR_RETURN(auto d, Dictionary::Load(dr.dictionary_id, std::move(dict), options_.compression.level));
      {
        std::lock_guard<std::mutex> l(dict_mu_);
        dictionaries_[dr.dictionary_id] = d;
        current_dictionary_ = std::max(current_dictionary_, dr.dictionary_id);
      }
      batch->PutDictionary(dr.dictionary_id, loc);
      return Status::Ok();
    }
    case RecordType::kMessage: {
      MV_ASSIGN_OR_RETURN(MessageRecord mr, DecodeMessageBody(rec.body));
      MV_ASSIGN_OR_RETURN(std::optional<MessageMeta> existing, lookup(mr.id));
      if (existing) return Status::Ok();  // a second copy (an interrupted commit retried): the first wins
      std::string env_bytes;
      MV_ASSIGN_OR_RETURN(std::string raw, DecryptMessageRecord(rec.body, &mr.id, &env_bytes));
      MV_ASSIGN_OR_RETURN(Envelope env, Envelope::Decode(env_bytes));
      MessageMeta meta;
      Summarize(raw, options_.limits, &meta);
      meta.where = loc;
      meta.sequence = st->next_sequence++;
      meta.envelope_digests = {env.ContentDigest()};
      batch->PutMessage(mr.id, meta);
      (*fresh)[mr.id] = meta;
      st->messages++;
      st->envelopes++;
      st->raw_bytes += meta.raw_size;
      st->stored_bytes += rec.length;
      return Status::Ok();
    }
    case RecordType::kEnvelope: {
      MV_ASSIGN_OR_RETURN(EnvelopeRecord er, DecodeEnvelopeBody(rec.body));
      MV_ASSIGN_OR_RETURN(std::optional<MessageMeta> meta, lookup(er.id));
      if (!meta) return Corruption("envelope for message " + er.id.Hex() + ", which no earlier record stores");
      MV_ASSIGN_OR_RETURN(int fd, PackFd(meta->where.pack));
      std::string head;
      size_t head_len = kRecordHeaderSize + ObjectId::kSize + 12 + kKeySize + kSealOverhead;
      MV_RETURN_IF_ERROR(PreadAll(fd, meta->where.offset, head_len, &head, PackPath(meta->where.pack)));
      std::string wrapped = head.substr(kRecordHeaderSize + ObjectId::kSize + 12);
      MV_ASSIGN_OR_RETURN(SecretKey dk, UnwrapDataKey(er.id, wrapped));
      MV_ASSIGN_OR_RETURN(std::string env_bytes, mailvault::Open(dk, EnvelopeAad(er.id), er.box));
      MV_ASSIGN_OR_RETURN(Envelope env, Envelope::Decode(env_bytes));
      meta->envelope_digests.push_back(env.ContentDigest());
      batch->PutEnvelope(er.id, static_cast<uint32_t>(meta->envelope_digests.size() - 1), StoredEnvelope{env, loc});
      batch->PutMessage(er.id, *meta);
      (*fresh)[er.id] = *meta;
      st->envelopes++;
      st->duplicates++;
      return Status::Ok();
    }
    case RecordType::kSeal:
      return Status::Ok();
  }
  return Status::Ok();
}

Result<std::string> Vault::DecryptMessageRecord(std::string_view body, const ObjectId* expect, std::string* envelope_bytes) {
  MV_ASSIGN_OR_RETURN(MessageRecord mr, DecodeMessageBody(body));
  if (expect && !(mr.id == *expect)) return Corruption("record holds message " + mr.id.Hex() + ", not " + expect->Hex());
  MV_ASSIGN_OR_RETURN(SecretKey dk, UnwrapDataKey(mr.id, mr.wrapped_key));
  Result<std::string> plain = mailvault::Open(dk, MessageAad(mr.id, mr.dictionary_id, mr.raw_size), mr.box);
  if (!plain.ok()) return Corruption("message " + mr.id.Hex() + ": ciphertext fails authentication (altered on disk)");
  std::string_view env, compressed;
  MV_RETURN_IF_ERROR(SplitMessagePlaintext(*plain, &env, &compressed));
  if (envelope_bytes) *envelope_bytes = std::string(env);
  std::shared_ptr<const Dictionary> dict;
  if (mr.dictionary_id) {
    MV_ASSIGN_OR_RETURN(dict, DictionaryById(mr.dictionary_id));
  }
  std::string raw;
  Status s = ThreadCompressor(options_.compression.level).Decompress(compressed, mr.raw_size, dict.get(), &raw);
  if (!s.ok()) return s.error().With("message " + mr.id.Hex());
  if (ObjectId::Of(raw) != mr.id) {
    return Corruption("message " + mr.id.Hex() + ": content does not match its fingerprint");
  }
  return raw;
}

Result<SecretKey> Vault::UnwrapDataKey(const ObjectId& id, const std::string& wrapped) const {
  Result<std::string> dk = mailvault::Open(keys_.wrap, DataKeyAad(id), wrapped);
  if (!dk.ok() || dk->size() != kKeySize) return Corruption("message " + id.Hex() + ": its data key fails authentication");
  return SecretKey(*dk);
}

Result<int> Vault::PackFd(uint64_t pack) const {
  std::lock_guard<std::mutex> l(fd_mu_);
  auto it = read_fds_.find(pack);
  if (it != read_fds_.end()) return it->second;
  std::string path = PackPath(pack);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("cannot open pack", path, errno);
  read_fds_[pack] = fd;
  return fd;
}

// ---- appending ----

Status Vault::OpenPackForAppend(uint64_t number, bool create) {
  auto p = std::make_unique<OpenPack>();
  p->number = number;
  p->sha = std::make_unique<Sha256>();
  std::string path = PackPath(number);
  if (create) {
    p->fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (p->fd < 0) return ErrnoError("cannot create pack", path, errno);
    std::string header = EncodePackHeader(PackHeader{number, vault_id_});
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
    MV_ASSIGN_OR_RETURN(auto infos, catalog_->Packs());
    p->records = infos[number].records;
  }
  if (::lseek(p->fd, static_cast<off_t>(p->size), SEEK_SET) < 0) return ErrnoError("cannot seek", path, errno);
  pack_ = std::move(p);
  return Status::Ok();
}

Status Vault::SealCurrentPack() {
  OpenPack& p = *pack_;
  std::string path = PackPath(p.number);
  SealRecord seal{p.records, p.sha->Final()};
  std::string rec = FrameRecord(RecordType::kSeal, EncodeSealBody(seal));
  MV_RETURN_IF_ERROR(WriteAll(p.fd, rec, path));
  if (::fdatasync(p.fd) != 0) return ErrnoError("cannot fsync", path, errno);
  Catalog::Batch batch(catalog_.get());
  batch.PutPack(PackInfo{p.number, p.size + rec.size(), p.records + 1, true, seal.sha256});
  MV_RETURN_IF_ERROR(catalog_->Commit(&batch));
  uint64_t next = p.number + 1;
  pack_.reset();
  return OpenPackForAppend(next, true);
}

void Vault::MaybeAutoTrain(std::string_view raw) {
  if (options_.auto_train_messages == 0) return;
  std::vector<std::string> samples;
  {
    std::lock_guard<std::mutex> l(train_mu_);
    if (training_done_ || has_dictionary()) return;
    training_samples_.emplace_back(raw.substr(0, 64 << 10));
    training_bytes_ += training_samples_.back().size();
    if (training_samples_.size() < options_.auto_train_messages && training_bytes_ < options_.auto_train_bytes) return;
    training_done_ = true;
    samples.swap(training_samples_);
  }
  std::vector<std::string_view> views(samples.begin(), samples.end());
  // Failing to train only costs compression; the messages are stored either way.
  (void)TrainDictionary(views);
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
    return Error(ErrorCode::kIoError, "the vault's file system is nearly full (less than " +
                                          std::to_string(options_.min_free_bytes >> 20) +
                                          " MiB free); free space and retry (No space left for new messages)");
  }
  auto p = std::make_shared<Pending>();
  p->id = ObjectId::Of(raw);
  p->envelope = envelope;
  MV_ASSIGN_OR_RETURN(std::optional<MessageMeta> existing, catalog_->GetMessage(p->id));
  if (existing) return p;  // the committer adds the envelope, if it is new

  MaybeAutoTrain(raw);
  Summarize(raw, options_.limits, &p->meta);
  std::shared_ptr<const Dictionary> dict = CurrentDictionary();
  std::string plain;
  {
    ByteWriter w;
    w.PutString(envelope.Encode());
    plain = w.Take();
  }
  MV_RETURN_IF_ERROR(ThreadCompressor(options_.compression.level).Compress(raw, dict.get(), &plain));
  MessageRecord mr;
  mr.id = p->id;
  mr.dictionary_id = dict ? dict->id() : 0;
  mr.raw_size = raw.size();
  SecretKey dk = SecretKey::Random();
  Seal(keys_.wrap, DataKeyAad(p->id), dk.view(), &mr.wrapped_key);
  Seal(dk, MessageAad(p->id, mr.dictionary_id, mr.raw_size), plain, &mr.box);
  p->message_body = EncodeMessageBody(mr);
  return p;
}

Result<IngestResult> Vault::Ingest(std::string_view raw, const Envelope& envelope) {
  return IngestAsync(raw, envelope).get();
}

std::future<Result<IngestResult>> Vault::IngestAsync(std::string_view raw, const Envelope& envelope) {
  Result<std::shared_ptr<Pending>> p = Prepare(raw, envelope);
  if (!p.ok()) {
    std::promise<Result<IngestResult>> failed;
    failed.set_value(p.error());
    return failed.get_future();
  }
  std::future<Result<IngestResult>> f = (*p)->promise.get_future();
  Submit(std::move(*p));
  return f;
}

void Vault::Submit(std::shared_ptr<Pending> p) {
  {
    std::lock_guard<std::mutex> l(queue_mu_);
    if (stopping_) {
      p->promise.set_value(Error(ErrorCode::kBusy, "the vault is closing"));
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
      while (n < queue_.size() && bytes < kMaxGroupBytes) bytes += queue_[n++]->message_body.size();
      group.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.begin() + n));
      queue_.erase(queue_.begin(), queue_.begin() + n);
    }
    CommitGroup(group);
    group.clear();
  }
}

void Vault::CommitGroup(std::vector<std::shared_ptr<Pending>>& group) {
  auto fail_all = [&](const Error& e) {
    for (auto& p : group) p->promise.set_value(e);
  };
  if (!pack_) {
    fail_all(IoError("the vault has no writable pack (an earlier error); reopen the vault"));
    return;
  }
  OpenPack& pack = *pack_;
  std::string path = PackPath(pack.number);
  std::string buf;
  Catalog::Batch batch(catalog_.get());
  VaultStats st = stats_;
  std::unordered_map<ObjectId, MessageMeta, ObjectIdHash> fresh;
  std::vector<Result<IngestResult>> results;
  results.reserve(group.size());
  uint64_t records = 0;

  for (auto& p : group) {
    RecordLocation loc{pack.number, pack.size + buf.size(), 0};
    if (p->kind == Pending::kDictionary) {
      std::string rec = FrameRecord(RecordType::kDictionary, p->message_body);
      loc.length = static_cast<uint32_t>(rec.size());
      buf += rec;
      ++records;
      batch.PutDictionary(p->dictionary_id, loc);
      results.push_back(IngestResult{});
      continue;
    }
    IngestResult r;
    r.id = p->id;
    r.warning = p->meta.parse_warning;
    std::optional<MessageMeta> existing;
    if (auto f = fresh.find(p->id); f != fresh.end()) {
      existing = f->second;
    } else {
      Result<std::optional<MessageMeta>> m = catalog_->GetMessage(p->id);
      if (!m.ok()) {
        results.push_back(m.error());
        continue;
      }
      existing = *m;
    }
    uint64_t digest = p->envelope.ContentDigest();
    if (existing) {
      r.duplicate = true;
      r.warning.clear();
      st.duplicates++;
      MessageMeta meta = *existing;
      if (std::find(meta.envelope_digests.begin(), meta.envelope_digests.end(), digest) == meta.envelope_digests.end()) {
        // The wrapped data key lives in the message record (or in this group's buffer).
        std::string head;
        size_t head_len = kRecordHeaderSize + ObjectId::kSize + 12 + kKeySize + kSealOverhead;
        if (meta.where.pack == pack.number && meta.where.offset >= pack.size) {
          head = buf.substr(meta.where.offset - pack.size, head_len);
        } else {
          Result<int> fd = PackFd(meta.where.pack);
          Status s = fd.ok() ? PreadAll(*fd, meta.where.offset, head_len, &head, PackPath(meta.where.pack)) : fd.status();
          if (!s.ok()) {
            results.push_back(s.error());
            continue;
          }
        }
        Result<SecretKey> dk = UnwrapDataKey(p->id, head.substr(kRecordHeaderSize + ObjectId::kSize + 12));
        if (!dk.ok()) {
          results.push_back(dk.error());
          continue;
        }
        EnvelopeRecord er{p->id, ""};
        Seal(*dk, EnvelopeAad(p->id), p->envelope.Encode(), &er.box);
        std::string rec = FrameRecord(RecordType::kEnvelope, EncodeEnvelopeBody(er));
        loc.length = static_cast<uint32_t>(rec.size());
        buf += rec;
        ++records;
        meta.envelope_digests.push_back(digest);
        batch.PutEnvelope(p->id, static_cast<uint32_t>(meta.envelope_digests.size() - 1), StoredEnvelope{p->envelope, loc});
        batch.PutMessage(p->id, meta);
        fresh[p->id] = meta;
        st.envelopes++;
        r.envelope_added = true;
      }
      results.push_back(r);
      continue;
    }
    if (p->message_body.empty()) {
      results.push_back(Internal("message " + p->id.Hex() + " was prepared as a duplicate but is not stored"));
      continue;
    }
    std::string rec = FrameRecord(RecordType::kMessage, p->message_body);
    loc.length = static_cast<uint32_t>(rec.size());
    buf += rec;
    ++records;
    MessageMeta meta = std::move(p->meta);
    meta.where = loc;
    meta.sequence = st.next_sequence++;
    meta.envelope_digests = {digest};
    batch.PutMessage(p->id, meta);
    st.messages++;
    st.envelopes++;
    st.raw_bytes += meta.raw_size;
    st.stored_bytes += rec.size();
    fresh[p->id] = std::move(meta);
    results.push_back(r);
  }

  Status s = WriteAll(pack.fd, buf, path);
  if (s.ok() && ::fdatasync(pack.fd) != 0) s = ErrnoError("cannot fsync", path, errno);
  if (!s.ok()) {
    // Take the partial append back, so the pack ends at a record boundary again.
    if (::ftruncate(pack.fd, static_cast<off_t>(pack.size)) != 0 ||
        ::lseek(pack.fd, static_cast<off_t>(pack.size), SEEK_SET) < 0) {
      pack_.reset();  // unknown state: no further appends until the vault is reopened (replay truncates)
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
    // The pack holds the messages durably and the next open replays them into the catalog,
    // but this process can no longer answer for them: stop accepting appends.
    pack_.reset();
    fail_all(s.error().With("stored in the pack, but the catalog could not be updated; reopen the vault"));
    return;
  }
  stats_ = st;
  for (size_t i = 0; i < group.size(); ++i) {
    if (group[i]->kind == Pending::kDictionary && results[i].ok()) {
      std::lock_guard<std::mutex> l(dict_mu_);
      dictionaries_[group[i]->dictionary_id] = group[i]->dictionary;
      current_dictionary_ = std::max(current_dictionary_, group[i]->dictionary_id);
    }
    group[i]->promise.set_value(std::move(results[i]));
  }
  if (pack.size >= options_.seal_bytes) {
    Status seal = SealCurrentPack();
    if (!seal.ok()) pack_.reset();
  }
}

// ---- dictionaries ----

bool Vault::has_dictionary() const {
  std::lock_guard<std::mutex> l(dict_mu_);
  return current_dictionary_ != 0;
}

std::shared_ptr<const Dictionary> Vault::CurrentDictionary() const {
  std::lock_guard<std::mutex> l(dict_mu_);
  if (!current_dictionary_) return nullptr;
  return dictionaries_.at(current_dictionary_);
}

Result<std::shared_ptr<const Dictionary>> Vault::DictionaryById(uint32_t id) const {
  std::lock_guard<std::mutex> l(dict_mu_);
  auto it = dictionaries_.find(id);
  if (it == dictionaries_.end()) return Corruption("compression dictionary " + std::to_string(id) + " is missing from the vault");
  return it->second;
}

Status Vault::TrainDictionary(const std::vector<std::string_view>& samples) {
  MV_ASSIGN_OR_RETURN(std::string bytes, Dictionary::Train(samples, options_.compression.dictionary_bytes));
  uint32_t id;
  {
    std::lock_guard<std::mutex> l(dict_mu_);
    id = current_dictionary_ + 1;
  }
  MV_ASSIGN_OR_RETURN(auto dict, Dictionary::Load(id, bytes, options_.compression.level));
  auto p = std::make_shared<Pending>();
  p->kind = Pending::kDictionary;
  p->dictionary_id = id;
  p->dictionary = dict;
  DictionaryRecord dr{id, ""};
  Seal(keys_.dictionary, DictionaryAad(id), bytes, &dr.box);
  p->message_body = EncodeDictionaryBody(dr);
  std::future<Result<IngestResult>> f = p->promise.get_future();
  Submit(p);
  return f.get().status();
}

// ---- reading ----

Result<std::string> Vault::ReadMessage(const ObjectId& id) {
  MV_ASSIGN_OR_RETURN(MessageMeta meta, GetMeta(id));
  MV_ASSIGN_OR_RETURN(int fd, PackFd(meta.where.pack));
  std::string bytes;
  MV_RETURN_IF_ERROR(PreadAll(fd, meta.where.offset, meta.where.length, &bytes, PackPath(meta.where.pack)));
  Result<RawRecord> rec = ParseFramedRecord(bytes, meta.where.offset);
  if (!rec.ok()) return rec.error().With("message " + id.Hex() + " in " + PackFileName(meta.where.pack));
  if (rec->type != RecordType::kMessage) return Corruption("message " + id.Hex() + ": the catalog points at a record of another type");
  return DecryptMessageRecord(rec->body, &id, nullptr);
}

Result<MessageMeta> Vault::GetMeta(const ObjectId& id) const {
  MV_ASSIGN_OR_RETURN(std::optional<MessageMeta> m, catalog_->GetMessage(id));
  if (!m) return NotFound("no message " + id.Hex() + " in this vault");
  return *m;
}

Result<std::vector<StoredEnvelope>> Vault::GetEnvelopes(const ObjectId& id) {
  // The first envelope travels inside the message record; later ones are in the catalog.
  MV_ASSIGN_OR_RETURN(MessageMeta meta, GetMeta(id));
  MV_ASSIGN_OR_RETURN(int fd, PackFd(meta.where.pack));
  std::string bytes, env_bytes;
  MV_RETURN_IF_ERROR(PreadAll(fd, meta.where.offset, meta.where.length, &bytes, PackPath(meta.where.pack)));
  MV_ASSIGN_OR_RETURN(RawRecord rec, ParseFramedRecord(bytes, meta.where.offset));
  MV_RETURN_IF_ERROR(DecryptMessageRecord(rec.body, &id, &env_bytes).status());
  MV_ASSIGN_OR_RETURN(Envelope first, Envelope::Decode(env_bytes));
  std::vector<StoredEnvelope> out{StoredEnvelope{first, meta.where}};
  MV_ASSIGN_OR_RETURN(std::vector<StoredEnvelope> later, catalog_->GetEnvelopes(id));
  out.insert(out.end(), later.begin(), later.end());
  return out;
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

Status Vault::ForEachMessage(const std::function<bool(const ObjectId&, const MessageMeta&)>& fn) const {
  return catalog_->ForEachMessage(fn);
}

// ---- verify ----

Result<VerifyReport> Vault::Verify(double sample_percent, const std::function<void(uint64_t, uint64_t)>& progress) {
  VerifyReport report;
  std::mt19937_64 rng(std::random_device{}());
  std::uniform_real_distribution<double> coin(0.0, 100.0);
  // Everything the catalog says is stored, grouped by pack, so each pack is read once, in order.
  struct Item {
    ObjectId id;
    RecordLocation where;
    bool envelope;
  };
  std::map<uint64_t, std::vector<Item>> by_pack;
  uint64_t total = 0;
  Status s = catalog_->ForEachMessage([&](const ObjectId& id, const MessageMeta& m) {
    if (sample_percent < 100.0 && coin(rng) >= sample_percent) return true;
    by_pack[m.where.pack].push_back({id, m.where, false});
    ++total;
    if (m.envelope_digests.size() > 1) {
      Result<std::vector<StoredEnvelope>> envs = catalog_->GetEnvelopes(id);
      if (envs.ok()) {
        for (const StoredEnvelope& e : *envs) by_pack[e.where.pack].push_back({id, e.where, true});
      } else {
        report.problems.push_back("message " + id.Hex() + ": " + envs.error().message());
      }
    }
    return true;
  });
  MV_RETURN_IF_ERROR(s);
  MV_ASSIGN_OR_RETURN(auto infos, catalog_->Packs());

  std::atomic<uint64_t> done{0};
  std::mutex report_mu;
  for (auto& [pack, items] : by_pack) {
    std::string path = PackPath(pack);
    std::string bytes;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      for (const Item& it : items) report.problems.push_back("message " + it.id.Hex() + ": its pack " + path + " cannot be opened");
      continue;
    }
    struct stat st;
    Status rs = ::fstat(fd, &st) == 0 ? PreadAll(fd, 0, static_cast<size_t>(st.st_size), &bytes, path) : ErrnoError("cannot stat", path, errno);
    ::close(fd);
    if (!rs.ok()) {
      report.problems.push_back(rs.error().message());
      continue;
    }
    ++report.packs_checked;
    report.bytes_checked += bytes.size();
    if (sample_percent >= 100.0 && infos[pack].sealed && bytes.size() >= kPackHeaderSize + kRecordOverhead + 40) {
      std::string_view before = std::string_view(bytes).substr(0, bytes.size() - (kRecordOverhead + 40));
      if (Sha256Of(before) != infos[pack].sha256) report.problems.push_back("pack " + path + ": contents differ from the checksum recorded when it was sealed");
    }
    // Records are independent: check them on every core.
    unsigned workers = std::max(1u, std::min(4u, std::thread::hardware_concurrency()));
    std::atomic<size_t> next{0};
    auto work = [&] {
      for (size_t i; (i = next.fetch_add(1)) < items.size();) {
        const Item& it = items[i];
        std::string problem;
        if (it.where.offset + it.where.length > bytes.size()) {
          problem = "its record lies beyond the end of " + path;
        } else {
          Result<RawRecord> rec = ParseFramedRecord(std::string_view(bytes).substr(it.where.offset, it.where.length), it.where.offset);
          if (!rec.ok()) {
            problem = rec.error().message();
          } else if (!it.envelope) {
            Result<std::string> raw = DecryptMessageRecord(rec->body, &it.id, nullptr);
            if (!raw.ok()) problem = raw.error().message();
          } else {
            Result<EnvelopeRecord> er = DecodeEnvelopeBody(rec->body);
            Result<std::string> head = er.ok() ? Result<std::string>(std::string()) : Result<std::string>(er.error());
            if (!er.ok()) problem = er.error().message();
            else if (!(er->id == it.id)) problem = "an envelope record holds another message's id";
          }
        }
        if (!problem.empty()) {
          std::lock_guard<std::mutex> l(report_mu);
          report.problems.push_back("message " + it.id.Hex() + (it.envelope ? " (envelope)" : "") + " in " +
                                    PackFileName(it.where.pack) + " at offset " + std::to_string(it.where.offset) + ": " + problem);
        }
        uint64_t d = done.fetch_add(1) + 1;
        if (progress && !it.envelope && (d % 256 == 0)) progress(d, total);
      }
    };
    std::vector<std::thread> threads;
    for (unsigned t = 1; t < workers; ++t) threads.emplace_back(work);
    work();
    for (auto& t : threads) t.join();
    for (const Item& it : items) (it.envelope ? report.envelopes_checked : report.messages_checked)++;
  }
  if (progress) progress(total, total);
  return report;
}

}  // namespace mailvault
