#include "core/message.h"

#include <gmime/gmime.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <mutex>

#include "core/bytes.h"
#include "core/fingerprint.h"
#include "core/message_id.h"
#include "core/text.h"

namespace mailvault {
namespace {

// GObject reference holder.
template <typename T>
struct GObjectUnref {
  void operator()(T* p) const {
    if (p) g_object_unref(p);
  }
};
template <typename T>
using GPtr = std::unique_ptr<T, GObjectUnref<T>>;

struct GFree {
  void operator()(void* p) const { g_free(p); }
};
using GString_ = std::unique_ptr<char, GFree>;

std::string Lower(std::string_view s) {
  std::string r(s);
  std::transform(r.begin(), r.end(), r.begin(), [](unsigned char c) { return std::tolower(c); });
  return r;
}

std::string_view TrimView(std::string_view s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

// One line of input: [start, end) without the line terminator; next is the next line's start.
struct Line {
  std::string_view text;
  size_t next;
};
Line NextLine(std::string_view raw, size_t pos) {
  size_t eol = raw.find('\n', pos);
  size_t next = eol == std::string_view::npos ? raw.size() : eol + 1;
  size_t end = eol == std::string_view::npos ? raw.size() : eol;
  if (end > pos && raw[end - 1] == '\r') --end;
  return {raw.substr(pos, end - pos), next};
}

struct Header {
  std::string name;
  std::string value;  // unfolded: continuation line breaks removed
};

// Reads one header block at pos; leaves pos after the blank line (or at the end).
Status ReadHeaderBlock(std::string_view raw, size_t* pos, uint64_t max_bytes, std::vector<Header>* out,
                       uint64_t* bytes) {
  size_t start = *pos;
  while (*pos < raw.size()) {
    Line line = NextLine(raw, *pos);
    if (line.text.empty()) {
      *pos = line.next;
      break;
    }
    if (line.next - start > max_bytes) {
      return LimitExceeded("a header block is longer than " + std::to_string(max_bytes) +
                           " bytes (limits.max_header_bytes)");
    }
    *pos = line.next;
    if ((line.text[0] == ' ' || line.text[0] == '\t')) {
      if (out && !out->empty()) out->back().value.append(line.text);
      continue;
    }
    size_t colon = line.text.find(':');
    if (colon == std::string_view::npos) {
      // Not a header: the body starts here without the blank line (seen in real mail).
      *pos = static_cast<size_t>(line.text.data() - raw.data());
      break;
    }
    if (out) {
      std::string_view name = line.text.substr(0, colon);
      while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);
      std::string_view value = line.text.substr(colon + 1);
      out->push_back({std::string(name), std::string(value)});
    }
  }
  *bytes = *pos - start;
  return Status::Ok();
}

// "multipart/mixed; boundary=\"abc\"" -> type "multipart/mixed", boundary "abc".
void ParseContentType(std::string_view value, std::string* type, std::string* boundary) {
  size_t semi = value.find(';');
  std::string_view t = value.substr(0, semi);
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.front()))) t.remove_prefix(1);
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.remove_suffix(1);
  *type = Lower(t);
  boundary->clear();
  if (semi == std::string_view::npos) return;
  std::string lower = Lower(value);
  size_t p = lower.find("boundary", semi);
  while (p != std::string::npos) {
    size_t q = p + 8;
    while (q < value.size() && (value[q] == ' ' || value[q] == '\t')) ++q;
    if (q < value.size() && value[q] == '=') {
      ++q;
      while (q < value.size() && (value[q] == ' ' || value[q] == '\t')) ++q;
      if (q < value.size() && value[q] == '"') {
        size_t e = value.find('"', q + 1);
        *boundary = std::string(value.substr(q + 1, e == std::string_view::npos ? std::string_view::npos : e - q - 1));
      } else {
        size_t e = q;
        while (e < value.size() && value[e] != ';' && !std::isspace(static_cast<unsigned char>(value[e]))) ++e;
        *boundary = std::string(value.substr(q, e - q));
      }
      return;
    }
    p = lower.find("boundary", p + 8);
  }
}

}  // namespace

