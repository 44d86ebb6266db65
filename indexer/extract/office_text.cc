// Office Open XML and OpenDocument: a zip of XML parts. Two passes over the zip's members, read
// from memory by libarchive: the first decides which document it is (from _rels/.rels or
// mimetype, never from the file's name), the second streams the parts that hold text through
// the XML stripper. Uncompressed bytes are counted as they come out of the decompressor, so a
// zip bomb costs at most max_zip_member_bytes per member and max_zip_total_bytes per file, however
// its headers lie.
#include "indexer/extract/office_text.h"

#include <archive.h>
#include <archive_entry.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "indexer/extract/text_sink.h"
#include "indexer/extract/xml_text.h"

namespace mailvault::extract_internal {
namespace {

using Clock = std::chrono::steady_clock;
using XA = XmlAction;

// Word: text only in w:t; mc:Fallback repeats text boxes for old readers.
constexpr XmlRule kDocxRules[] = {
    {"t", XA::kCapture},  {"Fallback", XA::kSkip}, {"p", XA::kBlockEnd}, {"tr", XA::kBlockEnd},
    {"tc", XA::kCellEnd}, {"br", XA::kBreak},      {"cr", XA::kBreak},   {"tab", XA::kSpace},
};
// Excel: shared strings (rPh is a phonetic reading repeated beside Japanese text) and the
// inline strings of the sheets; numbers and formulas are not text.
constexpr XmlRule kXlsxRules[] = {
    {"t", XA::kCapture}, {"rPh", XA::kSkip}, {"si", XA::kBlockEnd}, {"row", XA::kBlockEnd}, {"c", XA::kCellEnd},
};
constexpr XmlRule kPptxRules[] = {
    {"t", XA::kCapture},   {"Fallback", XA::kSkip}, {"p", XA::kBlockEnd},
    {"tr", XA::kBlockEnd}, {"tc", XA::kCellEnd},    {"br", XA::kBreak},
};
// OpenDocument text and presentations; tracked changes hold deleted text.
constexpr XmlRule kOdfRules[] = {
    {"tracked-changes", XA::kSkip}, {"p", XA::kBlockEnd},       {"h", XA::kBlockEnd}, {"table-row", XA::kBlockEnd},
    {"table-cell", XA::kCellEnd},   {"line-break", XA::kBreak}, {"tab", XA::kSpace},  {"s", XA::kSpace},
    {"frame", XA::kBlockEnd},       {"page", XA::kBlockEnd},
};
// Spreadsheets: a paragraph inside a cell must not break the row.
constexpr XmlRule kOdsRules[] = {
    {"tracked-changes", XA::kSkip}, {"p", XA::kCellEnd},        {"h", XA::kCellEnd}, {"table-row", XA::kBlockEnd},
    {"table-cell", XA::kCellEnd},   {"line-break", XA::kSpace}, {"tab", XA::kSpace}, {"s", XA::kSpace},
};

XmlRules RulesFor(OfficeKind kind) {
  switch (kind) {
    case OfficeKind::kDocx:
      return {false, kDocxRules};
    case OfficeKind::kXlsx:
      return {false, kXlsxRules};
    case OfficeKind::kPptx:
      return {false, kPptxRules};
    case OfficeKind::kOds:
      return {true, kOdsRules};
    case OfficeKind::kOdt:
    case OfficeKind::kOdp:
    case OfficeKind::kUnknown:
      break;
  }
  return {true, kOdfRules};
}

// libarchive's reader over a zip in memory.
class ZipArchive {
 public:
  explicit ZipArchive(std::string_view zip) : a_(archive_read_new()) {
    archive_read_support_format_zip(a_);
    ok_ = archive_read_open_memory(a_, zip.data(), zip.size()) == ARCHIVE_OK;
  }
  ~ZipArchive() { archive_read_free(a_); }
  ZipArchive(const ZipArchive&) = delete;
  ZipArchive& operator=(const ZipArchive&) = delete;

