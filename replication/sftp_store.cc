#include "replication/sftp_store.h"

#include <fcntl.h>
#include <libssh/libssh.h>
#include <libssh/sftp.h>
#include <openssl/crypto.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>
#include <thread>
#include <utility>

#include "core/bytes.h"
#include "core/file_util.h"
#include "core/fingerprint.h"

namespace mailvault::replication {
namespace {

using Clock = std::chrono::steady_clock;

// libssh 0.10's sftp_write sends its whole buffer as one SSH_FXP_WRITE, and OpenSSH's
// sftp-server drops the connection on a message over 256 KiB (SFTP_MAX_MSG_LENGTH); 255 KiB
// leaves room for the header. Reads ask for the same: OpenSSH answers at most 255 KiB a read.
constexpr size_t kMaxRequestBytes = 255 * 1024;
// Under a bandwidth limit requests shrink to about an eighth of a second's worth, so the pacing
// is smooth, but not below this.
constexpr size_t kMinPacedRequestBytes = 4 * 1024;
// A file larger than this is not a private key.
constexpr uint64_t kMaxIdentityFileBytes = 64 * 1024;
// The replies on our extended-request channel (VERSION, STATUS) are small; a longer one means
// a broken or hostile server.
constexpr uint32_t kMaxExtendedReplyBytes = 256 * 1024;
// How much of a download GetBytes reserves up front, whatever size the server claims.
constexpr uint64_t kMaxReserveBytes = 64 << 20;
// Temporaries are NAME + kTemporaryMarker + 16 hex digits.
constexpr std::string_view kTemporaryMarker = ".part-";
constexpr size_t kTemporarySuffixBytes = kTemporaryMarker.size() + 16;
// File systems allow 255 bytes per name (NAME_MAX), and a temporary adds its suffix: a longer
// segment would fail on the server with a code (SSH_FX_BAD_MESSAGE, from ENAMETOOLONG) that
// looks like a broken conversation.
constexpr size_t kMaxSegmentBytes = 255 - kTemporarySuffixBytes;

std::string Seconds(std::chrono::milliseconds d) {
  auto s = std::chrono::duration_cast<std::chrono::seconds>(d).count();
  return std::to_string(s) + (s == 1 ? " second" : " seconds");
}

std::string HumanBytes(uint64_t n) {
  char buf[32];
  if (n >= (1ull << 30))
    std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(n) / (1ull << 30));
  else if (n >= (1ull << 20))
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(n) / (1ull << 20));
  else if (n >= 1024)
    std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(n) / 1024);
  else
    std::snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(n));
  return buf;
}

const char* SftpStatusName(int status) {
  switch (status) {
    case SSH_FX_OK:
      return "ok";
    case SSH_FX_EOF:
      return "end of file";
    case SSH_FX_NO_SUCH_FILE:
      return "no such file";
    case SSH_FX_PERMISSION_DENIED:
      return "permission denied";
    case SSH_FX_FAILURE:
      return "failure";
    case SSH_FX_BAD_MESSAGE:
      return "bad message";
    case SSH_FX_NO_CONNECTION:
      return "no connection";
    case SSH_FX_CONNECTION_LOST:
      return "connection lost";
    case SSH_FX_OP_UNSUPPORTED:
      return "operation unsupported";
    case SSH_FX_INVALID_HANDLE:
      return "invalid handle";
    case SSH_FX_NO_SUCH_PATH:
      return "no such path";
    case SSH_FX_FILE_ALREADY_EXISTS:
      return "file already exists";
    case SSH_FX_WRITE_PROTECT:
      return "write protected";
    case SSH_FX_NO_MEDIA:
      return "no media";
    default:
      return "unknown status";
  }
}

std::string RandomHex(size_t bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::random_device rd;
  std::string out;
  while (out.size() < bytes * 2) {
    uint32_t v = rd();
    for (int i = 0; i < 8 && out.size() < bytes * 2; ++i, v >>= 4) out += kDigits[v & 0xf];
  }
  return out;
}

bool StartsWith(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

// Where OpenSSH keeps the host key of this type, for a message.
std::string HostKeyFileFor(const std::string& type) {
  std::string kind = StartsWith(type, "ssh-") ? type.substr(4) : StartsWith(type, "ecdsa") ? "ecdsa" : "";
  if (kind.empty() || kind.find_first_of("@/ ") != std::string::npos) return "/etc/ssh/ssh_host_*_key.pub";
  return "/etc/ssh/ssh_host_" + kind + "_key.pub";
}

bool IsTemporaryName(std::string_view name) {
  size_t slash = name.rfind('/');
  std::string_view last = slash == std::string_view::npos ? name : name.substr(slash + 1);
  return last.find(kTemporaryMarker) != std::string_view::npos;
}

// Ends a blocking libssh call that waits too long, by shutting the connection's socket down, so
// the call fails at once. libssh 0.10 cannot be trusted to time out by itself: sftp_packet_read
// goes back to waiting when a read times out, and a channel write that times out waiting for
// window space returns short, which sftp_packet_write only logs (the SFTP stream is then out of
// step). The socket is a dup() of libssh's, owned here, so it cannot be a descriptor libssh
// closed and the process reused.
class Watchdog {
 public:
  Watchdog() = default;
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  // Shuts fd down (both directions) unless Disarm() comes within limit.
  void Arm(int fd, std::chrono::milliseconds limit) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!thread_.joinable()) thread_ = std::thread([this] { Run(); });
      fd_ = fd;
      deadline_ = Clock::now() + limit;
      armed_ = true;
      fired_ = false;
    }
    cv_.notify_all();
  }

  // Whether the limit passed (and the socket was shut down) before this call.
  bool Disarm() {
    std::lock_guard<std::mutex> lock(mu_);
    armed_ = false;
    return fired_;
  }

 private:
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      if (!armed_) {
        cv_.wait(lock);
        continue;
      }
      if (Clock::now() < deadline_) {
        cv_.wait_until(lock, deadline_);
        continue;
      }
      if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
      fired_ = true;
      armed_ = false;
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::thread thread_;
  bool stop_ = false;
  bool armed_ = false;
  bool fired_ = false;
  int fd_ = -1;
  Clock::time_point deadline_;
};

// Keeps a transfer at or under a rate by sleeping, before each request, until the bytes already
// moved are due.
class Pacer {
 public:
  explicit Pacer(uint64_t bytes_per_second) : rate_(bytes_per_second), start_(Clock::now()) {}
  void Wait(uint64_t done) const {
    if (rate_ == 0 || done == 0) return;
    auto due = start_ + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(static_cast<double>(done) / static_cast<double>(rate_)));
    std::this_thread::sleep_until(due);
  }

 private:
  uint64_t rate_;
  Clock::time_point start_;
};

