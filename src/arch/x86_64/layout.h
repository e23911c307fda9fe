// The fixed x86-64 platform layout: the single source of truth for guest-physical addresses,
// legacy I/O ports and IRQ numbers. The VM builder, the devices, the PCI bus and the ACPI
// tables all include this file, so a device is wired where the firmware tables say it is.
//
// Guest-physical map (see docs/boot.md for the picture):
//   [0, 0x9FC00)                 RAM (boot structures live in its first pages)
//   [0x9FC00, 0x100000)          reserved: EBDA, VGA hole, ROM area (ACPI tables at 0xE0000,
//                                the VMGenID page at 0xEF000)
//   [0x100000, low_ram_end)      RAM; low_ram_end = min(ram, kMmioHoleStart)
//   [0xC000'0000, 0xE000'0000)   PCI 32-bit MMIO window (BARs)
//   [0xE000'0000, 0xF000'0000)   PCI ECAM (MMCONFIG), 256 buses, reserved in e820
//   [0xFEB0'0000, +0x1000 * 8)   virtio-mmio slots
//   [0xFEC0'0000, +0x1000)       IOAPIC
//   [0xFEE0'0000, +0x1000)       LAPIC
//   [4 GiB, 4 GiB + high_ram)    RAM above the hole
//   [pci_mmio64_base(..), +64G)  PCI 64-bit MMIO window, 1 GiB aligned above RAM
#pragma once

#include <array>
#include <cstdint>

