#include "api/http.h"

namespace mailvault::api {

using nlohmann::json;

Response Response::Json(int status, const json& j) {
  Response r;
  r.status = status;
  // Mail is full of invalid UTF-8 (subjects, names): replaced, never an exception.
  r.body = j.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

Response Response::Empty(int status) {
  Response r;
  r.status = status;
  r.content_type.clear();
  return r;
}

const char* StatusText(int status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 507: return "Insufficient Storage";
    default: return "Error";
  }
}

Response Problem(int status, const std::string& slug, const std::string& detail, const std::string& request_id) {
  json j{{"type", "https://mailvault.example/problems/" + slug},
         {"title", StatusText(status)},
         {"status", status},
         {"detail", detail}};
  if (!request_id.empty()) j["instance"] = "urn:mailvault:request:" + request_id;
  Response r = Response::Json(status, j);
  r.content_type = "application/problem+json";
  return r;
}

namespace {
int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

bool PercentDecode(std::string_view in, std::string* out, bool plus_is_space) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return false;
      int hi = HexValue(in[i + 1]), lo = HexValue(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      out->push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out->push_back(' ');
    } else {
      out->push_back(c);
    }
  }
  return true;
}

std::map<std::string, std::string> ParseQueryString(std::string_view q) {
  std::map<std::string, std::string> out;
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view part = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
    if (part.empty()) continue;
    size_t eq = part.find('=');
    std::string k, v;
    if (!PercentDecode(part.substr(0, eq), &k, true)) continue;
    if (eq != std::string_view::npos && !PercentDecode(part.substr(eq + 1), &v, true)) continue;
    out[k] = v;
  }
  return out;
}

Result<json> ParseJsonBody(std::string_view body, int max_depth) {
  if (body.empty()) return json::object();
  struct TooDeep {};
  json::parser_callback_t depth_check = [max_depth](int depth, json::parse_event_t, json&) {
    if (depth > max_depth) throw TooDeep{};
    return true;
  };
  json j;
  try {
    j = json::parse(body, depth_check);
  } catch (const TooDeep&) {
    return InvalidArgument("the JSON body is nested deeper than " + std::to_string(max_depth) + " levels");
  } catch (const json::exception& e) {
    return InvalidArgument(std::string("the body is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) return InvalidArgument("the body must be a JSON object");
  return j;
}

bool SplitPath(const std::string& path, std::vector<std::string>* out) {
  out->clear();
  if (path.empty() || path[0] != '/') return false;
  size_t i = 1;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    std::string seg;
    if (!PercentDecode(std::string_view(path).substr(i, j - i), &seg, false)) return false;
    if (seg.find('\0') != std::string::npos || seg.find('/') != std::string::npos) return false;
    out->push_back(std::move(seg));
    i = j + 1;
  }
  if (out->size() > 1 && out->back().empty()) out->pop_back();  // a trailing slash
  return true;
}

}  // namespace mailvault::api
