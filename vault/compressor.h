// zstd compression, one message at a time so any message can be read without its neighbours
// (BLUEPRINT decision 6), with dictionaries trained from the vault's own mail.
//
// Frames are written in zstd's magicless format without the content size, checksum or
// dictionary id: the record around them already stores the raw size, the dictionary id and an
// authentication tag, and on 5 KB messages those bytes add up. Measurements: docs/compression.md.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace mailvault {

struct CompressionSettings {
  int level = 3;
  size_t dictionary_bytes = 112 << 10;
};

// A trained dictionary, prepared for both directions. Immutable and shareable across threads.
class Dictionary {
 public:
  ~Dictionary();
  Dictionary(const Dictionary&) = delete;
  Dictionary& operator=(const Dictionary&) = delete;

  static Result<std::shared_ptr<const Dictionary>> Load(uint32_t id, std::string bytes, int level);
  // Trains on the given samples (whole messages). Fails when there is too little to learn from.
  static Result<std::string> Train(const std::vector<std::string_view>& samples, size_t dictionary_bytes);

  uint32_t id() const { return id_; }
  const std::string& bytes() const { return bytes_; }

 private:
  friend class Compressor;
  Dictionary(uint32_t id, std::string bytes) : id_(id), bytes_(std::move(bytes)) {}
  uint32_t id_;
  std::string bytes_;
  void* cdict_ = nullptr;
  void* ddict_ = nullptr;
};

// One per thread: holds zstd's contexts, which are expensive to create.
class Compressor {
 public:
  explicit Compressor(int level);
  ~Compressor();
  Compressor(const Compressor&) = delete;
  Compressor& operator=(const Compressor&) = delete;

  // Appends the compressed form of in to *out.
  Status Compress(std::string_view in, const Dictionary* dict, std::string* out);
  // raw_size must be the exact original size (it is stored in the record).
  Status Decompress(std::string_view in, uint64_t raw_size, const Dictionary* dict, std::string* out);

 private:
  int level_;
  void* cctx_;
  void* dctx_;
};

}  // namespace mailvault
