#include "arch/x86_64/aml.h"

namespace ringvm::x86::aml {

namespace {

// Opcodes and prefixes (ACPI 6.4, section 20.3).
constexpr uint8_t kZeroOp = 0x00;
constexpr uint8_t kOneOp = 0x01;
constexpr uint8_t kNameOp = 0x08;
constexpr uint8_t kBytePrefix = 0x0a;
constexpr uint8_t kWordPrefix = 0x0b;
constexpr uint8_t kDWordPrefix = 0x0c;
constexpr uint8_t kStringPrefix = 0x0d;
constexpr uint8_t kQWordPrefix = 0x0e;
constexpr uint8_t kScopeOp = 0x10;
constexpr uint8_t kBufferOp = 0x11;
constexpr uint8_t kPackageOp = 0x12;
constexpr uint8_t kMethodOp = 0x14;
constexpr uint8_t kReturnOp = 0xa4;
constexpr uint8_t kArg0Op = 0x68;  // Arg0..Arg6 are 0x68..0x6e
constexpr uint8_t kNotifyOp = 0x86;
constexpr uint8_t kLEqualOp = 0x93;
constexpr uint8_t kIfOp = 0xa0;
constexpr uint8_t kExtOpPrefix = 0x5b;
constexpr uint8_t kDeviceOp = 0x82;  // after kExtOpPrefix
constexpr uint8_t kRootChar = '\\';
constexpr uint8_t kParentChar = '^';
constexpr uint8_t kDualNamePrefix = 0x2e;
constexpr uint8_t kMultiNamePrefix = 0x2f;

// Resource descriptor tags (section 6.4).
constexpr uint8_t kIrqNoFlagsTag = 0x22;  // small IRQ descriptor, 2 data bytes
constexpr uint8_t kIoTag = 0x47;          // small I/O port descriptor, 7 data bytes
constexpr uint8_t kEndTag = 0x79;         // small end tag, 1 byte checksum
constexpr uint8_t kDWordAddressTag = 0x87;
constexpr uint8_t kWordAddressTag = 0x88;
constexpr uint8_t kExtendedInterruptTag = 0x89;
constexpr uint8_t kQWordAddressTag = 0x8a;
// Extended Interrupt flags (byte 3 of the descriptor).
constexpr uint8_t kIntConsumer = 1u << 0;
constexpr uint8_t kIntEdge = 1u << 1;
constexpr uint8_t kIntActiveLow = 1u << 2;
constexpr uint8_t kIntShared = 1u << 3;
constexpr uint8_t kResourceMemory = 0;
constexpr uint8_t kResourceIo = 1;
constexpr uint8_t kResourceBus = 2;
// General flags: MinFixed | MaxFixed, positive decode, producer (what iasl emits for a bridge).
constexpr uint8_t kAddressFlagsFixed = 0x0c;
constexpr uint8_t kIoEntireRange = 0x03;             // I/O type-specific flags: ISA and non-ISA
constexpr uint8_t kMemReadWriteNonCacheable = 0x01;  // memory type-specific flags

// Byte by byte: GCC 12's -Warray-bounds misfires on vector::insert into a one-element vector.
void append(Bytes& out, const Bytes& b) {
  out.reserve(out.size() + b.size());
  for (uint8_t x : b) out.push_back(x);
}

template <typename T>
void append_le(Bytes& out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i)
    out.push_back(static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i)));
}

Bytes join(const std::vector<Bytes>& parts) {
  Bytes out;
  for (const auto& p : parts) append(out, p);
  return out;
}

// `prefix` then PkgLength over `body` then `body`.
Bytes with_pkg_length(Bytes prefix, const Bytes& body) {
  append(prefix, pkg_length(body.size()));
  append(prefix, body);
  return prefix;
}

void append_seg(Bytes& out, std::string_view seg) {
  for (size_t i = 0; i < 4; ++i) out.push_back(i < seg.size() ? static_cast<uint8_t>(seg[i]) : '_');
}

