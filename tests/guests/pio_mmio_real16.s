# Real-mode test guest, loaded and entered at 0x1000 (CS=0, IP=0x1000).
# Writes "OK" to the serial port, reads a 32-bit value from the test port, writes it plus one to
# MMIO at 0xd0010 (segment 0xd000, offset 0x10), then halts. The host test checks every exit.
.code16
.globl _start
_start:
  mov $0x3f8, %dx
  mov $'O', %al
  out %al, %dx
  mov $'K', %al
  out %al, %dx
  mov $0x510, %dx
  in %dx, %eax
  add $1, %eax
  mov $0xd000, %bx
  mov %bx, %ds
  mov %eax, 0x10
  hlt
  # Should the vCPU ever resume past the HLT, stay put rather than run off into zeroes.
  jmp .
