#include "capture/journal.h"

#include <algorithm>
#include <unordered_set>

#include "capture/mail_source.h"
#include "core/bytes.h"
#include "core/text.h"

namespace mailvault::capture {
namespace {

char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

std::string LowerCopy(std::string_view s) {
  std::string r(s);
  std::transform(r.begin(), r.end(), r.begin(), Lower);
  return r;
}

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return Lower(x) == Lower(y); });
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// A header block (up to the first empty line) and where its body starts.
struct Headers {
  std::vector<std::pair<std::string, std::string>> fields;  // name, unfolded value
  size_t body = 0;                                          // offset of the body in the input
  bool has_body = false;                                    // an empty line ended the block
};

Headers ParseHeaders(std::string_view s, size_t max_fields = 1000) {
  Headers h;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t eol = s.find('\n', pos);
    size_t next = eol == std::string_view::npos ? s.size() : eol + 1;
    std::string_view line = s.substr(pos, (eol == std::string_view::npos ? s.size() : eol) - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) {
      h.body = next;
      h.has_body = true;
      return h;
    }
    if ((line[0] == ' ' || line[0] == '\t') && !h.fields.empty()) {
      h.fields.back().second += " ";
      h.fields.back().second += Trim(line);
    } else if (size_t colon = line.find(':'); colon != std::string_view::npos && h.fields.size() < max_fields) {
      h.fields.emplace_back(std::string(Trim(line.substr(0, colon))), std::string(Trim(line.substr(colon + 1))));
    }
    pos = next;
  }
  h.body = s.size();
  return h;
}

const std::string* Find(const Headers& h, std::string_view name) {
  for (const auto& [n, v] : h.fields) {
    if (IEquals(n, name)) return &v;
  }
  return nullptr;
}

// "multipart/mixed; boundary=\"x\"" -> type "multipart/mixed", *param = boundary value.
std::string ContentType(const Headers& h, std::string* boundary) {
  const std::string* v = Find(h, "Content-Type");
  if (!v) return "text/plain";
  std::string_view s = *v;
  size_t semi = s.find(';');
  std::string type = LowerCopy(Trim(s.substr(0, semi)));
  if (boundary) {
    boundary->clear();
    // Parameters: find boundary= (case-insensitive), quoted or token.
    std::string lower = LowerCopy(s);
    size_t at = 0;
    while ((at = lower.find("boundary", at)) != std::string::npos) {
      size_t p = at + 8;
      while (p < s.size() && (s[p] == ' ' || s[p] == '\t')) ++p;
      if (p < s.size() && s[p] == '=' && (at == 0 || lower[at - 1] == ';' || lower[at - 1] == ' ' || lower[at - 1] == '\t')) {
        ++p;
        while (p < s.size() && (s[p] == ' ' || s[p] == '\t')) ++p;
        if (p < s.size() && s[p] == '"') {
          size_t q = s.find('"', p + 1);
          *boundary = std::string(s.substr(p + 1, q == std::string_view::npos ? std::string_view::npos : q - p - 1));
        } else {
          size_t e = s.find_first_of("; \t", p);
          *boundary = std::string(s.substr(p, e == std::string_view::npos ? std::string_view::npos : e - p));
        }
        break;
      }
      at = p;
    }
  }
  return type;
}

std::string TransferEncoding(const Headers& h) {
  const std::string* v = Find(h, "Content-Transfer-Encoding");
  return v ? LowerCopy(Trim(*v)) : "7bit";
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = Lower(c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

std::string DecodeQuotedPrintable(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '=') {
      out.push_back(in[i]);
    } else if (i + 2 < in.size() && HexValue(in[i + 1]) >= 0 && HexValue(in[i + 2]) >= 0) {
      out.push_back(static_cast<char>(HexValue(in[i + 1]) * 16 + HexValue(in[i + 2])));
      i += 2;
    } else {
      // A soft line break ("=" at the end of a line) joins the lines; a stray '=' is kept.
      size_t j = i + 1;
      while (j < in.size() && (in[j] == ' ' || in[j] == '\t')) ++j;
      if (j < in.size() && in[j] == '\r') ++j;
      if (j < in.size() && in[j] == '\n') {
        i = j;
      } else if (j >= in.size()) {
        i = j;
      } else {
        out.push_back('=');
      }
    }
  }
  return out;
}

