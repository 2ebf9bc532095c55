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
    miniheap_t *mh = miniheap_of((void *)addr);
    if (!mh) return false;
    uint32_t unit = (uint32_t)((addr >> MH_UNIT_SHIFT) & (MH_UNITS - 1));
    slab_t *s = mh->unit_slab[unit];
    if (!s && unit == MH_UNITS - 1) s = mh->unit_slab[unit - 1];
    if (!s) return false;
    uintptr_t end = (uintptr_t)slab_start(s) + (size_t)s->units * MH_UNIT_SIZE;
    bool in_guard = (s->guarded && addr >= end - MH_PAGE && addr < end) || unit == MH_UNITS - 1;
    if (!in_guard) return false;
    uint32_t idx = s->capacity - 1;
    *f = (mh_fault_t){"heap-buffer-overflow", (void *)addr, slab_ustart(s) + (size_t)idx * s->bsize,
                      s->bsize - s->front, NULL, "the access hit the guard page after a slab",
                      0, 0, 0, 0};
    if (s->canary && s->info[idx]) f->size = s->info[idx] & INFO_SIZE_MASK;
    if (s->dbg) {
        f->alloc_stack = s->dbg[idx].alloc_stack;
        f->alloc_tid = s->dbg[idx].alloc_tid;
    }
    return true;
}

static void on_fault(int sig, void *info, void *uctx) {
    uintptr_t addr = (uintptr_t)((siginfo_t *)info)->si_addr;
    mh_fault_t f;
    if (large_explain(addr, &f) || slab_explain(addr, &f)) {
        mh_opt.abort_on_error = 1; /* the access cannot be resumed */
#if defined(__x86_64__)
        /* The report's stack starts at the faulting instruction. */
        const mcontext_t *mc = &((ucontext_t *)uctx)->uc_mcontext;
        stack_set_fault_context((uintptr_t)mc->gregs[REG_RIP], (uintptr_t)mc->gregs[REG_RBP]);
#endif
        mh_report_fault(&f);
    }
    os_restore_fault_handler(sig);
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
