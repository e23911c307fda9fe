#include "arch/x86_64/acpi.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>

#include "arch/x86_64/aml.h"
#include "arch/x86_64/layout.h"
#include "devices/legacy/vmgenid.h"

namespace ringvm::x86 {
namespace {

using Bytes = std::vector<uint8_t>;

uint32_t le32(const Bytes& b, size_t off) {
  return b[off] | (b[off + 1] << 8) | (b[off + 2] << 16) | (static_cast<uint32_t>(b[off + 3]) << 24);
}
uint64_t le64(const Bytes& b, size_t off) { return le32(b, off) | (uint64_t{le32(b, off + 4)} << 32); }

uint8_t sum(const Bytes& b) {
  uint8_t s = 0;
  for (uint8_t x : b) s = static_cast<uint8_t>(s + x);
  return s;
}

Bytes read(const GuestMemory& mem, uint64_t gpa, uint64_t len) {
  Bytes b(len);
  EXPECT_TRUE(mem.read(gpa, b).ok()) << std::hex << gpa;
  return b;
}

// A whole table at `gpa`, by its header's length.
Bytes table(const GuestMemory& mem, uint64_t gpa) { return read(mem, gpa, le32(read(mem, gpa, 8), 4)); }

std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary | std::ios::ate);
  std::string s(static_cast<size_t>(std::max<std::streamoff>(f.tellg(), 0)), '\0');
  f.seekg(0);
  f.read(s.data(), static_cast<std::streamsize>(s.size()));
  return s;
}

bool contains(const Bytes& hay, const Bytes& needle) {
  return std::search(hay.begin(), hay.end(), needle.begin(), needle.end()) != hay.end();
}

struct Tables {
  Bytes rsdp;
  std::map<std::string, Bytes> by_sig;
};

Tables load(const GuestMemory& mem, uint64_t rsdp_gpa) {
  Tables t;
  t.rsdp = read(mem, rsdp_gpa, 36);
  const Bytes xsdt = table(mem, le64(t.rsdp, 24));
  t.by_sig["XSDT"] = xsdt;
  for (size_t off = 36; off + 8 <= xsdt.size(); off += 8) {
    Bytes tb = table(mem, le64(xsdt, off));
    t.by_sig[std::string(tb.begin(), tb.begin() + 4)] = tb;
  }
  t.by_sig["RSDT"] = table(mem, le32(t.rsdp, 16));
  const Bytes& fadt = t.by_sig["FACP"];
  t.by_sig["DSDT"] = table(mem, le64(fadt, 140));
  t.by_sig["FACS"] = read(mem, le32(fadt, 36), 64);
  return t;
}

class AcpiTest : public ::testing::Test {
 protected:
  GuestMemory mem_ = GuestMemory::create_x86(256 * kMiB).value();
};

TEST_F(AcpiTest, RsdpIsFoundByScanAndChecksummed) {
  auto rsdp = write_acpi_tables(mem_, {.num_cpus = 2});
  ASSERT_TRUE(rsdp.ok()) << rsdp.error().message();
  EXPECT_EQ(*rsdp, kRsdpAddr);
  EXPECT_GE(*rsdp, 0xE0000u);
  EXPECT_EQ(*rsdp % 16, 0u) << "the kernel scans on 16-byte boundaries";
  const Bytes r = read(mem_, *rsdp, 36);
  EXPECT_EQ(std::string(r.begin(), r.begin() + 8), "RSD PTR ");
  EXPECT_EQ(r[15], 2) << "revision";
  EXPECT_EQ(sum(Bytes(r.begin(), r.begin() + 20)), 0);
  EXPECT_EQ(sum(r), 0);
  EXPECT_EQ(le32(r, 20), 36u);
}