Result<MimeShape> ScanMimeShape(std::string_view raw, const MessageLimits& limits) {
  struct Frame {
    std::string boundary;
    int depth;
  };
  std::vector<Frame> frames;
  MimeShape shape;
  size_t pos = 0;

  // Reads the headers of one entity at `depth`, and of any message/rfc822 chain inside it.
  auto entity = [&](int depth) -> Status {
    for (;;) {
      if (++shape.parts > limits.max_mime_parts) {
        return LimitExceeded("the message has more than " + std::to_string(limits.max_mime_parts) +
                             " MIME parts (limits.max_mime_parts)");
      }
      if (depth > limits.max_mime_depth) {
        return LimitExceeded("the message nests MIME parts more than " + std::to_string(limits.max_mime_depth) +
                             " levels deep (limits.max_mime_depth)");
      }
      shape.depth = std::max(shape.depth, depth);
      std::vector<Header> headers;
      uint64_t bytes = 0;
      MV_RETURN_IF_ERROR(ReadHeaderBlock(raw, &pos, limits.max_header_bytes, &headers, &bytes));
      if (shape.parts == 1) shape.header_bytes = bytes;
      if (pos >= raw.size() && (raw.empty() || raw.back() != '\n')) {
        shape.truncation = "it ends mid-line inside a header block";
      }
      std::string type, boundary;
      for (const Header& h : headers) {
        if (IEquals(h.name, "content-type")) ParseContentType(h.value, &type, &boundary);
      }
      if (type.rfind("multipart/", 0) == 0 && !boundary.empty()) {
        frames.push_back({boundary, depth});
        return Status::Ok();
      }
      if (type != "message/rfc822" && type != "message/global") return Status::Ok();
      ++depth;  // the body is itself a message: its headers start right here
    }
  };

  MV_RETURN_IF_ERROR(entity(0));
  while (pos < raw.size() && !frames.empty()) {
    Line line = NextLine(raw, pos);
    pos = line.next;
    if (line.text.size() < 3 || line.text[0] != '-' || line.text[1] != '-') continue;
    std::string_view rest = line.text.substr(2);
    while (!rest.empty() && (rest.back() == ' ' || rest.back() == '\t')) rest.remove_suffix(1);
    for (size_t i = frames.size(); i-- > 0;) {
      const std::string& b = frames[i].boundary;
      if (rest.size() < b.size() || rest.compare(0, b.size(), b) != 0) continue;
      std::string_view tail = rest.substr(b.size());
      if (tail.empty()) {
        int depth = frames[i].depth + 1;
        frames.resize(i + 1);
        MV_RETURN_IF_ERROR(entity(depth));
        break;
      }
      if (tail == "--") {
        frames.resize(i);
        break;
      }
    }
  }
  // A missing closing boundary alone is everyday spam; with the last line cut off mid-way, the
  // bytes were cut short.
  if (!frames.empty() && shape.truncation.empty() && !raw.empty() && raw.back() != '\n') {
    shape.truncation = "it ends mid-line inside a multipart whose closing boundary (\"--" + frames.back().boundary +
                       "--\") is missing";
  }
  return shape;
}

namespace {

std::once_flag g_init_once;

void AppendAddresses(InternetAddressList* list, std::vector<Address>* out, int depth = 0) {
  if (!list || depth > 2) return;
  int n = internet_address_list_length(list);
  for (int i = 0; i < n; ++i) {
    InternetAddress* ia = internet_address_list_get_address(list, i);
    if (INTERNET_ADDRESS_IS_GROUP(ia)) {
      AppendAddresses(internet_address_group_get_members(INTERNET_ADDRESS_GROUP(ia)), out, depth + 1);
      continue;
    }
    if (!INTERNET_ADDRESS_IS_MAILBOX(ia)) continue;
    Address a;
    const char* name = internet_address_get_name(ia);
    if (name) a.name = ToValidUtf8(name);
    const char* addr = internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(ia));
    if (addr) a.address = NormalizeAddress(ToValidUtf8(addr));
    if (!a.address.empty() || !a.name.empty()) out->push_back(std::move(a));
  }
}

