# The KVM probe's firmware (64 KiB, mapped below 4 GiB at 0xFFFF0000), the
# source of PROBE_CODE in accel.rs. From the reset vector it does what a Linux
# guest's boot does first: real mode -> protected mode -> long mode with paging
# (PAE, EFER.LME, CR0.PG), then writes 1 to isa-debug-exit (QEMU exits 3).
# A real-mode-only probe passed on a PVM host whose KVM cannot run a normal
# kernel (the guest hung or hit an internal error right after real mode).
# Rebuild: as --32 -o p.o kvm_probe.S && objcopy -O binary p.o p.bin
# (the unit test `probe_code_matches_its_source` checks the bytes).
        .code16
        .org 0
start16:
        cli
        xorw %ax, %ax
        movw %ax, %ds
        # gdt descriptor: linear address in firmware
        lgdtl %cs:gdt_desc
        movl %cr0, %eax
        orl $1, %eax
        movl %eax, %cr0
        ljmpl $0x08, $(0xFFFF0000 + pm32)
        .code32
pm32:
        movw $0x10, %ax
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %ss
        # page tables at 0x1000 (PML4), 0x2000 (PDPT), 0x3000 (PD)
        movl $0x1000, %edi
        xorl %eax, %eax
        movl $(0x3000/4), %ecx
        rep stosl
        movl $(0x2000 | 3), 0x1000
        movl $(0x3000 | 3), 0x2000 + 3*8
        movl $(0xFFE00000 | 0x83), 0x3000 + 511*8
        movl %cr4, %eax
        orl $0x20, %eax
        movl %eax, %cr4
        movl $0x1000, %eax
        movl %eax, %cr3
        movl $0xC0000080, %ecx
        rdmsr
        orl $0x100, %eax
        wrmsr
        movl %cr0, %eax
        orl $0x80000000, %eax
        movl %eax, %cr0
        ljmpl $0x18, $(0xFFFF0000 + lm64)
        .code64
lm64:
        movb $1, %al
        outb %al, $0xf4
1:      hlt
        jmp 1b
        .p2align 3
gdt:
        .quad 0
        .quad 0x00CF9A000000FFFF   # 0x08 32-bit code
        .quad 0x00CF92000000FFFF   # 0x10 data
        .quad 0x00AF9A000000FFFF   # 0x18 64-bit code
gdt_end:
gdt_desc:
        .word gdt_end - gdt - 1
        .long 0xFFFF0000 + gdt
        .org 0xFFF0
reset:
        .code16
        jmp start16
        .org 0x10000, 0xf4
