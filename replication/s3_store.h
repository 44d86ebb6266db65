// An S3-compatible bucket as an ObjectStore (object_store.h): path-style requests signed with
// AWS Signature Version 4, every request carrying x-amz-content-sha256 (Ceph's RADOS Gateway
// refuses a request without it; curl's own --aws-sigv4 leaves it out, so we sign ourselves, with
// OpenSSL, and use libcurl for HTTP and TLS only). docs/replication.md "S3".
//
// Large objects go up in parts (multipart upload). The upload id and the size of its parts are
// remembered in a small file under S3Config::upload_state_dir, so an upload a crash or a dropped
// link interrupted resumes: the parts the server already holds, with the MD5 (ETag) of our
// bytes, are not sent again.
#pragma once

#include <memory>
#include <string>

#include "core/result.h"
#include "replication/object_store.h"

namespace mailvault::replication {

struct S3Credentials {
  std::string access_key_id;
  std::string secret_access_key;
};

struct S3Config {
  bool tls = true;     // https; plain http only to a loopback address (no-tls = yes)
  std::string host;    // a name, an IPv4 address or a bracketed IPv6 address
  int port = 443;
  std::string bucket;
  std::string region = "us-east-1";
  S3Credentials credentials;
  std::string ca_file;          // optional: the CA that signed the server's certificate
  bool create_bucket = true;    // Prepare(create) may create a missing bucket
  TransferOptions transfer;
  uint64_t multipart_threshold = 64ull << 20;  // objects at least this large go up in parts
  uint64_t part_size = 8ull << 20;             // S3 refuses parts under 5 MiB (but the last)
  std::string upload_state_dir;                // where unfinished uploads are remembered ("" = not)
};

// "s3://HOST:PORT/BUCKET" (the port optional; path-style, so the bucket is the path). no_tls
// chooses http, which is refused unless the host is a loopback address.
Result<S3Config> ParseS3Url(const std::string& url, bool no_tls);
// The credentials file: one line "ACCESS_KEY_ID SECRET", the file mode 0600 (refused when the
// group or others may read it).
Result<S3Credentials> ReadS3Credentials(const std::string& path);

std::unique_ptr<ObjectStore> MakeS3Store(S3Config config);

// Signature Version 4, exposed for the fixture test against AWS's published example.
struct SigV4Request {
  std::string method;
  std::string canonical_uri;    // already URI-encoded: "/bucket/key"
  std::string canonical_query;  // already sorted and encoded: "a=1&b="
  std::string host_header;      // "127.0.0.1:7480"
  std::string payload_sha256;   // hex
  std::string amz_date;         // "20130524T000000Z"
  std::string region;
  std::string extra_signed_headers;  // canonical lines ("range:bytes=0-9\n"), sorted, lower-case names
  std::string extra_signed_names;    // ";range"-style, in the same order
};
// The Authorization header's value.
std::string SignV4(const SigV4Request& r, const S3Credentials& c);
// RFC 3986 encoding as SigV4 wants it ('/' kept when keep_slash).
std::string UriEncode(std::string_view s, bool keep_slash);

}  // namespace mailvault::replication
