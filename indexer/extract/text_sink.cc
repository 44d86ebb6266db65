#include "indexer/extract/text_sink.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <vector>

#include "core/text.h"

namespace mailvault::extract_internal {
namespace {

constexpr std::array<bool, 256> MakeSpaceTable() {
  std::array<bool, 256> t{};
  for (unsigned char c : {' ', '\t', '\n', '\r', '\f'}) t[c] = true;
  return t;
}
constexpr std::array<bool, 256> kSpaceTable = MakeSpaceTable();

inline bool IsSpaceByte(char c) { return kSpaceTable[static_cast<unsigned char>(c)]; }

// The same acceptance rules as core's ToValidUtf8, as a check: most text is valid and need not
// be copied again.
bool IsValidUtf8(std::string_view s) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    // Eight ASCII bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      std::copy(p + i, p + i + 8, reinterpret_cast<unsigned char*>(&w));
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = (c >= 0xc2 && c <= 0xdf) ? 2 : (c >= 0xe0 && c <= 0xef) ? 3 : (c >= 0xf0 && c <= 0xf4) ? 4 : 0;
    if (len == 0 || i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xc0) != 0x80) return false;
    }
    unsigned char c1 = p[i + 1];
    if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 > 0x9f) || (c == 0xf0 && c1 < 0x90) || (c == 0xf4 && c1 > 0x8f)) {
      return false;
    }
    i += len;
  }
  return true;
}

struct NamedReference {
  std::string_view name;
  uint32_t cp;
};

// HTML 4's Latin-1 references, U+00A0 to U+00FF in order.
constexpr std::string_view kLatin1Names[96] = {
    "nbsp",   "iexcl",  "cent",   "pound",  "curren", "yen",    "brvbar", "sect",   "uml",    "copy",   "ordf",
    "laquo",  "not",    "shy",    "reg",    "macr",   "deg",    "plusmn", "sup2",   "sup3",   "acute",  "micro",
    "para",   "middot", "cedil",  "sup1",   "ordm",   "raquo",  "frac14", "frac12", "frac34", "iquest", "Agrave",
    "Aacute", "Acirc",  "Atilde", "Auml",   "Aring",  "AElig",  "Ccedil", "Egrave", "Eacute", "Ecirc",  "Euml",
    "Igrave", "Iacute", "Icirc",  "Iuml",   "ETH",    "Ntilde", "Ograve", "Oacute", "Ocirc",  "Otilde", "Ouml",
    "times",  "Oslash", "Ugrave", "Uacute", "Ucirc",  "Uuml",   "Yacute", "THORN",  "szlig",  "agrave", "aacute",
    "acirc",  "atilde", "auml",   "aring",  "aelig",  "ccedil", "egrave", "eacute", "ecirc",  "euml",   "igrave",
    "iacute", "icirc",  "iuml",   "eth",    "ntilde", "ograve", "oacute", "ocirc",  "otilde", "ouml",   "divide",
    "oslash", "ugrave", "uacute", "ucirc",  "uuml",   "yacute", "thorn",  "yuml"};

// The rest of what mail written by people and mail programs uses.
constexpr NamedReference kOtherNames[] = {
    {"amp", '&'},       {"lt", '<'},        {"gt", '>'},        {"quot", '"'},      {"apos", '\''},
    {"OElig", 0x152},   {"oelig", 0x153},   {"Scaron", 0x160},  {"scaron", 0x161},  {"Yuml", 0x178},
    {"fnof", 0x192},    {"circ", 0x2c6},    {"tilde", 0x2dc},   {"Alpha", 0x391},   {"Beta", 0x392},
    {"Gamma", 0x393},   {"Delta", 0x394},   {"Omega", 0x3a9},   {"alpha", 0x3b1},   {"beta", 0x3b2},
    {"gamma", 0x3b3},   {"delta", 0x3b4},   {"pi", 0x3c0},      {"mu", 0x3bc},      {"omega", 0x3c9},
    {"ensp", 0x2002},   {"emsp", 0x2003},   {"thinsp", 0x2009}, {"zwnj", 0x200c},   {"zwj", 0x200d},
    {"lrm", 0x200e},    {"rlm", 0x200f},    {"ndash", 0x2013},  {"mdash", 0x2014},  {"lsquo", 0x2018},
    {"rsquo", 0x2019},  {"sbquo", 0x201a},  {"ldquo", 0x201c},  {"rdquo", 0x201d},  {"bdquo", 0x201e},
    {"dagger", 0x2020}, {"Dagger", 0x2021}, {"bull", 0x2022},   {"hellip", 0x2026}, {"permil", 0x2030},
    {"prime", 0x2032},  {"Prime", 0x2033},  {"lsaquo", 0x2039}, {"rsaquo", 0x203a}, {"oline", 0x203e},
    {"euro", 0x20ac},   {"trade", 0x2122},  {"larr", 0x2190},   {"uarr", 0x2191},   {"rarr", 0x2192},
    {"darr", 0x2193},   {"harr", 0x2194},   {"minus", 0x2212},  {"le", 0x2264},     {"ge", 0x2265},
    {"ne", 0x2260},     {"infin", 0x221e},  {"check", 0x2713},
};

