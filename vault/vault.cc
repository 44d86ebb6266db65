// Vault: construction, Init, Open and Rebuild, the helpers the other parts share, health, dictionaries.
#include "vault/vault.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <sstream>

#include "core/message.h"
#include "vault/patient_fs.h"
#include "vault/purposes.h"
#include "vault/vault_internal.h"

namespace mailvault {
namespace {

constexpr std::string_view kVaultFileMagic = "mailvault-vault v1";

std::string VaultFilePath(const std::string& dir) { return dir + "/VAULT"; }
std::string KeyslotPath(const std::string& dir) { return dir + "/keyslot"; }
std::string CatalogPath(const std::string& dir) { return dir + "/catalog"; }

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

}  // namespace

namespace vault_internal {

std::string PacksPath(const std::string& dir) { return dir + "/packs"; }

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

}  // namespace vault_internal

using vault_internal::PacksPath;

SecretKey Vault::DeriveSubkey(std::string_view purpose) const { return DeriveKey(keys_.master, vault_id_, purpose); }

Result<SecretKey> Vault::SubkeyFromFiles(const std::string& dir, const KeySource& keys, std::string_view purpose,
                                         std::string* vault_id_hex) {
  MV_ASSIGN_OR_RETURN(VaultFile vf, ReadVaultFile(dir));
  MV_ASSIGN_OR_RETURN(SecretKey master, LoadMasterKey(dir, vf, keys));
  if (vault_id_hex) *vault_id_hex = HexEncode(vf.id);
  return DeriveKey(master, vf.id, purpose);
}

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

// ---- shared by replay, commit, read and verify ----

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

// ---- health ----

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

// ---- dictionaries ----

bool Vault::has_dictionary() const {
  std::lock_guard<std::mutex> l(dict_mu_);
  return current_dictionary_ != 0 && dictionaries_.at(current_dictionary_) != nullptr;
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

Status Vault::TrainDictionary(const std::vector<std::string_view>& samples, const std::vector<ObjectId>& sample_ids) {
  if (samples.size() != sample_ids.size()) return InvalidArgument("TrainDictionary: one id per sample is needed");
  MV_ASSIGN_OR_RETURN(std::string bytes, Dictionary::Train(samples, options_.compression.dictionary_bytes));
  uint32_t id;
  {
    std::lock_guard<std::mutex> l(dict_mu_);
    // Reserved here, under the lock: two trainings at once (automatic, and a purge's
    // replacement) never take one id.
    id = std::max(reserved_dictionary_, dictionaries_.empty() ? 0u : dictionaries_.rbegin()->first) + 1;
    reserved_dictionary_ = id;
  }
  MV_ASSIGN_OR_RETURN(auto dict, Dictionary::Load(id, bytes, options_.compression.level));
  auto p = std::make_shared<Pending>();
  p->kind = Pending::kDictionary;
  p->dictionary_id = id;
  p->dictionary = dict;
  DictionaryContent content;
  content.samples_known = true;
  content.samples = sample_ids;
  content.bytes = std::move(bytes);
  p->dictionary_samples = sample_ids;
  p->dictionary_body = DictionaryBody(id, content);
  return SubmitAndWait(p).status();
}

Result<IngestResult> Vault::SubmitAndWait(std::shared_ptr<Pending> p) {
  std::promise<Result<IngestResult>> promise;
  std::future<Result<IngestResult>> f = promise.get_future();
  p->done = [&promise](Result<IngestResult> r) { promise.set_value(std::move(r)); };
  Submit(std::move(p));
  return f.get();
}

std::string Vault::DictionaryBody(uint32_t id, const DictionaryContent& content) const {
  return EncodeDictionaryBody(DictionaryRecord{id, SealDictionary(keys_.dictionary, id, content)});
}

}  // namespace mailvault
