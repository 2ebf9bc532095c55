/* Shared types and constants of miniheap. One header for the whole library.
 *
 * Address space comes in miniheaps: 4 MiB, 4 MiB-aligned segments, each cut
 * into 64 units of 64 KiB. The last unit is a guard (PROT_NONE). A slab is a
 * run of 1..8 units holding blocks of one size class. Blocks above
 * MH_SMALL_MAX get a mapping of their own (large.c).
 *
 * Nothing the allocator depends on lives beside user blocks: slab bitmaps,
 * miniheap descriptors and thread caches are in separate metadata mappings
 * (meta.c), and a pointer is resolved through a flat radix table indexed by
 * address >> 22.
 */
#ifndef MH_INTERNAL_H
#define MH_INTERNAL_H

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "miniheap.h"

#define MH_INTERNAL __attribute__((visibility("hidden")))
#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define MH_NOINLINE __attribute__((noinline))
#define MH_COLD     __attribute__((cold, noinline))

/* ---- geometry -------------------------------------------------------- */
#define MH_PAGE_SHIFT    12
#define MH_PAGE          ((size_t)1 << MH_PAGE_SHIFT)
#define MH_SEG_SHIFT     22
#define MH_SEG_SIZE      ((size_t)1 << MH_SEG_SHIFT)          /* 4 MiB */
#define MH_UNIT_SHIFT    16
#define MH_UNIT_SIZE     ((size_t)1 << MH_UNIT_SHIFT)         /* 64 KiB */
#define MH_UNITS         64                                   /* per miniheap */
#define MH_USABLE_UNITS  63                                   /* the last is a guard */
#define MH_PAGES_PER_UNIT (MH_UNIT_SIZE / MH_PAGE)            /* 16 */
#define MH_MAX_SLAB_UNITS 8                                   /* slabs are <= 512 KiB */
#define MH_ADDR_BITS     47
/* The radix tables have two levels, so that start-up maps nothing
 * (programs run under a tight `ulimit -v`): static roots of 2^11 entries,
 * each covering 64 GiB, and leaves mapped when a miniheap is first made in
 * their range. One table's leaves hold 2^14 miniheaps (128 KiB); the
 * other's, the slab of each of their 64 KiB units (2^20 of them, 8 MiB of
 * address space, resident only where miniheaps are), so that a free finds
 * its block's slab in two loads, not three (see slab_of). */
#define MH_LEAF_BITS     14
#define MH_LEAF_SHIFT    (MH_SEG_SHIFT + MH_LEAF_BITS)
#define MH_ROOT_ENTRIES  ((size_t)1 << (MH_ADDR_BITS - MH_LEAF_SHIFT))
#define MH_LEAF_ENTRIES  ((size_t)1 << MH_LEAF_BITS)
#define MH_UNIT_LEAF_ENTRIES ((size_t)1 << (MH_LEAF_SHIFT - MH_UNIT_SHIFT))

/* Blocks up to this size live in slabs; larger ones get their own mapping.
 * At 128 KiB a slab of 4 blocks already spans 512 KiB, and rounding to a
 * size class would waste more than the one page a dedicated mapping wastes;
 * the mmap call is then small next to faulting in 32 pages. */
#define MH_SMALL_MAX     ((size_t)128 << 10)
#define MH_MIN_ALIGN     16
#define MH_MAX_CLASSES   80
#define MH_BUCKETS       8   /* fullness buckets per class: 0 = empty, 1..7 partial */

/* Requests above this fail at once: no mapping can be that large. */
#define MH_MAX_REQUEST   (((size_t)1 << MH_ADDR_BITS) - ((size_t)1 << 30))

/* ---- locks ----------------------------------------------------------- */
typedef pthread_mutex_t mh_lock_t;
#define MH_LOCK_INIT PTHREAD_MUTEX_INITIALIZER
static inline void mh_lock(mh_lock_t *l) { pthread_mutex_lock(l); }
static inline void mh_unlock(mh_lock_t *l) { pthread_mutex_unlock(l); }
static inline bool mh_trylock(mh_lock_t *l) { return pthread_mutex_trylock(l) == 0; }

/* ---- options (options.c) --------------------------------------------- */
enum { MODE_FAST = 0, MODE_HARDENED = 1, MODE_DEBUG = 2 };
typedef struct mh_options {
    uint32_t mode;            /* preset: fast, hardened (default), debug */
    uint32_t canary;          /* canaries right after the requested size, exact to the byte */
    uint32_t underflow;       /* debug: a canary in front of each block */
    uint32_t poison;          /* freed blocks: 0 no, 1 first 32 bytes, 2 whole block; checked on reuse */
    uint32_t fill_new;        /* fill new blocks with a pattern (uninitialised reads show up) */
    uint32_t quarantine_mb;   /* freed blocks wait this many MiB (of the process, shared by threads) before reuse */
    uint32_t random;          /* randomised slot choice */
    uint32_t slab_guards;     /* a guard page at the end of each slab */
    uint32_t seal_large;      /* freed large blocks PROT_NONE while cached */
    uint32_t sample_rate;     /* 1 in N allocations on its own page between guard pages (0: off) */
    uint32_t stacks;          /* remember allocation and free stacks */
    uint32_t stack_depth;
    uint32_t leak_report;     /* report blocks no longer reachable at exit */
    uint32_t leak_system;     /* ... also those whose allocation stack is all system code */
    uint32_t exitcode;        /* exit status after a leak report */
    uint32_t check_every;     /* run mh_check() every N operations of a thread (0: never) */
    uint32_t check_exit;      /* run mh_check() at exit (live blocks' canaries) */
    uint32_t zero_guard;      /* malloc(0) returns a block that faults on any access */
    uint32_t mismatch;        /* record how a block was allocated: 1 new/new[] pairs, sized frees; 2 also malloc against new */
    uint32_t decay_ms;        /* free pages and empty miniheaps kept this long before given back */
    uint32_t miniheap_cache;  /* empty miniheaps kept mapped (their pages given back) */
    uint32_t large_cache_mb;  /* freed large mappings kept for reuse, in MiB */
    uint32_t float_pct;       /* realloc moves a block out of a slab less than this % full */
    uint32_t tcache;          /* per-thread caches on/off */
    uint32_t tcache_kb;       /* KiB of blocks a thread cache holds per size class */
    uint32_t arenas;          /* arenas of slabs; 0: one per two CPUs */
    uint32_t background;      /* a purge thread gives memory back while the program sleeps (purge.c) */
    uint32_t mesh;            /* sparse pages of a class share physical pages (mesh.c) */
    uint32_t abort_on_error;  /* 0: call the handler (tests) instead of abort() */
    uint32_t seed;            /* 0: randomness from the kernel; N: a fixed sequence (src/random.c) */
    uint32_t stats_at_exit;   /* statistics at exit (stats.c) */
    uint32_t stats_json;      /* ... as JSON lines */
    uint32_t stats_fd;        /* ... to this descriptor (2), or: */
    uint32_t stats_signal;    /* ... whenever this signal arrives (0: never) */
    uint32_t stats_interval_ms; /* ... every N ms (0: never) */
    uint32_t symbolize;       /* 0 no; 1 reports that end the program; 2 every report */
    char suppressions[256];   /* leak suppressions file (LeakSanitizer's format) */
    char symbolizer[256];     /* the symbolizer to run ("": llvm-symbolizer or addr2line on PATH) */
    char stats_file[256];     /* statistics to this file (%p: pid) */
} mh_options_t;
MH_INTERNAL extern mh_options_t mh_opt;
/* An option read by the purge thread, or by any thread while another may
 * set it with mh_set_options(): a relaxed atomic load (options are stored
 * with relaxed atomic stores). */
#define OPT(field) __atomic_load_n(&mh_opt.field, __ATOMIC_RELAXED)
MH_INTERNAL extern _Atomic int mh_layout_fixed;   /* blocks exist: layout options are fixed */
MH_INTERNAL void mh_options_init(void);
MH_INTERNAL int  mh_options_parse(const char *s, const char *report); /* report: where s came from, NULL: quiet */

/* Derived from the options whenever they change: what the hot paths test. */
typedef struct mh_config {
    bool     hard;            /* any per-block work at all (else the fast path is pure) */
    uint32_t front;           /* bytes of front redzone */
    uint32_t tail;            /* bytes a request is grown by for its tail canary */
    uint32_t poison_len;      /* 0, 32 or ~0 (whole block) */
    uint32_t canary_len;      /* tail canary bytes checked */
    size_t   quarantine;      /* bytes per thread */
    bool     alloc_stacks;    /* allocation stacks kept (alloc_stacks()): fixed with the layout */
    bool     lean;            /* hard, with hardened mode's work only (alloc.c's *_lean paths) */
} mh_config_t;
MH_INTERNAL extern mh_config_t mh_cfg;
MH_INTERNAL void mh_config_update(void);