TEST_F(AcpiTest, EveryTableSumsToZeroAndFitsTheArea) {
  const uint64_t rsdp = write_acpi_tables(mem_, {.num_cpus = 4, .pci_ecam = true}).value();
  const Tables t = load(mem_, rsdp);
  for (const char* sig : {"XSDT", "RSDT", "FACP", "APIC", "MCFG", "DSDT"}) {
    ASSERT_TRUE(t.by_sig.count(sig)) << sig;
    EXPECT_EQ(sum(t.by_sig.at(sig)), 0) << sig;
  }
  EXPECT_EQ(le32(t.by_sig.at("XSDT"), 4), 36u + 3 * 8);
  EXPECT_EQ(le32(t.by_sig.at("RSDT"), 4), 36u + 3 * 4);
  const Bytes& facs = t.by_sig.at("FACS");
  EXPECT_EQ(std::string(facs.begin(), facs.begin() + 4), "FACS");
  EXPECT_EQ(le32(t.by_sig.at("FACP"), 36) % 64, 0u) << "FACS is 64-byte aligned";
  EXPECT_EQ(t.by_sig.at("DSDT")[8], 2) << "DSDT revision 2 for 64-bit integers";
  const Bytes& mcfg = t.by_sig.at("MCFG");
  EXPECT_EQ(le64(mcfg, 44), kPciEcamBase);
  EXPECT_EQ(mcfg[55], 255);
}

TEST_F(AcpiTest, NoMcfgUnlessAsked) {
  const Tables t = load(mem_, write_acpi_tables(mem_, {.num_cpus = 1}).value());
  EXPECT_FALSE(t.by_sig.count("MCFG"));
  EXPECT_EQ(le32(t.by_sig.at("XSDT"), 4), 36u + 2 * 8);
}

TEST_F(AcpiTest, FadtDescribesTheLegacyPmBlocks) {
  const Tables t = load(mem_, write_acpi_tables(mem_, {.num_cpus = 1}).value());
  const Bytes& f = t.by_sig.at("FACP");
  ASSERT_EQ(f.size(), 276u);
  EXPECT_EQ(f[8], 6) << "revision";
  EXPECT_EQ(f[46] | (f[47] << 8), 9) << "SCI_INT";
  EXPECT_EQ(le32(f, 48), 0u) << "SMI_CMD: always in ACPI mode";
  EXPECT_EQ(le32(f, 56), kAcpiPm1aEvtBlk);
  EXPECT_EQ(le32(f, 64), kAcpiPm1aCntBlk);
  EXPECT_EQ(le32(f, 76), 0u) << "no PM timer unless configured";
  EXPECT_EQ(f[88], 4);
  EXPECT_EQ(f[89], 2);
  const uint32_t flags = le32(f, 112);
  EXPECT_EQ(flags & (1u << 10), 0u) << "RESET_REG_SUP off";
  EXPECT_EQ(flags & (1u << 20), 0u) << "not HW_REDUCED_ACPI";
  EXPECT_TRUE((f[109] | (f[110] << 8)) & 2) << "IAPC_BOOT_ARCH 8042";
  EXPECT_EQ(le64(f, 140), le32(f, 40)) << "X_DSDT == DSDT";
  EXPECT_EQ(f[172], 1) << "X_PM1a_CNT_BLK in system I/O";
  EXPECT_EQ(le64(f, 172 + 4), kAcpiPm1aCntBlk);

  const Tables with_timer = load(mem_, write_acpi_tables(mem_, {.num_cpus = 1, .pm_timer = true}).value());
  EXPECT_EQ(le32(with_timer.by_sig.at("FACP"), 76), kAcpiPmTmrBlk);
  EXPECT_EQ(with_timer.by_sig.at("FACP")[91], 4);
  EXPECT_EQ(le32(with_timer.by_sig.at("FACP"), 112) & (1u << 8), 0u) << "TMR_VAL_EXT clear: a 24-bit timer";
}

