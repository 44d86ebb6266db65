#include "core/bytes.h"

#include <gtest/gtest.h>

namespace mailvault {
namespace {

TEST(BytesTest, VarintRoundTripAndTruncation) {
  for (uint64_t v : {0ull, 1ull, 127ull, 128ull, 300ull, 1ull << 35, ~0ull}) {
    ByteWriter w;
    w.PutVarint(v);
    ByteReader r(w.buffer());
    uint64_t got;
    ASSERT_TRUE(r.GetVarint(&got));
    EXPECT_EQ(got, v);
    ByteReader cut(std::string_view(w.buffer()).substr(0, w.size() - 1));
    EXPECT_FALSE(cut.GetVarint(&got)) << v;
  }
  // Eleven continuation bytes overflow 64 bits.
  const std::string eleven(11, '\xff');
  ByteReader bad(eleven);
  uint64_t v;
  EXPECT_FALSE(bad.GetVarint(&v));
}

TEST(BytesTest, StringRespectsMaxLength) {
  ByteWriter w;
  w.PutString("hello");
  std::string_view s;
  ByteReader ok(w.buffer());
  ASSERT_TRUE(ok.GetString(&s, 5));
  EXPECT_EQ(s, "hello");
  ByteReader too_long(w.buffer());
  EXPECT_FALSE(too_long.GetString(&s, 4));
}

TEST(BytesTest, Crc32cKnownAnswer) {
  // RFC 3720 test vector: 32 bytes of zeros.
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8a9136aau);
  EXPECT_EQ(Crc32c("123456789"), 0xe3069283u);
}

TEST(BytesTest, Base64AndHex) {
  std::string out;
  EXPECT_EQ(Base64Encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(Base64Encode("fo"), "Zm8=");
  ASSERT_TRUE(Base64Decode("Zm8=", &out));
  EXPECT_EQ(out, "fo");
  EXPECT_FALSE(Base64Decode("Zm8", &out));
  EXPECT_FALSE(Base64Decode("Z!8=", &out));
  EXPECT_EQ(HexEncode("\x01\xab"), "01ab");
  ASSERT_TRUE(HexDecode("01AB", &out));
  EXPECT_EQ(out, "\x01\xab");
  EXPECT_FALSE(HexDecode("0g", &out));
}

}  // namespace
}  // namespace mailvault
