// MsixTable: the MSI-X table and Pending Bit Array of one PCI function (PCI Local Bus 3.0 §6.8.2),
// which live in one of its memory BARs, plus the enable and function-mask bits of the capability's
// Message Control register.
//
// Each vector owns an eventfd bound as an irqfd through the MsiRouter: fire() writes the eventfd,
// so the MSI reaches the guest without an ioctl. A vector that fires while masked (per-vector
// mask or function mask) sets its PBA bit instead and is delivered when unmasked. A vector's MSI
// route is (re)programmed lazily, whenever it is deliverable and its address/data changed.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "devices/pci/msi.h"

namespace ringvm {

class StateReader;
class StateWriter;

class MsixTable final {
 public:
  static constexpr uint16_t kMaxVectors = 2048;  // Table Size is an 11-bit field

  // `router` must outlive the table.
  static Result<std::unique_ptr<MsixTable>> create(uint16_t vectors, MsiRouter& router);
  ~MsixTable();
  MsixTable(const MsixTable&) = delete;
  MsixTable& operator=(const MsixTable&) = delete;

  uint16_t size() const { return static_cast<uint16_t>(entries_.size()); }
  uint64_t table_bytes() const { return uint64_t{size()} * 16; }
  uint64_t pba_bytes() const { return (uint64_t{size()} + 63) / 64 * 8; }

  // Accesses at `offset` within the table / PBA (DWORD or QWORD, naturally aligned per spec;
  // anything else is ignored and reads as zero).
  void table_read(uint64_t offset, std::span<uint8_t> data) const;
  void table_write(uint64_t offset, std::span<const uint8_t> data);
  void pba_read(uint64_t offset, std::span<uint8_t> data) const;

  // Message Control of the capability: Table Size (N-1), Function Mask (14), Enable (15).
  uint16_t message_control() const;
  // Only bits 14 and 15 are writable; unmasking delivers pending vectors.
  void write_message_control(uint16_t value);
  bool enabled() const;

  // Raises `vector`: delivered at once if deliverable, else its pending bit is set. Thread-safe;
  // called from device threads. Out-of-range vectors are ignored.
  void fire(uint16_t vector);

  // --- Snapshot (base/state_codec.h) ---
  // The guest-visible state: enable and function mask, every entry's four words and pending bit.
  // The eventfds and GSIs are the new process's own and are not part of it.
  struct State {
    bool enabled = false;
    bool function_masked = false;
    std::vector<std::array<uint32_t, 4>> words;
    std::vector<uint8_t> pending;  // 0 or 1 per vector
  };
  void save_state(StateWriter& w) const;
  // Reads and checks a state save_state() wrote; changes nothing. Refused (kCorrupt): another
  // vector count than size(), reserved Vector Control bits set.
  Result<State> read_state(StateReader& r) const;
  // Takes `s` over and reprograms, with one routing commit, the MSI route of every vector whose
  // address the guest programmed (non-zero), so the first interrupt after a restore needs no
  // ioctl; then delivers pending vectors that are deliverable, as an unmask would. If the
  // router refuses, nothing changed.
  Result<void> restore_state(const State& s);

  // For tests and debugging.
  bool pending(uint16_t vector) const;
  bool masked(uint16_t vector) const;
  int eventfd(uint16_t vector) const { return entries_[vector].eventfd.get(); }
  uint32_t gsi(uint16_t vector) const { return entries_[vector].gsi; }

 private:
  struct Entry {
    uint32_t words[4] = {0, 0, 0, 1};  // address lo, address hi, data, vector control (masked)
    UniqueFd eventfd;
    uint32_t gsi = 0;
    bool pending = false;
    bool routed = false;  // route_address/route_data are what the router holds
    uint64_t route_address = 0;
    uint32_t route_data = 0;
  };
  explicit MsixTable(MsiRouter& router) : router_(router) {}
  bool deliverable_locked(const Entry& e) const;
  // Programs the route if needed and signals the eventfd.
  void deliver_locked(Entry& e);
  // After a state change: delivers pending vectors that became deliverable.
  void flush_pending_locked();

  MsiRouter& router_;
  mutable std::mutex mu_;
  std::vector<Entry> entries_;
  bool enabled_ = false;
  bool function_masked_ = false;
};

}  // namespace ringvm
