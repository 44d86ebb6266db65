// Tests of indexer/extract: exact text from checked-in fixtures (tests/extract/fixtures, made by
// make_fixtures.py), every named limit at and past its value, and the PDF helper's failure
// paths (missing, crashing, hanging, flooding, ignoring its input) with fake helpers written at
// test time.
#include "indexer/extract/extract.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace mailvault {
namespace {

using Clock = std::chrono::steady_clock;

std::string ReadFixture(const std::string& name) {
  std::ifstream in(std::string(MAILVAULT_EXTRACT_FIXTURES) + "/" + name, std::ios::binary);
  EXPECT_TRUE(in.good()) << name;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

double SecondsSince(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// --- A zip writer, for archives the fixtures cannot hold (bombs, many members, flags) --------

struct ZipMember {
  std::string name;
  std::string data;     // as stored (compressed when method == 8)
  uint16_t method = 0;  // 0 stored, 8 deflate
  uint32_t crc = 0;
  uint32_t size = 0;   // uncompressed
  uint16_t flags = 0;  // bit 0: encrypted
};

ZipMember Stored(std::string name, std::string data) {
  ZipMember m;
  m.name = std::move(name);
  m.crc = static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data.size())));
  m.size = static_cast<uint32_t>(data.size());
  m.data = std::move(data);
  return m;
}

void Put16(std::string* s, uint32_t v) {
  s->push_back(static_cast<char>(v & 0xff));
  s->push_back(static_cast<char>((v >> 8) & 0xff));
}
void Put32(std::string* s, uint32_t v) {
  Put16(s, v & 0xffff);
  Put16(s, v >> 16);
}

std::string BuildZip(const std::vector<ZipMember>& members) {
  std::string out, central;
  for (const ZipMember& m : members) {
    uint32_t offset = static_cast<uint32_t>(out.size());
    Put32(&out, 0x04034b50);
    Put16(&out, 20);
    Put16(&out, m.flags);
    Put16(&out, m.method);
    Put16(&out, 0);
    Put16(&out, 0x21);  // 1980-01-01
    Put32(&out, m.crc);
    Put32(&out, static_cast<uint32_t>(m.data.size()));
    Put32(&out, m.size);
    Put16(&out, static_cast<uint32_t>(m.name.size()));
    Put16(&out, 0);
    out += m.name;
    out += m.data;
    Put32(&central, 0x02014b50);
    Put16(&central, 20);
    Put16(&central, 20);
    Put16(&central, m.flags);
    Put16(&central, m.method);
    Put16(&central, 0);
    Put16(&central, 0x21);
    Put32(&central, m.crc);
    Put32(&central, static_cast<uint32_t>(m.data.size()));
    Put32(&central, m.size);
    Put16(&central, static_cast<uint32_t>(m.name.size()));
    Put16(&central, 0);
    Put16(&central, 0);
    Put16(&central, 0);
    Put16(&central, 0);
    Put32(&central, 0);
    Put32(&central, offset);
    central += m.name;
  }
  uint32_t central_offset = static_cast<uint32_t>(out.size());
  out += central;
  Put32(&out, 0x06054b50);
  Put16(&out, 0);
  Put16(&out, 0);
  Put16(&out, static_cast<uint32_t>(members.size()));
  Put16(&out, static_cast<uint32_t>(members.size()));
  Put32(&out, static_cast<uint32_t>(central.size()));
  Put32(&out, central_offset);
  Put16(&out, 0);
  return out;
}

// Raw deflate of `in` with the given flush, appended to *out.
void Deflate(z_stream* z, std::string_view in, int flush, std::string* out) {
  z->next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z->avail_in = static_cast<uInt>(in.size());
  char buf[1 << 16];
  do {
    z->next_out = reinterpret_cast<Bytef*>(buf);
    z->avail_out = sizeof buf;
    ASSERT_NE(deflate(z, flush), Z_STREAM_ERROR);
    out->append(buf, sizeof buf - z->avail_out);
  } while (z->avail_out == 0 || z->avail_in > 0);
}

// A member holding `prefix` followed by `zero_mib` MiB of zero bytes, deflated to about 1 KiB
// per MiB without compressing them all: after a full flush the compressor holds no history, so
// the blocks for one MiB of zeros can be repeated as they are.
ZipMember ZeroBomb(std::string name, std::string_view prefix, uint32_t zero_mib) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY), Z_OK);
  ZipMember m;
  m.name = std::move(name);
  m.method = 8;
  Deflate(&z, prefix, Z_FULL_FLUSH, &m.data);
  const std::string mib(1 << 20, '\0');
  std::string block;
  Deflate(&z, mib, Z_FULL_FLUSH, &block);
  for (uint32_t i = 0; i < zero_mib; ++i) m.data += block;
  Deflate(&z, "", Z_FINISH, &m.data);
  deflateEnd(&z);
  uLong crc = crc32(0, reinterpret_cast<const Bytef*>(prefix.data()), static_cast<uInt>(prefix.size()));
  uLong mib_crc = crc32(0, reinterpret_cast<const Bytef*>(mib.data()), static_cast<uInt>(mib.size()));
  for (uint32_t i = 0; i < zero_mib; ++i) crc = crc32_combine(crc, mib_crc, 1 << 20);
  m.crc = static_cast<uint32_t>(crc);
  m.size = static_cast<uint32_t>(prefix.size() + (uint64_t{zero_mib} << 20));
  return m;
}

constexpr char kDocxType[] = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";

// A Word document whose main part is `document_xml`, with `extra` members after it.
std::string MakeDocx(const std::string& document_xml, std::vector<ZipMember> extra = {}) {
  std::vector<ZipMember> members = {
      Stored("[Content_Types].xml", "<Types/>"),
      Stored("_rels/.rels",
             "<Relationships><Relationship Id=\"rId1\" Type=\"http://schemas.openxmlformats.org/officeDocument/"
             "2006/relationships/officeDocument\" Target=\"word/document.xml\"/></Relationships>"),
      Stored("word/document.xml", document_xml)};
  for (auto& m : extra) members.push_back(std::move(m));
  return BuildZip(members);
}

