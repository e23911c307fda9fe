#include "base/state_codec.h"

#include <gtest/gtest.h>

namespace ringvm {
namespace {

TEST(StateCodecTest, RoundTripsEveryKind) {
  StateWriter w;
  w.u8(0xAB);
  w.u16(0x1234);
  w.u32(0xDEADBEEF);
  w.u64(0x0102030405060708ULL);
  w.i64(-5);
  w.boolean(true);
  w.str("com1");
  const uint8_t blob[3] = {1, 2, 3};
  w.raw(blob);
  struct P { uint32_t a; uint16_t b; } p{7, 9};
  w.pod(p);
  auto bytes = w.take();
  StateReader r(bytes, "t");
  EXPECT_EQ(*r.u8("a"), 0xAB);
  EXPECT_EQ(*r.u16("b"), 0x1234);
  EXPECT_EQ(*r.u32("c"), 0xDEADBEEFu);
  EXPECT_EQ(*r.u64("d"), 0x0102030405060708ULL);
  EXPECT_EQ(*r.i64("e"), -5);
  EXPECT_TRUE(*r.boolean("f"));
  EXPECT_EQ(*r.str("g", 16), "com1");
  uint8_t out[3];
  ASSERT_TRUE(r.raw("h", out));
  EXPECT_EQ(out[2], 3);
  auto q = r.pod<P>("p");
  ASSERT_TRUE(q);
  EXPECT_EQ(q->a, 7u);
  EXPECT_EQ(q->b, 9);
  EXPECT_TRUE(r.finish());
}

TEST(StateCodecTest, LittleEndianOnTheWire) {
  StateWriter w;
  w.u32(0x11223344);
  EXPECT_EQ(w.data(), (std::vector<uint8_t>{0x44, 0x33, 0x22, 0x11}));
}

TEST(StateCodecTest, TruncationNamesTheField) {
  const uint8_t two[2] = {1, 2};
  StateReader r(two, "com1");
  auto v = r.u32("ier");
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error().code, ErrorCode::kCorrupt);
  EXPECT_NE(v.error().message().find("com1"), std::string::npos);
  EXPECT_NE(v.error().message().find("`ier`"), std::string::npos);
}

TEST(StateCodecTest, LengthAboveMaximumRefusedBeforeReading) {
  StateWriter w;
  w.u32(0xFFFFFFFF);  // a hostile length with nothing behind it
  auto bytes = w.take();
  StateReader r(bytes, "t");
  auto s = r.bytes("name", 64);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message().find("at most 64"), std::string::npos);
}

TEST(StateCodecTest, BooleanMustBeZeroOrOne) {
  const uint8_t b[1] = {2};
  StateReader r(b, "t");
  EXPECT_FALSE(r.boolean("flag"));
}

TEST(StateCodecTest, TrailingBytesRefused) {
  const uint8_t b[2] = {1, 2};
  StateReader r(b, "t");
  ASSERT_TRUE(r.u8("a"));
  EXPECT_FALSE(r.finish());
  ASSERT_TRUE(r.u8("b"));
  EXPECT_TRUE(r.finish());
}

TEST(StateCodecTest, CheckRange) {
  StateReader r({}, "t");
  EXPECT_TRUE(r.check_range("x", 5, 0, 5));
  EXPECT_FALSE(r.check_range("x", 6, 0, 5));
}

}  // namespace
}  // namespace ringvm
