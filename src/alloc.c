/* The public entry points (thin), start-up, fork handling and the give-back
 * clock. */
#include "internal.h"
#include "track.h"

_Atomic int mh_ready;
int mh_track_valgrind;
__thread track_pending_t mh_track_pending __attribute__((tls_model("initial-exec")));
__thread uint8_t mh_track_defer __attribute__((tls_model("initial-exec")));
uintptr_t mh_ptr_key;
uint64_t mh_secret;
static mh_lock_t init_lock = MH_LOCK_INIT;
/* Page-aligned, so that arena 0's bins and the other locks share one page. */
_Alignas(4096) mh_locks_t mh_locks;

MH_INTERNAL void tcache_init(void);

/* ---- fork: hold every lock across fork() so the child finds them free ----
 * In the order they nest: a report's lock outermost, the stack depot's
 * innermost. Signals stay blocked while they are held (a handler that
 * allocates would wait on them forever). */
static sigset_t fork_saved_mask; /* the forking thread's; guarded by the locks held */
static void fork_prepare(void) {
    sigset_t mask;
    os_signals_block(&mask);
    report_lock_all();
    mh_lock(&mh_locks.tick);
    bins_lock_all();
    mh_lock(&mh_locks.heap);
    large_lock_all();
    tcache_lock_all();
    meta_lock_all();
    stack_lock_all();
    mesh_fork_prepare(); /* the heap read-only until the child has its copy */
    fork_saved_mask = mask;
}
static void fork_parent(void) {
    sigset_t mask = fork_saved_mask;
    mesh_fork_parent();
    stack_unlock_all();
    meta_unlock_all();
    tcache_unlock_all();
    large_unlock_all();
    mh_unlock(&mh_locks.heap);
    bins_unlock_all();
    mh_unlock(&mh_locks.tick);
    report_unlock_all();
    os_signals_restore(&mask);
}
static void fork_child(void) {
    sigset_t mask = fork_saved_mask;
    mesh_fork_child(); /* a heap of its own */
    stack_unlock_all();
    meta_unlock_all();
    tcache_after_fork_child();
    solo_after_fork_child();
    purge_after_fork_child();
    large_unlock_all();
    mh_unlock(&mh_locks.heap);
    /* The child draws its own slot choices: with the parent's generator
     * state, both would hand out the same slots in the same order (each
     * bin draws again at its next use, so the fork writes none). */
    mh_random_after_fork();
    stats_after_fork_child();
    bins_unlock_all();
    mh_unlock(&mh_locks.tick);
    report_unlock_all();
    os_signals_restore(&mask);
}

/* One arena per two CPUs, unless `arenas` says. Each arena keeps partly
 * used slabs of every class it serves, so an arena nobody contends for only
 * costs memory. On 2 cores, one arena against two (5 interleaved runs):
 * peaks 8-36 % lower on the threaded benchmarks (xmalloc 14.8 -> 9.6 MB,
 * prodcons 10.1 -> 7.2, mstress 24.4 -> 21.5), times within the noise
 * (0.93-1.05x). Read when the layout is fixed, at the first allocation
 * (of the process, after mh_reset()); until then no slab exists, and one
 * arena serves. */
static uint32_t arenas_wanted(void) {
    uint32_t n = mh_opt.arenas ? mh_opt.arenas : (os_cpu_count() + 1) / 2;
    return n < 1 ? 1 : n > MH_ARENAS ? MH_ARENAS : n;
}

/* Start-up must work from the first allocation the dynamic loader or a
 * constructor makes: no libc malloc, no stdio, no dlsym here. */
void mh_init_slow(void) {
    mh_lock(&init_lock);
    if (!atomic_load_explicit(&mh_ready, memory_order_relaxed)) {
        size_t page = os_page_size();
        if (page != MH_PAGE) {
            /* Guard pages, purging and slab geometry are cut to 4 KiB pages. */
            char msg[160];
            mh_buf_t b = {msg, 0, sizeof msg};
            buf_str(&b, "the system's page size is ");
            buf_dec(&b, page);
            buf_str(&b, " bytes; miniheap is built for 4096-byte pages and cannot run here");
            mh_fatal(msg);
        }
        mh_options_init();
        track_init();
        if (mh_track_valgrind) {
            /* memcheck sees a use after free only while the block is not
             * reused, and reports leaks itself */
            if (!mh_opt.quarantine_mb) mh_opt.quarantine_mb = 16;
            mh_opt.leak_report = 0;
            /* No purge thread: its TLS would show in memcheck's leak
             * summary, which must read as it does on glibc. */
            mh_opt.background = 0;
            mh_config_update();
            os_guards_plain();
        }
#ifdef MH_TRACK_ASAN
        /* ASan too sees a use after free only while the block is not reused. */
        if (!mh_opt.quarantine_mb) {
            mh_opt.quarantine_mb = 16;
            mh_config_update();
        }
#endif
        uint64_t keys[2];
        os_random(keys, sizeof keys);
        mh_secret = keys[0];
        mh_ptr_key = keys[1] & ~(uintptr_t)0xffff; /* keep low bits: alignment checks still work */
        sizeclass_init();
        /* The locks start as zero bytes, which is the initializer on glibc
         * and musl; writing them would make 22 KiB resident in every
         * process, most of it for arenas it never uses. */
        static const mh_lock_t unlocked = PTHREAD_MUTEX_INITIALIZER;
        static const mh_lock_t zero;
        if (memcmp(&unlocked, &zero, sizeof zero) != 0)
            for (uint32_t c = 0; c < MH_ARENAS * MH_MAX_CLASSES; c++) pthread_mutex_init(&mh_locks.bins[c], NULL);
        tcache_init();
        stack_init();
        fault_init();
        leak_init();
        mh_tick_reschedule();
        atomic_store_explicit(&mh_ready, 1, memory_order_release);
        /* May allocate (through us, now ready). */
        pthread_atfork(fork_prepare, fork_parent, fork_child);
        stats_init();
    }
    mh_unlock(&init_lock);
}

/* ---- block life cycle ------------------------------------------------------ */

/* p came from a slab, so skip slab_of's checks. */
static inline slab_t *slab_of_block(void *p, uint32_t *idx) {
    slab_t *s = unit_slab_of(p);
    *idx = block_index(s, p);
    return s;
}

#ifdef MH_SOLO
/* While one thread is the only one that changes live bits (solo.c), it
 * changes them with single non-locked instructions (`or`, `btr`): a signal
 * handler cannot split one. Each is marked in mh_solo_busy, and mh_solo is
 * read again after the mark. */
static inline __attribute__((always_inline)) uint32_t solo_enter(void) {
    /* (relaxed: a plain load and store; a signal handler's mark in between
     * puts back what it found) */
    uint32_t busy = atomic_load_explicit(&mh_solo_busy, memory_order_relaxed);
    atomic_store_explicit(&mh_solo_busy, busy + 1, memory_order_relaxed);
    __asm__ volatile("" ::: "memory");
    return busy;
}
static inline __attribute__((always_inline)) void solo_exit(uint32_t busy) {
    __asm__ volatile("" ::: "memory");
    atomic_store_explicit(&mh_solo_busy, busy, memory_order_relaxed);
}
/* Must this thread end the one-thread state before its first locked change
 * of a live bit (solo_leave)? */
static inline __attribute__((always_inline)) bool solo_to_leave(void) {
    return atomic_load_explicit(&mh_solo_state, memory_order_acquire) != SOLO_OFF &&
           mh_thread.home != atomic_load_explicit(&mh_solo_owner, memory_order_relaxed);
}
/* May this thread (t: its cache, NULL if none) change a live bit with a
 * plain instruction? If so the change is marked: the mark (the value to put
 * back with solo_exit after it) is returned, else -1. If not, and another
 * thread is the owner, the owner's plain changes end before this thread's
 * first locked one. A thread is the owner by the cache it made
 * (mh_thread.home): it stays the owner while the purge thread empties that
 * cache and t is NULL. */
