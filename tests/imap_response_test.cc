// The IMAP response reader (recovery/imap_response.h) on bytes as Dovecot and Cyrus send them
// (docs/design/recovery.md §2-4 has the transcripts these come from), fed whole and in random
// pieces, and at its limits.
#include <gtest/gtest.h>

#include <random>

#include "recovery/imap_response.h"

namespace mailvault::recovery {
namespace {

std::vector<ImapResponse> ReadAll(std::string_view bytes, size_t piece = 0, ImapLimits limits = {}) {
  ImapResponseReader r(limits);
  std::vector<ImapResponse> out;
  std::mt19937 rng(7);
  size_t i = 0;
  while (i < bytes.size()) {
    size_t n = piece ? piece : 1 + rng() % 17;
    r.Feed(bytes.substr(i, n));
    i += n;
    for (;;) {
      Result<std::optional<ImapResponse>> next = r.Next();
      EXPECT_TRUE(next.ok()) << next.error().ToString();
      if (!next.ok() || !*next) break;
      out.push_back(std::move(**next));
    }
  }
  EXPECT_EQ(r.buffered(), 0u);
  return out;
}

const char kSession[] =
    "* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ AUTH=PLAIN] Dovecot (Debian) ready.\r\n"
    "a1 OK [CAPABILITY IMAP4rev1 LITERAL+ UIDPLUS MULTIAPPEND QUOTA] Logged in\r\n"
    "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
    "* 2 EXISTS\r\n"
    "* OK [UIDVALIDITY 1764063000] UIDs valid\r\n"
    "a2 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).\r\n"
    "* 1 FETCH (UID 7 RFC822.SIZE 1234 BODY[HEADER.FIELDS (MESSAGE-ID DATE)] {65}\r\n"
    "Message-ID: <a@b.example>\r\nDate: Tue, 1 Oct 2002 10:00:00 +0000\r\n)\r\n"
    "* 2 FETCH (UID 9 RFC822.SIZE 88 BODY[HEADER.FIELDS (MESSAGE-ID DATE)] \"\")\r\n"
    "a3 OK Fetch completed.\r\n"
    "+ OK\r\n"
    "a4 OK [APPENDUID 1764063000 10] Append completed.\r\n"
    "a5 NO [TRYCREATE] Mailbox doesn't exist: Recovered\r\n"
    "a6 NO [OVERQUOTA] Quota exceeded (mailbox for user is full)\r\n"
    "a7 NO Over quota\r\n"
    "* BYE Logging out\r\n";

TEST(ImapResponseTest, ReadsADovecotSessionWholeOrInAnyPieces) {
  for (size_t piece : {size_t{0}, size_t{1}, size_t{4096}}) {
    std::vector<ImapResponse> rs = ReadAll(kSession, piece);
    ASSERT_EQ(rs.size(), 15u) << piece;
    EXPECT_EQ(rs[0].status, "OK");
    EXPECT_EQ(rs[0].code_name(), "CAPABILITY");
    EXPECT_EQ(rs[1].kind, ImapResponse::Kind::kTagged);
    EXPECT_EQ(rs[1].tag, "a1");
    EXPECT_NE(rs[1].code.find("UIDPLUS"), std::string::npos);
    ASSERT_EQ(rs[2].tokens.size(), 2u);
    EXPECT_TRUE(rs[2].tokens[0].atom_is("flags"));
    EXPECT_EQ(rs[2].tokens[1].children.size(), 5u);
    EXPECT_EQ(rs[2].tokens[1].children[0].text, "\\Answered");
    ASSERT_EQ(rs[3].tokens.size(), 2u);
    EXPECT_TRUE(rs[3].tokens[1].atom_is("EXISTS"));

    const ImapResponse& f = rs[6];
    ASSERT_EQ(f.tokens.size(), 3u);
    EXPECT_EQ(f.tokens[0].text, "1");
    EXPECT_TRUE(f.tokens[1].atom_is("FETCH"));
    const std::vector<ImapToken>& items = f.tokens[2].children;
    ASSERT_EQ(items.size(), 6u);
    EXPECT_TRUE(items[0].atom_is("UID"));
    EXPECT_EQ(items[1].text, "7");
    EXPECT_EQ(items[4].text, "BODY[HEADER.FIELDS (MESSAGE-ID DATE)]");  // the section stays one atom
    EXPECT_EQ(items[5].kind, ImapToken::Kind::kString);
    EXPECT_EQ(items[5].text, "Message-ID: <a@b.example>\r\nDate: Tue, 1 Oct 2002 10:00:00 +0000\r\n");
    EXPECT_EQ(rs[7].tokens[2].children[5].text, "");

    EXPECT_EQ(rs[9].kind, ImapResponse::Kind::kContinuation);
    EXPECT_EQ(rs[10].code, "APPENDUID 1764063000 10");
    EXPECT_EQ(rs[10].code_name(), "APPENDUID");
    EXPECT_EQ(rs[11].status, "NO");
    EXPECT_EQ(rs[11].code_name(), "TRYCREATE");
    EXPECT_EQ(rs[12].code_name(), "OVERQUOTA");
    EXPECT_EQ(rs[13].code, "");  // Cyrus says it in words only
    EXPECT_EQ(rs[13].text, "Over quota");
    EXPECT_EQ(rs[14].status, "BYE");
  }
}

TEST(ImapResponseTest, LiteralsHoldAnyBytes) {
  // Bytes that would be framing outside a literal: CRLF, a response, a literal header, a NUL.
  std::string body("line one\r\n* 3 EXISTS\r\n{9}\r\n", 27);
  body.push_back('\0');
  body += ")(\"\\";
  std::string wire = "* 4 FETCH (UID 5 BODY[] {" + std::to_string(body.size()) + "}\r\n" + body + " FLAGS (\\Seen))\r\n";
  std::vector<ImapResponse> rs = ReadAll(wire, 1);
  ASSERT_EQ(rs.size(), 1u);
  const std::vector<ImapToken>& items = rs[0].tokens[2].children;
  ASSERT_EQ(items.size(), 6u);
  EXPECT_EQ(items[3].text, body);
  EXPECT_EQ(items[5].children[0].text, "\\Seen");
}

TEST(ImapResponseTest, QuotedStringsNilAndNonSynchronisingLiterals) {
  std::vector<ImapResponse> rs = ReadAll("* LIST (\\HasNoChildren) \"/\" \"Sent \\\"Items\\\"\"\r\n* 1 FETCH (ENVELOPE (NIL {3+}\r\nabc))\r\n");
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_EQ(rs[0].tokens[3].text, "Sent \"Items\"");
  EXPECT_EQ(rs[1].tokens[2].children[1].children[0].kind, ImapToken::Kind::kNil);
  EXPECT_EQ(rs[1].tokens[2].children[1].children[1].text, "abc");
}

TEST(ImapResponseTest, LimitsAndBrokenFramingAreErrors) {
  ImapLimits small;
  small.max_line_bytes = 100;
  small.max_literal_bytes = 1000;
  small.max_depth = 3;
  auto first_error = [&](const std::string& wire) -> std::string {
    ImapResponseReader r(small);
    r.Feed(wire);
    for (;;) {
      Result<std::optional<ImapResponse>> n = r.Next();
      if (!n.ok()) return n.error().ToString();
      if (!*n) return "(needs more)";
    }
  };
  EXPECT_EQ(first_error("* OK " + std::string(95, 'x') + "\r\n"), "(needs more)");  // 100 bytes: at the limit
  EXPECT_NE(first_error("* OK " + std::string(96, 'x') + "\r\n").find("line over 100 bytes"), std::string::npos);
  EXPECT_NE(first_error("* OK " + std::string(200, 'x')).find("line over 100 bytes"), std::string::npos);  // no CRLF yet
  EXPECT_EQ(first_error("* 1 FETCH (BODY[] {1000}\r\n"), "(needs more)");
  EXPECT_NE(first_error("* 1 FETCH (BODY[] {1001}\r\n").find("over the limit of 1000"), std::string::npos);
  EXPECT_NE(first_error("* 1 FETCH (BODY[] {99999999999999999999}\r\n").find("over the limit"), std::string::npos);
  EXPECT_EQ(first_error("* X (((a)))\r\n"), "(needs more)");
  EXPECT_NE(first_error("* X ((((a))))\r\n").find("nested deeper than 3"), std::string::npos);
  EXPECT_NE(first_error("* X (a\r\n").find("never closed"), std::string::npos);
  EXPECT_NE(first_error("* X a)\r\n").find("without"), std::string::npos);
  EXPECT_NE(first_error("* X \"abc\r\n").find("never closed"), std::string::npos);
  EXPECT_NE(first_error(std::string("* X a\0b\r\n", 9)).find("NUL"), std::string::npos);
  EXPECT_NE(first_error("a1 FETCH done\r\n").find("tagged response without"), std::string::npos);
  EXPECT_NE(first_error("a1 OK [APPENDUID 1 2 done\r\n").find("without \"]\""), std::string::npos);
}

TEST(ImapResponseTest, QuotingPicksAStringOrALiteral) {
  EXPECT_EQ(ImapQuote("INBOX"), "\"INBOX\"");
  EXPECT_EQ(ImapQuote("Sent \"x\" \\"), "\"Sent \\\"x\\\" \\\\\"");
  EXPECT_EQ(ImapQuote("Gel\xc3\xb6scht"), "{9+}\r\nGel\xc3\xb6scht");
  EXPECT_EQ(ImapQuote("a\r\nb"), "{4+}\r\na\r\nb");
}

}  // namespace
}  // namespace mailvault::recovery
