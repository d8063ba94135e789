/* Entry points of a Xen image: the PVH 32-bit entry (QEMU's PVH loader too), the classic PV
   64-bit entry, the Xen ELF notes, boot page tables, GDT, stack, and the memory functions.
   AT&T syntax; no braces (global_asm! would read them as format placeholders). */

/* ---- Xen ELF notes: name "Xen", descriptors 4-aligned; nothing 8-aligned (QEMU pads the
   name to the segment's alignment). Numbers are 8 bytes: QEMU reads PHYS32_ENTRY as 8. */
.section .note.Xen, "a", @note
.p2align 2
.macro xen_note type
    .long 4
    .long 2f - 1f
    .long \type
    .asciz "Xen"
1:
.endm
.macro xen_note_end
2:
    .p2align 2
.endm
    xen_note 6          /* GUEST_OS */
    .asciz "qubes-unikernel"
    xen_note_end
    xen_note 5          /* XEN_VERSION */
    .asciz "xen-3.0"
    xen_note_end
    xen_note 8          /* LOADER */
    .asciz "generic"
    xen_note_end
    xen_note 3          /* VIRT_BASE */
    .quad 0
    xen_note_end
    xen_note 4          /* PADDR_OFFSET */
    .quad 0
    xen_note_end
    xen_note 1          /* ENTRY (PV, virtual) */
    .quad xen_pv_start
    xen_note_end
    xen_note 2          /* HYPERCALL_PAGE (PV: Xen fills it at build time) */
    .quad hypercall_page
    xen_note_end
    xen_note 18         /* PHYS32_ENTRY (PVH) */
    .quad pvh_start32
    xen_note_end

/* ---- PVH: 32-bit protected mode, paging off, ebx = hvm_start_info, no stack. */
.section .text.boot, "ax"
.code32
.globl pvh_start32
pvh_start32:
    cli
    cld
    mov %ebx, %esi
    /* Zero .bss (the stack is in it) before anything lives there. */
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb
    /* CR4: PAE | OSFXSR | OSXMMEXCPT (the precompiled core uses SSE). */
    mov %cr4, %eax
    or $0x620, %eax
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    /* EFER: LME | NXE. */
    mov $0xC0000080, %ecx
    rdmsr
    or $0x900, %eax
    wrmsr
    /* CR0: PG | WP | NE | MP on, EM and TS off. */
    mov %cr0, %eax
    and $0xFFFFFFF3, %eax
    or $0x80010022, %eax
    mov %eax, %cr0
    lgdt boot_gdt_ptr
    ljmp $0x08, $pvh_start64

.code64
pvh_start64:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    mov $boot_stack_top, %rsp
    xor %ebp, %ebp
    mov %esi, %edi
    call pvh_rust_entry
3:  hlt
    jmp 3b

/* ---- PV: 64-bit, ring 3, paging on, rsi = start_info (virtual). Xen zeroed .bss. */
.globl xen_pv_start
xen_pv_start:
    cld
    mov $boot_stack_top, %rsp
    xor %ebp, %ebp
    mov %rsi, %rdi
    call pv_rust_entry
4:  jmp 4b

/* ---- CPU exception stubs (PVH and no-Xen): push a zero error code where the CPU does not,
   push the vector, then call rust_fault(vector, error, rip, cr2) on the IST stack. */
.macro fault_stub vec, err
fault_stub_\vec:
    .if \err == 0
    push $0
    .endif
    push $\vec
    jmp fault_common
.endm
.section .text.fault, "ax"
    fault_stub 0, 0
    fault_stub 1, 0
    fault_stub 2, 0
    fault_stub 3, 0
    fault_stub 4, 0
    fault_stub 5, 0
    fault_stub 6, 0
    fault_stub 7, 0
    fault_stub 8, 1
    fault_stub 9, 0
    fault_stub 10, 1
    fault_stub 11, 1
    fault_stub 12, 1
    fault_stub 13, 1
    fault_stub 14, 1
    fault_stub 15, 0
    fault_stub 16, 0
    fault_stub 17, 1
    fault_stub 18, 0
    fault_stub 19, 0
    fault_stub 20, 0
    fault_stub 21, 1
    fault_stub 22, 0
    fault_stub 23, 0
    fault_stub 24, 0
    fault_stub 25, 0
    fault_stub 26, 0
    fault_stub 27, 0
    fault_stub 28, 0
    fault_stub 29, 1
    fault_stub 30, 1
    fault_stub 31, 0
