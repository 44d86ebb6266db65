#include <gtest/gtest.h>

#include <filesystem>

#include "capture/mail_source.h"
#include "tests/test_util.h"

namespace mailvault {
namespace {

using testing::TempDir;
using testing::WriteFile;

std::vector<std::string> Split(const std::string& mbox) {
  std::vector<std::string> out;
  SplitMbox(mbox, [&](size_t, std::string m) { out.push_back(std::move(m)); });
  return out;
}

TEST(MboxTest, SplitsAtFromLinesAfterBlankLines) {
  std::string mbox =
      "From a@x Mon Jan  1 00:00:00 2024\nSubject: one\n\nbody one\nFrom inside a paragraph is not a separator\n\n"
      "From b@x Mon Jan  1 00:00:00 2024\nSubject: two\n\nbody two\n\n";
  auto msgs = Split(mbox);
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(msgs[0], "Subject: one\n\nbody one\nFrom inside a paragraph is not a separator\n");
  EXPECT_EQ(msgs[1], "Subject: two\n\nbody two\n");
}

TEST(MboxTest, UnescapesMboxrdAndRoundTrips) {
  std::string m1 = "Subject: quoting\n\n>From already quoted\nFrom at line start\n>>From deeper\n";
  std::string m2 = "Subject: second\n\nplain\n";
  std::string mbox;
  AppendMboxMessage(m1, 0, &mbox);
  AppendMboxMessage(m2, 1700000000, &mbox);
  EXPECT_NE(mbox.find("\n>From at line start\n"), std::string::npos);
  EXPECT_NE(mbox.find("\n>>From already quoted\n"), std::string::npos);
  auto msgs = Split(mbox);
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(msgs[0], m1);
  EXPECT_EQ(msgs[1], m2);
}

TEST(ImportSourcesTest, FindsMaildirMboxAndEmlInATree) {
  TempDir t;
  std::filesystem::create_directories(t / "tree/Maildir/cur");
  std::filesystem::create_directories(t / "tree/Maildir/new");
  std::filesystem::create_directories(t / "tree/Maildir/tmp");
  std::filesystem::create_directories(t / "tree/Maildir/.Sent/cur");
  std::filesystem::create_directories(t / "tree/Maildir/.Sent/new");
  WriteFile(t / "tree/Maildir/cur/1:2,S", "Subject: a\n\nx\n");
  WriteFile(t / "tree/Maildir/new/2", "Subject: b\n\nx\n");
  WriteFile(t / "tree/Maildir/tmp/partial", "Subject: being delivered\n");
  WriteFile(t / "tree/Maildir/.Sent/cur/3:2,S", "Subject: sent\n\nx\n");
  WriteFile(t / "tree/archive.mbox", "From x Mon Jan  1 00:00:00 2024\nSubject: m\n\nx\n");
  WriteFile(t / "tree/one.eml", "Subject: e\n\nx\n");
  std::vector<std::string> errors;
  auto files = FindSourceFiles({t / "tree", t / "missing"}, [&](const std::string& p, const Error&) { errors.push_back(p); });
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0], t / "missing");
  ASSERT_EQ(files.size(), 5u);  // not tmp/
  int mbox = 0, eml = 0, maildir = 0;
  for (auto& f : files) {
    EXPECT_EQ(f.path.find("/tmp/partial"), std::string::npos);
    mbox += f.kind == SourceKind::kMbox;
    eml += f.kind == SourceKind::kEml;
    maildir += f.kind == SourceKind::kMaildirFile;
  }
  EXPECT_EQ(mbox, 1);
  EXPECT_EQ(eml, 1);
  EXPECT_EQ(maildir, 3);
}

TEST(ImportSourcesTest, BadFilesGetReasons) {
  EXPECT_NE(CheckLooksLikeMail("").error().message().find("empty"), std::string::npos);
  EXPECT_NE(CheckLooksLikeMail(std::string("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16)).error().message().find("binary"),
            std::string::npos);
  EXPECT_NE(CheckLooksLikeMail("just some text\nwithout headers\n").error().message().find("header field"), std::string::npos);
  EXPECT_TRUE(CheckLooksLikeMail("Subject: fine\n\nbody").ok());
  // A message cut off mid-header is still mail: it is kept (the archive never drops bytes).
  EXPECT_TRUE(CheckLooksLikeMail("From: a@x\nSubj").ok());
}

}  // namespace
}  // namespace mailvault
