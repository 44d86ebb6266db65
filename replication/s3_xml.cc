#include "replication/s3_xml.h"

#include <charconv>

namespace mailvault::replication {
namespace {

bool ParseU64(std::string_view s, uint64_t* out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

std::string Lower(std::string s) {
  for (char& c : s) c = (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c;
  return s;
}

Status CheckSize(std::string_view body) {
  if (body.size() > kMaxS3ResponseBytes) {
    return LimitExceeded("the S3 server's answer is " + std::to_string(body.size()) + " bytes, more than the " +
                         std::to_string(kMaxS3ResponseBytes) + " a listing may take");
  }
  return Status::Ok();
}

S3ListPage::Item ItemOf(std::string_view block, bool marker) {
  S3ListPage::Item item;
  item.key = XmlText(block, "Key").value_or("");
  uint64_t size = 0;
  if (ParseU64(XmlText(block, "Size").value_or("0"), &size)) item.size = size;
  item.version_id = XmlText(block, "VersionId").value_or("");
  item.delete_marker = marker;
  return item;
}

}  // namespace

std::vector<std::string_view> XmlElements(std::string_view xml, std::string_view tag) {
  std::vector<std::string_view> out;
  const std::string open = "<" + std::string(tag);
  const std::string close = "</" + std::string(tag) + ">";
  size_t pos = 0;
  while (out.size() < kMaxS3Elements) {
    size_t at = xml.find(open, pos);
    if (at == std::string_view::npos) break;
    size_t after = at + open.size();
    if (after >= xml.size()) break;
    char c = xml[after];
    if (c != '>' && c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '/') {  // <KeyMarker> is not <Key>
      pos = after;
      continue;
    }
    size_t gt = xml.find('>', after);
    if (gt == std::string_view::npos) break;
    if (xml[gt - 1] == '/') {  // <Tag/>: empty
      out.emplace_back();
      pos = gt + 1;
      continue;
    }
    size_t end = xml.find(close, gt + 1);
    if (end == std::string_view::npos) break;
    out.push_back(xml.substr(gt + 1, end - gt - 1));
    pos = end + close.size();
  }
  return out;
}

std::optional<std::string> XmlText(std::string_view xml, std::string_view tag) {
  auto all = XmlElements(xml, tag);
  if (all.empty()) return std::nullopt;
  return XmlUnescape(all.front());
}

std::string XmlUnescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '&') {
      out.push_back(s[i]);
      continue;
    }
    size_t semi = s.find(';', i);
    if (semi == std::string_view::npos || semi - i > 10) {
      out.push_back('&');
      continue;
    }
    std::string_view name = s.substr(i + 1, semi - i - 1);
    if (name == "amp") out.push_back('&');
    else if (name == "lt") out.push_back('<');
    else if (name == "gt") out.push_back('>');
    else if (name == "quot") out.push_back('"');
    else if (name == "apos") out.push_back('\'');
    else if (name.size() >= 2 && name[0] == '#') {
      uint64_t cp = 0;
      bool ok = name[1] == 'x' ? std::from_chars(name.data() + 2, name.data() + name.size(), cp, 16).ec == std::errc()
                               : ParseU64(name.substr(1), &cp);
      if (!ok || cp == 0 || cp > 0x10FFFF) {
        out.append(s.substr(i, semi - i + 1));
      } else if (cp < 0x80) {
        out.push_back(char(cp));
      } else if (cp < 0x800) {
        out.push_back(char(0xC0 | (cp >> 6)));
        out.push_back(char(0x80 | (cp & 0x3F)));
      } else if (cp < 0x10000) {
        out.push_back(char(0xE0 | (cp >> 12)));
        out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(char(0x80 | (cp & 0x3F)));
      } else {
        out.push_back(char(0xF0 | (cp >> 18)));
        out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(char(0x80 | (cp & 0x3F)));
      }
    } else {
      out.append(s.substr(i, semi - i + 1));
    }
    i = semi;
  }
  return out;
}