fault_common:
    mov (%rsp), %rdi
    mov 8(%rsp), %rsi
    mov 16(%rsp), %rdx
    mov %cr2, %rcx
    and $-16, %rsp
    call rust_fault
8:  jmp 8b

.section .rodata.fault, "a"
.p2align 3
.globl fault_stubs
fault_stubs:
    .quad fault_stub_0, fault_stub_1, fault_stub_2, fault_stub_3
    .quad fault_stub_4, fault_stub_5, fault_stub_6, fault_stub_7
    .quad fault_stub_8, fault_stub_9, fault_stub_10, fault_stub_11
    .quad fault_stub_12, fault_stub_13, fault_stub_14, fault_stub_15
    .quad fault_stub_16, fault_stub_17, fault_stub_18, fault_stub_19
    .quad fault_stub_20, fault_stub_21, fault_stub_22, fault_stub_23
    .quad fault_stub_24, fault_stub_25, fault_stub_26, fault_stub_27
    .quad fault_stub_28, fault_stub_29, fault_stub_30, fault_stub_31

/* ---- The hypercall page: Xen writes 32-byte stubs here (PV at build, PVH via the MSR). */
.section .text.hypercall, "ax"
.p2align 12
.globl hypercall_page
hypercall_page:
    .fill 4096, 1, 0xcc

/* ---- Memory functions in asm, so the compiler cannot turn them back into calls to themselves. */
.section .text.mem, "ax"
.globl memcpy
memcpy:
    mov %rdi, %rax
    mov %rdx, %rcx
    rep movsb
    ret
.globl memset
memset:
    mov %rdi, %r9
    mov %esi, %eax
    mov %rdx, %rcx
    rep stosb
    mov %r9, %rax
    ret
.globl memmove
memmove:
    mov %rdi, %rax
    mov %rdx, %rcx
    cmp %rsi, %rdi
    jbe 5f
    lea -1(%rsi,%rdx), %rsi
    lea -1(%rdi,%rdx), %rdi
    std
    rep movsb
    cld
    ret
5:  rep movsb
    ret
.globl memcmp
.globl bcmp
memcmp:
bcmp:
    xor %eax, %eax
    test %rdx, %rdx
    jz 7f
6:  movzbl (%rdi), %eax
    movzbl (%rsi), %ecx
    sub %ecx, %eax
    jnz 7f
    inc %rdi
    inc %rsi
    dec %rdx
    jnz 6b
7:  ret

/* ---- Boot page tables: identity map of 0-5 GiB in 2 MiB pages (PVH only). 4-5 GiB holds no
   RAM in our small domains: it is the window where a peer's grants get mapped. */
.section .data.pagetables, "aw"
.p2align 12
.globl boot_pml4
boot_pml4:
    .quad boot_pdpt + 0x3
    .fill 511, 8, 0
.globl boot_pdpt
boot_pdpt:
    .quad boot_pd + 0x3
    .quad boot_pd + 0x1003
    .quad boot_pd + 0x2003
    .quad boot_pd + 0x3003
    .quad boot_pd_hi + 0x3
    .fill 507, 8, 0
.globl boot_pd
boot_pd:
    .set pd_index, 0
    .rept 2048
    .quad (pd_index << 21) | 0x83
    .set pd_index, pd_index + 1
    .endr
boot_pd_hi:
    .set pd_index, 2048
    .rept 512
    .quad (pd_index << 21) | 0x83
    .set pd_index, pd_index + 1
    .endr

/* GDT: null, 64-bit code (0x08), data (0x10), accessed bits preset; a 64-bit TSS (0x18, two
   slots) that boot::install_fault_handlers fills in. */
.section .data.gdt, "aw"
.p2align 3
.globl boot_gdt
boot_gdt:
    .quad 0
    .quad 0x00af9b000000ffff
    .quad 0x00cf93000000ffff
    .quad 0
    .quad 0
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

/* ---- Stack: one guard page (unmapped by mm at boot) under 128 KiB. */
.section .bss.stack, "aw", @nobits
.p2align 12
.globl boot_stack_guard
boot_stack_guard:
    .skip 4096
    .skip 131072
.globl boot_stack_top
boot_stack_top:

.text
.code64
