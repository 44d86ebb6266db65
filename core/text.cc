#include "core/text.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>

namespace mailvault {

std::string ToValidUtf8(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  size_t i = 0;
  while (i < in.size()) {
    unsigned char c = static_cast<unsigned char>(in[i]);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    int len = (c >= 0xc2 && c <= 0xdf) ? 2 : (c >= 0xe0 && c <= 0xef) ? 3 : (c >= 0xf0 && c <= 0xf4) ? 4 : 0;
    bool ok = len > 0 && i + len <= in.size();
    for (int k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(in[i + k]) & 0xc0) == 0x80;
    if (ok && len >= 3) {
      unsigned char c1 = static_cast<unsigned char>(in[i + 1]);
      // Overlong forms, surrogates and code points above U+10FFFF.
      if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 > 0x9f) || (c == 0xf0 && c1 < 0x90) ||
          (c == 0xf4 && c1 > 0x8f)) {
        ok = false;
      }
    }
    if (ok) {
      out.append(in.substr(i, len));
      i += len;
    } else {
      out.append("\xef\xbf\xbd");
      ++i;
    }
  }
  return out;
}

std::string NormalizeAddress(std::string_view addr) {
  size_t b = addr.find_first_not_of(" \t<");
  size_t e = addr.find_last_not_of(" \t>");
  if (b == std::string_view::npos) return "";
  std::string s(addr.substr(b, e - b + 1));
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

Status ForEachLine(std::string_view text, const std::function<Status(int, std::string_view)>& fn) {
  size_t pos = 0;
  int lineno = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    std::string_view line = text.substr(pos, (eol == std::string_view::npos ? text.size() : eol) - pos);
    pos = eol == std::string_view::npos ? text.size() : eol + 1;
    MV_RETURN_IF_ERROR(fn(++lineno, line));
  }
  return Status::Ok();
}

std::string Trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t\r");
  size_t e = s.find_last_not_of(" \t\r");
  return b == std::string_view::npos ? "" : std::string(s.substr(b, e - b + 1));
}

Result<int64_t> ParseIsoTime(const std::string& text) {
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, se = 0, used = 0;
  const char* s = text.c_str();
  if (std::sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &used) != 3 || used != 10) {
    return InvalidArgument("time \"" + text + "\" is not ISO 8601 (e.g. 2026-11-25T09:30:00Z)");
  }
  size_t i = 10;
  if (i < text.size() && (text[i] == 'T' || text[i] == 't' || text[i] == ' ')) {
    int n = 0;
    if (std::sscanf(s + i + 1, "%2d:%2d%n", &h, &mi, &n) != 2 || n != 5) {
      return InvalidArgument("time \"" + text + "\": expected HH:MM after the date");
    }
    i += 1 + 5;
    if (i < text.size() && text[i] == ':') {
      if (std::sscanf(s + i + 1, "%2d%n", &se, &n) != 1 || n != 2) return InvalidArgument("time \"" + text + "\": bad seconds");
      i += 3;
      if (i < text.size() && (text[i] == '.' || text[i] == ',')) {
        ++i;
        while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;  // fractions dropped
      }
    }
  }
  int64_t offset = 0;
  if (i < text.size()) {
    if (text[i] == 'Z' || text[i] == 'z') {
      ++i;
    } else if (text[i] == '+' || text[i] == '-') {
      int oh = 0, om = 0, n = 0;
      std::string tz = text.substr(i + 1);
      if (std::sscanf(tz.c_str(), "%2d:%2d%n", &oh, &om, &n) == 2 && n == 5) {
      } else if (std::sscanf(tz.c_str(), "%2d%2d%n", &oh, &om, &n) == 2 && n == 4) {
      } else if (std::sscanf(tz.c_str(), "%2d%n", &oh, &n) == 1 && n == 2) {
      } else {
        return InvalidArgument("time \"" + text + "\": bad UTC offset");
      }
      if (oh > 23 || om > 59) return InvalidArgument("time \"" + text + "\": bad UTC offset");
      offset = (text[i] == '+' ? 1 : -1) * (oh * 3600 + om * 60);
      i += 1 + static_cast<size_t>(n);
    }
  }
  if (i != text.size()) return InvalidArgument("time \"" + text + "\": unexpected \"" + text.substr(i) + "\"");
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60 || y < 1970) {
    return InvalidArgument("time \"" + text + "\" is out of range");
  }
  struct tm tm = {};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = se;
  return static_cast<int64_t>(timegm(&tm)) - offset;
}

int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

void CivilFromDays(int64_t z, int64_t* y, unsigned* m, unsigned* d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = static_cast<int64_t>(yoe) + era * 400 + (*m <= 2);
}

Result<std::chrono::seconds> ParseDuration(std::string_view text) {
  std::string t = Trim(text);
  if (t.empty()) return InvalidArgument("empty duration");
  char* end = nullptr;
  unsigned long long v = std::strtoull(t.c_str(), &end, 10);
  if (end == t.c_str()) return InvalidArgument("duration \"" + t + "\" must start with a number (e.g. 90s, 5m, 2h)");
  std::string unit(end);
  unsigned long long mult = 0;
  if (unit.empty() || unit == "s") mult = 1;
  else if (unit == "m") mult = 60;
  else if (unit == "h") mult = 3600;
  else if (unit == "d") mult = 86400;
  else return InvalidArgument("duration \"" + t + "\": unit must be s, m, h or d");
  if (v > 100ull * 365 * 86400 / mult) return InvalidArgument("duration \"" + t + "\" is too long");
  return std::chrono::seconds(static_cast<long long>(v * mult));
}

}  // namespace mailvault
