// zstd dictionaries trained from the vault's own mail (BLUEPRINT decision 6). The compression
// itself is in block_codec.h. Measurements: docs/compression.md.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace mailvault {

// Defaults chosen by measurement on the SpamAssassin corpus (docs/compression.md): level 6 with
// 128 KiB blocks and a 256 KiB dictionary stores 0.29 of the raw bytes at 12,000+ messages/s.
struct CompressionSettings {
  int level = 6;
  size_t dictionary_bytes = 256 << 10;
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
  friend void* DictionaryCDict(const Dictionary* d);
  friend void* DictionaryDDict(const Dictionary* d);
  Dictionary(uint32_t id, std::string bytes) : id_(id), bytes_(std::move(bytes)) {}
  uint32_t id_;
  std::string bytes_;
  void* cdict_ = nullptr;
  void* ddict_ = nullptr;
};

}  // namespace mailvault
