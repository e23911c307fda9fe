#include "arch/x86_64/acpi.h"

#include <algorithm>
#include <cstring>
#include <string_view>

#include "arch/x86_64/aml.h"
#include "arch/x86_64/cpuid.h"
#include "arch/x86_64/layout.h"

namespace ringvm::x86 {

namespace {

using Bytes = std::vector<uint8_t>;

// No Debian header declares the ACPI table layouts (ACPICA's actbl*.h are not shipped), so the
// few ringvm writes are declared here and checked against the spec's sizes.
#pragma pack(push, 1)
struct AcpiHeader {
  char signature[4];
  uint32_t length;
  uint8_t revision;
  uint8_t checksum;
  char oem_id[6];
  char oem_table_id[8];
  uint32_t oem_revision;
  char creator_id[4];
  uint32_t creator_revision;
};
static_assert(sizeof(AcpiHeader) == 36);

struct Rsdp {
  char signature[8];
  uint8_t checksum;  // over the first 20 bytes (ACPI 1.0 part)
  char oem_id[6];
  uint8_t revision;
  uint32_t rsdt_address;
  uint32_t length;
  uint64_t xsdt_address;
  uint8_t extended_checksum;  // over all 36 bytes
  uint8_t reserved[3];
};
static_assert(sizeof(Rsdp) == 36);

struct Gas {  // Generic Address Structure
  uint8_t space_id;
  uint8_t bit_width;
  uint8_t bit_offset;
  uint8_t access_size;
  uint64_t address;
};
static_assert(sizeof(Gas) == 12);

struct Fadt {
  AcpiHeader header;
  uint32_t firmware_ctrl;
  uint32_t dsdt;
  uint8_t reserved0;
  uint8_t preferred_pm_profile;
  uint16_t sci_int;
  uint32_t smi_cmd;
  uint8_t acpi_enable, acpi_disable, s4bios_req, pstate_cnt;
  uint32_t pm1a_evt_blk, pm1b_evt_blk, pm1a_cnt_blk, pm1b_cnt_blk, pm2_cnt_blk, pm_tmr_blk, gpe0_blk,
      gpe1_blk;
  uint8_t pm1_evt_len, pm1_cnt_len, pm2_cnt_len, pm_tmr_len, gpe0_blk_len, gpe1_blk_len, gpe1_base, cst_cnt;
  uint16_t p_lvl2_lat, p_lvl3_lat, flush_size, flush_stride;
  uint8_t duty_offset, duty_width, day_alrm, mon_alrm, century;
  uint16_t iapc_boot_arch;
  uint8_t reserved1;
  uint32_t flags;
  Gas reset_reg;
  uint8_t reset_value;
  uint16_t arm_boot_arch;
  uint8_t minor_version;
  uint64_t x_firmware_ctrl;
  uint64_t x_dsdt;
  Gas x_pm1a_evt_blk, x_pm1b_evt_blk, x_pm1a_cnt_blk, x_pm1b_cnt_blk, x_pm2_cnt_blk, x_pm_tmr_blk, x_gpe0_blk,
      x_gpe1_blk, sleep_control_reg, sleep_status_reg;
  uint64_t hypervisor_vendor_id;
};
static_assert(sizeof(Fadt) == 276);
static_assert(offsetof(Fadt, iapc_boot_arch) == 109);
static_assert(offsetof(Fadt, x_dsdt) == 140);

struct Facs {
  char signature[4];
  uint32_t length;
  uint32_t hardware_signature;
  uint32_t firmware_waking_vector;
  uint32_t global_lock;
  uint32_t flags;
  uint64_t x_firmware_waking_vector;
  uint8_t version;
  uint8_t reserved[3];
  uint32_t ospm_flags;
  uint8_t reserved2[24];
};
static_assert(sizeof(Facs) == 64);

struct MadtLocalApic {  // type 0
  uint8_t type, length, processor_uid, apic_id;
  uint32_t flags;
};
struct MadtIoApic {  // type 1
  uint8_t type, length, ioapic_id, reserved;
  uint32_t address, gsi_base;
};
struct MadtIntSourceOverride {  // type 2
  uint8_t type, length, bus, source;
  uint32_t gsi;
  uint16_t flags;
};
struct MadtLocalApicNmi {  // type 4
  uint8_t type, length, processor_uid;
  uint16_t flags;
  uint8_t lint;
};
static_assert(sizeof(MadtLocalApic) == 8 && sizeof(MadtIoApic) == 12 && sizeof(MadtIntSourceOverride) == 10 &&
              sizeof(MadtLocalApicNmi) == 6);

struct McfgAllocation {
  uint64_t base;
  uint16_t segment;
  uint8_t start_bus, end_bus;
  uint32_t reserved;
};
static_assert(sizeof(McfgAllocation) == 16);
#pragma pack(pop)

constexpr char kOemId[6] = {'R', 'I', 'N', 'G', 'V', 'M'};
constexpr uint8_t kGasSystemIo = 1;
constexpr uint32_t kFadtWbinvd = 1u << 0;     // WBINVD works
constexpr uint32_t kFadtProcC1 = 1u << 2;     // C1 (HLT) on all processors
constexpr uint32_t kFadtSlpButton = 1u << 5;  // no fixed-feature sleep button
constexpr uint16_t kBootArchLegacyDevices = 1u << 0;
constexpr uint16_t kBootArch8042 = 1u << 1;  // the kernel then probes i8042 without PNP
constexpr uint16_t kBootArchNoVga = 1u << 2;
constexpr uint32_t kMadtPcatCompat = 1;  // a dual 8259 is present (the kernel masks it)
constexpr uint32_t kMadtLapicEnabled = 1;
constexpr uint16_t kMpsActiveHighLevel = 0x000d;  // polarity 01 (high), trigger 11 (level)
constexpr uint64_t kTableAlign = 64;              // FACS needs 64; the rest get it for free
constexpr uint8_t kDsdtRevision = 2;              // 2: 64-bit AML integers (the 64-bit window)

// Appends the bytes of `v`. Byte by byte: GCC 12 misreports bounds on vector copies here.
template <typename T>
void append_obj(Bytes& b, const T& v) {
  // SAFETY: T is a packed POD declared above, read as its sizeof(T) bytes.
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  for (size_t i = 0; i < sizeof(T); ++i) b.push_back(p[i]);
}

// A table with a standard header over `body`, checksummed.
Bytes make_table(const char (&sig)[5], uint8_t revision, const Bytes& body) {
  AcpiHeader h{};
  std::memcpy(h.signature, sig, 4);
  h.length = static_cast<uint32_t>(sizeof(AcpiHeader) + body.size());
  h.revision = revision;
  std::memcpy(h.oem_id, kOemId, sizeof(kOemId));
  std::memcpy(h.oem_table_id, "RINGVM", 6);
  std::memcpy(h.oem_table_id + 6, sig, 2);
  h.oem_revision = 1;
  std::memcpy(h.creator_id, "RVMM", 4);
  h.creator_revision = 1;
  Bytes t;
  append_obj(t, h);
  for (uint8_t x : body) t.push_back(x);
  fix_checksum(t);
  return t;
}

Gas io_gas(uint16_t port, uint8_t len) {
  return Gas{kGasSystemIo, static_cast<uint8_t>(len * 8), 0, 0, port};
}

Bytes make_fadt(const AcpiConfig& cfg, uint64_t facs, uint64_t dsdt) {
  Fadt f{};
  f.firmware_ctrl = static_cast<uint32_t>(facs);
  f.dsdt = static_cast<uint32_t>(dsdt);
  f.x_dsdt = dsdt;
  f.sci_int = static_cast<uint16_t>(kAcpiSciIrq);
  f.smi_cmd = 0;  // no SMM: the platform is always in ACPI mode
  f.pm1a_evt_blk = kAcpiPm1aEvtBlk;
  f.pm1_evt_len = kAcpiPm1EvtLen;
  f.pm1a_cnt_blk = kAcpiPm1aCntBlk;
  f.pm1_cnt_len = kAcpiPm1CntLen;
  f.x_pm1a_evt_blk = io_gas(kAcpiPm1aEvtBlk, kAcpiPm1EvtLen);
  f.x_pm1a_cnt_blk = io_gas(kAcpiPm1aCntBlk, kAcpiPm1CntLen);
  f.flags = kFadtWbinvd | kFadtProcC1 | kFadtSlpButton;  // no RESET_REG_SUP: reboot goes through the i8042
  if (cfg.pm_timer) {
    f.pm_tmr_blk = kAcpiPmTmrBlk;
    f.pm_tmr_len = kAcpiPmTmrLen;
    f.x_pm_tmr_blk = io_gas(kAcpiPmTmrBlk, kAcpiPmTmrLen);
    // TMR_VAL_EXT stays clear: AcpiPmDevice's timer is 24 bits wide, and ACPICA computes
    // durations across a wrap from this flag.
  }
  f.p_lvl2_lat = 101;   // > 100: C2 not supported
  f.p_lvl3_lat = 1001;  // > 1000: C3 not supported
  f.iapc_boot_arch = kBootArchLegacyDevices | kBootArch8042 | kBootArchNoVga;
  std::memcpy(&f.hypervisor_vendor_id, "RINGVM\0\0", 8);
  Bytes body(sizeof(Fadt) - sizeof(AcpiHeader));
  // SAFETY: copies the bytes after the header of our own packed struct.
  std::memcpy(body.data(), reinterpret_cast<const uint8_t*>(&f) + sizeof(AcpiHeader), body.size());
  return make_table("FACP", 6, body);
}

Bytes make_madt(uint32_t num_cpus) {
  Bytes body;
  append_obj<uint32_t>(body, static_cast<uint32_t>(kLapicAddr));
  append_obj<uint32_t>(body, kMadtPcatCompat);
  for (uint32_t i = 0; i < num_cpus; ++i)
    append_obj(body,
               MadtLocalApic{0, 8, static_cast<uint8_t>(i), static_cast<uint8_t>(i), kMadtLapicEnabled});
  append_obj(body, MadtIoApic{1, 12, kIoapicId, 0, static_cast<uint32_t>(kIoapicAddr), 0});
  append_obj(body, MadtIntSourceOverride{2, 10, 0, 0, 2, 0});  // the PIT's IRQ0 is IOAPIC pin 2
  append_obj(body, MadtIntSourceOverride{2, 10, 0, static_cast<uint8_t>(kAcpiSciIrq), kAcpiSciIrq,
                                         kMpsActiveHighLevel});
  append_obj(body, MadtLocalApicNmi{4, 6, 0xff, 0, 1});  // LINT1 is NMI on every processor
  return make_table("APIC", 5, body);
}

Bytes make_mcfg() {
  Bytes body(8, 0);
  append_obj(body, McfgAllocation{kPciEcamBase, 0, 0, kPciEcamLastBus, 0});
  return make_table("MCFG", 1, body);
}

Bytes make_facs() {
  Facs f{};
  std::memcpy(f.signature, "FACS", 4);
  f.length = sizeof(Facs);
  f.version = 2;
  Bytes b;
  append_obj(b, f);
  return b;
}

// Legacy device with a fixed I/O range and one ISA IRQ.
Bytes legacy_device(std::string_view name, std::string_view hid, uint64_t uid,
                    const std::vector<Bytes>& res) {
  return aml::device(name, {aml::name("_HID", aml::eisa_id(hid)), aml::name("_UID", aml::integer(uid)),
                            aml::name("_CRS", aml::resource_template(res))});
}

// \_SB.VGEN: the VMGenID device. ADDR is a method, as the spec has it (Linux evaluates either).
Bytes vmgenid_device() {
  using namespace aml;
  return device("VGEN", {name("_HID", string(kVmGenIdHid)), name("_CID", string(kVmGenIdCid)),
                         name("_DDN", string("VM_Gen_Counter")),
                         method("ADDR", 0, false,
                                {return_value(package({integer(kVmGenIdAddr & 0xffff'ffff),
                                                       integer(kVmGenIdAddr >> 32)}))})});
}

// \_SB.GED: the Generic Event Device whose interrupt carries "the generation changed". Linux's
// evged runs _EVT with the GSI as Arg0 (there is no _E0F, which it would try first).
Bytes generic_event_device() {
  using namespace aml;
  return device("GED", {name("_HID", string("ACPI0013")), name("_UID", integer(0)),
                        name("_CRS", resource_template({extended_interrupt(kGedGsi, /*edge=*/true,
                                                                           /*active_low=*/false,
                                                                           /*shared=*/false)})),
                        method("_EVT", 1, true,
                               {if_then(lequal(arg(0), integer(kGedGsi)),
                                        {notify("\\_SB.VGEN", integer(0x80))})})});
}

}  // namespace

void fix_checksum(Bytes& table, size_t checksum_offset) {
  table[checksum_offset] = 0;
  uint8_t sum = 0;
  for (uint8_t b : table) sum = static_cast<uint8_t>(sum + b);
  table[checksum_offset] = static_cast<uint8_t>(-sum);
}

Bytes build_dsdt_aml(uint64_t ram_end, const AcpiConfig& cfg) {
  using namespace aml;
  std::vector<Bytes> prt;
  for (uint32_t slot = 1; slot < 32; ++slot)
    for (uint32_t pin = 0; pin < 4; ++pin)
      prt.push_back(package({integer((uint64_t{slot} << 16) | 0xffff), integer(pin), integer(0),
                             integer(pci_intx_gsi(slot, pin))}));
  const uint64_t mmio64 = pci_mmio64_base(ram_end);
  const Bytes pci_crs = resource_template({
      word_bus_number(0, kPciEcamLastBus),
      io(kPciConfigAddressPort, kPciConfigAddressPort, 1, kPciConfigPortSize),
      word_io(0x0000, kPciConfigAddressPort - 1),
      word_io(kPciConfigAddressPort + kPciConfigPortSize, 0xffff),
      dword_memory(static_cast<uint32_t>(kPciMmio32Base),
                   static_cast<uint32_t>(kPciMmio32Base + kPciMmio32Size - 1)),
      qword_memory(mmio64, mmio64 + kPciMmio64Size - 1),
  });
  const Bytes pci0 =
      device("PCI0", {name("_HID", eisa_id("PNP0A03")), name("_UID", integer(0)), name("_SEG", integer(0)),
                      name("_BBN", integer(0)), name("_CRS", pci_crs), name("_PRT", package(prt))});
  const Bytes com1 = legacy_device("COM1", "PNP0501", 1,
                                   {io(kCom1Port, kCom1Port, 1, kSerialPortSize), irq_no_flags(kCom1Irq)});
  const Bytes kbd = legacy_device("PS2K", "PNP0303", 0,
                                  {io(kI8042DataPort, kI8042DataPort, 1, 1),
                                   io(kI8042CommandPort, kI8042CommandPort, 1, 1), irq_no_flags(kI8042Irq)});
  const Bytes rtc =
      legacy_device("RTC", "PNP0B00", 0, {io(kRtcPort, kRtcPort, 1, kRtcPortSize), irq_no_flags(kRtcIrq)});
  std::vector<Bytes> sb_devices = {pci0, com1, kbd, rtc};
  if (cfg.vmgenid) {
    sb_devices.push_back(vmgenid_device());
    sb_devices.push_back(generic_event_device());
  }
  const Bytes sb = scope("\\_SB", sb_devices);
  const Bytes s5 = name("\\_S5", package({integer(kSlpTypS5), integer(kSlpTypS5), integer(0), integer(0)}));
  Bytes out(sb.size() + s5.size());
  std::copy(s5.begin(), s5.end(), std::copy(sb.begin(), sb.end(), out.begin()));
  return out;
}

Result<uint64_t> write_acpi_tables(const GuestMemory& mem, const AcpiConfig& cfg) {
  if (cfg.num_cpus == 0 || cfg.num_cpus > kMaxVcpus)
    return make_error(ErrorCode::kInvalidArgument, "ACPI: {} vCPUs; the MADT describes 1 to {}", cfg.num_cpus,
                      kMaxVcpus);
  if (mem.regions().empty()) return make_error(ErrorCode::kInvalidArgument, "ACPI: guest memory is empty");
  const uint64_t ram_end = mem.regions().back().end();

  uint64_t next = kRsdpAddr + sizeof(Rsdp);
  std::vector<std::pair<uint64_t, Bytes>> blobs;
  auto place = [&](Bytes b) {
    next = (next + kTableAlign - 1) / kTableAlign * kTableAlign;
    const uint64_t at = next;
    next += b.size();
    blobs.emplace_back(at, std::move(b));
    return at;
  };
  const uint64_t dsdt = place(make_table("DSDT", kDsdtRevision, build_dsdt_aml(ram_end, cfg)));
  const uint64_t facs = place(make_facs());
  std::vector<uint64_t> entries = {place(make_fadt(cfg, facs, dsdt)), place(make_madt(cfg.num_cpus))};
  if (cfg.pci_ecam) entries.push_back(place(make_mcfg()));
  Bytes xsdt_body, rsdt_body;
  for (uint64_t e : entries) {
    append_obj<uint64_t>(xsdt_body, e);
    append_obj<uint32_t>(rsdt_body, static_cast<uint32_t>(e));
  }
  const uint64_t xsdt = place(make_table("XSDT", 1, xsdt_body));
  const uint64_t rsdt = place(make_table("RSDT", 1, rsdt_body));
  if (next > kAcpiTablesEnd)
    return make_error(ErrorCode::kResourceExhausted, "ACPI: tables of {} bytes overflow the area at {:#x}",
                      next - kAcpiAreaStart, kAcpiAreaStart);

  Rsdp r{};
  std::memcpy(r.signature, "RSD PTR ", 8);
  std::memcpy(r.oem_id, kOemId, sizeof(kOemId));
  r.revision = 2;
  r.rsdt_address = static_cast<uint32_t>(rsdt);
  r.length = sizeof(Rsdp);
  r.xsdt_address = xsdt;
  Bytes rsdp;
  append_obj(rsdp, r);
  Bytes first20(rsdp.begin(), rsdp.begin() + 20);
  fix_checksum(first20, offsetof(Rsdp, checksum));
  rsdp[offsetof(Rsdp, checksum)] = first20[offsetof(Rsdp, checksum)];
  fix_checksum(rsdp, offsetof(Rsdp, extended_checksum));
  blobs.emplace_back(kRsdpAddr, std::move(rsdp));

  // Up to the VMGenID page only: the device owns what is there.
  RETURN_IF_ERROR(mem.fill(kAcpiAreaStart, 0, kAcpiTablesEnd - kAcpiAreaStart));
  for (const auto& [at, b] : blobs) RETURN_IF_ERROR(mem.write(at, b));
  return kRsdpAddr;
}

}  // namespace ringvm::x86
