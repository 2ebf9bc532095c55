/* Stack traces for debug mode: a frame-pointer walk (cheap enough to run on
 * every allocation and free), stacks stored once each in a depot and named
 * by a 32-bit id, and symbolisation with dladdr at report time only.
 *
 * The walk trusts a frame only if it lies above the previous one and below
 * the thread's stack top, so code built without frame pointers ends the
 * trace early instead of sending it astray. */
#include "internal.h"

#include <dlfcn.h>
#include <link.h>

#define DEPOT_BUCKETS   ((size_t)1 << 16)
#define DEPOT_MAX       ((size_t)1 << 20)    /* stacks kept; then new ones share id 0 */
#define DEPOT_BYTES     ((size_t)64 << 20)   /* frames storage, reserved lazily */
#define MAX_DEPTH       32

typedef struct depot_entry {
    uint32_t next;      /* bucket chain, by id */
    uint32_t depth;
    uint64_t hash;      /* 64 bits: equal hashes and depths are taken as equal stacks */
    uintptr_t frames[];
} depot_entry_t;

static uint32_t *buckets;              /* DEPOT_BUCKETS heads */
static depot_entry_t **entries;        /* by id */
static uint8_t *store, *store_end, *store_cur;
static uint32_t n_entries = 1;         /* id 0 means "no stack" */
static uintptr_t self_lo, self_hi;     /* this library's code, skipped in traces */
static _Atomic uint32_t next_thread = 1;
static __thread uint32_t t_number __attribute__((tls_model("initial-exec")));

extern void *__libc_stack_end;

/* A walk reads stack words the program never wrote (old frames' slots):
 * MemorySanitizer would take each for a use of an uninitialised value. */
#if defined(__has_feature)
#if __has_feature(memory_sanitizer)
#define NO_MSAN __attribute__((no_sanitize("memory")))
#endif
#endif
#ifndef NO_MSAN
#define NO_MSAN
#endif

uint32_t mh_thread_number(void) {
    if (!t_number) t_number = atomic_fetch_add(&next_thread, 1);
    return t_number;
}

extern const char mh_replaces_malloc __attribute__((weak, visibility("hidden"))); /* override.c */

static int find_self(struct dl_phdr_info *info, size_t size, void *arg) {
    (void)size;
    uintptr_t me = (uintptr_t)arg;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X)) continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        if (me >= lo && me < hi) {
            /* Only skip our frames when we are a library of our own, as
             * libminiheap.so is under any file name (it was told by the
             * name, and a renamed copy put its own frames at the top of
             * every stack, so the leak report took a thread's DTV for a
             * leak). Not in the program (linked statically, the range would
             * be all of it), nor in a library that embeds the prefixed API. */
            bool library = info->dlpi_name && info->dlpi_name[0] && &mh_replaces_malloc != NULL;
            if (library || (info->dlpi_name && strstr(info->dlpi_name, "miniheap"))) {
                self_lo = lo;
                self_hi = hi;
            }
            return 1;
        }
    }
    return 0;
}

void stack_init(void) { dl_iterate_phdr(find_self, (void *)(uintptr_t)&stack_init); }
void stack_lock_all(void) { mh_lock(&mh_locks.depot); }
void stack_unlock_all(void) { mh_unlock(&mh_locks.depot); }

/* The depot is mapped on first use (debug mode only); caller holds the lock. */
static bool depot_map(void) {
    if (buckets) return true;
    uint32_t *b = os_map_noreserve(DEPOT_BUCKETS * sizeof(uint32_t));
    entries = os_map_noreserve(DEPOT_MAX * sizeof(depot_entry_t *));
    store = os_map_noreserve(DEPOT_BYTES);
    if (!b || !entries || !store) return false;
    store_cur = store;
    store_end = store + DEPOT_BYTES;
    __atomic_store_n(&buckets, b, __ATOMIC_RELEASE);
    return true;
}

/* This thread's signal stack, [alt_lo, alt_hi): asked of the kernel at the
 * first walk, and again after the program sets another (override.c's
 * sigaltstack; with the prefixed library, which does not interpose it, a
 * signal stack set after the thread's first walk is not seen). */
static __thread uintptr_t t_alt_lo, t_alt_hi;
static __thread uint8_t t_alt_known;

void stack_altstack_changed(void) { t_alt_known = 0; }

static MH_NOINLINE void alt_query(void) {
    os_signal_stack(&t_alt_lo, &t_alt_hi);
    t_alt_known = 1;
}

