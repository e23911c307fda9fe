// The guest's ACPI tables: RSDP, XSDT and RSDT, FADT (full, not hardware-reduced, with the PM1
// blocks of layout.h), FACS, MADT (one LAPIC per vCPU, the IOAPIC, IRQ0 and SCI overrides),
// optional MCFG, and a DSDT with \_S5, the PCI root bridge (_CRS windows and _PRT INTx routing)
// and the legacy COM1, i8042 and RTC devices, and (AcpiConfig::vmgenid) the VMGenID device with
// the Generic Event Device that notifies it. All live in [kAcpiAreaStart, kAcpiTablesEnd), which
// e820 reserves, with the RSDP first so the kernel also finds it by scanning.
//
// VMGenID, as Linux's drivers/virt/vmgenid.c consumes it: \_SB.VGEN has _CID "VM_GEN_COUNTER"
// and a method ADDR returning Package {low 32 bits, high 32 bits} of the guest-physical address
// of the 16-byte ID (kVmGenIdAddr). \_SB.GED (_HID "ACPI0013", Linux's drivers/acpi/evged.c)
// consumes GSI kGedGsi, edge-triggered and active high; its _EVT runs Notify (\_SB.VGEN, 0x80)
// when that GSI fires, and the vmgenid driver then reads the new ID and reseeds the kernel's RNG.
#pragma once

#include <cstdint>
#include <vector>

#include "base/result.h"
#include "memory/guest_memory.h"

namespace ringvm::x86 {

struct AcpiConfig {
  uint32_t num_cpus = 1;
  bool pci_ecam = false;  // an MCFG for the ECAM at kPciEcamBase (only when the PCI bus serves it)
  bool pm_timer = false;  // the FADT names the PM timer at kAcpiPmTmrBlk (only when a device is there)
  // \_SB.VGEN and \_SB.GED in the DSDT (a VmGenId device at kVmGenIdAddr pulsing kGedGsi).
  bool vmgenid = true;
};

// The VMGenID device's ACPI identity.
inline constexpr char kVmGenIdHid[] = "RVMM0001";  // ringvm's own: 4 letters and 4 hex digits
inline constexpr char kVmGenIdCid[] = "VM_GEN_COUNTER";

// Writes the tables; returns the RSDP's guest-physical address (for boot_params.acpi_rsdp_addr
// or hvm_start_info.rsdp_paddr).
Result<uint64_t> write_acpi_tables(const GuestMemory& mem, const AcpiConfig& cfg);

// The DSDT's AML body (without the table header), for tests. `ram_end` places the 64-bit window.
std::vector<uint8_t> build_dsdt_aml(uint64_t ram_end, const AcpiConfig& cfg = {});

// Sets byte 9 of a table with a standard header so its bytes sum to 0 (mod 256).
void fix_checksum(std::vector<uint8_t>& table, size_t checksum_offset = 9);

}  // namespace ringvm::x86