TEST_F(AcpiTest, MadtHasOneEnabledLapicPerVcpu) {
  for (uint32_t n : {1u, 2u, 4u, 64u}) {
    const Tables t = load(mem_, write_acpi_tables(mem_, {.num_cpus = n}).value());
    const Bytes& m = t.by_sig.at("APIC");
    EXPECT_EQ(le32(m, 36), kLapicAddr);
    uint32_t lapics = 0, ioapics = 0, overrides = 0;
    for (size_t off = 44; off < m.size(); off += m[off + 1]) {
      ASSERT_GE(m[off + 1], 2) << "entry length";
      switch (m[off]) {
        case 0:
          EXPECT_EQ(m[off + 3], lapics) << "APIC ID = vCPU index";
          EXPECT_EQ(le32(m, off + 4) & 1, 1u) << "enabled";
          ++lapics;
          break;
        case 1:
          EXPECT_EQ(le32(m, off + 4), kIoapicAddr);
          EXPECT_EQ(le32(m, off + 8), 0u);
          ++ioapics;
          break;
        case 2:
          if (m[off + 3] == 0) {
            EXPECT_EQ(le32(m, off + 4), 2u);
          }
          if (m[off + 3] == 9) {
            EXPECT_EQ(m[off + 8], 0x0d) << "SCI level, active high";
          }
          ++overrides;
          break;
        default: break;
      }
    }
    EXPECT_EQ(lapics, n);
    EXPECT_EQ(ioapics, 1u);
    EXPECT_EQ(overrides, 2u);
  }
  EXPECT_FALSE(write_acpi_tables(mem_, {.num_cpus = 0}).ok());
  EXPECT_FALSE(write_acpi_tables(mem_, {.num_cpus = 255}).ok());
}

TEST(Aml, Encodings) {
  EXPECT_EQ(aml::pkg_length(10), (Bytes{11}));
  EXPECT_EQ(aml::pkg_length(62), (Bytes{63}));
  EXPECT_EQ(aml::pkg_length(63), (Bytes{0x41, 0x04}));            // 65 = 0x41: low nibble 1, then 0x04
  EXPECT_EQ(aml::pkg_length(0x1000), (Bytes{0x83, 0x00, 0x01}));  // 0x1003 needs 3 bytes
  EXPECT_EQ(aml::integer(0), (Bytes{0x00}));
  EXPECT_EQ(aml::integer(1), (Bytes{0x01}));
  EXPECT_EQ(aml::integer(5), (Bytes{0x0a, 5}));
  EXPECT_EQ(aml::integer(0x1234), (Bytes{0x0b, 0x34, 0x12}));
  EXPECT_EQ(aml::integer(0x1ffff), (Bytes{0x0c, 0xff, 0xff, 0x01, 0x00}));
  EXPECT_EQ(aml::integer(1ULL << 32).size(), 9u);
  EXPECT_EQ(aml::eisa_id("PNP0A03"), (Bytes{0x0c, 0x41, 0xd0, 0x0a, 0x03}));
  EXPECT_EQ(aml::name_string("_HID"), (Bytes{'_', 'H', 'I', 'D'}));
  EXPECT_EQ(aml::name_string("\\_SB"), (Bytes{'\\', '_', 'S', 'B', '_'}));
  EXPECT_EQ(aml::name_string("\\_SB.PCI0"), (Bytes{'\\', 0x2e, '_', 'S', 'B', '_', 'P', 'C', 'I', '0'}));
  EXPECT_EQ(aml::irq_no_flags(4), (Bytes{0x22, 0x10, 0x00}));
  EXPECT_EQ(aml::io(0x3f8, 0x3f8, 1, 8), (Bytes{0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08}));
  EXPECT_EQ(aml::word_bus_number(0, 255).size(), 16u);
  EXPECT_EQ(aml::dword_memory(0, 1).size(), 26u);
  EXPECT_EQ(aml::qword_memory(0, 1).size(), 46u);
}