// SFTP wire format (draft-ietf-secsh-filexfer-02, version 3), for the extended-request channel.
void PutU32(std::string* out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>((v >> shift) & 0xff));
}
void PutString(std::string* out, std::string_view s) {
  PutU32(out, static_cast<uint32_t>(s.size()));
  out->append(s);
}
bool GetU32(std::string_view in, size_t* pos, uint32_t* v) {
  if (in.size() < *pos + 4) return false;
  *v = 0;
  for (int i = 0; i < 4; ++i) *v = (*v << 8) | static_cast<unsigned char>(in[*pos + i]);
  *pos += 4;
  return true;
}

}  // namespace

Result<SftpConfig> ParseSftpUrl(const std::string& url) {
  auto bad = [&](const std::string& what) {
    return InvalidArgument(
        "\"" + url + "\": " + what +
        " (expected sftp://USER@HOST[:PORT]/PATH, e.g. sftp://backup@vault.example.com/srv/mailvault)");
  };
  constexpr std::string_view kScheme = "sftp://";
  if (url.size() < kScheme.size() || !std::equal(kScheme.begin(), kScheme.end(), url.begin(), [](char a, char b) {
        return a == (b >= 'A' && b <= 'Z' ? static_cast<char>(b - 'A' + 'a') : b);
      })) {
    return bad("not an sftp:// URL");
  }
  for (char c : url) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return bad("contains a space or a control character");
  }
  std::string rest = url.substr(kScheme.size());
  size_t slash = rest.find('/');
  if (slash == std::string::npos) return bad("no directory after the host");
  std::string authority = rest.substr(0, slash);
  std::string path = rest.substr(slash);

  SftpConfig c;
  size_t at = authority.rfind('@');
  if (at == std::string::npos) return bad("no user: give the account the key logs in as, before an '@'");
  c.user = authority.substr(0, at);
  std::string hostport = authority.substr(at + 1);
  if (c.user.empty()) return bad("the user before '@' is empty");
  if (c.user.find(':') != std::string::npos) {
    return bad("a password in the URL is not supported: the store authenticates with a key (the identity file)");
  }
  if (c.user.front() == '-') return bad("the user may not start with '-'");
  for (char ch : c.user) {
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '_' || ch == '-';
    if (!ok) return bad(std::string("the user contains '") + ch + "' (letters, digits, '.', '_' and '-' only)");
  }

  std::string port;
  bool has_port = false;
  if (!hostport.empty() && hostport.front() == '[') {
    size_t close = hostport.find(']');
    if (close == std::string::npos) return bad("an IPv6 address opened with '[' has no ']'");
    c.host = hostport.substr(1, close - 1);
    std::string after = hostport.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return bad("unexpected \"" + after + "\" after the IPv6 address");
      has_port = true;
      port = after.substr(1);
    }
    if (c.host.find(':') == std::string::npos) return bad("\"[" + c.host + "]\" is not an IPv6 address");
    for (char ch : c.host) {
      bool ok =
          (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F') || ch == ':' || ch == '.';
      if (!ok) return bad("\"[" + c.host + "]\" is not an IPv6 address");
    }
  } else {
    size_t colon = hostport.find(':');
    if (colon != std::string::npos) {
      if (hostport.find(':', colon + 1) != std::string::npos) return bad("an IPv6 address needs brackets: [::1]");
      has_port = true;
      port = hostport.substr(colon + 1);
    }
    c.host = hostport.substr(0, colon);
    if (c.host.empty()) return bad("no host after '@'");
    if (c.host.front() == '-' || c.host.front() == '.') return bad("the host \"" + c.host + "\" is not a host name");
    for (char ch : c.host) {
      bool ok =
          (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '-';
      if (!ok) return bad("the host \"" + c.host + "\" is not a host name or an address");
    }
  }
  if (has_port) {
    if (port.empty() || port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](char ch) { return ch >= '0' && ch <= '9'; }) || std::stoi(port) < 1 ||
        std::stoi(port) > 65535) {
      return bad("the port \"" + port + "\" is not a number from 1 to 65535");
    }
    c.port = std::stoi(port);
  }

  if (path.find_first_of("?#") != std::string::npos) return bad("a query ('?') or fragment ('#') has no meaning here");
  if (path.find('%') != std::string::npos)
    return bad("percent-encoding is not supported: write the directory as it is");
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  for (size_t i = 1, start = 1; path.size() > 1 && i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      std::string seg = path.substr(start, i - start);
      if (seg.empty()) return bad("the directory \"" + path + "\" has an empty component ('//')");
      if (seg == "." || seg == "..")
        return bad("the directory \"" + path + "\" has a '.' or '..' component: give it plainly");
      start = i + 1;
    }
  }
  c.path = path;
  return c;
}

namespace {

class SftpStore final : public ObjectStore {
 public:
  explicit SftpStore(SftpConfig config) : config_(Normalized(std::move(config))) {
    std::string host = config_.host.find(':') != std::string::npos ? "[" + config_.host + "]" : config_.host;
    host_port_ = host + ":" + std::to_string(config_.port);
    describe_ = "sftp://" + config_.user + "@" + host_port_ + config_.path;
  }

  ~SftpStore() override {
    std::lock_guard<std::mutex> lock(mu_);
    Disconnect();
  }

  std::string Describe() const override { return describe_; }

  Status Prepare(bool create) override {
    std::lock_guard<std::mutex> lock(mu_);
    MV_RETURN_IF_ERROR(EnsureConnected());
    const std::string what = "preparing " + config_.path;
    sftp_attributes a = Blocking([&] { return sftp_stat(sftp_, config_.path.c_str()); });
    if (a != nullptr) {
      bool dir = a->type == SSH_FILEXFER_TYPE_DIRECTORY;
      sftp_attributes_free(a);
      if (dir) return Status::Ok();
      return InvalidArgument(describe_ + ": " + config_.path + " is not a directory on " + config_.host +
                             "; give a directory in the URL");
    }
    CallFailure f = Diagnose();
    if (!f.missing()) return Failed(what, config_.path, f);
    if (!create) {
      return NotFound(describe_ + ": the directory " + config_.path + " does not exist on " + config_.host +
                      "; create it there, let mailvault create it, or correct the URL");
    }
    return MakeDirs(config_.path, what, true);
  }

  Status PutFile(const std::string& name, const std::string& path, uint64_t size, const Progress& progress,
                 std::string* sha256_hex) override {
    MV_RETURN_IF_ERROR(CheckName(name));
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoError("cannot open", path, errno);
    struct Closer {
      int fd;
      ~Closer() { ::close(fd); }
    } closer{fd};
    // The chunks are read once each, in order: hashed as they go.
    Sha256 hash;
    uint64_t hashed = 0;
    Status st = Put(
        name, size,
        [&](uint64_t offset, size_t n, std::string* out) -> Status {
          MV_RETURN_IF_ERROR(PreadAll(fd, offset, n, out, path));
          if (offset == hashed) {
            hash.Update(*out);
            hashed += out->size();
          }
          return Status::Ok();
        },
        progress);
    if (st.ok() && sha256_hex) {
      if (hashed != size) return Internal("put " + name + ": the file was not read in order; no hash");
      *sha256_hex = HexEncode(hash.Final());
    }
    return st;
  }

