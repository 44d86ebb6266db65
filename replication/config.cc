#include "replication/config.h"

#include <cctype>
#include <cstdlib>
#include <filesystem>

#include "core/file_util.h"
#include "core/text.h"
#include "replication/s3_store.h"
#include "replication/sftp_store.h"

namespace mailvault::replication {
namespace {

bool ParseClock(const std::string& s, int* minute) {
  int h = 0, m = 0;
  char extra = 0;
  if (std::sscanf(s.c_str(), "%d:%d%c", &h, &m, &extra) != 2 || h < 0 || h > 24 || m < 0 || m > 59 || (h == 24 && m)) return false;
  *minute = h * 60 + m;
  return true;
}

}  // namespace

bool OffsiteTargetConfig::ActiveAt(int minute) const {
  if (active_from_minute < 0) return true;
  if (active_from_minute == active_to_minute) return true;
  if (active_from_minute < active_to_minute) return minute >= active_from_minute && minute < active_to_minute;
  return minute >= active_from_minute || minute < active_to_minute;  // across midnight
}

Result<uint64_t> ParseByteRate(const std::string& s) {
  if (s.empty()) return InvalidArgument("an empty rate");
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  std::string unit = end;
  uint64_t mult = 1;
  if (unit == "K" || unit == "k") mult = 1ull << 10;
  else if (unit == "M" || unit == "m") mult = 1ull << 20;
  else if (unit == "G" || unit == "g") mult = 1ull << 30;
  else if (!unit.empty()) return InvalidArgument("\"" + s + "\" is not a rate (a number of bytes per second, with K, M or G)");
  if (!(v > 0) || v * double(mult) > 1e13) return InvalidArgument("\"" + s + "\" is not a positive rate");
  return uint64_t(v * double(mult));
}

Result<std::map<std::string, OffsiteTargetConfig>> LoadOffsiteTargets(const std::string& config_file) {
  std::map<std::string, OffsiteTargetConfig> out;
  if (config_file.empty()) return out;
  MV_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(config_file, 1 << 20));
  OffsiteTargetConfig* current = nullptr;
  MV_RETURN_IF_ERROR(ForEachLine(text, [&](int lineno, std::string_view raw) -> Status {
    std::string line = Trim(raw.substr(0, raw.find('#')));
    if (line.empty()) return Status::Ok();
    const std::string where = config_file + ":" + std::to_string(lineno) + ": ";
    if (line.front() == '[') {
      current = nullptr;
      const std::string head = "[offsite";
      if (line.rfind(head, 0) != 0 || line.back() != ']') return Status::Ok();
      std::string name = Trim(line.substr(head.size(), line.size() - head.size() - 1));
      bool valid = !name.empty() && name.size() <= 64;
      for (char c : name) valid &= std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
      if (!valid) return InvalidArgument(where + "an offsite target's name is 1-64 of a-z, 0-9, - _ . (e.g. [offsite s3-dr])");
      if (out.count(name)) return InvalidArgument(where + "offsite target \"" + name + "\" is defined twice");
      current = &out[name];
      current->name = name;
      return Status::Ok();
    }
    if (!current) return Status::Ok();
    size_t eq = line.find('=');
    if (eq == std::string::npos) return InvalidArgument(where + "expected \"key = value\"");
    std::string key = Trim(line.substr(0, eq)), value = Trim(line.substr(eq + 1));
    auto yes_no = [&](bool* b) -> Status {
      if (value == "yes" || value == "true") *b = true;
      else if (value == "no" || value == "false") *b = false;
      else return InvalidArgument(where + key + " is yes or no");
      return Status::Ok();
    };
    auto number = [&](int* out_v, long lo, long hi) -> Status {
      char* end = nullptr;
      long v = std::strtol(value.c_str(), &end, 10);
      if (value.empty() || *end || v < lo || v > hi) {
        return InvalidArgument(where + key + " is a number from " + std::to_string(lo) + " to " + std::to_string(hi));
      }
      *out_v = int(v);
      return Status::Ok();
    };
    auto path = [&](std::string* p) {
      *p = std::filesystem::absolute(value).string();
      return Status::Ok();
    };
    if (key == "url") {
      current->url = value;
      current->sftp = value.rfind("sftp://", 0) == 0;
    } else if (key == "region") {
      current->region = value;
    } else if (key == "credentials-file") {
      return path(&current->credentials_file);
    } else if (key == "no-tls") {
      return yes_no(&current->no_tls);
    } else if (key == "ca-file") {
      return path(&current->ca_file);
    } else if (key == "create-bucket") {
      return yes_no(&current->create_bucket);
    } else if (key == "identity-file") {
      return path(&current->identity_file);
    } else if (key == "known-hosts") {
      return path(&current->known_hosts);
    } else if (key == "bwlimit") {
      Result<uint64_t> r = ParseByteRate(value);
      if (!r.ok()) return r.error().With(where + "bwlimit");
      current->bwlimit = *r;
    } else if (key == "active-hours") {
      size_t dash = value.find('-');
      if (dash == std::string::npos || !ParseClock(Trim(value.substr(0, dash)), &current->active_from_minute) ||
          !ParseClock(Trim(value.substr(dash + 1)), &current->active_to_minute)) {
        return InvalidArgument(where + "active-hours is HH:MM-HH:MM in local time (e.g. 19:00-07:00)");
      }
    } else if (key == "max-unshipped-age") {
      return number(&current->max_unshipped_age_seconds, 1, 86400);
    } else if (key == "parallel") {
      return number(&current->parallel, 1, 16);
    } else if (key == "multipart-threshold") {
      Result<uint64_t> r = ParseByteRate(value);
      if (!r.ok() || *r < (5u << 20)) return InvalidArgument(where + "multipart-threshold is at least 5M (S3 refuses smaller parts)");
      current->multipart_threshold = *r;
    } else if (key == "check-interval") {
      return number(&current->check_interval_seconds, 1, 30 * 86400);
    } else if (key == "index-snapshot-interval") {
      return number(&current->index_snapshot_interval_seconds, 0, 365 * 86400);
    } else if (key == "deep-check-interval") {
      return number(&current->deep_check_interval_seconds, 1, 365 * 86400);
    } else if (key == "stall-timeout") {
      return number(&current->stall_timeout_seconds, 5, 3600);
    } else {
      return InvalidArgument(where + "unknown key \"" + key + "\" in [offsite " + current->name +
                             "] (url, region, credentials-file, no-tls, ca-file, create-bucket, identity-file, known-hosts, "
                             "bwlimit, active-hours, max-unshipped-age, parallel, multipart-threshold, check-interval, deep-check-interval, index-snapshot-interval, stall-timeout)");
    }
    return Status::Ok();
  }));
  for (auto& [name, t] : out) {
    const std::string where = config_file + ": [offsite " + name + "]";
    if (t.url.empty()) return InvalidArgument(where + " needs url");
    if (t.sftp) {
      if (t.identity_file.empty() || t.known_hosts.empty()) {
        return InvalidArgument(where + " (sftp) needs identity-file and known-hosts: the server's key is pinned, never trusted on first use");
      }
      MV_RETURN_IF_ERROR(ParseSftpUrl(t.url).status());
    } else {
      if (t.credentials_file.empty()) return InvalidArgument(where + " (s3) needs credentials-file");
      Result<S3Config> c = ParseS3Url(t.url, t.no_tls);
      if (!c.ok()) return c.error().With(where);
    }
  }
  return out;
}

