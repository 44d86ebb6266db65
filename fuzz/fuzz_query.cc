// libFuzzer target: the search query parser (indexer/query.cc), which reads what people and the
// REST API type. Every input must give a query or an error naming a position; a crash, hang or
// sanitizer report is a bug. Phrases go through a resolver that checks what it is handed.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "indexer/query.h"
#include "indexer/schema.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mailvault::index;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  PhraseResolver resolver = [](const Phrase& p) -> mailvault::Result<Xapian::Query> {
    if (p.words.size() < 2 || p.fields.empty()) std::abort();  // the parser's contract
    for (const std::string& w : p.words) {
      if (w.empty() || w.size() > kMaxWordBytes) std::abort();
    }
    return Xapian::Query("Qphrase");
  };
  mailvault::Result<Xapian::Query> q = ParseQuery(in, 1700000000, resolver);
  if (q.ok()) {
    (void)q->get_description();
  } else if (q.error().message().rfind("query error", 0) != 0 && q.error().message().find("kMaxQueryBytes") == std::string::npos) {
    std::abort();  // every refusal names its position (or the size limit)
  }
  (void)ParseQuery(in, 1700000000);  // without a resolver: phrases as their words
  return 0;
}
