// libFuzzer target: the pack reader (header, record framing, every record body decoder) and the
// envelope decoder: the parsers that read packs fetched back from offsite storage.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/envelope.h"
#include "vault/catalog.h"
#include "vault/pack.h"

static const mailvault::SecretKey kKey(std::string(32, 'k'));

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  uint32_t version = 0;
  (void)mailvault::DecodePackHeader(in, &version);
  for (uint64_t start : {uint64_t{0}, uint64_t{mailvault::kPackHeaderSize}}) {
    if (start > in.size()) continue;
    mailvault::RecordScanner scanner(in, start);
    mailvault::RawRecord rec;
    // As replay and verify walk a pack: past damage to the next valid frame, to the end.
    for (;;) {
      while (scanner.Next(&rec)) {
        switch (rec.type) {
          case mailvault::RecordType::kMessage: (void)mailvault::DecodeMessageBody(rec.body); break;
          case mailvault::RecordType::kEnvelope: (void)mailvault::DecodeEnvelopeBody(rec.body); break;
          case mailvault::RecordType::kDictionary: (void)mailvault::DecodeDictionaryBody(rec.body); break;
          case mailvault::RecordType::kSeal: (void)mailvault::DecodeSealBody(rec.body); break;
          case mailvault::RecordType::kPurge: (void)mailvault::DecodePurgeBody(rec.body); break;
          case mailvault::RecordType::kTombstone: (void)mailvault::DecodeTombstoneBody(rec.body); break;
        }
        if (rec.keyed) (void)mailvault::CheckRecordMac(rec, kKey, "0123456789abcdef", 1);
      }
      if (scanner.at_end()) break;
      (void)scanner.torn();
      (void)scanner.Skip();  // always moves forward
    }
  }
  (void)mailvault::Envelope::Decode(in);
  (void)mailvault::DecodeMessageMeta(in);
  return 0;
}
