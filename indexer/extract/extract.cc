// ExtractAttachmentText: decides the format, checks the input limit, and hands the bytes to the
// reader for that format (html_text.cc, office_text.cc, pdf_text.cc, or the charset decoding
// below for plain text).
#include "indexer/extract/extract.h"

#include <iconv.h>

#include <algorithm>
#include <cerrno>
#include <string>

#include "core/text.h"
#include "indexer/extract/office_text.h"
#include "indexer/extract/pdf_text.h"
#include "indexer/extract/text_sink.h"

namespace mailvault {
namespace {

using extract_internal::FormatBytes;
using extract_internal::OfficeKind;

enum class Format {
  kUnknown,  // nothing declared: the bytes decide, else not text
  kNotText,  // declared as something without text (image, audio, video, archive, program)
  kText,
  kHtml,
  kPdf,
  kOffice,        // with an OfficeKind
  kLegacyOffice,  // .doc/.xls/.ppt: binary formats this module does not read
};

struct Declared {
  Format format = Format::kUnknown;
  OfficeKind office = OfficeKind::kUnknown;
};

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c); });
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// "text/plain; charset=ISO-8859-1" -> media type "text/plain", charset "iso-8859-1".
void ParseContentType(std::string_view content_type, std::string* media, std::string* charset) {
  size_t semi = content_type.find(';');
  *media = Lower(Trim(content_type.substr(0, semi)));
  charset->clear();
  while (semi != std::string_view::npos) {
    std::string_view rest = content_type.substr(semi + 1);
    semi = rest.find(';');
    std::string_view param = Trim(rest.substr(0, semi));
    size_t eq = param.find('=');
    if (eq == std::string_view::npos || Lower(Trim(param.substr(0, eq))) != "charset") {
      content_type = rest;
      continue;
    }
    std::string_view value = Trim(param.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
    *charset = Lower(value);
    return;
  }
}

struct TypeEntry {
  std::string_view name;  // media type or extension
  Format format;
  OfficeKind office;
};

constexpr TypeEntry kMediaTypes[] = {
    {"application/pdf", Format::kPdf, OfficeKind::kUnknown},
    {"application/x-pdf", Format::kPdf, OfficeKind::kUnknown},
    {"application/acrobat", Format::kPdf, OfficeKind::kUnknown},
    {"text/html", Format::kHtml, OfficeKind::kUnknown},
    {"application/xhtml+xml", Format::kHtml, OfficeKind::kUnknown},
    {"application/vnd.openxmlformats-officedocument.wordprocessingml.document", Format::kOffice, OfficeKind::kDocx},
    {"application/vnd.openxmlformats-officedocument.wordprocessingml.template", Format::kOffice, OfficeKind::kDocx},
    {"application/vnd.ms-word.document.macroenabled.12", Format::kOffice, OfficeKind::kDocx},
    {"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", Format::kOffice, OfficeKind::kXlsx},
    {"application/vnd.openxmlformats-officedocument.spreadsheetml.template", Format::kOffice, OfficeKind::kXlsx},
    {"application/vnd.ms-excel.sheet.macroenabled.12", Format::kOffice, OfficeKind::kXlsx},
    {"application/vnd.openxmlformats-officedocument.presentationml.presentation", Format::kOffice, OfficeKind::kPptx},
    {"application/vnd.openxmlformats-officedocument.presentationml.slideshow", Format::kOffice, OfficeKind::kPptx},
    {"application/vnd.ms-powerpoint.presentation.macroenabled.12", Format::kOffice, OfficeKind::kPptx},
    {"application/vnd.oasis.opendocument.text", Format::kOffice, OfficeKind::kOdt},
    {"application/vnd.oasis.opendocument.spreadsheet", Format::kOffice, OfficeKind::kOds},
    {"application/vnd.oasis.opendocument.presentation", Format::kOffice, OfficeKind::kOdp},
    {"application/msword", Format::kLegacyOffice, OfficeKind::kUnknown},
    {"application/vnd.ms-excel", Format::kLegacyOffice, OfficeKind::kUnknown},
    {"application/vnd.ms-powerpoint", Format::kLegacyOffice, OfficeKind::kUnknown},
};

constexpr TypeEntry kExtensions[] = {
    {"pdf", Format::kPdf, OfficeKind::kUnknown},          {"htm", Format::kHtml, OfficeKind::kUnknown},
    {"html", Format::kHtml, OfficeKind::kUnknown},        {"xhtml", Format::kHtml, OfficeKind::kUnknown},
    {"txt", Format::kText, OfficeKind::kUnknown},         {"text", Format::kText, OfficeKind::kUnknown},
    {"csv", Format::kText, OfficeKind::kUnknown},         {"tsv", Format::kText, OfficeKind::kUnknown},
    {"log", Format::kText, OfficeKind::kUnknown},         {"md", Format::kText, OfficeKind::kUnknown},
    {"ics", Format::kText, OfficeKind::kUnknown},         {"vcf", Format::kText, OfficeKind::kUnknown},
    {"json", Format::kText, OfficeKind::kUnknown},        {"xml", Format::kText, OfficeKind::kUnknown},
    {"docx", Format::kOffice, OfficeKind::kDocx},         {"docm", Format::kOffice, OfficeKind::kDocx},
    {"dotx", Format::kOffice, OfficeKind::kDocx},         {"dotm", Format::kOffice, OfficeKind::kDocx},
    {"xlsx", Format::kOffice, OfficeKind::kXlsx},         {"xlsm", Format::kOffice, OfficeKind::kXlsx},
    {"xltx", Format::kOffice, OfficeKind::kXlsx},         {"xltm", Format::kOffice, OfficeKind::kXlsx},
    {"pptx", Format::kOffice, OfficeKind::kPptx},         {"pptm", Format::kOffice, OfficeKind::kPptx},
    {"ppsx", Format::kOffice, OfficeKind::kPptx},         {"potx", Format::kOffice, OfficeKind::kPptx},
    {"odt", Format::kOffice, OfficeKind::kOdt},           {"ott", Format::kOffice, OfficeKind::kOdt},
    {"ods", Format::kOffice, OfficeKind::kOds},           {"ots", Format::kOffice, OfficeKind::kOds},
    {"odp", Format::kOffice, OfficeKind::kOdp},           {"otp", Format::kOffice, OfficeKind::kOdp},
    {"doc", Format::kLegacyOffice, OfficeKind::kUnknown}, {"xls", Format::kLegacyOffice, OfficeKind::kUnknown},
    {"ppt", Format::kLegacyOffice, OfficeKind::kUnknown},
};

Declared FromMediaType(std::string_view media) {
  for (const TypeEntry& e : kMediaTypes) {
    if (e.name == media) return {e.format, e.office};
  }
  if (media.starts_with("text/")) return {Format::kText, OfficeKind::kUnknown};
  if (media.starts_with("image/") || media.starts_with("audio/") || media.starts_with("video/") ||
      media.starts_with("font/") || media == "application/zip" || media == "application/x-zip-compressed") {
    return {Format::kNotText, OfficeKind::kUnknown};
  }
  return {};  // application/octet-stream and everything else: let the name speak
}

Declared FromFilename(std::string_view filename) {
  size_t dot = filename.rfind('.');
  if (dot == std::string_view::npos || filename.size() - dot > 8) return {};
  std::string ext = Lower(filename.substr(dot + 1));
  for (const TypeEntry& e : kExtensions) {
    if (e.name == ext) return {e.format, e.office};
  }
  return {};
}

bool StartsWith(std::string_view data, std::string_view magic) { return data.substr(0, magic.size()) == magic; }

// PDF readers accept junk before the header in the first kilobyte; so does poppler.
bool LooksLikePdf(std::string_view data) { return data.substr(0, 1024).find("%PDF-") != std::string_view::npos; }
bool LooksLikeZip(std::string_view data) { return StartsWith(data, "PK\x03\x04") || StartsWith(data, "PK\x05\x06"); }
// OLE2 compound file: legacy .doc/.xls/.ppt, and password-protected .docx/.xlsx/.pptx.
bool LooksLikeOle(std::string_view data) { return StartsWith(data, "\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1"); }

const char* FormatName(const Declared& d) {
  switch (d.format) {
    case Format::kPdf:
      return "PDF";
    case Format::kHtml:
      return "HTML";
    case Format::kText:
      return "Text";
    case Format::kOffice:
      return extract_internal::OfficeKindName(d.office);
    default:
      return "attachment";
  }
}

bool IsLatin1Label(std::string_view cs) {
  return cs == "iso-8859-1" || cs == "iso8859-1" || cs == "iso_8859-1" || cs == "latin1" || cs == "latin-1" ||
         cs == "l1" || cs == "windows-1252" || cs == "cp1252" || cs == "x-cp1252";
}

bool IsUtf8Label(std::string_view cs) {
  return cs.empty() || cs == "utf-8" || cs == "utf8" || cs == "us-ascii" || cs == "ascii" || cs == "unknown-8bit" ||
         cs == "x-unknown" || cs == "default";
}

// Converts with iconv; each byte it cannot convert becomes U+FFFD. False if iconv does not know
// the charset.
bool ConvertWithIconv(std::string_view in, const char* charset, std::string* out) {
  iconv_t cd = iconv_open("UTF-8", charset);
  if (cd == reinterpret_cast<iconv_t>(-1)) return false;
  out->clear();
  out->reserve(in.size() + in.size() / 2 + 16);
  char* src = const_cast<char*>(in.data());
  size_t src_left = in.size();
  char buf[16 << 10];
  while (src_left > 0) {
    char* dst = buf;
    size_t dst_left = sizeof buf;
    size_t r = iconv(cd, &src, &src_left, &dst, &dst_left);
    out->append(buf, static_cast<size_t>(dst - buf));
    if (r != static_cast<size_t>(-1)) break;
    if (errno == E2BIG) continue;
    if (errno == EILSEQ) {
      out->append("\xEF\xBF\xBD");
      ++src;
      --src_left;
      continue;
    }
    break;  // EINVAL: an incomplete sequence at the end (the input may be a cut prefix)
  }
  iconv_close(cd);
  return true;
}

// The text of a text/* attachment as UTF-8, at most `max` bytes (or, with max == SIZE_MAX, all
// of it); *cut says whether some was left out.
std::string DecodeText(std::string_view data, std::string charset, size_t max, bool* cut) {
  if (StartsWith(data, "\xEF\xBB\xBF")) {
    data.remove_prefix(3);
    charset = "utf-8";
  } else if (StartsWith(data, "\xFF\xFE")) {
    data.remove_prefix(2);
    charset = "utf-16le";
  } else if (StartsWith(data, "\xFE\xFF")) {
    data.remove_prefix(2);
    charset = "utf-16be";
  }
  // Every charset gives at least one output byte for four input bytes (UTF-32): decoding a
  // prefix that long is enough to fill the output.
  size_t prefix = max > (SIZE_MAX - 16) / 4 ? data.size() : std::min(data.size(), max * 4 + 16);
  std::string_view in = data.substr(0, prefix);
  std::string out;
  bool valid_utf8 = false;
  if (IsLatin1Label(charset)) {
    // Mail programs label UTF-8 as Latin-1 more often than Latin-1 happens to be valid UTF-8.
    std::string checked = ToValidUtf8(in);
    valid_utf8 = checked.size() == in.size() && checked == in;
    if (valid_utf8) out = std::move(checked);
  }
  if (!valid_utf8) {
    // Browsers read ISO-8859-1 as windows-1252; so does mail.
    const char* iconv_name = IsLatin1Label(charset) ? "WINDOWS-1252" : charset.c_str();
    if (IsUtf8Label(charset) || !ConvertWithIconv(in, iconv_name, &out)) out = ToValidUtf8(in);
  }
  *cut = prefix < data.size();
  if (out.size() > max) {
    out.resize(extract_internal::Utf8Boundary(out, max));
    *cut = true;
  }
  return out;
}

Extracted Unreadable(std::string reason) {
  Extracted e;
  e.outcome = ExtractOutcome::kUnreadable;
  e.reason = std::move(reason);
  return e;
}

}  // namespace

