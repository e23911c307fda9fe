// VcpuState and KvmVmState encodings (no KVM needed): a round trip gives back every byte, and every
// hostile variant (truncated, counts and sizes over the limits, trailing bytes, foreign version)
// is refused with kCorrupt and a message naming the field.
#include "kvm/vcpu_state.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "kvm/vm_state.h"

namespace ringvm {
namespace {

// Fills a KVM struct with a byte pattern that differs per struct (`seed`).
template <typename T>
void fill(T& v, uint8_t seed) {
  // SAFETY: T is a trivially copyable KVM ABI struct; exactly sizeof(T) bytes are written.
  auto* p = reinterpret_cast<uint8_t*>(&v);
  for (size_t i = 0; i < sizeof(T); ++i) p[i] = static_cast<uint8_t>(seed + i * 7);
}

template <typename T>
bool same(const T& a, const T& b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

VcpuState pattern_vcpu_state() {
  VcpuState s;
  s.vcpu_id = 3;
  fill(s.regs, 1);
  fill(s.sregs, 2);
  kvm_sregs2 s2;
  fill(s2, 3);
  s.sregs2 = s2;
  s.xsave.resize(4096 + 64);
  for (size_t i = 0; i < s.xsave.size(); ++i) s.xsave[i] = static_cast<uint8_t>(i * 13 + 5);
  kvm_xcrs x;
  fill(x, 4);
  x.nr_xcrs = 1;
  s.xcrs = x;
  s.msrs = {{0x10, 0, 0x1234'5678'9abc'def0}, {0x3b, 0, 7}, {0x4b564d01, 0, 0xfee1'0001}, {0x6e0, 0, 99}};
  fill(s.lapic, 5);
  s.mp_state.mp_state = KVM_MP_STATE_HALTED;
  kvm_vcpu_events ev;
  fill(ev, 6);
  s.events = ev;
  kvm_debugregs d;
  fill(d, 7);
  s.debugregs = d;
  for (uint8_t i = 0; i < 5; ++i) {
    kvm_cpuid_entry2 e;
    fill(e, static_cast<uint8_t>(20 + i));
    s.cpuid.push_back(e);
  }
  s.tsc_khz = 2'899'999;
  return s;
}

std::vector<uint8_t> encoded(const VcpuState& s) {
  StateWriter w;
  encode(s, w);
  return w.take();
}

Result<VcpuState> decoded(std::span<const uint8_t> bytes) {
  StateReader r(bytes, "vcpu3");
  auto s = decode_vcpu_state(r);
  if (!s) return s;
  RETURN_IF_ERROR(r.finish());
  return s;
}

void expect_equal(const VcpuState& a, const VcpuState& b) {
  EXPECT_EQ(a.vcpu_id, b.vcpu_id);
  EXPECT_TRUE(same(a.regs, b.regs));
  EXPECT_TRUE(same(a.sregs, b.sregs));
  ASSERT_EQ(a.sregs2.has_value(), b.sregs2.has_value());
  if (a.sregs2) {
    EXPECT_TRUE(same(*a.sregs2, *b.sregs2));
  }
  EXPECT_EQ(a.xsave, b.xsave);
  ASSERT_EQ(a.fpu.has_value(), b.fpu.has_value());
  if (a.fpu) {
    EXPECT_TRUE(same(*a.fpu, *b.fpu));
  }
  ASSERT_EQ(a.xcrs.has_value(), b.xcrs.has_value());
  if (a.xcrs) {
    EXPECT_TRUE(same(*a.xcrs, *b.xcrs));
  }
  ASSERT_EQ(a.msrs.size(), b.msrs.size());
  for (size_t i = 0; i < a.msrs.size(); ++i) {
    EXPECT_EQ(a.msrs[i].index, b.msrs[i].index);
    EXPECT_EQ(a.msrs[i].data, b.msrs[i].data);
  }
  EXPECT_TRUE(same(a.lapic, b.lapic));
  EXPECT_EQ(a.mp_state.mp_state, b.mp_state.mp_state);
  ASSERT_EQ(a.events.has_value(), b.events.has_value());
  if (a.events) {
    EXPECT_TRUE(same(*a.events, *b.events));
  }
  ASSERT_EQ(a.debugregs.has_value(), b.debugregs.has_value());
  if (a.debugregs) {
    EXPECT_TRUE(same(*a.debugregs, *b.debugregs));
  }
  ASSERT_EQ(a.cpuid.size(), b.cpuid.size());
  for (size_t i = 0; i < a.cpuid.size(); ++i)
    EXPECT_TRUE(same(a.cpuid[i], b.cpuid[i])) << "cpuid entry " << i;
  EXPECT_EQ(a.tsc_khz, b.tsc_khz);
}

// The error of decoding `bytes`: kCorrupt, with `field` in its message.
void expect_corrupt(Result<VcpuState> r, const std::string& field) {
  ASSERT_FALSE(r.ok()) << "accepted; expected a complaint about " << field;
  EXPECT_EQ(r.error().code, ErrorCode::kCorrupt) << r.error().message();
  EXPECT_NE(r.error().message().find(field), std::string::npos) << r.error().message();
}

TEST(VcpuStateTest, RoundTripKeepsEveryByte) {
  const VcpuState s = pattern_vcpu_state();
  auto back = decoded(encoded(s));
  ASSERT_TRUE(back.ok()) << back.error().message();
  expect_equal(s, *back);
}

TEST(VcpuStateTest, RoundTripOfALegacyFpuStateWithoutOptionalParts) {
  VcpuState s = pattern_vcpu_state();
  s.xsave.clear();
  kvm_fpu f;
  fill(f, 9);
  s.fpu = f;
  s.sregs2.reset();
  s.xcrs.reset();
  s.events.reset();
  s.debugregs.reset();
  s.msrs.clear();
  s.cpuid.clear();
  s.tsc_khz = 0;
  auto back = decoded(encoded(s));
  ASSERT_TRUE(back.ok()) << back.error().message();
  expect_equal(s, *back);
}

TEST(VcpuStateTest, EveryTruncationIsRefusedByName) {
  const auto bytes = encoded(pattern_vcpu_state());
  for (size_t n = 0; n < bytes.size(); ++n) {
    auto r = decoded(std::span<const uint8_t>(bytes).first(n));
    ASSERT_FALSE(r.ok()) << "a state cut to " << n << " of " << bytes.size() << " bytes was accepted";
    ASSERT_EQ(r.error().code, ErrorCode::kCorrupt);
    ASSERT_NE(r.error().message().find("vcpu3"), std::string::npos) << r.error().message();
    ASSERT_NE(r.error().message().find('`'), std::string::npos) << "names no field: " << r.error().message();
  }
  // A cut inside the general registers names them.
  expect_corrupt(decoded(std::span<const uint8_t>(bytes).first(2 + 4 + 10)), "regs");
}

TEST(VcpuStateTest, TrailingBytesAreRefused) {
  auto bytes = encoded(pattern_vcpu_state());
  bytes.push_back(0);
  auto r = decoded(bytes);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kCorrupt);
  EXPECT_NE(r.error().message().find("follow the end"), std::string::npos) << r.error().message();
}

TEST(VcpuStateTest, ForeignVersionIsRefused) {
  auto bytes = encoded(pattern_vcpu_state());
  bytes[0] = 2;  // u16 version, little-endian
  expect_corrupt(decoded(bytes), "version 2");
}

TEST(VcpuStateTest, TooManyMsrsAreRefused) {
  VcpuState s = pattern_vcpu_state();
  s.msrs.assign(VcpuState::kMaxMsrs + 1, kvm_msr_entry{0x10, 0, 0});
  expect_corrupt(decoded(encoded(s)), "nmsrs");
}

TEST(VcpuStateTest, TooManyCpuidEntriesAreRefused) {
  VcpuState s = pattern_vcpu_state();
  s.cpuid.resize(VcpuState::kMaxCpuidEntries + 1);
  expect_corrupt(decoded(encoded(s)), "cpuid nent");
}

TEST(VcpuStateTest, AbsurdXsaveSizesAreRefused) {
  VcpuState s = pattern_vcpu_state();
  s.xsave.assign(VcpuState::kMaxXsaveBytes + 4, 0);
  expect_corrupt(decoded(encoded(s)), "xsave");
  s.xsave.assign(100, 0);  // smaller than the 4 KiB legacy area
  expect_corrupt(decoded(encoded(s)), "xsave");
  s.xsave.assign(4098, 0);  // not whole 32-bit words
  expect_corrupt(decoded(encoded(s)), "xsave");

  // A length field claiming 4 GiB, with no data behind it: refused before any allocation.
  auto bytes = encoded(pattern_vcpu_state());
  const size_t xsave_len_at = 2 + 4 + sizeof(kvm_regs) + sizeof(kvm_sregs) + 1 + sizeof(kvm_sregs2);
  std::memset(bytes.data() + xsave_len_at, 0xff, 4);
  expect_corrupt(decoded(bytes), "xsave");
}

TEST(VcpuStateTest, NeitherOrBothFpuFormsAreRefused) {
  VcpuState s = pattern_vcpu_state();
  s.xsave.clear();
  expect_corrupt(decoded(encoded(s)), "neither `xsave` nor `fpu`");
  s = pattern_vcpu_state();
  s.fpu = kvm_fpu{};
  expect_corrupt(decoded(encoded(s)), "both present");
}

TEST(VcpuStateTest, TooManyXcrsAreRefused) {
  VcpuState s = pattern_vcpu_state();
  s.xcrs->nr_xcrs = KVM_MAX_XCRS + 1;
  expect_corrupt(decoded(encoded(s)), "xcrs.nr_xcrs");
}

TEST(VcpuStateTest, BadBooleanIsRefused) {
  auto bytes = encoded(pattern_vcpu_state());
  const size_t has_sregs2_at = 2 + 4 + sizeof(kvm_regs) + sizeof(kvm_sregs);
  bytes[has_sregs2_at] = 2;
  expect_corrupt(decoded(bytes), "has_sregs2");
}

TEST(VcpuStateTest, MsrsSortTscFirstAndDeadlineLast) {
  std::vector<kvm_msr_entry> m = {{0x6e0, 0, 1}, {0x4b564d01, 0, 2}, {0x10, 0, 3},
                                  {0x3b, 0, 4},  {0x174, 0, 5},      {0x10, 0, 6}};
  sort_msrs_for_restore(m);
  ASSERT_EQ(m.size(), 5u) << "the duplicate TSC entry is dropped";
  EXPECT_EQ(m.front().index, 0x10u);
  EXPECT_EQ(m.front().data, 3u) << "the first of two duplicates is kept";
  EXPECT_EQ(m[1].index, 0x3bu);
  EXPECT_EQ(m[2].index, 0x174u);
  EXPECT_EQ(m[3].index, 0x4b564d01u);
  EXPECT_EQ(m.back().index, 0x6e0u);
}

// --- KvmVmState ---

KvmVmState pattern_vm_state() {
  KvmVmState s;
  KvmVmState::Irqchip chips;
  fill(chips.pic_master, 30);
  fill(chips.pic_slave, 31);
  fill(chips.ioapic, 32);
  chips.pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
  chips.pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
  chips.ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
  s.irqchip = chips;
  kvm_pit_state2 pit;
  fill(pit, 33);
  s.pit = pit;
  s.clock.clock = 123'456'789'012;
  s.clock.flags = KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC;
  s.clock.realtime = 1'700'000'000'000'000'000;
  s.clock.host_tsc = 0xdead'beef'cafe;
  s.host_realtime_ns = 1'700'000'000'000'001'000;
  return s;
}

std::vector<uint8_t> encoded_vm(const KvmVmState& s) {
  StateWriter w;
  encode(s, w);
  return w.take();
}

Result<KvmVmState> decoded_vm(std::span<const uint8_t> bytes) {
  StateReader r(bytes, "vm");
  auto s = decode_vm_state(r);
  if (!s) return s;
  RETURN_IF_ERROR(r.finish());
  return s;
}

void expect_vm_corrupt(Result<KvmVmState> r, const std::string& field) {
  ASSERT_FALSE(r.ok()) << "accepted; expected a complaint about " << field;
  EXPECT_EQ(r.error().code, ErrorCode::kCorrupt) << r.error().message();
  EXPECT_NE(r.error().message().find(field), std::string::npos) << r.error().message();
}

TEST(KvmVmStateTest, RoundTripKeepsEveryByte) {
  const KvmVmState s = pattern_vm_state();
  auto back = decoded_vm(encoded_vm(s));
  ASSERT_TRUE(back.ok()) << back.error().message();
  ASSERT_TRUE(back->irqchip && back->pit);
  EXPECT_TRUE(same(s.irqchip->pic_master, back->irqchip->pic_master));
  EXPECT_TRUE(same(s.irqchip->pic_slave, back->irqchip->pic_slave));
  EXPECT_TRUE(same(s.irqchip->ioapic, back->irqchip->ioapic));
  EXPECT_TRUE(same(*s.pit, *back->pit));
  EXPECT_EQ(back->clock.clock, s.clock.clock);
  EXPECT_EQ(back->clock.flags, s.clock.flags);
  EXPECT_EQ(back->clock.realtime, s.clock.realtime);
  EXPECT_EQ(back->clock.host_tsc, s.clock.host_tsc);
  EXPECT_EQ(back->host_realtime_ns, s.host_realtime_ns);
}

TEST(KvmVmStateTest, RoundTripWithoutIrqchipOrPit) {
  KvmVmState s = pattern_vm_state();
  s.irqchip.reset();
  s.pit.reset();
  s.clock.flags = 0;
  auto back = decoded_vm(encoded_vm(s));
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_FALSE(back->irqchip.has_value());
  EXPECT_FALSE(back->pit.has_value());
  EXPECT_EQ(back->clock.clock, s.clock.clock);
}

TEST(KvmVmStateTest, TruncationTrailingBytesAndVersionAreRefused) {
  const auto bytes = encoded_vm(pattern_vm_state());
  for (size_t n = 0; n < bytes.size(); ++n) {
    auto r = decoded_vm(std::span<const uint8_t>(bytes).first(n));
    ASSERT_FALSE(r.ok()) << "a state cut to " << n << " bytes was accepted";
    ASSERT_EQ(r.error().code, ErrorCode::kCorrupt);
  }
  expect_vm_corrupt(decoded_vm(std::span<const uint8_t>(bytes).first(2 + 1 + 100)), "pic_master");
  auto longer = bytes;
  longer.push_back(1);
  expect_vm_corrupt(decoded_vm(longer), "follow the end");
  auto foreign = bytes;
  foreign[0] = 9;
  expect_vm_corrupt(decoded_vm(foreign), "version 9");
}

TEST(KvmVmStateTest, WrongChipIdsAndUnknownClockFlagsAreRefused) {
  KvmVmState s = pattern_vm_state();
  s.irqchip->pic_slave.chip_id = KVM_IRQCHIP_IOAPIC;
  expect_vm_corrupt(decoded_vm(encoded_vm(s)), "pic_slave.chip_id");
  s = pattern_vm_state();
  s.clock.flags |= 1u << 20;
  expect_vm_corrupt(decoded_vm(encoded_vm(s)), "clock flags");
}

}  // namespace
}  // namespace ringvm
