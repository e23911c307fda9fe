// Vm::create: the one place a VM is assembled. Every device is inserted on its bus at the
// address arch/x86_64/layout.h gives it, which is also what the ACPI tables describe.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <iterator>

#include "arch/x86_64/acpi.h"
#include "arch/x86_64/boot_cpu.h"
#include "arch/x86_64/bzimage_payload.h"
#include "arch/x86_64/cpuid.h"
#include "arch/x86_64/e820.h"
#include "arch/x86_64/layout.h"
#include "arch/x86_64/linux_loader.h"
#include "base/log.h"
#include "devices/legacy/acpi_pm.h"
#include "devices/legacy/cmos_rtc.h"
#include "devices/legacy/i8042.h"
#include "devices/legacy/serial.h"
#include "devices/legacy/vmgenid.h"
#include "block/image_open.h"
#include "devices/pci/interrupt_controller.h"
#include "devices/pci/msi.h"
#include "devices/pci/pci_bus.h"
#include "devices/virtio/block/virtio_block.h"
#include "devices/virtio/console/virtio_console.h"
#include "devices/virtio/rng/virtio_rng.h"
#include "devices/virtio/virtio_pci.h"
#include "vmm/exit_probe.h"
#include "vmm/vm.h"

namespace ringvm {

// --disk's defaults (vmm/config.h, which does not include the device) are the device's own.
static_assert(uint64_t{kDefaultDiskMergeKib} * 1024 == VirtioBlockOptions::kDefaultMergeBytes);
static_assert(kDefaultDiskChainPasses == VirtioBlockOptions::kDefaultChainPasses);
static_assert(uint64_t{kDefaultDiskChainKib} * 1024 == VirtioBlockOptions::kDefaultChainMaxBytes);

namespace {

// Identity-map and TSS pages Intel's VMX needs for real-mode emulation; just below the LAPIC
// area, outside RAM and every MMIO window.
constexpr uint64_t kIdentityMapAddr = 0xFFFB'C000;
constexpr uint64_t kTssAddr = 0xFFFB'D000;
// Kernels and initrds larger than this are refused before reading them whole.
constexpr uint64_t kMaxImageBytes = 2ULL << 30;

Result<std::vector<uint8_t>> read_file(const std::string& path, const char* what) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) return sys_error(fmt::format("{} {}: cannot open", what, path));
  const auto size = static_cast<uint64_t>(f.tellg());
  if (size > kMaxImageBytes)
    return make_error(ErrorCode::kOutOfRange, "{} {}: {} bytes is larger than ringvm accepts ({})", what, path,
                      size, kMaxImageBytes);
  std::vector<uint8_t> data(size);
  f.seekg(0);
  // SAFETY: `data` holds exactly `size` bytes.
  if (size > 0 && !f.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(size)))
    return make_error(ErrorCode::kIo, "{} {}: short read", what, path);
  return data;
}

// A device that ignores every access: port 0x80 (POST codes / the kernel's I/O delay) and friends.
class SinkDevice final : public Device {
 public:
  explicit SinkDevice(std::string name) : name_(std::move(name)) {}
  std::string_view name() const override { return name_; }
  void read(uint64_t, std::span<uint8_t> data) override { std::fill(data.begin(), data.end(), uint8_t{0xff}); }
  void write(uint64_t, std::span<const uint8_t>) override {}
  // Stateless: an empty state.
  Result<std::vector<uint8_t>> save() const override { return std::vector<uint8_t>{}; }
  Result<void> restore(std::span<const uint8_t> state) override {
    if (!state.empty()) return make_error(ErrorCode::kCorrupt, "{}: a state of {} bytes for a stateless device", name_, state.size());
    return Ok();
  }

 private:
  std::string name_;
};

}  // namespace

class VmBuilder {
 public:
  static Result<std::unique_ptr<Vm>> build(const VmConfig& cfg);

 private:
  static Result<void> create_kvm(Vm& vm);
  static Result<void> add_platform_devices(Vm& vm);
  static Result<void> add_virtio_devices(Vm& vm, PciBus& pci);
  static Result<x86::LoadedKernel> load_kernel(Vm& vm);
  // `kernel` null: a restore (the vCPUs' state comes from the snapshot).
  static Result<void> create_vcpus(Vm& vm, const x86::LoadedKernel* kernel);
  // Sets `gsi` to `level` on the in-kernel irqchip; failures are logged, never fatal.
  static std::function<void(bool)> irq_line(Vm& vm, uint32_t gsi);
};