/* Pointers to user memory kept in metadata are stored mangled, so neither
 * memcheck's leak scan nor an attacker reading metadata finds them. */
MH_INTERNAL extern uintptr_t mh_ptr_key;
MH_INTERNAL extern uint64_t mh_secret;
#define MANGLE(p) ((uintptr_t)(p) ^ mh_ptr_key)
#define UNMANGLE(v) ((uint8_t *)((uintptr_t)(v) ^ mh_ptr_key))

/* ---- OS layer (os.c): the only place that makes system calls ----------- */
MH_INTERNAL void  *os_map(size_t size);                       /* RW, zeroed */
MH_INTERNAL uint32_t os_cpu_count(void);
MH_INTERNAL size_t os_page_size(void);
MH_INTERNAL bool   os_secure(void);
MH_INTERNAL bool   os_address_space_limited(void);       /* RLIMIT_AS set */
MH_INTERNAL bool   os_overcommit_strict(void);           /* vm.overcommit_memory=2 */
MH_INTERNAL void  *os_map_aligned(size_t size, size_t align); /* RW, zeroed, aligned */
MH_INTERNAL void  *os_reserve(size_t size);                   /* PROT_NONE, no memory */
MH_INTERNAL void  *os_map_noreserve(size_t size);             /* RW, lazily backed tables */
MH_INTERNAL void   os_unmap(void *p, size_t size);
MH_INTERNAL bool   os_commit(void *p, size_t size);           /* PROT_NONE -> RW */
MH_INTERNAL bool   os_protect_none(void *p, size_t size);
MH_INTERNAL bool   os_guards_light(void);                    /* guards in miniheaps are page-table marks (else mprotect) */
MH_INTERNAL bool   os_guard_mark(void *p, size_t size);      /* MADV_GUARD_INSTALL */
MH_INTERNAL void   os_guard_unmark(void *p, size_t size);    /* MADV_GUARD_REMOVE */
MH_INTERNAL void   os_guards_plain(void);                    /* guards by mprotect only (valgrind) */
MH_INTERNAL void   os_purge(void *p, size_t size);            /* give pages back; they read as 0 */
MH_INTERNAL bool   os_discard(void *p, size_t size);          /* the same, not counted (tool shadow) */
MH_INTERNAL void  *os_remap(void *old, size_t old_size, size_t new_size, void *fixed);
MH_INTERNAL void   os_random(void *buf, size_t n);
/* random.c: the randomness of slot choice and sampling (option seed). */
MH_INTERNAL void   mh_random(void *buf, size_t n);
MH_INTERNAL void   mh_random_restart(void);
MH_INTERNAL void   mh_random_after_fork(void);  /* a forked child takes a sequence of its own */
/* Forks this process is the child of: what a generator drawn from mh_random
 * (a bin's slot generator) compares to know it is its parent's. */
MH_INTERNAL extern uint32_t mh_random_forks;
MH_INTERNAL uint64_t os_now_ms(void);
MH_INTERNAL void   os_write_stderr(const char *s, size_t n);
/* A helper thread with signals blocked as os_signals_block does (the
 * faults stay open), named for ps and gdb. Joinable: whoever ends it waits
 * for it (os_thread_join), so that the program's last thread, not ours,
 * is the one that exits the process (helpers_stop). */
MH_INTERNAL bool   os_thread_start(void *(*fn)(void *), const char *name, pthread_t *out);
MH_INTERNAL bool   os_thread_join(pthread_t t, uint32_t timeout_ms);
MH_INTERNAL struct timespec os_deadline(uint32_t ms); /* CLOCK_REALTIME, for timed waits */
/* Allocator work the program does not call and so cannot wrap in its own
 * signal mask (a thread's cache flushed at its exit, fork's handlers, the
 * exit-time reports) runs with every signal blocked: a handler that
 * allocates would otherwise wait on a lock its own thread holds. */
MH_INTERNAL void   os_signals_block(sigset_t *saved);
MH_INTERNAL void   os_signals_restore(const sigset_t *saved);
MH_INTERNAL void   os_signal_stack(uintptr_t *lo, uintptr_t *hi); /* this thread's sigaltstack */
MH_INTERNAL int    os_set_signal_stack(const stack_t *ss, stack_t *old);
MH_INTERNAL int    os_getpid(void);
MH_INTERNAL void   os_close(int fd);
MH_INTERNAL int    os_open_append(const char *path);          /* -1 on failure */
MH_INTERNAL void   os_write_fd(int fd, const void *buf, size_t n);
MH_INTERNAL long   os_read_fd(int fd, void *buf, size_t n);
MH_INTERNAL bool   os_pipe(int fds[2]);                        /* close-on-exec */
MH_INTERNAL int    os_wait_readable(int fd, int timeout_ms);   /* 1 readable, 0 timeout, -1 error */
MH_INTERNAL void   os_abort(void) __attribute__((noreturn));
MH_INTERNAL void   os_exit(int status) __attribute__((noreturn));
MH_INTERNAL bool   os_read_self(void *dst, const void *src, size_t n); /* false: unreadable, no fault */
MH_INTERNAL long   os_read_number(const char *path, long fallback);
MH_INTERNAL long   os_read_file(const char *path, char *buf, size_t cap);
MH_INTERNAL void   os_self_exe(char *buf, size_t cap);
MH_INTERNAL bool   os_executable(const char *path);
MH_INTERNAL long   os_run_capture(const char *const argv[], char *out, size_t cap, int timeout_ms);
MH_INTERNAL bool   os_install_fault_handler(void (*fn)(int, void *, void *));
struct sigaction;
MH_INTERNAL int    os_program_sigaction(int sig, const struct sigaction *act, struct sigaction *old);
MH_INTERNAL bool   os_keeps_fault_handler(int sig); /* mesh=1: SIGSEGV, SIGBUS stay miniheap's */
/* glibc's own sigaction: the public name is interposed (override.c). */
extern int __sigaction(int sig, const struct sigaction *act, struct sigaction *old);
MH_INTERNAL void   os_chain_fault(int sig, void *info, void *uctx);
MH_INTERNAL uint32_t os_thread_id(void);
/* How a miniheap is backed: anonymous memory, or with meshing views of one
 * memfd at file offset == address (os_shared_backing_init, once, before the
 * first miniheap). */
MH_INTERNAL bool   os_shared_backing_init(void);
MH_INTERNAL void   os_shared_backing_close(void);                   /* no miniheap left */
MH_INTERNAL void  *os_segment_alloc(void);         /* MH_SEG_SIZE, MH_SEG_SIZE-aligned */
MH_INTERNAL void   os_segment_free(void *seg);
/* Purges queued and given to the kernel in one call (process_madvise), so
 * a pass that gives back many scattered page runs pays for one TLB
 * shootdown, not one per run (on a 2-CPU VM, 8,192 runs of 4 KiB while
 * another thread ran: 0.38 s with madvise, 0.008 s batched). The caller
 * keeps the queued ranges unused (holds their lock) until os_purge_flush. */
#define OS_PURGE_BATCH 128
typedef struct os_purge_batch { uint32_t n; struct { void *base; size_t len; } r[OS_PURGE_BATCH]; } os_purge_batch_t;
MH_INTERNAL void   os_purge_flush(os_purge_batch_t *b);
MH_INTERNAL void   os_segment_purge(os_purge_batch_t *b, void *p, size_t size); /* queued (and punched, mesh=1) */
MH_INTERNAL bool   os_protect_read(void *p, size_t size);
MH_INTERNAL bool   os_segment_alias(void *at, const void *onto, size_t size); /* at's pages become onto's */
MH_INTERNAL void   os_segment_punch(const void *p, size_t size);   /* free the file pages of p's own offsets */
MH_INTERNAL int    os_backing_fork_begin(void);                     /* child: a new file (-1: failed) */
MH_INTERNAL bool   os_backing_copy(int to, const void *seg, size_t size);
MH_INTERNAL bool   os_backing_fork_remap(int to, void *seg);
MH_INTERNAL void   os_backing_fork_end(int to);
MH_INTERNAL bool   os_membarrier_register(void);   /* solo.c: before the first os_membarrier */
MH_INTERNAL bool   os_membarrier(void);            /* every thread of the process passes a full barrier */
MH_INTERNAL void   os_yield(void);
MH_INTERNAL void   os_futex_wait(_Atomic uint32_t *word, uint32_t val, int timeout_ms);
MH_INTERNAL void   os_futex_wake(_Atomic uint32_t *word);
MH_INTERNAL size_t os_other_threads(uint32_t *tids, size_t max); /* kernel ids, the caller's excluded */
MH_INTERNAL bool   os_signal_thread(uint32_t tid, int sig);
MH_INTERNAL bool   os_install_signal(int sig, void (*fn)(int), struct sigaction *old); /* SA_RESTART; old may be NULL */
MH_INTERNAL void   os_restore_signal(int sig, const struct sigaction *old);
MH_INTERNAL void   os_readable_mappings(const uintptr_t *addrs, size_t n, uintptr_t *lo, uintptr_t *hi);
MH_INTERNAL extern _Atomic size_t os_purged_total, os_unmapped_total;
/* Bytes given back to the system since start (did a pass give any back?). */
static inline uint64_t os_given_back(void) { return atomic_load(&os_purged_total) + atomic_load(&os_unmapped_total); }