std::vector<Address> ParseAddressHeader(const std::string& value) {
  std::vector<Address> out;
  InternetAddressList* list = internet_address_list_parse(nullptr, value.c_str());
  if (list) {
    AppendAddresses(list, &out);
    g_object_unref(list);
  }
  return out;
}

// "Thu, 22 Aug 0102 12:07:35 +0800": mailers with a Y2K bug wrote tm_year (years since 1900)
// as the year. RFC 5322 (4.3) reads a three-digit year by adding 1900; a zero-padded one is the
// same bug. Returns the value with such a year repaired, or "" when there is none.
std::string RepairY2kYear(const std::string& value) {
  size_t i = 0;
  while (i < value.size()) {
    while (i < value.size() && value[i] == ' ') ++i;
    size_t start = i;
    while (i < value.size() && value[i] != ' ') ++i;
    std::string_view tok(value.data() + start, i - start);
    if ((tok.size() == 3 || (tok.size() == 4 && tok[0] == '0')) &&
        tok.find_first_not_of("0123456789") == std::string_view::npos) {
      int year = std::stoi(std::string(tok)) + 1900;
      return value.substr(0, start) + std::to_string(year) + value.substr(i);
    }
  }
  return "";
}

std::optional<int64_t> ParseDate(const std::string& value, int* offset_minutes) {
  GDateTime* dt = g_mime_utils_header_decode_date(value.c_str());
  if (!dt || g_date_time_to_unix(dt) <= 0) {
    std::string repaired = RepairY2kYear(value);
    if (!repaired.empty()) {
      if (dt) g_date_time_unref(dt);
      dt = g_mime_utils_header_decode_date(repaired.c_str());
    }
  }
  if (!dt) return std::nullopt;
  int64_t t = g_date_time_to_unix(dt);
  *offset_minutes = static_cast<int>(g_date_time_get_utc_offset(dt) / G_TIME_SPAN_MINUTE);
  g_date_time_unref(dt);
  // GMime answers the epoch for dates it cannot read at all.
  if (t == 0) return std::nullopt;
  return t;
}

std::string DecodeText(const std::string& value) {
  GString_ decoded(g_mime_utils_header_decode_text(nullptr, value.c_str()));
  std::string s = decoded ? decoded.get() : value;
  // Folding whitespace left by unfolding, trimmed.
  size_t b = s.find_first_not_of(" \t");
  size_t e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : ToValidUtf8(s.substr(b, e - b + 1));
}

