#include "vault/compressor.h"

#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_c_format, magicless frames
#define ZDICT_STATIC_LINKING_ONLY  // fastCover training
#include <zdict.h>
#include <zstd.h>

namespace mailvault {

void* DictionaryCDict(const Dictionary* d) { return d->cdict_; }
void* DictionaryDDict(const Dictionary* d) { return d->ddict_; }

Dictionary::~Dictionary() {
  ZSTD_freeCDict(static_cast<ZSTD_CDict*>(cdict_));
  ZSTD_freeDDict(static_cast<ZSTD_DDict*>(ddict_));
}

Result<std::shared_ptr<const Dictionary>> Dictionary::Load(uint32_t id, std::string bytes, int level) {
  std::shared_ptr<Dictionary> d(new Dictionary(id, std::move(bytes)));
  d->cdict_ = ZSTD_createCDict(d->bytes_.data(), d->bytes_.size(), level);
  d->ddict_ = ZSTD_createDDict(d->bytes_.data(), d->bytes_.size());
  if (!d->cdict_ || !d->ddict_) return Corruption("compression dictionary " + std::to_string(id) + " cannot be loaded");
  return std::shared_ptr<const Dictionary>(std::move(d));
}

Result<std::string> Dictionary::Train(const std::vector<std::string_view>& samples, size_t dictionary_bytes) {
  std::string joined;
  std::vector<size_t> sizes;
  for (std::string_view s : samples) {
    joined.append(s);
    sizes.push_back(s.size());
  }
  std::string dict(dictionary_bytes, '\0');
  // fastCover with fixed parameters: seconds faster than a parameter search, within a percent
  // of its ratio on mail (docs/compression.md).
  ZDICT_fastCover_params_t p{};
  p.k = 1024;
  p.d = 8;
  p.f = 20;
  p.steps = 0;
  p.nbThreads = 1;
  p.accel = 2;
  p.zParams.compressionLevel = 3;
  size_t n = ZDICT_trainFromBuffer_fastCover(dict.data(), dict.size(), joined.data(), sizes.data(),
                                             static_cast<unsigned>(sizes.size()), p);
  if (ZDICT_isError(n)) {
    return InvalidArgument(std::string("cannot train a compression dictionary: ") + ZDICT_getErrorName(n));
  }
  dict.resize(n);
  return dict;
}

}  // namespace mailvault
