#include "vault/block_codec.h"

#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_c_format, magicless frames
#include <zstd.h>

namespace mailvault {

// Dictionary's prepared forms live in Dictionary (compressor.cc); reach them through these.
void* DictionaryCDict(const Dictionary* d);
void* DictionaryDDict(const Dictionary* d);

BlockEncoder::BlockEncoder(int level) : level_(level), cctx_(ZSTD_createCCtx()) {}
BlockEncoder::~BlockEncoder() { ZSTD_freeCCtx(static_cast<ZSTD_CCtx*>(cctx_)); }

void BlockEncoder::Begin(const Dictionary* dict) {
  auto* c = static_cast<ZSTD_CCtx*>(cctx_);
  ZSTD_CCtx_reset(c, ZSTD_reset_session_and_parameters);
  ZSTD_CCtx_setParameter(c, ZSTD_c_format, ZSTD_f_zstd1_magicless);
  ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 0);
  ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 0);
  ZSTD_CCtx_setParameter(c, ZSTD_c_dictIDFlag, 0);
  ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level_);
  ZSTD_CCtx_refCDict(c, dict ? static_cast<ZSTD_CDict*>(DictionaryCDict(dict)) : nullptr);
  input_bytes_ = 0;
  messages_ = 0;
}

Status BlockEncoder::Add(std::string_view input, std::string* segment) {
  auto* c = static_cast<ZSTD_CCtx*>(cctx_);
  ZSTD_inBuffer in{input.data(), input.size(), 0};
  size_t start = segment->size();
  for (;;) {
    size_t room = ZSTD_compressBound(input.size() - in.pos) + 64;
    segment->resize(segment->size() + room);
    ZSTD_outBuffer out{segment->data() + start, segment->size() - start, 0};
    size_t left = ZSTD_compressStream2(c, &out, &in, ZSTD_e_flush);
    if (ZSTD_isError(left)) {
      segment->resize(start);
      return Internal(std::string("zstd compression failed: ") + ZSTD_getErrorName(left));
    }
    segment->resize(start + out.pos);
    start = segment->size();
    if (left == 0 && in.pos == in.size) break;
  }
  input_bytes_ += input.size();
  ++messages_;
  return Status::Ok();
}

BlockDecoder::BlockDecoder() : dctx_(ZSTD_createDCtx()) {}
BlockDecoder::~BlockDecoder() { ZSTD_freeDCtx(static_cast<ZSTD_DCtx*>(dctx_)); }

void BlockDecoder::Begin(const Dictionary* dict) {
  auto* d = static_cast<ZSTD_DCtx*>(dctx_);
  ZSTD_DCtx_reset(d, ZSTD_reset_session_and_parameters);
  ZSTD_DCtx_setParameter(d, ZSTD_d_format, ZSTD_f_zstd1_magicless);
  // Our frames carry no content size; allow the window a 150 MB message may need.
  ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, 28);
  ZSTD_DCtx_refDDict(d, dict ? static_cast<ZSTD_DDict*>(DictionaryDDict(dict)) : nullptr);
}

Status BlockDecoder::Next(std::string_view segment, size_t expected, std::string* out) {
  auto* d = static_cast<ZSTD_DCtx*>(dctx_);
  size_t start = out->size();
  // One spare byte: output beyond `expected` means the segment is not what the record claims.
  out->resize(start + expected + 1);
  ZSTD_inBuffer in{segment.data(), segment.size(), 0};
  ZSTD_outBuffer o{out->data() + start, expected + 1, 0};
  for (int stalls = 0; stalls < 2;) {
    size_t before_in = in.pos, before_out = o.pos;
    size_t r = ZSTD_decompressStream(d, &o, &in);
    if (ZSTD_isError(r)) {
      out->resize(start);
      return Corruption(std::string("decompression failed: ") + ZSTD_getErrorName(r));
    }
    if (in.pos == in.size && o.pos >= expected) break;
    if (in.pos == before_in && o.pos == before_out) ++stalls;
  }
  if (o.pos != expected || in.pos != in.size) {
    out->resize(start);
    return Corruption("decompressed size differs from the record's (" + std::to_string(o.pos) + " vs " +
                      std::to_string(expected) + ")");
  }
  out->resize(start + expected);
  return Status::Ok();
}

}  // namespace mailvault