  Status PutBytes(const std::string& name, std::string_view bytes) override {
    MV_RETURN_IF_ERROR(CheckName(name));
    return Put(name, bytes.size(),
               [&](uint64_t offset, size_t n, std::string* out) {
                 out->assign(bytes.substr(offset, n));
                 return Status::Ok();
               },
               {});
  }

  Result<std::string> GetBytes(const std::string& name) override {
    MV_RETURN_IF_ERROR(CheckName(name));
    std::string out;
    MV_RETURN_IF_ERROR(Get(
        name, [&](uint64_t total) { out.reserve(static_cast<size_t>(std::min(total, kMaxReserveBytes))); },
        [&](std::string_view bytes) {
          out.append(bytes);
          return Status::Ok();
        },
        {}));
    return out;
  }

  Status GetFile(const std::string& name, const std::string& path, const Progress& progress) override {
    MV_RETURN_IF_ERROR(CheckName(name));
    const std::string part = path + ".part";
    int fd = ::open(part.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return ErrnoError("cannot create", part, errno);
    Status s = Get(
        name, [](uint64_t) {}, [&](std::string_view bytes) { return WriteAll(fd, bytes, part); }, progress);
    if (s.ok() && ::fsync(fd) != 0) s = ErrnoError("cannot fsync", part, errno);
    if (::close(fd) != 0 && s.ok()) s = ErrnoError("cannot close", part, errno);
    if (s.ok() && ::rename(part.c_str(), path.c_str()) != 0)
      s = ErrnoError("cannot rename " + part + " to", path, errno);
    if (s.ok()) s = FsyncDirectory(DirName(path));
    if (!s.ok()) ::unlink(part.c_str());
    return s;
  }

  Result<std::optional<ObjectInfo>> Head(const std::string& name) override {
    MV_RETURN_IF_ERROR(CheckName(name));
    std::lock_guard<std::mutex> lock(mu_);
    MV_RETURN_IF_ERROR(EnsureConnected());
    const std::string remote = RemotePath(name);
    sftp_attributes a = Blocking([&] { return sftp_stat(sftp_, remote.c_str()); });
    if (a == nullptr) {
      CallFailure f = Diagnose();
      if (f.missing()) return std::optional<ObjectInfo>();
      return Failed("head " + name, remote, f);
    }
    std::optional<ObjectInfo> info;
    if (a->type == SSH_FILEXFER_TYPE_REGULAR) info = ObjectInfo{name, a->size};
    sftp_attributes_free(a);
    return info;
  }

  Result<std::vector<ObjectInfo>> List(const std::string& prefix) override {
    std::lock_guard<std::mutex> lock(mu_);
    MV_RETURN_IF_ERROR(EnsureConnected());
    std::vector<ObjectInfo> out;
    MV_RETURN_IF_ERROR(Walk("", prefix, true, &out));
    std::sort(out.begin(), out.end(), [](const ObjectInfo& a, const ObjectInfo& b) { return a.name < b.name; });
    return out;
  }

  Status Delete(const std::string& name) override {
    MV_RETURN_IF_ERROR(CheckName(name));
    std::lock_guard<std::mutex> lock(mu_);
    MV_RETURN_IF_ERROR(EnsureConnected());
    const std::string remote = RemotePath(name);
    // SFTP keeps no versions: one unlink removes every trace of the object.
    int rc = Blocking([&] { return sftp_unlink(sftp_, remote.c_str()); });
    if (rc == 0) return Status::Ok();
    CallFailure f = Diagnose();
    if (f.missing()) return Status::Ok();
    return Failed("delete " + name, remote, f);
  }

 private:
  // Fills out with n bytes of the object being put, from offset.
  using Source = std::function<Status(uint64_t offset, size_t n, std::string* out)>;
  // Takes the next bytes of the object being got.
  using Sink = std::function<Status(std::string_view bytes)>;

  // What the failure of the libssh call just made means.
  struct CallFailure {
    bool link = false;       // the connection is unusable: it is shut down, the next operation reconnects
    int status = SSH_FX_OK;  // the server's SFTP status, when !link
    std::string reason;      // for a message, when link

    // The server says there is nothing at that path.
    bool missing() const { return !link && (status == SSH_FX_NO_SUCH_FILE || status == SSH_FX_NO_SUCH_PATH); }
  };

  // An open remote file or directory, closed on every path (libssh frees the handle's memory
  // even when the close fails, and it must happen before sftp_free).
  class RemoteFile {
   public:
    RemoteFile(SftpStore* store, sftp_file f) : store_(store), f_(f) {}
    RemoteFile(RemoteFile&& o) noexcept : store_(o.store_), f_(std::exchange(o.f_, nullptr)) {}
    RemoteFile& operator=(RemoteFile&&) = delete;
    ~RemoteFile() { (void)Close(); }
    sftp_file get() const { return f_; }
    // Returns sftp_close's result (0 on success); closing twice is a no-op.
    int Close() {
      if (f_ == nullptr) return 0;
      sftp_file f = std::exchange(f_, nullptr);
      return store_->Blocking([&] { return sftp_close(f); });
    }

   private:
    SftpStore* store_;
    sftp_file f_;
  };

  Status CheckName(const std::string& name) const {
    if (!ValidObjectName(name)) {
      return InvalidArgument(describe_ + ": \"" + name +
                             "\" is not an object name (relative, '/'-separated segments of A-Z a-z 0-9 . _ -, "
                             "no '.' or '..' segment)");
    }
    for (size_t start = 0; start <= name.size();) {
      size_t end = std::min(name.find('/', start), name.size());
      if (end - start > kMaxSegmentBytes) {
        return InvalidArgument(describe_ + ": \"" + name + "\" has a segment of " + std::to_string(end - start) +
                               " bytes; an SFTP target takes at most " + std::to_string(kMaxSegmentBytes) +
                               " (file systems allow 255 bytes per name, and uploads add a temporary suffix)");
      }
      start = end + 1;
    }
    if (IsTemporaryName(name)) {
      return InvalidArgument(describe_ + ": \"" + name + "\": names whose last segment contains \"" +
                             std::string(kTemporaryMarker) + "\" are reserved for uploads in progress");
    }
    return Status::Ok();
  }

  std::string RemotePath(const std::string& name) const {
    return config_.path == "/" ? "/" + name : config_.path + "/" + name;
  }

  size_t RequestBytes() const {
    uint64_t rate = config_.transfer.bwlimit;
    if (rate == 0) return kMaxRequestBytes;
    return static_cast<size_t>(std::clamp<uint64_t>(rate / 8, kMinPacedRequestBytes, kMaxRequestBytes));
  }

  // ---- the connection (all REQUIRE mu_ held) ----

  // Runs one blocking libssh call under the watchdog.
  template <typename F>
  auto Blocking(F&& call) -> decltype(call()) {
    if (watch_fd_ >= 0) watchdog_.Arm(watch_fd_, limit_);
    auto result = call();
    if (watch_fd_ >= 0 && watchdog_.Disarm()) stalled_ = true;
    return result;
  }

  Status EnsureConnected() {
    if (session_ != nullptr && !broken_ && !stalled_ && ssh_is_connected(session_)) {
      // A connection that died while idle (the server restarted, a middlebox reset it) shows here
      // as an error or EOF without waiting; finding out now spares this operation the failure.
      // Bytes nobody asked for mean the conversation is out of step: replaced too.
      if (Blocking([&] { return ssh_channel_poll_timeout(sftp_->channel, 0, 0); }) != 0) broken_ = true;
    }
    if (session_ != nullptr && (broken_ || stalled_ || !ssh_is_connected(session_))) Disconnect();
    if (session_ != nullptr) return Status::Ok();
    Status s = Connect();
    if (!s.ok()) Disconnect();
    return s;
  }

  static SftpConfig Normalized(SftpConfig c) {
    while (c.path.size() > 1 && c.path.back() == '/') c.path.pop_back();
    return c;
  }

  Status Connect() {
    if (config_.user.empty() || config_.host.empty() || config_.port < 1 || config_.port > 65535 ||
        config_.path.empty() || config_.path.front() != '/') {
      return InvalidArgument(describe_ +
                             ": the target needs a user, a host, a port from 1 to 65535 and an absolute "
                             "directory (sftp://USER@HOST[:PORT]/PATH)");
    }
    if (config_.identity_file.empty()) {
      return InvalidArgument(describe_ +
                             ": no identity file: an SFTP target authenticates with a private key "
                             "(OpenSSH format, no passphrase); give its path");
    }
    if (config_.known_hosts.empty()) {
      return InvalidArgument(describe_ + ": no known-hosts file: pin the server's host key first (" +
                             KeyscanCommand("FILE") + ", compare the fingerprint with the server's) and give the file");
    }
    Result<std::string> key_text = ReadPrivateFile(config_.identity_file, kMaxIdentityFileBytes);
    if (!key_text.ok()) {
      ErrorCode code =
          key_text.error().code() == ErrorCode::kIoError ? ErrorCode::kIoError : ErrorCode::kInvalidArgument;
      return Error(code, describe_ + ": identity file: " + key_text.error().message());
    }
    ssh_key key = nullptr;
    int rc = ssh_pki_import_privkey_base64(key_text->c_str(), nullptr, nullptr, nullptr, &key);
    OPENSSL_cleanse(key_text->data(), key_text->size());
    if (rc != SSH_OK) {
      return Error(ErrorCode::kBadKey,
                   describe_ + ": cannot load the private key " + config_.identity_file +
                       ": not an OpenSSH or PEM private key, or protected by a passphrase (the store "
                       "needs a key without one; `ssh-keygen -p -N '' -f " +
                       config_.identity_file + "` removes it)");
    }
    std::unique_ptr<ssh_key_struct, void (*)(ssh_key)> key_owner(key, ssh_key_free);

    session_ = ssh_new();
    if (session_ == nullptr) return Internal(describe_ + ": ssh_new failed (out of memory)");
    // The host goes in brackets when it is an IPv6 address: libssh 0.10 reads "::1" as host ":"
    // and port "1", and refuses it.
    std::string host = config_.host.find(':') != std::string::npos ? "[" + config_.host + "]" : config_.host;
    int port = config_.port;
    long timeout = std::max(1, config_.transfer.connect_timeout_seconds);
    int verbosity = SSH_LOG_NOLOG;
    int strict = 1;
    // Without TCP_NODELAY every request waits out Nagle against the server's delayed ACK: with
    // OpenSSH on loopback, 40 MiB took 1.8 s to read in 255 KiB requests instead of 0.2 s, and
    // 19 s instead of 0.2 s to write in 64 KiB ones.
    int nodelay = 1;
    bool process_config = false;
    // Only the configured file decides which host keys are trusted: the global known-hosts file
    // is pointed at it too (libssh reads it as a second list), ~/.ssh/config is never parsed (it
    // could turn StrictHostKeyChecking off, which makes libssh accept unknown keys), and strict
    // checking is set explicitly.
    struct Option {
      ssh_options_e option;
      const void* value;
      const char* name;
    } options[] = {
        {SSH_OPTIONS_LOG_VERBOSITY, &verbosity, "log verbosity"},
        {SSH_OPTIONS_PROCESS_CONFIG, &process_config, "process config"},
        {SSH_OPTIONS_HOST, host.c_str(), "host"},
        {SSH_OPTIONS_PORT, &port, "port"},
        {SSH_OPTIONS_USER, config_.user.c_str(), "user"},
        {SSH_OPTIONS_KNOWNHOSTS, config_.known_hosts.c_str(), "known hosts"},
        {SSH_OPTIONS_GLOBAL_KNOWNHOSTS, config_.known_hosts.c_str(), "global known hosts"},
        {SSH_OPTIONS_STRICTHOSTKEYCHECK, &strict, "strict host key checking"},
        {SSH_OPTIONS_NODELAY, &nodelay, "TCP_NODELAY"},
        {SSH_OPTIONS_TIMEOUT, &timeout, "timeout"},
    };
    for (const Option& o : options) {
      if (ssh_options_set(session_, o.option, o.value) != SSH_OK) {
        return InvalidArgument(describe_ + ": libssh refused the " + o.name + " option: " + ssh_get_error(session_));
      }
    }

    // ssh_connect honours SSH_OPTIONS_TIMEOUT for the TCP connect and the key exchange; the
    // socket exists only once it returns, so the watchdog starts after it.
    if (ssh_connect(session_) != SSH_OK) {
      return IoError(describe_ + ": cannot connect to " + host_port_ + ": " + ssh_get_error(session_) +
                     "; check the host and port, and that sshd runs there and is reachable");
    }
    watch_fd_ = ::fcntl(ssh_get_fd(session_), F_DUPFD_CLOEXEC, 0);
    if (watch_fd_ < 0) return ErrnoError("cannot duplicate the socket of", describe_, errno);
    limit_ = std::chrono::seconds(timeout);
    stalled_ = false;
    broken_ = false;

    MV_RETURN_IF_ERROR(VerifyHostKey());

    rc = Blocking([&] { return ssh_userauth_publickey(session_, nullptr, key); });
    if (stalled_ || rc == SSH_AUTH_ERROR || rc == SSH_AUTH_AGAIN) {
      return IoError(describe_ + ": the connection failed during authentication: " +
                     (stalled_ || rc == SSH_AUTH_AGAIN ? "no answer for " + Seconds(std::chrono::seconds(timeout))
                                                       : std::string(ssh_get_error(session_))));
    }
    if (rc != SSH_AUTH_SUCCESS) {
      return Error(
          ErrorCode::kBadKey,
          describe_ + ": the server refused the key " + config_.identity_file + " for " + config_.user + "@" +
              config_.host +
              (rc == SSH_AUTH_PARTIAL ? " (it wants a further authentication method, which the store cannot give)"
                                      : "") +
              ": add its public key (`ssh-keygen -y -f " + config_.identity_file + "`) to ~" + config_.user +
              "/.ssh/authorized_keys on the server, or correct the user or the identity file");
    }

    // Past the handshake, a request that takes longer than the stall timeout counts as a dropped
    // link (the watchdog); libssh's own timeout stays behind it, as a backstop that never fires
    // first (see Watchdog for why).
    limit_ = std::chrono::seconds(std::max(1, config_.transfer.stall_timeout_seconds));
    long backstop = 2 * static_cast<long>(limit_.count()) + 5;
    ssh_options_set(session_, SSH_OPTIONS_TIMEOUT, &backstop);

    sftp_ = Blocking([&] { return sftp_new(session_); });
    if (sftp_ == nullptr) {
      return IoError(describe_ + ": the server refused an SFTP channel: " + ssh_get_error(session_) +
                     "; check that sshd_config has a \"Subsystem sftp\" line and that " + config_.user + " may use it");
    }
    rc = Blocking([&] { return sftp_init(sftp_); });
    if (rc != SSH_OK) {
      return IoError(describe_ + ": the SFTP subsystem did not start: " + ssh_get_error(session_) +
                     "; check the server's \"Subsystem sftp\" line, and that " + config_.user +
                     "'s login shell runs commands (not nologin) and its start-up files print nothing");
    }
    return Status::Ok();
  }

  // The command that pins the server's current key.
  std::string KeyscanCommand(const std::string& file) const {
    return "ssh-keyscan -p " + std::to_string(config_.port) + " " + config_.host + " >> " + file;
  }

  Status VerifyHostKey() {
    ssh_key server_key = nullptr;
    if (ssh_get_server_publickey(session_, &server_key) != SSH_OK) {
      return IoError(describe_ + ": the server sent no host key: " + ssh_get_error(session_));
    }
    std::string type = ssh_key_type_to_char(ssh_key_type(server_key));
    std::string fingerprint = "?";
    unsigned char* hash = nullptr;
    size_t hash_len = 0;
    if (ssh_get_publickey_hash(server_key, SSH_PUBLICKEY_HASH_SHA256, &hash, &hash_len) == SSH_OK) {
      char* fp = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hash_len);
      if (fp != nullptr) {
        fingerprint = fp;
        ssh_string_free_char(fp);
      }
      ssh_clean_pubkey_hash(&hash);
    }
    ssh_key_free(server_key);
    const std::string shown =
        config_.host + " port " + std::to_string(config_.port) + " (" + type + " " + fingerprint + ")";
    const std::string& file = config_.known_hosts;
    const std::string host_pattern =
        config_.port == 22 ? config_.host : "[" + config_.host + "]:" + std::to_string(config_.port);
    const std::string replace =
        "if the server's administrator confirms that fingerprint, remove the old entry (ssh-keygen -R '" +
        host_pattern + "' -f " + file + ") and pin the new key (" + KeyscanCommand(file) + ")";
    switch (ssh_session_is_known_server(session_)) {
      case SSH_KNOWN_HOSTS_OK:
        return Status::Ok();
      case SSH_KNOWN_HOSTS_CHANGED:
        return Error(ErrorCode::kBadKey,
                     describe_ + ": the host key of " + shown + " is not the one pinned in " + file +
                         ": this may be an attack (someone between us and the server) or the server "
                         "was reinstalled; " +
                         replace);
      case SSH_KNOWN_HOSTS_OTHER:
        return Error(ErrorCode::kBadKey,
                     describe_ + ": " + shown + " offered a " + type + " key, but " + file +
                         " pins a key of another type for it: this may be an attack, or the server's "
                         "keys were changed; " +
                         replace);
      case SSH_KNOWN_HOSTS_UNKNOWN:
      case SSH_KNOWN_HOSTS_NOT_FOUND: {
        // libssh 0.10 reports a missing file as UNKNOWN, like a file without this host.
        bool exists = ::access(file.c_str(), R_OK) == 0;
        return Error(ErrorCode::kBadKey, describe_ + ": the host key of " + shown + " is not trusted: " +
                                             (exists ? file + " has no key for " + host_pattern
                                                     : file + " does not exist or cannot be read") +
                                             "; compare the fingerprint with the server's (there: ssh-keygen -lf " +
                                             HostKeyFileFor(type) + "), then pin it: " + KeyscanCommand(file));
      }
      case SSH_KNOWN_HOSTS_ERROR:
      default:
        return Error(ErrorCode::kBadKey, describe_ + ": cannot check the host key of " + shown + " against " + file +
                                             ": " + ssh_get_error(session_));
    }
  }

