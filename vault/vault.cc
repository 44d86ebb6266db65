#include "vault/purposes.h"
#include "vault/vault.h"

#include <dirent.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <filesystem>
#include <random>
#include <unordered_set>
#include <sstream>

#include "core/bytes.h"
#include "core/message.h"
#include "vault/block_codec.h"
#include "vault/pack.h"
#include "vault/patient_fs.h"

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


}  // namespace

// One message (or dictionary) on its way to the committer. Prepared on the caller's thread;
// compressed, encrypted and appended by the committer, which alone knows where blocks start.
struct Vault::Pending {
  enum Kind { kMessage, kDictionary } kind = kMessage;
  ObjectId id;
  Envelope envelope;
  std::string raw;      // the message; empty when it was already stored at preparation
  std::string warning;  // why MIME analysis stopped short, if it did
  uint32_t dictionary_id = 0;
  std::string dictionary_body;                   // kDictionary: the encoded record body
  std::shared_ptr<const Dictionary> dictionary;  // kDictionary: activated once durable
  // Called once, by the committer, when the message is durable (or could not be stored).
  std::function<void(Result<IngestResult>)> done;
};

// Decodes a pack's message records in order, block by block. Damage inside a block makes the
// rest of that block unreadable too: later members use the earlier ones as history.
class Vault::BlockCursor {
 public:
  explicit BlockCursor(const Vault* vault) : vault_(vault) {}

  // REQUIRES: rec is a MESSAGE record, and the member before it in its block was passed last.
  Result<DecodedMessage> Next(const RawRecord& rec) {
    MV_ASSIGN_OR_RETURN(MessageRecord mr, DecodeMessageBody(rec.body));
    if (mr.block_index == 0) {
      dict_.reset();
      if (mr.dictionary_id) {
        MV_ASSIGN_OR_RETURN(dict_, vault_->DictionaryById(mr.dictionary_id));
      }
      decoder_.Begin(dict_.get());
      block_start_ = rec.offset;
      next_index_ = 0;
      healthy_ = true;
    } else if (mr.block_index != next_index_) {
      return Corruption("message " + mr.id.Hex() + " is out of place: position " + std::to_string(mr.block_index) +
                        " of its compression block, found where position " + std::to_string(next_index_) + " belongs");
    } else if (!healthy_) {
      return Corruption("message " + mr.id.Hex() + ": an earlier message of its compression block is damaged");
    }
    ++next_index_;
    healthy_ = false;
    MV_ASSIGN_OR_RETURN(SecretKey dk, vault_->UnwrapDataKey(mr.id, mr.wrapped_key));
    Result<std::string> plain = mailvault::Open(dk, MessageAad(mr), mr.box);
    if (!plain.ok()) return Corruption("message " + mr.id.Hex() + ": ciphertext fails authentication (altered on disk)");
    ByteReader r(*plain);
    uint64_t env_len;
    if (!r.GetVarint(&env_len) || env_len > (1u << 26)) {
      return Corruption("message " + mr.id.Hex() + ": envelope length is damaged");
    }
    std::string out;
    Status s = decoder_.Next(r.rest(), env_len + mr.raw_size, &out);
    if (!s.ok()) return s.error().With("message " + mr.id.Hex());
    DecodedMessage d;
    d.id = mr.id;
    d.where = RecordLocation{0, rec.offset, rec.length};
    d.block_start = block_start_;
    d.envelope = out.substr(0, env_len);
    d.raw = out.substr(env_len);
    if (ObjectId::Of(d.raw) != mr.id) return Corruption("message " + mr.id.Hex() + ": content does not match its fingerprint");
    healthy_ = true;
    return d;
  }

 private:
  const Vault* vault_;
  BlockDecoder decoder_;
  std::shared_ptr<const Dictionary> dict_;
  uint64_t block_start_ = UINT64_MAX;
  uint32_t next_index_ = 0;
  bool healthy_ = false;
};

// The pack that receives appends.
struct Vault::OpenPack {
  uint64_t number = 0;
  int fd = -1;
  uint64_t size = 0;
  uint64_t records = 0;          // records in the pack: the next record's sequence number
  bool keyed = true;             // a version 2 pack: records carry sequence and MAC
  std::unique_ptr<Sha256> sha;  // of every byte written so far
  ~OpenPack() {
    if (fd >= 0) ::close(fd);
  }
};

SecretKey Vault::DeriveSubkey(std::string_view purpose) const { return DeriveKey(keys_.master, vault_id_, purpose); }

