// What a handler sees of an HTTP exchange, independent of the transport (cpprestsdk today,
// http_cpprest.h): the handlers, the router and every test speak these types only.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/result.h"

namespace mailvault::api {

struct Request {
  std::string method;                          // "GET"
  std::string path;                            // as sent, percent-encoded, without the query
  std::map<std::string, std::string> query;    // decoded; a repeated name keeps the last value
  std::map<std::string, std::string> headers;  // names lower-cased; repeated headers joined with ", "
  int authorization_headers = 0;               // how many Authorization headers came
  std::string body;
  std::string peer;                            // the client's address
  std::string request_id;                      // for the problem's "instance" and the logs
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string file;          // when set, the body is this file's content (downloads)
  uint64_t file_size = 0;
  // An answer written as it happens (server-sent events): called on a worker thread once the
  // status line and headers are out, with a writer that returns false when the client is gone
  // or stopped reading for 30 s. The connection closes when it returns (no Content-Length).
  std::function<void(const std::function<bool(std::string_view)>& write)> stream;

  static Response Json(int status, const nlohmann::json& j);
  static Response Empty(int status);  // 204 and friends
};

// How the API listens; read from [api] (config.h).
struct HttpServerOptions {
  std::string uri;              // "https://0.0.0.0:8443" or "http://127.0.0.1:8080"
  std::string certificate_file;  // PEM chain, for https
  std::string key_file;          // PEM key, for https
  size_t workers = 16;
  size_t max_queued = 1024;      // requests waiting for a worker; past it: 503
  size_t max_body_bytes = 1 << 20;
  size_t max_connections = 1024;  // Beast transport: past this, new connections are closed
  std::string transport = "beast";  // or "cpprest" (http_cpprest.h says why it is not the default)
};

// RFC 9457 problem details: {"type", "title", "status", "detail", "instance"}. `slug` names
// the kind of problem ("bad-request"); detail says what to do about it.
Response Problem(int status, const std::string& slug, const std::string& detail, const std::string& request_id = "");

const char* StatusText(int status);

// Percent-decoding of one path segment or query value; false on a malformed escape.
bool PercentDecode(std::string_view in, std::string* out, bool plus_is_space);
std::map<std::string, std::string> ParseQueryString(std::string_view q);

// A request body as a JSON object: malformed JSON, invalid UTF-8, nesting deeper than
// max_depth (refused while parsing, before a deep document is built) and anything but an
// object are errors whose message says which.
Result<nlohmann::json> ParseJsonBody(std::string_view body, int max_depth);

// The decoded segments of a request path; false when an escape is malformed or a segment
// decodes to something that never names a resource (NUL, "/").
bool SplitPath(const std::string& path, std::vector<std::string>* out);

}  // namespace mailvault::api