static inline __attribute__((always_inline)) int64_t solo_begin_as(tcache_t *t, bool may_leave) {
    if (t != NULL && t == atomic_load_explicit(&mh_solo, memory_order_relaxed)) {
        uint32_t busy = solo_enter();
        if (likely(atomic_load_explicit(&mh_solo, memory_order_relaxed) == t)) return busy;
        solo_exit(busy); /* ended meanwhile: a locked change needs no mark */
        return -1;
    }
    if (may_leave && unlikely(solo_to_leave())) solo_leave();
    return -1;
}
/* (may_leave false: the caller found solo_to_leave() false just before, and
 * calls nothing: free_fast) */
#endif

/* Make a block live, its info word set to info. Release: what the owner
 * wrote into the block and its records before (size, canaries) is seen by
 * whoever claims it next (another thread's free). A plain store: until the
 * bit is set, only the thread that holds the block writes its word (a claim
 * that fails writes nothing new), so no update can be lost and no locked
 * instruction is needed. */
static inline void set_live_info(slab_t *s, uint32_t idx, uint32_t info) {
    info_store(s, idx, info | INFO_LIVE, __ATOMIC_RELEASE);
}

/* Live again with the info word it has (a free or resize that did not go on). */
static inline void set_live(slab_t *s, uint32_t idx) {
    set_live_info(s, idx, block_info(s, idx));
}

#ifdef MH_SOLO
/* Run OP(prefix), one instruction on a live bit or its slab's records:
 * plain ("") while thread t is the only one that changes them, else locked
 * ("lock "). */
#define SOLO_OR_LOCKED(t, OP) SOLO_OR_LOCKED_AS(t, OP, true)
#define SOLO_OR_LOCKED_AS(t, OP, may_leave)                                                                \
    do {                                                                                                   \
        int64_t busy_ = solo_begin_as(t, may_leave);                                                       \
        if (busy_ >= 0) {                                                                                  \
            OP("");                                                                                        \
            solo_exit((uint32_t)busy_);                                                                    \
        } else {                                                                                           \
            OP("lock ");                                                                                   \
        }                                                                                                  \
    } while (0)
#endif
/* Clear the live bit of a block's info word; false when the block was not
 * live. By this thread (t: its cache, NULL if none): while it is the only
 * one that changes live bits, a plain `btr` (solo.c), else a locked one. On
 * x86-64 one instruction either way: gcc and clang make a compare-and-swap
 * loop of a 16- or 32-bit fetch_and, which loads the line first (bench
 * larson spent 40 % of free there). */
static inline __attribute__((always_inline)) bool claim_as(tcache_t *t, slab_t *s, uint32_t idx, bool may_leave) {
#ifdef MH_SOLO
    bool live;
#define BTR(prefix)                                                                                        \
    do {                                                                                                   \
        if (s->info16)                                                                                     \
            __asm__ volatile(prefix "btrw $15, %0" : "+m"(((uint16_t *)s->info)[idx]), "=@ccc"(live) :: "memory"); \
        else                                                                                               \
            __asm__ volatile(prefix "btrl $31, %0" : "+m"(((uint32_t *)s->info)[idx]), "=@ccc"(live) :: "memory"); \
    } while (0)
    SOLO_OR_LOCKED_AS(t, BTR, may_leave);
#undef BTR
    return live;
#else
    (void)t;
    (void)may_leave;
    if (s->info16) return __atomic_fetch_and(&((uint16_t *)s->info)[idx], (uint16_t)0x7fff, __ATOMIC_ACQ_REL) >> 15;
    return __atomic_fetch_and(&((uint32_t *)s->info)[idx], ~INFO_LIVE, __ATOMIC_ACQ_REL) >> 31;
#endif
}
static inline __attribute__((always_inline)) bool claim_by(tcache_t *t, slab_t *s, uint32_t idx) {
    return claim_as(t, s, idx, true);
}
static inline bool claim(slab_t *s, uint32_t idx) { return claim_by(mh_tcache, s, idx); }

/* A step of a slab's resize sequence (odd while a block of it is resized in
 * place, for mh_check). Threads resizing blocks of one slab at once need a
 * locked add; while one thread changes live bits (solo.c) it is also the
 * only one that resizes, so a plain one will do: a hardened realloc in
 * place took two locked adds. (x86 keeps stores in order: the canaries
 * written between the two steps are not seen outside them.) */
static inline void resize_step(slab_t *s) {
#ifdef MH_SOLO
#define ADD1(prefix) __asm__ volatile(prefix "addl $1, %0" : "+m"(*(uint32_t *)&s->resize_seq) :: "memory")
    SOLO_OR_LOCKED(mh_tcache, ADD1);
#undef ADD1
#else
    atomic_fetch_add_explicit(&s->resize_seq, 1, memory_order_acq_rel);
#endif
}

/* Less than float_pct full: realloc floats blocks out of it. */
static inline bool sparse(const slab_t *s) {
    uint32_t used = __atomic_load_n(&s->used, __ATOMIC_RELAXED); /* a hint, read without the class lock */
    return (uint64_t)used * 100 < (uint64_t)mh_opt.float_pct * s->capacity;
}


/* Every MH_TICK_OPS operations of a thread: when a give-back tick is due,
 * the thread first empties its own cache, so blocks it holds do not pin
 * pages (after a drop, the caches would otherwise keep ~1 MB resident). */
static MH_NOINLINE void op_tick(tcache_t *t) {
    t->ops_left = MH_TICK_OPS;
    uint64_t now = os_now_ms();
    __atomic_store_n(&t->active_ms, now, __ATOMIC_RELAXED); /* (tcache_drain_idle) */
    if (!mh_tick_due(now)) return;
    if (t->last_flush_ms + OPT(decay_ms) <= now) {
        t->last_flush_ms = now;
        tcache_flush_all(t);
    }
    mh_tick(false);
}

static inline void count_op(tcache_t *t) {
    if (unlikely(--t->ops_left <= 0)) op_tick(t);
}

static void maybe_check(tcache_t *t) {
    if (unlikely(mh_opt.check_every) && t && --t->check_left <= 0) {
        t->check_left = (int32_t)mh_opt.check_every;
        mh_check();
    }
}

static MH_COLD void report_poison(slab_t *s, uint32_t idx, void *p, size_t bad, const char *where) {
    mh_fault_t f;
    slab_block_fault(&f, s, idx, p);
    f.kind = "use-after-free";
    f.addr = (uint8_t *)p + bad;
    f.where = where;
    f.detail = "the freed block was written to after it was freed (its poison changed)";
    mh_report_fault(&f);
}

/* Was this freed block (about to be reused, or leaving quarantine) written
 * to after it was freed? */
static inline bool verify_poison(slab_t *s, uint32_t idx, void *p, const char *where) {
    size_t len = s->poison_len;
    track_open(p, len);
    size_t bad = poison_find_bad(p, len);
    track_noaccess(p, len);
    if (likely(bad == SIZE_MAX)) return true;
    report_poison(s, idx, p, bad, where);
    return false;
}

bool block_verify_poison(void *tagged, const char *where) {
    if (!((uintptr_t)tagged & TAG_POISONED)) return true;
    void *p = untag(tagged);
    uint32_t idx;
    slab_t *s = slab_of_block(p, &idx);
    return verify_poison(s, idx, p, where);
}

/* The poison check of a cached block reads up to len bytes (the first KiB
 * fetched). */