std::function<void(bool)> VmBuilder::irq_line(Vm& vm, uint32_t gsi) {
  KvmVm* kvm_vm = &*vm.vm_;
  return [kvm_vm, gsi](bool level) {
    auto r = kvm_vm->set_irq_line(gsi, level);
    if (!r) RINGVM_LOG_RATELIMITED(warn, "IRQ {}: {}", gsi, r.error().message());
  };
}

Result<void> VmBuilder::create_kvm(Vm& vm) {
  vm.kvm_.emplace(TRY(KvmSystem::open()));
  const KvmSystem& kvm = *vm.kvm_;
  RETURN_IF_ERROR(kvm.require_extension(KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP (in-kernel interrupt controller)"));
  RETURN_IF_ERROR(kvm.require_extension(KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD"));
  RETURN_IF_ERROR(kvm.require_extension(KVM_CAP_IRQFD, "KVM_CAP_IRQFD"));
  RETURN_IF_ERROR(kvm.require_extension(KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"));
  const auto max = static_cast<uint32_t>(std::min<int>(kvm.max_vcpus(), static_cast<int>(x86::kMaxVcpus)));
  if (vm.cfg_.cpus > max)
    return make_error(ErrorCode::kInvalidArgument, "--cpus {}: this host's KVM allows at most {} vCPUs per VM",
                      vm.cfg_.cpus, max);
  vm.vm_.emplace(TRY(kvm.create_vm()));
  KvmVm& kvm_vm = *vm.vm_;
  // Intel needs these before the first vCPU; AMD and PVM ignore or refuse them harmlessly.
  if (auto r = kvm_vm.set_identity_map_addr(kIdentityMapAddr); !r) spdlog::debug("{}", r.error().message());
  if (auto r = kvm_vm.set_tss_addr(kTssAddr); !r) spdlog::debug("{}", r.error().message());
  RETURN_IF_ERROR(kvm_vm.create_irqchip());
  if (vm.cfg_.halt_poll_us) {
    if (auto r = kvm_vm.set_max_halt_poll_ns(*vm.cfg_.halt_poll_us * 1000); !r)
      return wrap(std::move(r).error(), "--halt-poll-us {}: this host's KVM cannot set halt polling per VM "
                  "(KVM_CAP_HALT_POLL, Linux 5.8+); leave the option out", *vm.cfg_.halt_poll_us);
  }
  // The PIT is the kernel's first clock source for calibration; PVM hosts cannot create it, and
  // the kernel then calibrates against the TSC and the ACPI PM timer.
  if (auto r = kvm_vm.create_pit2(); !r) spdlog::info("no in-kernel PIT: {}", r.error().message());

  if (vm.cfg_.restore) {
    // Restore: guest RAM is the snapshot's memory file, copy-on-write. Pages load on first touch
    // and stay shared (the host's page cache) between every VM restored from the same file.
    const std::string& path = vm.cfg_.restore->mem_path;
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return sys_error(fmt::format("memory file {}", path));
    vm.mem_ = TRY(GuestMemory::create_x86_from_file(vm.cfg_.memory_bytes, x86::kMmioHoleStart, fd.get(),
                                                    fmt::format("memory file {}", path)));
    // The file's data extents (holes are zero pages the guest may never touch) go into the page
    // tables in the background, 2 MiB at a time (Vm::prefault_). Best effort: errors are ignored.
    vm.prefault_ = std::thread([&vm, fd = std::move(fd)] {
      uint64_t file_off = 0;
      for (const GuestRegion& r : vm.mem_.regions()) {
        off_t pos = static_cast<off_t>(file_off);
        const off_t end = static_cast<off_t>(file_off + r.size());
        while (pos < end && !vm.stop_prefault_.load(std::memory_order_relaxed)) {
          const off_t data = ::lseek(fd.get(), pos, SEEK_DATA);
          if (data < 0 || data >= end) break;
          off_t hole = ::lseek(fd.get(), data, SEEK_HOLE);
          if (hole < 0 || hole > end) hole = end;
          for (off_t o = data; o < hole && !vm.stop_prefault_.load(std::memory_order_relaxed);) {
            const off_t n = std::min<off_t>(hole - o, off_t{2} << 20);
            // SAFETY: [o, o+n) lies inside region r's mapping (file_off <= o < o+n <= end); the
            // mapping outlives this thread (~Vm joins it first).
            (void)::madvise(r.host.data() + (o - static_cast<off_t>(file_off)), static_cast<size_t>(n),
                            MADV_POPULATE_READ);
            o += n;
          }
          pos = hole;
        }
        file_off += r.size();
      }
    });
  } else {
    vm.mem_ = TRY(GuestMemory::create_x86(vm.cfg_.memory_bytes, x86::kMmioHoleStart,
                                          vm.cfg_.huge_pages == HugePages::kTransparent));
  }
  // Diff snapshots: KVM logs the guest's writes, GuestMemory ringvm's own.
  if (vm.cfg_.track_dirty_pages) vm.mem_.enable_dirty_tracking();
  RETURN_IF_ERROR(kvm_vm.map_memory(vm.mem_, 0, vm.cfg_.track_dirty_pages ? KVM_MEM_LOG_DIRTY_PAGES : 0));
  return Ok();
}

Result<void> VmBuilder::add_platform_devices(Vm& vm) {
  Vm* self = &vm;
  // Console and COM1.
  vm.console_ = TRY(Console::create(vm.cfg_.console));
  Console* console = vm.console_.get();
  auto com1 = std::make_shared<SerialPort>("com1", irq_line(vm, x86::kCom1Irq),
                                           [console](std::span<const uint8_t> bytes) { console->write(bytes); });
  RETURN_IF_ERROR(vm.pio_.insert(x86::kCom1Port, SerialPort::kSize, com1));
  vm.devices_.add_platform(com1);
  vm.console_input_ = [com1](std::span<const uint8_t> bytes) { return com1->enqueue_input(bytes); };

  auto i8042 = std::make_shared<I8042>([self] { self->request_stop(StopReason::kReboot); },
                                       irq_line(vm, x86::kI8042Irq));
  RETURN_IF_ERROR(vm.pio_.insert(x86::kI8042DataPort, I8042::kSize, i8042));
  vm.devices_.set_i8042(i8042);
  auto rtc = std::make_shared<CmosRtc>();
  RETURN_IF_ERROR(vm.pio_.insert(x86::kRtcPort, CmosRtc::kSize, rtc));
  vm.devices_.add_platform(rtc);
  vm.rtc_ = rtc;

  AcpiPmDevice::Hooks pm_hooks;
  pm_hooks.on_poweroff = [self] { self->request_stop(StopReason::kPowerOff); };
  pm_hooks.sci = irq_line(vm, x86::kAcpiSciIrq);
  pm_hooks.clock = [] { return std::chrono::steady_clock::now(); };
  auto pm = std::make_shared<AcpiPmDevice>(std::move(pm_hooks), x86::kSlpTypS5);
  RETURN_IF_ERROR(vm.pio_.insert(x86::kAcpiPm1aEvtBlk, AcpiPmDevice::kSize, pm));
  vm.devices_.add_platform(pm);

  // VMGenID: its ID at the address the DSDT's \_SB.VGEN.ADDR names, its notification through the
  // Generic Event Device's GSI (load_kernel wrote both into the tables; AcpiConfig::vmgenid).
  // The boot ID is written without a pulse: no driver listens yet.
  auto vmgenid = TRY(VmGenId::create(vm.mem_, x86::kVmGenIdAddr, irq_line(vm, x86::kGedGsi)));
  vm.devices_.set_vmgenid(std::move(vmgenid));

  // Port 0x80 is the kernel's I/O delay: an ioeventfd makes KVM complete those writes in the
  // kernel, so they never exit to userspace. Reads (rare) reach the sink device.
  UniqueFd delay_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (delay_fd && vm.vm_->register_ioeventfd(delay_fd.get(), 0x80, 1, true)) vm.devices_.keep_fd(std::move(delay_fd));
  auto sink = std::make_shared<SinkDevice>("io-delay");
  RETURN_IF_ERROR(vm.pio_.insert(0x80, 1, sink));
  vm.devices_.add_platform(sink);

  auto pci = TRY(PciBus::create(vm.pio_, vm.mmio_,
                                {.config_port = x86::kPciConfigAddressPort,
                                 .mmio_base = x86::kPciMmio32Base,
                                 .mmio_size = x86::kPciMmio32Size,
                                 .io_base = x86::kPciIoBase,
                                 .io_size = x86::kPciIoSize,
                                 .intx_gsi = x86::pci_intx_gsi}));
  vm.devices_.set_pci(pci);
  RETURN_IF_ERROR(add_virtio_devices(vm, *pci));
  return Ok();
}

Result<void> VmBuilder::add_virtio_devices(Vm& vm, PciBus& pci) {
  // Interrupts: every MSI-X vector gets a GSI routed in the kernel and an irqfd, so a device
  // completes a request without any vCPU exit. The router's table keeps the irqchip pins routed.
  auto ic = std::make_shared<KvmInterruptController>(*vm.vm_);
  auto router = std::make_shared<MsiRouter>(*ic, x86::kIoapicPins);
  RETURN_IF_ERROR(router->install());
  vm.devices_.set_interrupts(ic, router);
  auto attach = [&](std::shared_ptr<VirtioDevice> dev) -> Result<void> {
    VirtioPciOptions pci_opts;
    pci_opts.pio_notify = vm.cfg_.virtio_pio_notify;
    auto pci_dev = TRY(VirtioPciDevice::create(dev, vm.mem_, *ic, *router, pci_opts));
    TRY(pci.add_device(pci_dev));
    // The manager stops the device's workers (reset) before anything they use is destroyed.
    vm.devices_.add_virtio(std::move(dev), pci_dev);
    return Ok();
  };
  // batch_us=auto (the default): measured once, when the first device asks.
  std::optional<uint32_t> auto_us;
  auto resolve_batch = [&](const std::optional<uint32_t>& asked) -> uint32_t {
    if (asked) return *asked;
    if (!auto_us) {
      auto cost = measure_exit_cost(vm.vm_->system());
      if (cost.ok()) {
        auto_us = auto_batch_us(cost->round_trip_ns);
        spdlog::debug("a VM exit costs {} ns here (probe of {} exits): batch_us=auto is {}", cost->round_trip_ns,
                   cost->exits, *auto_us);
        vm.devices_.add_stats_line([ns = cost->round_trip_ns, us = *auto_us] {
          return fmt::format("  exit-cost probe: {:.1f} µs per exit to userspace, so batch_us=auto is {}\n",
                             static_cast<double>(ns) / 1000.0, us);
        });
      } else {
        auto_us = 0;
        spdlog::warn("measuring the cost of a VM exit failed ({}); batch_us=auto is 0 (off)",
                   cost.error().message());
      }
    }
    return *auto_us;
  };
  for (DiskSpec d : vm.cfg_.disks) {
    RETURN_IF_ERROR(apply_tuning(vm.cfg_.tuning, &d));
    DiskOpenOptions open_opts;
    open_opts.read_only = d.read_only;
    open_opts.direct_io = d.cache == CacheMode::kNone;
    auto disk = open_disk(d.path, d.format == DiskFormat::kQcow2 ? "qcow2" : "raw", open_opts);
    if (!disk) return wrap(std::move(disk).error(), "--disk path={}", d.path);
    VirtioBlockOptions o;
    o.id = d.id;  // finalize_config named every disk
    o.engine = d.engine == DiskEngine::kSync ? VirtioBlockOptions::Engine::kSync : VirtioBlockOptions::Engine::kAuto;
    o.read_only = d.read_only;
    o.serial = d.serial;
    // One queue per vCPU unless told otherwise (as QEMU does): each vCPU submits and completes on
    // its own queue and interrupt vector, with no cross-CPU completion IPIs.
    o.queues = d.queues != 0 ? d.queues
                             : static_cast<uint16_t>(std::min<uint32_t>(vm.cfg_.cpus, VirtioBlock::kMaxQueues));
    o.cache = d.cache == CacheMode::kUnsafe ? VirtioBlockOptions::Cache::kUnsafe : VirtioBlockOptions::Cache::kWriteback;
    o.queue_size = d.queue_size;
    o.poll_us = d.poll_us;
    o.batch_us = resolve_batch(d.batch_us);
    o.chain_passes = d.chain_passes;
    o.merge_bytes = uint64_t{d.merge_kib} * 1024;
    o.chain_max_bytes = uint64_t{d.chain_kib} * 1024;
    auto blk = VirtioBlock::create(std::move(*disk), o);
    if (!blk) return wrap(std::move(blk).error(), "--disk path={}", d.path);
    std::shared_ptr<VirtioBlock> dev = std::move(*blk);
    RETURN_IF_ERROR(attach(dev));
    vm.devices_.add_block(dev, d.path);
  }
  for (NetSpec n : vm.cfg_.nets) {
    RETURN_IF_ERROR(apply_tuning(vm.cfg_.tuning, &n));
    // virtio-net's auto is off for now, whatever exits cost: in four lab boots of iperf_bench on
    // 2026-11-23 neither transmit coalescing nor ACK riding beat no batching (docs/networking.md,
    // "Transmit batching"). An explicit batch_us=N turns both on.
    n.batch_us = n.batch_us.value_or(0);
    std::shared_ptr<VirtioNet> dev = TRY(make_virtio_net(n, vm.cfg_.cpus));  // its errors name the tap
    RETURN_IF_ERROR(attach(dev));
    vm.devices_.add_net(dev);
  }
  if (vm.cfg_.vsock) RETURN_IF_ERROR(attach(TRY(make_virtio_vsock(*vm.cfg_.vsock))));
  if (vm.cfg_.rng) RETURN_IF_ERROR(attach(std::make_shared<VirtioRng>()));
  if (vm.cfg_.console_device == ConsoleDevice::kVirtio) {
    Console* console = vm.console_.get();
    std::shared_ptr<VirtioConsole> hvc =
        TRY(VirtioConsole::create([console](std::span<const uint8_t> bytes) { console->write(bytes); }));
    RETURN_IF_ERROR(attach(hvc));
    vm.console_input_ = [hvc](std::span<const uint8_t> bytes) { return hvc->enqueue_input(bytes); };
  }
  return Ok();
}

Result<x86::LoadedKernel> VmBuilder::load_kernel(Vm& vm) {
  const VmConfig& cfg = vm.cfg_;
  auto kernel = TRY(read_file(cfg.kernel, "kernel"));
  if (cfg.entry == KernelEntry::kPvh) {
    auto img = x86::LinuxImage::parse(kernel);
    if (!img) return wrap(std::move(img).error(), "kernel {}", cfg.kernel);
    if (img->kind == x86::LinuxImage::Kind::kBzImage) {
      auto vmlinux = x86::extract_vmlinux(*img);
      if (!vmlinux) return wrap(std::move(vmlinux).error(), "kernel {} (--entry pvh)", cfg.kernel);
      kernel = std::move(*vmlinux);
    }
  }
  std::vector<uint8_t> initrd_file;
  std::span<const uint8_t> initrd = cfg.initrd_data;
  if (initrd.empty() && !cfg.initrd.empty()) {
    initrd_file = TRY(read_file(cfg.initrd, "initrd"));
    initrd = initrd_file;
  }
  auto e820 = TRY(x86::build_e820(vm.mem_));
  x86::AcpiConfig acpi;
  acpi.num_cpus = cfg.cpus;
  acpi.pm_timer = true;  // AcpiPmDevice serves the PM timer at kAcpiPmTmrBlk
  acpi.vmgenid = true;   // add_platform_devices creates the VmGenId these tables describe
  const uint64_t rsdp = TRY(x86::write_acpi_tables(vm.mem_, acpi));
  auto loaded = x86::load_linux(vm.mem_, kernel, initrd, effective_cmdline(cfg), e820, rsdp);
  if (!loaded) {
    Error e = std::move(loaded).error();
    // The loader reports initrd placement problems as "initrd ...": name the initrd, not the kernel.
    if (e.context.starts_with("initrd"))
      return wrap(std::move(e), "--initrd {}", cfg.initrd.empty() ? "(the built-in demo initramfs)" : cfg.initrd);
    return wrap(std::move(e), "kernel {}{}", cfg.kernel,
                cfg.entry == KernelEntry::kPvh ? " (--entry pvh: the kernel needs CONFIG_PVH)" : "");
  }
  return loaded;
}

Result<void> VmBuilder::create_vcpus(Vm& vm, const x86::LoadedKernel* kernel) {
  const auto supported = TRY(vm.kvm_->supported_cpuid());
  x86::CpuidOptions cpuid_opts;
  // The LAPIC's TSC-deadline mode is the cheapest timer for the guest (one MSR write, handled in
  // the kernel); KVM leaves advertising it to us.
  cpuid_opts.tsc_deadline = vm.kvm_->check_extension(KVM_CAP_TSC_DEADLINE_TIMER) > 0;
  for (uint32_t i = 0; i < vm.cfg_.cpus; ++i) {
    auto vcpu = std::make_unique<KvmVcpu>(TRY(vm.vm_->create_vcpu(i)));
    // A restored vCPU gets everything (CPUID included) from its snapshot.
    if (kernel != nullptr) {
      RETURN_IF_ERROR(vcpu->set_cpuid(TRY(x86::build_cpuid(supported, i, vm.cfg_.cpus, cpuid_opts))));
      RETURN_IF_ERROR(x86::setup_cpu_msrs(*vcpu));
      RETURN_IF_ERROR(x86::setup_lapic(*vcpu));
      // Only the bootstrap processor starts at the kernel's entry; KVM holds the others until
      // the guest sends them INIT/SIPI.
      if (i == 0) RETURN_IF_ERROR(x86::setup_boot_cpu(*vcpu, vm.mem_, *kernel));
    }
    vm.vcpus_.push_back(std::move(vcpu));
  }
  return Ok();
}

Result<std::unique_ptr<Vm>> VmBuilder::build(const VmConfig& cfg) {
  if (cfg.cpus == 0) return make_error(ErrorCode::kInvalidArgument, "--cpus 0: a VM needs at least one vCPU");
  std::unique_ptr<Vm> vm(new Vm());
  vm->build_started_ = std::chrono::steady_clock::now();
  auto built = [&vm] {
    vm->build_us_ = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                                          vm->build_started_).count();
  };
  vm->cfg_ = cfg;
  RETURN_IF_ERROR(finalize_config(vm->cfg_));
  vm->loop_.emplace(TRY(EventLoop::create()));
  RETURN_IF_ERROR(create_kvm(*vm));
  if (vm->cfg_.restore) {
    // The kernel, the boot structures and the ACPI tables are in the snapshot's memory.
    RETURN_IF_ERROR(add_platform_devices(*vm));
    RETURN_IF_ERROR(create_vcpus(*vm, nullptr));
    RETURN_IF_ERROR(vm->restore_from_snapshot());
    built();
    return vm;
  }
  auto kernel = TRY(load_kernel(*vm));
  RETURN_IF_ERROR(add_platform_devices(*vm));
  RETURN_IF_ERROR(create_vcpus(*vm, &kernel));
  built();
  return vm;
}

Result<std::unique_ptr<Vm>> Vm::create(const VmConfig& cfg) { return VmBuilder::build(cfg); }

Result<void> Vm::preflight(const VmConfig& in) {
  VmConfig cfg = in;
  RETURN_IF_ERROR(finalize_config(cfg));
  if (cfg.cpus > x86::kMaxVcpus)
    return make_error(ErrorCode::kInvalidArgument, "--cpus {}: ringvm supports at most {} vCPUs", cfg.cpus,
                      x86::kMaxVcpus);
  const auto kernel = TRY(read_file(cfg.kernel, "kernel"));
  if (auto img = x86::LinuxImage::parse(kernel); !img) return wrap(std::move(img).error(), "kernel {}", cfg.kernel);
  uint64_t initrd_bytes = cfg.initrd_data.size();
  if (!cfg.initrd.empty()) {
    struct stat st{};
    if (::stat(cfg.initrd.c_str(), &st) != 0) return sys_error(fmt::format("--initrd {}", cfg.initrd));
    initrd_bytes = static_cast<uint64_t>(st.st_size);
  }
  if (initrd_bytes + kernel.size() >= cfg.memory_bytes)
    return make_error(ErrorCode::kOutOfRange,
                      "--initrd {}: {} bytes (with the kernel's {}) do not fit in {} MiB of guest memory; give more "
                      "--memory or a smaller initrd", cfg.initrd.empty() ? "(built in)" : cfg.initrd, initrd_bytes,
                      kernel.size(), cfg.memory_bytes >> 20);
  for (const DiskSpec& d : cfg.disks)
    if (::access(d.path.c_str(), F_OK) != 0) return sys_error(fmt::format("--disk path={}", d.path));
  for (const NetSpec& n : cfg.nets)
    if (n.fd >= 0 && ::fcntl(n.fd, F_GETFD) < 0)
      return make_error(ErrorCode::kInvalidArgument,
                        "--net fd={}: not an open file descriptor; pass the tap fd the launcher opened for ringvm",
                        n.fd);
  return Ok();
}

}  // namespace ringvm