TEST(Dsdt, HasS5AndDevices) {
  const Bytes d = build_dsdt_aml(256 * kMiB);
  // Name (\_S5, Package (4) {5, 5, 0, 0})
  EXPECT_TRUE(contains(
      d, {0x08, '\\', '_', 'S', '5', '_', 0x12, 0x08, 0x04, 0x0a, kSlpTypS5, 0x0a, kSlpTypS5, 0, 0}));
  EXPECT_TRUE(contains(d, aml::eisa_id("PNP0A03")));
  EXPECT_TRUE(contains(d, aml::eisa_id("PNP0501")));
  EXPECT_TRUE(contains(d, aml::io(kCom1Port, kCom1Port, 1, 8)));
  EXPECT_TRUE(contains(d, {'_', 'P', 'R', 'T', 0x12}));
  // Slot 2 pin B routes to 16 + (2 + 1) % 8 = 19.
  EXPECT_TRUE(
      contains(d, aml::package({aml::integer(0x2ffff), aml::integer(1), aml::integer(0), aml::integer(19)})));
  // The 64-bit window moves with RAM: 8 GiB of RAM ends at 9 GiB.
  EXPECT_TRUE(contains(build_dsdt_aml(9 * kGiB), aml::qword_memory(9 * kGiB, 9 * kGiB + kPciMmio64Size - 1)));
}

