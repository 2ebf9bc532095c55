/* Faults on miniheap's own guard and quarantine pages, reported as what they
 * are (use-after-free, overflow into a guard page) rather than as a bare
 * SIGSEGV. Addresses miniheap knows nothing of go to whoever handled the
 * signal before. */
#include "internal.h"

#include <signal.h>
#include <ucontext.h>

/* Guard pages inside miniheaps: the guard unit at the end of a miniheap and
 * the guard page at the end of a hardened slab sit right after a slab's
 * last block. */
static bool slab_explain(uintptr_t addr, mh_fault_t *f) {
    /* (through the unit table, whose entries are NULL outside miniheaps: a
     * miniheap descriptor read here may be made anew meanwhile, its
     * unit_slab not yet set) */
    uint32_t unit = (uint32_t)((addr >> MH_UNIT_SHIFT) & (MH_UNITS - 1));
    slab_t *s = unit_slab_of((void *)addr);
    if (!s && unit == MH_UNITS - 1) s = unit_slab_of((void *)(addr - MH_UNIT_SIZE));
    if (!s) return false;
    uintptr_t end = (uintptr_t)slab_start(s) + (size_t)s->units * MH_UNIT_SIZE;
    if (s->zero && addr >= (uintptr_t)slab_ustart(s) && addr < end) { /* a 0-byte block has no bytes at all */
        uint32_t i = (uint32_t)((addr - (uintptr_t)slab_ustart(s)) / s->bsize);
        if (i >= s->capacity) i = s->capacity - 1;
        bool live = slab_live(s, i);
        slab_block_fault(f, s, i, slab_ustart(s) + (size_t)i * s->bsize);
        f->kind = live || !block_info(s, i) ? "heap-buffer-overflow" : "use-after-free";
        f->addr = (void *)addr;
        f->detail = live ? "the block has size 0 (malloc(0)): it has no byte to access"
                         : "the 0-byte block was freed (and had no byte to access)";
        if (live) f->free_stack = f->free_tid = 0;
        return true;
    }
    bool in_guard = (s->guarded && addr >= end - MH_PAGE && addr < end) || unit == MH_UNITS - 1;
    if (!in_guard) return false;
    uint32_t idx = s->capacity - 1;
    *f = (mh_fault_t){.kind = "heap-buffer-overflow", .addr = (void *)addr,
                      .block = slab_ustart(s) + (size_t)idx * s->bsize, .size = s->bsize - s->front,
                      .detail = "the access hit the guard page after a slab"};
    if (s->canary && block_info(s, idx)) f->size = block_info(s, idx) & INFO_SIZE_MASK;
    if (s->dbg) {
        f->alloc_stack = DBG_GET(&s->dbg[idx], alloc_stack);
        f->alloc_tid = DBG_GET(&s->dbg[idx], alloc_tid);
    }
    return true;
}

/* Set while this thread handles a fault of ours. SIGSEGV and SIGBUS are
 * blocked in the handler, so a second fault there ends the process at
 * once; this catches what gets through (a fault the program raises from a
 * handler of its own that ours called, say). */
static __thread uint8_t t_in_fault __attribute__((tls_model("initial-exec")));

static void on_fault(int sig, void *info, void *uctx) {
    siginfo_t *si = info;
    if (t_in_fault) {
        static const char msg[] = "miniheap: ERROR: a fault while reporting a fault; exiting\n";
        os_write_stderr(msg, sizeof msg - 1);
        os_exit(134);
    }
    uintptr_t addr = (uintptr_t)si->si_addr;
    mh_fault_t f;
    /* A signal sent by a program (kill) carries no address of ours. Large
     * blocks are never inside a miniheap: a fault there (a meshing or fork
     * barrier, say) need not walk them. */
    bool in_mh = miniheap_of((void *)addr) != NULL;
    if (si->si_code > 0 && (in_mh ? slab_explain(addr, &f) : large_explain(addr, &f))) {
        t_in_fault = 1;
        f.fatal = true; /* the access cannot be resumed */
#if defined(__x86_64__)
        /* The report's stack starts at the faulting instruction. */
        const mcontext_t *mc = &((ucontext_t *)uctx)->uc_mcontext;
        f.pc = (uintptr_t)mc->gregs[REG_RIP];
        f.fp = (uintptr_t)mc->gregs[REG_RBP];
#endif
        mh_report_fault(&f); /* does not return */
    }
    /* A write to a page being meshed (or to the heap while fork copies it)
     * waited for the remap: run it again. */
    if (sig == SIGSEGV && si->si_code == SEGV_ACCERR && mesh_fault(addr)) return;
    os_chain_fault(sig, info, uctx);
}

void fault_init(void) {
    /* Always: guard pages exist in every mode, and the handler costs
     * nothing until a fault. */
    os_install_fault_handler(on_fault);
    /* Each slab guard splits a mapping in up to three; keep a quarter of the
     * kernel's budget for them. */
    long maps = os_read_number("/proc/sys/vm/max_map_count", 65530);
    atomic_store(&slab_guard_budget, (int32_t)(maps / 4));
}