/* ---- metadata allocator (meta.c): never beside user data --------------- */
MH_INTERNAL void  *meta_alloc(size_t size);   /* zeroed */
MH_INTERNAL void  *meta_alloc_part(size_t size, size_t zeroed); /* only its first zeroed bytes are */
MH_INTERNAL void   meta_free(void *p, size_t size);
MH_INTERNAL size_t meta_resident_bytes(void);  /* in use or kept free, not given back */
MH_INTERNAL uint64_t meta_purge(uint64_t now, uint64_t decay, bool force); /* free metadata pages back (purge.c's pass) */
MH_INTERNAL void   meta_lock_all(void);
MH_INTERNAL void   meta_unlock_all(void);

/* ---- size classes (sizeclass.c) ---------------------------------------- */
typedef struct size_class {
    uint32_t size;        /* block size */
    uint32_t units;       /* 64 KiB units per slab */
    uint32_t capacity;    /* blocks per slab */
    uint32_t bucket_mul;  /* (used * bucket_mul) >> 16: about used * (MH_BUCKETS - 1) / capacity (never above) */
} size_class_t;
MH_INTERNAL extern size_class_t mh_classes[MH_MAX_CLASSES];
MH_INTERNAL extern uint32_t mh_nclasses;     /* the zero class included */
MH_INTERNAL extern uint32_t mh_zero_cls;     /* the class of 0-byte blocks (zero_guard), the last */
MH_INTERNAL extern uint8_t mh_class_index[(MH_SMALL_MAX >> 4) + 1];
MH_INTERNAL void sizeclass_init(void);
static inline uint32_t size_to_class(size_t n) { return mh_class_index[(n + 15) >> 4]; }
MH_INTERNAL int sizeclass_for_aligned(size_t size, size_t align); /* -1 if none */

/* ---- slabs (slab.c) ----------------------------------------------------- */
struct miniheap;
/* Per-block record kept with stacks (alloc_stacks()). Written by the block's owner, read
 * by reports from any thread (a racing double free): relaxed atomics. */
typedef struct block_dbg {
    uint32_t alloc_stack, free_stack;   /* stack depot ids */
    uint32_t alloc_tid, free_tid;
} block_dbg_t;
#define DBG_GET(d, field) __atomic_load_n(&(d)->field, __ATOMIC_RELAXED)
#define DBG_SET(d, field, v) __atomic_store_n(&(d)->field, (v), __ATOMIC_RELAXED)

/* Per-block info word, kept by every slab: requested size, how it was
 * allocated and whether it is live. 0 means "never handed out". The
 * allocation sets the live bit with a plain store (the block is its own
 * until then), and a free claims it with one locked instruction on the
 * line it reads the size from. A live bitmap, 64 blocks a word, needed a
 * locked `or` on every allocation: fast mode took 12-14 % longer on bench
 * larson, mstress, xmalloc and churn with it. */
#define INFO_SIZE_MASK  0x0fffffffu
#define INFO_KIND_SHIFT 28
#define INFO_LIVE       0x80000000u
enum { KIND_MALLOC = 1, KIND_NEW = 2, KIND_NEW_ARRAY = 3 };
#define INFO(n, kind) ((uint32_t)(n) | ((uint32_t)(kind) << INFO_KIND_SHIFT))
#define INFO_KIND(v)  ((int)(((v) >> INFO_KIND_SHIFT) & 3))
/* Is a block allocated as `had` (0: not known) wrongly released as `kind`?
 * new against delete[] and new[] against delete always count: both sides
 * are this library's operators. malloc against delete, or new against
 * free, only with mismatch=2: a second copy of the C++ runtime makes such
 * pairs out of correct code. Its operator new calls malloc, so its blocks
 * look malloc'd when the program's delete (this library's) releases them.
 * Rust's libLLVM.so, with libstdc++ linked in, does this for rust-lld. */
static inline bool kinds_clash(int had, int kind) {
    if (!had || !kind || had == kind) return false;
    return mh_opt.mismatch >= 2 || (had != KIND_MALLOC && kind != KIND_MALLOC);
}
/* Slabs of blocks under 8 KiB keep 16-bit info words (size in 13 bits, kind
 * in 2, live in the top one): for 16-byte blocks a 32-bit word was a quarter
 * of the block, resident as long as any block near it lives (hardened
 * settled ÷ live on the realloc'ed spike: 1.71 with 32 bits, see slab.c).
 * Both widths read and write as the 32-bit layout above. */
#define INFO16_MAX_BLOCK 8191u
static inline uint32_t info_widen(uint32_t v) {
    return (v & 0x1fffu) | ((v >> 13 & 3u) << INFO_KIND_SHIFT) | ((v >> 15) << 31);
}
static inline uint16_t info_narrow(uint32_t v) {
    return (uint16_t)((v & 0x1fffu) | ((v >> INFO_KIND_SHIFT & 3u) << 13) | ((v >> 31) << 15));
}

/* A slab's descriptor begins a cache line (meta_alloc aligns objects to
 * their power-of-two size, at least 64 bytes). */
typedef struct slab {
    /* Line 0, read by every malloc and free and written only as the slab is
     * made. Beside `used` and the list links, which other threads' batches
     * write under the class lock, it moved between cores at every batch
     * (bench larson, hardened: 7 % of the time on free's first load of it;
     * with the line to itself, 12 % less time). */
    uintptr_t ustart_m;              /* first block's user address (start + front), mangled */
    uint64_t magic;                  /* (off * magic) >> 40 == off / bsize */
    void     *info;                  /* per block INFO(), 16 or 32 bits (info16) */
    uint64_t *poisoned;              /* 1 = free and poisoned (NULL: no poisoning) */
    block_dbg_t *dbg;                /* per block stacks (NULL: not kept) */
    uint32_t bsize, span;            /* span: capacity * bsize */
    uint32_t poison_len;             /* bytes of a freed block poisoned (as the slab was made) */
    uint16_t cls;
    uint16_t canary_len;             /* tail bytes covered (the slack, up to this) */
    uint8_t  front;                  /* front redzone of every block */
    uint8_t  canary;                 /* blocks carry a tail canary (info holds their size) */
    uint8_t  info16;
    uint8_t  zero;                   /* 0-byte blocks: the slab is never accessible (canary_len 0) */
    uint8_t  guarded;                /* last page is a guard */
    uint8_t  arena;
    uint8_t  lean;                   /* made with hardened mode's work only: alloc.c's *_lean paths may take it */
    /* Fixed, read off the hot paths. */
    struct miniheap *mh;
    struct slab_mesh *mesh;          /* pages meshed with others (NULL: none), mesh.c */
    uint32_t capacity;
    uint16_t nwords;
    uint8_t  units, first_unit;
    /* Changed by batches and give-back passes, under the class lock. */
    struct slab *next, *prev;        /* bucket list of the class */
    struct slab *dirty_next;         /* class list of slabs with free pages not given back */
    uint32_t used;                   /* not free in this slab (live or in a cache) */
    uint32_t hint;                   /* word to start looking for a free block */
    uint64_t dirty_ms;
    uint64_t purged[2];              /* per page: given back, still zero */
    _Atomic uint32_t resize_seq;     /* odd while a block is resized in place (mh_check skips it) */
    uint8_t  bucket;                 /* MH_BUCKETS when full (on no list) */
    uint8_t  on_dirty;
    /* 1 = free in the slab (under the class lock); then poisoned, info, dbg */
    uint64_t free_map[];
} slab_t;
_Static_assert(offsetof(slab_t, lean) < 64 && offsetof(slab_t, mh) == 64, "slab_t: line 0 is the hot fields'");
static inline uint8_t *slab_ustart(const slab_t *s) { return UNMANGLE(s->ustart_m); }
static inline uint8_t *slab_start(const slab_t *s) { return slab_ustart(s) - s->front; }
/* A block's info word, in the 32-bit layout, with the given memory order
 * (__ATOMIC_*: a report or a heap walk in another thread may read it while
 * the block's owner writes it). */
