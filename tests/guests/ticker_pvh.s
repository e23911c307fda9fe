# A tiny PVH kernel: an ELF64 with Xen's PHYS32_ENTRY note, entered in 32-bit protected mode
# with paging off (the PVH boot ABI). It writes 't' to COM1's data port every 2^22 iterations of
# a busy loop, forever: a counter the host sees grow in the console file while the VM runs and
# stop while it is paused. One port write (one exit to userspace) per tick.
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
1:
  mov $0x400000, %ecx
2:
  dec %ecx
  jnz 2b
  mov $0x74, %al     # 't'
  out %al, %dx
  jmp 1b
