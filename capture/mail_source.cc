#include "capture/mail_source.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>

#include "core/file_util.h"

namespace mailvault {
namespace {

bool IsDir(const std::string& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool IsMaildir(const std::string& p) { return IsDir(p + "/cur") && IsDir(p + "/new"); }

std::vector<std::string> SortedEntries(const std::string& dir, int* err, bool hidden = false) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    *err = errno;
    return out;
  }
  while (dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n == "." || n == ".." || (!hidden && n[0] == '.')) continue;
    out.emplace_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  *err = 0;
  return out;
}

SourceKind SniffKind(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  char buf[5] = {0};
  size_t n = f ? std::fread(buf, 1, 5, f) : 0;
  if (f) std::fclose(f);
  return n == 5 && std::string_view(buf, 5) == "From " ? SourceKind::kMbox : SourceKind::kEml;
}

void Walk(const std::string& path, std::vector<SourceFile>* out,
          const std::function<void(const std::string&, const Error&)>& on_error, int depth) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    on_error(path, errno == ENOENT ? NotFound("no such file or directory") : ErrnoError("cannot read", path, errno));
    return;
  }
  if (S_ISLNK(st.st_mode)) return;  // not followed: a loop or an escape from the tree
  if (S_ISREG(st.st_mode)) {
    out->push_back({path, SniffKind(path), static_cast<uint64_t>(st.st_size)});
    return;
  }
  if (!S_ISDIR(st.st_mode)) return;
  if (depth > 64) {
    on_error(path, LimitExceeded("directory tree deeper than 64 levels; not descended"));
    return;
  }
  if (IsMaildir(path)) {
    for (const char* sub : {"/cur", "/new"}) {
      int err;
      for (const std::string& name : SortedEntries(path + sub, &err)) {
        std::string f = path + sub + "/" + name;
        struct stat fs;
        if (::lstat(f.c_str(), &fs) == 0 && S_ISREG(fs.st_mode)) {
          out->push_back({f, SourceKind::kMaildirFile, static_cast<uint64_t>(fs.st_size)});
        }
      }
    }
    // Maildir++ subfolders (.Sent, .Archive) sit beside cur/new as hidden directories.
    int err;
    std::vector<std::string> subs;
    for (const std::string& n : SortedEntries(path, &err, true)) {
      if (n[0] == '.' && IsMaildir(path + "/" + n)) subs.push_back(n);
    }
    for (const std::string& s : subs) Walk(path + "/" + s, out, on_error, depth + 1);
    return;
  }
  int err;
  std::vector<std::string> entries = SortedEntries(path, &err);
  if (err) {
    on_error(path, ErrnoError("cannot list", path, err));
    return;
  }
  for (const std::string& name : entries) {
    if (name == "tmp" && IsMaildir(path)) continue;
    Walk(path + "/" + name, out, on_error, depth + 1);
  }
}

}  // namespace

std::vector<SourceFile> FindSourceFiles(const std::vector<std::string>& paths,
                                        const std::function<void(const std::string&, const Error&)>& on_error) {
  std::vector<SourceFile> out;
  for (const std::string& p : paths) Walk(p, &out, on_error, 0);
  return out;
}

Status CheckLooksLikeMail(std::string_view bytes) {
  if (bytes.empty()) return MalformedInput("the file is empty (0 bytes)");
  size_t probe = std::min<size_t>(bytes.size(), 4096);
  if (std::string_view(bytes.data(), probe).find('\0') != std::string_view::npos) {
    return MalformedInput("the file holds binary data (NUL bytes in its first 4 KB), not a mail message");
  }
  // The first line must be a header field: a name of printable characters, then ':'.
  size_t i = 0;
  while (i < bytes.size() && bytes[i] != ':' && bytes[i] != '\n') {
    unsigned char c = static_cast<unsigned char>(bytes[i]);
    if (c <= 32 || c >= 127) break;
    ++i;
  }
  if (i == 0 || i >= bytes.size() || bytes[i] != ':') {
    return MalformedInput("not an RFC 5322 message: the first line is not a header field (\"Name: value\")");
  }
  return Status::Ok();
}

