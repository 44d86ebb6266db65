// Compression blocks: consecutive messages compressed as one zstd stream, flushed after each
// message. Each message's flushed segment is then encrypted on its own, under its own data key,
// while later messages in the block still use the earlier ones as history. Neighbouring mail
// shares a great deal (headers, signatures, quoted text), so this compresses far better than
// message by message (docs/compression.md), and reading one message costs decoding at most one
// block (kBlockInputBytes).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "core/result.h"
#include "vault/compressor.h"

namespace mailvault {

// A block is closed once it has taken in this much input; a larger message is a block alone.
constexpr size_t kBlockInputBytes = 128 << 10;

class BlockEncoder {
 public:
  explicit BlockEncoder(int level);
  ~BlockEncoder();
  BlockEncoder(const BlockEncoder&) = delete;
  BlockEncoder& operator=(const BlockEncoder&) = delete;

  // Starts a new block (a new zstd frame) with the given dictionary, or none.
  void Begin(const Dictionary* dict);
  // Compresses input and flushes: *segment receives what decodes to exactly this input, given
  // the block's earlier segments.
  Status Add(std::string_view input, std::string* segment);
  size_t input_bytes() const { return input_bytes_; }
  size_t messages() const { return messages_; }

 private:
  int level_;
  void* cctx_;
  size_t input_bytes_ = 0;
  size_t messages_ = 0;
};

class BlockDecoder {
 public:
  BlockDecoder();
  ~BlockDecoder();
  BlockDecoder(const BlockDecoder&) = delete;
  BlockDecoder& operator=(const BlockDecoder&) = delete;

  void Begin(const Dictionary* dict);
  // Decodes the next segment, which must produce exactly expected_bytes.
  Status Next(std::string_view segment, size_t expected_bytes, std::string* out);

 private:
  void* dctx_;
};

}  // namespace mailvault