static inline void prefetch_poison(void *tagged, size_t len) {
    if (!((uintptr_t)tagged & TAG_POISONED)) return;
    uintptr_t a = (uintptr_t)untag(tagged), end = a + (len < 1024 ? len : 1024);
    for (a &= ~(uintptr_t)63; a < end; a += 64) __builtin_prefetch((void *)a);
}

/* Take one block of class cls: thread cache first. Tagged, not yet live
 * (.tagged NULL: none). */
static inline tslot_t take_block(tcache_t *t, uint32_t cls) {
    tslot_t p;
    if (likely(t)) {
        tbin_t *bin = &t->bins[cls];
        t->allocs++;
        count_op(t);
        if (likely(bin->count)) {
            p = bin->slots[--bin->count];
            /* With a quarantine, cached blocks come back cold (freed 16 MiB
             * of frees ago): the one the class's next allocation takes is
             * fetched now for its poison check, a fifth of debug larson's
             * time when read cold. */
            if (mh_cfg.quarantine && bin->count) prefetch_poison(bin->slots[bin->count - 1].tagged, mh_classes[cls].size);
            return p;
        }
        mh_tick(false);
        p = tcache_refill(t, cls);
    } else {
        /* No thread cache (tcache=0, an exiting thread): the clock is read
         * here, or such a program would never give memory back. */
        mh_tick(false);
        if (slab_alloc_batch(0, cls, &p, 1) != 1) p.tagged = NULL;
    }
    helpers_start_if_wanted();
    return p;
}

/* Hand a taken block to the program: checks and bookkeeping of the modes. */
static inline void *prepare_block(tslot_t b, size_t n, int kind, bool zero) {
    void *p = untag(b.tagged);
    slab_t *s = b.s;
    uint32_t idx = block_index(s, p);
    if ((uintptr_t)b.tagged & TAG_POISONED) verify_poison(s, idx, p, "malloc");
    uint8_t *raw = (uint8_t *)p - s->front;
    size_t room = s->bsize - s->front;
    if (unlikely(track_active())) track_open(raw, s->bsize);
    if (s->front) canary_fill(raw, s->front);
    size_t slack = s->canary ? room - n : 0, clen = slack < s->canary_len ? slack : s->canary_len;
    if (clen <= 8) {
        if (clen) canary_fill_new((uint8_t *)p + n, clen); /* (first: it writes over the block's last bytes) */
    } else {
        canary_fill((uint8_t *)p + n, clen);
    }
    if (zero) memset(p, 0, n);
    else if (unlikely(mh_opt.fill_new)) memset(p, FILL_NEW, n);
    if (unlikely(s->dbg != NULL)) {
        dbg_record_alloc(&s->dbg[idx]);
    }
    if (unlikely(track_active())) {
        track_noaccess(raw, s->bsize);
        track_alloc(p, s->canary ? n : room, s->front, zero);
    }
    /* Size and live bit last: a heap check (or a forked child) never sees a
     * live block whose size and canaries are not written yet. */
    set_live_info(s, idx, INFO(n, kind));
    return p;
}

/* The tail canary of a lean slab's block of n bytes (8 at most: one
 * store). First: it writes over the block's last bytes. */
static inline __attribute__((always_inline)) void canary_fill_lean(slab_t *s, void *p, size_t n) {
    if (!s->canary) return;
    size_t slack = s->bsize - n, clen = slack < s->canary_len ? slack : s->canary_len;
    if (clen) canary_fill_new((uint8_t *)p + n, clen);
}

/* prepare_block when mh_cfg.lean (hardened mode's defaults): the same
 * work, without the tests for what is not there. prepare_block kept six
 * registers and tested a dozen options on every malloc (callgrind, a
 * malloc and free of a cached block: 77 of its instructions). */
static inline __attribute__((always_inline)) void *prepare_lean(tslot_t b, size_t n, int kind, bool zero) {
    void *p = untag(b.tagged);
    slab_t *s = b.s;
    uint32_t idx = block_index(s, p);
    if (unlikely(!s->lean)) return prepare_block(b, n, kind, zero);
    if ((uintptr_t)b.tagged & TAG_POISONED) {
        size_t bad = poison_find_bad(p, s->poison_len);
        if (unlikely(bad != SIZE_MAX)) report_poison(s, idx, p, bad, "malloc");
    }
    canary_fill_lean(s, p, n);
    if (zero) memset(p, 0, n);
    set_live_info(s, idx, INFO(n, kind));
    return p;
}

static inline __attribute__((always_inline)) void *finish_block(tslot_t b, size_t n, int kind, bool zero) {
    if (likely(!mh_cfg.hard)) {
        void *p = untag(b.tagged);
        slab_t *s = b.s;
        uint32_t idx = block_index(s, p);
        if (unlikely(track_active())) track_alloc(p, s->bsize, 0, zero); /* before writing to it */
        if (zero) memset(p, 0, n);
        set_live_info(s, idx, INFO(n, kind));
        return p;
    }
    if (likely(mh_cfg.lean)) return prepare_lean(b, n, kind, zero);
    return prepare_block(b, n, kind, zero);
}

/* Every allocation that is not the fast path's (one try: alloc_generic).
 * Inline, so a debug-mode stack walk has no frame more to go through. */
static inline __attribute__((always_inline)) void *alloc_once(size_t size, size_t align, int kind, bool zero) {
    mh_ensure_init();
    /* Every first allocation (of the process, of a thread cache, after
     * mh_reset) comes here: the layout options are fixed from now on. */
    if (unlikely(!atomic_load_explicit(&mh_layout_fixed, memory_order_relaxed))) {
        __atomic_store_n(&mh_narenas, arenas_wanted(), __ATOMIC_RELAXED); /* (no block exists: no slab is in an arena yet) */
        atomic_store_explicit(&mh_layout_fixed, 1, memory_order_relaxed);
    }
    tcache_t *t = mh_tcache ? mh_tcache : tcache_get_slow();
    if (unlikely(size > MH_MAX_REQUEST)) goto oom;
    maybe_check(t);
    if (unlikely(size == 0) && mh_opt.zero_guard && align <= MH_MIN_ALIGN) {
        /* A slot of the 0-byte class: any access to it faults. */
        tslot_t b = take_block(t, mh_zero_cls);
        if (!b.tagged) goto oom;
        return finish_block(b, 0, kind, zero);
    }
    size_t need = size + mh_cfg.front + mh_cfg.tail;
    if (unlikely(mh_opt.sample_rate) && t && align <= MH_MIN_ALIGN && need <= MH_SMALL_MAX &&
        --t->sample_left <= 0) {
        t->sample_left = (int32_t)mh_opt.sample_rate;
        void *p = large_alloc(size, MH_MIN_ALIGN, zero, kind, true);
        if (p) return p;
    }
    if (need <= MH_SMALL_MAX && (align <= MH_MIN_ALIGN || !mh_cfg.front)) {
        int cls = align <= MH_MIN_ALIGN ? (int)size_to_class(need) : sizeclass_for_aligned(need, align);
        if (cls >= 0) {
            tslot_t b = take_block(t, (uint32_t)cls);
            if (!b.tagged) goto oom;
            return finish_block(b, size, kind, zero);
        }
    }
    mh_tick(false);
    if (t) t->allocs++;
    void *p = large_alloc(size, align, zero, kind, false);
    helpers_start_if_wanted();
    return p;
oom:
    errno = ENOMEM;
    return NULL;
}

/* Out of memory or address space (an RLIMIT_AS, a full vm.max_map_count):
 * what the caches hold unused (cached large mappings, empty miniheaps) goes
 * back to the system, and the allocation is tried once more before it
 * fails with ENOMEM. */