const std::vector<NamedReference>& HtmlNames() {
  static const std::vector<NamedReference> names = [] {
    std::vector<NamedReference> v(std::begin(kOtherNames), std::end(kOtherNames));
    for (uint32_t i = 0; i < 96; ++i) v.push_back({kLatin1Names[i], 0xa0 + i});
    std::sort(v.begin(), v.end(), [](const NamedReference& a, const NamedReference& b) { return a.name < b.name; });
    return v;
  }();
  return names;
}

bool LookUpName(std::string_view name, bool html, uint32_t* cp) {
  if (!html) {
    for (size_t i = 0; i < 5; ++i) {
      if (kOtherNames[i].name == name) {
        *cp = kOtherNames[i].cp;
        return true;
      }
    }
    return false;
  }
  const auto& names = HtmlNames();
  auto it = std::lower_bound(names.begin(), names.end(), name,
                             [](const NamedReference& r, std::string_view n) { return r.name < n; });
  if (it == names.end() || it->name != name) return false;
  *cp = it->cp;
  return true;
}

bool IsAsciiLetter(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsAlnum(unsigned char c) { return IsAsciiLetter(c) || (c >= '0' && c <= '9'); }

int HexValue(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

void TextSink::Text(std::string_view s) {
  const char* p = s.data();
  const char* end = p + s.size();
  while (p < end) {
    if (IsSpaceByte(*p)) {
      Space();
      do ++p;
      while (p < end && IsSpaceByte(*p));
      continue;
    }
    const char* q = p + 1;
    while (q < end && !IsSpaceByte(*q)) ++q;
    if (!Flush()) return;
    Append(p, static_cast<size_t>(q - p));
    if (truncated_) return;
    p = q;
  }
}

void TextSink::CodePoint(uint32_t cp) {
  if (cp < 0x80 && IsSpace(static_cast<unsigned char>(cp))) return Space();
  switch (cp) {
    case 0xa0:
    case 0x2002:
    case 0x2003:
    case 0x2009:  // no-break, en, em and thin spaces
      return Space();
    case 0xad:
    case 0x200c:
    case 0x200d:
    case 0x200e:
    case 0x200f:  // invisible: keep words whole
      return;
    default:
      break;
  }
  std::string utf8;
  AppendUtf8(cp, &utf8);
  if (!Flush()) return;
  Append(utf8.data(), utf8.size());
}

bool TextSink::Flush() {
  if (truncated_) return false;
  if (pending_ != kNone && !out_.empty()) {
    if (out_.size() + 1 > max_) {
      truncated_ = true;
      return false;
    }
    out_.push_back(pending_ == kNewline ? '\n' : ' ');
  }
  pending_ = kNone;
  return true;
}

void TextSink::Append(const char* p, size_t n) {
  size_t room = max_ - out_.size();
  if (n <= room) {
    out_.append(p, n);
    return;
  }
  // A few bytes past the limit show whether it falls inside a character, which may have begun
  // in an earlier call.
  out_.append(p, std::min(n, room + 3));
  out_.resize(Utf8Boundary(out_, max_));
  truncated_ = true;
}

std::string TextSink::Finish(bool* truncated) {
  if (!IsValidUtf8(out_)) {
    out_ = ToValidUtf8(out_);
    if (out_.size() > max_) {
      out_.resize(Utf8Boundary(out_, max_));
      truncated_ = true;
    }
  }
  if (truncated != nullptr) *truncated = truncated_;
  return std::move(out_);
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp == 0 || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) cp = 0xfffd;
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out->push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

size_t Utf8Boundary(std::string_view s, size_t n) {
  if (n >= s.size()) return s.size();
  // If s[n], the first byte left out, continues a sequence that starts at most three bytes
  // earlier, cut before that sequence.
  auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  size_t k = n;
  while (k > 0 && n - k < 3 && (byte(k) & 0xc0) == 0x80) --k;
  unsigned char lead = byte(k);
  size_t len = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  return k + len > n ? k : n;
}

uint32_t Cp1252ToUnicode(unsigned char b) {
  static constexpr uint16_t kHigh[32] = {0x20ac, 0x81,   0x201a, 0x192,  0x201e, 0x2026, 0x2020, 0x2021,
                                         0x2c6,  0x2030, 0x160,  0x2039, 0x152,  0x8d,   0x17d,  0x8f,
                                         0x90,   0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014,
                                         0x2dc,  0x2122, 0x161,  0x203a, 0x153,  0x9d,   0x17e,  0x178};
  if (b >= 0x80 && b <= 0x9f) return kHigh[b - 0x80];
  return b;
}

bool DecodeReference(std::string_view s, bool html, uint32_t* cp, size_t* consumed) {
  if (s.size() < 3 || s[0] != '&') return false;
  size_t i = 1;
  if (s[i] == '#') {
    ++i;
    bool hex = i < s.size() && (s[i] == 'x' || s[i] == 'X');
    if (hex) ++i;
    size_t digits_start = i;
    uint32_t v = 0;
    bool overflow = false;
    for (; i < s.size(); ++i) {
      int d = hex ? HexValue(static_cast<unsigned char>(s[i])) : (s[i] >= '0' && s[i] <= '9' ? s[i] - '0' : -1);
      if (d < 0) break;
      if (!overflow) {
        v = v * (hex ? 16 : 10) + static_cast<uint32_t>(d);
        if (v > 0x10ffff) overflow = true;
      }
    }
    if (i == digits_start) return false;
    if (i < s.size() && s[i] == ';') {
      ++i;
    } else if (!html) {
      return false;
    }
    if (overflow) v = 0xfffd;
    if (html && v >= 0x80 && v <= 0x9f) v = Cp1252ToUnicode(static_cast<unsigned char>(v));
    *cp = v == 0 ? 0xfffd : v;
    *consumed = i;
    return true;
  }
  // The longest name we know is 6 letters; stop looking soon after that.
  size_t name_start = i;
  while (i < s.size() && i - name_start < 10 && IsAlnum(static_cast<unsigned char>(s[i]))) ++i;
  std::string_view name = s.substr(name_start, i - name_start);
  if (name.empty()) return false;
  if (i < s.size() && s[i] == ';') {
    if (!LookUpName(name, html, cp)) return false;
    *consumed = i + 1;
    return true;
  }
  if (!html) return false;
  // Legacy references without ';' that browsers still honour ("&lt3", "AT&amp T"), unless a
  // letter or '=' follows (as in a URL's query: "?a=1&copy=2&ampx=3").
  for (std::string_view legacy : {"amp", "lt", "gt", "quot", "nbsp"}) {
    if (!name.starts_with(legacy)) continue;
    size_t end = name_start + legacy.size();
    if (end < s.size() && (s[end] == '=' || IsAsciiLetter(static_cast<unsigned char>(s[end])))) return false;
    if (!LookUpName(legacy, html, cp)) return false;
    *consumed = end;
    return true;
  }
  return false;
}

std::string FormatBytes(uint64_t n) {
  struct Unit {
    uint64_t size;
    const char* name;
  };
  static constexpr Unit kUnits[] = {{1ull << 30, "GiB"}, {1ull << 20, "MiB"}, {1ull << 10, "KiB"}};
  for (const Unit& u : kUnits) {
    if (n < u.size) continue;
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.1f", static_cast<double>(n) / static_cast<double>(u.size));
    std::string number = buf;
    if (number.ends_with(".0")) number.resize(number.size() - 2);
    return number + " " + u.name;
  }
  return std::to_string(n) + (n == 1 ? " byte" : " bytes");
}

std::string FormatMillis(int64_t ms) {
  if (ms < 1000) return std::to_string(ms) + " ms";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + " s";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(ms) / 1000.0);
  return buf;
}

}  // namespace mailvault::extract_internal
