# Spins forever without an exit: the host test kicks it out of KVM_RUN from another thread.
# The two-byte `jmp .` (EB FE) means the same in 16-, 32- and 64-bit mode.
.globl _start
_start:
  jmp .
