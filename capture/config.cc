#include "capture/config.h"

#include <unistd.h>

#include <cstdlib>
#include <thread>
#include <type_traits>

#include "core/file_util.h"
#include "core/text.h"

namespace mailvault::capture {
namespace {

std::vector<std::string> SplitList(std::string_view s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    std::string item = Trim(s.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    if (!item.empty()) out.push_back(item);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace

CaptureConfig DefaultCaptureConfig() {
  CaptureConfig c;
  for (const char* n : {"127.0.0.0/8", "::1/128"}) c.settings.allow.push_back(*ParseNetwork(n));
  char host[256] = {0};
  if (::gethostname(host, sizeof host - 1) == 0 && host[0]) c.settings.hostname = host;
  return c;
}

Status ApplyCaptureConfigFile(const std::string& path, CaptureConfig* c) {
  MV_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path, 1 << 20));
  CaptureSettings& s = c->settings;
  bool in_section = false, listen_set = false, allow_set = false;
  return ForEachLine(text, [&](int lineno, std::string_view raw) -> Status {
    std::string line = Trim(raw.substr(0, raw.find('#')));
    if (line.empty()) return Status::Ok();
    const std::string where = path + ":" + std::to_string(lineno) + ": ";
    if (line.front() == '[') {
      in_section = line == "[capture]";
      return Status::Ok();
    }
    if (!in_section) return Status::Ok();
    size_t eq = line.find('=');
    if (eq == std::string::npos) return InvalidArgument(where + "expected \"key = value\"");
    std::string key = Trim(line.substr(0, eq)), value = Trim(line.substr(eq + 1));
    auto number = [&](auto* out, unsigned long long lo, unsigned long long hi) -> Status {
      char* end = nullptr;
      unsigned long long v = std::strtoull(value.c_str(), &end, 10);
      if (value.empty() || *end || v < lo || v > hi) {
        return InvalidArgument(where + key + " must be a number from " + std::to_string(lo) + " to " + std::to_string(hi));
      }
      *out = static_cast<std::remove_pointer_t<decltype(out)>>(v);
      return Status::Ok();
    };
    auto boolean = [&](bool* out) -> Status {
      if (value == "yes" || value == "true") *out = true;
      else if (value == "no" || value == "false") *out = false;
      else return InvalidArgument(where + key + " must be yes or no");
      return Status::Ok();
    };
    auto duration = [&](std::chrono::seconds* out) -> Status {
      Result<std::chrono::seconds> d = ParseDuration(value);
      if (!d.ok()) return InvalidArgument(where + key + ": " + d.error().message());
      if (d->count() < 1) return InvalidArgument(where + key + " must be at least 1s");
      *out = *d;
      return Status::Ok();
    };
    if (key == "smtp-listen" || key == "lmtp-listen") {
      if (!listen_set) c->listen.clear();
      listen_set = true;
      for (const std::string& a : SplitList(value)) {
        Result<ListenAddress> la = ParseListenAddress(a, key == "smtp-listen" ? Protocol::kSmtp : Protocol::kLmtp);
        if (!la.ok()) return InvalidArgument(where + la.error().message());
        c->listen.push_back(*la);
      }
    } else if (key == "hostname") {
      s.hostname = value;
    } else if (key == "allow") {
      if (!allow_set) s.allow.clear();
      allow_set = true;
      for (const std::string& n : SplitList(value)) {
        Result<Network> net = ParseNetwork(n);
        if (!net.ok()) return InvalidArgument(where + net.error().message());
        s.allow.push_back(*net);
      }
    } else if (key == "max-connections") {
      MV_RETURN_IF_ERROR(number(&s.max_connections, 1, 100000));
    } else if (key == "max-connections-per-ip") {
      MV_RETURN_IF_ERROR(number(&s.max_connections_per_ip, 1, 100000));
    } else if (key == "max-recipients") {
      MV_RETURN_IF_ERROR(number(&s.limits.max_recipients, 1, 100000));
    } else if (key == "max-command-line") {
      MV_RETURN_IF_ERROR(number(&s.limits.max_command_line, 512, 65536));
    } else if (key == "max-errors") {
      MV_RETURN_IF_ERROR(number(&s.limits.max_errors, 1, 1000));
    } else if (key == "idle-timeout") {
      MV_RETURN_IF_ERROR(duration(&s.idle_timeout));
    } else if (key == "session-timeout") {
      MV_RETURN_IF_ERROR(duration(&s.session_timeout));
    } else if (key == "tls-certificate") {
      s.tls_certificate = value;
    } else if (key == "tls-key") {
      s.tls_key = value;
    } else if (key == "require-tls") {
      MV_RETURN_IF_ERROR(boolean(&s.require_tls));
    } else if (key == "require-auth") {
      MV_RETURN_IF_ERROR(boolean(&s.require_auth));
    } else if (key == "auth-users") {
      s.auth_users_file = value;
    } else if (key == "subaddress-separator") {
      if (value.size() != 1) return InvalidArgument(where + "subaddress-separator must be one character");
      s.subaddress_separator = value[0];
    } else if (key == "journal-reports") {
      if (value != "unwrap" && value != "keep") return InvalidArgument(where + "journal-reports must be unwrap or keep");
      s.unwrap_journal_reports = value == "unwrap";
    } else if (key == "max-transit-bytes") {
      MV_RETURN_IF_ERROR(number(&s.max_transit_bytes, 1ull << 20, 1ull << 40));
    } else if (key == "io-threads") {
      MV_RETURN_IF_ERROR(number(&c->io_threads, 0, 256));
    } else if (key == "ingest-threads") {
      MV_RETURN_IF_ERROR(number(&c->ingest_threads, 0, 256));
    } else {
      return InvalidArgument(where + "unknown capture setting \"" + key + "\" (see docs/config.md)");
    }
    return Status::Ok();
  });
}

}  // namespace mailvault::capture
