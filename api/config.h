// The [api] section of the config file (docs/config.md), and the --http flag of serve.
#pragma once

#include <string>

#include "api/export.h"
#include "api/http_cpprest.h"
#include "api/service.h"
#include "core/result.h"

namespace mailvault::api {

struct ApiConfig {
  bool enabled = false;
  HttpServerOptions http;
  ApiSettings settings;
  ExportSettings exports;
  int64_t session_idle_seconds = 30 * 60;
  int64_t session_max_seconds = 8 * 3600;
  // What GET /api/v1/config shows (no secrets: file paths, not keys).
  nlohmann::json ToJson() const;
};

// Applies the [api] section; `listen` there enables the API.
Status ApplyApiConfigFile(const std::string& path, ApiConfig* config);
// --http ADDR:PORT: plain HTTP, refused unless ADDR is a loopback address.
Status ApplyHttpFlag(const std::string& addr_port, ApiConfig* config);

}  // namespace mailvault::api
