// libFuzzer target: the IMAP response reader (recovery/imap_response.h), which reads what the
// primary mail server sends during a restore. Every input must give responses or an error; the
// responses must not depend on how the bytes were cut (the first byte picks the piece size).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "recovery/imap_response.h"

namespace {

// Every response as text, until the first error ("E") or the end.
std::string Run(std::string_view in, size_t piece) {
  using namespace mailvault::recovery;
  ImapLimits limits;
  limits.max_line_bytes = 4096;
  limits.max_literal_bytes = 65536;
  limits.max_response_bytes = 1 << 17;  // two literals at their limit do not fit
  ImapResponseReader r(limits);
  std::string out;
  for (size_t i = 0; i < in.size(); i += piece) {
    r.Feed(in.substr(i, piece));
    for (;;) {
      mailvault::Result<std::optional<ImapResponse>> n = r.Next();
      if (!n.ok()) return out + "E";
      if (!*n) break;
      out += std::to_string(static_cast<int>((*n)->kind)) + (*n)->tag + "|" + (*n)->status + "|" + (*n)->code + "|" +
             (*n)->text + "|" + std::to_string((*n)->tokens.size()) + ";";
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  size_t piece = 1 + data[0] % 64;
  std::string whole = Run(in, in.size() + 1);
  std::string cut = Run(in, piece);
  // An error may come earlier when cut (a limit seen before more bytes arrive) but never
  // different responses before it.
  if (whole != cut && !(cut.size() && cut.back() == 'E' && whole.compare(0, cut.size() - 1, cut, 0, cut.size() - 1) == 0) &&
      !(whole.size() && whole.back() == 'E' && cut.compare(0, whole.size() - 1, whole, 0, whole.size() - 1) == 0)) {
    std::abort();
  }
  return 0;
}
