// Restore: the helpers its parts share (the clock, matching keys, content fingerprints).
#include <algorithm>
#include <cctype>
#include <ctime>

#include "core/bytes.h"
#include "core/fingerprint.h"
#include "core/text.h"
#include "recovery/restore_internal.h"

namespace mailvault::recovery::restore_internal {

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

std::string MatchKey(const MessageSummary& s) {
  const std::string date = s.date ? std::to_string(*s.date) : "-";
  if (!s.message_id_synthetic) return s.message_id + " " + date;
  return "(none) " + date + " " + NormalizeAddress(s.from) + " " + s.subject;
}

std::string UpperAscii(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return s;
}

std::optional<std::set<std::string>> ContentHashesOf(std::string_view raw) {
  ParseOptions po;
  po.content_hashes = true;
  MessageLimits limits;
  limits.max_message_bytes += limits.max_message_bytes / 10;
  Result<ParsedMessage> p = ParseMessage(raw, limits, po);
  if (!p.ok()) return std::nullopt;
  return p->ContentHashes();
}

std::string BodyDigest(std::string_view raw) {
  size_t lf = raw.find("\n\n"), crlf = raw.find("\r\n\r\n");
  size_t start = std::min(lf == std::string_view::npos ? raw.size() : lf + 2, crlf == std::string_view::npos ? raw.size() : crlf + 4);
  std::string body;
  body.reserve(raw.size() - start);
  for (size_t i = start; i < raw.size(); ++i) {
    if (raw[i] == '\r') {
      if (i + 1 < raw.size() && raw[i + 1] == '\n') continue;
      body.push_back('\n');
      continue;
    }
    body.push_back(raw[i]);
  }
  return HexEncode(Sha256Of(body));
}

}  // namespace mailvault::recovery::restore_internal