namespace ringvm::x86 {

inline constexpr uint64_t kKiB = 1024;
inline constexpr uint64_t kMiB = 1024 * kKiB;
inline constexpr uint64_t kGiB = 1024 * kMiB;

// ---- RAM and holes -------------------------------------------------------------------------
inline constexpr uint64_t kMmioHoleStart = 0xC000'0000;  // RAM below this, the rest from 4 GiB
inline constexpr uint64_t kHighRamStart = 4 * kGiB;
inline constexpr uint64_t kEbdaStart = 0x9'FC00;         // reserved from here to 1 MiB
inline constexpr uint64_t kHighMemoryStart = 0x10'0000;  // 1 MiB: the first RAM above the BIOS area

// ---- PCI -----------------------------------------------------------------------------------
inline constexpr uint64_t kPciMmio32Base = 0xC000'0000;
inline constexpr uint64_t kPciMmio32Size = 0x2000'0000;  // 512 MiB, ends where ECAM begins
inline constexpr uint64_t kPciEcamBase = 0xE000'0000;
inline constexpr uint64_t kPciEcamSize = 0x1000'0000;  // 256 buses * 32 devices * 8 functions * 4 KiB
inline constexpr uint8_t kPciEcamLastBus = 255;
inline constexpr uint64_t kPciMmio64Size = 64 * kGiB;
inline constexpr uint64_t kPciMmio64Align = 1 * kGiB;

// The 64-bit PCI window starts at the first 1 GiB boundary at or above the end of RAM (and never
// below 4 GiB). `ram_end` is the exclusive end of the highest RAM region.
constexpr uint64_t pci_mmio64_base(uint64_t ram_end) {
  const uint64_t floor = ram_end < kHighRamStart ? kHighRamStart : ram_end;
  return (floor + kPciMmio64Align - 1) & ~(kPciMmio64Align - 1);
}

// Legacy INTx routing, shared by the ACPI _PRT and the PCI bus: device `slot` (0..31) pin
// `pin` (0 = INTA .. 3 = INTD) raises IOAPIC input 16 + (slot + pin) % 8. Slot 0 is the host
// bridge, which has no interrupt.
inline constexpr uint32_t kPciIntxGsiBase = 16;
inline constexpr uint32_t kPciIntxGsiCount = 8;
constexpr uint32_t pci_intx_gsi(uint32_t slot, uint32_t pin) {
  return kPciIntxGsiBase + (slot + pin) % kPciIntxGsiCount;
}

// ---- Platform MMIO -------------------------------------------------------------------------
inline constexpr uint64_t kVirtioMmioBase = 0xFEB0'0000;
inline constexpr uint64_t kVirtioMmioStride = 0x1000;
// IRQs for virtio-mmio slot i (edge, ISA range, none used by a legacy device below).
inline constexpr std::array<uint32_t, 5> kVirtioMmioIrqs = {5, 6, 7, 10, 11};
constexpr uint64_t virtio_mmio_addr(uint32_t slot) { return kVirtioMmioBase + kVirtioMmioStride * slot; }

inline constexpr uint64_t kIoapicAddr = 0xFEC0'0000;
inline constexpr uint64_t kIoapicSize = 0x1000;
inline constexpr uint8_t kIoapicId = 0;
inline constexpr uint32_t kIoapicPins = 24;  // KVM's in-kernel IOAPIC
inline constexpr uint64_t kLapicAddr = 0xFEE0'0000;
inline constexpr uint64_t kLapicSize = 0x1000;

// ---- Legacy I/O ports and ISA IRQs ---------------------------------------------------------
inline constexpr uint16_t kCom1Port = 0x3F8;
inline constexpr uint32_t kCom1Irq = 4;
inline constexpr uint16_t kCom2Port = 0x2F8;
inline constexpr uint32_t kCom2Irq = 3;
inline constexpr uint16_t kSerialPortSize = 8;
inline constexpr uint16_t kI8042DataPort = 0x60;
inline constexpr uint16_t kI8042CommandPort = 0x64;
inline constexpr uint32_t kI8042Irq = 1;
inline constexpr uint16_t kRtcPort = 0x70;  // index; data at 0x71
inline constexpr uint16_t kRtcPortSize = 2;
inline constexpr uint32_t kRtcIrq = 8;
inline constexpr uint16_t kPciConfigAddressPort = 0xCF8;
inline constexpr uint16_t kPciConfigDataPort = 0xCFC;
inline constexpr uint16_t kPciConfigPortSize = 8;  // 0xCF8..0xCFF
// The PCI I/O window: I/O BARs (virtio-pci doorbells) are assigned here, above every legacy port;
// the root bridge's _CRS offers all ports but the config ones, so Linux keeps the assignment.
inline constexpr uint16_t kPciIoBase = 0xC000;
inline constexpr uint32_t kPciIoSize = 0x4000;  // to 0xFFFF

// ACPI fixed hardware (FADT): PM1a event block (status + enable), control block, PM timer.
inline constexpr uint16_t kAcpiPm1aEvtBlk = 0x600;
inline constexpr uint8_t kAcpiPm1EvtLen = 4;
inline constexpr uint16_t kAcpiPm1aCntBlk = 0x604;
inline constexpr uint8_t kAcpiPm1CntLen = 2;
inline constexpr uint16_t kAcpiPmTmrBlk = 0x608;  // optional; the FADT says 0 when no device is there
inline constexpr uint8_t kAcpiPmTmrLen = 4;
inline constexpr uint32_t kAcpiSciIrq = 9;
// SLP_TYP the guest writes to PM1a_CNT for S5 (soft off); \_S5 in the DSDT carries it.
inline constexpr uint8_t kSlpTypS5 = 5;
inline constexpr uint16_t kAcpiPm1CntSlpEn = 1u << 13;  // SLP_EN bit of PM1_CNT
inline constexpr uint16_t kAcpiPm1CntSlpTypShift = 10;  // SLP_TYP is bits 12:10 of PM1_CNT

// ---- Boot structures (all below the EBDA, in RAM that e820 reports as usable) ---------------
inline constexpr uint64_t kBootGdtAddr = 0x500;        // 5 entries (null, code32, code64, data, tss)
inline constexpr uint64_t kBootIdtAddr = 0x540;        // empty IDT (limit 0)
inline constexpr uint64_t kPvhStartInfoAddr = 0x6000;  // struct hvm_start_info
inline constexpr uint64_t kPvhModlistAddr = 0x6040;    // one hvm_modlist_entry (the initrd)
inline constexpr uint64_t kPvhMemmapAddr = 0x6080;     // hvm_memmap_table_entry[], up to 0x7000
inline constexpr uint64_t kZeroPageAddr = 0x7000;      // struct boot_params
inline constexpr uint64_t kBootStackTop = 0x8FF0;      // initial rsp; the kernel sets its own early
inline constexpr uint64_t kPml4Addr = 0x9000;
inline constexpr uint64_t kPdptAddr = 0xA000;
inline constexpr uint64_t kPdAddr = 0xB000;  // 4 pages: 4 GiB of 2 MiB pages, to 0xEFFF
inline constexpr uint64_t kCmdlineAddr = 0x2'0000;
inline constexpr uint64_t kCmdlineMaxSize = 0x1'0000;  // our own cap, before the kernel's cmdline_size

// ACPI tables: the RSDP at the start of the BIOS scan area, the other tables after it.
inline constexpr uint64_t kAcpiAreaStart = 0xE'0000;
inline constexpr uint64_t kAcpiAreaEnd = 0x10'0000;  // exclusive
inline constexpr uint64_t kRsdpAddr = kAcpiAreaStart;

// ---- VMGenID (devices/legacy/vmgenid.h) -----------------------------------------------------
// The 16-byte generation ID: the last page of the 0xE0000 segment, inside the ACPI area that
// e820 reports reserved ([kEbdaStart, 1 MiB)), above where the tables may reach (kAcpiTablesEnd).
// Not in 0xF0000-0xFFFFF, where the kernel scans for 4-byte signatures (_MP_, _SM_) that random
// ID bytes could match; the RSDP scan that also covers this page needs "RSD PTR " and checksums.
inline constexpr uint64_t kVmGenIdAddr = 0xE'F000;
inline constexpr uint64_t kAcpiTablesEnd = kVmGenIdAddr;  // exclusive
// The ACPI Generic Event Device's interrupt, which tells the guest a new ID is there: ISA IRQ
// 15 (the secondary IDE channel, which no ringvm device uses), edge-triggered and active high
// as ISA interrupts are by default, so the MADT needs no override for it.
inline constexpr uint32_t kGedGsi = 15;
static_assert(kGedGsi < kPciIntxGsiBase && kGedGsi != kCom1Irq && kGedGsi != kCom2Irq && kGedGsi != kI8042Irq &&
              kGedGsi != kRtcIrq && kGedGsi != kAcpiSciIrq && kGedGsi != 0 && kGedGsi != 2);
static_assert([] {
  for (uint32_t irq : kVirtioMmioIrqs)
    if (irq == kGedGsi) return false;
  return true;
}());
static_assert(kVmGenIdAddr > kRsdpAddr && kVmGenIdAddr + 16 <= 0xF'0000);

}  // namespace ringvm::x86
