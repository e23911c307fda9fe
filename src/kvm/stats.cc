#include "kvm/stats.h"

#include "kvm/kvm_abi.h"

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cstring>
#include <vector>

namespace ringvm {

Result<KvmStats> KvmStats::open(int object_fd) {
  const int fd = ::ioctl(object_fd, KVM_GET_STATS_FD, nullptr);
  if (fd < 0) {
    if (errno == ENOTTY || errno == EINVAL)
      return Error{ErrorCode::kUnsupported, errno, "KVM_GET_STATS_FD: the host kernel has no binary stats"};
    return sys_error("KVM_GET_STATS_FD");
  }
  KvmStats s;
  s.fd_.reset(fd);
  return s;
}

Result<std::map<std::string, uint64_t>> KvmStats::read() const {
  kvm_stats_header hdr{};
  if (::pread(fd_.get(), &hdr, sizeof hdr, 0) != static_cast<ssize_t>(sizeof hdr))
    return sys_error("read KVM stats header");
  // The kernel is trusted, but bound the sizes anyway so a surprise cannot make us allocate wildly.
  if (hdr.num_desc > 4096 || hdr.name_size > 4096)
    return make_error(ErrorCode::kCorrupt, "KVM stats header: {} descriptors of name size {}", hdr.num_desc,
                      hdr.name_size);
  const size_t desc_size = sizeof(kvm_abi::StatsDescHeader) + hdr.name_size;
  std::vector<uint8_t> descs(desc_size * hdr.num_desc);
  if (!descs.empty() &&
      ::pread(fd_.get(), descs.data(), descs.size(), hdr.desc_offset) != static_cast<ssize_t>(descs.size()))
    return sys_error("read KVM stats descriptors");
  std::map<std::string, uint64_t> out;
  for (uint32_t i = 0; i < hdr.num_desc; ++i) {
    kvm_abi::StatsDescHeader d{};
    std::memcpy(&d, descs.data() + i * desc_size, sizeof d);
    const char* name_ptr = reinterpret_cast<const char*>(descs.data() + i * desc_size + sizeof(kvm_abi::StatsDescHeader));
    // SAFETY: name_ptr points inside `descs` with name_size bytes after it; strnlen bounds the read.
    std::string name(name_ptr, strnlen(name_ptr, hdr.name_size));
    if (d.size == 0 || d.size > 1024) continue;
    std::vector<uint64_t> vals(d.size);
    const ssize_t want = static_cast<ssize_t>(d.size * sizeof(uint64_t));
    if (::pread(fd_.get(), vals.data(), static_cast<size_t>(want), hdr.data_offset + d.offset) != want)
      return sys_error("read KVM stat " + name);
    uint64_t sum = 0;
    for (uint64_t v : vals) sum += v;
    out[name] = sum;
  }
  return out;
}

}  // namespace ringvm