std::string WordXml(const std::string& body_text) {
  return "<w:document xmlns:w=\"w\"><w:body><w:p><w:r><w:t>" + body_text + "</w:t></w:r></w:p></w:body></w:document>";
}

// --- HtmlToText ----------------------------------------------------------------------------------

std::string Html(std::string_view html, size_t max = 1 << 20, bool* truncated = nullptr) {
  return HtmlToText(html, max, truncated);
}

TEST(HtmlToText, DropsScriptStyleAndHeadKeepsTitleAndBlocks) {
  const char* html =
      "<!DOCTYPE html><html><head><title>Subject line</title><meta charset=utf-8>"
      "<style>p { color: red; } </style><script>var x = '<p>not text</p>';</script>stray head text</head>"
      "<body><h1>Dear  Ann,</h1>\n<p>The <b>quarterly</b>\n   report is <i>attached</i>.</p>"
      "<div>Line one<br>Line two</div><ul><li>first</li><li>second</li></ul>"
      "<table><tr><td>cell 1</td><td>cell 2</td></tr><tr><th>cell 3</th></tr></table>"
      "<SCRIPT type=\"text/javascript\">alert('x')</SCRIPT >Bye</body></html>";
  EXPECT_EQ(Html(html),
            "Subject line\nDear Ann,\nThe quarterly report is attached.\nLine one\nLine two\nfirst\nsecond\ncell 1 cell 2\n"
            "cell 3\nBye");
}

TEST(HtmlToText, DecodesCharacterReferences) {
  EXPECT_EQ(Html("Tom &amp; Jerry &lt;tag&gt; &quot;q&quot; &apos;a&apos;"), "Tom & Jerry <tag> \"q\" 'a'");
  EXPECT_EQ(Html("caf&eacute; &Uuml;ber &copy; &euro;5 &hellip; &mdash; &#233;&#xE9;&#XE9;"), "café Über © €5 … — ééé");
  EXPECT_EQ(Html("&#150; &#128;"), "– €");  // windows-1252, as browsers do
  EXPECT_EQ(Html("a&#0;b &#xD800; &#99999999;"), "a\uFFFDb \uFFFD \uFFFD");
  EXPECT_EQ(Html("a&nbsp;&nbsp;b&shy;c"), "a bc");  // nbsp collapses; soft hyphen vanishes
  EXPECT_EQ(Html("&unknown; & &; &#; &#x;"), "&unknown; & &; &#; &#x;");
  EXPECT_EQ(Html("AT&amp T &lt3"), "AT& T <3");               // legacy references without ';'
  EXPECT_EQ(Html("?a=1&copy=2&amp=3"), "?a=1&copy=2&amp=3");  // but not in a URL's query
}

TEST(HtmlToText, CommentsDoctypeAndProcessingInstructions) {
  EXPECT_EQ(Html("a<!-- hidden <p> -->b<!---->c<!-->d<!--->e"), "abcde");
  EXPECT_EQ(Html("<!--[if mso]><xml><o:Settings>96</o:Settings></xml><![endif]-->Hi<?xml version=\"1.0\"?>!"), "Hi!");
  EXPECT_EQ(Html("<!--[if !mso]><!-->shown<!--<![endif]-->"), "shown");
  EXPECT_EQ(Html("before<!-- never closed <p>after"), "before");
  EXPECT_EQ(Html("<xml><o:OfficeDocumentSettings>96</o:OfficeDocumentSettings></xml>Body"), "Body");
}

TEST(HtmlToText, TagsAndAttributes) {
  EXPECT_EQ(Html("<a href=\"x\" title=\"1 > 0\">link</a> <img alt='a>b' src=x>after"), "link after");
  EXPECT_EQ(Html("a < b and c<3 </ > x </>y <5"), "a < b and c<3 x y <5");
  EXPECT_EQ(Html("<p>unterminated <a href=\"never closed"), "unterminated");
  EXPECT_EQ(Html("<span>Hel</span><span>lo</span><o:p></o:p> world"), "Hello world");
  EXPECT_EQ(Html("<P>Upper</P><BR/><Div>Case</DIV>"), "Upper\nCase");
  EXPECT_EQ(Html("<style>unclosed { </p>"), "");
  EXPECT_EQ(Html("<script>a</scriptx>b</script>c"), "c");
}

TEST(HtmlToText, HeadWithoutEndTagEndsAtBody) {
  EXPECT_EQ(Html("<head><title>T</title><p>Body text"), "T\nBody text");
  EXPECT_EQ(Html("<title>never closed"), "never closed");
  EXPECT_EQ(Html("<head><style>x</style><body>Body"), "Body");
  EXPECT_EQ(Html("<html><head></head><body>Mail</body></html>"), "Mail");
}

TEST(HtmlToText, InvalidUtf8BecomesReplacementCharacter) {
  EXPECT_EQ(Html("ok \xff\xfe bad \xc3"), "ok \uFFFD\uFFFD bad \uFFFD");
  EXPECT_EQ(Html("\xe6\x9d\xb1\xe4\xba\xac"), "東京");
}

TEST(HtmlToText, CutsAtMaxBytesOnACharacterBoundary) {
  bool truncated = true;
  EXPECT_EQ(Html("<p>abc</p><p>def</p>", 7, &truncated), "abc\ndef");
  EXPECT_FALSE(truncated);  // exactly full is not cut
  EXPECT_EQ(Html("<p>abc</p><p>defg</p>", 7, &truncated), "abc\ndef");
  EXPECT_TRUE(truncated);
  EXPECT_EQ(Html("<p>abc</p><p>def</p>", 3, &truncated), "abc");
  EXPECT_TRUE(truncated);                              // the newline fits nowhere
  EXPECT_EQ(Html("ab\xc3\xa9", 3, &truncated), "ab");  // é is two bytes
  EXPECT_TRUE(truncated);
  EXPECT_EQ(Html("x", 0, &truncated), "");
  EXPECT_TRUE(truncated);
  EXPECT_EQ(Html("   ", 0, &truncated), "");
  EXPECT_FALSE(truncated);
  EXPECT_EQ(Html("abc", 3, nullptr), "abc");
}

