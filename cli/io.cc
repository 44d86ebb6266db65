#include "cli/io.h"

#include <cstdio>
#include <iostream>
#include <vector>

namespace mailvault::cli {
namespace {
thread_local const ClientIo* tl_client = nullptr;
}  // namespace

const ClientIo* Client() { return tl_client; }
void SetClient(const ClientIo* client) { tl_client = client; }

std::ostream& Out() { return tl_client ? *tl_client->out : std::cout; }
std::ostream& Err() { return tl_client ? *tl_client->err : std::cerr; }
std::istream& In() { return tl_client ? *tl_client->in : std::cin; }

void ErrPrintf(const char* format, ...) {
  va_list args;
  va_start(args, format);
  va_list copy;
  va_copy(copy, args);
  int n = std::vsnprintf(nullptr, 0, format, copy);
  va_end(copy);
  if (n > 0) {
    std::vector<char> buf(static_cast<size_t>(n) + 1);
    std::vsnprintf(buf.data(), buf.size(), format, args);
    Err().write(buf.data(), n);
    Err().flush();
  }
  va_end(args);
}

std::string UserPath(const std::string& path) {
  if (!tl_client || path.empty() || path.front() == '/' || tl_client->cwd.empty()) return path;
  return tl_client->cwd + "/" + path;
}

}  // namespace mailvault::cli
