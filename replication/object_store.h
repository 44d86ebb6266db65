// The offsite side, as replication sees it: a flat namespace of named, immutable objects
// ("packs/00000001-0.pack", "manifests/0000000000000007"). Two kinds of target implement it:
// an S3-compatible bucket (s3_store.h: libcurl + SigV4) and a directory reached over SFTP
// (sftp_store.h: libssh). Everything above this interface (what to ship, manifests, verify,
// disaster recovery) is the same for both.
//
// Contract for every implementation:
// - A put is atomic: a reader sees the old object, or all of the new one, never a part (S3:
//   one PUT or a completed multipart upload; SFTP: a temporary name renamed over the final one).
// - A put returns once the target acknowledged the whole object (S3: 200 to the PUT or the
//   CompleteMultipartUpload; SFTP: fsync@openssh.com where the server offers it, then rename).
// - Names are relative, '/'-separated, of [A-Za-z0-9._-] segments; no "..", no leading '/'.
// - Errors are values: kNotFound for a missing object, kBadKey for refused credentials or a
//   host key that does not match, kIoError for a link or server fault (retry later), kInvalidArgument
//   for a configuration that can never work. The message says what to do ("the server's clock
//   and ours differ by more than 15 minutes: ...").
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace mailvault::replication {

struct ObjectInfo {
  std::string name;
  uint64_t size = 0;
};

// Called as bytes go out (or come in); returning false stops the transfer (kIoError "stopped").
using Progress = std::function<bool(uint64_t done, uint64_t total)>;

class ObjectStore {
 public:
  virtual ~ObjectStore() = default;

  // "s3://127.0.0.1:7480/vault" or "sftp://backup@host:22/srv/vault": for messages and status.
  virtual std::string Describe() const = 0;

  // Makes sure the container (bucket, directory) exists; creates it when create is true.
  virtual Status Prepare(bool create) = 0;

  // Uploads bytes [0, size) of the local file as the object `name`. sha256_hex, when given,
  // receives the SHA-256 (hex) of the bytes sent, hashed as they were read: the caller need not
  // read a 32 MiB pack a second time for its manifest.
  virtual Status PutFile(const std::string& name, const std::string& path, uint64_t size,
                         const Progress& progress = {}, std::string* sha256_hex = nullptr) = 0;
  virtual Status PutBytes(const std::string& name, std::string_view bytes) = 0;

  // Downloads the object (kNotFound when there is none).
  virtual Result<std::string> GetBytes(const std::string& name) = 0;
  // Downloads the object into a local file (created or truncated, fsync'd before returning).
  virtual Status GetFile(const std::string& name, const std::string& path, const Progress& progress = {}) = 0;

  // The object's size, or nullopt when there is none.
  virtual Result<std::optional<ObjectInfo>> Head(const std::string& name) = 0;
  // Every object whose name starts with prefix, in name order.
  virtual Result<std::vector<ObjectInfo>> List(const std::string& prefix) = 0;
  // Deletes the object and, where the target keeps versions, every version of it. Deleting a
  // missing object succeeds.
  virtual Status Delete(const std::string& name) = 0;

  // How long the target keeps a written object whatever anyone asks (an S3 bucket's default
  // object-lock retention), in seconds; 0 when nothing is locked. A purge names it in its impact:
  // the offsite copy of purged mail outlives the purge by that long.
  virtual Result<int64_t> LockSeconds() { return int64_t{0}; }
};

// Settings every kind of target shares.
struct TransferOptions {
  uint64_t bwlimit = 0;            // bytes per second sent and received, 0 = unlimited
  int connect_timeout_seconds = 10;
  // A transfer that moves no byte for this long counts as a dropped link.
  int stall_timeout_seconds = 30;
};

// Whether a name obeys the contract above.
bool ValidObjectName(std::string_view name);

}  // namespace mailvault::replication
