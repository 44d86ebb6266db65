#include "core/message_id.h"

#include <algorithm>
#include <cctype>

namespace mailvault {
namespace {

// Drops comments "(...)", honouring nesting and backslash quoting, and unfolds.
std::string StripComments(std::string_view in) {
  std::string out;
  int depth = 0;
  bool in_quote = false;
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '\\' && i + 1 < in.size()) {
      if (!depth) {
        out.push_back(c);
        out.push_back(in[i + 1]);
      }
      ++i;
      continue;
    }
    if (!depth && c == '"') in_quote = !in_quote;
    if (!in_quote && c == '(') {
      ++depth;
      continue;
    }
    if (!in_quote && c == ')' && depth) {
      --depth;
      continue;
    }
    if (depth) continue;
    out.push_back(c == '\r' || c == '\n' || c == '\t' ? ' ' : c);
  }
  return out;
}

std::string NormalizeBare(std::string_view id) {
  std::string s;
  for (char c : id) {
    if (c == ' ' || c == '"' || c == '<' || c == '>') continue;
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) continue;
    s.push_back(c);
  }
  if (s.empty()) return "";
  size_t at = s.rfind('@');
  if (at != std::string::npos) {
    std::transform(s.begin() + at + 1, s.end(), s.begin() + at + 1,
                   [](unsigned char c) { return std::tolower(c); });
  }
  return "<" + s + ">";
}

}  // namespace

std::string NormalizeMessageId(std::string_view header_value) {
  std::string v = StripComments(header_value);
  size_t lt = v.find('<');
  if (lt != std::string::npos) {
    size_t gt = v.find('>', lt + 1);
    // An unterminated "<abc@x" still names an id: take the rest.
    std::string_view inner = std::string_view(v).substr(lt + 1, gt == std::string::npos ? std::string::npos : gt - lt - 1);
    return NormalizeBare(inner);
  }
  // No brackets: some mailers write the bare addr-spec. Take the first word.
  std::string_view t = v;
  while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
  size_t sp = t.find(' ');
  return NormalizeBare(t.substr(0, sp));
}

std::vector<std::string> ParseMessageIdList(std::string_view header_value) {
  std::string v = StripComments(header_value);
  std::vector<std::string> out;
  size_t pos = 0;
  while ((pos = v.find('<', pos)) != std::string::npos) {
    size_t gt = v.find('>', pos + 1);
    if (gt == std::string::npos) break;
    std::string id = NormalizeBare(std::string_view(v).substr(pos + 1, gt - pos - 1));
    if (!id.empty() && std::find(out.begin(), out.end(), id) == out.end()) out.push_back(std::move(id));
    pos = gt + 1;
  }
  return out;
}

}  // namespace mailvault