// Word/DWord/QWord address space descriptor: granularity 0, translation 0, length max-min+1.
template <typename T>
Bytes address_space(uint8_t tag, uint8_t type, uint8_t type_flags, T min, T max) {
  Bytes d{tag};
  append_le<uint16_t>(d, static_cast<uint16_t>(3 + 5 * sizeof(T)));
  d.push_back(type);
  d.push_back(kAddressFlagsFixed);
  d.push_back(type_flags);
  append_le<T>(d, 0);
  append_le<T>(d, min);
  append_le<T>(d, max);
  append_le<T>(d, 0);
  append_le<T>(d, static_cast<T>(max - min + 1));
  return d;
}

}  // namespace

Bytes pkg_length(size_t body_len) {
  if (body_len + 1 < 64) return {static_cast<uint8_t>(body_len + 1)};
  for (size_t n = 2; n <= 4; ++n) {
    const size_t total = body_len + n;
    if (total < (size_t{1} << (4 + 8 * (n - 1)))) {
      Bytes out{static_cast<uint8_t>(((n - 1) << 6) | (total & 0xf))};
      for (size_t i = 1; i < n; ++i) out.push_back(static_cast<uint8_t>(total >> (4 + 8 * (i - 1))));
      return out;
    }
  }
  return {};  // > 256 MiB of AML: never produced by ringvm
}

Bytes name_string(std::string_view path) {
  Bytes out;
  while (!path.empty() && (path.front() == kRootChar || path.front() == kParentChar)) {
    out.push_back(static_cast<uint8_t>(path.front()));
    path.remove_prefix(1);
  }
  std::vector<std::string_view> segs;
  while (!path.empty()) {
    const size_t dot = path.find('.');
    segs.push_back(path.substr(0, dot));
    path = dot == std::string_view::npos ? std::string_view{} : path.substr(dot + 1);
  }
  if (segs.size() == 2) {
    out.push_back(kDualNamePrefix);
  } else if (segs.size() > 2) {
    out.push_back(kMultiNamePrefix);
    out.push_back(static_cast<uint8_t>(segs.size()));
  } else if (segs.empty()) {
    out.push_back(0);  // NullName
  }
  for (auto s : segs) append_seg(out, s);
  return out;
}

Bytes integer(uint64_t v) {
  if (v == 0) return {kZeroOp};
  if (v == 1) return {kOneOp};
  Bytes out;
  if (v <= 0xff) {
    out.push_back(kBytePrefix);
    append_le<uint8_t>(out, static_cast<uint8_t>(v));
  } else if (v <= 0xffff) {
    out.push_back(kWordPrefix);
    append_le<uint16_t>(out, static_cast<uint16_t>(v));
  } else if (v <= 0xffff'ffff) {
    out.push_back(kDWordPrefix);
    append_le<uint32_t>(out, static_cast<uint32_t>(v));
  } else {
    out.push_back(kQWordPrefix);
    append_le<uint64_t>(out, v);
  }
  return out;
}

Bytes string(std::string_view s) {
  Bytes out{kStringPrefix};
  for (char c : s) out.push_back(static_cast<uint8_t>(c));
  out.push_back(0);
  return out;
}

Bytes eisa_id(std::string_view id) {
  // Three letters (5 bits each, 'A' = 1) and four hex digits, stored big-endian.
  auto hex = [](char c) -> uint32_t {
    return c <= '9' ? static_cast<uint32_t>(c - '0') : static_cast<uint32_t>(c - 'A' + 10);
  };
  uint32_t v = 0;
  if (id.size() == 7) {
    v = ((static_cast<uint32_t>(id[0] - 0x40) & 0x1f) << 26) |
        ((static_cast<uint32_t>(id[1] - 0x40) & 0x1f) << 21) |
        ((static_cast<uint32_t>(id[2] - 0x40) & 0x1f) << 16) | (hex(id[3]) << 12) | (hex(id[4]) << 8) |
        (hex(id[5]) << 4) | hex(id[6]);
  }
  Bytes out{kDWordPrefix};
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
  return out;
}

Bytes name(std::string_view path, const Bytes& value) {
  Bytes out{kNameOp};
  append(out, name_string(path));
  append(out, value);
  return out;
}