static MH_COLD void *alloc_retry(size_t size, size_t align, int kind, bool zero) {
    if (size > MH_MAX_REQUEST || !mh_release_unused()) return NULL; /* (errno is ENOMEM) */
    void *p = alloc_once(size, align, kind, zero);
    if (!p) errno = ENOMEM;
    return p;
}
static MH_NOINLINE void *alloc_generic(size_t size, size_t align, int kind, bool zero) {
    op_enter();
    void *p = alloc_once(size, align, kind, zero);
    if (unlikely(p == NULL)) p = alloc_retry(size, align, kind, zero);
    op_exit();
    return p;
}

/* Back to the thread cache (or the slab when there is none). */
/* A freed block into a thread-cache bin that has room. */
static inline void cache_put(tcache_t *t, tbin_t *bin, void *tagged, slab_t *s) {
    bin->slots[bin->count] = (tslot_t){tagged, s};
    atomic_thread_fence(memory_order_release); /* a forked child sees the slot if it sees the count */
    bin->count++;
    t->frees++;
}
static inline void cache_push(tcache_t *t, tbin_t *bin, void *tagged, slab_t *s) {
    cache_put(t, bin, tagged, s);
    count_op(t);
}

static inline void release_to_cache(slab_t *s, void *tagged) {
    tcache_t *t = mh_tcache;
    if (unlikely(!t)) t = tcache_get_slow();
    if (likely(t)) {
        tbin_t *bin = &t->bins[s->cls];
        if (unlikely(bin->count >= bin->cap)) {
            mh_tick(false);
            tcache_overflow(t, s->cls);
        }
        cache_push(t, bin, tagged, s);
        return;
    }
    slab_free_batch(s->cls, &tagged, 1);
    mh_tick(false);
}

size_t block_release(void *tagged) {
    uint32_t idx;
    slab_t *s = slab_of_block(untag(tagged), &idx);
    size_t bytes = s->bsize; /* (read first: the slab may go with the block) */
    prefetch_poison(tagged, s->poison_len); /* (on top of its bin: the next allocation of its class checks it) */
    release_to_cache(s, tagged);
    return bytes;
}

static MH_COLD void report_not_live(slab_t *s, uint32_t idx, void *p, const char *where, const char *kind) {
    mh_fault_t f;
    slab_block_fault(&f, s, idx, p);
    f.addr = p;
    f.where = where;
    if (block_info(s, idx) == 0) {
        f.kind = kind ? kind : "invalid-free";
        f.block = NULL;
        f.detail = "the address is the start of a slot that was never allocated";
    } else {
        f.kind = kind ? kind : "double-free";
        f.detail = "the block was already freed";
    }
    mh_report_fault(&f);
}

/* How many of a pointer's 8 bytes are `byte` (a pointer partly overwritten
 * by a pattern still shows it). */
static int pattern_bytes(uintptr_t v, uint8_t byte) {
    int n = 0;
    for (int i = 0; i < 8; i++, v >>= 8) n += (uint8_t)v == byte;
    return n;
}

static MH_COLD void report_bad_pointer(void *p, const char *where, const char *kind, bool interior) {
    mh_fault_t f = {.kind = kind, .addr = p, .where = where};
    if (!interior && large_was_freed(p, &f)) { /* a large block freed before */
        f.where = where;
        if (strcmp(kind, "invalid-free") != 0) f.kind = kind;
        mh_report_fault(&f);
        return;
    }
    if (interior) {
        /* Name the block the address is inside of, if any. */
        slab_t *s = unit_slab_of(p); /* (NULL if its slab went since slab_of found it) */
        uintptr_t off = s ? (uintptr_t)p - (uintptr_t)slab_start(s) : 0;
        if (s && off < s->span) {
            uint32_t idx = slab_index(s, off);
            void *blk = slab_ustart(s) + (size_t)idx * s->bsize;
            if (slab_live(s, idx)) slab_block_fault(&f, s, idx, blk);
            f.kind = kind;
            f.addr = p;
            f.where = where;
        }
        f.detail = "the address points inside a block, not at its start";
    } else if (pattern_bytes((uintptr_t)p, POISON_FREE) >= 4) {
        /* The pointer itself was read from a freed block: the use after
         * free happened before this call. */
        f.kind = "use-after-free";
        f.detail = "a pointer read from freed memory: it holds the poison of freed blocks (0x6b6b6b6b6b6b6b6b)";
    } else if (pattern_bytes((uintptr_t)p, FILL_NEW) >= 4) {
        f.detail = "a pointer read from uninitialised memory: it holds the fill of new blocks (0xbebebebebebebebe)";
    } else {
        f.detail = miniheap_of(p) ? "the address is in a miniheap but in no slab (freed or never used)"
                                  : "the address was not handed out by miniheap (stack, global, foreign or unmapped memory)";
    }
    mh_report_fault(&f);
}

/* A large block another thread is freeing or resizing at this moment. */
static MH_COLD void report_busy(void *p, const char *where, const char *kind) {
    mh_fault_t f = {.kind = kind, .addr = p, .where = where,
                    .detail = "another thread is freeing or reallocating this block at the same time"};
    mh_report_fault(&f);
}

static MH_COLD void report_kind(slab_t *s, uint32_t idx, void *p, const char *where, int had, int kind) {
    static const char *names[] = {"?", "malloc", "operator new", "operator new[]"};
    static const char *frees[] = {"?", "free", "operator delete", "operator delete[]"};
    char detail[128]; /* copied into the report's text */
    mh_buf_t b = {detail, 0, sizeof detail};
    buf_str(&b, "allocated with ");
    buf_str(&b, names[had]);
    buf_str(&b, ", freed with ");
    buf_str(&b, frees[kind]);
    mh_fault_t f;
    slab_block_fault(&f, s, idx, p);
    f.kind = "alloc-dealloc-mismatch";
    f.addr = p;
    f.where = where;
    f.detail = detail;
    mh_report_fault(&f);
}

static MH_COLD void report_block(slab_t *s, uint32_t idx, void *p, const char *where, const char *kind,
                                 const void *addr, const char *detail) {
    mh_fault_t f;
    slab_block_fault(&f, s, idx, p);
    f.kind = kind;
    f.addr = addr;
    f.where = where;
    f.detail = detail;
    mh_report_fault(&f);
}

/* A canary of block p (n bytes asked for) is broken: bad bytes into the
 * front one, or tbad into the tlen bytes of the tail one. Out of line, as
 * is its text: the checks that find it run at every free. The text quotes
 * the canary's bytes, opened to a watching tool only while it is written. */
static MH_COLD void report_canary(slab_t *s, uint32_t idx, void *p, const char *where, size_t n, size_t tlen,
                                  size_t bad, size_t tbad) {
    uint8_t *raw = (uint8_t *)p - s->front, *at = bad != SIZE_MAX ? raw : (uint8_t *)p + n;
    size_t len = bad != SIZE_MAX ? s->front : tlen;
    char detail[200];
    track_peek(at, len);
    canary_detail(detail, sizeof detail, at, len, bad != SIZE_MAX ? bad : tbad, bad != SIZE_MAX);
    track_unpeek(at, len);
    if (bad != SIZE_MAX) report_block(s, idx, p, where, "heap-buffer-underflow", raw + bad, detail);
    else report_block(s, idx, p, where, "heap-buffer-overflow", (uint8_t *)p + n + tbad, detail);
}

/* A sized free's size: with mismatch, the size requested (or, without
 * canaries, the usable size malloc_usable_size told); without, anything up
 * to the usable size (more is wrong in every mode). */
static inline bool sized_ok(slab_t *s, uint32_t idx, size_t sized) {
    size_t usable = slab_block_size(s, idx);
    if (mh_opt.mismatch) return sized == (block_info(s, idx) & INFO_SIZE_MASK) || sized == usable;
    return sized <= usable;
}