/* Inline: it runs at every capture (outlined, it cost debug-mode churn 3 %
 * more instructions). */
static inline __attribute__((always_inline)) NO_MSAN uintptr_t stack_top(uintptr_t sp, bool safe) {
    /* The hot walk on the signal stack: its end. The top found below would
     * be the thread's, above whatever lies between (unmapped pages, other
     * mappings), where a garbage frame pointer of code built without them
     * would send the walk: a handler that allocated crashed debug mode
     * (t_bugs' clean_altstack). The interrupted frames are not followed
     * there; a safe walk (a report) reads on into them. */
    if (!safe && unlikely(!t_alt_known)) alt_query();
    if (!safe && sp - t_alt_lo < t_alt_hi - t_alt_lo) return t_alt_hi;
    /* glibc keeps a thread's descriptor at the top of the stack it made. */
    uintptr_t self = (uintptr_t)pthread_self();
    if (self > sp && self - sp < ((uintptr_t)256 << 20)) return self;
    uintptr_t end = (uintptr_t)__libc_stack_end;
    if (end > sp && end - sp < ((uintptr_t)1 << 30)) return end;
    return sp;
}

/* Follow the frame-pointer chain from fp. The hot walk (a debug-mode
 * capture, from our own frame) reads frames directly, trusting only those
 * inside the thread's stack; a `safe` walk (reports, the fault handler,
 * which may start from a faulting frame whose rbp is anything) reads each
 * frame with os_read_self, so a bad pointer ends the trace instead of
 * faulting inside the report. */
static inline __attribute__((always_inline)) NO_MSAN uint32_t walk_from(uintptr_t fp, uintptr_t *frames, uint32_t n,
                                                               uint32_t max, bool safe) {
    uintptr_t top = stack_top(fp, safe);
    if (safe && top == fp) top = fp + ((uintptr_t)64 << 20); /* a stack of the program's own making */
    /* (top - fp, not fp + 16: a frame pointer near the end of the address
     * space wrapped that sum to 0, and the walk read it: GNU as, built
     * without frame pointers, crashed in debug mode with rbp = -16) */
    while (n < max && fp && !(fp & 7) && fp < top && top - fp >= 16) {
        uintptr_t pair[2];
        if (safe) {
            if (!os_read_self(pair, (const void *)fp, sizeof pair)) break;
        } else {
            pair[0] = ((uintptr_t *)fp)[0];
            pair[1] = ((uintptr_t *)fp)[1];
        }
        uintptr_t next = pair[0], ret = pair[1];
        if (ret < 4096 || ret >> MH_ADDR_BITS) break; /* not a code address: the chain is broken */
        if (!(ret >= self_lo && ret < self_hi)) frames[n++] = ret;
        if (next <= fp) break;
        fp = next;
    }
    return n;
}

/* The hot walk (a capture in debug mode), from our own frame: `safe` is
 * false here, so the compiler drops its reads and checks. */
static MH_NOINLINE NO_MSAN uint32_t walk(uintptr_t *frames, uint32_t max) {
    return walk_from((uintptr_t)__builtin_frame_address(0), frames, 0, max, false);
}

uint32_t stack_capture(void) {
    uintptr_t frames[MAX_DEPTH];
    uint32_t depth = mh_opt.stack_depth < MAX_DEPTH ? mh_opt.stack_depth : MAX_DEPTH;
    uint32_t n = walk(frames, depth);
    if (!n) return 0;
    uint64_t h = 14695981039346656037ull; /* FNV-1a over the frames, 64 bits */
    for (uint32_t i = 0; i < n; i++) h = (h ^ frames[i]) * 1099511628211ull;
    /* Most stacks are seen before: look them up without the lock (entries
     * are published with a release store and never change). */
    if (__atomic_load_n(&buckets, __ATOMIC_ACQUIRE)) {
        uint32_t *head = &buckets[h & (DEPOT_BUCKETS - 1)];
        for (uint32_t id = __atomic_load_n(head, __ATOMIC_ACQUIRE); id;) {
            depot_entry_t *e = __atomic_load_n(&entries[id], __ATOMIC_ACQUIRE);
            if (e->hash == h && e->depth == n) return id; /* (a 64-bit collision is not worth a compare) */
            id = e->next;
        }
    }
    mh_lock(&mh_locks.depot);
    if (!depot_map()) {
        mh_unlock(&mh_locks.depot);
        return 0;
    }
    uint32_t *head = &buckets[h & (DEPOT_BUCKETS - 1)];
    for (uint32_t id = *head; id; id = entries[id]->next) {
        depot_entry_t *e = entries[id];
        if (e->hash == h && e->depth == n) {
            mh_unlock(&mh_locks.depot);
            return id;
        }
    }
    size_t need = sizeof(depot_entry_t) + n * sizeof(uintptr_t);
    uint32_t id = 0;
    if (n_entries < DEPOT_MAX && store_cur + need <= store_end) {
        depot_entry_t *e = (depot_entry_t *)store_cur;
        store_cur += need;
        e->hash = h;
        e->depth = n;
        memcpy(e->frames, frames, n * sizeof(uintptr_t));
        id = n_entries;
        e->next = *head;
        __atomic_store_n(&entries[id], e, __ATOMIC_RELEASE);
        __atomic_store_n(&n_entries, id + 1, __ATOMIC_RELEASE);
        __atomic_store_n(head, id, __ATOMIC_RELEASE);
    }
    mh_unlock(&mh_locks.depot);
    return id;
}

