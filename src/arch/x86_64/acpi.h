// The guest's ACPI tables: RSDP, XSDT and RSDT, FADT (full, not hardware-reduced, with the PM1
// blocks of layout.h), FACS, MADT (one LAPIC per vCPU, the IOAPIC, IRQ0 and SCI overrides),
// optional MCFG, and a DSDT with \_S5, the PCI root bridge (_CRS windows and _PRT INTx routing)
// and the legacy COM1, i8042 and RTC devices. All live in [kAcpiAreaStart, kAcpiAreaEnd), which
// e820 reserves, with the RSDP first so the kernel also finds it by scanning.
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
};

// Writes the tables; returns the RSDP's guest-physical address (for boot_params.acpi_rsdp_addr
// or hvm_start_info.rsdp_paddr).
Result<uint64_t> write_acpi_tables(const GuestMemory& mem, const AcpiConfig& cfg);

// The DSDT's AML body (without the table header), for tests. `ram_end` places the 64-bit window.
std::vector<uint8_t> build_dsdt_aml(uint64_t ram_end);

// Sets byte 9 of a table with a standard header so its bytes sum to 0 (mod 256).
void fix_checksum(std::vector<uint8_t>& table, size_t checksum_offset = 9);

}  // namespace ringvm::x86