/* The kind a block was allocated with (info: its info word) against the
 * kind of call freeing it, and a sized free's size against its own. */
static inline __attribute__((always_inline)) bool kind_size_ok(slab_t *s, uint32_t idx, void *p, const char *where,
                                                                uint32_t info, int kind, bool has_size, size_t sized) {
    if (mh_opt.mismatch && unlikely(kinds_clash(INFO_KIND(info), kind))) {
        report_kind(s, idx, p, where, INFO_KIND(info), kind);
        return false;
    }
    if (unlikely(has_size) && !sized_ok(s, idx, sized)) {
        report_block(s, idx, p, where, "size-mismatch", p,
                     "the size given to the sized free differs from the size allocated");
        return false;
    }
    return true;
}

/* Checks on a live block being freed or resized: kinds, sizes, canaries.
 * Returns false (after a report) when the operation must not go on. */
static inline __attribute__((always_inline)) bool check_block(slab_t *s, uint32_t idx, void *p, const char *where, int kind,
                               bool has_size, size_t sized) {
    uint8_t *raw = (uint8_t *)p - s->front;
    /* The info word read once: size and kind come from the same load. */
    uint32_t info = block_info(s, idx);
    size_t n = s->canary ? (info & INFO_SIZE_MASK) : s->bsize - s->front;
    if (!kind_size_ok(s, idx, p, where, info, kind, has_size, sized)) return false;
    if (s->front || s->canary) {
        size_t room = s->bsize - s->front, slack = s->canary ? room - n : 0;
        if (unlikely(track_active())) {
            track_peek(raw, s->front);
            track_peek((uint8_t *)p + n, slack);
        }
        size_t tlen = slack < s->canary_len ? slack : s->canary_len;
        size_t bad = s->front ? canary_find_bad(raw, s->front) : SIZE_MAX;
        size_t tbad = !tlen ? SIZE_MAX
                    : tlen <= 8 ? canary_find_bad_short((uint8_t *)p + n, tlen)
                                : canary_find_bad((uint8_t *)p + n, tlen);
        if (unlikely(track_active())) {
            track_unpeek(raw, s->front);
            track_unpeek((uint8_t *)p + n, slack);
        }
        if (unlikely(bad != SIZE_MAX) || unlikely(tbad != SIZE_MAX)) report_canary(s, idx, p, where, n, tlen, bad, tbad);
        /* Either way the block is still freed: its neighbours stay intact. */
    }
    return true;
}

/* A claimed block (its live bit cleared by this thread), checked already:
 * poison it, then quarantine it, or release it to the thread cache, or
 * (direct: realloc's floating) straight to its slab. free_stack: the free
 * stack, if the caller took it already (see free_hard_body), or STACK_NOW. */
#define STACK_NOW UINT32_MAX
static inline __attribute__((always_inline)) void release_claimed(slab_t *s, uint32_t idx, void *p, bool direct,
                                                                   uint32_t free_stack) {
    void *tagged = p;
    if (likely(!mh_cfg.hard)) {
        if (unlikely(track_active())) track_free(p, s->bsize, 0);
    } else {
        if (s->dbg && mh_opt.stacks) dbg_record_free(&s->dbg[idx], free_stack == STACK_NOW ? stack_capture() : free_stack);
        if (s->poisoned) {
            size_t len = s->poison_len;
            if (unlikely(track_active())) track_open(p, len);
            if (len <= 64) poison_fill(p, len); /* hardened: 32 bytes, inline */
            else memset(p, POISON_FREE, len);
            tagged = (void *)((uintptr_t)p | TAG_POISONED);
        }
        if (unlikely(track_active())) track_free(p, slab_block_size(s, idx), s->front);
        tcache_t *t = mh_tcache;
        if (mh_cfg.quarantine && t && !direct) {
            t->frees++;
            quarantine_push(t, tagged, s->bsize);
            return;
        }
    }
    if (direct) slab_free_batch(s->cls, &tagged, 1);
    else release_to_cache(s, tagged);
}

/* The free of a slab block this thread has claimed: its checks, then the
 * release. A block that fails a check that must stop the free (a kind or
 * size mismatch) stays allocated: the report returned (abort_on_error=0). */
static inline __attribute__((always_inline)) void free_claimed(slab_t *s, uint32_t idx, void *p, const char *where, int kind, bool has_size,
                                size_t sized, uint32_t free_stack) {
    if (likely(!mh_cfg.hard)) {
        if (unlikely(has_size) && !sized_ok(s, idx, sized)) {
            set_live(s, idx);
            report_block(s, idx, p, where, "size-mismatch", p,
                         "the size given to the sized free is larger than the block");
            return;
        }
    } else if (!check_block(s, idx, p, where, kind, has_size, sized)) {
        set_live(s, idx);
        return;
    }
    release_claimed(s, idx, p, false, free_stack);
}

static inline void free_impl(void *p, const char *where, int kind, bool has_size, size_t sized) {
    mh_ensure_init();
    uint32_t idx;
    bool interior = false;
    slab_t *s = slab_of(p, &idx, &interior);
    if (likely(s)) {
        /* Claiming is what makes a free exact: of two frees (or a free and
         * a realloc) of one block, racing or not, only one clears the bit. */
        if (unlikely(!claim(s, idx))) {
            report_not_live(s, idx, p, where, NULL);
            return;
        }
        free_claimed(s, idx, p, where, kind, has_size, sized, STACK_NOW);
        /* After the block's own checks: claimed, it is no longer live, so a
         * heap check first would skip its canary and blame a neighbour. */
        if (unlikely(mh_cfg.hard)) maybe_check(mh_tcache);
        return;
    }
    int r = interior ? LARGE_NOT_OURS : large_free(p, has_size, sized, kind, where);
    if (r == LARGE_BUSY) {
        report_busy(p, where, "double-free");
        return;
    }
    if (r != LARGE_DONE) {
        report_bad_pointer(p, where, "invalid-free", interior);
        return;
    }
    if (mh_tcache) mh_tcache->frees++;
    mh_tick(false);
}

/* The call a report names for a free of this kind. */
static inline const char *free_where(int kind) {
    return kind == KIND_MALLOC ? "free" : kind == KIND_NEW_ARRAY ? "operator delete[]" : "operator delete";
}
static inline const char *free_where_sized(int kind, bool has_size) {
    return has_size && kind == KIND_MALLOC ? "free_sized" : free_where(kind);
}

/* free of a slab block in hardened and debug modes: its own function, so
 * the fast path keeps its few registers, with the checks inline. */
static inline __attribute__((always_inline)) void free_hard_body(tcache_t *t, slab_t *s, uint32_t idx, void *p,
                                                                  const char *where, int kind, bool has_size,
                                                                  size_t sized) {
    /* The tail canary is read below, after the claim's locked instruction,
     * which waits for the info word's line: fetched now, the two lines
     * (often both cold: another thread wrote them) come in together. The
     * canary ends the slot, or nearly, in the classes of 16-byte steps. */
    if (s->canary) __builtin_prefetch((uint8_t *)p + (s->bsize - s->front) - 1);
    /* With stacks, the walk is done first: the lines the free writes (the
     * info word, the block's record, its front canary: cold in a program
     * that frees old blocks) come in meanwhile (debug larson: 2.5 %). */
    uint32_t free_stack = STACK_NOW;
    if (s->dbg && mh_opt.stacks) {
        __builtin_prefetch((uint8_t *)s->info + ((size_t)idx << (s->info16 ? 1 : 2)), 1);
        __builtin_prefetch(&s->dbg[idx], 1);
        __builtin_prefetch((uint8_t *)p - s->front, 1);
        free_stack = stack_capture();
    }
    if (unlikely(!claim_by(t, s, idx))) {
        report_not_live(s, idx, p, where, NULL);
        return;
    }
    free_claimed(s, idx, p, where, kind, has_size, sized, free_stack);
    if (unlikely(mh_opt.check_every)) maybe_check(t);
}
/* The tail canary of a live block of a lean slab (info: its info word),
 * checked: 8 bytes at most, one compare. */