// Inputs built to make a careless stripper quadratic: each must go through in linear time.
TEST(HtmlToText, HostileInputsStayLinear) {
  const size_t n = 4 << 20;
  auto repeat = [n](std::string_view unit) {
    std::string s;
    s.reserve(n + unit.size());
    while (s.size() < n) s += unit;
    return s;
  };
  const std::vector<std::string> inputs = {repeat("<"),  repeat("<a"),      repeat("<!--"),     repeat("<!-"),
                                           repeat("&#"), repeat("&#1"),     repeat("&amp"),     repeat("<script>"),
                                           repeat("</"), repeat("<a b=\""), repeat("<style><"), repeat("<head>"),
                                           repeat("a "), repeat("<p>"),     repeat("<a =''")};
  for (const std::string& in : inputs) {
    auto start = Clock::now();
    bool truncated = false;
    std::string out = HtmlToText(in, 1 << 20, &truncated);
    EXPECT_LT(SecondsSince(start), 2.0) << in.substr(0, 16);
  }
}

TEST(HtmlToText, Throughput) {
  // A typical HTML mail: tables, inline styles, entities, a little text per tag.
  std::string unit =
      "<tr><td style=\"padding:0 10px;font-family:Arial,sans-serif;color:#333333\" class=\"x_body\">"
      "Dear customer, your order&nbsp;#12345 has shipped &mdash; see <a href=\"https://example.com/track?"
      "id=1&amp;x=2\">tracking</a>.</td></tr>\n<!-- spacer --><p>Regards,<br>The Team</p>\n";
  std::string html;
  while (html.size() < (64u << 20)) html += unit;
  auto start = Clock::now();
  std::string text = HtmlToText(html, SIZE_MAX, nullptr);
  double secs = SecondsSince(start);
  double mb_per_s = static_cast<double>(html.size()) / 1e6 / secs;
  std::printf("HtmlToText: %.0f MB/s over %zu MB\n", mb_per_s, html.size() >> 20);
  EXPECT_GT(text.size(), 0u);
#if defined(NDEBUG) && !defined(__SANITIZE_ADDRESS__)
  // The target is 100 MB/s; the bound leaves room for a loaded machine.
  EXPECT_GT(mb_per_s, 50.0);
#endif
}

// --- Plain text ---------------------------------------------------------------------------------

ExtractLimits SmallOutput(size_t n) {
  ExtractLimits l;
  l.max_output_bytes = n;
  return l;
}

