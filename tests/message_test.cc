#include "core/message.h"

#include <gtest/gtest.h>

#include "core/text.h"
#include "tests/test_util.h"

namespace mailvault {
namespace {

using testing::SimpleMessage;

class MessageTest : public ::testing::Test {
 protected:
  void SetUp() override { InitMessageParsing(); }
  MessageLimits limits_;
};

TEST_F(MessageTest, ParsesAddressesDateAndEncodedSubject) {
  std::string raw =
      "From: =?ISO-8859-1?Q?Andr=E9?= <Andre@Example.COM>\n"
      "To: bob@example.org, \"Carol C.\" <carol@example.org>\n"
      "Cc: team: dave@example.net, erin@example.net;\n"
      "Bcc: frank@example.com\n"
      "Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=\n"
      "Date: Thu, 22 Aug 2002 12:46:18 +0100\n"
      "Message-ID: <ABC@Example.COM>\n"
      "In-Reply-To: <parent@x.org>\n"
      "References: <root@x.org> <parent@x.org>\n"
      "\n"
      "Hello\n";
  Result<ParsedMessage> m = ParseMessage(raw, limits_);
  ASSERT_TRUE(m.ok()) << m.error().ToString();
  EXPECT_EQ(m->summary.from, "andre@example.com");
  EXPECT_EQ(m->summary.from_name, "Andr\xc3\xa9");
  EXPECT_EQ(m->summary.subject, "Gr\xc3\xbc\xc3\x9f" "e aus K\xc3\xb6ln");
  ASSERT_TRUE(m->summary.date.has_value());
  EXPECT_EQ(*m->summary.date, 1030016778);  // 2002-08-22T11:46:18Z
  EXPECT_EQ(m->summary.date_utc_offset_minutes, 60);
  EXPECT_EQ(m->summary.message_id, "<ABC@example.com>");
  EXPECT_FALSE(m->summary.message_id_synthetic);
  ASSERT_EQ(m->to.size(), 2u);
  EXPECT_EQ(m->to[1].name, "Carol C.");
  EXPECT_EQ(m->to[1].address, "carol@example.org");
  ASSERT_EQ(m->cc.size(), 2u);  // group members
  EXPECT_EQ(m->cc[1].address, "erin@example.net");
  ASSERT_EQ(m->bcc.size(), 1u);
  EXPECT_EQ(m->in_reply_to, std::vector<std::string>{"<parent@x.org>"});
  EXPECT_EQ(m->references, (std::vector<std::string>{"<root@x.org>", "<parent@x.org>"}));
  EXPECT_EQ(m->HeaderKey(), "<ABC@example.com> 1030016778");
}

TEST_F(MessageTest, WalksTheMimeTreeWithAttachments) {
  std::string raw =
      "From: a@example.com\nSubject: files\nMessage-ID: <m@x>\nMIME-Version: 1.0\n"
      "Content-Type: multipart/mixed; boundary=\"outer\"\n\n"
      "preamble\n--outer\n"
      "Content-Type: multipart/alternative; boundary=inner\n\n"
      "--inner\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n"
      "caf=E9\n--inner\nContent-Type: text/html\n\n<p>caf&eacute;</p>\n--inner--\n"
      "--outer\nContent-Type: application/pdf; name=\"report.pdf\"\n"
      "Content-Disposition: attachment; filename=\"report.pdf\"\nContent-Transfer-Encoding: base64\n\n"
      "JVBERi0xLjQK\n--outer--\n";
  ParseOptions opts;
  opts.collect_text = true;
  Result<ParsedMessage> m = ParseMessage(raw, limits_, opts);
  ASSERT_TRUE(m.ok()) << m.error().ToString();
  ASSERT_EQ(m->parts.size(), 5u);
  EXPECT_EQ(m->parts[0].content_type, "multipart/mixed");
  EXPECT_EQ(m->parts[1].content_type, "multipart/alternative");
  EXPECT_EQ(m->parts[1].depth, 1);
  EXPECT_EQ(m->parts[2].content_type, "text/plain");
  EXPECT_EQ(m->parts[2].charset, "iso-8859-1");
  EXPECT_EQ(m->parts[2].depth, 2);
  EXPECT_EQ(m->parts[4].filename, "report.pdf");
  EXPECT_TRUE(m->parts[4].is_attachment);
  EXPECT_EQ(m->parts[4].decoded_size, 9u);  // "%PDF-1.4\n"
  EXPECT_TRUE(m->summary.has_attachments);
  ASSERT_GE(m->text.size(), 1u);
  EXPECT_EQ(m->text[0].substr(0, 5), "caf\xc3\xa9");  // decoded and converted to UTF-8
  EXPECT_EQ(m->shape.parts, 5);
  EXPECT_EQ(m->shape.depth, 2);
}

// BLUEPRINT decision 10: the same content re-encoded by another server hashes the same.
TEST_F(MessageTest, ContentHashesSurviveReencoding) {
  auto build = [](const std::string& headers, const std::string& text_part, const std::string& att_part) {
    return headers + "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\n" + text_part + "\n--b\n" +
           att_part + "\n--b--\n";
  };
  std::string a = build("From: a@x\nMessage-ID: <k@x>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n",
                        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\nGr=C3=BC=C3=9Fe\r\nline two",
                        "Content-Type: application/octet-stream; name=a.bin\nContent-Transfer-Encoding: base64\n\nAAECAwQ=");
  std::string b = build("Return-Path: <a@x>\nDelivered-To: bob@y\nReceived: from mx by y\nFrom: a@x\nMessage-ID: <k@x>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n",
                        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\nR3LDvMOfZQpsaW5lIHR3bw==",
                        "Content-Type: application/octet-stream; name=a.bin\nContent-Transfer-Encoding: base64\n\nAAEC\nAwQ=");
  Result<ParsedMessage> pa = ParseMessage(a, limits_), pb = ParseMessage(b, limits_);
  ASSERT_TRUE(pa.ok() && pb.ok());
  EXPECT_EQ(pa->ContentHashes().size(), 2u);
  EXPECT_EQ(pa->ContentHashes(), pb->ContentHashes());
  EXPECT_EQ(pa->HeaderKey(), pb->HeaderKey());
  // A different attachment changes the set.
  std::string c = build("From: a@x\nMessage-ID: <k@x>\n", "Content-Type: text/plain\n\nGr\xc3\xbc\xc3\x9f" "e\nline two",
                        "Content-Type: application/octet-stream; name=a.bin\nContent-Transfer-Encoding: base64\n\nAAECAwU=");
  Result<ParsedMessage> pc = ParseMessage(c, limits_);
  ASSERT_TRUE(pc.ok());
  EXPECT_NE(pa->ContentHashes(), pc->ContentHashes());
}

TEST_F(MessageTest, MissingMessageIdGetsAStableSyntheticOne) {
  std::string raw = "From: a@example.com\nSubject: no id\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\nbody\r\n";
  std::string same_reencoded = "Received: by relay\nFrom: a@example.com\nSubject: no id\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\nbody\n";
  MessageSummary s1 = SummarizeHeaders(raw), s2 = SummarizeHeaders(same_reencoded);
  EXPECT_TRUE(s1.message_id_synthetic);
  EXPECT_EQ(s1.message_id, s2.message_id);
  EXPECT_NE(s1.message_id, SummarizeHeaders("From: b@example.com\nSubject: no id\n\nbody\n").message_id);
  EXPECT_NE(s1.message_id.find("@synthetic.mailvault.invalid>"), std::string::npos);
}

TEST_F(MessageTest, UnreadableDateIsAbsentNotEpoch) {
  MessageSummary s = SummarizeHeaders("Date: sometime last week\nSubject: x\n\n");
  EXPECT_FALSE(s.date.has_value());
}

TEST_F(MessageTest, RawEightBitHeadersComeOutAsValidUtf8) {
  // Undeclared 8-bit bytes in a header are read as Latin-1 (GMime's fallback), never passed on raw.
  MessageSummary s = SummarizeHeaders("Subject: caf\xe9 \xff\xfe\nFrom: x@y\n\n");
  EXPECT_EQ(s.subject, "caf\xc3\xa9 \xc3\xbf\xc3\xbe");
}

TEST(TextTest, InvalidUtf8BecomesReplacementCharacters) {
  EXPECT_EQ(ToValidUtf8("ok \xc3\xa9"), "ok \xc3\xa9");
  EXPECT_EQ(ToValidUtf8("a\xe9 b"), "a\xef\xbf\xbd b");
  EXPECT_EQ(ToValidUtf8("\xc0\xaf"), "\xef\xbf\xbd\xef\xbf\xbd");  // overlong '/'
  EXPECT_EQ(ToValidUtf8("\xed\xa0\x80"), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");  // a surrogate
  EXPECT_EQ(ToValidUtf8("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80");
}

// ---- named limits, tested at the limit and one past it ----

std::string NestedMessage(int depth) {
  std::string head = "From: a@x\nMessage-ID: <n@x>\n", tail;
  for (int i = 0; i < depth; ++i) {
    head += "Content-Type: multipart/mixed; boundary=b" + std::to_string(i) + "\n\n--b" + std::to_string(i) + "\n";
    tail = "\n--b" + std::to_string(i) + "--\n" + tail;
  }
  return head + "Content-Type: text/plain\n\nleaf\n" + tail;
}

std::string ManyParts(int leaves) {
  std::string m = "From: a@x\nMessage-ID: <p@x>\nContent-Type: multipart/mixed; boundary=sep\n\n";
  for (int i = 0; i < leaves; ++i) m += "--sep\nContent-Type: text/plain\n\np" + std::to_string(i) + "\n";
  return m + "--sep--\n";
}

TEST_F(MessageTest, DepthLimit) {
  // depth N multiparts put the leaf at depth N.
  Result<ParsedMessage> at = ParseMessage(NestedMessage(limits_.max_mime_depth), limits_);
  ASSERT_TRUE(at.ok()) << at.error().ToString();
  EXPECT_EQ(at->shape.depth, limits_.max_mime_depth);
  Result<ParsedMessage> over = ParseMessage(NestedMessage(limits_.max_mime_depth + 1), limits_);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_NE(over.error().message().find("limits.max_mime_depth"), std::string::npos);
}

TEST_F(MessageTest, PartCountLimit) {
  // The root multipart counts as a part: 9,999 leaves + the root = 10,000.
  Result<ParsedMessage> at = ParseMessage(ManyParts(limits_.max_mime_parts - 1), limits_);
  ASSERT_TRUE(at.ok()) << at.error().ToString();
  EXPECT_EQ(at->shape.parts, limits_.max_mime_parts);
  EXPECT_EQ(static_cast<int>(at->parts.size()), limits_.max_mime_parts);
  Result<ParsedMessage> over = ParseMessage(ManyParts(limits_.max_mime_parts), limits_);
  ASSERT_FALSE(over.ok());
  EXPECT_NE(over.error().message().find("limits.max_mime_parts"), std::string::npos);
}

TEST_F(MessageTest, HeaderBytesLimit) {
  MessageLimits small;
  small.max_header_bytes = 1000;
  std::string under = "Subject: " + std::string(900, 'a') + "\n\nbody\n";
  std::string over = "Subject: " + std::string(1000, 'a') + "\n\nbody\n";
  EXPECT_TRUE(ParseMessage(under, small).ok());
  Result<ParsedMessage> r = ParseMessage(over, small);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("limits.max_header_bytes"), std::string::npos);
}

TEST_F(MessageTest, MessageSizeLimit) {
  MessageLimits small;
  small.max_message_bytes = 1000;
  std::string at = SimpleMessage("s", "");
  at += std::string(1000 - at.size(), 'x');
  EXPECT_TRUE(ParseMessage(at, small).ok());
  Result<ParsedMessage> r = ParseMessage(at + "x", small);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("limits.max_message_bytes"), std::string::npos);
}

TEST_F(MessageTest, AttachedMessagesCountTowardDepth) {
  std::string raw = "From: a@x\nContent-Type: multipart/mixed; boundary=o\n\n--o\nContent-Type: message/rfc822\n\n"
                    "From: inner@x\nSubject: inner\nContent-Type: text/plain\n\ninner body\n--o--\n";
  Result<ParsedMessage> m = ParseMessage(raw, limits_);
  ASSERT_TRUE(m.ok()) << m.error().ToString();
  EXPECT_EQ(m->shape.depth, 2);
  EXPECT_EQ(m->shape.parts, 3);
  ASSERT_EQ(m->parts.size(), 3u);
  EXPECT_EQ(m->parts[1].content_type, "message/rfc822");
  EXPECT_EQ(m->parts[2].depth, 2);
}

}  // namespace
}  // namespace mailvault