Extracted ExtractAttachmentText(std::string_view content_type, std::string_view filename, std::string_view data,
                                const ExtractLimits& limits) {
  std::string media, charset;
  ParseContentType(content_type, &media, &charset);
  Declared declared = FromMediaType(media);
  Declared by_name = FromFilename(filename);
  // A generic label lets the name speak; so does a wrong specific one that the name corrects
  // (a .docx sent as application/msword or application/zip).
  if (declared.format == Format::kUnknown ||
      (by_name.format == Format::kOffice &&
       (declared.format == Format::kNotText || declared.format == Format::kLegacyOffice))) {
    declared = by_name;
  }

  // The bytes win when they are unambiguous. Something declared as text must start with the
  // PDF header to be taken for a PDF: text may well mention "%PDF-".
  bool declared_text = declared.format == Format::kText || declared.format == Format::kHtml;
  Declared actual = declared;
  if (LooksLikeZip(data)) {
    actual = {Format::kOffice, declared.format == Format::kOffice ? declared.office : OfficeKind::kUnknown};
  } else if (declared_text ? StartsWith(data, "%PDF-") : LooksLikePdf(data)) {
    actual = {Format::kPdf, OfficeKind::kUnknown};
  }

  std::string name = FormatName(actual);
  switch (actual.format) {
    case Format::kUnknown:
    case Format::kNotText:
      return {};
    case Format::kLegacyOffice:
      return Unreadable("legacy binary Office document (.doc, .xls, .ppt): not read");
    case Format::kPdf:
      if (!LooksLikePdf(data)) return Unreadable("PDF not read: no %PDF- header in its first 1 KiB; not a PDF");
      break;
    case Format::kOffice:
      if (!LooksLikeZip(data)) {
        if (LooksLikeOle(data)) {
          return Unreadable(name + " not read: it is password-protected (an encrypted Office file)");
        }
        return Unreadable(name + " not read: not a zip archive, as Office and OpenDocument files are");
      }
      // A zip nobody called a document, too big to look inside: as far as we know, not text.
      if (actual.office == OfficeKind::kUnknown && data.size() > limits.max_input_bytes) return {};
      break;
    case Format::kText:
    case Format::kHtml:
      break;
  }
  if (data.size() > limits.max_input_bytes) {
    return Unreadable(name + " not read: it is " + FormatBytes(data.size()) + ", over the limit of " +
                      FormatBytes(limits.max_input_bytes) + " (limits.max_input_bytes)");
  }

  Extracted result;
  bool cut = false;
  switch (actual.format) {
    case Format::kPdf:
      return extract_internal::ExtractPdfText(data, limits);
    case Format::kOffice:
      return extract_internal::ExtractOfficeText(data, actual.office, limits);
    case Format::kHtml: {
      std::string html;
      bool utf8 = IsUtf8Label(charset);
      if (!utf8) html = DecodeText(data, charset, SIZE_MAX, &cut);
      result.text = HtmlToText(utf8 ? data : std::string_view(html), limits.max_output_bytes, &cut);
      break;
    }
    case Format::kText:
      result.text = DecodeText(data, charset, limits.max_output_bytes, &cut);
      break;
    default:
      return {};
  }
  result.outcome = cut ? ExtractOutcome::kPartial : ExtractOutcome::kComplete;
  if (cut) {
    result.reason = (actual.format == Format::kText ? std::string("Text") : name + " text") + " cut at " +
                    FormatBytes(limits.max_output_bytes) + " (limits.max_output_bytes)";
  }
  return result;
}

}  // namespace mailvault