static inline uint32_t info_load(const slab_t *s, uint32_t idx, int order) {
    if (s->info16) return info_widen(__atomic_load_n(&((uint16_t *)s->info)[idx], order));
    return __atomic_load_n(&((uint32_t *)s->info)[idx], order);
}
static inline void info_store(slab_t *s, uint32_t idx, uint32_t v, int order) {
    if (s->info16) __atomic_store_n(&((uint16_t *)s->info)[idx], info_narrow(v), order);
    else __atomic_store_n(&((uint32_t *)s->info)[idx], v, order);
}
static inline uint32_t block_info(const slab_t *s, uint32_t idx) { return info_load(s, idx, __ATOMIC_RELAXED); }
/* Is the block owned by the program? Acquire: its size and canaries, written
 * before it became live, are seen too. */
static inline bool slab_live(const slab_t *s, uint32_t idx) {
    return info_load(s, idx, __ATOMIC_ACQUIRE) & INFO_LIVE;
}
/* The live bits of blocks w*64 .. w*64+63, for heap walks. */
static inline uint64_t slab_live_word(const slab_t *s, uint32_t w) {
    uint64_t bits = 0;
    /* (a guarded slab holds fewer blocks than its class: words past its
     * capacity may exist, and its info array ends at the class's) */
    uint32_t end = s->capacity <= w * 64 ? 0 : s->capacity - w * 64 < 64 ? s->capacity - w * 64 : 64;
    if (s->info16) {
        const uint16_t *info = (const uint16_t *)s->info + w * 64;
        for (uint32_t i = 0; i < end; i++) bits |= (uint64_t)(__atomic_load_n(&info[i], __ATOMIC_ACQUIRE) >> 15) << i;
    } else {
        const uint32_t *info = (const uint32_t *)s->info + w * 64;
        for (uint32_t i = 0; i < end; i++) bits |= (uint64_t)(__atomic_load_n(&info[i], __ATOMIC_ACQUIRE) >> 31) << i;
    }
    return bits;
}
/* Size the program asked for (or the whole slot without canaries). */
static inline size_t slab_block_size(const slab_t *s, uint32_t idx) {
    return s->canary ? (block_info(s, idx) & INFO_SIZE_MASK) : s->bsize - s->front;
}

typedef struct class_bins {
    slab_t *bucket[MH_BUCKETS];      /* (its lock: bin_lock) */
    uint32_t nonempty;               /* bit b: bucket b has slabs */
    uint32_t empty_slabs;            /* in bucket 0 */
    slab_t *dirty;
    uint64_t allocs, frees;          /* slab-level counts, under the lock */
    uint64_t rng;                    /* slot randomisation */
    uint32_t rng_forks;              /* mh_random_forks when rng was drawn: a child draws its own */
    char pad[64];
} class_bins_t;
/* Slabs are grouped in arenas, one per two CPUs (up to MH_ARENAS; option
 * `arenas`), each with its own fullest-first bins; a thread takes new
 * blocks from its own arena, so threads of different arenas do not share
 * slabs (nor their cache lines). */
#define MH_ARENAS 8
MH_INTERNAL extern class_bins_t mh_bins[MH_ARENAS * MH_MAX_CLASSES];
MH_INTERNAL extern uint32_t mh_narenas;
/* Read by the purge thread while the first allocation after mh_reset()
 * sets it (every arena's bins exist either way): relaxed atomics. */
static inline uint32_t narenas(void) { return __atomic_load_n(&mh_narenas, __ATOMIC_RELAXED); }
static inline class_bins_t *bins_of(uint32_t arena, uint32_t cls) { return &mh_bins[arena * MH_MAX_CLASSES + cls]; }
MH_INTERNAL void bins_lock_all(void);
MH_INTERNAL void bins_unlock_all(void);

/* The locks fork() holds (taken in this order by alloc.c's handlers, but
 * the bins' after the tick's), kept together: after a fork the parent's
 * unlocks and the child's each copy every page they write. Spread over the
 * library's data and the bins, they made about 26 page copies per fork
 * (a bash subshell took 60 us longer than without the handlers). Zero
 * bytes are the unlocked state on glibc and musl (alloc.c checks). */
typedef struct mh_locks {
    mh_lock_t report;                /* reports, one at a time */
    mh_lock_t tick;                  /* one give-back pass at a time; mh_reset, fork */
    mh_lock_t heap;                  /* miniheaps and their units */
    mh_lock_t large;                 /* large blocks */
    mh_lock_t caches;                /* the list of thread caches */
    mh_lock_t meta;                  /* the metadata allocator */
    mh_lock_t depot;                 /* the stack depot */
    mh_lock_t bins[MH_ARENAS * MH_MAX_CLASSES]; /* mh_bins', arena by arena */
} mh_locks_t;
MH_INTERNAL extern mh_locks_t mh_locks;
/* The fullness bucket a slab belongs in: 0 empty, MH_BUCKETS full (on no
 * list), else 1 .. MH_BUCKETS - 1 on its class's scale (a guarded slab holds
 * a few blocks less). A multiply: this runs for every block a cache flush
 * returns, and a division there was 3 % of bench/external binary_trees. */
static inline uint32_t slab_bucket_for(const slab_t *s) {
    if (s->used == 0) return 0;
    if (s->used >= s->capacity) return MH_BUCKETS;
    return 1 + ((s->used * mh_classes[s->cls].bucket_mul) >> 16);
}
static inline mh_lock_t *bin_lock(const class_bins_t *b) { return &mh_locks.bins[b - mh_bins]; }

/* Batches carry tagged pointers: bit 0 set = the block is poisoned (check
 * the pattern before reuse). */
#define TAG_POISONED ((uintptr_t)1)
static inline void *untag(void *p) { return (void *)((uintptr_t)p & ~(uintptr_t)15); }
/* A free block taken from a slab or held by a thread cache, with its slab:
 * while a cache holds the block, the slab (whose `used` counts it) stays,
 * so the malloc that hands it out reads the slab from here, not through
 * the radix (loads that depend on each other and miss in a large heap:
 * cppcheck, fast mode, 1.69 s with them, 1.58 s without, when the lookup
 * was three loads; glibc 1.51 s). */
typedef struct tslot {
    void *tagged;
    struct slab *s;
} tslot_t;
MH_INTERNAL uint32_t slab_alloc_batch(uint32_t arena, uint32_t cls, tslot_t *out, uint32_t n);
MH_INTERNAL void     slab_free_batch(uint32_t cls, void **ptrs, uint32_t n);
MH_INTERNAL void     slab_free_batch_since(uint32_t cls, void **ptrs, uint32_t n, uint64_t since);
MH_INTERNAL bool     slab_block_cached(void *p, uint32_t cls);
MH_INTERNAL extern _Atomic int32_t slab_guard_budget;
MH_INTERNAL void     slab_guards_gone(uint32_t n);
MH_INTERNAL tslot_t  slab_float(void *p, slab_t *s, size_t size, bool *alone); /* *alone: s is its class's only partial slab */
/* Give-back passes: each returns when its next piece falls due (UINT64_MAX: none). */
/* Has a piece free since stamp waited out decay (or is the pass forced)?
 * If not, *due becomes the earlier of itself and when it will have. (Not
 * now - stamp: a stamp set after the pass read the clock would wrap to
 * "due".) */
static inline bool purge_ripe(uint64_t now, uint64_t stamp, uint64_t decay, bool force, uint64_t *due) {
    if (force || now >= stamp + decay) return true;
    if (stamp + decay < *due) *due = stamp + decay;
    return false;
}
MH_INTERNAL uint64_t slab_purge_class(uint32_t cls, uint64_t now, uint64_t decay, bool force);
MH_INTERNAL void     slab_foreach(void (*fn)(slab_t *, void *), void *arg); /* bins_lock_all and mh_locks.heap held */
MH_INTERNAL void     slab_reset_all(void);

/* slab.c's bookkeeping, for mesh.c (class lock held). */
MH_INTERNAL void slab_rebucket(class_bins_t *b, slab_t *s);
MH_INTERNAL void slab_dirty(class_bins_t *b, slab_t *s, uint64_t now);
MH_INTERNAL void slab_slot_return(class_bins_t *b, slab_t *s, uint32_t idx, uintptr_t tagged, uint64_t now);