  // Frees everything; the next operation reconnects.
  void Disconnect() {
    // Closing channels sends messages; on a link that is stalled but not yet seen as broken that
    // could block, so it runs under the watchdog too (and at once when the link is known dead).
    if (session_ != nullptr && watch_fd_ >= 0 && (broken_ || stalled_)) ::shutdown(watch_fd_, SHUT_RDWR);
    if (extended_ != nullptr) {
      ssh_channel ch = std::exchange(extended_, nullptr);
      Blocking([&] {
        ssh_channel_free(ch);
        return 0;
      });
    }
    if (sftp_ != nullptr) {
      sftp_session s = std::exchange(sftp_, nullptr);
      Blocking([&] {
        sftp_free(s);
        return 0;
      });
    }
    if (session_ != nullptr) {
      ssh_session s = std::exchange(session_, nullptr);
      Blocking([&] {
        if (ssh_is_connected(s)) ssh_disconnect(s);
        ssh_free(s);
        return 0;
      });
    }
    if (watch_fd_ >= 0) ::close(std::exchange(watch_fd_, -1));
    broken_ = false;
    stalled_ = false;
  }

  // Classifies the failure of the libssh call just made. A link failure, or anything that leaves
  // the SFTP conversation in doubt, shuts the socket down (so cleanup calls fail at once) and
  // marks the connection for replacement by the next operation.
  CallFailure Diagnose() {
    CallFailure f;
    if (stalled_) {
      f.link = true;
      f.reason = "nothing moved for " + Seconds(limit_) + " (the stall timeout): the link or the server stalled";
    } else if (!ssh_is_connected(session_) || sftp_ == nullptr || ssh_channel_is_closed(sftp_->channel) ||
               ssh_channel_is_eof(sftp_->channel)) {
      f.link = true;
      std::string detail = ssh_get_error(session_);
      // libssh 0.10's sftp_fsync reports a reply it could not read as "out of memory".
      if (detail.find("memory") != std::string::npos) detail = "the server closed it or the link dropped";
      f.reason = "the connection was lost (" + detail + ")";
    } else {
      f.status = sftp_get_error(sftp_);
      switch (f.status) {
        case SSH_FX_NO_SUCH_FILE:
        case SSH_FX_PERMISSION_DENIED:
        case SSH_FX_FAILURE:
        case SSH_FX_OP_UNSUPPORTED:
        case SSH_FX_NO_SUCH_PATH:
        case SSH_FX_FILE_ALREADY_EXISTS:
        case SSH_FX_WRITE_PROTECT:
        case SSH_FX_NO_MEDIA:
          return f;
        default:
          f.link = true;
          f.reason = std::string("the SFTP conversation broke (") + SftpStatusName(f.status) +
                     "; libssh: " + ssh_get_error(session_) + ")";
      }
    }
    broken_ = true;
    if (watch_fd_ >= 0) ::shutdown(watch_fd_, SHUT_RDWR);
    return f;
  }