TEST(ExtractText, PlainTextIsUtf8) {
  Extracted e = ExtractAttachmentText("text/plain; charset=utf-8", "notes.txt", "line 1\r\nüber\n", {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kComplete);
  EXPECT_EQ(e.text, "line 1\r\nüber\n");
  EXPECT_EQ(e.reason, "");
  EXPECT_EQ(ExtractAttachmentText("text/plain", "", "bad \xff byte", {}).text, "bad \uFFFD byte");
  EXPECT_EQ(ExtractAttachmentText("text/csv", "",
                                  "\xEF\xBB\xBF"
                                  "a,b",
                                  {})
                .text,
            "a,b");  // BOM dropped
}

TEST(ExtractText, Charsets) {
  EXPECT_EQ(ExtractAttachmentText("text/plain; charset=ISO-8859-1", "", "caf\xe9", {}).text, "café");
  EXPECT_EQ(ExtractAttachmentText("text/plain; charset=\"windows-1252\"", "", "\x93q\x94 \x80", {}).text,
            "\u201cq\u201d €");
  // Labelled Latin-1, written in UTF-8: the label is wrong, the bytes are right.
  EXPECT_EQ(ExtractAttachmentText("text/plain; charset=iso-8859-1", "", "caf\xc3\xa9", {}).text, "café");
  EXPECT_EQ(ExtractAttachmentText("text/plain; charset=koi8-r", "", "\xf0\xd2\xc9\xd7\xc5\xd4", {}).text, "Привет");
  EXPECT_EQ(ExtractAttachmentText("text/plain", "", std::string("\xff\xfeH\0i\0", 6), {}).text, "Hi");
  EXPECT_EQ(ExtractAttachmentText("text/plain", "", std::string("\xfe\xff\0H\0i", 6), {}).text, "Hi");
  EXPECT_EQ(ExtractAttachmentText("text/plain; charset=no-such-charset", "", "a\xffz", {}).text, "a\uFFFDz");
}

TEST(ExtractText, FormatFromTheName) {
  Extracted e = ExtractAttachmentText("application/octet-stream", "README.TXT", "hello", {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kComplete);
  EXPECT_EQ(e.text, "hello");
  e = ExtractAttachmentText("", "page.html", "<p>a</p><p>b</p>", {});
  EXPECT_EQ(e.text, "a\nb");
  EXPECT_EQ(ExtractAttachmentText("application/octet-stream", "tool.exe", "MZ\x90\x00", {}).outcome,
            ExtractOutcome::kNotText);
  EXPECT_EQ(ExtractAttachmentText("image/png", "a.txt", "\x89PNG\r\n", {}).outcome, ExtractOutcome::kNotText);
  EXPECT_EQ(ExtractAttachmentText("application/zip", "photos.zip", BuildZip({Stored("a.jpg", "\xff\xd8")}), {}).outcome,
            ExtractOutcome::kNotText);
  e = ExtractAttachmentText("application/msword", "old.doc", "\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1", {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kUnreadable);
  EXPECT_EQ(e.reason, "legacy binary Office document (.doc, .xls, .ppt): not read");
}

TEST(ExtractText, HtmlAttachment) {
  Extracted e = ExtractAttachmentText("text/html; charset=iso-8859-1", "",
                                      "<style>b{}</style><p>Gr\xfc\xdf"
                                      "e &amp; <b>Tsch\xfcss</b></p>",
                                      {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kComplete);
  EXPECT_EQ(e.text, "Grüße & Tschüss");
}

TEST(ExtractText, CutAtOutputLimit) {
  Extracted e = ExtractAttachmentText("text/plain", "", "0123456789abcdefXYZ", SmallOutput(16));
  EXPECT_EQ(e.outcome, ExtractOutcome::kPartial);
  EXPECT_EQ(e.text, "0123456789abcdef");
  EXPECT_EQ(e.reason, "Text cut at 16 bytes (limits.max_output_bytes)");
  // At the limit exactly: complete.
  e = ExtractAttachmentText("text/plain", "", "0123456789abcdef", SmallOutput(16));
  EXPECT_EQ(e.outcome, ExtractOutcome::kComplete);
  EXPECT_EQ(e.text.size(), 16u);
  // Never inside a character: "é" would straddle byte 16.
  e = ExtractAttachmentText("text/plain", "", "0123456789abcde\xc3\xa9", SmallOutput(16));
  EXPECT_EQ(e.text, "0123456789abcde");
  EXPECT_EQ(e.outcome, ExtractOutcome::kPartial);
  // The default limit, in the words an administrator reads.
  e = ExtractAttachmentText("text/plain", "", std::string((2 << 20) + 1, 'x'), {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kPartial);
  EXPECT_EQ(e.text.size(), 2u << 20);
  EXPECT_EQ(e.reason, "Text cut at 2 MiB (limits.max_output_bytes)");
  e = ExtractAttachmentText("text/html", "", "<p>" + std::string(3 << 20, 'y') + "</p>", {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kPartial);
  EXPECT_EQ(e.reason, "HTML text cut at 2 MiB (limits.max_output_bytes)");
}

TEST(ExtractText, InputOverLimitIsNotRead) {
  ExtractLimits limits;
  limits.max_input_bytes = 1024;
  Extracted e = ExtractAttachmentText("text/plain", "", std::string(1024, 'a'), limits);
  EXPECT_EQ(e.outcome, ExtractOutcome::kComplete);  // at the limit
  e = ExtractAttachmentText("text/plain", "", std::string(2048, 'a'), limits);
  EXPECT_EQ(e.outcome, ExtractOutcome::kUnreadable);
  EXPECT_EQ(e.text, "");
  EXPECT_EQ(e.reason, "Text not read: it is 2 KiB, over the limit of 1 KiB (limits.max_input_bytes)");
  e = ExtractAttachmentText("application/pdf", "big.pdf", "%PDF-1.4\n" + std::string(30 << 20, ' '), {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kUnreadable);
  EXPECT_EQ(e.reason, "PDF not read: it is 30 MiB, over the limit of 25 MiB (limits.max_input_bytes)");
  // Images are not text whatever their size.
  EXPECT_EQ(ExtractAttachmentText("image/jpeg", "", std::string(2048, 'a'), limits).outcome, ExtractOutcome::kNotText);
}

// --- Office Open XML and OpenDocument ---------------------------------------------------------

TEST(ExtractOffice, Docx) {
  Extracted e = ExtractAttachmentText(kDocxType, "report.docx", ReadFixture("sample.docx"), {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kComplete) << e.reason;
  EXPECT_EQ(e.text,
            "Quarterly report\n"
            "Profit & loss <draft> for \"Ops\" – café after tab\nnext line\n"
            "Kept\n"
            "A1\nB1\n"
            "Text box\n"
            "Confidential");
}

TEST(ExtractOffice, Xlsx) {
  Extracted e = ExtractAttachmentText("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "q.xlsx",
                                      ReadFixture("sample.xlsx"), {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kComplete) << e.reason;
  EXPECT_EQ(e.text, "Region\nRevenue\n東京\nR&D\ninline note");
}

TEST(ExtractOffice, PptxSlidesInOrder) {
  Extracted e = ExtractAttachmentText("application/octet-stream", "deck.pptx", ReadFixture("sample.pptx"), {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kComplete) << e.reason;
  EXPECT_EQ(e.text, "Roadmap 2024\nGoals\nQ&A\nSlide 3\nSlide 4\nSlide 5\nSlide 6\nSlide 7\nSlide 8\nSlide 9\nThanks");
}

TEST(ExtractOffice, Odt) {
  Extracted e =
      ExtractAttachmentText("application/vnd.oasis.opendocument.text", "minutes.odt", ReadFixture("sample.odt"), {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kComplete) << e.reason;
  EXPECT_EQ(e.text, "Minutes\nAttendees: Ann, Bob & Carol\nFirst line\nsecond line\nx1\ny1\nStraße");
}

TEST(ExtractOffice, Ods) {
  Extracted e = ExtractAttachmentText("", "totals.ods", ReadFixture("sample.ods"), {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kComplete) << e.reason;
  EXPECT_EQ(e.text, "Name Total\nWidgets 42");
}

TEST(ExtractOffice, TheBytesDecideNotTheLabel) {
  const std::string docx = ReadFixture("sample.docx");
  for (auto [type, name] : {std::pair{"application/octet-stream", ""}, std::pair{"application/msword", "x.doc"},
                            std::pair{"application/zip", "x.zip"}, std::pair{"application/pdf", "x.pdf"}}) {
    Extracted e = ExtractAttachmentText(type, name, docx, {});
    EXPECT_EQ(e.outcome, ExtractOutcome::kComplete) << type;
    EXPECT_TRUE(e.text.starts_with("Quarterly report\n")) << type;
  }
  // An OpenDocument file is known by its mimetype member whatever it is called.
  EXPECT_EQ(ExtractAttachmentText("application/octet-stream", "attachment.bin", ReadFixture("sample.odt"), {}).outcome,
            ExtractOutcome::kComplete);
}

TEST(ExtractOffice, MainPartNamedByRels) {
  std::string zip = BuildZip(
      {Stored("_rels/.rels",
              "<Relationships><Relationship Target='/word/document2.xml' Id='r' "
              "Type='http://purl.oclc.org/ooxml/officeDocument/relationships/officeDocument'/></Relationships>"),
       Stored("word/document.xml", WordXml("stale")), Stored("word/document2.xml", WordXml("current"))});
  EXPECT_EQ(ExtractAttachmentText("", "", zip, {}).text, "current");
}

TEST(ExtractOffice, NotADocument) {
  Extracted e = ExtractAttachmentText(kDocxType, "x.docx", "this is not a zip", {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kUnreadable);
  EXPECT_EQ(e.reason, "DOCX not read: not a zip archive, as Office and OpenDocument files are");
  e = ExtractAttachmentText(kDocxType, "x.docx", "\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1" + std::string(600, '\0'), {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kUnreadable);
  EXPECT_EQ(e.reason, "DOCX not read: it is password-protected (an encrypted Office file)");
  e = ExtractAttachmentText(kDocxType, "x.docx", BuildZip({Stored("hello.txt", "hi")}), {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kUnreadable);
  EXPECT_EQ(e.reason, "DOCX not read: the zip holds no DOCX document (no word/document.xml)");
}

TEST(ExtractOffice, DamagedZip) {
  const std::string docx = ReadFixture("sample.docx");
  for (size_t cut : {docx.size() / 2, size_t{10}}) {
    Extracted e = ExtractAttachmentText(kDocxType, "x.docx", docx.substr(0, cut), {});
    EXPECT_EQ(e.outcome, ExtractOutcome::kUnreadable) << cut;
    EXPECT_TRUE(e.reason.starts_with("DOCX ")) << e.reason;
  }
  // Without its central directory the members are still found from their local headers.
  Extracted e = ExtractAttachmentText(kDocxType, "x.docx", docx.substr(0, docx.size() - 30), {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kComplete) << e.reason;
  // A member whose checksum fails: libarchive withholds the chunk that ends it (here, all of it).
  ZipMember doc = Stored("word/document.xml", WordXml("checksummed"));
  doc.crc ^= 1;
  e = ExtractAttachmentText(kDocxType, "x.docx", BuildZip({doc}), {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kUnreadable);
  EXPECT_EQ(e.text, "");
  EXPECT_TRUE(e.reason.starts_with("DOCX is damaged: word/document.xml: ")) << e.reason;
  // Garbage after a zip signature, with nothing declaring a document: a broken zip, not text.
  EXPECT_EQ(ExtractAttachmentText("", "", "PK\x03\x04garbage", {}).outcome, ExtractOutcome::kNotText);
}

TEST(ExtractOffice, EncryptedMember) {
  ZipMember doc = Stored("word/document.xml", WordXml("secret"));
  doc.flags = 1;
  Extracted e =
      ExtractAttachmentText(kDocxType, "x.docx", BuildZip({Stored("[Content_Types].xml", "<Types/>"), doc}), {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kUnreadable);
  EXPECT_EQ(e.reason, "DOCX member word/document.xml is encrypted; not read");
}

TEST(ExtractOffice, CutAtOutputLimit) {
  Extracted e = ExtractAttachmentText(kDocxType, "x.docx", ReadFixture("sample.docx"), SmallOutput(20));
  EXPECT_EQ(e.outcome, ExtractOutcome::kPartial);
  EXPECT_EQ(e.text, "Quarterly report\nPro");
  EXPECT_EQ(e.reason, "DOCX text cut at 20 bytes (limits.max_output_bytes)");
  // Many slides, each small, adding up past the limit.
  std::vector<ZipMember> slides = {Stored("_rels/.rels",
                                          "<Relationships><Relationship Type=\"x/officeDocument\" "
                                          "Target=\"ppt/presentation.xml\"/></Relationships>")};
  for (int i = 1; i <= 200; ++i) {
    slides.push_back(Stored("ppt/slides/slide" + std::to_string(i) + ".xml",
                            "<p:sld><a:p><a:t>slide " + std::to_string(i) + " text</a:t></a:p></p:sld>"));
  }
  e = ExtractAttachmentText("", "", BuildZip(slides), SmallOutput(100));
  EXPECT_EQ(e.outcome, ExtractOutcome::kPartial);
  EXPECT_EQ(e.text.size(), 100u);
  EXPECT_TRUE(e.text.starts_with("slide 1 text\nslide 2 text\n")) << e.text;
  EXPECT_EQ(e.reason, "PPTX text cut at 100 bytes (limits.max_output_bytes)");
}

TEST(ExtractOffice, ZipBombMemberIsCappedByDefault) {
  // 1 GiB of zeros after a paragraph, deflated to about a megabyte.
  ZipMember bomb =
      ZeroBomb("word/document.xml", "<w:document><w:body><w:p><w:r><w:t>Before the bomb</w:t></w:r></w:p>", 1024);
  ASSERT_LT(bomb.data.size(), 4u << 20);
  std::string zip = BuildZip({Stored("[Content_Types].xml", "<Types/>"), bomb});
  auto start = Clock::now();
  Extracted e = ExtractAttachmentText(kDocxType, "bomb.docx", zip, {});
  EXPECT_LT(SecondsSince(start), 5.0);
  EXPECT_EQ(e.outcome, ExtractOutcome::kPartial);
  EXPECT_EQ(e.text, "Before the bomb");
  EXPECT_EQ(e.reason,
            "DOCX member word/document.xml is more than 64 MiB uncompressed (limits.max_zip_member_bytes): a zip "
            "bomb or a huge document; only its first 64 MiB were read");
}

TEST(ExtractOffice, ZipMemberLimitAtAndPastTheLimit) {
  const std::string xml = WordXml("member limit");
  std::string docx = MakeDocx(xml);
  ExtractLimits limits;
  limits.max_zip_member_bytes = xml.size();
  Extracted e = ExtractAttachmentText(kDocxType, "", docx, limits);
  EXPECT_EQ(e.outcome, ExtractOutcome::kComplete) << e.reason;
  EXPECT_EQ(e.text, "member limit");
  limits.max_zip_member_bytes = xml.size() - 1;
  e = ExtractAttachmentText(kDocxType, "", docx, limits);
  EXPECT_EQ(e.outcome, ExtractOutcome::kPartial);
  EXPECT_EQ(e.text, "member limit");  // the cut fell in the closing tags
  EXPECT_NE(e.reason.find("(limits.max_zip_member_bytes)"), std::string::npos) << e.reason;
  // Cut before any text: nothing to show.
  limits.max_zip_member_bytes = 10;
  e = ExtractAttachmentText(kDocxType, "", docx, limits);
  EXPECT_EQ(e.outcome, ExtractOutcome::kUnreadable);
  EXPECT_EQ(e.text, "");
}

TEST(ExtractOffice, ZipTotalLimit) {
  const std::string xml = WordXml("main");
  const std::string header = "<w:hdr><w:p><w:r><w:t>head</w:t></w:r></w:p></w:hdr>";
  std::string docx = MakeDocx(xml, {Stored("word/header1.xml", header)});
  ExtractLimits limits;
  limits.max_zip_total_bytes = xml.size() + header.size();
  Extracted e = ExtractAttachmentText(kDocxType, "", docx, limits);
  EXPECT_EQ(e.outcome, ExtractOutcome::kComplete) << e.reason;
  EXPECT_EQ(e.text, "main\nhead");
  limits.max_zip_total_bytes = xml.size() + 5;
  e = ExtractAttachmentText(kDocxType, "", docx, limits);
  EXPECT_EQ(e.outcome, ExtractOutcome::kPartial);
  EXPECT_EQ(e.text, "main");
  EXPECT_EQ(e.reason,
            "DOCX members hold more than " + std::to_string(xml.size() + 5) +
                " bytes uncompressed (limits.max_zip_total_bytes): a zip bomb or a huge document; the rest was not "
                "read");
}

TEST(ExtractOffice, ZipMembersLimit) {
  std::vector<ZipMember> extra;
  for (int i = 0; i < 20; ++i) extra.push_back(Stored("customXml/item" + std::to_string(i) + ".xml", "<x/>"));
  extra.push_back(Stored("word/footnotes.xml", "<w:footnotes><w:p><w:t>note</w:t></w:p></w:footnotes>"));
  std::string docx = MakeDocx(WordXml("body"), std::move(extra));  // 24 members
  ExtractLimits limits;
  limits.max_zip_members = 24;
  Extracted e = ExtractAttachmentText(kDocxType, "", docx, limits);
  EXPECT_EQ(e.outcome, ExtractOutcome::kComplete) << e.reason;
  EXPECT_EQ(e.text, "body\nnote");
  limits.max_zip_members = 23;
  e = ExtractAttachmentText(kDocxType, "", docx, limits);
  EXPECT_EQ(e.outcome, ExtractOutcome::kPartial);
  EXPECT_EQ(e.text, "body");
  EXPECT_EQ(e.reason, "DOCX has more than 23 zip members (limits.max_zip_members); only the first 23 were looked at");
}

TEST(ExtractOffice, XmlOddities) {
  // CDATA, comments, a DOCTYPE with an entity declaration (never expanded), processing
  // instructions, attributes holding '>' and a namespace prefix nobody else uses.
  std::string xml =
      "<?xml version='1.0'?><!DOCTYPE d [<!ENTITY boom 'BOOM'> <!ENTITY x '&boom;&boom;'>]>"
      "<x:document><x:body><x:p><x:r><x:t a='1>2'><![CDATA[<raw> & ]]]]><!-- c --></x:t><x:t>&x; &#65;&#x42;"
      "</x:t></x:r></x:p><x:p><x:r><x:t>&bogus &amp</x:t></x:r></x:p></x:body></x:document>";
  Extracted e = ExtractAttachmentText(kDocxType, "", MakeDocx(xml), {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kComplete);
  EXPECT_EQ(e.text, "<raw> & ]]&x; AB\n&bogus &amp");
}

// --- PDF ------------------------------------------------------------------------------------------

class ExtractPdf : public ::testing::Test {
 protected:
  void SetUp() override {
    SetPdfHelperPath(MAILVAULT_PDF_HELPER);
    char tmpl[] = "/tmp/mv-extract-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    SetPdfHelperPath(MAILVAULT_PDF_HELPER);
    for (const std::string& f : files_) unlink(f.c_str());
    rmdir(dir_.c_str());
  }
  // A stand-in for the helper: a shell script, made executable.
  std::string FakeHelper(const std::string& name, const std::string& body) {
    std::string path = dir_ + "/" + name;
    {
      std::ofstream out(path);
      out << "#!/bin/sh\n" << body << "\n";
    }
    chmod(path.c_str(), 0755);
    files_.push_back(path);
    return path;
  }

  std::string dir_;
  std::vector<std::string> files_;
};

TEST_F(ExtractPdf, SampleText) {
  Extracted e = ExtractAttachmentText("application/pdf", "sample.pdf", ReadFixture("sample.pdf"), {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kComplete) << e.reason;
  EXPECT_EQ(e.text, "Hello PDF world\nSecond page: café");
  EXPECT_EQ(e.reason, "");
}

TEST_F(ExtractPdf, KnownByNameOrBytes) {
  const std::string pdf = ReadFixture("sample.pdf");
  EXPECT_EQ(ExtractAttachmentText("application/octet-stream", "Scan 3.PDF", pdf, {}).outcome,
            ExtractOutcome::kComplete);
  EXPECT_EQ(ExtractAttachmentText("application/octet-stream", "", pdf, {}).text, "Hello PDF world\nSecond page: café");
  EXPECT_EQ(ExtractAttachmentText("image/jpeg", "x.jpg", "junk before\n" + pdf, {}).outcome, ExtractOutcome::kComplete);
  // Text that quotes a PDF header is still text.
  EXPECT_EQ(ExtractAttachmentText("text/plain", "", "see %PDF-1.4 spec", {}).text, "see %PDF-1.4 spec");
}

TEST_F(ExtractPdf, EncryptedIsUnreadable) {
  Extracted e = ExtractAttachmentText("application/pdf", "locked.pdf", ReadFixture("encrypted.pdf"), {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kUnreadable);
  EXPECT_EQ(e.text, "");
  EXPECT_EQ(e.reason, "PDF not readable: encrypted: a password is needed to open it");
}

TEST_F(ExtractPdf, GarbageIsUnreadable) {
  Extracted e = ExtractAttachmentText("application/pdf", "junk.pdf", ReadFixture("garbage.pdf"), {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kUnreadable);
  EXPECT_EQ(e.text, "");
  EXPECT_EQ(e.reason, "PDF not readable: damaged: poppler cannot open it as a PDF");
  e = ExtractAttachmentText("application/pdf", "x.pdf", "GIF89a not a pdf", {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kUnreadable);
  EXPECT_EQ(e.reason, "PDF not read: no %PDF- header in its first 1 KiB; not a PDF");
}

TEST_F(ExtractPdf, HelperMissing) {
  SetPdfHelperPath(dir_ + "/no-such-helper");
  Extracted e = ExtractAttachmentText("application/pdf", "", ReadFixture("sample.pdf"), {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kUnreadable);
  EXPECT_EQ(e.reason, "PDF not read: the helper " + dir_ +
                          "/no-such-helper is missing or not executable (No such file or directory); install "
                          "mailvault-pdftotext next to the mailvault binaries");
}

TEST_F(ExtractPdf, DefaultHelperPathIsNextToTheExecutable) {
  SetPdfHelperPath("");
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  ASSERT_GT(n, 0);
  std::string dir(exe, static_cast<size_t>(n));
  dir.resize(dir.rfind('/') + 1);
  EXPECT_EQ(PdfHelperPath(), dir + "mailvault-pdftotext");
}

TEST_F(ExtractPdf, TimeoutKillsAHangingHelper) {
  SetPdfHelperPath(FakeHelper("hang", "exec sleep 30"));
  ExtractLimits limits;
  limits.timeout_ms = 300;
  auto start = Clock::now();
  Extracted e = ExtractAttachmentText("application/pdf", "", ReadFixture("sample.pdf"), limits);
  double secs = SecondsSince(start);
  EXPECT_GE(secs, 0.29);
  EXPECT_LT(secs, 5.0);
  EXPECT_EQ(e.outcome, ExtractOutcome::kUnreadable);
  EXPECT_EQ(e.reason, "PDF helper timed out after 300 ms (limits.timeout_ms)");
  limits.timeout_ms = 10000;
  SetPdfHelperPath(FakeHelper("slow", "cat >/dev/null; printf 'page one\\n'; exec sleep 30"));
  limits.timeout_ms = 500;
  e = ExtractAttachmentText("application/pdf", "", ReadFixture("sample.pdf"), limits);
  EXPECT_EQ(e.outcome, ExtractOutcome::kPartial);
  EXPECT_EQ(e.text, "page one");
  EXPECT_EQ(e.reason, "PDF helper timed out after 500 ms (limits.timeout_ms)");
}

// The real helper on a PDF too long to read in the time given.
TEST_F(ExtractPdf, TimeoutOnALargePdf) {
  std::string objects, pdf = "%PDF-1.4\n";
  const int pages = 3000;
  std::vector<size_t> offsets;
  auto add = [&](const std::string& body) {
    offsets.push_back(pdf.size());
    pdf += std::to_string(offsets.size()) + " 0 obj\n" + body + "\nendobj\n";
  };
  std::string kids;
  for (int i = 0; i < pages; ++i) kids += std::to_string(4 + 2 * i) + " 0 R ";
  add("<< /Type /Catalog /Pages 2 0 R >>");
  add("<< /Type /Pages /Kids [" + kids + "] /Count " + std::to_string(pages) + " >>");
  add("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>");
  std::string content;
  for (int line = 0; line < 60; ++line) {
    content += "BT /F1 9 Tf 20 " + std::to_string(780 - 12 * line) +
               " Td (Line of text that takes poppler a little while to lay out, again and again) Tj ET\n";
  }
  for (int i = 0; i < pages; ++i) {
    add("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents " +
        std::to_string(5 + 2 * i) + " 0 R >>");
    add("<< /Length " + std::to_string(content.size()) + " >>\nstream\n" + content + "\nendstream");
  }
  size_t xref = pdf.size();
  pdf += "xref\n0 " + std::to_string(offsets.size() + 1) + "\n0000000000 65535 f \n";
  for (size_t off : offsets) {
    char line[32];
    std::snprintf(line, sizeof line, "%010zu 00000 n \n", off);
    pdf += line;
  }
  pdf += "trailer\n<< /Size " + std::to_string(offsets.size() + 1) + " /Root 1 0 R >>\nstartxref\n" +
         std::to_string(xref) + "\n%%EOF\n";
  ExtractLimits limits;
  limits.timeout_ms = 200;
  limits.max_output_bytes = 64 << 20;  // room for all 14 MB of text: only the clock stops it
  auto start = Clock::now();
  Extracted e = ExtractAttachmentText("application/pdf", "", pdf, limits);
  EXPECT_LT(SecondsSince(start), 5.0);
  EXPECT_EQ(e.reason, "PDF helper timed out after 200 ms (limits.timeout_ms)");
  EXPECT_NE(e.outcome, ExtractOutcome::kComplete);
  // With time enough, the text comes out up to the output limit.
  e = ExtractAttachmentText("application/pdf", "", pdf, {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kPartial);
  EXPECT_EQ(e.reason, "PDF text cut at 2 MiB (limits.max_output_bytes)");
  EXPECT_TRUE(e.text.starts_with("Line of text that takes poppler")) << e.text.substr(0, 100);
}

TEST_F(ExtractPdf, OutputCapKillsAFloodingHelper) {
  SetPdfHelperPath(FakeHelper("flood", "exec yes 'many words'"));
  Extracted e = ExtractAttachmentText("application/pdf", "", ReadFixture("sample.pdf"), SmallOutput(1000));
  EXPECT_EQ(e.outcome, ExtractOutcome::kPartial);
  EXPECT_LE(e.text.size(), 1000u);
  EXPECT_TRUE(e.text.starts_with("many words\nmany words\n"));
  EXPECT_EQ(e.reason, "PDF text cut at 1000 bytes (limits.max_output_bytes)");
}

TEST_F(ExtractPdf, HelperCrash) {
  SetPdfHelperPath(FakeHelper("crash", "printf 'partial'; kill -SEGV $$"));
  Extracted e = ExtractAttachmentText("application/pdf", "", ReadFixture("sample.pdf"), {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kPartial);
  EXPECT_EQ(e.text, "partial");
  EXPECT_EQ(e.reason, "PDF helper crashed (SIGSEGV); the PDF is probably malformed");
  SetPdfHelperPath(FakeHelper("fail", "echo 'bad things' >&2; exit 9"));
  e = ExtractAttachmentText("application/pdf", "", ReadFixture("sample.pdf"), {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kUnreadable);
  EXPECT_EQ(e.reason, "PDF helper failed (exit status 9): bad things");
}

// A helper that quits without reading a large input: no deadlock, no SIGPIPE in this process.
TEST_F(ExtractPdf, HelperThatIgnoresItsInput) {
  SetPdfHelperPath(FakeHelper("ignore", "printf 'done'; exec 0<&-; exit 0"));
  std::string big = "%PDF-1.4\n" + std::string(20 << 20, 'x');
  Extracted e = ExtractAttachmentText("application/pdf", "", big, {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kComplete) << e.reason;
  EXPECT_EQ(e.text, "done");
}

TEST_F(ExtractPdf, HelperRunsUnderLimits) {
  // What the helper's own process sees: address space (KiB), CPU seconds (the wall-clock
  // timeout rounded up, plus one), core dumps.
  SetPdfHelperPath(FakeHelper("limits", "cat >/dev/null; ulimit -v; ulimit -t; ulimit -c"));
  ExtractLimits limits;
  limits.memory_bytes = 64 << 20;
  limits.timeout_ms = 2500;
  Extracted e = ExtractAttachmentText("application/pdf", "", ReadFixture("sample.pdf"), limits);
  EXPECT_EQ(e.outcome, ExtractOutcome::kComplete) << e.reason;
  EXPECT_EQ(e.text, "65536\n3\n0");
}

TEST_F(ExtractPdf, HelperInheritsNoDescriptors) {
  std::string marker = dir_ + "/open-in-parent";
  files_.push_back(marker);
  std::FILE* f = std::fopen(marker.c_str(), "w");  // not close-on-exec
  ASSERT_NE(f, nullptr);
  SetPdfHelperPath(FakeHelper("fds", "cat >/dev/null; ls -l /proc/$$/fd"));
  Extracted e = ExtractAttachmentText("application/pdf", "", ReadFixture("sample.pdf"), {});
  std::fclose(f);
  EXPECT_EQ(e.outcome, ExtractOutcome::kComplete) << e.reason;
  EXPECT_EQ(e.text.find("open-in-parent"), std::string::npos) << e.text;
}

TEST_F(ExtractPdf, OutOfMemory) {
  // The real helper in an address space too small for poppler's libraries: reported, not inherited.
  ExtractLimits limits;
  limits.memory_bytes = 8 << 20;
  Extracted e = ExtractAttachmentText("application/pdf", "", ReadFixture("sample.pdf"), limits);
  EXPECT_EQ(e.outcome, ExtractOutcome::kUnreadable);
  EXPECT_TRUE(e.reason.starts_with("PDF helper failed (exit status 127): ")) << e.reason;
  // The helper's own report of running out (std::bad_alloc) names the limit.
  SetPdfHelperPath(FakeHelper("oom", "echo 'out of memory' >&2; exit 4"));
  e = ExtractAttachmentText("application/pdf", "", ReadFixture("sample.pdf"), {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kUnreadable);
  EXPECT_EQ(e.reason, "PDF helper ran out of memory at 1 GiB (limits.memory_bytes)");
}

TEST_F(ExtractPdf, HelperNotExecutable) {
  std::string path = FakeHelper("not-a-program", "");
  chmod(path.c_str(), 0644);
  SetPdfHelperPath(path);
  Extracted e = ExtractAttachmentText("application/pdf", "", ReadFixture("sample.pdf"), {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kUnreadable);
  EXPECT_NE(e.reason.find("is missing or not executable (Permission denied)"), std::string::npos) << e.reason;
  // Executable, but not something the kernel can run.
  {
    std::ofstream out(path, std::ios::trunc);
    out << "\x7f"
           "ELF garbage";
  }
  chmod(path.c_str(), 0755);
  e = ExtractAttachmentText("application/pdf", "", ReadFixture("sample.pdf"), {});
  EXPECT_EQ(e.outcome, ExtractOutcome::kUnreadable);
  EXPECT_EQ(e.reason, "PDF not read: could not start the helper: exec " + path + ": Exec format error");
}

TEST_F(ExtractPdf, ConcurrentCalls) {
  const std::string pdf = ReadFixture("sample.pdf");
  std::vector<std::thread> threads;
  std::vector<Extracted> results(8);
  for (size_t i = 0; i < results.size(); ++i) {
    threads.emplace_back([&, i] { results[i] = ExtractAttachmentText("application/pdf", "", pdf, {}); });
  }
  for (auto& t : threads) t.join();
  for (const Extracted& e : results) {
    EXPECT_EQ(e.outcome, ExtractOutcome::kComplete) << e.reason;
    EXPECT_EQ(e.text, "Hello PDF world\nSecond page: café");
  }
}

}  // namespace
}  // namespace mailvault