Vault::Vault(std::string dir, std::string vault_id, VaultKeys keys, VaultOptions options, FileLock lock)
    : dir_(std::move(dir)),
      vault_id_(std::move(vault_id)),
      keys_(std::move(keys)),
      record_key_(DeriveKey(keys_.master, vault_id_, purpose::kRecords)),
      options_(options),
      lock_(std::move(lock)) {}

std::string Vault::Frame(RecordType type, std::string_view body, uint64_t sequence) const {
  if (!pack_->keyed) return FrameRecord(type, body);
  return FrameKeyedRecord(type, body, record_key_,
                          RecordPlace{vault_id_, pack_->number, static_cast<uint32_t>(sequence)});
}

Vault::~Vault() {
  {
    std::lock_guard<std::mutex> l(queue_mu_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  if (committer_.joinable()) committer_.join();
  for (auto& [n, fd] : read_fds_) ::close(fd);
  // Flush the catalog so the next open has nothing to replay, but only with room to do it:
  // its files wait out a full disk (patient_fs.h), and a close must not wait forever. Skipped,
  // the memtable is replayed from the packs at the next open (they are the log).
  // Room means the memtable twice over (the table it becomes, with its index) and 4 MiB for
  // RocksDB's own files.
  struct statvfs fs;
  if (catalog_ && PatientFsStall().empty() && ::statvfs(dir_.c_str(), &fs) == 0 &&
      static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize >= 2 * catalog_->MemtableBytes() + (4 << 20)) {
    (void)catalog_->Flush();
  }
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
    if (keys.passphrase->size() < 12) return InvalidArgument("the passphrase is too short (at least 12 characters)");
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
  // 0700 whatever the caller's umask: RocksDB would create it with the umask's mode.
  MV_RETURN_IF_ERROR(MakeDir(CatalogPath(dir)));
  MV_ASSIGN_OR_RETURN(v->catalog_, Catalog::Open(CatalogPath(dir), v->keys_.catalog, true));
  OpenReport local;
  MV_RETURN_IF_ERROR(v->Recover(report ? report : &local));
  v->last_change_ = v->stats_.next_change - 1;
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
      bool starts_block = rec.type != RecordType::kMessage ||
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
  if (rec.type != RecordType::kEnvelope) return Status::Ok();
  MV_ASSIGN_OR_RETURN(EnvelopeRecord er, DecodeEnvelopeBody(rec.body));
  std::optional<MessageMeta> meta;
  if (auto f = fresh->find(er.id); f != fresh->end()) {
    meta = f->second;
  } else {
    MV_ASSIGN_OR_RETURN(meta, catalog_->GetMessage(er.id));
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

Result<SecretKey> Vault::DataKeyOf(const ObjectId& id, const MessageMeta& meta, const std::string* pending,
                                   uint64_t pending_base) const {
  // The wrapped data key sits at a fixed place in the message record (or in a commit group's
  // buffer that is not on disk yet).
  const size_t at = kRecordHeaderSize + kMessageRecordFixed;
  std::string head;
  if (pending && meta.where.pack == pack_->number && meta.where.offset >= pending_base) {
    head = pending->substr(meta.where.offset - pending_base, at + kKeySize + kSealOverhead);
  } else {
    MV_ASSIGN_OR_RETURN(int fd, PackFd(meta.where.pack));
    MV_RETURN_IF_ERROR(PreadAll(fd, meta.where.offset, at + kKeySize + kSealOverhead, &head, PackPath(meta.where.pack)));
  }
  if (head.size() < at + kKeySize + kSealOverhead) return Corruption("message " + id.Hex() + ": record is truncated");
  return UnwrapDataKey(id, head.substr(at));
}

std::string Vault::AnalysisWarning(std::string_view raw) const {
  Result<MimeShape> shape = ScanMimeShape(raw, options_.limits);
  if (!shape.ok()) return "stored, but not analysed: " + shape.error().message();
  if (!shape->truncation.empty()) return "stored, but the message looks truncated: " + shape->truncation;
  return "";
}

uint64_t Vault::EnvelopeDigest(const Envelope& e) const {
  Envelope copy = e;
  copy.capture_time_us = 0;
  std::string enc = copy.Encode();
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), keys_.catalog.data(), kKeySize, reinterpret_cast<const unsigned char*>(enc.data()), enc.size(), mac, &len);
  return DecodeU64(reinterpret_cast<const char*>(mac));
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
  {
    std::lock_guard<std::mutex> l(train_mu_);
    if (training_done_ || has_dictionary()) return;
    training_samples_.push_back(TrainingSample(envelope, raw));
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

VaultHealth Vault::health() const {
  VaultHealth h;
  {
    std::lock_guard<std::mutex> l(health_mu_);
    h = health_;
  }
  // The catalog's and the state store's writes wait out a full or failing disk
  // (patient_fs.h): the committer (or the audit trail) is held meanwhile: failing too.
  long long since = 0;
  if (std::string stall = PatientFsStall(&since); !stall.empty()) {
    if (h.ok) h.since_us = since;
    h.ok = false;
    h.error = "a database file cannot be written: " + stall;
  }
  return h;
}

void Vault::SetFailing(const Error& e) {
  std::lock_guard<std::mutex> l(health_mu_);
  if (health_.ok) {
    health_.ok = false;
    health_.since_us = std::chrono::duration_cast<std::chrono::microseconds>(
                           std::chrono::system_clock::now().time_since_epoch()).count();
    health_.failed_groups = 0;
  }
  health_.error = e.message();
  health_.failed_groups++;
}

void Vault::SetHealthy() {
  std::lock_guard<std::mutex> l(health_mu_);
  if (health_.ok) return;
  health_.ok = true;
  health_.error.clear();
  health_.since_us = 0;
  health_.recoveries++;
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

  // Dictionaries first: a block written after them in this group may use them.
  for (size_t i = 0; i < group.size(); ++i) {
    if (group[i]->kind != Pending::kDictionary) continue;
    batch.PutDictionary(group[i]->dictionary_id, append(RecordType::kDictionary, group[i]->dictionary_body));
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
      current_dictionary_ = std::max(current_dictionary_, group[i]->dictionary_id);
    }
    group[i]->done(std::move(*results[i]));
  }
  if (pack.size >= options_.seal_bytes) {
    Status seal = SealCurrentPack();
    if (!seal.ok()) {
      // The group is durable and answered; the next group reopens (and seals) by itself.
      DropPack(seal.error().With("sealing or starting a pack"));
      SetFailing(seal.error().With("sealing or starting a pack"));
    }
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
  p->dictionary_body = EncodeDictionaryBody(dr);
  std::promise<Result<IngestResult>> promise;
  std::future<Result<IngestResult>> f = promise.get_future();
  p->done = [&promise](Result<IngestResult> r) { promise.set_value(std::move(r)); };
  Submit(p);
  return f.get().status();
}

// ---- reading ----

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
      Result<std::vector<StoredEnvelope>> all = GetEnvelopes(members[k].id);
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

// ---- verify ----

Result<VerifyReport> Vault::Verify(double sample_percent, const std::function<void(uint64_t, uint64_t)>& progress) {
  VerifyReport report;
  std::mt19937_64 rng(std::random_device{}());
  std::uniform_real_distribution<double> coin(0.0, 100.0);

  // What the catalog says is stored, by pack and offset: each message and each later envelope.
  struct Expected {
    ObjectId id;
    bool envelope;
  };
  std::map<uint64_t, std::map<uint64_t, Expected>> expected;
  uint64_t total = 0;
  Status s = catalog_->ForEachMessage([&](const ObjectId& id, const MessageMeta& m) {
    expected[m.where.pack][m.where.offset] = {id, false};
    ++total;
    if (m.envelope_digests.size() > 1) {
      Result<std::vector<StoredEnvelope>> envs = catalog_->GetEnvelopes(id);
      if (!envs.ok()) {
        report.problems.push_back("message " + id.Hex() + ": " + envs.error().message());
        return true;
      }
      for (const StoredEnvelope& e : *envs) expected[e.where.pack][e.where.offset] = {id, true};
    }
    return true;
  });
  MV_RETURN_IF_ERROR(s);
  MV_ASSIGN_OR_RETURN(auto infos, catalog_->Packs());

  std::atomic<uint64_t> done{0};
  std::mutex mu;  // guards report
  auto problem = [&](const std::string& p) {
    std::lock_guard<std::mutex> l(mu);
    report.problems.push_back(p);
  };
  for (const auto& [n, info] : infos) expected[n];  // every pack, even one with no message left
  for (auto& entry : expected) {
    // Named, not a structured binding: the lambdas below capture them (clang 14 cannot).
    const uint64_t pack = entry.first;
    std::map<uint64_t, Expected>& want = entry.second;
    std::string path = PackPath(pack);
    std::string bytes;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    struct stat st;
    Status rs = fd < 0 ? ErrnoError("cannot open", path, errno)
                : ::fstat(fd, &st) != 0 ? ErrnoError("cannot stat", path, errno)
                                        : PreadAll(fd, 0, static_cast<size_t>(st.st_size), &bytes, path);
    if (fd >= 0) ::close(fd);
    if (!rs.ok()) {
      if (want.empty()) problem("pack " + path + ": " + rs.error().message());
      for (auto& [off, e] : want) problem("message " + e.id.Hex() + ": " + rs.error().message());
      continue;
    }
    ++report.packs_checked;
    report.bytes_checked += bytes.size();
    uint32_t version = 0;
    if (!DecodePackHeader(bytes, &version).ok()) problem("pack " + path + ": its header is damaged");
    const bool keyed_pack = version >= kPackFormatVersion;
    if (infos[pack].applied_bytes > bytes.size()) {
      problem("pack " + path + ": " + std::to_string(bytes.size()) + " bytes, shorter than the " +
              std::to_string(infos[pack].applied_bytes) + " bytes the catalog recorded (cut off)");
    }
    if (sample_percent >= 100.0 && infos[pack].sealed) {
      size_t seal_len = (keyed_pack ? kKeyedRecordOverhead : kRecordOverhead) + 40;
      if (bytes.size() < kPackHeaderSize + seal_len ||
          Sha256Of(std::string_view(bytes).substr(0, bytes.size() - seal_len)) != infos[pack].sha256) {
        problem("pack " + path + ": contents differ from the checksum recorded when it was sealed");
      }
    }
    // Split the pack into units that decode independently: each compression block, and each
    // envelope record. Damaged bytes are stepped over to the next valid frame.
    struct Unit {
      std::vector<RawRecord> records;
    };
    std::vector<Unit> units;
    std::vector<RecordScanner::Damage> damage;
    RecordScanner scanner(bytes, std::min<uint64_t>(kPackHeaderSize, bytes.size()));
    uint64_t next_seq = 0;
    bool sealed_seen = false;
    bool after_damage = false;  // a sequence gap right after damage is that damage, reported already
    for (;;) {
      RawRecord rec;
      while (scanner.Next(&rec)) {
        if (keyed_pack) {
          // Removal, reordering and replay leave marks only the key can erase (pack.h).
          std::string who;
          if ((rec.type == RecordType::kMessage || rec.type == RecordType::kEnvelope) && rec.body.size() >= ObjectId::kSize) {
            who = (rec.type == RecordType::kMessage ? "message " : "an envelope of message ") +
                  ObjectId::FromBytes(rec.body.substr(0, ObjectId::kSize)).Hex() + ": ";
          }
          std::string why = CheckRecordMac(rec, record_key_, vault_id_, pack);
          if (!why.empty()) {
            problem("pack " + path + " offset " + std::to_string(rec.offset) + ": " + who + why);
          } else {
            if (rec.sequence > next_seq && !after_damage) {
              problem("pack " + path + ": records " + std::to_string(next_seq) + ".." + std::to_string(rec.sequence - 1) +
                      " are missing before offset " + std::to_string(rec.offset) + " (removed, or damaged)");
            } else if (rec.sequence < next_seq) {
              problem("pack " + path + " offset " + std::to_string(rec.offset) + ": " + who + "sequence number " +
                      std::to_string(rec.sequence) + " goes back (a record replayed)");
            }
            next_seq = static_cast<uint64_t>(rec.sequence) + 1;
            after_damage = false;
            if (rec.type == RecordType::kSeal) {
              sealed_seen = true;
              Result<SealRecord> seal = DecodeSealBody(rec.body);
              if (seal.ok() && seal->record_count != rec.sequence) {
                problem("pack " + path + ": its seal counts " + std::to_string(seal->record_count) + " records, but it is record " +
                        std::to_string(rec.sequence));
              }
            } else if (sealed_seen) {
              problem("pack " + path + " offset " + std::to_string(rec.offset) + ": a record after the seal (appended)");
            }
          }
        }
        if (rec.type == RecordType::kMessage) {
          bool starts = rec.body.size() >= kMessageRecordFixed && DecodeU32(rec.body.data() + kMessageRecordFixed - 4) == 0;
          if (starts || units.empty() || units.back().records.empty() || units.back().records.back().type != RecordType::kMessage) {
            units.push_back({});
          }
          units.back().records.push_back(rec);
        } else if (rec.type == RecordType::kEnvelope) {
          units.push_back({{rec}});
          units.push_back({});  // a message after an envelope record starts a new unit
        }
      }
      if (scanner.at_end()) break;
      damage.push_back(scanner.Skip());
      after_damage = true;
      units.push_back({});  // nothing decodes across damage
    }
    auto damage_at = [&](uint64_t off) -> const RecordScanner::Damage* {
      for (const auto& d : damage) {
        if (off >= d.begin && off < d.end) return &d;
      }
      return nullptr;
    };
    for (const auto& d : damage) {
      bool named = false;
      for (auto it = want.lower_bound(d.begin); it != want.end() && it->first < d.end; ++it) named = true;
      if (named) continue;  // reported below, by message
      std::string what = "pack " + path + ": bytes " + std::to_string(d.begin) + ".." + std::to_string(d.end) +
                         " are damaged (" + d.why + ")";
      // The id field of a damaged message or envelope record, when its header still reads: a
      // hint for the administrator, not proof (the id bytes may be what was damaged).
      std::string_view at = std::string_view(bytes).substr(d.begin);
      if (at.size() >= kRecordHeaderSize + ObjectId::kSize) {
        what += "; if it held a message or an envelope, its id field reads " +
                ObjectId::FromBytes(at.substr(kRecordHeaderSize, ObjectId::kSize)).Hex();
      }
      problem(what);
    }
    if (sample_percent < 100.0) {
      std::vector<Unit> kept;
      for (Unit& u : units) {
        if (coin(rng) < sample_percent) kept.push_back(std::move(u));
      }
      units.swap(kept);
    }
    // Which expected records decoded correctly.
    std::map<uint64_t, std::string> outcome;  // offset -> "" when good, else the reason
    std::mutex outcome_mu;
    std::atomic<size_t> next{0};
    auto work = [&] {
      for (size_t i; (i = next.fetch_add(1)) < units.size();) {
        BlockCursor cursor(this);  // a unit after damage may start mid-block: no stale history
        for (const RawRecord& rec : units[i].records) {
          std::string why;
          if (rec.type == RecordType::kMessage) {
            Result<DecodedMessage> d = cursor.Next(rec);
            if (!d.ok()) why = d.error().message();
          } else {
            Result<EnvelopeRecord> er = DecodeEnvelopeBody(rec.body);
            auto w = want.find(rec.offset);
            if (!er.ok()) {
              why = er.error().message();
            } else if (w == want.end()) {
              why = "an envelope record the catalog does not know";
            } else {
              Result<MessageMeta> meta = GetMeta(er->id);
              Result<SecretKey> dk = meta.ok() ? DataKeyOf(er->id, *meta, nullptr, 0) : Result<SecretKey>(meta.error());
              if (!dk.ok()) why = dk.error().message();
              else if (!mailvault::Open(*dk, EnvelopeAad(er->id), er->box).ok()) why = "envelope fails authentication";
            }
          }
          std::lock_guard<std::mutex> l(outcome_mu);
          outcome[rec.offset] = why;
        }
        uint64_t d = done.fetch_add(units[i].records.size()) + units[i].records.size();
        if (progress && i % 64 == 0) progress(std::min(d, total), total);
      }
    };
    unsigned workers = std::max(1u, std::min(4u, std::thread::hardware_concurrency()));
    std::vector<std::thread> threads;
    for (unsigned t = 1; t < workers; ++t) threads.emplace_back(work);
    work();
    for (auto& t : threads) t.join();

    for (auto& [off, e] : want) {
      auto o = outcome.find(off);
      std::string why;
      if (o != outcome.end()) {
        why = o->second;
      } else if (sample_percent < 100.0) {
        continue;  // not in the sample
      } else if (const RecordScanner::Damage* d = damage_at(off)) {
        why = (d->begin == off ? "" : "its record is unreadable: ") + d->why;
      } else {
        why = off >= bytes.size() ? "its record is missing from the pack (the pack was cut off)"
                                  : "its record is missing from the pack";
      }
      if (why.empty()) {
        (e.envelope ? report.envelopes_checked : report.messages_checked)++;
      } else {
        problem("message " + e.id.Hex() + (e.envelope ? " (a later envelope)" : "") + " in " + PackFileName(pack) +
                " at offset " + std::to_string(off) + ": " + why);
      }
    }
    for (auto& [off, why] : outcome) {
      if (!why.empty() && !want.count(off)) problem("pack " + path + " offset " + std::to_string(off) + ": " + why);
    }
  }
  if (progress) progress(total, total);
  return report;
}

}  // namespace mailvault
