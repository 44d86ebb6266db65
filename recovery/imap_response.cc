#include "recovery/imap_response.h"

#include <cctype>

namespace mailvault::recovery {
namespace {

bool EqualsNoCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::toupper(static_cast<unsigned char>(a[i])) != std::toupper(static_cast<unsigned char>(b[i]))) return false;
  }
  return true;
}

std::string Upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

// The literal announced at the end of a line segment ("... {123}" or "{123+}"), if any.
std::optional<uint64_t> TrailingLiteral(std::string_view seg) {
  if (seg.empty() || seg.back() != '}') return std::nullopt;
  size_t open = seg.rfind('{');
  if (open == std::string_view::npos) return std::nullopt;
  std::string_view digits = seg.substr(open + 1, seg.size() - open - 2);
  if (!digits.empty() && (digits.back() == '+' || digits.back() == '-')) digits.remove_suffix(1);
  if (digits.empty()) return std::nullopt;
  uint64_t n = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    // Past 19 digits it is over any limit: saturate rather than wrap.
    n = n > UINT64_MAX / 10 - 1 ? UINT64_MAX : n * 10 + static_cast<uint64_t>(c - '0');
  }
  return n;
}

class TokenParser {
 public:
  TokenParser(std::string_view line, const std::vector<std::string>& literals, const ImapLimits& limits)
      : s_(line), literals_(literals), limits_(limits) {}

  Result<std::vector<ImapToken>> All() {
    std::vector<ImapToken> out;
    MV_RETURN_IF_ERROR(Sequence(&out, 0, false));
    return out;
  }

 private:
  Status Sequence(std::vector<ImapToken>* out, size_t depth, bool in_list) {
    for (;;) {
      while (i_ < s_.size() && s_[i_] == ' ') ++i_;
      if (i_ >= s_.size()) {
        if (in_list) return MalformedInput("IMAP response: a \"(\" is never closed");
        return Status::Ok();
      }
      char c = s_[i_];
      if (c == ')') {
        if (!in_list) return MalformedInput("IMAP response: \")\" without \"(\"");
        ++i_;
        return Status::Ok();
      }
      ImapToken t;
      if (c == '(') {
        if (depth + 1 > limits_.max_depth) return LimitExceeded("IMAP response nested deeper than " + std::to_string(limits_.max_depth));
        ++i_;
        t.kind = ImapToken::Kind::kList;
        MV_RETURN_IF_ERROR(Sequence(&t.children, depth + 1, true));
      } else if (c == '"') {
        t.kind = ImapToken::Kind::kString;
        ++i_;
        bool closed = false;
        while (i_ < s_.size()) {
          char d = s_[i_++];
          if (d == '\\' && i_ < s_.size()) {
            t.text.push_back(s_[i_++]);
          } else if (d == '"') {
            closed = true;
            break;
          } else {
            t.text.push_back(d);
          }
        }
        if (!closed) return MalformedInput("IMAP response: a quoted string is never closed");
      } else if (c == '\0') {
        size_t end = s_.find('\0', i_ + 1);
        if (end == std::string_view::npos) return Error(ErrorCode::kInternal, "literal marker without its end");
        size_t index = std::stoul(std::string(s_.substr(i_ + 1, end - i_ - 1)));
        if (index >= literals_.size()) return Error(ErrorCode::kInternal, "literal marker out of range");
        t.kind = ImapToken::Kind::kString;
        t.text = literals_[index];
        i_ = end + 1;
      } else {
        // An atom; a section in brackets ("BODY[HEADER.FIELDS (DATE)]") is part of it, spaces
        // and parentheses included.
        size_t start = i_;
        int brackets = 0;
        while (i_ < s_.size()) {
          char d = s_[i_];
          if (d == '[') ++brackets;
          else if (d == ']' && brackets > 0) --brackets;
          else if (brackets == 0 && (d == ' ' || d == '(' || d == ')' || d == '"' || d == '\0')) break;
          ++i_;
        }
        t.text = std::string(s_.substr(start, i_ - start));
        t.kind = EqualsNoCase(t.text, "NIL") ? ImapToken::Kind::kNil : ImapToken::Kind::kAtom;
        // "BODY[...]" followed by "<origin>" stays one atom: nothing to do, no space between.
      }
      out->push_back(std::move(t));
    }
  }

  std::string_view s_;
  const std::vector<std::string>& literals_;
  const ImapLimits& limits_;
  size_t i_ = 0;
};

}  // namespace

bool ImapToken::atom_is(std::string_view s) const { return kind == Kind::kAtom && EqualsNoCase(text, s); }

std::string ImapResponse::code_name() const { return Upper(code.substr(0, code.find(' '))); }

void ImapResponseReader::Feed(std::string_view bytes) {
  // Drop what was consumed once it is most of the buffer (amortised O(1) per byte).
  if (pos_ > (1 << 20) && pos_ * 2 > buf_.size()) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  buf_.append(bytes);
}