// The DSDT disassembles cleanly with ACPICA's iasl (acpica-tools, installed by scripts/setup.sh).
TEST(Dsdt, IaslDisassemblesIt) {
  if (std::system("command -v iasl >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "iasl not installed (apt-get install acpica-tools, as scripts/setup.sh does)";
  auto mem = GuestMemory::create_x86(256 * kMiB).value();
  const Tables t = load(mem, write_acpi_tables(mem, {.num_cpus = 2}).value());
  const auto dir = std::filesystem::temp_directory_path() / ("ringvm-dsdt-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto dat = dir / "dsdt.dat";
  {
    std::ofstream f(dat, std::ios::binary);
    const Bytes& d = t.by_sig.at("DSDT");
    f.write(reinterpret_cast<const char*>(d.data()), static_cast<std::streamsize>(d.size()));
  }
  const std::string cmd =
      "cd '" + dir.string() +
      "' && iasl -d dsdt.dat > iasl.log 2>&1 && iasl -p rebuilt dsdt.dsl >> iasl.log 2>&1";
  const int rc = std::system(cmd.c_str());
  const std::string log_text = slurp(dir / "iasl.log");
  ASSERT_EQ(rc, 0) << log_text;
  const std::string text = slurp(dir / "dsdt.dsl");
  EXPECT_NE(text.find("Device (PCI0)"), std::string::npos) << text;
  EXPECT_NE(text.find("EisaId (\"PNP0A03\")"), std::string::npos);
  EXPECT_NE(text.find("Name (\\_S5, Package (0x04)"), std::string::npos);
  EXPECT_NE(text.find("Name (_PRT, Package (0x7C)"), std::string::npos);
  EXPECT_NE(text.find("QWordMemory"), std::string::npos);
  EXPECT_NE(text.find("EisaId (\"PNP0501\")"), std::string::npos);
  EXPECT_NE(text.find("{4}"), std::string::npos) << "COM1's IRQ";
  EXPECT_NE(text.find("Device (VGEN)"), std::string::npos);
  EXPECT_NE(text.find("Name (_CID, \"VM_GEN_COUNTER\")"), std::string::npos);
  EXPECT_NE(text.find("Method (ADDR, 0, NotSerialized)"), std::string::npos);
  EXPECT_NE(text.find("Name (_HID, \"ACPI0013\" /* Generic Event Device */)"), std::string::npos);
  EXPECT_NE(text.find("Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )"), std::string::npos);
  EXPECT_NE(text.find("Method (_EVT, 1, Serialized)"), std::string::npos);
  EXPECT_NE(text.find("Notify (\\_SB.VGEN, 0x80)"), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(dir / "rebuilt.aml")) << log_text;
  if (!HasFailure()) std::filesystem::remove_all(dir);
}

Bytes from_hex(std::string_view hex) {
  Bytes b;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    b.push_back(static_cast<uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  return b;
}

// Each against iasl 20200925's output for the same ASL (compiled with -oa, which keeps the
// absolute name paths ringvm writes), and the ACPI 6.4 opcodes: ArgOp 0x68, LEqualOp 0x93,
// IfOp 0xa0, NotifyOp 0x86, Extended Interrupt descriptor tag 0x89.
TEST(Aml, StatementEncodingsMatchIasl) {
  EXPECT_EQ(aml::arg(0), (Bytes{0x68}));
  EXPECT_EQ(aml::arg(6), (Bytes{0x6e}));
  // LEqual (Arg0, 0x0F)
  EXPECT_EQ(aml::lequal(aml::arg(0), aml::integer(15)), (Bytes{0x93, 0x68, 0x0a, 0x0f}));
  // Notify (\_SB.VGEN, 0x80)
  const Bytes notify = from_hex("865c2e5f53425f5647454e0a80");
  EXPECT_EQ(aml::notify("\\_SB.VGEN", aml::integer(0x80)), notify);
  // If (LEqual (Arg0, 0x0F)) { Notify (\_SB.VGEN, 0x80) }
  EXPECT_EQ(aml::if_then(aml::lequal(aml::arg(0), aml::integer(15)), {notify}),
            from_hex("a01293680a0f865c2e5f53425f5647454e0a80"));
  // Method (_EVT, 1, Serialized) { If ... }
  EXPECT_EQ(aml::method("_EVT", 1, true,
                        {aml::if_then(aml::lequal(aml::arg(0), aml::integer(15)), {notify})}),
            from_hex("14195f45565409a01293680a0f865c2e5f53425f5647454e0a80"));
  // Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) {15}
  EXPECT_EQ(aml::extended_interrupt(15, true, false, false), from_hex("89060003010f000000"));
  // Interrupt (ResourceConsumer, Level, ActiveLow, Shared, ,, ) {20}
  EXPECT_EQ(aml::extended_interrupt(20, false, true, true), from_hex("8906000d0114000000"));
}

// \_SB.VGEN and \_SB.GED, byte for byte what iasl -oa makes of:
//   Device (VGEN) { Name (_HID, "RVMM0001") Name (_CID, "VM_GEN_COUNTER")
//     Name (_DDN, "VM_Gen_Counter") Method (ADDR, 0) { Return (Package (2) { 0xEF000, Zero }) } }
//   Device (GED) { Name (_HID, "ACPI0013") Name (_UID, Zero)
//     Name (_CRS, ResourceTemplate () { Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) {15} })
//     Method (_EVT, 1, Serialized) { If (LEqual (Arg0, 0x0F)) { Notify (\_SB.VGEN, 0x80) } } }
TEST(Dsdt, HasVmGenIdAndGenericEventDevice) {
  static_assert(kVmGenIdAddr == 0xEF000 && kGedGsi == 15, "update the iasl bytes below");
  const Bytes vgen = from_hex(
      "5b8240055647454e085f4849440d52564d4d3030303100085f4349440d564d5f47454e5f434f554e54455200085f44444e0d564d5f"
      "47656e5f436f756e7465720014104144445200a41208020c00f00e0000");
  const Bytes ged = from_hex(
      "5b8249044745445f085f4849440d414350493030313300085f55494400085f435253110e0a0b89060003010f000000790014195f"
      "45565409a01293680a0f865c2e5f53425f5647454e0a80");
  const Bytes d = build_dsdt_aml(256 * kMiB);
  EXPECT_TRUE(contains(d, vgen));
  EXPECT_TRUE(contains(d, ged));
  const Bytes off = build_dsdt_aml(256 * kMiB, {.vmgenid = false});
  EXPECT_FALSE(contains(off, {'V', 'G', 'E', 'N'}));
  EXPECT_FALSE(contains(off, {'G', 'E', 'D', '_'}));
  EXPECT_EQ(d.size(), off.size() + vgen.size() + ged.size());
}

// Reads an AML integer (ZeroOp, OneOp, or a Byte/Word/DWord/QWord prefix) at `pos`.
std::optional<uint64_t> aml_integer(const Bytes& b, size_t& pos) {
  if (pos >= b.size()) return std::nullopt;
  const uint8_t op = b[pos++];
  if (op == 0x00 || op == 0x01) return op;
  const size_t n = op == 0x0a ? 1 : op == 0x0b ? 2 : op == 0x0c ? 4 : op == 0x0e ? 8 : 0;
  if (n == 0 || pos + n > b.size()) return std::nullopt;
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= uint64_t{b[pos + i]} << (8 * i);
  pos += n;
  return v;
}

// What Linux's vmgenid driver does with the tables: evaluate \_SB.VGEN.ADDR (a method returning
// Package (2) {low, high}) and read 16 bytes there. They are the device's ID, and a new
// generation changes them.
TEST_F(AcpiTest, VmGenIdAddrMethodPointsAtTheDevicesId) {
  std::vector<bool> pulses;
  auto dev = VmGenId::create(mem_, kVmGenIdAddr, [&](bool level) { pulses.push_back(level); });
  ASSERT_TRUE(dev.ok()) << dev.error().message();
  const Tables t = load(mem_, write_acpi_tables(mem_, {.num_cpus = 1}).value());
  const Bytes& dsdt = t.by_sig.at("DSDT");
  // Method (ADDR, 0, NotSerialized) { Return (Package (2) {...}) }: name, flags 0, ReturnOp, PackageOp.
  const Bytes head = {'A', 'D', 'D', 'R', 0x00, 0xa4, 0x12};
  auto at = std::search(dsdt.begin(), dsdt.end(), head.begin(), head.end());
  ASSERT_NE(at, dsdt.end());
  size_t pos = static_cast<size_t>(at - dsdt.begin()) + head.size();
  ASSERT_LT(pos + 2, dsdt.size());
  ++pos;                         // PkgLength (one byte: the package is short)
  ASSERT_EQ(dsdt[pos++], 2);     // NumElements
  const auto low = aml_integer(dsdt, pos);
  const auto high = aml_integer(dsdt, pos);
  ASSERT_TRUE(low && high);
  const uint64_t addr = *low | (*high << 32);
  EXPECT_EQ(addr, kVmGenIdAddr);

  auto id_at_addr = [&] {
    VmGenId::Id id{};
    EXPECT_TRUE(mem_.read(addr, id).ok());
    return id;
  };
  EXPECT_EQ(id_at_addr(), (*dev)->id()) << "the tables (written after the device) leave its page alone";
  const VmGenId::Id first = id_at_addr();
  ASSERT_TRUE((*dev)->new_generation().ok());
  EXPECT_NE(id_at_addr(), first);
  EXPECT_EQ(id_at_addr(), (*dev)->id());
  EXPECT_EQ(pulses, (std::vector<bool>{true, false}));
}

TEST_F(AcpiTest, VmGenIdPageIsReservedInE820AndOutsideTheTables) {
  EXPECT_GE(kVmGenIdAddr, kEbdaStart);
  EXPECT_LE(kVmGenIdAddr + VmGenId::kIdSize, kHighMemoryStart) << "inside the e820-reserved BIOS area";
  EXPECT_GE(kVmGenIdAddr, kAcpiTablesEnd);
  EXPECT_TRUE(write_acpi_tables(mem_, {.num_cpus = 64, .pci_ecam = true, .pm_timer = true}).ok());
}

}  // namespace
}  // namespace ringvm::x86