  // The error for a failed call on remote path; what is the operation ("put packs/1.pack").
  Error Failed(const std::string& what, const std::string& remote, const CallFailure& f) const {
    if (f.link) return IoError(describe_ + ": " + what + ": " + f.reason + "; the next operation reconnects");
    std::string m =
        describe_ + ": " + what + ": the server answered \"" + SftpStatusName(f.status) + "\" for " + remote;
    switch (f.status) {
      case SSH_FX_NO_SUCH_FILE:
      case SSH_FX_NO_SUCH_PATH:
        return NotFound(m);
      case SSH_FX_PERMISSION_DENIED:
      case SSH_FX_WRITE_PROTECT:
        return IoError(m + "; check that " + config_.user + " may read and write " + config_.path + " on " +
                       config_.host);
      case SSH_FX_FAILURE:
        return IoError(m +
                       " (OpenSSH sends this for any error without an SFTP code: a full disk, a name that is a "
                       "directory or under a file, ...)");
      default:
        return IoError(m);
    }
  }

  // For a put, "no such file" is not the missing object kNotFound means elsewhere.
  static Error AsIoError(const Error& e) { return e.code() == ErrorCode::kNotFound ? IoError(e.message()) : e; }

  // A write, fsync or close of a temporary that the server refused.
  Error WriteRefused(const std::string& what, const std::string& remote, const std::string& dir, const CallFailure& f) {
    if (f.link || f.status != SSH_FX_FAILURE) return AsIoError(Failed(what, remote, f));
    // OpenSSH's sftp-server maps errno to SFTP version 3 codes, which have none for ENOSPC or
    // EDQUOT: a full disk arrives as a bare SSH_FX_FAILURE ("Failure"). statvfs@openssh.com
    // tells whether that is what happened.
    std::string m = describe_ + ": " + what + ": the server refused to write " + remote +
                    " (SFTP \"failure\"): the server's disk may be full";
    if (sftp_extension_supported(sftp_, "statvfs@openssh.com", "2")) {
      sftp_statvfs_t st = Blocking([&] { return sftp_statvfs(sftp_, dir.c_str()); });
      if (st != nullptr) {
        m += " (" + HumanBytes(st->f_bavail * st->f_frsize) + " free in " + dir + ")";
        sftp_statvfs_free(st);
      }
    }
    return IoError(m + " or the user's quota used up; free space on " + config_.host + " and retry");
  }

