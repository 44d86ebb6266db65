// Named limits on hostile input. Each is checked where outside bytes are parsed and reported as
// ErrorCode::kLimitExceeded with the limit's name, so an administrator can find it in
// docs/limits.md and in the config file.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mailvault {

// The most a configuration may raise max_message_bytes to.
constexpr uint64_t kMaxMessageBytesCeiling = 1ull << 30;

struct MessageLimits {
  // Largest message the vault accepts. Exchange Online's ceiling is 150 MB; larger is not mail.
  uint64_t max_message_bytes = 150ull << 20;
  // Dovecot's limits: at most 100 nested MIME levels and 10,000 parts in one message.
  int max_mime_depth = 100;
  int max_mime_parts = 10000;
  // Header bytes of any one entity (the top-level header block or a part's headers).
  uint64_t max_header_bytes = 8ull << 20;
};

}  // namespace mailvault
