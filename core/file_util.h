// POSIX file helpers with the durability rules the vault depends on: a file that must survive a
// crash is fsync'd, and so is the directory entry that names it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/result.h"

namespace mailvault {

// Reads a whole file, refusing one larger than max_bytes.
Result<std::string> ReadSmallFile(const std::string& path, uint64_t max_bytes);
// Reads a file that holds secrets (a key file, passwords). Opens it once (O_NONBLOCK, so a FIFO
// cannot hang us), fstat()s that descriptor, and refuses, before reading a byte, anything but a
// regular file and any mode that gives the group or others access; then reads from the same
// descriptor, so what was checked is what is read. A symbolic link is followed: its own mode
// means nothing, and the file it names (the descriptor) is what is checked. Errors:
// kNotFound (missing), kInvalidArgument (not a regular file; group/other access, with the
// `chmod 600` to run), kLimitExceeded (larger than max_bytes), kIoError.
Result<std::string> ReadPrivateFile(const std::string& path, uint64_t max_bytes);
// Creates path (failing if it exists) with the given mode, writes data, fsyncs file and directory.
Status WriteNewFileDurably(const std::string& path, std::string_view data, int mode);
// Replaces path atomically (write to a temporary, fsync, rename, fsync the directory).
Status ReplaceFileDurably(const std::string& path, std::string_view data, int mode);
Status FsyncDirectory(const std::string& dir);
Status WriteAll(int fd, std::string_view data, const std::string& path_for_errors);
Status PreadAll(int fd, uint64_t offset, size_t n, std::string* out, const std::string& path_for_errors);
std::string DirName(const std::string& path);

// An exclusive advisory lock (flock) on a file, held for the object's lifetime.
class FileLock {
 public:
  static Result<FileLock> Acquire(const std::string& path);
  FileLock(FileLock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  FileLock& operator=(FileLock&&) = delete;
  ~FileLock();

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace mailvault
