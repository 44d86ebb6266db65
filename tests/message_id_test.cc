#include "core/message_id.h"

#include <gtest/gtest.h>

namespace mailvault {
namespace {

TEST(MessageIdTest, KeepsAngleBracketsAndLowersTheDomainOnly) {
  EXPECT_EQ(NormalizeMessageId("<AbC.123@Mail.EXAMPLE.com>"), "<AbC.123@mail.example.com>");
}

TEST(MessageIdTest, AddsBracketsToABareId) {
  EXPECT_EQ(NormalizeMessageId("  abc@example.com  "), "<abc@example.com>");
}

TEST(MessageIdTest, DropsCommentsIncludingNestedOnes) {
  EXPECT_EQ(NormalizeMessageId("(sent by (our) gateway) <id@x.org> (trailing)"), "<id@x.org>");
  EXPECT_EQ(NormalizeMessageId("<id@(comment)x.org>"), "<id@x.org>");
}

TEST(MessageIdTest, UnfoldsAndRemovesWhitespaceInside) {
  EXPECT_EQ(NormalizeMessageId("\r\n <a b\r\n\tc@X.ORG>"), "<abc@x.org>");
}

TEST(MessageIdTest, RemovesQuotingOfTheLocalPart) {
  EXPECT_EQ(NormalizeMessageId("<\"quoted\"@example.com>"), "<quoted@example.com>");
}

TEST(MessageIdTest, TakesTheFirstIdWhenThereAreSeveral) {
  EXPECT_EQ(NormalizeMessageId("<first@a.com> <second@b.com>"), "<first@a.com>");
}

TEST(MessageIdTest, AcceptsAnUnterminatedBracket) {
  EXPECT_EQ(NormalizeMessageId("<broken@Example.com"), "<broken@example.com>");
}

TEST(MessageIdTest, EmptyOrCommentOnlyIsEmpty) {
  EXPECT_EQ(NormalizeMessageId(""), "");
  EXPECT_EQ(NormalizeMessageId("  (nothing here)  "), "");
  EXPECT_EQ(NormalizeMessageId("<>"), "");
}

TEST(MessageIdTest, ListParsesReferencesInOrderWithoutDuplicates) {
  auto ids = ParseMessageIdList("<a@X.com> (c) <b@y.com>\r\n <a@x.com> junk <c@z.com>");
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[0], "<a@x.com>");
  EXPECT_EQ(ids[1], "<b@y.com>");
  EXPECT_EQ(ids[2], "<c@z.com>");
}

}  // namespace
}  // namespace mailvault
