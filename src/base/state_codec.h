// StateWriter / StateReader: the byte encoding of every Stateful object's save() and restore()
// (base/stateful.h), and of the snapshot file around them (vmm/snapshot_file.h).
//
// Little-endian, fixed-width integers; variable-length data carries a u32 length first. The
// reader is for hostile input: every read is bounds-checked, every length is checked against a
// caller-given maximum before anything is allocated, a bool must be 0 or 1, and finish() refuses
// trailing bytes. Its errors are kCorrupt and name what was being read ("com1: state ends after
// 12 bytes; 4 more were expected for `ier`").
//
// A restore() reads its fields in the order save() wrote them, checks each against the device's
// own limits (a queue size no larger than the device's maximum, an index below the size), and
// only then changes the device: a refused state leaves the device as it was.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "base/result.h"

namespace ringvm {

class StateWriter {
 public:
  void u8(uint8_t v) { put(&v, 1); }
  void u16(uint16_t v) { put_le(v); }
  void u32(uint32_t v) { put_le(v); }
  void u64(uint64_t v) { put_le(v); }
  void i64(int64_t v) { put_le(static_cast<uint64_t>(v)); }
  void boolean(bool v) { u8(v ? 1 : 0); }
  // A u32 length, then the bytes.
  void bytes(std::span<const uint8_t> data);
  void str(std::string_view s) { bytes({reinterpret_cast<const uint8_t*>(s.data()), s.size()}); }
  // Bytes whose length the reader knows (no length prefix).
  void raw(std::span<const uint8_t> data) { put(data.data(), data.size()); }
  // A trivially copyable struct (a KVM ABI struct) as its bytes: the same host ABI on both sides.
  template <typename T>
  void pod(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    // SAFETY: T is trivially copyable; exactly sizeof(T) bytes of `v` are read.
    put(reinterpret_cast<const uint8_t*>(&v), sizeof(T));
  }

  size_t size() const { return out_.size(); }
  const std::vector<uint8_t>& data() const { return out_; }
  std::vector<uint8_t> take() { return std::move(out_); }

 private:
  template <typename T>
  void put_le(T v) {
    uint8_t b[sizeof(T)];
    for (size_t i = 0; i < sizeof(T); ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
    put(b, sizeof(T));
  }
  // Out of line: GCC 12 inlines vector::insert into tiny writes and then warns about them
  // (-Wstringop-overflow false positive).
  void put(const uint8_t* p, size_t n);
  std::vector<uint8_t> out_;
};

class StateReader {
 public:
  // `what` names the state in errors ("com1", "vcpu0", "snapshot file x.snap").
  StateReader(std::span<const uint8_t> data, std::string what) : data_(data), what_(std::move(what)) {}

  // `field` names the value in the error if the data ends before it.
  Result<uint8_t> u8(std::string_view field);
  Result<uint16_t> u16(std::string_view field) { return get_le<uint16_t>(field); }
  Result<uint32_t> u32(std::string_view field) { return get_le<uint32_t>(field); }
  Result<uint64_t> u64(std::string_view field) { return get_le<uint64_t>(field); }
  Result<int64_t> i64(std::string_view field);
  Result<bool> boolean(std::string_view field);
  // A length-prefixed byte string of at most `max` bytes; the span points into the input.
  Result<std::span<const uint8_t>> bytes(std::string_view field, size_t max);
  Result<std::string> str(std::string_view field, size_t max);
  // Exactly out.size() bytes.
  Result<void> raw(std::string_view field, std::span<uint8_t> out);
  template <typename T>
  Result<T> pod(std::string_view field) {
    static_assert(std::is_trivially_copyable_v<T>);
    T v;
    // SAFETY: T is trivially copyable and `v` is sizeof(T) bytes of our own stack.
    RETURN_IF_ERROR(raw(field, {reinterpret_cast<uint8_t*>(&v), sizeof(T)}));
    return v;
  }
  // A value the reader already has that must lie in [lo, hi]: the error names field and range.
  Result<void> check_range(std::string_view field, uint64_t value, uint64_t lo, uint64_t hi) const;
  // An error about this state (kCorrupt), for checks the caller makes.
  Error corrupt(std::string_view msg) const;

  size_t remaining() const { return data_.size() - pos_; }
  size_t position() const { return pos_; }
  // Refuses trailing bytes: a state longer than this version writes is not one of ours.
  Result<void> finish() const;
  const std::string& what() const { return what_; }

 private:
  Result<std::span<const uint8_t>> take(std::string_view field, size_t n);
  template <typename T>
  Result<T> get_le(std::string_view field) {
    auto s = TRY(take(field, sizeof(T)));
    T v = 0;
    for (size_t i = 0; i < sizeof(T); ++i) v = static_cast<T>(v | (static_cast<T>(s[i]) << (8 * i)));
    return v;
  }
  std::span<const uint8_t> data_;
  size_t pos_ = 0;
  std::string what_;
};

}  // namespace ringvm