S3ErrorBody ParseS3Error(std::string_view body) {
  S3ErrorBody e;
  if (body.size() > kMaxS3ResponseBytes) return e;
  auto errors = XmlElements(body, "Error");
  if (errors.empty()) return e;
  e.code = XmlText(errors.front(), "Code").value_or("");
  e.message = XmlText(errors.front(), "Message").value_or("");
  if (e.message.size() > 500) e.message.resize(500);
  return e;
}

Result<S3ListPage> ParseListObjects(std::string_view body) {
  MV_RETURN_IF_ERROR(CheckSize(body));
  if (body.find("<ListBucketResult") == std::string_view::npos) {
    return MalformedInput("the S3 server's answer to a listing is not a ListBucketResult");
  }
  S3ListPage page;
  for (std::string_view block : XmlElements(body, "Contents")) page.items.push_back(ItemOf(block, false));
  page.truncated = XmlText(body, "IsTruncated").value_or("false") == "true";
  page.next_token = XmlText(body, "NextContinuationToken").value_or("");
  if (page.truncated && page.next_token.empty()) {
    return MalformedInput("the S3 server says its listing goes on but gives no continuation token");
  }
  return page;
}

Result<S3ListPage> ParseListVersions(std::string_view body) {
  MV_RETURN_IF_ERROR(CheckSize(body));
  if (body.find("<ListVersionsResult") == std::string_view::npos) {
    return MalformedInput("the S3 server's answer to a version listing is not a ListVersionsResult");
  }
  S3ListPage page;
  for (std::string_view block : XmlElements(body, "Version")) page.items.push_back(ItemOf(block, false));
  for (std::string_view block : XmlElements(body, "DeleteMarker")) page.items.push_back(ItemOf(block, true));
  page.truncated = XmlText(body, "IsTruncated").value_or("false") == "true";
  page.next_key_marker = XmlText(body, "NextKeyMarker").value_or("");
  page.next_version_marker = XmlText(body, "NextVersionIdMarker").value_or("");
  if (page.truncated && page.next_key_marker.empty()) {
    return MalformedInput("the S3 server says its version listing goes on but gives no key marker");
  }
  return page;
}

Result<S3PartsPage> ParseListParts(std::string_view body) {
  MV_RETURN_IF_ERROR(CheckSize(body));
  if (body.find("<ListPartsResult") == std::string_view::npos) {
    return MalformedInput("the S3 server's answer to a parts listing is not a ListPartsResult");
  }
  S3PartsPage page;
  for (std::string_view block : XmlElements(body, "Part")) {
    S3Part p;
    uint64_t n = 0, size = 0;
    if (!ParseU64(XmlText(block, "PartNumber").value_or(""), &n) || n == 0 || n > 10000) continue;
    p.number = int(n);
    std::string etag = XmlText(block, "ETag").value_or("");
    if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') etag = etag.substr(1, etag.size() - 2);
    p.etag = Lower(etag);
    if (ParseU64(XmlText(block, "Size").value_or(""), &size)) p.size = size;
    page.parts.push_back(p);
  }
  page.truncated = XmlText(body, "IsTruncated").value_or("false") == "true";
  uint64_t marker = 0;
  if (ParseU64(XmlText(body, "NextPartNumberMarker").value_or("0"), &marker) && marker <= 10000) page.next_marker = int(marker);
  if (page.truncated && page.next_marker == 0) {
    return MalformedInput("the S3 server says its parts listing goes on but gives no marker");
  }
  return page;
}

int64_t ParseObjectLockSeconds(std::string_view body) {
  if (body.size() > kMaxS3ResponseBytes) return 0;
  auto rule = XmlElements(body, "DefaultRetention");
  if (rule.empty()) return 0;
  uint64_t n = 0;
  if (ParseU64(XmlText(rule.front(), "Days").value_or(""), &n) && n <= 36500) return int64_t(n) * 86400;
  if (ParseU64(XmlText(rule.front(), "Years").value_or(""), &n) && n <= 100) return int64_t(n) * 365 * 86400;
  return 0;
}

}  // namespace mailvault::replication
