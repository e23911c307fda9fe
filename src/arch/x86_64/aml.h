// A small AML (ACPI Machine Language) encoder: the subset of ACPI 6.x, chapter 20, that ringvm's
// DSDT needs (names, integers, packages, devices, scopes, methods, the few statements the GED's
// _EVT runs, resource templates). Built in
// C++ rather than compiled from ASL because the DSDT depends on the VM (the 64-bit PCI window
// follows the RAM size) and the _PRT is a loop.
//
// Names and paths are ringvm's own compile-time constants ("\\_SB_.PCI0", "_HID"): each segment
// is 1..4 characters of [A-Z0-9_], padded with '_'.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace ringvm::x86::aml {

using Bytes = std::vector<uint8_t>;

// PkgLength for a body of `body_len` bytes (the encoding counts its own bytes).
Bytes pkg_length(size_t body_len);
Bytes name_string(std::string_view path);
Bytes integer(uint64_t v);
Bytes string(std::string_view s);
// A compressed EISA ID such as "PNP0A03", as a DWord integer.
Bytes eisa_id(std::string_view id);

Bytes name(std::string_view path, const Bytes& value);
Bytes package(const std::vector<Bytes>& elements);
Bytes buffer(const Bytes& data);
Bytes scope(std::string_view path, const std::vector<Bytes>& body);
Bytes device(std::string_view path, const std::vector<Bytes>& body);
Bytes method(std::string_view path, uint8_t num_args, bool serialized, const std::vector<Bytes>& body);
Bytes return_value(const Bytes& value);

// Statements and expressions (ACPI 6.4, sections 19.6 and 20.2.5).
Bytes arg(uint8_t n);  // Arg0..Arg6, a method's arguments
Bytes lequal(const Bytes& left, const Bytes& right);
Bytes if_then(const Bytes& predicate, const std::vector<Bytes>& body);
// Notify (object, value): `object` is a path such as "\\_SB_.VGEN".
Bytes notify(std::string_view object, const Bytes& value);

// Resource descriptors (ACPI 6.4, section 6.4) and the buffer that wraps them with an end tag.
Bytes resource_template(const std::vector<Bytes>& descriptors);
Bytes io(uint16_t min, uint16_t max, uint8_t alignment, uint8_t length);  // 16-bit decode
Bytes irq_no_flags(uint8_t irq);
Bytes word_bus_number(uint16_t min, uint16_t max);
Bytes word_io(uint16_t min, uint16_t max);
Bytes dword_memory(uint32_t min, uint32_t max);
Bytes qword_memory(uint64_t min, uint64_t max);
// Extended Interrupt descriptor (section 6.4.3.6) for one interrupt this device consumes: the GSI
// as ACPI numbers it, so it can name IOAPIC inputs above 15 (which the small IRQ descriptor cannot).
Bytes extended_interrupt(uint32_t gsi, bool edge, bool active_low, bool shared);

}  // namespace ringvm::x86::aml