static inline __attribute__((always_inline)) void tail_check_lean(slab_t *s, uint32_t idx, void *p, const char *where,
                                                                  uint32_t info) {
    if (!s->canary) return;
    size_t n = info & INFO_SIZE_MASK, slack = s->bsize - n, tlen = slack < s->canary_len ? slack : s->canary_len;
    size_t tbad = tlen ? canary_find_bad_short((uint8_t *)p + n, tlen) : SIZE_MAX;
    if (unlikely(tbad != SIZE_MAX)) report_canary(s, idx, p, where, n, tlen, SIZE_MAX, tbad);
}

/* check_block for a block of a lean slab (see prepare_lean). */
static inline __attribute__((always_inline)) bool check_lean(slab_t *s, uint32_t idx, void *p, const char *where, int kind,
                                                             bool has_size, size_t sized) {
    uint32_t info = block_info(s, idx);
    if (!kind_size_ok(s, idx, p, where, info, kind, has_size, sized)) return false;
    tail_check_lean(s, idx, p, where, info);
    return true;
}

/* free_hard_body when mh_cfg.lean: see prepare_lean. */
static inline __attribute__((always_inline)) void free_lean_body(tcache_t *t, slab_t *s, uint32_t idx, void *p,
                                                                  const char *where, int kind, bool has_size,
                                                                  size_t sized) {
    if (s->canary) __builtin_prefetch((uint8_t *)p + s->bsize - 1); /* (see free_hard_body) */
    if (unlikely(!claim_by(t, s, idx))) {
        report_not_live(s, idx, p, where, NULL);
        return;
    }
    if (unlikely(!check_lean(s, idx, p, where, kind, has_size, sized))) {
        set_live(s, idx);
        return;
    }
    void *tagged = p;
    if (s->poisoned) {
        poison_fill(p, s->poison_len);
        tagged = (void *)((uintptr_t)p | TAG_POISONED);
    }
    release_to_cache(s, tagged);
}

/* free_fast's calls for hardened and debug modes. Each ends the operation
 * free_fast entered (op_exit): the call is free_fast's last act. */
static MH_NOINLINE void free_hard(tcache_t *t, slab_t *s, uint32_t idx, void *p) {
    free_hard_body(t, s, idx, p, "free", KIND_MALLOC, false, 0);
    op_exit();
}
static MH_NOINLINE void free_lean(tcache_t *t, slab_t *s, uint32_t idx, void *p) {
    free_lean_body(t, s, idx, p, "free", KIND_MALLOC, false, 0);
    op_exit();
}
static MH_NOINLINE void free_lean_kind(tcache_t *t, slab_t *s, uint32_t idx, void *p, int kind, bool has_size,
                                       size_t sized) {
    free_lean_body(t, s, idx, p, has_size ? free_where_sized(kind, true) : free_where(kind), kind, has_size, sized);
    op_exit();
}
/* (operator delete and delete[]: the kind is checked against new's) */
static MH_NOINLINE void free_hard_kind(tcache_t *t, slab_t *s, uint32_t idx, void *p, int kind) {
    free_hard_body(t, s, idx, p, free_where(kind), kind, false, 0);
    op_exit();
}
/* (sized: free_sized, and the sized delete that C++14 compilers call for
 * every object whose type they know) */
static MH_NOINLINE void free_hard_sized(tcache_t *t, slab_t *s, uint32_t idx, void *p, int kind, size_t sized) {
    free_hard_body(t, s, idx, p, free_where_sized(kind, true), kind, true, sized);
    op_exit();
}

/* ---- the prefixed API ---------------------------------------------------- */

/* Is a lean slab's poison (its first 16 or 32 bytes) intact? One test;
 * poison_find_bad finds the byte when it is not. (Not with a sanitizer:
 * track_active() keeps alloc_fast away from here.) */
static inline bool poison_intact_lean(const void *p, uint32_t len) {
    const uint64_t pat = 0x0101010101010101ull * POISON_FREE;
    const mh_u64u *w = (const mh_u64u *)p;
    uint64_t x = (w[0] ^ pat) | (w[1] ^ pat);
    if (len > 16) x |= (w[2] ^ pat) | (w[3] ^ pat);
    return x == 0;
}

/* A cached block handed out by alloc_fast in hardened and debug modes when
 * the inline work will not do: the whole of prepare_block, then the end of
 * the operation. */
static MH_NOINLINE void *prepare_exit(void *tagged, slab_t *s, size_t n, int kind) {
    void *p = prepare_block((tslot_t){tagged, s}, n, kind, false);
    op_exit();
    return p;
}

/* The fast path of malloc and operator new: a thread cache holding a block
 * of the class (not for size 0, which wraps here: zero_guard gives it a
 * class of its own). It makes no call but as its last act: what needs one
 * goes to slow() (the give-back tick, taken by the operation that would
 * count ops_left down to 0; a valgrind or sanitizer client request;
 * sampling; check_every), or to prepare_exit in hardened and debug modes. */
static inline __attribute__((always_inline)) void *alloc_fast(size_t size, int kind,
                                                               void *(*slow)(size_t size, int kind)) {
    op_enter();
    tcache_t *t = mh_tcache;
    if (likely(t != NULL) && likely(size - 1 < MH_SMALL_MAX - 2 * MH_MIN_ALIGN)) {
        tbin_t *bin = &t->bins[size_to_class(size + mh_cfg.front + mh_cfg.tail)];
        if (likely(bin->count) && likely(t->ops_left > 1) && likely(!track_active()) &&
            (likely(!mh_cfg.hard) || likely(!mh_opt.sample_rate && !mh_opt.check_every))) {
            /* (field by field: gcc copied the pair through a vector
             * register and the stack, and read the slab back from there) */
            const tslot_t *slot = &bin->slots[--bin->count];
            void *tagged = slot->tagged;
            slab_t *s = slot->s;
            t->allocs++;
            t->ops_left--;
            void *p = untag(tagged);
            uint32_t idx = block_index(s, p);
            if (unlikely(mh_cfg.hard)) {
                /* hardened's lean work inline (prepare_lean); a poison check
                 * that fails, and everything else, in prepare_block */
                if (unlikely(!mh_cfg.lean) || unlikely(!s->lean) ||
                    (((uintptr_t)tagged & TAG_POISONED) && !poison_intact_lean(p, s->poison_len)))
                    return prepare_exit(tagged, s, size, kind);
                canary_fill_lean(s, p, size);
            }
            set_live_info(s, idx, INFO(size, kind));
            op_exit();
            return p;
        }
    }
    op_exit(); /* (alloc_generic marks its own) */
    return slow(size, kind);
}
static MH_NOINLINE void *malloc_generic(size_t size, int kind) { return alloc_generic(size, MH_MIN_ALIGN, kind, false); }

#ifdef MH_SOLO
#define SOLO_TO_LEAVE() solo_to_leave()
#else
#define SOLO_TO_LEAVE() false
#endif

/* free and its kin when free_fast's fast path will not do: in fast mode, a
 * bin that is full, a size that does not fit, a block that is not live, a
 * call to make (the give-back tick, a client request, solo_leave); and a
 * large block, a pointer not ours. free_impl does all of it: it claims,
 * checks the size, tells the tool and releases to the cache, which flushes
 * a full bin and counts the tick. */
