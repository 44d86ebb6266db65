// The few S3 XML answers replication reads (ListObjectsV2, ListObjectVersions, ListParts,
// InitiateMultipartUpload, versioning, object lock, errors), taken apart without an XML
// library: S3's answers are flat, generated documents, and we read a handful of leaf elements.
// The input is a server's bytes: bounded by kMaxS3ResponseBytes, never trusted (fuzz_s3_xml).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace mailvault::replication {

// A larger answer is refused (a listing page of 1,000 keys is about 300 KiB).
inline constexpr size_t kMaxS3ResponseBytes = 8u << 20;
// At most this many elements are taken from one answer (S3 pages hold at most 1,000).
inline constexpr size_t kMaxS3Elements = 10000;

// The inner text of every <tag>…</tag> (or <tag attr…>…</tag>) in document order, not nested.
std::vector<std::string_view> XmlElements(std::string_view xml, std::string_view tag);
// The first one's inner text, entities decoded; nullopt when there is none.
std::optional<std::string> XmlText(std::string_view xml, std::string_view tag);
// &amp; &lt; &gt; &quot; &apos; and numeric references; anything else is kept as it is.
std::string XmlUnescape(std::string_view s);

struct S3ErrorBody {
  std::string code;     // "NoSuchKey", "RequestTimeTooSkewed", … ("" when the body is not an S3 error)
  std::string message;
};
S3ErrorBody ParseS3Error(std::string_view body);

struct S3ListPage {
  struct Item {
    std::string key;
    uint64_t size = 0;
    std::string version_id;   // ListObjectVersions only
    bool delete_marker = false;
  };
  std::vector<Item> items;
  bool truncated = false;
  std::string next_token;        // ListObjectsV2: NextContinuationToken
  std::string next_key_marker;   // ListObjectVersions
  std::string next_version_marker;
};
Result<S3ListPage> ParseListObjects(std::string_view body);
Result<S3ListPage> ParseListVersions(std::string_view body);

struct S3Part {
  int number = 0;
  std::string etag;  // without quotes, lower case
  uint64_t size = 0;
};
struct S3PartsPage {
  std::vector<S3Part> parts;
  bool truncated = false;
  int next_marker = 0;
};
Result<S3PartsPage> ParseListParts(std::string_view body);

// Object lock's default retention, in seconds (0 when there is none).
int64_t ParseObjectLockSeconds(std::string_view body);

}  // namespace mailvault::replication
