#include "arch/x86_64/cpuid.h"

#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <string>

namespace ringvm::x86 {
namespace {

kvm_cpuid_entry2 leaf(uint32_t fn, uint32_t index, uint32_t a, uint32_t b, uint32_t c, uint32_t d,
                      uint32_t flags = 0) {
  kvm_cpuid_entry2 e{};
  e.function = fn;
  e.index = index;
  e.flags = flags;
  e.eax = a;
  e.ebx = b;
  e.ecx = c;
  e.edx = d;
  return e;
}

uint32_t vendor_word(const char* s) {
  uint32_t v;
  std::memcpy(&v, s, 4);
  return v;
}

// What KVM_GET_SUPPORTED_CPUID reports on an Intel host (trimmed): max leaf 0x1f.
std::vector<kvm_cpuid_entry2> intel_supported() {
  return {
      leaf(0, 0, 0x1f, vendor_word("Genu"), vendor_word("ntel"), vendor_word("ineI")),
      leaf(1, 0, 0x906ea, 0x00010800, 0x7ffafbff, 0xbfebfbff),
      leaf(4, 0, 0x1c004121, 0x01c0003f, 0x3f, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX),    // L1d
      leaf(4, 3, 0x1c03c163, 0x02c0003f, 0x3fff, 6, KVM_CPUID_FLAG_SIGNIFCANT_INDEX),  // L3
      leaf(0xa, 0, 0x07300404, 0, 0, 0x603),
      leaf(0xb, 0, 1, 2, 0x100, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX),
      leaf(0xb, 1, 4, 12, 0x201, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX),
      leaf(0x1f, 0, 1, 2, 0x100, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX),
      leaf(0x40000000, 0, 0x40000001, 0, 0, 0),
      leaf(0x40000001, 0, 0x01007afb, 0, 0, 0),
      leaf(0x80000000, 0, 0x80000008, 0, 0, 0),
      leaf(0x80000008, 0, 0x3027, 0, 0, 0),
  };
}

// An AMD host: max leaf 0xd (no 0xB entries from KVM), topology in 0x8000001E.
std::vector<kvm_cpuid_entry2> amd_supported() {
  return {
      leaf(0, 0, 0xd, vendor_word("Auth"), vendor_word("cAMD"), vendor_word("enti")),
      leaf(1, 0, 0x830f10, 0x00040800, 0x7ed8320b, 0x178bfbff),
      leaf(0x80000000, 0, 0x8000001f, 0, 0, 0),
      leaf(0x80000008, 0, 0x3030, 0, 0x7003, 0),
      leaf(0x8000001d, 3, 0x3c163, 0x3f, 0x3fff, 1, KVM_CPUID_FLAG_SIGNIFCANT_INDEX),
      leaf(0x8000001e, 0, 5, 0x105, 3, 0),
  };
}

std::optional<kvm_cpuid_entry2> find(const std::vector<kvm_cpuid_entry2>& v, uint32_t fn,
                                     uint32_t index = 0) {
  for (const auto& e : v)
    if (e.function == fn && e.index == index) return e;
  return std::nullopt;
}

TEST(Cpuid, TopologyForOneTwoFourVcpusOnIntel) {
  for (uint32_t n : {1u, 2u, 4u}) {
    for (uint32_t i = 0; i < n; ++i) {
      auto r = build_cpuid(intel_supported(), i, n);
      ASSERT_TRUE(r.ok()) << r.error().message();
      const auto l1 = find(*r, 1).value();
      EXPECT_EQ(l1.ebx >> 24, i) << "initial APIC ID";
      EXPECT_TRUE(l1.ecx & (1u << 31)) << "hypervisor bit";
      EXPECT_EQ(((l1.ebx >> 16) & 0xff), n == 1 ? 1u : (n == 2 ? 2u : 4u));
      EXPECT_EQ((l1.edx >> 28) & 1, n > 1 ? 1u : 0u) << "HTT";
      EXPECT_EQ(l1.ebx & 0xffff, 0x0800u) << "CLFLUSH size kept";
      for (uint32_t fn : {0xbu, 0x1fu}) {
        const auto smt = find(*r, fn, 0).value();
        const auto core = find(*r, fn, 1).value();
        const auto end = find(*r, fn, 2).value();
        EXPECT_EQ(smt.edx, i) << "x2APIC ID";
        EXPECT_EQ(smt.ebx, 1u) << "one thread per core";
        EXPECT_EQ((smt.ecx >> 8) & 0xff, 1u);
        EXPECT_EQ(core.ebx, n);
        EXPECT_EQ((core.ecx >> 8) & 0xff, 2u);
        EXPECT_GE(1u << core.eax, n) << "shift covers every core";
        EXPECT_EQ((end.ecx >> 8) & 0xff, 0u) << "level list ends";
        EXPECT_TRUE(smt.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
      }
      EXPECT_FALSE(find(*r, 0xb, 3).has_value()) << "KVM's own subleaves are replaced";
      const auto l1d = find(*r, 4, 0).value();
      const auto l3 = find(*r, 4, 3).value();
      EXPECT_EQ((l1d.eax >> 14) & 0xfff, 0u) << "L1 is per core";
      EXPECT_EQ((l3.eax >> 14) & 0xfff, (l1.ebx >> 16 & 0xff) - 1) << "L3 is shared";
      EXPECT_EQ((l3.eax >> 26) + 1, (l1.ebx >> 16) & 0xff);
      const auto pmu = find(*r, 0xa).value();
      EXPECT_EQ(pmu.eax, 0u) << "no PMU promised";
      const auto sig = find(*r, 0x40000000).value();
      EXPECT_EQ(sig.eax, 0x40000001u);
      char name[13] = {};
      std::memcpy(name, &sig.ebx, 4);
      std::memcpy(name + 4, &sig.ecx, 4);
      std::memcpy(name + 8, &sig.edx, 4);
      EXPECT_STREQ(name, "KVMKVMKVM");
      EXPECT_EQ(find(*r, 0x40000001)->eax, 0x01007afbu) << "KVM features from the host";
      EXPECT_EQ(find(*r, 0x80000008)->ecx, 0u) << "Intel: ECX reserved";
    }
  }
}

TEST(Cpuid, AmdTopologyLeaves) {
  auto r = build_cpuid(amd_supported(), 2, 4);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(find(*r, 0xb, 1)->ebx, 4u) << "max basic leaf 0xd covers 0xB: consistent with 0x8000001E";
  EXPECT_FALSE(find(*r, 0x1f).has_value()) << "max basic leaf 0xd: no 0x1F";
  const auto ext = find(*r, 0x80000008).value();
  EXPECT_EQ(ext.ecx & 0xff, 3u) << "NC = cores - 1";
  EXPECT_EQ((ext.ecx >> 12) & 0xf, 2u) << "ApicIdCoreIdSize";
  const auto e = find(*r, 0x8000001e).value();
  EXPECT_EQ(e.eax, 2u);
  EXPECT_EQ(e.ebx, 2u) << "core 2, one thread per core";
  EXPECT_EQ(e.ecx, 0u);
  EXPECT_EQ((find(*r, 0x8000001d, 3)->eax >> 14) & 0xfff, 3u) << "L3 shared by 4";
  EXPECT_TRUE(find(*r, 0x40000000).has_value()) << "signature added when KVM did not list it";
}

TEST(Cpuid, TscDeadlineOnlyWhenAsked) {
  EXPECT_EQ(find(build_cpuid(intel_supported(), 0, 1).value(), 1)->ecx & (1u << 24), 0u);
  const auto with = build_cpuid(intel_supported(), 0, 1, {.tsc_deadline = true}).value();
  EXPECT_NE(find(with, 1)->ecx & (1u << 24), 0u);
}

TEST(Cpuid, RejectsBadArguments) {
  EXPECT_FALSE(build_cpuid(intel_supported(), 0, 0).ok());
  EXPECT_FALSE(build_cpuid(intel_supported(), 2, 2).ok());
  EXPECT_FALSE(build_cpuid(intel_supported(), 0, kMaxVcpus + 1).ok());
  EXPECT_FALSE(build_cpuid({}, 0, 1).ok());
}

}  // namespace
}  // namespace ringvm::x86
