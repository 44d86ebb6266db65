// libFuzzer target: the message parser and everything else in core/ that reads a message's
// bytes. Any crash, hang, leak or sanitizer report is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/message.h"
#include "core/message_id.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  mailvault::InitMessageParsing();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  mailvault::MessageLimits limits;
  (void)mailvault::ScanMimeShape(in, limits);
  (void)mailvault::SummarizeHeaders(in);
  mailvault::ParseOptions options;
  options.collect_text = (size & 1) != 0;
  mailvault::Result<mailvault::ParsedMessage> m = mailvault::ParseMessage(in, limits, options);
  if (m.ok()) {
    (void)m->HeaderKey();
    (void)m->ContentHashes();
  }
  (void)mailvault::NormalizeMessageId(in.substr(0, 4096));
  (void)mailvault::ParseMessageIdList(in.substr(0, 4096));
  return 0;
}