/* ---- meshing (mesh.c) ----------------------------------------------------- */
MH_INTERNAL extern int mh_meshing;          /* mesh=1 took effect: miniheaps are file-backed */
MH_INTERNAL void mesh_init(void);
/* A block of s goes back: if s owns it on a meshed-away page, its slots go
 * to the targets (slab_slot_return), *back says whether a page of s became
 * its own again (its slots free, used went down), and true is returned;
 * else nothing is done and false is returned. */
MH_INTERNAL bool mesh_free_block(class_bins_t *b, slab_t *s, uint32_t idx, uintptr_t tagged, uint64_t now, bool *back);
MH_INTERNAL void mesh_bins(class_bins_t *b);             /* class lock held: slabs just settled */
MH_INTERNAL void mesh_slab_release(slab_t *s);           /* s is given back: no meshing may be left */
MH_INTERNAL void mesh_slab_forget(slab_t *s);            /* mh_reset */
MH_INTERNAL bool mesh_fault(uintptr_t addr);             /* fault.c: a write that waited for meshing; retry it */
MH_INTERNAL void mesh_fork_prepare(void);                /* all locks held */
MH_INTERNAL void mesh_fork_parent(void);
MH_INTERNAL void mesh_fork_child(void);
MH_INTERNAL void mesh_stats(uint64_t *meshes, size_t *meshed_bytes);
MH_INTERNAL const char *mesh_check_slab(const slab_t *s); /* check.c: NULL, or what is wrong */

static inline uint32_t slab_index(const slab_t *s, uintptr_t off) {
    return (uint32_t)((off * s->magic) >> 40);
}
/* The index of block p, known to be one of s's. */
static inline uint32_t block_index(const slab_t *s, const void *p) {
    return slab_index(s, (uintptr_t)p - (uintptr_t)slab_ustart(s));
}

/* ---- miniheaps (miniheap.c) -------------------------------------------- */
typedef struct miniheap {
    uintptr_t base_m;                /* mangled */
    struct miniheap *next, *prev;    /* list by used units */
    struct miniheap *dirty_next;
    uint64_t free_units;             /* bit u: unit u holds no slab */
    uint64_t dirty_units;            /* free units not yet given back */
    _Atomic uint64_t guard_units;    /* bit u: the last page of unit u is PROT_NONE */
    uint64_t dirty_ms, empty_ms;
    uint32_t used_units;
    uint8_t  on_dirty, listed;
    /* Every unit of a slab points at it: the miniheap's 64 entries of the
     * unit table's leaf (mh_unit_radix). */
    slab_t **unit_slab;
} miniheap_t;

typedef _Atomic(miniheap_t *) radix_leaf_t[MH_LEAF_ENTRIES];
MH_INTERNAL extern void *_Atomic mh_radix[MH_ROOT_ENTRIES];      /* radix_leaf_t *, miniheap.c's leaf_get */
typedef slab_t *unit_leaf_t[MH_UNIT_LEAF_ENTRIES];
MH_INTERNAL extern void *_Atomic mh_unit_radix[MH_ROOT_ENTRIES]; /* unit_leaf_t * */
MH_INTERNAL miniheap_t *miniheap_take_units(uint32_t units, uint32_t *first_unit, uint64_t *clean_units);
/* dirty: units with pages not given back, free since dirty_since (their
 * slab's give-back clock goes on) */
MH_INTERNAL void miniheap_release_units(miniheap_t *mh, uint32_t first, uint32_t units, uint64_t dirty,
                                        uint64_t dirty_since);
MH_INTERNAL uint64_t miniheap_purge(uint64_t now, uint64_t decay, bool force);
MH_INTERNAL void miniheap_reset_all(void);
MH_INTERNAL void miniheap_foreach(void (*fn)(miniheap_t *, void *), void *arg); /* lock held by caller */
static inline uint8_t *mh_base(const miniheap_t *mh) { return UNMANGLE(mh->base_m); }

static inline miniheap_t *miniheap_of(const void *p) {
    uintptr_t a = (uintptr_t)p;
    if (unlikely(a >> MH_ADDR_BITS)) return NULL;
    radix_leaf_t *leaf = atomic_load_explicit(&mh_radix[a >> MH_LEAF_SHIFT], memory_order_acquire);
    if (unlikely(!leaf)) return NULL;
    return atomic_load_explicit(&(*leaf)[(a >> MH_SEG_SHIFT) & (MH_LEAF_ENTRIES - 1)], memory_order_acquire);
}

/* The slab of the unit holding p, or NULL. (The leaf's entry is written
 * as the slab is made, with release, and the slab's fields before it.) */
static inline slab_t *unit_slab_of(const void *p) {
    uintptr_t a = (uintptr_t)p;
    if (unlikely(a >> MH_ADDR_BITS)) return NULL;
    unit_leaf_t *leaf = atomic_load_explicit(&mh_unit_radix[a >> MH_LEAF_SHIFT], memory_order_acquire);
    if (unlikely(!leaf)) return NULL;
    return __atomic_load_n(&(*leaf)[(a >> MH_UNIT_SHIFT) & (MH_UNIT_LEAF_ENTRIES - 1)], __ATOMIC_ACQUIRE);
}

/* Resolve a pointer to its slab and block index. Returns the slab, or NULL
 * when the address is not in any miniheap slab; *interior is set when it is
 * inside a slab but not at the start of a block. */
static inline slab_t *slab_of(const void *p, uint32_t *idx, bool *interior) {
    slab_t *s = unit_slab_of(p);
    if (!s) return NULL;
    uintptr_t a = (uintptr_t)p;
    uintptr_t off = a - (uintptr_t)slab_ustart(s);
    if (off >= s->span) { *interior = true; return NULL; }
    uint32_t i = slab_index(s, off);
    if ((uintptr_t)i * s->bsize != off) { *interior = true; return NULL; }
    *idx = i;
    return s;
}

/* ---- large blocks (large.c) -------------------------------------------- */
enum { LARGE_DONE, LARGE_NOT_OURS, LARGE_BUSY, LARGE_COPY, LARGE_FAILED };
struct large;
MH_INTERNAL void  *large_alloc(size_t size, size_t align, bool zero, int kind, bool sampled);
/* LARGE_DONE: freed (or reported); LARGE_NOT_OURS; LARGE_BUSY: another
 * thread is freeing or resizing it right now */
MH_INTERNAL int    large_free(void *p, bool has_size, size_t sized, int kind, const char *where);
MH_INTERNAL bool   large_usable(const void *p, size_t *size, const char *check_where); /* false: not ours */
/* A free or realloc claims the block first (NULL: not live; *busy: claimed
 * by another thread), then releases it, resizes it or unclaims it. */
MH_INTERNAL struct large *large_claim(const void *p, bool *busy);
MH_INTERNAL void   large_unclaim(struct large *l);
MH_INTERNAL bool   large_check_claimed(struct large *l, bool has_size, size_t sized, int kind, const char *where);
MH_INTERNAL void   large_release(struct large *l);
MH_INTERNAL size_t large_size(const struct large *l);
MH_INTERNAL void  *large_resize(struct large *l, size_t size, int *status);
MH_INTERNAL uint64_t large_purge(uint64_t now, uint64_t decay, bool force);
MH_INTERNAL void     large_release_quarantine(void);
MH_INTERNAL void     large_drop_rooms(void);                /* live blocks give back their room */
MH_INTERNAL void   large_stats(size_t *blocks, size_t *bytes, size_t *mapped, size_t *cached);
MH_INTERNAL void   large_reset_all(void);
MH_INTERNAL void   large_lock_all(void);
MH_INTERNAL void   large_unlock_all(void);
MH_INTERNAL int    large_check(void);
struct mh_fault;
MH_INTERNAL bool   large_explain(uintptr_t addr, struct mh_fault *f);
MH_INTERNAL bool   large_was_freed(const void *p, struct mh_fault *f);
typedef void (*large_visit_fn)(void *user, size_t size, uint32_t alloc_stack, void *arg);
MH_INTERNAL void   large_foreach_live(large_visit_fn fn, void *arg); /* large_lock_all held */