static MH_NOINLINE void free_slow(void *p, int kind, bool has_size, size_t sized) {
    op_enter();
    free_impl(p, free_where_sized(kind, has_size), kind, has_size, sized);
    op_exit();
}

/* The fast path of free, free_sized and operator delete, sized or not: in
 * fast mode, a block of a slab, room in the thread's cache, a size that
 * fits it; hardened mode's defaults go to free_lean, other modes to
 * free_hard. Everything else takes free_slow. As alloc_fast, it calls
 * nothing but as its last act. */
static inline __attribute__((always_inline)) void free_fast(void *p, int kind, bool has_size, size_t sized) {
    op_enter();
    tcache_t *t = mh_tcache;
    if (likely(t != NULL)) {
        uint32_t idx;
        bool interior = false;
        slab_t *s = slab_of(p, &idx, &interior);
        if (likely(s != NULL)) {
            if (likely(!mh_cfg.hard)) {
                tbin_t *bin = &t->bins[s->cls];
                if (likely(bin->count < bin->cap) && (!has_size || likely(sized_ok(s, idx, sized))) &&
                    likely(t->ops_left > 1) && likely(!track_active()) && likely(!SOLO_TO_LEAVE()) &&
                    likely(claim_as(t, s, idx, false))) {
                    cache_put(t, bin, p, s);
                    t->ops_left--; /* (not to 0: that one takes free_slow, and its tick) */
                    op_exit();
                    return;
                }
            } else if (likely(mh_cfg.lean) && likely(s->lean)) {
                if (kind == KIND_MALLOC && !has_size) return free_lean(t, s, idx, p);
                return free_lean_kind(t, s, idx, p, kind, has_size, sized);
            } else {
                if (has_size) return free_hard_sized(t, s, idx, p, kind, sized);
                if (kind == KIND_MALLOC) return free_hard(t, s, idx, p);
                return free_hard_kind(t, s, idx, p, kind);
            }
        }
    }
    op_exit();
    if (p) free_slow(p, kind, has_size, sized);
}
MH_API void *mh_malloc(size_t size) { return alloc_fast(size, KIND_MALLOC, malloc_generic); }

MH_API void mh_free(void *p) { free_fast(p, KIND_MALLOC, false, 0); }

MH_API void *mh_calloc(size_t count, size_t size) {
    size_t total;
    if (unlikely(__builtin_mul_overflow(count, size, &total))) {
        errno = ENOMEM;
        return NULL;
    }
    return alloc_generic(total, MH_MIN_ALIGN, KIND_MALLOC, true);
}

MH_API int mh_posix_memalign(void **out, size_t align, size_t size) {
    if (align < sizeof(void *) || (align & (align - 1))) return EINVAL;
    int saved = errno;
    void *p = alloc_generic(size, align, KIND_MALLOC, false);
    if (!p) {
        errno = saved;
        return ENOMEM;
    }
    *out = p;
    return 0;
}

MH_API void *mh_aligned_alloc(size_t align, size_t size) {
    if (align == 0 || (align & (align - 1))) {
        errno = EINVAL;
        return NULL;
    }
    return alloc_generic(size, align, KIND_MALLOC, false);
}

MH_API void *mh_memalign(size_t align, size_t size) {
    /* glibc: a non-power-of-two alignment is rounded up to one. */
    if (align & (align - 1)) {
        if (align > ((size_t)1 << 62)) {
            errno = EINVAL;
            return NULL;
        }
        size_t a = 1;
        while (a < align) a <<= 1;
        align = a;
    }
    return alloc_generic(size, align, KIND_MALLOC, false);
}

MH_API void *mh_valloc(size_t size) { return alloc_generic(size, MH_PAGE, KIND_MALLOC, false); }

MH_API void *mh_pvalloc(size_t size) {
    size_t rounded = (size + MH_PAGE - 1) & ~(MH_PAGE - 1);
    if (rounded < size) {
        errno = ENOMEM;
        return NULL;
    }
    return alloc_generic(rounded ? rounded : MH_PAGE, MH_PAGE, KIND_MALLOC, false);
}

MH_API size_t mh_malloc_usable_size(const void *cp) {
    void *p = (void *)cp;
    if (!p) return 0;
    mh_ensure_init();
    uint32_t idx;
    bool interior = false;
    slab_t *s = slab_of(p, &idx, &interior);
    if (s) {
        if (likely(mh_cfg.lean) && likely(s->lean)) {
            /* (see prepare_lean; redis calls this at every zmalloc and zfree) */
            uint32_t info = info_load(s, idx, __ATOMIC_ACQUIRE);
            if (unlikely(!(info & INFO_LIVE))) {
                report_not_live(s, idx, p, "malloc_usable_size", "invalid-usable-size");
                return 0;
            }
            tail_check_lean(s, idx, p, "malloc_usable_size", info);
            return s->canary ? (info & INFO_SIZE_MASK) : s->bsize;
        }
        if (!slab_live(s, idx)) {
            report_not_live(s, idx, p, "malloc_usable_size", "invalid-usable-size");
            return 0;
        }
        if (mh_cfg.hard) check_block(s, idx, p, "malloc_usable_size", 0, false, 0);
        return slab_block_size(s, idx);
    }
    size_t u;
    if (!interior && large_usable(p, &u, "malloc_usable_size")) return u;
    report_bad_pointer(p, "malloc_usable_size", "invalid-usable-size", interior);
    return 0;
}

/* realloc of a slab block: claimed first, like a free, so that a free (or
 * another realloc) racing with it is reported as what it is, and the block
 * is never released twice. */
/* Float block p (claimed) of sparse slab s to a fuller slab of its class,
 * if one has a free slot: a new tagged block, or NULL. Where s is the only
 * slab of its class holding blocks (a small heap is all sparse slabs, one
 * a class), the thread's next FLOAT_SKIP reallocs in that class try no
 * float: each try takes the class lock (a string grown one byte at a time
 * spent 28 % of its reallocs' instructions there, finding nothing). */
#define FLOAT_SKIP 64
static tslot_t float_block(void *p, slab_t *s, size_t size) {
    tcache_t *t = mh_tcache;
    if (t && t->float_skip[s->cls]) {
        t->float_skip[s->cls]--;
        return (tslot_t){NULL, NULL};
    }
    bool alone;
    tslot_t q = slab_float(p, s, size, &alone);
    if (alone && t) t->float_skip[s->cls] = FLOAT_SKIP;
    return q;
}

