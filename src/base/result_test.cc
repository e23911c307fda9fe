#include "base/result.h"

#include <gtest/gtest.h>

namespace ringvm {
namespace {

Result<int> parse_positive(int v) {
  if (v <= 0) return make_error(ErrorCode::kInvalidArgument, "value {} is not positive", v);
  return v;
}

Result<int> doubled(int v) {
  int x = TRY(parse_positive(v));
  return x * 2;
}

Result<void> check_both(int a, int b) {
  RETURN_IF_ERROR(parse_positive(a));
  RETURN_IF_ERROR(parse_positive(b));
  return Ok();
}

TEST(Result, ValueAndError) {
  auto good = parse_positive(3);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 3);
  auto bad = parse_positive(-1);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(bad.error().message(), "value -1 is not positive");
}

TEST(Result, TryPropagates) {
  EXPECT_EQ(*doubled(4), 8);
  auto r = doubled(0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().context, "value 0 is not positive");
}

TEST(Result, ReturnIfErrorStopsAtFirst) {
  EXPECT_TRUE(check_both(1, 2).ok());
  auto r = check_both(1, -7);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().context, "value -7 is not positive");
}

TEST(Result, SysErrorNamesErrno) {
  Error e = sys_error("open /nope", ENOENT);
  EXPECT_EQ(e.code, ErrorCode::kNotFound);
  EXPECT_EQ(e.message(), "open /nope: No such file or directory");
  EXPECT_EQ(code_from_errno(EACCES), ErrorCode::kPermissionDenied);
}

TEST(Result, WrapPrefixesContext) {
  Error e = wrap(make_error(ErrorCode::kIo, "short read"), "disk {}", "a.img");
  EXPECT_EQ(e.message(), "disk a.img: short read");
}

TEST(Result, MoveOnlyValues) {
  Result<std::unique_ptr<int>> r = std::make_unique<int>(5);
  std::unique_ptr<int> p = std::move(r).value();
  EXPECT_EQ(*p, 5);
}

}  // namespace
}  // namespace ringvm