  // mkdir -p for dir, with mode 0700 for what it creates. Only Prepare(true) creates the
  // directory of the URL itself: a put into a missing one is refused, since a missing target
  // directory is more often an unmounted disk or a wrong URL than a new target.
  Status MakeDirs(const std::string& dir, const std::string& what, bool create_root, int depth = 0) {
    if (dir == config_.path && !create_root) {
      sftp_attributes a = Blocking([&] { return sftp_stat(sftp_, dir.c_str()); });
      if (a != nullptr) {
        sftp_attributes_free(a);
        return Status::Ok();  // there after all: the caller's retry reports what really failed
      }
      CallFailure f = Diagnose();
      if (!f.missing()) return AsIoError(Failed(what, dir, f));
      return NotFound(describe_ + ": " + what + ": the directory " + config_.path + " does not exist on " +
                      config_.host + "; prepare the target (which creates it) or correct the URL");
    }
    int rc = Blocking([&] { return sftp_mkdir(sftp_, dir.c_str(), 0700); });
    if (rc == 0) return Status::Ok();
    CallFailure f = Diagnose();
    if (f.link) return AsIoError(Failed(what, dir, f));
    if (f.missing() && depth < 512 && dir != "/" && DirName(dir) != dir) {
      MV_RETURN_IF_ERROR(MakeDirs(DirName(dir), what, create_root, depth + 1));
      rc = Blocking([&] { return sftp_mkdir(sftp_, dir.c_str(), 0700); });
      if (rc == 0) return Status::Ok();
      f = Diagnose();
      if (f.link) return AsIoError(Failed(what, dir, f));
    }
    // SFTP version 3 has no "already exists" code (OpenSSH answers SSH_FX_FAILURE for EEXIST):
    // whether dir is there as a directory decides.
    sftp_attributes a = Blocking([&] { return sftp_stat(sftp_, dir.c_str()); });
    if (a != nullptr) {
      bool is_dir = a->type == SSH_FILEXFER_TYPE_DIRECTORY;
      sftp_attributes_free(a);
      if (is_dir) return Status::Ok();
      return IoError(describe_ + ": " + what + ": " + dir + " exists on the server and is not a directory");
    }
    CallFailure g = Diagnose();
    return AsIoError(Failed(what + ": creating directory " + dir, dir, g.link ? g : f));
  }

  // Creates the temporary (and its directories when they are missing).
  Result<RemoteFile> CreateTemporary(const std::string& temp, const std::string& what) {
    constexpr int kFlags = O_WRONLY | O_CREAT | O_EXCL;
    sftp_file f = Blocking([&] { return sftp_open(sftp_, temp.c_str(), kFlags, 0600); });
    if (f == nullptr) {
      CallFailure failure = Diagnose();
      if (!failure.missing()) return WriteRefused(what, temp, DirName(temp), failure);
      MV_RETURN_IF_ERROR(MakeDirs(DirName(temp), what, false));
      f = Blocking([&] { return sftp_open(sftp_, temp.c_str(), kFlags, 0600); });
      if (f == nullptr) return WriteRefused(what, temp, DirName(temp), Diagnose());
    }
    return RemoteFile(this, f);
  }