void SplitMbox(std::string_view c, const std::function<void(size_t, std::string)>& fn) {
  size_t index = 0;
  size_t pos = 0;
  // Skip to the first "From " line.
  if (c.rfind("From ", 0) != 0) {
    size_t f = c.find("\nFrom ");
    if (f == std::string_view::npos) return;
    pos = f + 1;
  }
  while (pos < c.size()) {
    size_t body = c.find('\n', pos);
    if (body == std::string_view::npos) return;  // a "From " line and nothing else
    ++body;
    // The next separator: "\n\nFrom " (an empty line, then "From ").
    size_t next = body;
    size_t end;
    for (;;) {
      size_t f = c.find("\nFrom ", next);
      if (f == std::string_view::npos) {
        end = c.size();
        next = c.size();
        break;
      }
      if (f > body && c[f - 1] == '\n') {
        end = f;  // keeps the message's own final "\n"; drops the separator line
        next = f + 1;
        break;
      }
      next = f + 1;
    }
    std::string_view m = c.substr(body, end - body);
    if (end == c.size() && m.size() >= 2 && m.substr(m.size() - 2) == "\n\n") m.remove_suffix(1);
    // mboxrd: a line of '>'* "From " was escaped with one more '>'.
    std::string out;
    out.reserve(m.size());
    size_t lp = 0;
    while (lp < m.size()) {
      size_t eol = m.find('\n', lp);
      size_t le = eol == std::string_view::npos ? m.size() : eol + 1;
      std::string_view line = m.substr(lp, le - lp);
      size_t gt = 0;
      while (gt < line.size() && line[gt] == '>') ++gt;
      if (gt > 0 && line.substr(gt).rfind("From ", 0) == 0) line.remove_prefix(1);
      out.append(line);
      lp = le;
    }
    fn(++index, std::move(out));
    pos = next;
  }
}

void AppendMboxMessage(std::string_view message, int64_t date, std::string* out) {
  char when[64] = "Thu Jan  1 00:00:00 1970";
  time_t t = static_cast<time_t>(date);
  struct tm tm;
  if (gmtime_r(&t, &tm)) std::strftime(when, sizeof when, "%a %b %e %H:%M:%S %Y", &tm);
  out->append("From MAILER-DAEMON ").append(when).append("\n");
  size_t lp = 0;
  while (lp < message.size()) {
    size_t eol = message.find('\n', lp);
    size_t le = eol == std::string_view::npos ? message.size() : eol + 1;
    std::string_view line = message.substr(lp, le - lp);
    size_t gt = 0;
    while (gt < line.size() && line[gt] == '>') ++gt;
    if (line.substr(gt).rfind("From ", 0) == 0) out->push_back('>');
    out->append(line);
    lp = le;
  }
  if (message.empty() || message.back() != '\n') out->push_back('\n');
  out->push_back('\n');
}

Status ReadSourceFile(const SourceFile& file, uint64_t max_file_bytes, const std::function<void(SourceMessage)>& fn) {
  if (file.kind != SourceKind::kMbox && file.size > max_file_bytes) {
    return LimitExceeded("the file is " + std::to_string(file.size) + " bytes, over the message size limit of " +
                         std::to_string(max_file_bytes) + " bytes (limits.max_message_bytes)");
  }
  if (file.kind != SourceKind::kMbox) {
    MV_ASSIGN_OR_RETURN(std::string contents, ReadSmallFile(file.path, max_file_bytes));
    fn(SourceMessage{file.path, std::move(contents)});
    return Status::Ok();
  }
  // An mbox may be many gigabytes: map it rather than read it, so memory holds only the pages
  // being split (the kernel drops them again behind us).
  int fd = ::open(file.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("cannot open", file.path, errno);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    return ErrnoError("cannot stat", file.path, e);
  }
  size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return MalformedInput("the file is empty (0 bytes)");
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int e = errno;
  ::close(fd);
  if (map == MAP_FAILED) return ErrnoError("cannot map", file.path, e);
  ::madvise(map, size, MADV_SEQUENTIAL);
  SplitMbox(std::string_view(static_cast<const char*>(map), size), [&](size_t index, std::string m) {
    fn(SourceMessage{file.path + "#" + std::to_string(index), std::move(m)});
  });
  ::munmap(map, size);
  return Status::Ok();
}

}  // namespace mailvault
