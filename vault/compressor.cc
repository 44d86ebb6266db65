#include "vault/compressor.h"

#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_c_format, magicless frames
#define ZDICT_STATIC_LINKING_ONLY  // fastCover training
#include <zdict.h>
#include <zstd.h>

namespace mailvault {

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

Compressor::Compressor(int level) : level_(level), cctx_(ZSTD_createCCtx()), dctx_(ZSTD_createDCtx()) {
  auto* c = static_cast<ZSTD_CCtx*>(cctx_);
  ZSTD_CCtx_setParameter(c, ZSTD_c_format, ZSTD_f_zstd1_magicless);
  ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 0);
  ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 0);
  ZSTD_CCtx_setParameter(c, ZSTD_c_dictIDFlag, 0);
  ZSTD_DCtx_setParameter(static_cast<ZSTD_DCtx*>(dctx_), ZSTD_d_format, ZSTD_f_zstd1_magicless);
}

Compressor::~Compressor() {
  ZSTD_freeCCtx(static_cast<ZSTD_CCtx*>(cctx_));
  ZSTD_freeDCtx(static_cast<ZSTD_DCtx*>(dctx_));
}

Status Compressor::Compress(std::string_view in, const Dictionary* dict, std::string* out) {
  auto* c = static_cast<ZSTD_CCtx*>(cctx_);
  if (dict) {
    ZSTD_CCtx_refCDict(c, static_cast<ZSTD_CDict*>(dict->cdict_));
  } else {
    ZSTD_CCtx_refCDict(c, nullptr);
    ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level_);
  }
  size_t start = out->size();
  out->resize(start + ZSTD_compressBound(in.size()));
  size_t n = ZSTD_compress2(c, out->data() + start, out->size() - start, in.data(), in.size());
  if (ZSTD_isError(n)) return Internal(std::string("zstd compression failed: ") + ZSTD_getErrorName(n));
  out->resize(start + n);
  return Status::Ok();
}

Status Compressor::Decompress(std::string_view in, uint64_t raw_size, const Dictionary* dict, std::string* out) {
  auto* d = static_cast<ZSTD_DCtx*>(dctx_);
  ZSTD_DCtx_refDDict(d, dict ? static_cast<ZSTD_DDict*>(dict->ddict_) : nullptr);
  size_t start = out->size();
  out->resize(start + raw_size);
  size_t n = ZSTD_decompressDCtx(d, out->data() + start, raw_size, in.data(), in.size());
  if (ZSTD_isError(n) || n != raw_size) {
    out->resize(start);
    return Corruption(std::string("decompression failed: ") + (ZSTD_isError(n) ? ZSTD_getErrorName(n) : "size mismatch"));
  }
  return Status::Ok();
}

}  // namespace mailvault
