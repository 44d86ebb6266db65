// Offsite targets, from the config file (docs/config.md, docs/replication.md):
//
//   [offsite s3-dr]
//   url = s3://HOST:PORT/BUCKET          # path-style
//   region = us-east-1
//   credentials-file = /etc/mailvault/offsite.cred   # one line: ACCESS_KEY_ID SECRET (mode 0600)
//   no-tls = no                          # yes: plain http, to a loopback address only
//   ca-file = ...                        # optional, the CA of the server's certificate
//   create-bucket = yes                  # create the bucket when it is missing
//   bwlimit = 20M                        # bytes per second (K, M, G: binary), optional
//   active-hours = 19:00-07:00           # optional; outside them nothing is sent
//   max-unshipped-age = 60               # seconds a durable byte may wait before status says "behind"
//   parallel = 4                         # objects in flight at once
//   multipart-threshold = 64M            # S3: objects this large go up in parts (at least 5M)
//   check-interval = 600                 # seconds between listings that find objects lost offsite
//   deep-check-interval = 604800         # seconds between downloads that find damaged objects
//   index-snapshot-interval = 86400      # seconds between encrypted copies of the index (0: never)
//
//   [offsite sftp-branch]
//   url = sftp://USER@HOST:PORT/PATH
//   identity-file = /etc/mailvault/offsite_ed25519
//   known-hosts = /etc/mailvault/offsite_known_hosts   # the host key, pinned
#pragma once

#include <map>
#include <memory>
#include <string>

#include "core/result.h"
#include "replication/object_store.h"

namespace mailvault::replication {

struct OffsiteTargetConfig {
  std::string name;
  std::string url;
  bool sftp = false;  // else S3
  // S3
  std::string region = "us-east-1";
  std::string credentials_file;
  bool no_tls = false;
  std::string ca_file;
  bool create_bucket = true;
  // SFTP
  std::string identity_file;
  std::string known_hosts;
  // both
  uint64_t bwlimit = 0;
  int active_from_minute = -1, active_to_minute = -1;  // minutes after local midnight; -1: always
  int max_unshipped_age_seconds = 60;
  int parallel = 4;
  int stall_timeout_seconds = 30;
  // S3: larger objects go up in parts (resumable). Packs seal at 32 MiB, so by default a pack is
  // one PUT, as rclone sends anything under its 200 MiB cutoff (bench/offsite_bench.sh).
  uint64_t multipart_threshold = 64ull << 20;
  // How often the target is listed (every named object there, of its size), and downloaded and
  // checked byte for byte; what is missing or damaged is shipped again.
  int check_interval_seconds = 600;
  int deep_check_interval_seconds = 7 * 86400;
  // How often an encrypted copy of the full-text index is shipped (0: never), so that disaster
  // recovery catches the index up instead of rebuilding it. Also after a purge rewrote packs.
  int index_snapshot_interval_seconds = 86400;

  // Whether the local time (minutes after midnight) is inside active-hours (a window may
  // cross midnight: 19:00-07:00).
  bool ActiveAt(int minute_of_day) const;
};

// Every [offsite NAME] section; errors name the file and line.
Result<std::map<std::string, OffsiteTargetConfig>> LoadOffsiteTargets(const std::string& config_file);

// A store for the target (reads its credentials file now, connects on first use).
// upload_state_dir: where an S3 target remembers unfinished multipart uploads.
Result<std::unique_ptr<ObjectStore>> OpenObjectStore(const OffsiteTargetConfig& t, const std::string& upload_state_dir);

// "20M" -> 20 MiB; K, M, G binary; a plain number is bytes.
Result<uint64_t> ParseByteRate(const std::string& s);

}  // namespace mailvault::replication