/* ---- thread caches (tcache.c) ------------------------------------------ */
typedef struct tbin {
    uint32_t count, cap;  /* cap: what the bin holds before it overflows, up to room */
    uint32_t fill;        /* blocks the next refill takes: doubles up to cap / 2 */
    uint32_t room;        /* slots */
    uint32_t allocs_mark; /* the cache's allocs (low bits) at the bin's last overflow */
    uint16_t wide_at;     /* where its full-size slots start, in the cache's wide area (tcache.c) */
    uint8_t refills;      /* while in its first, narrow slots */
    tslot_t *slots;
} tbin_t;
typedef struct quarantine {
    void **slots;                    /* ring of tagged user pointers */
    uint32_t head, count, cap;
    bool holding;                    /* counted in the process's quarantine holders */
    size_t bytes;
    size_t published;                /* of bytes, what the process's total counts (tcache.c) */
} quarantine_t;
typedef struct tcache {
    tbin_t bins[MH_MAX_CLASSES];
    quarantine_t q;
    int32_t check_left;              /* ops until the next check_every heap check */
    uint32_t arena;
    int32_t sample_left;             /* allocations until the next sampled one */
    struct tcache *next, *prev;      /* all caches, for stats, fork and reset */
    uint64_t allocs, frees;
    int32_t ops_left;                /* ops until the next give-back tick */
    uint64_t last_flush_ms;          /* the cache was last emptied by a tick */
    uint8_t float_skip[MH_MAX_CLASSES]; /* reallocs of the class that try no float (realloc_small) */
    size_t bytes;                    /* size of this struct and its slots */
    /* An idle thread's cache (tcache_drain_idle): */
    struct tcache **owner_cache;     /* the owner's mh_tcache, NULL while the purge thread empties it */
    uint32_t *owner_in_op;           /* the owner's mh_thread.in_op */
    uint64_t active_ms;              /* the owner's last give-back tick (relaxed atomic) */
    uint64_t drained_ms;             /* when the purge thread last emptied it (list lock) */
    /* A cache its thread left behind for the next one (tcache.c, list lock): */
    bool spare;
    struct tcache *spare_next;
    uint64_t spare_ms;               /* when its thread exited */
} tcache_t;
/* The thread's own state, one TLS block (one offset to load on the fast
 * paths): its cache, and the count of allocator operations it is inside
 * (tcache_drain_idle). */
typedef struct mh_thread {
    tcache_t *cache;
    uint32_t in_op;
    tcache_t *home;  /* the cache this thread made: cache is NULL while the purge thread empties it */
} mh_thread_t;
MH_INTERNAL extern __thread mh_thread_t mh_thread;
#define mh_tcache (mh_thread.cache)
MH_INTERNAL tcache_t *tcache_get_slow(void);    /* NULL when caching is off or the thread is exiting */
MH_INTERNAL tslot_t tcache_refill(tcache_t *t, uint32_t cls); /* .tagged NULL: none */
MH_INTERNAL void  tcache_flush_bin(tcache_t *t, uint32_t cls, uint32_t keep);
MH_INTERNAL void  tcache_overflow(tcache_t *t, uint32_t cls);
MH_INTERNAL void  tcache_flush_all(tcache_t *t);
MH_INTERNAL void  tcache_stats(size_t *cached_bytes, uint64_t *allocs, uint64_t *frees);
MH_INTERNAL void  tcache_reset_all(void);
MH_INTERNAL void  tcache_drop_current(void);
MH_INTERNAL void  tcache_scrub_for_tools(void);   /* at exit, under memcheck */
MH_INTERNAL void  tcache_lock_all(void);
MH_INTERNAL void  tcache_unlock_all(void);
MH_INTERNAL void  tcache_after_fork_child(void);  /* the other threads' caches become orphans */
MH_INTERNAL bool  thread_count_self(void);        /* before starting a helper: false when this thread is exiting */
MH_INTERNAL void  thread_mark_helper(void);       /* first thing in a helper thread of ours */
MH_INTERNAL void  tcache_adopt_orphans(void);     /* from mh_tick: their blocks go back */
MH_INTERNAL uint64_t tcache_release_spares(uint64_t now, uint64_t decay, bool force); /* from a give-back pass */
/* Put a freed (poisoned) block in the thread's quarantine; returns a block
 * that leaves it (tagged), or NULL. */
MH_INTERNAL void  quarantine_push(tcache_t *t, void *tagged, size_t bytes);
MH_INTERNAL void  quarantine_drain(tcache_t *t);
MH_INTERNAL size_t block_release(void *tagged);     /* alloc.c: back to cache/slab; its slot's size */

MH_INTERNAL bool  block_verify_poison(void *tagged, const char *where); /* alloc.c */

/* ---- live bits while one thread changes them (solo.c) -------------------- */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MH_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define MH_SANITIZED 1
#endif
#endif
#if defined(__x86_64__) && !defined(MH_SANITIZED)
#define MH_SOLO 1
enum { SOLO_OFF, SOLO_ON, SOLO_LEAVING };
MH_INTERNAL extern tcache_t *_Atomic mh_solo;       /* the owner's cache while plain changes are on */
MH_INTERNAL extern _Atomic uint32_t mh_solo_busy;  /* the owner is inside a plain change (plain stores) */
MH_INTERNAL extern _Atomic uint32_t mh_solo_state;
MH_INTERNAL extern tcache_t *_Atomic mh_solo_owner; /* whose claims never wait for the transition */
MH_INTERNAL void solo_leave(void);
#endif
MH_INTERNAL void solo_start(tcache_t *t);          /* the first thread cache */
MH_INTERNAL void solo_forget(tcache_t *t);         /* a cache goes away */
MH_INTERNAL void solo_after_fork_child(void);

/* ---- caches of idle threads (tcache.c) ------------------------------------
 * The purge thread empties the cache of a thread that made no give-back
 * tick for decay_ms (blocks a thread keeps while it sleeps pin pages: a pool
 * of 8 idle threads held 16 MB). The owner never waits for it and takes no
 * locked instruction: it counts the operations it is inside in mh_thread.in_op
 * (plain adds: a signal handler's malloc inside another leaves the count as
 * it found it) and reads mh_tcache after the mark. The purge thread parks the
 * cache (sets the owner's mh_tcache to NULL), makes every thread pass a
 * full barrier (membarrier), and empties it only if the mark reads 0: the
 * owner either published its mark before that barrier, or reads NULL after
 * it and goes on without a cache (as with tcache=0) until the cache is put
 * back. x86-64 without sanitizers only, as solo.c. */
#ifdef MH_SOLO
#define MH_IDLE_DRAIN 1
static inline __attribute__((always_inline)) void op_enter(void) {
    mh_thread.in_op++;
    atomic_signal_fence(memory_order_seq_cst);
}
static inline __attribute__((always_inline)) void op_exit(void) {
    atomic_signal_fence(memory_order_seq_cst);
    mh_thread.in_op--;
}
#else
static inline void op_enter(void) {}
static inline void op_exit(void) {}
#endif
MH_INTERNAL uint64_t tcache_drain_idle(uint64_t now, uint64_t decay); /* purge thread, tick lock held */
MH_INTERNAL uint64_t tcache_idle_drains(void);                        /* caches it emptied since start */

/* ---- giving memory back (purge.c) ------------------------------------- */
#define MH_TICK_OPS 256
MH_INTERNAL bool mh_release_unused(void);    /* an allocation failed: give back what nothing uses */
MH_INTERNAL void mh_tick(bool force);       /* a give-back pass if one is due (force: now, everything) */
MH_INTERNAL bool mh_tick_due(uint64_t now);
MH_INTERNAL void mh_tick_reschedule(void);  /* decay_ms or background changed */
MH_INTERNAL void purge_grew(size_t bytes);   /* fresh memory was taken: free memory may go back early */
MH_INTERNAL void purge_pending(void);       /* something became free to give back (locks may be held) */
MH_INTERNAL void purge_stop(void);          /* at exit */
MH_INTERNAL void purge_end(void);           /* the program's last thread exits: end ours and join it */
MH_INTERNAL void helpers_start_if_wanted(void); /* from allocation paths: our threads, if wanted */
MH_INTERNAL void helpers_stop(void);        /* the program's last thread exits: end all our threads */
MH_INTERNAL void purge_after_fork_child(void);
MH_INTERNAL bool purge_thread_running(void);

/* ---- start-up ------------------------------------------------------------ */
MH_INTERNAL extern _Atomic int mh_ready;
MH_INTERNAL void mh_init_slow(void);
static inline void mh_ensure_init(void) {
    if (unlikely(!atomic_load_explicit(&mh_ready, memory_order_acquire))) mh_init_slow();
}

/* ---- reports (report.c) -------------------------------------------------- */
typedef struct mh_fault {
    const char *kind;        /* from the fixed vocabulary */
    const void *addr;        /* the address at fault */
    const void *block;       /* user start of the block involved, or NULL */
    size_t size;             /* its requested (or usable) size */
    const char *where;       /* entry point that noticed: "free", "malloc", ... */
    const char *detail;      /* one more sentence, or NULL */
    uint32_t alloc_stack, free_stack, alloc_tid, free_tid;
    uintptr_t pc, fp;        /* a fault: where the access was (its stack is printed from there) */
    bool fatal;              /* the program cannot go on (a fault): abort even with abort_on_error=0 */
} mh_fault_t;
MH_INTERNAL void mh_report_fault(const mh_fault_t *f);
MH_INTERNAL void slab_block_fault(mh_fault_t *f, slab_t *s, uint32_t idx, void *p);
MH_INTERNAL void mh_report(const char *kind, const void *addr, const void *block,
                           size_t bsize, const char *where, const char *detail);