void FillSummaryFromHeaders(const std::vector<Header>& headers, std::string_view raw, MessageSummary* s,
                            ParsedMessage* full) {
  bool have_id = false, have_from = false, have_date = false, have_subject = false;
  for (const Header& h : headers) {
    const std::string& n = h.name;
    if (!have_id && IEquals(n, "message-id")) {
      s->message_id = NormalizeMessageId(h.value);
      have_id = !s->message_id.empty();
    } else if (!have_from && IEquals(n, "from")) {
      auto addrs = ParseAddressHeader(h.value);
      if (!addrs.empty()) {
        s->from = addrs[0].address;
        s->from_name = addrs[0].name;
      }
      if (full) full->from = std::move(addrs);
      have_from = true;
    } else if (!have_date && IEquals(n, "date")) {
      s->date = ParseDate(h.value, &s->date_utc_offset_minutes);
      have_date = s->date.has_value();
    } else if (!have_subject && IEquals(n, "subject")) {
      s->subject = DecodeText(h.value);
      have_subject = true;
    } else if (IEquals(n, "content-disposition")) {
      if (Lower(h.value).find("attachment") != std::string::npos) s->has_attachments = true;
    } else if (full) {
      if (IEquals(n, "to")) {
        auto a = ParseAddressHeader(h.value);
        full->to.insert(full->to.end(), a.begin(), a.end());
      } else if (IEquals(n, "cc")) {
        auto a = ParseAddressHeader(h.value);
        full->cc.insert(full->cc.end(), a.begin(), a.end());
      } else if (IEquals(n, "bcc")) {
        auto a = ParseAddressHeader(h.value);
        full->bcc.insert(full->bcc.end(), a.begin(), a.end());
      } else if (IEquals(n, "sender")) {
        full->sender = ParseAddressHeader(h.value);
      } else if (IEquals(n, "reply-to")) {
        full->reply_to = ParseAddressHeader(h.value);
      } else if (IEquals(n, "delivered-to")) {
        auto a = ParseAddressHeader(h.value);
        full->delivered_to.insert(full->delivered_to.end(), a.begin(), a.end());
      } else if (IEquals(n, "in-reply-to")) {
        full->in_reply_to = ParseMessageIdList(h.value);
      } else if (IEquals(n, "references")) {
        full->references = ParseMessageIdList(h.value);
      }
    }
  }
  if (!have_id) {
    s->message_id = SyntheticMessageId(raw);
    s->message_id_synthetic = true;
  }
}

// CRLF -> LF, trailing blanks of each line and trailing empty lines dropped: what survives a
// server re-encoding a text part (quoted-printable <-> base64, line ending changes).
std::string NormalizeTextForHash(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    std::string_view line = text.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
    out.append(line);
    out.push_back('\n');
    if (eol == std::string_view::npos) break;
    pos = eol + 1;
  }
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// CRLF and a bare CR become LF: what IMAP's CRLF-only transport does to stored line ends,
// undone (a bare CR reaches the server as a line break: recovery's ToCrlf, Cyrus refuses it).
std::string NormalizeLineEnds(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '\r') {
      if (i + 1 < in.size() && in[i + 1] == '\n') continue;
      out.push_back('\n');
      continue;
    }
    out.push_back(in[i]);
  }
  return out;
}

std::string DecodedContent(GMimePart* part) {
  GMimeDataWrapper* content = g_mime_part_get_content(part);
  if (!content) return {};
  GPtr<GMimeStream> mem(g_mime_stream_mem_new());
  g_mime_data_wrapper_write_to_stream(content, mem.get());
  GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem.get()));
  return std::string(reinterpret_cast<const char*>(bytes->data), bytes->len);
}

struct Walker {
  const MessageLimits& limits;
  const ParseOptions& options;
  ParsedMessage* msg;
  Status status;

