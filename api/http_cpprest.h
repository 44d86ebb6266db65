// The API's second transport, `[api] transport = cpprest`: cpprestsdk's http_listener (the
// design card's choice), HTTP or HTTPS. Not the default: measured here, a chunk size of
// ffffffff killed the process (std::bad_alloc on a listener thread), bodies are buffered in
// full before a 413 can go out, and there is no header limit or timeout (docs/api.md,
// "Transport"). Use it only on loopback behind a proxy that enforces those limits.
// Only this file and its .cc include cpprest (whose U() macro breaks other headers; the target
// defines _TURN_OFF_PLATFORM_STRING).
//
// cpprestsdk runs handlers on its own small thread pool, and a handler that blocks there can
// starve the pool (upstream issues #1144, #1190). So the listener's threads only collect the
// body and hand the request to our workers, which run the handler (searches, scrypt, the audit
// fsync) and send the reply. What the listener itself does not limit (header size, idle
// connections) is measured in docs/benchmarks.md and tests/api/hostile_http.py.
#pragma once

#include <memory>
#include <string>

#include "api/service.h"
#include "core/result.h"

namespace mailvault::api {


class HttpServer {
 public:
  static Result<std::unique_ptr<HttpServer>> Start(ApiService* service, const HttpServerOptions& options);
  ~HttpServer();
  // Stops listening, answers what is queued, and joins the workers.
  void Stop();
  const std::string& uri() const;

  class Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mailvault::api
