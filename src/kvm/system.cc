#include "kvm/system.h"

#include <fcntl.h>
#include <sys/ioctl.h>

#include <memory>

#include "kvm/vcpu.h"
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
    const size_t bytes = sizeof(kvm_cpuid2) + n * sizeof(kvm_cpuid_entry2);
    auto buf = std::make_unique<uint8_t[]>(bytes);
    // SAFETY: buf is large enough for the header and n entries, and suitably aligned by new[].
    auto* c = reinterpret_cast<kvm_cpuid2*>(buf.get());
    c->nent = n;
    if (::ioctl(fd_.get(), KVM_GET_SUPPORTED_CPUID, c) == 0)
      return std::vector<kvm_cpuid_entry2>(c->entries, c->entries + c->nent);
    if (errno != E2BIG) return sys_error("KVM_GET_SUPPORTED_CPUID");
  }
  return make_error(ErrorCode::kUnsupported, "KVM_GET_SUPPORTED_CPUID returned more than 4096 entries");
}

Result<std::vector<uint32_t>> KvmSystem::msr_index_list() const {
  kvm_msr_list probe{};
  probe.nmsrs = 0;
  if (::ioctl(fd_.get(), KVM_GET_MSR_INDEX_LIST, &probe) != 0 && errno != E2BIG)
    return sys_error("KVM_GET_MSR_INDEX_LIST");
  const size_t bytes = sizeof(kvm_msr_list) + probe.nmsrs * sizeof(uint32_t);
  auto buf = std::make_unique<uint8_t[]>(bytes);
  // SAFETY: buf holds the header and nmsrs indices.
  auto* list = reinterpret_cast<kvm_msr_list*>(buf.get());
  list->nmsrs = probe.nmsrs;
  if (::ioctl(fd_.get(), KVM_GET_MSR_INDEX_LIST, list) != 0) return sys_error("KVM_GET_MSR_INDEX_LIST");
  return std::vector<uint32_t>(list->indices, list->indices + list->nmsrs);
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
