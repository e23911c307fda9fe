#include "base/state_codec.h"

#include <limits>

namespace ringvm {

void StateWriter::put(const uint8_t* p, size_t n) {
  if (n == 0) return;
  const size_t at = out_.size();
  out_.resize(at + n);
  std::memcpy(out_.data() + at, p, n);
}

void StateWriter::bytes(std::span<const uint8_t> data) {
  u32(static_cast<uint32_t>(data.size()));
  raw(data);
}

Result<std::span<const uint8_t>> StateReader::take(std::string_view field, size_t n) {
  if (n > remaining())
    return make_error(ErrorCode::kCorrupt, "{}: state ends after {} bytes; {} more were expected for `{}`", what_,
                      data_.size(), n - remaining(), field);
  auto s = data_.subspan(pos_, n);
  pos_ += n;
  return s;
}

Result<uint8_t> StateReader::u8(std::string_view field) {
  auto s = TRY(take(field, 1));
  return s[0];
}

Result<int64_t> StateReader::i64(std::string_view field) {
  return static_cast<int64_t>(TRY(get_le<uint64_t>(field)));
}

Result<bool> StateReader::boolean(std::string_view field) {
  const uint8_t v = TRY(u8(field));
  if (v > 1) return make_error(ErrorCode::kCorrupt, "{}: `{}` is {}, not a boolean (0 or 1)", what_, field, v);
  return v == 1;
}

Result<std::span<const uint8_t>> StateReader::bytes(std::string_view field, size_t max) {
  const uint32_t len = TRY(u32(field));
  if (len > max)
    return make_error(ErrorCode::kCorrupt, "{}: `{}` claims {} bytes; at most {} are valid", what_, field, len, max);
  return take(field, len);
}

Result<std::string> StateReader::str(std::string_view field, size_t max) {
  auto s = TRY(bytes(field, max));
  return std::string(s.begin(), s.end());
}

Result<void> StateReader::raw(std::string_view field, std::span<uint8_t> out) {
  auto s = TRY(take(field, out.size()));
  if (!s.empty()) std::memcpy(out.data(), s.data(), s.size());
  return Ok();
}

Result<void> StateReader::check_range(std::string_view field, uint64_t value, uint64_t lo, uint64_t hi) const {
  if (value < lo || value > hi)
    return make_error(ErrorCode::kCorrupt, "{}: `{}` is {}; valid values are {}..{}", what_, field, value, lo, hi);
  return Ok();
}

Error StateReader::corrupt(std::string_view msg) const {
  return make_error(ErrorCode::kCorrupt, "{}: {}", what_, msg);
}

Result<void> StateReader::finish() const {
  if (remaining() != 0)
    return make_error(ErrorCode::kCorrupt,
                      "{}: {} bytes follow the end of the state (written by another ringvm version?)", what_,
                      remaining());
  return Ok();
}

}  // namespace ringvm
