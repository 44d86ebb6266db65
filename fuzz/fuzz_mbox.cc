// libFuzzer target: mbox splitting and the mail sniffing of the importer, with a round-trip
// property: every message that ends in a newline survives export (mboxrd) and re-import.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "capture/mail_source.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  (void)mailvault::CheckLooksLikeMail(in);
  std::vector<std::string> messages;
  mailvault::SplitMbox(in, [&](size_t, std::string m) { messages.push_back(std::move(m)); });
  for (const std::string& m : messages) {
    if (m.empty() || m.back() != '\n') continue;
    std::string box;
    mailvault::AppendMboxMessage(m, 0, &box);
    std::vector<std::string> back;
    mailvault::SplitMbox(box, [&](size_t, std::string x) { back.push_back(std::move(x)); });
    if (back.size() != 1 || back[0] != m) std::abort();
  }
  return 0;
}