Result<std::unique_ptr<ObjectStore>> OpenObjectStore(const OffsiteTargetConfig& t, const std::string& upload_state_dir) {
  TransferOptions transfer;
  // The limit is the target's: the objects in flight share it.
  transfer.bwlimit = t.bwlimit ? std::max<uint64_t>(1, t.bwlimit / uint64_t(t.parallel)) : 0;
  transfer.stall_timeout_seconds = t.stall_timeout_seconds;
  if (t.sftp) {
    MV_ASSIGN_OR_RETURN(SftpConfig c, ParseSftpUrl(t.url));
    c.identity_file = t.identity_file;
    c.known_hosts = t.known_hosts;
    c.transfer = transfer;
    return MakeSftpStore(std::move(c));
  }
  MV_ASSIGN_OR_RETURN(S3Config c, ParseS3Url(t.url, t.no_tls));
  MV_ASSIGN_OR_RETURN(c.credentials, ReadS3Credentials(t.credentials_file));
  c.region = t.region;
  c.ca_file = t.ca_file;
  c.create_bucket = t.create_bucket;
  c.transfer = transfer;
  c.upload_state_dir = upload_state_dir;
  c.multipart_threshold = t.multipart_threshold;
  c.part_size = std::min<uint64_t>(8u << 20, t.multipart_threshold);
  return MakeS3Store(std::move(c));
}

}  // namespace mailvault::replication