static void *realloc_small(slab_t *s, uint32_t idx, void *p, size_t size) {
    if (unlikely(!claim(s, idx))) {
        report_not_live(s, idx, p, "realloc", "invalid-realloc");
        return NULL;
    }
    if (mh_cfg.hard && !(likely(mh_cfg.lean) && likely(s->lean) ? check_lean(s, idx, p, "realloc", KIND_MALLOC, false, 0)
                                                                 : check_block(s, idx, p, "realloc", KIND_MALLOC, false, 0))) {
        set_live(s, idx);
        return NULL;
    }
    size_t old = slab_block_size(s, idx), room = s->bsize - s->front;
    if (unlikely(size > MH_MAX_REQUEST)) { /* before size + canary can wrap */
        set_live(s, idx);
        errno = ENOMEM;
        return NULL;
    }
    size_t need = size + s->canary;
    if (need <= room && (need > room / 2 || s->bsize <= 2 * MH_MIN_ALIGN) && !s->zero) {
        /* Fits: stay, unless floating moves it to a fuller slab. The
         * unlocked hint first: a string grown by a few bytes at a time
         * stays here thousands of times, and took the class lock each time. */
        tslot_t f = mh_opt.float_pct && sparse(s) ? float_block(p, s, size) : (tslot_t){NULL, NULL};
        if (f.tagged) {
            void *q = finish_block(f, size, KIND_MALLOC, false);
            if (track_active()) track_open(p, old);
            memcpy(q, p, size < old ? size : old);
            release_claimed(s, idx, p, true, STACK_NOW);
            return q;
        }
        if (s->canary) {
            /* Canaries depend only on their address, so writing the new
             * ones first leaves the old ones intact: whichever size a
             * concurrent heap check read before the claim, its canaries
             * are in place. */
            size_t slack = room - size;
            resize_step(s);
            track_open((uint8_t *)p + size, slack);
            canary_fill((uint8_t *)p + size, slack < s->canary_len ? slack : s->canary_len);
            info_store(s, idx, INFO(size, INFO_KIND(block_info(s, idx))), __ATOMIC_RELEASE);
            resize_step(s);
            track_noaccess((uint8_t *)p + size, slack);
            track_resize(p, old, size, s->front);
            if (size > old && mh_opt.fill_new) memset((uint8_t *)p + old, FILL_NEW, size - old);
        }
        set_live(s, idx);
        return p;
    }
    void *q = alloc_generic(size, MH_MIN_ALIGN, KIND_MALLOC, false);
    if (!q) {
        set_live(s, idx);
        return NULL;
    }
    memcpy(q, p, size < old ? size : old);
    /* Floating, when the block moves anyway: a slot of a sparse slab goes
     * straight back to it, not to the thread cache, where the next
     * allocation would put a survivor right back there. */
    release_claimed(s, idx, p, sparse(s), STACK_NOW);
    return q;
}

/* realloc of a large block: claimed first too, checked once. */
static void *realloc_large(void *p, size_t size) {
    bool busy;
    struct large *l = large_claim(p, &busy);
    if (!l) {
        if (busy) report_busy(p, "realloc", "invalid-realloc");
        else report_bad_pointer(p, "realloc", "invalid-realloc", false);
        return NULL;
    }
    if (!large_check_claimed(l, false, 0, KIND_MALLOC, "realloc")) {
        large_unclaim(l);
        return NULL;
    }
    size_t old = large_size(l);
    if (unlikely(size > MH_MAX_REQUEST)) {
        large_unclaim(l);
        errno = ENOMEM;
        return NULL;
    }
    int status = LARGE_COPY;
    void *q = NULL;
    /* Shrinking into a slab, or a block that cannot be resized: move it. */
    if (size + mh_cfg.front + mh_cfg.tail > MH_SMALL_MAX) {
        q = large_resize(l, size, &status);
        /* Out of address space: what the caches hold unused goes first (as
         * for an allocation, alloc_retry). */
        if (status == LARGE_FAILED && mh_release_unused()) q = large_resize(l, size, &status);
        /* A growth that still fails is tried as a copy: the move fails too
         * where the program split the block's mapping (an madvise or mlock
         * of part of it; mremap takes one kernel mapping: EFAULT). */
        if (status == LARGE_FAILED && size > old) status = LARGE_COPY;
    }
    if (status == LARGE_COPY) {
        q = alloc_generic(size, MH_MIN_ALIGN, KIND_MALLOC, false);
        if (!q) {
            large_unclaim(l);
            return NULL;
        }
        memcpy(q, p, size < old ? size : old);
        large_release(l);
        return q;
    }
    large_unclaim(l);
    return q; /* NULL with ENOMEM when it failed */
}

MH_API void *mh_realloc(void *p, size_t size) {
    if (!p) return mh_malloc(size);
    if (size == 0) { /* glibc: realloc(p, 0) frees and returns NULL */
        mh_free(p);
        return NULL;
    }
    mh_ensure_init();
    uint32_t idx;
    bool interior = false;
    slab_t *s = slab_of(p, &idx, &interior);
    if (!s && interior) {
        report_bad_pointer(p, "realloc", "invalid-realloc", true);
        return NULL;
    }
    op_enter();
    void *q = s ? realloc_small(s, idx, p, size) : realloc_large(p, size);
    op_exit();
    return q;
}

MH_API void *mh_reallocarray(void *p, size_t count, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return mh_realloc(p, total);
}

MH_API void mh_free_sized(void *p, size_t size) { free_fast(p, KIND_MALLOC, true, size); }

MH_API void mh_free_aligned_sized(void *p, size_t align, size_t size) {
    (void)align;
    op_enter();
    if (p) free_impl(p, "free_aligned_sized", KIND_MALLOC, true, size);
    op_exit();
}

/* For operator new/delete (new.cpp). */
MH_INTERNAL void *mh_alloc_kind(size_t size, size_t align, int kind);
void *mh_alloc_kind(size_t size, size_t align, int kind) {
    if (align <= MH_MIN_ALIGN) return alloc_fast(size, kind, malloc_generic);
    return alloc_generic(size, align, kind, false);
}
/* operator new and new[] (new.cpp) jump here: their whole first try, and
 * the C++ runtime's part (new_handler, bad_alloc) only when it fails, in
 * mh_new_failed. Its bad_alloc unwinds through new_generic and mh_new: C
 * frames with unwind tables (Makefile) and nothing to clean up. */
/* (weak: libminiheap_prefixed.a has no new.cpp, and no caller of mh_new) */
MH_INTERNAL void *mh_new_failed(size_t size, size_t align, int kind) __attribute__((weak));
static MH_NOINLINE void *new_generic(size_t size, int kind) {
    void *p = alloc_generic(size, MH_MIN_ALIGN, kind, false);
    if (likely(p != NULL)) return p;
    return mh_new_failed(size, MH_MIN_ALIGN, kind);
}
MH_INTERNAL void *mh_new(size_t size);
MH_INTERNAL void *mh_new_array(size_t size);
void *mh_new(size_t size) { return alloc_fast(size, KIND_NEW, new_generic); }
void *mh_new_array(size_t size) { return alloc_fast(size, KIND_NEW_ARRAY, new_generic); }
MH_INTERNAL void mh_free_kind(void *p, int kind, bool has_size, size_t size);
void mh_free_kind(void *p, int kind, bool has_size, size_t size) {
    free_fast(p, kind, has_size, size);
}
/* The deletes C++ programs call most (a sized one for every object whose
 * type the compiler knows): free_fast with the kind and sizedness fixed. */
MH_INTERNAL void mh_delete(void *p);
MH_INTERNAL void mh_delete_sized(void *p, size_t size);
MH_INTERNAL void mh_delete_array(void *p);
MH_INTERNAL void mh_delete_array_sized(void *p, size_t size);
void mh_delete(void *p) { free_fast(p, KIND_NEW, false, 0); }
void mh_delete_sized(void *p, size_t size) { free_fast(p, KIND_NEW, true, size); }
void mh_delete_array(void *p) { free_fast(p, KIND_NEW_ARRAY, false, 0); }
void mh_delete_array_sized(void *p, size_t size) { free_fast(p, KIND_NEW_ARRAY, true, size); }

MH_API int mh_trim(size_t pad) {
    (void)pad;
    mh_ensure_init();
    uint64_t before = os_given_back();
    op_enter();
    tcache_t *t = mh_tcache;
    if (t) {
        quarantine_drain(t);
        tcache_flush_all(t);
    }
    op_exit();
    mh_tick(true);
    return os_given_back() != before;
}

MH_API void mh_reset(void) {
    mh_ensure_init();
    mh_lock(&mh_locks.tick);
    tcache_reset_all();
    tcache_drop_current();
    slab_reset_all();
    miniheap_reset_all();
    large_reset_all();
    mh_random_restart();
    atomic_store(&mh_layout_fixed, 0);
    mh_unlock(&mh_locks.tick);
}
