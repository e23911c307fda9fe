#include "devices/virtio/net/tap.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>

#include <cstring>

#include "base/log.h"
#include "devices/virtio/net/net_abi.h"

namespace ringvm {

namespace {

constexpr int kVnetHdrSize = sizeof(virtio_net_hdr_v1);
static_assert(sizeof(virtio_net_hdr_v1) == 12);

Result<void> set_vnet_hdr_size(int fd, std::string_view name) {
  int size = kVnetHdrSize;
  if (::ioctl(fd, TUNSETVNETHDRSZ, &size) != 0)
    return sys_error(fmt::format("tap {}: TUNSETVNETHDRSZ {}", name, size));
  return Ok();
}

Error open_error(std::string_view name, size_t queues, bool multi_queue, int err) {
  switch (err) {
    case EPERM:
    case EACCES:
      return Error{ErrorCode::kPermissionDenied, err,
                   fmt::format("tap {}: cannot create or attach to it without privilege; {}", name,
                               tap_permission_hint(name, queues))};
    case EBUSY:
      return Error{
          ErrorCode::kInvalidArgument, err,
          fmt::format("tap {}: busy (another process holds this single-queue tap; only one may)", name)};
    case EINVAL:
      if (multi_queue)
        return Error{
            ErrorCode::kInvalidArgument, err,
            fmt::format("tap {}: exists without multi_queue, so it cannot serve {} queues; recreate it "
                        "with `ip tuntap add {} mode tap multi_queue user $USER` or use queues=1",
                        name, queues, name)};
      [[fallthrough]];
    default: return sys_error(fmt::format("tap {}: TUNSETIFF", name), err);
  }
}

// One queue of tap `name`; TUNSETIFF creates the tap if it does not exist (with CAP_NET_ADMIN).
Result<UniqueFd> open_queue(std::string_view name, size_t queues, bool multi_queue,
                            std::string& actual_name) {
  UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (!fd) {
    const int err = errno;
    if (err == ENOENT)
      return Error{ErrorCode::kNotFound, err,
                   "/dev/net/tun is missing: load the tun module (`modprobe tun`)"};
    return sys_error("open /dev/net/tun", err);
  }
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  // A short flags field in the UAPI struct; the values all fit.
  ifr.ifr_flags =
      static_cast<short>(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (multi_queue ? IFF_MULTI_QUEUE : 0));
  if (::ioctl(fd.get(), TUNSETIFF, &ifr) != 0) return open_error(name, queues, multi_queue, errno);
  actual_name.assign(ifr.ifr_name, ::strnlen(ifr.ifr_name, IFNAMSIZ));
  RETURN_IF_ERROR(set_vnet_hdr_size(fd.get(), actual_name));
  return fd;
}

}  // namespace

std::string tap_permission_hint(std::string_view name, size_t queues) {
  return fmt::format(
      "create it once as root with `ip tuntap add {} mode tap{} user $USER` (then `ip link set {} "
      "up`), or pass an open tap fd with fd=N",
      name, queues > 1 ? " multi_queue" : "", name);
}

Tap::Tap(std::string name, std::vector<UniqueFd> fds, bool multi_queue)
    : name_(std::move(name)), fds_(std::move(fds)), attached_(fds_.size(), true), multi_queue_(multi_queue) {
  probe_ufo();
}

Result<std::unique_ptr<Tap>> Tap::open(std::string_view name, size_t queues) {
  if (name.empty() || name.size() >= IFNAMSIZ)
    return make_error(ErrorCode::kInvalidArgument, "tap name '{}' must be 1 to {} characters", name,
                      IFNAMSIZ - 1);
  if (name.find_first_of("/ \t\n:") != std::string_view::npos)
    return make_error(ErrorCode::kInvalidArgument, "tap name '{}' contains a character Linux refuses", name);
  if (queues == 0 || queues > 256)
    return make_error(ErrorCode::kInvalidArgument, "tap {}: {} queues requested, allowed 1..256", name,
                      queues);
  std::string actual;
  bool multi_queue = queues > 1;
  std::vector<UniqueFd> fds;
  auto first = open_queue(name, queues, multi_queue, actual);
  if (!first.ok() && first.error().sys_errno == EINVAL && queues == 1) {
    // An existing tap made with multi_queue only accepts IFF_MULTI_QUEUE openers.
    multi_queue = true;
    first = open_queue(name, queues, multi_queue, actual);
  }
  if (!first.ok()) return std::move(first).error();
  fds.push_back(std::move(*first));
  while (fds.size() < queues) {
    auto q = open_queue(actual, queues, true, actual);
    if (!q.ok()) return wrap(std::move(q).error(), "queue {}", fds.size());
    fds.push_back(std::move(*q));
  }
  return std::unique_ptr<Tap>(new Tap(std::move(actual), std::move(fds), multi_queue));
}

Result<std::unique_ptr<Tap>> Tap::adopt(int raw_fd) {
  UniqueFd fd(raw_fd);
  if (raw_fd < 0 || ::fcntl(raw_fd, F_GETFD) < 0) {
    (void)fd.release();  // not ours to close: it is not an open fd
    return make_error(ErrorCode::kInvalidArgument,
                      "fd={}: not an open file descriptor; the launcher must pass an open tap fd", raw_fd);
  }
  ifreq ifr{};
  if (::ioctl(raw_fd, TUNGETIFF, &ifr) != 0)
    return Error{ErrorCode::kInvalidArgument, errno,
                 fmt::format("fd={}: not an attached tun/tap fd (TUNGETIFF failed)", raw_fd)};
  const std::string name(ifr.ifr_name, ::strnlen(ifr.ifr_name, IFNAMSIZ));
  const unsigned flags = static_cast<unsigned short>(ifr.ifr_flags);
  if ((flags & IFF_TAP) == 0)
    return make_error(ErrorCode::kInvalidArgument,
                      "fd={}: {} is a tun (layer 3) device; virtio-net needs a tap", raw_fd, name);
  if ((flags & IFF_VNET_HDR) == 0)
    return make_error(
        ErrorCode::kInvalidArgument,
        "fd={}: tap {} was opened without IFF_VNET_HDR; open it with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR", raw_fd,
        name);
  if ((flags & IFF_NO_PI) == 0)
    return make_error(ErrorCode::kInvalidArgument, "fd={}: tap {} was opened without IFF_NO_PI", raw_fd,
                      name);
  const int fl = ::fcntl(raw_fd, F_GETFL);
  if (fl < 0 || ::fcntl(raw_fd, F_SETFL, fl | O_NONBLOCK) != 0)
    return sys_error(fmt::format("fd={}: making tap {} non-blocking", raw_fd, name));
  (void)::fcntl(raw_fd, F_SETFD, FD_CLOEXEC);
  RETURN_IF_ERROR(set_vnet_hdr_size(raw_fd, name));
  std::vector<UniqueFd> fds;
  fds.push_back(std::move(fd));
  return std::unique_ptr<Tap>(new Tap(name, std::move(fds), (flags & IFF_MULTI_QUEUE) != 0));
}

void Tap::probe_ufo() {
  // Kernels that dropped UFO refuse the flag; ones that still take it accept it (as QEMU probes).
  unsigned flags = TUN_F_CSUM | TUN_F_UFO;
  ufo_ = ::ioctl(fds_[0].get(), TUNSETOFFLOAD, flags) == 0;
  flags = 0;
  (void)::ioctl(fds_[0].get(), TUNSETOFFLOAD, flags);
}

Result<void> Tap::set_offload(unsigned tun_flags) {
  // Offloads are per device; queue 0 is never detached (a driver runs at least one pair).
  if (::ioctl(fds_[0].get(), TUNSETOFFLOAD, tun_flags) != 0)
    return sys_error(fmt::format("tap {}: TUNSETOFFLOAD {:#x}", name_, tun_flags));
  return Ok();
}

Result<void> Tap::set_active_queues(size_t count) {
  if (!multi_queue_) return Ok();
  for (size_t i = 0; i < fds_.size(); ++i) {
    const bool want = i < count;
    if (attached_[i] == want) continue;
    ifreq ifr{};
    ifr.ifr_flags = static_cast<short>(want ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE);
    if (::ioctl(fds_[i].get(), TUNSETQUEUE, &ifr) != 0)
      return sys_error(fmt::format("tap {}: {} queue {}", name_, want ? "attaching" : "detaching", i));
    attached_[i] = want;
  }
  return Ok();
}

}  // namespace ringvm