Result<std::vector<ImapToken>> ParseImapTokens(std::string_view line, const std::vector<std::string>& literals,
                                               const ImapLimits& limits) {
  return TokenParser(line, literals, limits).All();
}

Result<std::optional<ImapResponse>> ImapResponseReader::Next() {
  // Find the whole response first: line segments and the literals between them.
  std::string line;
  std::vector<std::string> literals;
  size_t at = pos_;
  // Checked as soon as the bytes seen (or a literal announced) say the response is over the
  // limit, not when it is complete: the point is not to buffer it.
  auto too_big = [&](uint64_t bytes) { return bytes > limits_.max_response_bytes; };
  auto over = [&] {
    return LimitExceeded("an IMAP response over " + std::to_string(limits_.max_response_bytes) +
                         " bytes (limits.max_response_bytes)");
  };
  for (;;) {
    size_t crlf = buf_.find("\r\n", at);
    if (crlf == std::string::npos) {
      if (buf_.size() - at > limits_.max_line_bytes) {
        return LimitExceeded("an IMAP response line over " + std::to_string(limits_.max_line_bytes) + " bytes");
      }
      if (too_big(buf_.size() - pos_)) return over();
      return std::optional<ImapResponse>();
    }
    if (crlf - at > limits_.max_line_bytes) {
      return LimitExceeded("an IMAP response line over " + std::to_string(limits_.max_line_bytes) + " bytes");
    }
    if (too_big(crlf + 2 - pos_)) return over();
    std::string_view seg(buf_.data() + at, crlf - at);
    if (seg.find('\0') != std::string_view::npos) return MalformedInput("IMAP response: a NUL outside a literal");
    std::optional<uint64_t> lit = TrailingLiteral(seg);
    if (!lit) {
      line.append(seg);
      at = crlf + 2;
      break;
    }
    if (*lit > limits_.max_literal_bytes) {
      return LimitExceeded("an IMAP literal of " + std::to_string(*lit) + " bytes, over the limit of " +
                           std::to_string(limits_.max_literal_bytes));
    }
    if (literals.size() >= limits_.max_literals) return LimitExceeded("more than " + std::to_string(limits_.max_literals) + " literals in one IMAP response");
    size_t data = crlf + 2;
    // The literal and at least the CRLF that ends the response after it (*lit is at most
    // max_literal_bytes: no overflow).
    if (too_big(data - pos_ + *lit + 2)) return over();
    if (buf_.size() - data < *lit) return std::optional<ImapResponse>();  // the literal is still arriving
    line.append(seg.substr(0, seg.rfind('{')));
    line += '\0' + std::to_string(literals.size()) + '\0';
    literals.emplace_back(buf_.substr(data, *lit));
    at = data + *lit;
  }
  pos_ = at;

  ImapResponse r;
  size_t sp = line.find(' ');
  std::string first = line.substr(0, sp);
  std::string rest = sp == std::string::npos ? "" : line.substr(sp + 1);
  if (first == "+") {
    r.kind = ImapResponse::Kind::kContinuation;
    r.text = rest;
    return std::optional<ImapResponse>(std::move(r));
  }
  if (first.empty()) return MalformedInput("IMAP response: an empty line");
  if (first == "*") {
    r.kind = ImapResponse::Kind::kUntagged;
  } else {
    r.kind = ImapResponse::Kind::kTagged;
    r.tag = first;
  }
  size_t sp2 = rest.find(' ');
  std::string word = Upper(rest.substr(0, sp2));
  if (word == "OK" || word == "NO" || word == "BAD" || word == "PREAUTH" || word == "BYE") {
    // Status responses carry human text, which is not tokenised (it may hold anything).
    r.status = word;
    std::string text = sp2 == std::string::npos ? "" : rest.substr(sp2 + 1);
    if (!text.empty() && text[0] == '[') {
      size_t close = text.find(']');
      if (close == std::string::npos) return MalformedInput("IMAP response: a response code without \"]\"");
      r.code = text.substr(1, close - 1);
      text = close + 1 < text.size() && text[close + 1] == ' ' ? text.substr(close + 2) : text.substr(close + 1);
    }
    r.text = text;
    return std::optional<ImapResponse>(std::move(r));
  }
  if (r.kind == ImapResponse::Kind::kTagged) return MalformedInput("IMAP response: a tagged response without OK, NO or BAD");
  MV_ASSIGN_OR_RETURN(r.tokens, ParseImapTokens(rest, literals, limits_));
  return std::optional<ImapResponse>(std::move(r));
}

std::string ImapQuote(std::string_view s) {
  bool plain = s.size() < 1024;
  for (unsigned char c : s) plain = plain && c >= 0x20 && c < 0x7f;
  if (plain) {
    std::string out = "\"";
    for (char c : s) {
      if (c == '"' || c == '\\') out.push_back('\\');
      out.push_back(c);
    }
    return out + "\"";
  }
  return "{" + std::to_string(s.size()) + "+}\r\n" + std::string(s);
}

}  // namespace mailvault::recovery