MH_INTERNAL void mh_fatal(const char *msg) __attribute__((noreturn));
MH_INTERNAL void mh_report_exit(const char *kind, const char *summary);
/* The detail of a canary report, into buf: how far the write went. The
 * canary of `len` bytes at `from` (after the block, or in front of it) has
 * its first bad byte at offset `bad`. Returns buf. */
MH_INTERNAL const char *canary_detail(char *buf, size_t cap, const uint8_t *from, size_t len, size_t bad, bool front);
MH_INTERNAL void *report_handler_arg(void);
MH_INTERNAL void report_lock_all(void);     /* fork */
MH_INTERNAL void report_unlock_all(void);
/* Tiny formatter used by reports and stats: appends to buf, never allocates. */
typedef struct mh_buf { char *p; size_t len, cap; } mh_buf_t;
MH_INTERNAL void buf_str(mh_buf_t *b, const char *s);
MH_INTERNAL void buf_dec(mh_buf_t *b, uint64_t v);
MH_INTERNAL void buf_hex(mh_buf_t *b, uintptr_t v);

/* ---- canaries and poison -------------------------------------------------- */
/* A canary byte depends on a per-process secret and its own address, so an
 * overflow cannot forge it without knowing both, and it always has its high
 * bit set, so the most common overflow of all (a string's terminating NUL,
 * or any ASCII byte) never matches it by chance. */
#define POISON_FREE 0x6b   /* Linux SLUB's freed-object byte */
#define FILL_NEW    0xbe
/* fill_new covers at most this much of a large block (as ASan's
 * max_malloc_fill_size does): filling a huge block whole would make it all
 * resident at once, and a request the memory cannot back would end in the
 * OOM killer instead of in ENOMEM. The rest of a fresh block reads as 0. */
#define FILL_MAX    ((size_t)1 << 20)
#define CANARY_HARDENED 8  /* tail bytes checked in hardened mode */
#define CANARY_DEBUG   256 /* ... and in debug mode */

#define CANARY_MUL  0x9E3779B97F4A7C15ull
#define CANARY_HIGH 0x8080808080808080ull
static inline uint64_t canary_word(uintptr_t aligned) {
    return (mh_secret ^ ((uint64_t)aligned * CANARY_MUL)) | CANARY_HIGH;
}
/* The 8 canary bytes that belong at address a, whatever its alignment. */
static inline uint64_t canary_at(uintptr_t a) {
    uintptr_t base = a & ~(uintptr_t)7;
    unsigned sh = (unsigned)(a & 7) * 8;
    uint64_t w0 = canary_word(base);
    return sh ? (w0 >> sh) | (canary_word(base + 8) << (64 - sh)) : w0;
}
/* Store the low len (< 8) bytes of v at p, with fixed-size stores. */
static inline void store_partial(uint8_t *p, uint64_t v, size_t len) {
    if (len & 4) { uint32_t x = (uint32_t)v; memcpy(p, &x, 4); p += 4; v >>= 32; }
    if (len & 2) { uint16_t x = (uint16_t)v; memcpy(p, &x, 2); p += 2; v >>= 16; }
    if (len & 1) *p = (uint8_t)v;
}
/* The checks below read canaries and poison, which ASan builds keep
 * poisoned: they are not instrumented (and not inlined into code that is),
 * so a check needs no change to the shadow, which would race with the
 * block's owner or a concurrent check (src/track.h, track_peek). */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MH_CHECK_READ static __attribute__((no_sanitize_address, noinline, unused))
#endif
#endif
#if !defined(MH_CHECK_READ) && defined(__SANITIZE_ADDRESS__)
#define MH_CHECK_READ static __attribute__((no_sanitize_address, noinline, unused))
#endif
#ifndef MH_CHECK_READ
#define MH_CHECK_READ static inline
#endif
/* Reads ThreadSanitizer must not instrument: a copy ordered by page
 * protection it cannot see (mesh.c), and statistics that read other
 * threads' counters without their locks, approximate by design. */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MH_NO_TSAN __attribute__((no_sanitize("thread")))
#endif
#endif
#if !defined(MH_NO_TSAN) && defined(__SANITIZE_THREAD__)
#define MH_NO_TSAN __attribute__((no_sanitize_thread))
#endif
#ifndef MH_NO_TSAN
#define MH_NO_TSAN
#endif
typedef uint64_t __attribute__((may_alias, aligned(1))) mh_u64u;
typedef uint32_t __attribute__((may_alias, aligned(1))) mh_u32u;
typedef uint16_t __attribute__((may_alias, aligned(1))) mh_u16u;
typedef uint64_t mh_v16 __attribute__((vector_size(16))); /* SSE2 / NEON register */

MH_CHECK_READ uint64_t load_partial(const uint8_t *p, size_t len) {
    uint64_t v = 0;
    unsigned sh = 0;
    if (len & 4) { v = *(const mh_u32u *)p; p += 4; sh = 32; }
    if (len & 2) { v |= (uint64_t)*(const mh_u16u *)p << sh; p += 2; sh += 16; }
    if (len & 1) v |= (uint64_t)*p << sh;
    return v;
}
/* Bytes up to the next 8-byte boundary, at most len: canaries are filled
 * and checked by aligned words past them, each word one add away from the
 * last (a canary after a block of any size starts unaligned, and
 * canary_at there costs two words per word). */
static inline size_t canary_head(const uint8_t *p, size_t len) {
    size_t head = (size_t)(-(uintptr_t)p & 7);
    return head < len ? head : len;
}
static inline void canary_fill(uint8_t *p, size_t len) {
    size_t head = canary_head(p, len);
    if (head) {
        store_partial(p, canary_at((uintptr_t)p), head);
        p += head;
        len -= head;
    }
    uint64_t m = (uint64_t)(uintptr_t)p * CANARY_MUL;
    for (; len >= 8; p += 8, len -= 8, m += 8 * CANARY_MUL) {
        uint64_t v = (mh_secret ^ m) | CANARY_HIGH;
        memcpy(p, &v, 8);
    }
    if (len) store_partial(p, canary_word((uintptr_t)p), len);
}
/* Offset of the first byte that is not its canary, or SIZE_MAX. */
MH_CHECK_READ size_t canary_find_bad(const uint8_t *from, size_t len);
/* Hardened mode's canary, the len (1..8) bytes at p, as one 8-byte window
 * that ends where the canary does: p + len - 8 .. p + len, whose top len
 * bytes are the canary. The bytes below are the block's own (a slot holds
 * at least 16 bytes, so the window never starts before the block). One
 * store and one load whatever len is: the 4-, 2- and 1-byte steps of a
 * partial store and load mispredicted with requested sizes that vary
 * (bench churn, hardened). The fill writes the whole window, so it is for
 * a block just taken, before anything is written to it (calloc's zeros
 * come after); a load to keep the block's bytes missed on cold blocks
 * (bench mstress +7 %). */
static inline uint64_t canary_window_mask(size_t len) { return ~(uint64_t)0 << (64 - 8 * len); } /* top len bytes */
static inline void canary_fill_new(uint8_t *p, size_t len) {
    uint8_t *w = p + len - 8;
    uint64_t v = canary_at((uintptr_t)w);
    memcpy(w, &v, 8);
}
/* ... and checked in one compare. */
MH_CHECK_READ size_t canary_find_bad_short(const uint8_t *p, size_t len) {
    const uint8_t *w = p + len - 8;
    uint64_t x = (*(const mh_u64u *)w ^ canary_at((uintptr_t)w)) & canary_window_mask(len);
    return x ? (size_t)(__builtin_ctzll(x) / 8) - (8 - len) : SIZE_MAX;
}
MH_CHECK_READ size_t canary_find_bad(const uint8_t *from, size_t len) {
    const uint8_t *p = from;
    uint64_t x;
    size_t head = canary_head(p, len);
    if (head) {
        x = load_partial(p, head) ^ (canary_at((uintptr_t)p) & (~(uint64_t)0 >> (64 - 8 * head)));
        if (x) return (size_t)(__builtin_ctzll(x) / 8);
        p += head;
        len -= head;
    }
    uint64_t m = (uint64_t)(uintptr_t)p * CANARY_MUL, sec = mh_secret;
    /* Four words per test while intact; the word that differs is found below. */
    for (; len >= 32; p += 32, len -= 32, m += 32 * CANARY_MUL) {
        const mh_u64u *w = (const mh_u64u *)p;
        x = 0;
        for (int i = 0; i < 4; i++) x |= w[i] ^ ((sec ^ (m + (uint64_t)i * 8 * CANARY_MUL)) | CANARY_HIGH);
        if (x) break;
    }
    for (; len >= 8; p += 8, len -= 8, m += 8 * CANARY_MUL) {
        x = *(const mh_u64u *)p ^ ((sec ^ m) | CANARY_HIGH);
        if (x) return (size_t)(p - from) + (size_t)(__builtin_ctzll(x) / 8);
    }
    if (len) {
        x = load_partial(p, len) ^ (canary_word((uintptr_t)p) & (~(uint64_t)0 >> (64 - 8 * len)));
        if (x) return (size_t)(p - from) + (size_t)(__builtin_ctzll(x) / 8);
    }
    return SIZE_MAX;
}
/* Offset of the last byte that is not its canary (call after canary_find_bad
 * found one): how far an overflow reached. */
