#include "devices/legacy/vmgenid.h"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>

#include "base/state_codec.h"

namespace ringvm {
namespace {

// The layout save() writes; restore() refuses any other.
constexpr uint8_t kStateVersion = 1;

Result<VmGenId::Id> random_id() {
  VmGenId::Id id{};
  size_t got = 0;
  while (got < id.size()) {
    const ssize_t n = ::getrandom(id.data() + got, id.size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("vmgenid: getrandom");
    }
    got += static_cast<size_t>(n);
  }
  return id;
}

}  // namespace

Result<std::shared_ptr<VmGenId>> VmGenId::create(const GuestMemory& mem, uint64_t addr, IrqLine irq) {
  if (addr % 8 != 0 || !mem.contains(addr, kIdSize))
    return make_error(ErrorCode::kInvalidArgument,
                      "vmgenid: address {:#x} is not 8-byte aligned guest memory with room for {} bytes",
                      addr, kIdSize);
  std::shared_ptr<VmGenId> dev(new VmGenId(mem, addr, std::move(irq)));
  const Id id = TRY(random_id());
  std::lock_guard lock(dev->mu_);
  RETURN_IF_ERROR(dev->write_id(id));
  return dev;
}

void VmGenId::read(uint64_t, std::span<uint8_t> data) { std::fill(data.begin(), data.end(), uint8_t{0xff}); }

VmGenId::Id VmGenId::id() const {
  std::lock_guard lock(mu_);
  return id_;
}

Result<void> VmGenId::write_id(const Id& id) {
  // The ID goes to guest memory whole or not at all (GuestMemory checks the range first); the
  // guest's driver reads it only after the notification that follows.
  RETURN_IF_ERROR(mem_.write(addr_, id));
  id_ = id;
  return Ok();
}

Result<void> VmGenId::new_generation() {
  const Id id = TRY(random_id());
  std::lock_guard lock(mu_);
  RETURN_IF_ERROR(write_id(id));
  // An edge on the GED's edge-triggered GSI: Linux's evged then runs _EVT, which notifies VGEN.
  if (irq_) {
    irq_(true);
    irq_(false);
  }
  return Ok();
}

Result<std::vector<uint8_t>> VmGenId::save() const {
  std::lock_guard lock(mu_);
  StateWriter w;
  w.u8(kStateVersion);
  w.u64(addr_);
  w.raw(id_);
  return w.take();
}

Result<void> VmGenId::restore(std::span<const uint8_t> state) {
  StateReader r(state, std::string(name()));
  const uint8_t version = TRY(r.u8("version"));
  if (version != kStateVersion)
    return r.corrupt(fmt::format("state version {}; this ringvm reads version {}", version, kStateVersion));
  const uint64_t addr = TRY(r.u64("address"));
  Id id{};
  RETURN_IF_ERROR(r.raw("generation_id", id));
  RETURN_IF_ERROR(r.finish());
  if (addr != addr_)
    return r.corrupt(
        fmt::format("the ID was at {:#x}; this ringvm places it at {:#x}, where the guest's ACPI "
                    "tables point",
                    addr, addr_));
  std::lock_guard lock(mu_);
  return write_id(id);
}

}  // namespace ringvm
