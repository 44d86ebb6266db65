#include "vault/patient_fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>

#include <rocksdb/env.h>
#include <rocksdb/file_system.h>

namespace mailvault {
namespace {

std::mutex stall_mu;
std::string stall_what;     // REQUIRES: stall_mu
long long stall_since = 0;  // REQUIRES: stall_mu

long long NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Runs op until it succeeds, pausing after each failure; EINTR is retried at once. Errors that
// no waiting can cure (a bad descriptor, a read-only file system) are returned.
template <typename Op>
rocksdb::IOStatus Patiently(const std::string& what, const std::string& path, Op op) {
  auto pause = std::chrono::milliseconds(10);
  bool stalled = false;
  for (;;) {
    int err = op();
    if (err == 0) break;
    if (err == EINTR) continue;
    if (err != ENOSPC && err != EIO && err != EDQUOT && err != EAGAIN) {
      return rocksdb::IOStatus::IOError(what + " " + path + ": " + std::strerror(err));
    }
    {
      std::lock_guard<std::mutex> l(stall_mu);
      if (stall_what.empty()) stall_since = NowUs();
      stall_what = what + " " + path + ": " + std::strerror(err) + " (retrying until it goes through)";
    }
    stalled = true;
    std::this_thread::sleep_for(pause);
    pause = std::min<std::chrono::milliseconds>(pause * 2, std::chrono::milliseconds(1000));
  }
  if (stalled) {
    std::lock_guard<std::mutex> l(stall_mu);
    stall_what.clear();
    stall_since = 0;
  }
  return rocksdb::IOStatus::OK();
}

// A plain buffered-by-the-kernel writable file on a descriptor of our own, so that a failed
// write() is resumed at the byte it stopped at (RocksDB's own file would have to be cut back).
class PatientWritableFile : public rocksdb::FSWritableFile {
 public:
  PatientWritableFile(std::string path, int fd, uint64_t size) : path_(std::move(path)), fd_(fd), size_(size) {}
  ~PatientWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions&, rocksdb::IODebugContext*) override {
    const char* p = data.data();
    size_t left = data.size();
    rocksdb::IOStatus s = Patiently("write", path_, [&] {
      while (left > 0) {
        ssize_t n = ::write(fd_, p, left);
        if (n < 0) return errno;
        p += n;
        left -= static_cast<size_t>(n);
        size_ += static_cast<uint64_t>(n);
      }
      return 0;
    });
    return s;
  }
  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o, const rocksdb::DataVerificationInfo&,
                           rocksdb::IODebugContext* d) override {
    return Append(data, o, d);
  }
  rocksdb::IOStatus Truncate(uint64_t size, const rocksdb::IOOptions&, rocksdb::IODebugContext*) override {
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0 || ::lseek(fd_, static_cast<off_t>(size), SEEK_SET) < 0) {
      return rocksdb::IOStatus::IOError("truncate " + path_ + ": " + std::strerror(errno));
    }
    size_ = size;
    return rocksdb::IOStatus::OK();
  }
  rocksdb::IOStatus Close(const rocksdb::IOOptions&, rocksdb::IODebugContext*) override {
    int fd = fd_;
    fd_ = -1;
    if (fd >= 0 && ::close(fd) != 0) return rocksdb::IOStatus::IOError("close " + path_ + ": " + std::strerror(errno));
    return rocksdb::IOStatus::OK();
  }
  rocksdb::IOStatus Flush(const rocksdb::IOOptions&, rocksdb::IODebugContext*) override { return rocksdb::IOStatus::OK(); }
  rocksdb::IOStatus Sync(const rocksdb::IOOptions&, rocksdb::IODebugContext*) override {
    return Patiently("fdatasync", path_, [&] { return ::fdatasync(fd_) == 0 ? 0 : errno; });
  }
  rocksdb::IOStatus Fsync(const rocksdb::IOOptions&, rocksdb::IODebugContext*) override {
    return Patiently("fsync", path_, [&] { return ::fsync(fd_) == 0 ? 0 : errno; });
  }
  bool IsSyncThreadSafe() const override { return true; }
  uint64_t GetFileSize(const rocksdb::IOOptions&, rocksdb::IODebugContext*) override { return size_; }
  rocksdb::IOStatus RangeSync(uint64_t, uint64_t, const rocksdb::IOOptions&, rocksdb::IODebugContext*) override {
    return rocksdb::IOStatus::OK();  // a hint; Sync does the work
  }

 private:
  std::string path_;
  int fd_;
  uint64_t size_;
};

class PatientFileSystem : public rocksdb::FileSystemWrapper {
 public:
  PatientFileSystem() : FileSystemWrapper(rocksdb::FileSystem::Default()) {}
  const char* Name() const override { return "MailvaultPatientFileSystem"; }

  rocksdb::IOStatus NewWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSWritableFile>* r, rocksdb::IODebugContext* d) override {
    return Open(f, O_CREAT | O_TRUNC, o, r, d);
  }
  rocksdb::IOStatus ReopenWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                       std::unique_ptr<rocksdb::FSWritableFile>* r, rocksdb::IODebugContext* d) override {
    return Open(f, O_CREAT, o, r, d);
  }
  rocksdb::IOStatus ReuseWritableFile(const std::string& f, const std::string& old, const rocksdb::FileOptions& o,
                                      std::unique_ptr<rocksdb::FSWritableFile>* r, rocksdb::IODebugContext* d) override {
    if (::rename(old.c_str(), f.c_str()) != 0) return rocksdb::IOStatus::IOError("rename " + old + ": " + std::strerror(errno));
    return Open(f, 0, o, r, d);
  }

 private:
  rocksdb::IOStatus Open(const std::string& f, int flags, const rocksdb::FileOptions& o,
                         std::unique_ptr<rocksdb::FSWritableFile>* r, rocksdb::IODebugContext* d) {
    if (o.use_direct_writes || o.use_mmap_writes) {
      return flags & O_TRUNC ? target()->NewWritableFile(f, o, r, d) : target()->ReopenWritableFile(f, o, r, d);
    }
    int fd = -1;
    rocksdb::IOStatus s = Patiently("create", f, [&] {
      fd = ::open(f.c_str(), O_WRONLY | O_CLOEXEC | flags, 0600);
      return fd < 0 ? errno : 0;
    });
    if (!s.ok()) return s;
    off_t end = ::lseek(fd, 0, SEEK_END);
    if (end < 0) {
      ::close(fd);
      return rocksdb::IOStatus::IOError("seek " + f + ": " + std::strerror(errno));
    }
    r->reset(new PatientWritableFile(f, fd, static_cast<uint64_t>(end)));
    return rocksdb::IOStatus::OK();
  }
};

}  // namespace

rocksdb::Env* PatientEnv() {
  static rocksdb::Env* const env = rocksdb::NewCompositeEnv(std::make_shared<PatientFileSystem>()).release();
  return env;
}

std::string PatientFsStall(long long* since_us) {
  std::lock_guard<std::mutex> l(stall_mu);
  if (since_us) *since_us = stall_since;
  return stall_what;
}

}  // namespace mailvault