MH_CHECK_READ size_t canary_find_last_bad(const uint8_t *from, size_t len) {
    for (size_t i = len; i-- > 0;) {
        uint64_t want = canary_at((uintptr_t)from + i) & 0xff;
        if (from[i] != (uint8_t)want) return i;
    }
    return SIZE_MAX;
}

/* len is a multiple of 16 (block sizes are). */
static inline void poison_fill(uint8_t *p, size_t len) {
    const uint64_t pat = 0x0101010101010101ull * POISON_FREE;
    for (size_t i = 0; i < len; i += 16) {
        memcpy(p + i, &pat, 8);
        memcpy(p + i + 8, &pat, 8);
    }
}
MH_CHECK_READ size_t poison_find_bad(const uint8_t *from, size_t len) {
    const uint64_t pat = 0x0101010101010101ull * POISON_FREE;
    const uint8_t *p = from;
    if (len == 32) { /* hardened mode's poison: four words, one test when intact */
        const mh_u64u *w = (const mh_u64u *)from;
        if (((w[0] ^ pat) | (w[1] ^ pat) | (w[2] ^ pat) | (w[3] ^ pat)) == 0) return SIZE_MAX;
    }
    /* 64 bytes per test while intact (vector code); the word that differs
     * is found below. */
    for (; len >= 64; p += 64, len -= 64) {
        mh_v16 a, b, c, d;
        memcpy(&a, p, 16);
        memcpy(&b, p + 16, 16);
        memcpy(&c, p + 32, 16);
        memcpy(&d, p + 48, 16);
        mh_v16 x = (a ^ pat) | (b ^ pat) | (c ^ pat) | (d ^ pat);
        if (x[0] | x[1]) break;
    }
    for (; len >= 8; p += 8, len -= 8) {
        uint64_t v = *(const mh_u64u *)p;
        if (v != pat) return (size_t)(p - from) + (size_t)(__builtin_ctzll(v ^ pat) / 8);
    }
    for (; len; p++, len--)
        if (*p != POISON_FREE) return (size_t)(p - from);
    return SIZE_MAX;
}

/* ---- stacks (stack.c) ----------------------------------------------------- */
MH_INTERNAL void     stack_init(void);
MH_INTERNAL void     stack_lock_all(void);        /* fork */
MH_INTERNAL void     stack_unlock_all(void);
MH_INTERNAL uint32_t stack_capture(void);            /* depot id, 0 when none */
/* Allocation stacks are kept with stacks=1, and with a leak report even
 * without: it knows the dynamic loader's blocks (a thread's DTV, which
 * glibc keeps for a cached stack where no scan sees it) by their stacks,
 * and without one every program that ran a thread exited 23. */
static inline bool alloc_stacks(void) { return mh_cfg.alloc_stacks; }
MH_INTERNAL void     stack_print(mh_buf_t *b, uint32_t id);
/* The stack of this thread, from the faulting pc and frame when pc != 0. */
MH_INTERNAL void     stack_print_current(mh_buf_t *b, uintptr_t pc, uintptr_t fp);
MH_INTERNAL uint32_t stack_walk_current(uintptr_t *frames, uint32_t max, uintptr_t pc, uintptr_t fp);
MH_INTERNAL void     stack_print_frames(mh_buf_t *b, const uintptr_t *frames, uint32_t n);
MH_INTERNAL bool     stack_top_in_module(uint32_t id, const char *needle);
MH_INTERNAL uint32_t stack_frames(uint32_t id, const uintptr_t **frames); /* depth, 0 if none */
MH_INTERNAL uint32_t mh_thread_number(void);
MH_INTERNAL void     stack_altstack_changed(void);   /* the program set this thread's signal stack */
/* A block's allocation stack and thread (alloc_stacks()). */
static inline void dbg_record_alloc(block_dbg_t *d) {
    DBG_SET(d, alloc_stack, stack_capture());
    DBG_SET(d, alloc_tid, mh_thread_number());
    DBG_SET(d, free_stack, 0);
    DBG_SET(d, free_tid, 0);
}
/* Its free stack (captured by the caller) and thread. */
static inline void dbg_record_free(block_dbg_t *d, uint32_t stack) {
    DBG_SET(d, free_stack, stack);
    DBG_SET(d, free_tid, mh_thread_number());
}

/* ---- symbolized frames (symbolize.c): a report's frames, resolved together ---- */
MH_INTERNAL void        sym_reset(void);
MH_INTERNAL void        sym_add(uintptr_t pc);
MH_INTERNAL void        sym_resolve(void);
MH_INTERNAL const char *sym_lookup(uintptr_t pc);   /* "function file:line", or NULL */

/* ---- quarantine (tcache.c) and faults (fault.c) ---------------------------- */
MH_INTERNAL void fault_init(void);
MH_INTERNAL void stats_init(void);               /* start-up */
MH_INTERNAL void stats_start_if_wanted(void);    /* from allocation paths: the statistics thread, if asked for */
MH_INTERNAL void stats_after_fork_child(void);
MH_INTERNAL void stats_end(void);           /* the program's last thread exits: end the thread and join it */
MH_INTERNAL void leak_init(void);

/* ---- bitmap helpers ------------------------------------------------------ */
static inline bool bits_all_set(const uint64_t *map, uint32_t first, uint32_t last) {
    uint32_t w0 = first >> 6, w1 = last >> 6;
    for (uint32_t w = w0; w <= w1; w++) {
        uint64_t m = ~(uint64_t)0;
        if (w == w0) m &= ~(uint64_t)0 << (first & 63);
        if (w == w1) m &= ~(uint64_t)0 >> (63 - (last & 63));
        if ((map[w] & m) != m) return false;
    }
    return true;
}
static inline void bits_clear_range(uint64_t *map, uint32_t first, uint32_t last) {
    for (uint32_t b = first; b <= last; b++) map[b >> 6] &= ~((uint64_t)1 << (b & 63));
}

/* ---- what the code above assumes ------------------------------------------ */
_Static_assert(MH_UNITS * MH_UNIT_SIZE == MH_SEG_SIZE, "a miniheap is cut into whole units");
_Static_assert(MH_UNITS <= 64, "unit bitmaps (free_units, dirty_units, guard_units) are one 64-bit word");
_Static_assert(MH_USABLE_UNITS < MH_UNITS, "the last unit of a miniheap is its guard");
_Static_assert(MH_PAGES_PER_UNIT == 16, "slab_t.purged keeps 16 page bits per unit");
_Static_assert(MH_MAX_SLAB_UNITS * MH_PAGES_PER_UNIT <= 128, "slab_t.purged has 128 page bits");
_Static_assert(MH_MAX_CLASSES <= 256, "mh_class_index stores a class in a byte");
_Static_assert(MH_ARENAS <= 256, "slab_t.arena is a byte");
_Static_assert(MH_BUCKETS <= 32, "class_bins_t.nonempty is a 32-bit mask");
_Static_assert(MH_MIN_ALIGN + 1 <= 2 * MH_MIN_ALIGN,
               "the malloc fast path leaves 2 * MH_MIN_ALIGN for the front redzone and the canary byte");
_Static_assert(MH_SMALL_MAX <= INFO_SIZE_MASK, "an info word holds any small block's size");
_Static_assert(KIND_NEW_ARRAY <= 3 && (INFO_LIVE & (INFO_SIZE_MASK | (3u << INFO_KIND_SHIFT))) == 0,
               "an info word holds the size, the allocation kind and the live bit apart");
_Static_assert(MH_ROOT_ENTRIES * MH_LEAF_ENTRIES << MH_SEG_SHIFT == (size_t)1 << MH_ADDR_BITS,
               "the radix table covers the whole address space");

#endif