  void Walk(GMimeObject* obj, int depth) {
    if (!status.ok() || !obj) return;
    if (depth > limits.max_mime_depth || static_cast<int>(msg->parts.size()) >= limits.max_mime_parts) {
      status = LimitExceeded("the message's MIME structure exceeds limits.max_mime_depth or limits.max_mime_parts");
      return;
    }
    MimePart p;
    p.depth = depth;
    GMimeContentType* ct = g_mime_object_get_content_type(obj);
    if (ct) {
      GString_ type(g_mime_content_type_get_mime_type(ct));
      if (type) p.content_type = Lower(type.get());
      const char* cs = g_mime_content_type_get_parameter(ct, "charset");
      if (cs) p.charset = Lower(cs);
    }
    GMimeContentDisposition* cd = g_mime_object_get_content_disposition(obj);
    if (cd && g_mime_content_disposition_get_disposition(cd)) {
      p.disposition = Lower(g_mime_content_disposition_get_disposition(cd));
    }

    if (GMIME_IS_MULTIPART(obj)) {
      p.is_multipart = true;
      msg->parts.push_back(std::move(p));
      GMimeMultipart* mp = GMIME_MULTIPART(obj);
      int n = g_mime_multipart_get_count(mp);
      for (int i = 0; i < n && status.ok(); ++i) Walk(g_mime_multipart_get_part(mp, i), depth + 1);
      return;
    }
    if (GMIME_IS_MESSAGE_PART(obj)) {
      p.is_attachment = true;
      // A forwarded message is an attachment to the reader when marked as one (or named).
      if (p.disposition == "attachment" || (cd && g_mime_content_disposition_get_parameter(cd, "filename")) ||
          (ct && g_mime_content_type_get_parameter(ct, "name"))) {
        msg->summary.has_attachments = true;
      }
      msg->parts.push_back(std::move(p));
      GMimeMessage* inner = g_mime_message_part_get_message(GMIME_MESSAGE_PART(obj));
      if (inner) Walk(g_mime_message_get_mime_part(inner), depth + 1);
      return;
    }
    if (!GMIME_IS_PART(obj)) {
      msg->parts.push_back(std::move(p));
      return;
    }
    GMimePart* part = GMIME_PART(obj);
    if (const char* fn = g_mime_part_get_filename(part)) p.filename = ToValidUtf8(fn);
    p.is_attachment = p.disposition == "attachment" || !p.filename.empty();
    bool is_text = !p.is_attachment && p.content_type.rfind("text/", 0) == 0;
    if (is_text && GMIME_IS_TEXT_PART(obj)) {
      GString_ text(g_mime_text_part_get_text(GMIME_TEXT_PART(obj)));
      std::string utf8 = ToValidUtf8(text ? std::string_view(text.get()) : std::string_view());
      p.decoded_size = utf8.size();
      if (options.content_hashes) p.content_hash = HexEncode(Sha256Of(NormalizeTextForHash(NormalizeLineEnds(utf8))));
      if (options.collect_text) {
        msg->text.push_back(std::move(utf8));
        msg->text_part.push_back(msg->parts.size());
      }
    } else {
      std::string bytes = DecodedContent(part);
      p.decoded_size = bytes.size();
      if (options.content_hashes) {
        // Outside base64 the line endings belong to the transport: IMAP hands back CRLF what was
        // stored with LF, so they are made LF before hashing (a signature, a calendar part).
        GMimeContentEncoding enc = g_mime_part_get_content_encoding(part);
        const bool transport_lines = enc != GMIME_CONTENT_ENCODING_BASE64 && enc != GMIME_CONTENT_ENCODING_UUENCODE;
        p.content_hash = HexEncode(Sha256Of(transport_lines ? NormalizeLineEnds(bytes) : bytes));
      }
      if (p.is_attachment && options.collect_attachments_up_to) {
        ParsedMessage::AttachmentBytes a;
        a.part = msg->parts.size();
        a.over_limit = bytes.size() > options.collect_attachments_up_to;
        if (!a.over_limit) a.bytes = std::move(bytes);
        msg->attachments.push_back(std::move(a));
      }
    }
    if (p.is_attachment) msg->summary.has_attachments = true;
    msg->parts.push_back(std::move(p));
  }
};

// The most common mail of all, a single text/plain part of 7-bit text, needs no MIME parser:
// its body is its text, byte for byte, whatever any decoder would make of it. Fills msg as the
// GMime walk would (without content hashes, which only restore dedup needs) and returns true;
// returns false for everything else.
bool PlainAsciiBody(const std::vector<Header>& headers, std::string_view body, ParsedMessage* msg) {
  std::string charset;
  for (const Header& h : headers) {
    if (IEquals(h.name, "content-disposition")) return false;
    if (IEquals(h.name, "content-transfer-encoding")) {
      std::string cte = Lower(TrimView(h.value));
      if (cte != "7bit" && cte != "8bit") return false;
    } else if (IEquals(h.name, "content-type")) {
      std::string v = Lower(h.value);
      std::string_view type = TrimView(std::string_view(v).substr(0, v.find(';')));
      if (type != "text/plain") return false;
      size_t at = v.find("charset=");
      if (at != std::string::npos) {
        std::string_view cs = std::string_view(v).substr(at + 8);
        cs = cs.substr(0, cs.find_first_of("; \t\r\n"));
        if (!cs.empty() && cs.front() == '"') cs = cs.substr(1, cs.find('"', 1) == std::string_view::npos ? cs.size() - 1 : cs.find('"', 1) - 1);
        charset = std::string(cs);
        if (charset != "us-ascii" && charset != "utf-8" && charset != "iso-8859-1") return false;
      }
    }
  }
  for (unsigned char c : body) {
    if (c >= 0x80 || c == 0) return false;
  }
  MimePart p;
  p.content_type = "text/plain";
  p.charset = charset;
  p.decoded_size = body.size();
  msg->parts.push_back(std::move(p));
  msg->text.emplace_back(body);
  msg->text_part.push_back(0);
  return true;
}

}  // namespace

