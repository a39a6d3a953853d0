# The code of the standby rehearsal's program (`standby::SCRATCH_CODE`, which holds these bytes):
# a static program's first steps, so that the kernel paths a container's first exec takes are
# warm in a standby (under TCG each first run of guest code costs its translation): its pages
# faulted in from the file, its data pages written as a static C library's start-up writes a
# program's (one written first, one read and then written, both copy-on-write, and the first
# made read-only again as RELRO is, which splits the segment's mapping; the loader has zeroed
# the tail of the last), its bss, the heap grown and split, and the system calls of that
# start-up, then "ok" on stdout and exit 0. Position-independent; the ELF around it is built by
# `standby::scratch_program`, its data segment the pages after CODE_PAGES pages of code. After a
# change, assemble it again and put the bytes in `SCRATCH_CODE` (its unit test compares them):
#   as --64 -o scratch.o scratch.s && objcopy -O binary -j .text scratch.o scratch.bin
.equ CODE_PAGES, 127
.intel_syntax noprefix

.Lstart:
    lea rsi, [rip + .Lstart]
    and rsi, -4096                  # the first page: the ELF's own
    lea r12, [rsi + CODE_PAGES*4096] # the data segment (file-backed, private)
    mov ecx, CODE_PAGES
1:  mov al, [rsi]                   # read one byte of each code page
    add rsi, 4096
    dec ecx
    jnz 1b
    mov byte ptr [r12], 1           # write the first data page: copy-on-write
    mov al, [r12 + 4096]            # read the second, then write it: a copy of a mapped page
    mov byte ptr [r12 + 4096], al
    mov byte ptr [r12 + 3*4096], 1  # the bss after the three from the file: anonymous
    mov rdi, r12                    # mprotect(first data page, PROT_READ), as RELRO
    mov esi, 4096
    mov edx, 1
    mov eax, 10
    syscall
    mov eax, 12                     # brk(0)
    xor edi, edi
    syscall
    mov rbx, rax
    lea rdi, [rax + 0x21000]        # brk(+132 KiB)
    mov eax, 12
    syscall
    cmp rax, rbx
    je 2f                           # no heap: skip what uses it
    mov byte ptr [rbx], 1
    mov edi, 0x1002                 # arch_prctl(ARCH_SET_FS, heap)
    lea rsi, [rbx + 0x100]
    mov eax, 158
    syscall
    lea rdi, [rbx + 0x200]          # set_tid_address
    mov eax, 218
    syscall
    lea rdi, [rbx + 0x400]          # rseq(32 bytes, 0, sig)
    mov esi, 32
    xor edx, edx
    mov r10d, 0x53053053
    mov eax, 334
    syscall
    xor edi, edi                    # prlimit64(0, RLIMIT_STACK, NULL, old)
    mov esi, 3
    xor edx, edx
    lea r10, [rbx + 0x500]
    mov eax, 302
    syscall
    lea rdi, [rip + exe]            # readlink("/proc/self/exe")
    lea rsi, [rbx + 0x1000]
    mov edx, 4096
    mov eax, 89
    syscall
    lea rdi, [rbx + 0x600]          # getrandom(8, GRND_NONBLOCK)
    mov esi, 8
    mov edx, 1
    mov eax, 318
    syscall
    lea rdi, [rbx + 0x10000]        # mprotect(one heap page, PROT_READ): splits the heap
    mov esi, 4096
    mov edx, 1
    mov eax, 10
    syscall
    mov edi, 16                     # prctl(PR_GET_NAME)
    lea rsi, [rbx + 0x700]
    mov eax, 157
    syscall
    mov edi, 2                      # rt_sigaction(SIGINT, NULL, old, 8)
    xor esi, esi
    lea rdx, [rbx + 0x800]
    mov r10d, 8
    mov eax, 13
    syscall
    lea rdi, [rbx + 0x2000]         # getcwd
    mov esi, 4096
    mov eax, 79
    syscall
    mov qword ptr [rbx + 0x908], 1000
    mov edi, 1                      # clock_nanosleep(CLOCK_MONOTONIC, 0, 1 us, NULL)
    xor esi, esi
    lea rdx, [rbx + 0x900]
    xor r10d, r10d
    mov eax, 230
    syscall
2:  mov eax, 102                    # getuid
    syscall
    mov eax, 110                    # getppid
    syscall
    mov edi, 1                      # fcntl(1, F_DUPFD, 10), then close it
    xor esi, esi
    mov edx, 10
    mov eax, 72
    syscall
    mov edi, eax
    mov eax, 3
    syscall
    mov edi, 1                      # write(1, "ok\n", 3)
    lea rsi, [rip + text]
    mov edx, 3
    mov eax, 1
    syscall
    xor edi, edi                    # exit_group(0)
    mov eax, 231
    syscall
text: .ascii "ok\n"
exe:  .asciz "/proc/self/exe"