namespace mailvault {
namespace {

// The plain-text fast path (no MIME parser for a single 7-bit text/plain part) must give the
// indexer exactly what GMime gives, on every message of the real corpus where it applies.
TEST(MessageFastPathTest, AgreesWithGMimeOnTheCorpus) {
  InitMessageParsing();
  MessageLimits limits;
  ParseOptions fast, full;
  fast.collect_text = full.collect_text = true;
  fast.content_hashes = false;  // allows the fast path
  full.content_hashes = true;   // always the GMime walk
  size_t compared = 0, plain = 0;
  for (const std::string& path : testing::CorpusFiles()) {
    const std::string raw = testing::ReadFile(path);
    Result<ParsedMessage> a = ParseMessage(raw, limits, fast), b = ParseMessage(raw, limits, full);
    ASSERT_EQ(a.ok(), b.ok()) << path;
    if (!a.ok()) continue;
    ++compared;
    if (a->parts.size() == 1 && a->parts[0].content_hash.empty() && !b->parts[0].content_hash.empty()) ++plain;
    ASSERT_EQ(a->text.size(), b->text.size()) << path;
    for (size_t i = 0; i < a->text.size(); ++i) EXPECT_EQ(a->text[i], b->text[i]) << path;
    EXPECT_EQ(a->text_part, b->text_part) << path;
    ASSERT_EQ(a->parts.size(), b->parts.size()) << path;
    for (size_t i = 0; i < a->parts.size(); ++i) {
      EXPECT_EQ(a->parts[i].content_type, b->parts[i].content_type) << path;
      EXPECT_EQ(a->parts[i].decoded_size, b->parts[i].decoded_size) << path;
      EXPECT_EQ(a->parts[i].is_attachment, b->parts[i].is_attachment) << path;
    }
    EXPECT_EQ(a->summary.has_attachments, b->summary.has_attachments) << path;
  }
  EXPECT_EQ(compared, testing::CorpusFiles().size());
  EXPECT_GT(plain, 1000u);  // the path is really taken: most ham is plain ASCII text
}

}  // namespace
}  // namespace mailvault