  Status Put(const std::string& name, uint64_t size, const Source& source, const Progress& progress) {
    std::lock_guard<std::mutex> lock(mu_);
    MV_RETURN_IF_ERROR(EnsureConnected());
    const std::string what = "put " + name;
    const std::string target = RemotePath(name);
    const std::string dir = DirName(target);
    const std::string temp = target + std::string(kTemporaryMarker) + RandomHex(8);

    MV_ASSIGN_OR_RETURN(RemoteFile file, CreateTemporary(temp, what));
    Status s = WriteTemporary(file, size, source, progress, what, temp);
    if (s.ok() && sftp_extension_supported(sftp_, "fsync@openssh.com", "1")) {
      if (Blocking([&] { return sftp_fsync(file.get()); }) != 0)
        s = WriteRefused(what + " (fsync)", temp, dir, Diagnose());
    }
    if (s.ok() && file.Close() != 0) s = WriteRefused(what + " (close)", temp, dir, Diagnose());
    if (s.ok()) s = Rename(temp, target, what);
    if (!s.ok()) {
      (void)file.Close();
      // Best effort: a broken link leaves the temporary behind (List skips it).
      if (!broken_ && !stalled_) (void)Blocking([&] { return sftp_unlink(sftp_, temp.c_str()); });
    }
    return s;
  }

