# Hostile virtio-blk driver, 32-bit flat protected mode, loaded and entered at 0x1000 with
# interrupts off (tests/integration/hostile_virtio_test.cc sets up the segments).
#
# Finds the virtio-blk function (1AF4:1042) through CF8/CFC, reads its 64-bit memory BAR 0 and its
# I/O BAR 2 (the doorbells: ringvm's default notify capability points there), runs
# the modern virtio-pci init (reset, ACK, DRIVER, INDIRECT_DESC + VERSION_1, FEATURES_OK, queue 0
# of 8 entries, DRIVER_OK), then posts six chains with one doorbell write:
#   head 0  a loop (0 -> 1 -> 0)                                      -> chain_too_long
#   head 2  a buffer at 0xF0000000, outside guest memory               -> buffer_outside_memory
#   head 3  one descriptor + an 8-entry indirect table: 9 > queue max  -> chain_too_long
#   head 5  an indirect table whose entry is itself indirect           -> nested_indirect
#   head 6  a zero-length buffer                                       -> zero_length
#   head 7  a good read of sector 1 (indirect: header, 512 B, status)  -> VIRTIO_BLK_S_OK
# polls the used ring (bounded) until all six came back, then pokes the UART's scratch register.
#
# Reports, as 32-bit OUTs to port 0x510 in this order: slot, BAR 0, device features 0-31,
# device features 32-63, status after FEATURES_OK, used idx, the good request's status byte,
# device status at the end, the UART scratch read-back, 0xD0D0D0D0 (done). A failure reports
# 0xBADxxxxx instead and stops.
.code32
.set REPORT_PORT, 0x510
.set DESC, 0x10000        # descriptor table, 8 entries
.set AVAIL, 0x11000       # avail ring
.set USED, 0x12000        # used ring
.set HDR, 0x13000         # struct virtio_blk_outhdr of the good request
.set IND_LONG, 0x14000    # 8-entry indirect table
.set IND_NESTED, 0x14100  # 1-entry table holding an indirect descriptor
.set IND_GOOD, 0x14200    # the good request's table
.set DATA, 0x15000        # 512-byte read buffer
.set STATUS, 0x15200      # the good request's status byte
.set SCRATCH, 0x16000     # what the malformed chains point at
.set OUTSIDE, 0xF0000000  # not guest RAM (RAM is the first MiB)
.set F_NEXT, 1
.set F_WRITE, 2
.set F_INDIRECT, 4

# One struct vring_desc at entry \idx of the table at \base.
.macro vdesc base, idx, addr, len, flags, next
  movl $\addr, \base + 16 * \idx
  movl $0, \base + 16 * \idx + 4
  movl $\len, \base + 16 * \idx + 8
  movw $\flags, \base + 16 * \idx + 12
  movw $\next, \base + 16 * \idx + 14
.endm

# Config dword at offset \reg of slot %ecx into %eax.
.macro cfg_read reg
  mov %ecx, %eax
  shl $11, %eax
  or $(0x80000000 | \reg), %eax
  mov $0xcf8, %dx
  out %eax, %dx
  mov $0xcfc, %dx
  in %dx, %eax
.endm

.globl _start
_start:
  mov $0x8000, %esp

  # --- Find the device. ---
  xor %ecx, %ecx
find:
  cfg_read 0x00
  cmp $0x10421af4, %eax
  je found
  inc %ecx
  cmp $32, %ecx
  jb find
  mov $0xbad00001, %eax
  jmp fail
