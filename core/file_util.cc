#include "core/file_util.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

namespace mailvault {

std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Result<std::string> ReadSmallFile(const std::string& path, uint64_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return NotFound(path + " does not exist");
    return ErrnoError("cannot open", path, errno);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    return ErrnoError("cannot stat", path, e);
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    ::close(fd);
    return LimitExceeded(path + " is " + std::to_string(st.st_size) + " bytes, more than the " +
                         std::to_string(max_bytes) + " expected");
  }
  std::string out;
  Status s = PreadAll(fd, 0, static_cast<size_t>(st.st_size), &out, path);
  ::close(fd);
  if (!s.ok()) return s.error();
  return out;
}

Result<std::string> ReadPrivateFile(const std::string& path, uint64_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    if (errno == ENOENT) return NotFound(path + " does not exist");
    return ErrnoError("cannot open", path, errno);
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoError("cannot stat", path, errno);
  if (!S_ISREG(st.st_mode)) {
    return InvalidArgument(path + " is not a regular file (" +
                           (S_ISDIR(st.st_mode) ? std::string("a directory") : std::string("a device, FIFO or socket")) +
                           "); give the path of the file itself");
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%o", static_cast<unsigned>(st.st_mode & 0777));
    return InvalidArgument(path + " holds secrets and other users can access it (mode " + mode + "); run: chmod 600 " + path);
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return LimitExceeded(path + " is " + std::to_string(st.st_size) + " bytes, more than the " +
                         std::to_string(max_bytes) + " expected");
  }
  // Back to blocking reads (O_NONBLOCK was only for the open).
  int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) (void)::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  std::string out;
  MV_RETURN_IF_ERROR(PreadAll(fd, 0, static_cast<size_t>(st.st_size), &out, path));
  return out;
}

Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("cannot write", path, errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

Status PreadAll(int fd, uint64_t offset, size_t n, std::string* out, const std::string& path) {
  out->resize(n);
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd, out->data() + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("cannot read", path, errno);
    }
    if (r == 0) return Corruption(path + " is shorter than expected (wanted " + std::to_string(n) + " bytes at offset " + std::to_string(offset) + ")");
    done += static_cast<size_t>(r);
  }
  return Status::Ok();
}

Status FsyncDirectory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("cannot open directory", dir, errno);
  int r = ::fsync(fd);
  int e = errno;
  ::close(fd);
  if (r != 0) return ErrnoError("cannot fsync directory", dir, e);
  return Status::Ok();
}

static Status WriteFile(const std::string& path, std::string_view data, int mode, int flags) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | flags, mode);
  if (fd < 0) {
    if (errno == EEXIST) return Error(ErrorCode::kAlreadyExists, path + " already exists");
    return ErrnoError("cannot create", path, errno);
  }
  Status s = WriteAll(fd, data, path);
  if (s.ok() && ::fsync(fd) != 0) s = ErrnoError("cannot fsync", path, errno);
  ::close(fd);
  if (!s.ok()) {
    ::unlink(path.c_str());
    return s;
  }
  return Status::Ok();
}

Status WriteNewFileDurably(const std::string& path, std::string_view data, int mode) {
  MV_RETURN_IF_ERROR(WriteFile(path, data, mode, O_EXCL));
  return FsyncDirectory(DirName(path));
}

Status ReplaceFileDurably(const std::string& path, std::string_view data, int mode) {
  std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());
  MV_RETURN_IF_ERROR(WriteFile(tmp, data, mode, O_EXCL));
  if (::rename(tmp.c_str(), path.c_str()) != 0) return ErrnoError("cannot rename over", path, errno);
  return FsyncDirectory(DirName(path));
}

Result<FileLock> FileLock::Acquire(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoError("cannot open lock file", path, errno);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return Error(ErrorCode::kBusy, "the vault is in use by another mailvault process (lock " + path +
                                       " is held); stop it or wait for it to finish");
  }
  return FileLock(fd);
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace mailvault
