// The API's default transport: an HTTP/1.1 server on Boost.Beast (HTTP or HTTPS), with the
// limits a listener facing untrusted clients needs and cpprestsdk's listener lacks
// (http_cpprest.h; docs/benchmarks.md has what each does with hostile input):
//   - request headers at most 16 KiB (431), bodies at most max_body_bytes, refused as soon as
//     the Content-Length or the chunks say so, before the body is read (413);
//   - a malformed request line, header or chunk size: 400 and the connection closed;
//   - each request must arrive within 15 s of its first byte, and an idle keep-alive
//     connection is closed after 60 s (slow clients cannot hold connections forever);
//   - at most max_connections at once; past that, new connections are closed at once.
// The io threads only read and write; handlers run on a pool of workers, as with cpprest.
#pragma once

#include <memory>
#include <string>

#include "api/http.h"
#include "api/service.h"
#include "core/result.h"

namespace mailvault::api {

class BeastServer {
 public:
  static Result<std::unique_ptr<BeastServer>> Start(ApiService* service, const HttpServerOptions& options);
  ~BeastServer();
  void Stop();
  // The port actually bound (the URI may say 0).
  uint16_t port() const;

  class Impl;

 private:
  explicit BeastServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mailvault::api