  bool ok() const { return ok_; }
  // True with the next member, false at the end or on damage (then error() says which).
  bool Next(archive_entry** entry) {
    int r = archive_read_next_header(a_, entry);
    if (r == ARCHIVE_OK || r == ARCHIVE_WARN) return true;
    if (r != ARCHIVE_EOF) damaged_ = true;
    return false;
  }
  bool damaged() const { return damaged_ || !ok_; }
  la_ssize_t Read(char* buf, size_t n) { return archive_read_data(a_, buf, n); }
  std::string error() const {
    const char* s = archive_error_string(a_);
    return s != nullptr ? s : "not a zip archive";
  }
  // A member's first `max` bytes (small members only: mimetype, _rels/.rels).
  std::string ReadSmall(size_t max) {
    std::string out(max, '\0');
    size_t got = 0;
    while (got < max) {
      la_ssize_t n = archive_read_data(a_, out.data() + got, max - got);
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    out.resize(got);
    return out;
  }

 private:
  archive* a_;
  bool ok_ = false;
  bool damaged_ = false;
};

std::string_view EntryName(archive_entry* e) {
  const char* name = archive_entry_pathname(e);
  return name != nullptr ? std::string_view(name) : std::string_view();
}

// The value of attribute `attr` in one element's text, or empty.
std::string_view AttributeValue(std::string_view element, std::string_view attr) {
  size_t pos = 0;
  while ((pos = element.find(attr, pos)) != std::string_view::npos) {
    size_t after = pos + attr.size();
    bool starts_word = pos > 0 && IsSpace(static_cast<unsigned char>(element[pos - 1]));
    pos = after;
    if (!starts_word || after + 1 >= element.size() || element[after] != '=') continue;
    char quote = element[after + 1];
    if (quote != '"' && quote != '\'') continue;
    size_t close = element.find(quote, after + 2);
    if (close == std::string_view::npos) return {};
    return element.substr(after + 2, close - after - 2);
  }
  return {};
}

// The main part named by _rels/.rels ("word/document.xml"), or empty.
std::string MainPartFromRels(std::string_view rels) {
  size_t pos = 0;
  while ((pos = rels.find("Relationship ", pos)) != std::string_view::npos) {
    size_t close = rels.find('>', pos);
    if (close == std::string_view::npos) break;
    std::string_view element = rels.substr(pos, close - pos);
    pos = close;
    std::string_view type = AttributeValue(element, "Type");
    if (!type.ends_with("/officeDocument")) continue;
    std::string_view target = AttributeValue(element, "Target");
    while (target.starts_with("/") || target.starts_with("./")) target.remove_prefix(target[0] == '/' ? 1 : 2);
    return std::string(target);
  }
  return {};
}

// name == prefix + decimal number + suffix.
std::optional<uint64_t> NumberBetween(std::string_view name, std::string_view prefix, std::string_view suffix) {
  if (name.size() <= prefix.size() + suffix.size() || !name.starts_with(prefix) || !name.ends_with(suffix)) {
    return std::nullopt;
  }
  std::string_view digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.size() > 9) return std::nullopt;
  uint64_t n = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  return n;
}

// Where a member's text goes in the output (main text first, then headers, notes, ...), or
// nullopt if the member holds none we read.
using OrderKey = std::pair<int, uint64_t>;
std::optional<OrderKey> TextPartOrder(OfficeKind kind, std::string_view name, std::string_view main_part) {
  std::optional<uint64_t> n;
  switch (kind) {
    case OfficeKind::kDocx:
      if (name == main_part) return OrderKey{0, 0};
      if ((n = NumberBetween(name, "word/header", ".xml"))) return OrderKey{1, *n};
      if ((n = NumberBetween(name, "word/footer", ".xml"))) return OrderKey{2, *n};
      if (name == "word/footnotes.xml") return OrderKey{3, 0};
      if (name == "word/endnotes.xml") return OrderKey{4, 0};
      if (name == "word/comments.xml") return OrderKey{5, 0};
      return std::nullopt;
    case OfficeKind::kXlsx:
      if (name == "xl/sharedStrings.xml") return OrderKey{0, 0};
      if ((n = NumberBetween(name, "xl/worksheets/sheet", ".xml"))) return OrderKey{1, *n};
      return std::nullopt;
    case OfficeKind::kPptx:
      if ((n = NumberBetween(name, "ppt/slides/slide", ".xml"))) return OrderKey{0, *n};
      return std::nullopt;
    case OfficeKind::kOdt:
    case OfficeKind::kOds:
    case OfficeKind::kOdp:
      if (name == "content.xml") return OrderKey{0, 0};
      return std::nullopt;
    case OfficeKind::kUnknown:
      break;
  }
  return std::nullopt;
}

OfficeKind KindFromOdfMimetype(std::string_view mimetype) {
  constexpr std::string_view kPrefix = "application/vnd.oasis.opendocument.";
  if (!mimetype.starts_with(kPrefix)) return OfficeKind::kUnknown;
  mimetype.remove_prefix(kPrefix.size());
  if (mimetype.starts_with("spreadsheet")) return OfficeKind::kOds;
  if (mimetype.starts_with("presentation") || mimetype.starts_with("graphics")) return OfficeKind::kOdp;
  return OfficeKind::kOdt;  // text, text-master, text-web, chart, formula: paragraphs all the same
}

bool IsOdf(OfficeKind k) { return k == OfficeKind::kOdt || k == OfficeKind::kOds || k == OfficeKind::kOdp; }

struct Slot {
  OrderKey order;
  std::string text;
};

class OfficeReader {
 public:
  OfficeReader(std::string_view zip, OfficeKind declared, const ExtractLimits& limits)
      : zip_(zip),
        declared_(declared),
        limits_(limits),
        deadline_(Clock::now() + std::chrono::milliseconds(limits.timeout_ms)) {}