found:
  mov %ecx, %eax
  call report
  cfg_read 0x14
  test %eax, %eax
  mov $0xbad00002, %eax
  jnz fail                 # BAR 0 above 4 GiB: unreachable without paging
  cfg_read 0x10
  and $0xfffffff0, %eax
  mov %eax, %ebx           # %ebx = BAR 0 = common config
  call report
  cfg_read 0x18
  test $1, %eax
  mov $0xbad00003, %eax
  jz fail                  # BAR 2 is not an I/O BAR: no port doorbells
  cfg_read 0x18
  and $0xfffc, %eax
  mov %eax, %ebp           # %ebp = BAR 2 = doorbell ports

  # --- Modern virtio-pci init (struct virtio_pci_common_cfg at %ebx). ---
  movb $0, 0x14(%ebx)      # device_status: reset
  movb $1, 0x14(%ebx)      # ACKNOWLEDGE
  movb $3, 0x14(%ebx)      # + DRIVER
  movl $0, 0x00(%ebx)      # device_feature_select
  mov 0x04(%ebx), %eax
  call report
  movl $1, 0x00(%ebx)
  mov 0x04(%ebx), %eax
  call report
  movl $0, 0x08(%ebx)      # driver_feature_select
  movl $0x10000000, 0x0c(%ebx)  # VIRTIO_RING_F_INDIRECT_DESC (28)
  movl $1, 0x08(%ebx)
  movl $1, 0x0c(%ebx)      # VIRTIO_F_VERSION_1 (32)
  movb $0x0b, 0x14(%ebx)   # + FEATURES_OK
  movzbl 0x14(%ebx), %eax
  call report
  movw $0, 0x16(%ebx)      # queue_select 0
  movw $8, 0x18(%ebx)      # queue_size
  movl $DESC, 0x20(%ebx)   # queue_desc
  movl $0, 0x24(%ebx)
  movl $AVAIL, 0x28(%ebx)  # queue_driver
  movl $0, 0x2c(%ebx)
  movl $USED, 0x30(%ebx)   # queue_device
  movl $0, 0x34(%ebx)
  movw $1, 0x1c(%ebx)      # queue_enable
  movzwl 0x1e(%ebx), %esi  # queue_notify_off
  movb $0x0f, 0x14(%ebx)   # + DRIVER_OK

  # --- The chains. ---
  vdesc DESC, 0, SCRATCH, 16, F_NEXT, 1
  vdesc DESC, 1, SCRATCH, 16, F_NEXT, 0
  vdesc DESC, 2, OUTSIDE, 16, 0, 0
  vdesc DESC, 3, SCRATCH, 16, F_NEXT, 4
  vdesc DESC, 4, IND_LONG, 128, F_INDIRECT, 0
  mov $IND_LONG, %edi      # 8 entries, each chained to the next
  mov $1, %ecx
1:
  movl $SCRATCH, (%edi)
  movl $0, 4(%edi)
  movl $16, 8(%edi)
  movw $F_NEXT, 12(%edi)
  mov %cx, 14(%edi)
  add $16, %edi
  inc %ecx
  cmp $8, %ecx
  jbe 1b
  vdesc DESC, 5, IND_NESTED, 16, F_INDIRECT, 0
  vdesc IND_NESTED, 0, IND_LONG, 16, F_INDIRECT, 0
  vdesc DESC, 6, SCRATCH, 0, 0, 0
  vdesc DESC, 7, IND_GOOD, 48, F_INDIRECT, 0
  vdesc IND_GOOD, 0, HDR, 16, F_NEXT, 1
  vdesc IND_GOOD, 1, DATA, 512, F_WRITE | F_NEXT, 2
  vdesc IND_GOOD, 2, STATUS, 1, F_WRITE, 0
  movl $0, HDR             # type VIRTIO_BLK_T_IN
  movl $0, HDR + 4         # reserved
  movl $1, HDR + 8         # sector 1
  movl $0, HDR + 12
  movb $0xff, STATUS       # so a 0 can only come from the device

  movw $0, AVAIL           # flags
  movw $0, AVAIL + 4       # ring[0..5] = heads 0, 2, 3, 5, 6, 7
  movw $2, AVAIL + 6
  movw $3, AVAIL + 8
  movw $5, AVAIL + 10
  movw $6, AVAIL + 12
  movw $7, AVAIL + 14
  movw $6, AVAIL + 2       # idx, after the entries (x86 stores are ordered)
  lea (%ebp, %esi, 4), %edx  # doorbell of queue 0 (notify ports + off * 4)
  xor %eax, %eax
  out %ax, %dx

  # --- Wait (bounded) for all six to be used. ---
  mov $0x400000, %ecx
2:
  movzwl USED + 2, %eax
  cmp $6, %eax
  je 3f
  pause
  dec %ecx
  jnz 2b
  or $0xbad10000, %eax
  jmp fail
3:
  call report              # used idx
  movzbl STATUS, %eax
  call report
  movzbl 0x14(%ebx), %eax  # device_status: still 0x0f, no DEVICE_NEEDS_RESET
  call report

  # --- The other device: the UART's scratch register, and "OK" on the line. ---
  mov $0x3ff, %dx
  mov $0xa5, %al
  out %al, %dx
  xor %eax, %eax
  in %dx, %al
  call report
  mov $0x3f8, %dx
  mov $'O', %al
  out %al, %dx
  mov $'K', %al
  out %al, %dx
  mov $0xd0d0d0d0, %eax

fail:
  call report
  hlt
  jmp .

report:
  push %edx
  mov $REPORT_PORT, %dx
  out %eax, %dx
  pop %edx
  ret
