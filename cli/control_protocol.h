// The control socket's wire format (docs/formats.md, "Control socket"). While `mailvault
// serve` runs it holds the vault; the command line then runs its commands through the service,
// over a Unix socket in the vault's run directory (<vault>/run/control.sock, mode 0600, peer
// credentials checked: root and the service's own user only).
//
//   client → service   one request:  "MVC1" | u32 length (big-endian) | JSON
//                      {"argv": [...], "cwd": "/home/ada", "sudo_user": "ada",
//                       "stderr_tty": false, "stdin": "..."}
//   service → client   frames:       channel byte | u32 length | bytes
//                      '1' stdout, '2' stderr, 'x' the exit status (decimal), last
//
// Limits (named, tested at the edge, fuzzed: fuzz/fuzz_control.cc): the request is
// at most kMaxControlRequestBytes and must arrive within kControlRequestTimeout of connecting;
// a client over either is dropped without holding anything up.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace mailvault::cli {

inline constexpr size_t kMaxControlRequestBytes = 1 << 20;   // argv and stdin together
inline constexpr size_t kMaxControlArgs = 4096;
inline constexpr size_t kMaxControlStdinBytes = 64 << 10;    // a password, a passphrase
inline constexpr auto kControlRequestTimeout = std::chrono::seconds(10);
inline constexpr const char kControlMagic[4] = {'M', 'V', 'C', '1'};

struct ControlRequest {
  std::vector<std::string> argv;  // the command and its arguments, without the global options
  std::string cwd;                // absolute
  std::string sudo_user;
  bool stderr_tty = false;
  std::string stdin_data;
};

// The request's bytes after the 8-byte header (magic and length), checked field by field.
Result<ControlRequest> ParseControlRequest(std::string_view json_bytes);
// The whole request as a client sends it.
std::string EncodeControlRequest(const ControlRequest& r);
// The header's length field, or an error when the magic is wrong or the length over the limit.
Result<uint32_t> ParseControlHeader(std::string_view header8);

std::string EncodeFrame(char channel, std::string_view data);

}  // namespace mailvault::cli
