// C layouts of the KVM structs that end in a flexible array, and the ioctl numbers built from
// them.
//
// linux-libc-dev 6.1's <linux/stddef.h> declares __DECLARE_FLEX_ARRAY in C++ as a struct holding
// an empty struct and the array; an empty struct has size 1 in C++, so in C++ sizeof(kvm_cpuid2)
// is 12, not 8, the array starts 4 bytes late, and _IOWR(..., struct kvm_cpuid2) encodes the
// wrong size: KVM answers EINVAL. Use these headers (what the kernel's C code sees) followed by
// the entries, and these ioctl numbers, for every such struct. Newer headers fixed the macro; the
// static_asserts below keep the C layout whatever the header does.
#pragma once

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace ringvm::kvm_abi {

struct Cpuid2Header {  // struct kvm_cpuid2 without its entries
  uint32_t nent;
  uint32_t padding;
};
struct MsrsHeader {  // struct kvm_msrs without its entries
  uint32_t nmsrs;
  uint32_t pad;
};
struct MsrListHeader {  // struct kvm_msr_list without its indices
  uint32_t nmsrs;
};
struct IrqRoutingHeader {  // struct kvm_irq_routing without its entries
  uint32_t nr;
  uint32_t flags;
};
struct StatsDescHeader {  // struct kvm_stats_desc without its name
  uint32_t flags;
  int16_t exponent;
  uint16_t size;
  uint32_t offset;
  uint32_t bucket_size;
};
static_assert(sizeof(Cpuid2Header) == 8 && sizeof(MsrsHeader) == 8 && sizeof(MsrListHeader) == 4);
static_assert(sizeof(IrqRoutingHeader) == 8 && sizeof(StatsDescHeader) == 16);
// struct kvm_xsave without its flexible `extra` tail: the legacy 4 KiB region. KVM_GET_XSAVE2
// writes (and KVM_SET_XSAVE reads) KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) bytes, which may be more:
// the buffer behind these ioctls must always be that large.
struct XsaveRegion {
  uint32_t region[1024];
};
static_assert(sizeof(XsaveRegion) == 4096);

inline constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, MsrListHeader);
inline constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, Cpuid2Header);
inline constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, Cpuid2Header);
inline constexpr unsigned long kGetCpuid2 = _IOWR(KVMIO, 0x91, Cpuid2Header);
inline constexpr unsigned long kGetXsave = _IOR(KVMIO, 0xa4, XsaveRegion);
inline constexpr unsigned long kSetXsave = _IOW(KVMIO, 0xa5, XsaveRegion);
inline constexpr unsigned long kGetXsave2 = _IOR(KVMIO, 0xcf, XsaveRegion);
inline constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, MsrsHeader);
inline constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, MsrsHeader);
inline constexpr unsigned long kSetGsiRouting = _IOW(KVMIO, 0x6a, IrqRoutingHeader);

// A C-layout ioctl argument: `header`, then `items`, as one byte buffer.
template <typename H, typename T>
std::vector<uint8_t> with_header(const H& header, const std::vector<T>& items) {
  std::vector<uint8_t> buf(sizeof(H) + items.size() * sizeof(T));
  uint8_t* out = buf.data();
  if (out == nullptr) return buf;  // never: the size is at least sizeof(H); tells GCC's -Wnull-dereference
  std::memcpy(out, &header, sizeof(H));
  if (!items.empty()) std::memcpy(out + sizeof(H), items.data(), items.size() * sizeof(T));
  return buf;
}

}  // namespace ringvm::kvm_abi
