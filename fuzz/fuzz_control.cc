// libFuzzer target: the control socket's request (cli/control_protocol.h), which a running serve
// reads from any local client that passes the peer-credential check. Every input must give a
// request or an error; a request that parses must come back the same through its encoding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "cli/control_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mailvault::cli;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  if (in.size() >= 8) {
    mailvault::Result<uint32_t> n = ParseControlHeader(in.substr(0, 8));
    if (n.ok() && *n > kMaxControlRequestBytes) std::abort();  // the header's limit holds
  }
  mailvault::Result<ControlRequest> r = ParseControlRequest(in);
  if (!r.ok()) return 0;
  if (r->argv.empty() || r->argv.size() > kMaxControlArgs || r->stdin_data.size() > kMaxControlStdinBytes) std::abort();
  const std::string wire = EncodeControlRequest(*r);
  mailvault::Result<uint32_t> n = ParseControlHeader(std::string_view(wire).substr(0, 8));
  if (!n.ok() || *n != wire.size() - 8) std::abort();
  mailvault::Result<ControlRequest> again = ParseControlRequest(std::string_view(wire).substr(8));
  // Encoding replaces invalid UTF-8, so only valid input must come back byte for byte.
  if (!again.ok() || again->argv.size() != r->argv.size() || again->stderr_tty != r->stderr_tty) std::abort();
  return 0;
}