  Status WriteTemporary(RemoteFile& file, uint64_t size, const Source& source, const Progress& progress,
                        const std::string& what, const std::string& temp) {
    const size_t request = RequestBytes();
    Pacer pacer(config_.transfer.bwlimit);
    std::string chunk;
    uint64_t done = 0;
    while (done < size) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(request, size - done));
      MV_RETURN_IF_ERROR(source(done, n, &chunk));
      pacer.Wait(done);
      ssize_t w = Blocking([&] { return sftp_write(file.get(), chunk.data(), chunk.size()); });
      if (w < 0 || static_cast<size_t>(w) != n) return WriteRefused(what, temp, DirName(temp), Diagnose());
      done += n;
      if (progress && !progress(done, size)) {
        return IoError(describe_ + ": " + what + ": stopped by the caller after " + HumanBytes(done) + " of " +
                       HumanBytes(size) + "; nothing was stored under the name");
      }
    }
    return Status::Ok();
  }

  // Renames temp over target, replacing an existing object atomically.
  Status Rename(const std::string& temp, const std::string& target, const std::string& what) {
    if (sftp_extension_supported(sftp_, "posix-rename@openssh.com", "1")) {
      MV_ASSIGN_OR_RETURN(uint32_t status, PosixRename(temp, target, what));
      if (status == SSH_FX_OK) return Status::Ok();
      CallFailure f;
      f.status = static_cast<int>(status);
      return AsIoError(Failed(what + " (rename into place)", target, f));
    }
    // Without posix-rename: SSH_FXP_RENAME, which in SFTP version 3 may refuse an existing
    // target. Then the old object goes first, and for a moment there is none: no reader ever
    // sees a partial object, but one may see none.
    if (Blocking([&] { return sftp_rename(sftp_, temp.c_str(), target.c_str()); }) == 0) return Status::Ok();
    CallFailure f = Diagnose();
    if (f.link) return Failed(what, target, f);
    if (Blocking([&] { return sftp_unlink(sftp_, target.c_str()); }) != 0) {
      CallFailure g = Diagnose();
      return AsIoError(Failed(what + " (rename into place)", target, !g.missing() ? g : f));
    }
    if (Blocking([&] { return sftp_rename(sftp_, temp.c_str(), target.c_str()); }) == 0) return Status::Ok();
    return AsIoError(Failed(what + " (rename into place)", target, Diagnose()));
  }

  // posix-rename@openssh.com. libssh 0.10 has no call for it (its sftp_rename sends a plain
  // SSH_FXP_RENAME, which OpenSSH's sftp-server refuses when the target exists) and no way to
  // send an extended request on its own channel, so it goes over a second SFTP channel of the
  // same connection, opened on the first rename: a minimal conversation of our own, SFTP
  // version 3 INIT/VERSION then EXTENDED/STATUS. Returns the server's SFTP status.
  Result<uint32_t> PosixRename(const std::string& from, const std::string& to, const std::string& what) {
    const std::string context = what + " (posix-rename)";
    if (extended_ == nullptr) {
      ssh_channel ch = ssh_channel_new(session_);
      if (ch == nullptr) return IoError(describe_ + ": " + context + ": ssh_channel_new failed");
      extended_ = ch;
      int rc = Blocking([&] { return ssh_channel_open_session(ch); });
      if (rc == SSH_OK) rc = Blocking([&] { return ssh_channel_request_sftp(ch); });
      if (rc != SSH_OK)
        return ExtendedLinkError(context, std::string("cannot open a second SFTP channel: ") + ssh_get_error(session_));
      std::string init;
      PutU32(&init, 5);
      init.push_back(static_cast<char>(SSH_FXP_INIT));
      PutU32(&init, 3);
      MV_RETURN_IF_ERROR(ExtendedSend(init, context));
      MV_ASSIGN_OR_RETURN(std::string version, ExtendedReceive(context));
      if (version.empty() || static_cast<unsigned char>(version[0]) != SSH_FXP_VERSION) {
        return ExtendedLinkError(context, "the second SFTP channel did not answer INIT with VERSION");
      }
    }
    const uint32_t id = ++extended_id_;
    std::string body;
    body.push_back(static_cast<char>(SSH_FXP_EXTENDED));
    PutU32(&body, id);
    PutString(&body, "posix-rename@openssh.com");
    PutString(&body, from);
    PutString(&body, to);
    std::string packet;
    PutU32(&packet, static_cast<uint32_t>(body.size()));
    packet += body;
    MV_RETURN_IF_ERROR(ExtendedSend(packet, context));
    MV_ASSIGN_OR_RETURN(std::string reply, ExtendedReceive(context));
    size_t pos = 1;
    uint32_t reply_id = 0, status = 0;
    if (reply.empty() || static_cast<unsigned char>(reply[0]) != SSH_FXP_STATUS || !GetU32(reply, &pos, &reply_id) ||
        reply_id != id || !GetU32(reply, &pos, &status)) {
      return ExtendedLinkError(context, "the server's answer to posix-rename is not its STATUS");
    }
    return status;
  }

  Error ExtendedLinkError(const std::string& context, const std::string& reason) {
    CallFailure f;
    f.link = true;
    f.reason = stalled_ ? "nothing moved for " + Seconds(limit_) + " (the stall timeout)" : reason;
    broken_ = true;
    if (watch_fd_ >= 0) ::shutdown(watch_fd_, SHUT_RDWR);
    return Failed(context, "", f);
  }

  Status ExtendedSend(const std::string& packet, const std::string& context) {
    size_t off = 0;
    while (off < packet.size()) {
      int n = Blocking([&] {
        return ssh_channel_write(extended_, packet.data() + off, static_cast<uint32_t>(packet.size() - off));
      });
      if (n <= 0 || stalled_) return ExtendedLinkError(context, std::string("cannot send: ") + ssh_get_error(session_));
      off += static_cast<size_t>(n);
    }
    return Status::Ok();
  }

  Result<std::string> ExtendedReceive(const std::string& context) {
    auto read_exact = [&](char* buf, size_t n) -> Status {
      size_t got = 0;
      while (got < n) {
        int r = Blocking([&] {
          return ssh_channel_read_timeout(extended_, buf + got, static_cast<uint32_t>(n - got), 0,
                                          static_cast<int>(std::chrono::milliseconds(limit_).count()));
        });
        if (r < 0 || stalled_)
          return ExtendedLinkError(context, std::string("cannot receive: ") + ssh_get_error(session_));
        if (r == 0) {
          return ExtendedLinkError(context, ssh_channel_is_eof(extended_) ? "the server closed the second SFTP channel"
                                                                          : "no answer within the stall timeout");
        }
        got += static_cast<size_t>(r);
      }
      return Status::Ok();
    };
    char len_bytes[4];
    MV_RETURN_IF_ERROR(read_exact(len_bytes, 4));
    size_t pos = 0;
    uint32_t len = 0;
    (void)GetU32(std::string_view(len_bytes, 4), &pos, &len);
    if (len == 0 || len > kMaxExtendedReplyBytes) {
      return ExtendedLinkError(context, "the second SFTP channel sent a packet of " + std::to_string(len) + " bytes");
    }
    std::string body(len, '\0');
    MV_RETURN_IF_ERROR(read_exact(body.data(), len));
    return body;
  }

  // Downloads name: begin(total) once the size is known, then sink() for each piece.
  Status Get(const std::string& name, const std::function<void(uint64_t)>& begin, const Sink& sink,
             const Progress& progress) {
    std::lock_guard<std::mutex> lock(mu_);
    MV_RETURN_IF_ERROR(EnsureConnected());
    const std::string what = "get " + name;
    const std::string remote = RemotePath(name);
    sftp_file raw = Blocking([&] { return sftp_open(sftp_, remote.c_str(), O_RDONLY, 0); });
    if (raw == nullptr) {
      CallFailure f = Diagnose();
      if (f.missing()) return NotFound(describe_ + ": no object " + name);
      return Failed(what, remote, f);
    }
    RemoteFile file(this, raw);
    sftp_attributes a = Blocking([&] { return sftp_fstat(file.get()); });
    if (a == nullptr) return Failed(what, remote, Diagnose());
    bool regular = a->type == SSH_FILEXFER_TYPE_REGULAR;
    uint64_t total = a->size;
    sftp_attributes_free(a);
    if (!regular) return NotFound(describe_ + ": no object " + name + " (" + remote + " is not a regular file)");
    begin(total);

    const size_t request = RequestBytes();
    Pacer pacer(config_.transfer.bwlimit);
    std::string buf(request, '\0');
    uint64_t done = 0;
    for (;;) {
      pacer.Wait(done);
      ssize_t n = Blocking([&] { return sftp_read(file.get(), buf.data(), buf.size()); });
      if (n < 0) return Failed(what, remote, Diagnose());
      if (n == 0) break;
      MV_RETURN_IF_ERROR(sink(std::string_view(buf.data(), static_cast<size_t>(n))));
      done += static_cast<uint64_t>(n);
      if (progress && !progress(done, std::max(total, done))) {
        return IoError(describe_ + ": " + what + ": stopped by the caller after " + HumanBytes(done));
      }
    }
    if (file.Close() != 0) return Failed(what, remote, Diagnose());
    return Status::Ok();
  }

  // Appends to out every object under the directory rel ("" for the root, else "packs" etc.)
  // whose name starts with prefix.
  Status Walk(const std::string& rel, const std::string& prefix, bool root, std::vector<ObjectInfo>* out) {
    const std::string remote = rel.empty() ? config_.path : RemotePath(rel);
    sftp_dir dir = Blocking([&] { return sftp_opendir(sftp_, remote.c_str()); });
    if (dir == nullptr) {
      CallFailure f = Diagnose();
      if (f.missing()) {
        if (!root) return Status::Ok();  // removed while we walked
        return NotFound(describe_ + ": the directory " + config_.path + " does not exist on " + config_.host +
                        "; prepare the target first, or correct the URL");
      }
      return Failed("list " + (prefix.empty() ? std::string("all objects") : prefix + "*"), remote, f);
    }
    std::vector<std::string> subdirs;
    Status s;
    for (;;) {
      sftp_attributes a = Blocking([&] { return sftp_readdir(sftp_, dir); });
      if (a == nullptr) {
        if (!sftp_dir_eof(dir)) s = Failed("list " + prefix + "*", remote, Diagnose());
        break;
      }
      std::string entry = a->name != nullptr ? a->name : "";
      std::string name = rel.empty() ? entry : rel + "/" + entry;
      if (entry != "." && entry != ".." && ValidObjectName(name)) {
        if (a->type == SSH_FILEXFER_TYPE_DIRECTORY) {
          std::string as_prefix = name + "/";
          if (StartsWith(as_prefix, prefix) || StartsWith(prefix, as_prefix)) subdirs.push_back(name);
        } else if (a->type == SSH_FILEXFER_TYPE_REGULAR && StartsWith(name, prefix) && !IsTemporaryName(name)) {
          out->push_back(ObjectInfo{name, a->size});
        }
      }
      sftp_attributes_free(a);
    }
    int rc = Blocking([&] { return sftp_closedir(dir); });
    MV_RETURN_IF_ERROR(s);
    if (rc != 0) return Failed("list " + prefix + "*", remote, Diagnose());
    for (const std::string& sub : subdirs) MV_RETURN_IF_ERROR(Walk(sub, prefix, false, out));
    return Status::Ok();
  }

  const SftpConfig config_;
  std::string host_port_;  // "host:22", "[::1]:2222"
  std::string describe_;

  std::mutex mu_;  // one operation at a time; guards everything below
  ssh_session session_ = nullptr;
  sftp_session sftp_ = nullptr;
  ssh_channel extended_ = nullptr;  // the posix-rename channel, opened on the first rename
  uint32_t extended_id_ = 0;
  int watch_fd_ = -1;                   // our dup() of the connection's socket, for the watchdog
  std::chrono::milliseconds limit_{0};  // the watchdog's limit for one blocking call
  bool stalled_ = false;                // the watchdog fired: the socket is shut down
  bool broken_ = false;                 // a call failed in a way that leaves the connection unusable
  Watchdog watchdog_;
};

}  // namespace

std::unique_ptr<ObjectStore> MakeSftpStore(SftpConfig config) { return std::make_unique<SftpStore>(std::move(config)); }

}  // namespace mailvault::replication