Bytes package(const std::vector<Bytes>& elements) {
  Bytes body{static_cast<uint8_t>(elements.size())};
  append(body, join(elements));
  return with_pkg_length({kPackageOp}, body);
}

Bytes buffer(const Bytes& data) {
  Bytes body = integer(data.size());
  append(body, data);
  return with_pkg_length({kBufferOp}, body);
}

Bytes scope(std::string_view path, const std::vector<Bytes>& body) {
  Bytes b = name_string(path);
  append(b, join(body));
  return with_pkg_length({kScopeOp}, b);
}

Bytes device(std::string_view path, const std::vector<Bytes>& body) {
  Bytes b = name_string(path);
  append(b, join(body));
  return with_pkg_length({kExtOpPrefix, kDeviceOp}, b);
}

Bytes method(std::string_view path, uint8_t num_args, bool serialized, const std::vector<Bytes>& body) {
  Bytes b = name_string(path);
  b.push_back(static_cast<uint8_t>((num_args & 7) | (serialized ? 8 : 0)));
  append(b, join(body));
  return with_pkg_length({kMethodOp}, b);
}

Bytes return_value(const Bytes& value) {
  Bytes out{kReturnOp};
  append(out, value);
  return out;
}

Bytes arg(uint8_t n) { return {static_cast<uint8_t>(kArg0Op + (n < 7 ? n : 6))}; }

Bytes lequal(const Bytes& left, const Bytes& right) {
  Bytes out{kLEqualOp};
  append(out, left);
  append(out, right);
  return out;
}

Bytes if_then(const Bytes& predicate, const std::vector<Bytes>& body) {
  Bytes b = predicate;
  append(b, join(body));
  return with_pkg_length({kIfOp}, b);
}

Bytes notify(std::string_view object, const Bytes& value) {
  Bytes out{kNotifyOp};
  append(out, name_string(object));
  append(out, value);
  return out;
}

Bytes resource_template(const std::vector<Bytes>& descriptors) {
  Bytes data = join(descriptors);
  data.push_back(kEndTag);
  data.push_back(0);  // checksum 0: "treat as correct"
  return buffer(data);
}

Bytes io(uint16_t min, uint16_t max, uint8_t alignment, uint8_t length) {
  Bytes d{kIoTag, 0x01};  // 16-bit decode
  append_le<uint16_t>(d, min);
  append_le<uint16_t>(d, max);
  d.push_back(alignment);
  d.push_back(length);
  return d;
}

Bytes irq_no_flags(uint8_t irq) {
  Bytes d{kIrqNoFlagsTag};
  append_le<uint16_t>(d, static_cast<uint16_t>(1u << (irq & 15)));
  return d;
}

Bytes word_bus_number(uint16_t min, uint16_t max) {
  return address_space<uint16_t>(kWordAddressTag, kResourceBus, 0, min, max);
}
Bytes word_io(uint16_t min, uint16_t max) {
  return address_space<uint16_t>(kWordAddressTag, kResourceIo, kIoEntireRange, min, max);
}
Bytes dword_memory(uint32_t min, uint32_t max) {
  return address_space<uint32_t>(kDWordAddressTag, kResourceMemory, kMemReadWriteNonCacheable, min, max);
}
Bytes qword_memory(uint64_t min, uint64_t max) {
  return address_space<uint64_t>(kQWordAddressTag, kResourceMemory, kMemReadWriteNonCacheable, min, max);
}


Bytes extended_interrupt(uint32_t gsi, bool edge, bool active_low, bool shared) {
  Bytes d{kExtendedInterruptTag};
  append_le<uint16_t>(d, 6);  // flags, count, one DWord; no resource source
  d.push_back(static_cast<uint8_t>(kIntConsumer | (edge ? kIntEdge : 0) | (active_low ? kIntActiveLow : 0) |
                                   (shared ? kIntShared : 0)));
  d.push_back(1);
  append_le<uint32_t>(d, gsi);
  return d;
}

}  // namespace ringvm::x86::aml
