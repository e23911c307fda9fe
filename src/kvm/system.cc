#include "kvm/system.h"

#include <fcntl.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "kvm/vcpu.h"
#include "kvm/kvm_abi.h"
#include "kvm/vm.h"

namespace ringvm {

Result<KvmSystem> KvmSystem::open(const std::string& path) {
  KvmSystem sys;
  sys.fd_.reset(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!sys.fd_) {
    const int err = errno;
    if (err == ENOENT)
      return Error{ErrorCode::kNotFound, err,
                   fmt::format("{} does not exist: load the KVM module (modprobe kvm_intel or kvm_amd) "
                               "and enable VT-x/AMD-V in the firmware", path)};
    if (err == EACCES || err == EPERM)
      return Error{ErrorCode::kPermissionDenied, err,
                   fmt::format("cannot open {}: add this user to the group that owns it "
                               "(usually kvm: sudo usermod -aG kvm $USER, then log in again)", path)};
    return sys_error(fmt::format("open {}", path), err);
  }
  sys.api_version_ = ::ioctl(sys.fd_.get(), KVM_GET_API_VERSION, 0);
  if (sys.api_version_ < 0) return sys_error(fmt::format("KVM_GET_API_VERSION on {}", path));
  if (sys.api_version_ != KVM_API_VERSION)
    return make_error(ErrorCode::kUnsupported,
                      "{} speaks KVM API version {}, ringvm needs {}: update the host kernel", path,
                      sys.api_version_, KVM_API_VERSION);
  return sys;
}

int KvmSystem::check_extension(long cap) const {
  const int r = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, cap);
  return r < 0 ? 0 : r;
}

Result<void> KvmSystem::require_extension(long cap, const char* name) const {
  if (check_extension(cap) <= 0)
    return make_error(ErrorCode::kUnsupported,
                      "the host's KVM lacks {} (capability {}): a newer host kernel is needed", name, cap);
  return Ok();
}

int KvmSystem::vcpu_mmap_size() const { return ::ioctl(fd_.get(), KVM_GET_VCPU_MMAP_SIZE, 0); }

int KvmSystem::recommended_vcpus() const {
  const int n = check_extension(KVM_CAP_NR_VCPUS);
  return n > 0 ? n : 4;  // api.rst: assume 4 when the capability is absent
}

int KvmSystem::max_vcpus() const {
  const int n = check_extension(KVM_CAP_MAX_VCPUS);
  return n > 0 ? n : recommended_vcpus();
}

Result<std::vector<kvm_cpuid_entry2>> KvmSystem::supported_cpuid() const {
  for (uint32_t n = 128; n <= 4096; n *= 2) {
    // C layout (kvm_abi.h): the header, then n entries.
    std::vector<uint8_t> buf(sizeof(kvm_abi::Cpuid2Header) + n * sizeof(kvm_cpuid_entry2));
    const kvm_abi::Cpuid2Header hdr{n, 0};
    std::memcpy(buf.data(), &hdr, sizeof hdr);
    if (::ioctl(fd_.get(), kvm_abi::kGetSupportedCpuid, buf.data()) == 0) {
      kvm_abi::Cpuid2Header out{};
      std::memcpy(&out, buf.data(), sizeof out);
      std::vector<kvm_cpuid_entry2> entries(std::min(out.nent, n));
      std::memcpy(entries.data(), buf.data() + sizeof out, entries.size() * sizeof(kvm_cpuid_entry2));
      return entries;
    }
    if (errno != E2BIG) return sys_error("KVM_GET_SUPPORTED_CPUID");
  }
  return make_error(ErrorCode::kUnsupported, "KVM_GET_SUPPORTED_CPUID returned more than 4096 entries");
}

Result<std::vector<uint32_t>> KvmSystem::msr_index_list() const {
  kvm_abi::MsrListHeader probe{0};
  if (::ioctl(fd_.get(), kvm_abi::kGetMsrIndexList, &probe) != 0 && errno != E2BIG)
    return sys_error("KVM_GET_MSR_INDEX_LIST");
  std::vector<uint8_t> buf(sizeof(kvm_abi::MsrListHeader) + probe.nmsrs * sizeof(uint32_t));
  std::memcpy(buf.data(), &probe, sizeof probe);
  if (::ioctl(fd_.get(), kvm_abi::kGetMsrIndexList, buf.data()) != 0) return sys_error("KVM_GET_MSR_INDEX_LIST");
  std::vector<uint32_t> out(probe.nmsrs);
  std::memcpy(out.data(), buf.data() + sizeof probe, out.size() * sizeof(uint32_t));
  return out;
}

Result<KvmVm> KvmSystem::create_vm() const {
  int fd;
  do {
    fd = ::ioctl(fd_.get(), KVM_CREATE_VM, 0);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return sys_error("KVM_CREATE_VM");
  return KvmVm(UniqueFd(fd), this);
}

}  // namespace ringvm