  Extracted Run() {
    Extracted result;
    OfficeKind kind = Identify();
    if (kind == OfficeKind::kUnknown) {
      if (declared_ == OfficeKind::kUnknown) return result;  // a zip, not (as far as we can tell) a document
      result.outcome = ExtractOutcome::kUnreadable;
      if (reason_.empty()) {
        reason_ = std::string(OfficeKindName(declared_)) + " not read: the zip holds no " + OfficeKindName(declared_) +
                  " document (no " + ExpectedPart(declared_) + ")";
      }
      result.reason = reason_;
      return result;
    }
    name_ = OfficeKindName(kind);
    ReadText(kind);
    Assemble(&result);
    return result;
  }

 private:
  static std::string ExpectedPart(OfficeKind k) {
    switch (k) {
      case OfficeKind::kDocx:
        return "word/document.xml";
      case OfficeKind::kXlsx:
        return "xl/workbook.xml";
      case OfficeKind::kPptx:
        return "ppt/presentation.xml";
      default:
        return "content.xml and mimetype";
    }
  }

  // Notes the first limit or fault met; later ones add nothing a person needs.
  void Stop(std::string reason) {
    if (reason_.empty()) reason_ = std::move(reason);
  }

  bool TimedOut() {
    if (Clock::now() < deadline_) return false;
    Stop(std::string(name_) + " reading stopped after " + FormatMillis(limits_.timeout_ms) + " (limits.timeout_ms)");
    return true;
  }

  bool TooManyMembers(size_t seen) {
    if (seen <= limits_.max_zip_members) return false;
    Stop(std::string(name_) + " has more than " + std::to_string(limits_.max_zip_members) +
         " zip members (limits.max_zip_members); only the first " + std::to_string(limits_.max_zip_members) +
         " were looked at");
    return true;
  }

  // Pass 1: which document is this?
  OfficeKind Identify() {
    name_ = OfficeKindName(declared_);
    ZipArchive zip(zip_);
    std::string rels, mimetype;
    bool has_docx = false, has_xlsx = false, has_pptx = false, has_content = false;
    archive_entry* e = nullptr;
    size_t seen = 0;
    while (zip.Next(&e)) {
      if (TooManyMembers(++seen) || TimedOut()) break;
      std::string_view n = EntryName(e);
      if (n == "_rels/.rels" && !archive_entry_is_encrypted(e)) rels = zip.ReadSmall(64 << 10);
      if (n == "mimetype" && !archive_entry_is_encrypted(e)) mimetype = zip.ReadSmall(128);
      has_docx |= n == "word/document.xml";
      has_xlsx |= n == "xl/workbook.xml";
      has_pptx |= n == "ppt/presentation.xml";
      has_content |= n == "content.xml";
    }
    if (zip.damaged() && seen == 0) {
      Stop(std::string(name_) + " not read: damaged zip (" + zip.error() + ")");
      return OfficeKind::kUnknown;
    }
    main_part_ = MainPartFromRels(rels);
    if (main_part_.starts_with("word/")) return OfficeKind::kDocx;
    if (main_part_.starts_with("xl/")) return OfficeKind::kXlsx;
    if (main_part_.starts_with("ppt/")) return OfficeKind::kPptx;
    if (OfficeKind k = KindFromOdfMimetype(mimetype); k != OfficeKind::kUnknown) return k;
    main_part_ = "word/document.xml";
    if (has_docx) return OfficeKind::kDocx;
    if (has_xlsx) return OfficeKind::kXlsx;
    if (has_pptx) return OfficeKind::kPptx;
    if (has_content && IsOdf(declared_)) return declared_;
    return OfficeKind::kUnknown;
  }

