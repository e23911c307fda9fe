# 64-bit test guest, entered at 0x1000 in long mode (the test writes identity page tables and a
# GDT and sets CR0/CR4/EFER through KVM_SET_SREGS). Writes "OK" to the serial port, reads a 32-bit
# value from the test port, writes it plus one to MMIO at 0x10000000, then halts.
.code64
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
  mov $0x10000000, %rbx
  mov %eax, (%rbx)
  hlt
  jmp .