// Decodes a part body by its Content-Transfer-Encoding; false when base64 is broken.
bool DecodeBody(std::string_view body, const std::string& cte, std::string* out) {
  if (cte == "base64") {
    std::string compact;
    compact.reserve(body.size());
    for (char c : body) {
      if (c != '\r' && c != '\n' && c != ' ' && c != '\t') compact.push_back(c);
    }
    return Base64Decode(compact, out);
  }
  if (cte == "quoted-printable") {
    *out = DecodeQuotedPrintable(body);
    return true;
  }
  *out = std::string(body);
  return true;
}

struct Part {
  size_t begin = 0, end = 0;  // the part (headers and body) in the message
};

// Splits a multipart body (RFC 2046 5.1.1): delimiter lines "--boundary", the close
// "--boundary--"; the line break before a delimiter belongs to it. *closed tells whether the
// close delimiter was seen.
std::vector<Part> SplitMultipart(std::string_view msg, size_t body, const std::string& boundary, size_t max_parts, bool* closed) {
  std::vector<Part> parts;
  *closed = false;
  const std::string dash = "--" + boundary;
  size_t pos = body;
  bool in_part = false;
  Part current;
  while (pos < msg.size()) {
    size_t eol = msg.find('\n', pos);
    size_t line_end = eol == std::string_view::npos ? msg.size() : eol;
    size_t next = eol == std::string_view::npos ? msg.size() : eol + 1;
    std::string_view line = msg.substr(pos, line_end - pos);
    if (line.size() >= dash.size() && line.compare(0, dash.size(), dash) == 0) {
      std::string_view rest = line.substr(dash.size());
      bool close = rest.size() >= 2 && rest[0] == '-' && rest[1] == '-';
      if (close) rest.remove_prefix(2);
      if (Trim(rest).empty()) {
        if (in_part) {
          size_t end = pos;
          if (end > current.begin && msg[end - 1] == '\n') --end;
          if (end > current.begin && msg[end - 1] == '\r') --end;
          current.end = end;
          parts.push_back(current);
          if (parts.size() >= max_parts) return parts;
        }
        if (close) {
          *closed = true;
          return parts;
        }
        in_part = true;
        current.begin = next;
      }
    }
    pos = next;
  }
  if (in_part) {
    current.end = msg.size();
    parts.push_back(current);
  }
  return parts;
}

// Takes "Display Name <addr>" or "addr" and gives the lower-cased address.
std::string AddressOf(std::string_view s) {
  s = Trim(s);
  size_t lt = s.rfind('<');
  if (lt != std::string_view::npos) {
    size_t gt = s.find('>', lt);
    s = s.substr(lt + 1, gt == std::string_view::npos ? std::string_view::npos : gt - lt - 1);
  }
  return NormalizeAddress(s);
}

}  // namespace

bool IsJournalReport(std::string_view message) {
  Headers h = ParseHeaders(message);
  return Find(h, "X-MS-Journal-Report") != nullptr;
}

ReportFields ParseReportText(std::string_view text, size_t max_recipients) {
  ReportFields f;
  std::unordered_set<std::string> seen;
  auto add = [&](std::string_view raw) {
    std::string a = AddressOf(raw);
    if (a.empty() || a.find('@') == std::string::npos) return;
    if (seen.count(a)) return;
    if (f.recipients.size() >= max_recipients) {
      f.truncated = true;
      return;
    }
    seen.insert(a);
    f.recipients.push_back(std::move(a));
  };
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    std::string_view line = text.substr(pos, (eol == std::string_view::npos ? text.size() : eol) - pos);
    pos = eol == std::string_view::npos ? text.size() : eol + 1;
    line = Trim(line);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view key = Trim(line.substr(0, colon));
    std::string_view value = Trim(line.substr(colon + 1));
    if (IEquals(key, "Sender")) {
      if (f.sender.empty()) f.sender = AddressOf(value);
    } else if (IEquals(key, "Subject")) {
      if (f.subject.empty()) f.subject = std::string(value);
    } else if (IEquals(key, "Message-Id")) {
      if (f.message_id.empty()) f.message_id = std::string(value);
    } else if (IEquals(key, "To") || IEquals(key, "Cc") || IEquals(key, "Bcc") || IEquals(key, "Recipient")) {
      // "addr", "addr, Expanded: list@x", "addr, Forwarded: original@x": every address named
      // is a recipient of this copy (the list, and whom it was forwarded from, included).
      size_t start = 0;
      bool first = true;
      while (start <= value.size()) {
        size_t comma = value.find(',', start);
        std::string_view seg = Trim(value.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
        if (first) {
          add(seg);
          first = false;
        } else if (size_t c = seg.find(':'); c != std::string_view::npos) {
          std::string_view k = Trim(seg.substr(0, c));
          if (IEquals(k, "Expanded") || IEquals(k, "Forwarded")) add(seg.substr(c + 1));
        }
        if (comma == std::string_view::npos) break;
        start = comma + 1;
      }
    }
  }
  return f;
}

