# A tiny PVH kernel that counts: every 2^22 iterations of a busy loop it adds one to a counter
# (in %ebx) and writes it to COM1 as eight hex digits and a newline. A snapshot test checks that
# a guest restored in another process prints exactly the numbers after the last one before the
# snapshot: registers, the loop's position and the UART all came back.
  .section .note.Xen, "a", @note
  .balign 4
  .long 4            # namesz
  .long 4            # descsz
  .long 18           # XEN_ELFNOTE_PHYS32_ENTRY
  .asciz "Xen"
  .long _start

  .text
  .code32
  .globl _start
_start:
  mov $0x3f8, %dx
  xor %ebx, %ebx
1:
  mov $0x400000, %ecx
2:
  dec %ecx
  jnz 2b
  inc %ebx
  mov %ebx, %esi
  mov $8, %edi
3:
  rol $4, %esi
  mov %esi, %eax
  and $0xf, %eax
  cmp $10, %al
  jb 4f
  add $0x27, %al     # 'a' - 10 - '0'
4:
  add $0x30, %al     # '0'
  out %al, %dx
  dec %edi
  jnz 3b
  mov $0x0a, %al
  out %al, %dx
  jmp 1b