void InitMessageParsing() {
  std::call_once(g_init_once, [] { g_mime_init(); });
}

std::string SyntheticMessageId(std::string_view raw) {
  std::vector<Header> headers;
  size_t pos = 0;
  uint64_t bytes = 0;
  (void)ReadHeaderBlock(raw, &pos, UINT64_MAX, &headers, &bytes);
  Sha256 h;
  for (const char* name : {"from", "date", "subject"}) {
    for (const Header& hd : headers) {
      if (IEquals(hd.name, name)) {
        h.Update(hd.value);
        break;
      }
    }
    h.Update("\n");
  }
  h.Update(NormalizeTextForHash(raw.substr(pos)));
  return "<" + HexEncode(h.Final()).substr(0, 32) + "@synthetic.mailvault.invalid>";
}

std::string ParsedMessage::HeaderKey() const {
  return summary.message_id + " " + (summary.date ? std::to_string(*summary.date) : std::string("-"));
}

std::set<std::string> ParsedMessage::ContentHashes() const {
  std::set<std::string> s;
  for (const MimePart& p : parts) {
    if (!p.content_hash.empty() && p.decoded_size > 0) s.insert(p.content_hash);
  }
  return s;
}

MessageSummary SummarizeHeaders(std::string_view raw) {
  InitMessageParsing();
  std::vector<Header> headers;
  size_t pos = 0;
  uint64_t bytes = 0;
  MessageSummary s;
  (void)ReadHeaderBlock(raw, &pos, UINT64_MAX, &headers, &bytes);
  FillSummaryFromHeaders(headers, raw, &s, nullptr);
  return s;
}

Result<ParsedMessage> ParseMessage(std::string_view raw, const MessageLimits& limits, const ParseOptions& options) {
  InitMessageParsing();
  if (raw.size() > limits.max_message_bytes) {
    return LimitExceeded("the message is " + std::to_string(raw.size()) + " bytes, over the limit of " +
                         std::to_string(limits.max_message_bytes) + " (limits.max_message_bytes)");
  }
  ParsedMessage msg;
  MV_ASSIGN_OR_RETURN(msg.shape, ScanMimeShape(raw, limits));

  std::vector<Header> headers;
  size_t pos = 0;
  uint64_t bytes = 0;
  MV_RETURN_IF_ERROR(ReadHeaderBlock(raw, &pos, limits.max_header_bytes, &headers, &bytes));
  FillSummaryFromHeaders(headers, raw, &msg.summary, &msg);
  if (!options.content_hashes && options.collect_text && PlainAsciiBody(headers, raw.substr(pos), &msg)) return msg;

  GPtr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(raw.data(), raw.size()));
  GPtr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));
  g_mime_parser_set_format(parser.get(), GMIME_FORMAT_MESSAGE);
  GPtr<GMimeMessage> gm(g_mime_parser_construct_message(parser.get(), nullptr));
  if (!gm) return MalformedInput("GMime found no message in these bytes");
  Walker walker{limits, options, &msg, Status::Ok()};
  walker.Walk(g_mime_message_get_mime_part(gm.get()), 0);
  MV_RETURN_IF_ERROR(walker.status);
  return msg;
}

}  // namespace mailvault