UnwrappedMessage UnwrapJournalReport(std::string_view message, const JournalLimits& limits) {
  UnwrappedMessage u;
  Headers top = ParseHeaders(message);
  u.is_report = Find(top, "X-MS-Journal-Report") != nullptr;
  auto as_received = [&](std::string why) {
    u.message = std::string(message);
    std::string earlier = std::move(u.note);
    u.note = "journal report stored as received: " + why;
    if (!earlier.empty()) u.note += "; " + earlier;
    u.report.clear();
    return u;
  };
  if (!u.is_report) {
    u.message = std::string(message);
    return u;
  }
  std::string boundary;
  std::string type = ContentType(top, &boundary);
  if (type != "multipart/mixed" || boundary.empty()) {
    return as_received("it is " + type + ", not multipart/mixed, so it carries no original");
  }
  bool closed = false;
  std::vector<Part> parts = SplitMultipart(message, top.body, boundary, limits.max_parts, &closed);

  std::string text;
  bool have_text = false;
  const Part* original = nullptr;
  std::string original_cte;
  size_t original_body = 0;
  std::string unexpected;  // a part a journal report does not have
  for (const Part& p : parts) {
    std::string_view bytes = message.substr(p.begin, p.end - p.begin);
    Headers ph = ParseHeaders(bytes);
    std::string pt = ContentType(ph, nullptr);
    if (!have_text && pt == "text/plain") {
      have_text = DecodeBody(bytes.substr(ph.body), TransferEncoding(ph), &text);
    } else if (!original && pt == "message/rfc822") {
      original = &p;
      original_cte = TransferEncoding(ph);
      original_body = p.begin + ph.body;
    } else if (unexpected.empty()) {
      unexpected = pt == "message/rfc822" ? "a second message/rfc822 part" : "a " + pt + " part";
    }
  }
  if (have_text) {
    ReportFields f = ParseReportText(text, limits.max_recipients);
    u.recipients = std::move(f.recipients);
    u.sender = std::move(f.sender);
    if (f.truncated) u.note = "the report names more than " + std::to_string(limits.max_recipients) + " recipients; the rest are not in the envelope";
  }
  if (!original) return as_received("it has no message/rfc822 part (the original is missing)");
  // Only the report text and one original: anything else would be lost by unwrapping (a
  // message merely dressed up as a report, e.g. from outside through BCC journaling).
  if (!unexpected.empty()) return as_received("it carries " + unexpected + " besides the report text and the original");
  if (!closed) return as_received("its multipart body has no closing boundary (it may be truncated)");
  std::string decoded;
  if (!DecodeBody(message.substr(original_body, original->end - original_body), original_cte, &decoded)) {
    return as_received("the attached original's " + original_cte + " encoding is broken");
  }
  if (original_cte == "base64" || original_cte == "quoted-printable") {
    // Decoded, it has the sender's CRLF line ends; the vault keeps mail with LF (as it stores
    // whatever arrives in DATA), so one message has one identity whichever way it came.
    std::string lf;
    lf.reserve(decoded.size());
    for (size_t i = 0; i < decoded.size(); ++i) {
      if (decoded[i] == '\r' && i + 1 < decoded.size() && decoded[i + 1] == '\n') continue;
      lf.push_back(decoded[i]);
    }
    decoded.swap(lf);
  }
  if (Status s = CheckLooksLikeMail(decoded); !s.ok()) {
    return as_received("the attached original is not a message: " + s.error().message());
  }
  if (!have_text) u.note = "the report has no text part naming its recipients; the envelope comes from RCPT TO";
  else if (u.recipients.empty()) u.note = "the report names no recipients; the envelope comes from RCPT TO";
  // Provenance: the report as sent, minus the original it carried. Report and original
  // together are every byte received; a report too big to keep whole is stored as received.
  size_t report_size = original_body + (message.size() - original->end);
  if (report_size > limits.max_report_bytes) {
    return as_received("the report without its original is " + std::to_string(report_size) + " bytes, over the " +
                       std::to_string(limits.max_report_bytes) + " kept as provenance");
  }
  u.message = std::move(decoded);
  u.report.assign(message.substr(0, original_body));
  u.report.append(message.substr(original->end));
  return u;
}

}  // namespace mailvault::capture
