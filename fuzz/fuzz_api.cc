// libFuzzer target: what the REST API reads from a request before any handler runs
// (api/http.h): the path's percent-decoding and segments, the query string, and the JSON body
// with its depth limit. The input is "PATH\nQUERY\nBODY". A crash, a hang, a sanitizer report,
// or a result that breaks the functions' promises (checked below) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "api/http.h"

namespace {

int Depth(const nlohmann::json& j) {
  int d = 0;
  if (j.is_structured()) {
    for (const auto& v : j) d = std::max(d, Depth(v));
    return d + 1;
  }
  return 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mailvault::api;
  std::string in(reinterpret_cast<const char*>(data), size);
  size_t a = in.find('\n');
  size_t b = a == std::string::npos ? std::string::npos : in.find('\n', a + 1);
  std::string path = in.substr(0, a);
  std::string query = a == std::string::npos ? "" : in.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1);
  std::string body = b == std::string::npos ? "" : in.substr(b + 1);

  std::vector<std::string> segs;
  if (SplitPath(path, &segs)) {
    for (const std::string& s : segs) {
      if (s.find('/') != std::string::npos || s.find('\0') != std::string::npos) std::abort();
    }
  }
  (void)ParseQueryString(query);

  constexpr int kDepth = 32;
  mailvault::Result<nlohmann::json> j = ParseJsonBody(body, kDepth);
  if (j.ok()) {
    if (!j->is_object() || Depth(*j) > kDepth + 1) std::abort();
    (void)j->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } else if (j.error().message().empty()) {
    std::abort();
  }
  // What every error response is made of must render whatever the detail holds.
  Response r = Problem(400, "bad-request", body.substr(0, 200), path.substr(0, 50));
  if (r.body.empty()) std::abort();
  return 0;
}
