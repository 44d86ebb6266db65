#include "api/config.h"

#include <arpa/inet.h>

#include "capture/config.h"
#include "core/file_util.h"
#include "core/text.h"

namespace mailvault::api {

nlohmann::json ApiConfig::ToJson() const {
  return nlohmann::json{{"listen", http.uri},
                        {"transport", http.transport},
                        {"max_connections", http.max_connections},
                        {"tls_certificate", http.certificate_file},
                        {"tls_key", http.key_file.empty() ? "" : "(set)"},
                        {"workers", http.workers},
                        {"max_body_bytes", settings.max_body_bytes},
                        {"export_dir", exports.dir},
                        {"export_ttl_seconds", exports.ttl_seconds},
                        {"session_idle_seconds", session_idle_seconds},
                        {"session_max_seconds", session_max_seconds}};
}

namespace {

bool IsLoopback(const std::string& host) {
  in_addr a4;
  in6_addr a6;
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  if (inet_pton(AF_INET6, host.c_str(), &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
  return host == "localhost";
}

// "https://HOST:PORT" or "http://HOST:PORT" (HOST may be [v6]).
Status CheckUri(const std::string& uri, const std::string& where) {
  bool tls = uri.rfind("https://", 0) == 0;
  if (!tls && uri.rfind("http://", 0) != 0) return InvalidArgument(where + "listen is https://ADDR:PORT (or http:// on loopback)");
  std::string rest = uri.substr(tls ? 8 : 7);
  size_t colon = rest.rfind(':');
  if (colon == std::string::npos || colon + 1 >= rest.size()) return InvalidArgument(where + "listen needs a port: " + uri);
  std::string host = rest.substr(0, colon);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  if (!tls && !IsLoopback(host)) {
    return InvalidArgument(where + "plain HTTP is allowed only on a loopback address (" + host +
                           " is not); use https:// with tls-certificate and tls-key");
  }
  return Status::Ok();
}

}  // namespace

Status ApplyApiConfigFile(const std::string& path, ApiConfig* c) {
  MV_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path, 1 << 20));
  bool in_section = false;
  MV_RETURN_IF_ERROR(ForEachLine(text, [&](int lineno, std::string_view raw) -> Status {
    std::string line = Trim(raw.substr(0, raw.find('#')));
    if (line.empty()) return Status::Ok();
    const std::string where = path + ":" + std::to_string(lineno) + ": ";
    if (line.front() == '[') {
      in_section = line == "[api]";
      return Status::Ok();
    }
    if (!in_section) return Status::Ok();
    size_t eq = line.find('=');
    if (eq == std::string::npos) return InvalidArgument(where + "expected \"key = value\"");
    std::string key = Trim(line.substr(0, eq)), value = Trim(line.substr(eq + 1));
    auto number = [&](uint64_t lo, uint64_t hi) -> Result<uint64_t> {
      char* end = nullptr;
      unsigned long long v = std::strtoull(value.c_str(), &end, 10);
      if (value.empty() || *end || v < lo || v > hi) {
        return InvalidArgument(where + key + " must be a number from " + std::to_string(lo) + " to " + std::to_string(hi));
      }
      return static_cast<uint64_t>(v);
    };
    auto duration = [&]() -> Result<int64_t> {
      Result<std::chrono::seconds> d = capture::ParseDuration(value);
      if (!d.ok() || d->count() < 1) return InvalidArgument(where + key + " is a duration like 30m, 8h, 7d");
      return static_cast<int64_t>(d->count());
    };
    if (key == "listen") {
      MV_RETURN_IF_ERROR(CheckUri(value, where));
      c->http.uri = value;
      c->enabled = true;
    } else if (key == "tls-certificate") {
      c->http.certificate_file = value;
    } else if (key == "tls-key") {
      c->http.key_file = value;
    } else if (key == "transport") {
      if (value != "beast" && value != "cpprest") return InvalidArgument(where + "transport is beast or cpprest");
      c->http.transport = value;
    } else if (key == "max-connections") {
      MV_ASSIGN_OR_RETURN(uint64_t n, number(1, 100000));
      c->http.max_connections = n;
    } else if (key == "workers") {
      MV_ASSIGN_OR_RETURN(uint64_t n, number(1, 256));
      c->http.workers = n;
    } else if (key == "max-body-bytes") {
      MV_ASSIGN_OR_RETURN(uint64_t n, number(1024, 64 << 20));
      c->http.max_body_bytes = c->settings.max_body_bytes = n;
    } else if (key == "export-dir") {
      c->exports.dir = value;
    } else if (key == "export-ttl") {
      MV_ASSIGN_OR_RETURN(c->exports.ttl_seconds, duration());
    } else if (key == "session-idle") {
      MV_ASSIGN_OR_RETURN(c->session_idle_seconds, duration());
    } else if (key == "session-max") {
      MV_ASSIGN_OR_RETURN(c->session_max_seconds, duration());
    } else {
      return InvalidArgument(where + "unknown key \"" + key +
                             "\" in [api] (keys: listen, tls-certificate, tls-key, transport, workers, max-connections, max-body-bytes, export-dir, "
                             "export-ttl, session-idle, session-max)");
    }
    return Status::Ok();
  }));
  if (c->enabled && c->http.uri.rfind("https://", 0) == 0 && (c->http.certificate_file.empty() || c->http.key_file.empty())) {
    return InvalidArgument(path + ": [api] listen is https:// but tls-certificate or tls-key is missing");
  }
  return Status::Ok();
}

Status ApplyHttpFlag(const std::string& addr_port, ApiConfig* c) {
  MV_RETURN_IF_ERROR(CheckUri("http://" + addr_port, "--http: "));
  c->http.uri = "http://" + addr_port;
  c->enabled = true;
  return Status::Ok();
}

}  // namespace mailvault::api