static void print_frame(mh_buf_t *b, uint32_t i, uintptr_t pc) {
    Dl_info info;
    buf_str(b, "    #");
    buf_dec(b, i);
    buf_str(b, " ");
    buf_hex(b, pc);
    /* Look up pc - 1: a return address may already be in the next function. */
    const char *sym = sym_lookup(pc);
    if (dladdr((void *)(pc - 1), &info)) {
        if (sym) {
            buf_str(b, " in ");
            buf_str(b, sym);
        } else if (info.dli_sname) {
            buf_str(b, " in ");
            buf_str(b, info.dli_sname);
            buf_str(b, "+");
            buf_hex(b, pc - (uintptr_t)info.dli_saddr);
        }
        if (info.dli_fname) {
            buf_str(b, " (");
            buf_str(b, info.dli_fname);
            buf_str(b, "+");
            buf_hex(b, pc - (uintptr_t)info.dli_fbase);
            buf_str(b, ")");
        }
    }
    buf_str(b, "\n");
}

void stack_print(mh_buf_t *b, uint32_t id) {
    if (!id || !__atomic_load_n(&buckets, __ATOMIC_ACQUIRE) || id >= __atomic_load_n(&n_entries, __ATOMIC_ACQUIRE)) {
        buf_str(b, "    (no stack recorded)\n");
        return;
    }
    depot_entry_t *e = __atomic_load_n(&entries[id], __ATOMIC_ACQUIRE);
    for (uint32_t i = 0; i < e->depth; i++) print_frame(b, i, e->frames[i]);
}

NO_MSAN uint32_t stack_walk_current(uintptr_t *frames, uint32_t max, uintptr_t pc, uintptr_t fp) {
    if (pc) { /* +1: print_frame looks up pc - 1, right for return addresses */
        frames[0] = pc + 1;
        return walk_from(fp, frames, 1, max, true);
    }
    return walk_from((uintptr_t)__builtin_frame_address(0), frames, 0, max, true);
}

void stack_print_frames(mh_buf_t *b, const uintptr_t *frames, uint32_t n) {
    if (!n) buf_str(b, "    (no stack: frame pointers missing)\n");
    for (uint32_t i = 0; i < n; i++) print_frame(b, i, frames[i]);
}

void stack_print_current(mh_buf_t *b, uintptr_t pc, uintptr_t fp) {
    uintptr_t frames[MAX_DEPTH];
    stack_print_frames(b, frames, stack_walk_current(frames, MAX_DEPTH, pc, fp));
}

uint32_t stack_frames(uint32_t id, const uintptr_t **frames) {
    if (!id || !__atomic_load_n(&buckets, __ATOMIC_ACQUIRE) || id >= __atomic_load_n(&n_entries, __ATOMIC_ACQUIRE))
        return 0;
    depot_entry_t *e = __atomic_load_n(&entries[id], __ATOMIC_ACQUIRE);
    *frames = e->frames;
    return e->depth;
}

/* Was the stack's innermost frame in a module whose path contains needle? */
bool stack_top_in_module(uint32_t id, const char *needle) {
    if (!id || !__atomic_load_n(&buckets, __ATOMIC_ACQUIRE) || id >= __atomic_load_n(&n_entries, __ATOMIC_ACQUIRE))
        return false;
    depot_entry_t *e = __atomic_load_n(&entries[id], __ATOMIC_ACQUIRE);
    Dl_info info;
    return e->depth && dladdr((void *)(e->frames[0] - 1), &info) && info.dli_fname &&
           strstr(info.dli_fname, needle);
}