  // Pass 2: the text of each part that has some, into slots_.
  void ReadText(OfficeKind kind) {
    ZipArchive zip(zip_);
    XmlRules rules = RulesFor(kind);
    std::set<std::string, std::less<>> done;
    std::vector<char> buf(64 << 10);
    size_t seen = 0, total_bytes = 0, text_bytes = 0;
    archive_entry* e = nullptr;
    while (zip.Next(&e)) {
      if (TooManyMembers(++seen) || TimedOut()) return;
      std::string_view member = EntryName(e);
      std::optional<OrderKey> order = TextPartOrder(kind, member, main_part_);
      if (!order || done.contains(member)) continue;
      done.emplace(member);
      if (archive_entry_is_encrypted(e)) {
        Stop(std::string(name_) + " member " + std::string(member) + " is encrypted; not read");
        continue;
      }
      TextSink sink(limits_.max_output_bytes);
      XmlTextStripper stripper(rules, &sink);
      size_t member_bytes = 0;
      bool stop_all = false;
      for (;;) {
        la_ssize_t n = zip.Read(buf.data(), buf.size());
        if (n == 0) break;
        if (n < 0) {
          Stop(std::string(name_) + " is damaged: " + std::string(member) + ": " + zip.error());
          stop_all = true;
          break;
        }
        size_t take = static_cast<size_t>(n);
        bool member_over = member_bytes + take > limits_.max_zip_member_bytes;
        if (member_over) take = limits_.max_zip_member_bytes - member_bytes;
        bool total_over = total_bytes + take > limits_.max_zip_total_bytes;
        if (total_over) take = limits_.max_zip_total_bytes - total_bytes;
        stripper.Feed(std::string_view(buf.data(), take));
        member_bytes += take;
        total_bytes += take;
        if (total_over) {
          Stop(std::string(name_) + " members hold more than " + FormatBytes(limits_.max_zip_total_bytes) +
               " uncompressed (limits.max_zip_total_bytes): a zip bomb or a huge document; the rest was not read");
          stop_all = true;
          break;
        }
        if (member_over) {
          Stop(std::string(name_) + " member " + std::string(member) + " is more than " +
               FormatBytes(limits_.max_zip_member_bytes) +
               " uncompressed (limits.max_zip_member_bytes): a zip bomb or a huge document; only its first " +
               FormatBytes(limits_.max_zip_member_bytes) + " were read");
          break;
        }
        if (sink.full()) break;
        if (TimedOut()) {
          stop_all = true;
          break;
        }
      }
      stripper.Finish();
      bool cut = false;
      slots_.push_back({*order, sink.Finish(&cut)});
      output_cut_ |= cut;
      text_bytes += slots_.back().text.size();
      // Enough text for the output already: what is left could only be cut off.
      if (text_bytes > limits_.max_output_bytes) output_cut_ = true;
      if (stop_all || output_cut_) return;
    }
    if (zip.damaged()) Stop(std::string(name_) + " is damaged: " + zip.error());
  }

  void Assemble(Extracted* result) {
    std::stable_sort(slots_.begin(), slots_.end(), [](const Slot& a, const Slot& b) { return a.order < b.order; });
    std::string& out = result->text;
    for (const Slot& s : slots_) {
      if (s.text.empty()) continue;
      if (!out.empty()) out.push_back('\n');
      out += s.text;
    }
    if (out.size() > limits_.max_output_bytes) {
      out.resize(Utf8Boundary(out, limits_.max_output_bytes));
      output_cut_ = true;
    }
    if (output_cut_) {
      Stop(std::string(name_) + " text cut at " + FormatBytes(limits_.max_output_bytes) + " (limits.max_output_bytes)");
    }
    result->reason = reason_;
    if (reason_.empty()) {
      result->outcome = ExtractOutcome::kComplete;
    } else {
      result->outcome = out.empty() ? ExtractOutcome::kUnreadable : ExtractOutcome::kPartial;
    }
  }

  std::string_view zip_;
  OfficeKind declared_;
  const ExtractLimits& limits_;
  Clock::time_point deadline_;
  const char* name_ = "";
  std::string main_part_;
  std::vector<Slot> slots_;
  bool output_cut_ = false;
  std::string reason_;
};

}  // namespace

const char* OfficeKindName(OfficeKind kind) {
  switch (kind) {
    case OfficeKind::kDocx:
      return "DOCX";
    case OfficeKind::kXlsx:
      return "XLSX";
    case OfficeKind::kPptx:
      return "PPTX";
    case OfficeKind::kOdt:
      return "ODT";
    case OfficeKind::kOds:
      return "ODS";
    case OfficeKind::kOdp:
      return "ODP";
    case OfficeKind::kUnknown:
      break;
  }
  return "Office document";
}

Extracted ExtractOfficeText(std::string_view zip, OfficeKind declared, const ExtractLimits& limits) {
  return OfficeReader(zip, declared, limits).Run();
}

}  // namespace mailvault::extract_internal
