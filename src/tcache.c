/* Thread caches: a small stack of free blocks per size class and thread, so
 * most mallocs and frees take no lock. Blocks move to and from the class
 * bins in batches; when its thread exits (a pthread key destructor, which
 * needs no allocation), a cache waits for the next thread, or is flushed.
 * A block freed by another thread simply joins that thread's cache. */
#include "internal.h"
#include "track.h"

__thread mh_thread_t mh_thread __attribute__((tls_model("initial-exec")));
static __thread uint8_t t_exiting __attribute__((tls_model("initial-exec")));
/* mh_thread.home: while it is parked (mh_tcache NULL), the thread goes on
 * without a cache rather than make another. */
#define t_home (mh_thread.home)

static pthread_key_t tkey;

/* The program's threads we know to be running: those with a cache, and
 * those that started one of our helper threads. glibc ends the process when
 * its last thread ends, counting ours: a program whose main() calls
 * pthread_exit would live on, unkillable but by SIGKILL (our threads block
 * signals), once its other threads end. So when the last counted thread
 * exits, our helpers end first (helpers_stop). A thread we never counted
 * may still run then: it starts them again when it needs them. */
static _Atomic uint32_t live_threads;
static __thread uint8_t t_counted __attribute__((tls_model("initial-exec")));
static char no_cache; /* the key's value for a counted thread without a cache */

/* A counted thread always has a key value (its cache, or &no_cache), so
 * that the key's destructor sees it exit. */
static void count_self(void *key_value) {
    if (t_counted && key_value == &no_cache) return; /* counted already */
    pthread_setspecific(tkey, key_value);
    if (t_counted) return;
    t_counted = 1;
    atomic_fetch_add(&live_threads, 1);
}

/* Our own threads have no cache and are not counted. */
void thread_mark_helper(void) { t_exiting = 1; }

bool thread_count_self(void) {
    if (t_exiting) return false;
    count_self(&no_cache);
    return true;
}
static tcache_t *all_caches;
static uint64_t dead_allocs, dead_frees; /* counts of exited threads */

static void tcache_destroy(void *arg);

MH_INTERNAL void tcache_init(void);
void tcache_init(void) {
    if (pthread_key_create(&tkey, tcache_destroy) != 0) mh_fatal("cannot create the thread-cache key");
}

/* Blocks a bin of the class holds: tcache_kb's worth (the blocks a
 * thread frees and allocates again without a lock), at least 2 and at most
 * 128. The peak memory of threads that pass blocks to each other is mostly
 * what their caches hold (bench prodcons, fast mode: 7.5 MB with 32 KiB,
 * 5.7 MB with 8, glibc 5.5). */
static uint32_t blocks_worth(uint32_t cls, size_t bytes, uint32_t lo, uint32_t hi) {
    size_t n = bytes / mh_classes[cls].size;
    return n < lo ? lo : n > hi ? hi : (uint32_t)n;
}
static uint32_t bin_cap(uint32_t cls) {
    if (cls == mh_zero_cls) return 64;
    return blocks_worth(cls, (size_t)mh_opt.tcache_kb << 10, 2, 128);
}

/* A bin's first refill takes a few blocks, and each one after twice as many
 * as the one before, up to half the bin: a thread that allocates a block or
 * two of a class (a thread per request, a short-lived helper) takes no more
 * than it uses. Taking half a bin of every class it touched, then handing
 * them all back at its exit, cost a thread that made 64 allocations of
 * different classes 25 us. */
#define FIRST_FILL 4
static uint32_t min_u32(uint32_t a, uint32_t b) { return a < b ? a : b; }

/* ---- spare caches ---------------------------------------------------------
 * An exiting thread leaves its cache, blocks and all, for the next thread
 * that needs one (up to SPARES_MAX of them wait). A program that runs a
 * thread per task paid, for each thread, to take blocks into a new cache
 * class by class under the class locks, and to flush them all back at its
 * exit. A spare nobody took for decay_ms is flushed and freed by the next
 * give-back pass (tcache_release_spares), so an exited thread's blocks
 * still go back. Spares stay on all_caches (statistics, fork, reset), and
 * the idle drain passes them by. */
#define SPARES_MAX 4
static tcache_t *spares; /* the most recently left first, through spare_next */
static uint32_t nspares;
static tcache_t *spare_owner_cache; /* what a spare's owner fields point to */
static uint32_t spare_owner_in_op;

static bool spare_leave(tcache_t *t) {
    mh_lock(&mh_locks.caches);
    bool kept = nspares < SPARES_MAX;
    if (kept) {
        t->spare = true;
        t->spare_ms = os_now_ms();
        t->owner_cache = &spare_owner_cache;
        t->owner_in_op = &spare_owner_in_op;
        t->spare_next = spares;
        __atomic_store_n(&spares, t, __ATOMIC_RELAXED); /* (peeked at unlocked) */
        nspares++;
    }
    mh_unlock(&mh_locks.caches);
    if (kept) purge_pending(); /* (its blocks go back after decay_ms) */
    return kept;
}

/* The most recently left spare, made the calling thread's. */
static tcache_t *spare_take(void) {
    if (!__atomic_load_n(&spares, __ATOMIC_RELAXED)) return NULL;
    mh_lock(&mh_locks.caches);
    tcache_t *t = spares;
    if (t) {
        __atomic_store_n(&spares, t->spare_next, __ATOMIC_RELAXED);
        nspares--;
        t->spare = false;
        t->owner_cache = &mh_tcache;
        t->owner_in_op = &mh_thread.in_op;
        t->active_ms = os_now_ms();
    }
    mh_unlock(&mh_locks.caches);
    return t;
}

/* Unlink spare t (list lock held). */
static void spare_unlink(tcache_t *t) {
    tcache_t **pp = &spares;
    while (*pp != t) pp = &(*pp)->spare_next;
    __atomic_store_n(pp, t->spare_next, __ATOMIC_RELAXED);
    nspares--;
    t->spare = false;
}

static void tcache_release(tcache_t *t);
static void flush_all_since(tcache_t *t, uint64_t since);

uint64_t tcache_release_spares(uint64_t now, uint64_t decay, bool force) {
    uint64_t due = UINT64_MAX;
    if (!__atomic_load_n(&spares, __ATOMIC_RELAXED)) return due;
    tcache_t *out[SPARES_MAX];
    uint32_t n = 0;
    mh_lock(&mh_locks.caches);
    for (tcache_t *t = spares, *next; t; t = next) {
        next = t->spare_next;
        if (force || t->spare_ms + decay <= now) {
            spare_unlink(t);
            out[n++] = t;
        } else if (t->spare_ms + decay < due) {
            due = t->spare_ms + decay;
        }
    }
    mh_unlock(&mh_locks.caches);
    for (uint32_t i = 0; i < n; i++) {
        flush_all_since(out[i], out[i]->spare_ms);
        tcache_release(out[i]);
    }
    return due;
}

/* A bin's slots: first NARROW of them, beside every other bin's first ones
 * (the narrow area, after the cache's struct); then, once the thread uses
 * the class (a second refill, or an overflow), its full room in the wide
 * area that follows (bin_widen). The slots of a bin are written from the
 * first on, so a thread's cache is resident as far as it touched it: with
 * every bin's full room laid end to end (31 KiB, when a slot was one
 * pointer), a thread that took a block or two of 50 classes touched all of
 * it (1,000 such threads: 113 to 121 MB peak, 89 MB with tcache_kb=4,
 * 69.5 MB without caches; glibc 67.5 MB; 105 MB with the narrow area, and
 * 105.5 MB with two-pointer slots). */
#define NARROW 8
static tslot_t *wide_area(tcache_t *t) { return (tslot_t *)(t + 1) + (size_t)mh_nclasses * NARROW; }

/* Bin cls moves to its full room. The slots it holds are copied first: a
 * forked child that sees the new pointer sees them (tcache_adopt_orphans);
 * the old ones are cleared after, as a tool's leak scan must not find
 * stale copies there (tcache_scrub_for_tools clears only the current). */
static void bin_widen(tcache_t *t, uint32_t cls) {
    tbin_t *bin = &t->bins[cls];
    uint32_t room = bin_cap(cls);
    if (bin->room >= room) return;
    tslot_t *old = bin->slots, *wide = wide_area(t) + bin->wide_at;
    memcpy(wide, old, bin->count * sizeof *old);
    atomic_thread_fence(memory_order_release);
    bin->slots = wide;
    atomic_thread_fence(memory_order_release);
    bin->room = room;
    memset(old, 0, NARROW * sizeof *old);
}

/* A new cache, listed; *first: it is the process's first. */
static tcache_t *tcache_new(bool *first) {
    size_t slots = (size_t)mh_nclasses * NARROW;
    for (uint32_t c = 0; c < mh_nclasses; c++) slots += bin_cap(c);
    size_t bytes = sizeof(tcache_t) + slots * sizeof(tslot_t);
    /* The slots need no zeroing: a bin reads only those below its count
     * (and a cache freed while a tool watches was cleared, see
     * free_cache_locked). Zeroing them was 9 % of a short thread's time. */
    tcache_t *t = meta_alloc_part(bytes, sizeof *t);
    if (!t) return NULL;
    uint32_t wide_at = 0;
    for (uint32_t c = 0; c < mh_nclasses; c++) {
        tbin_t *bin = &t->bins[c];
        bin->cap = bin->room = min_u32(NARROW, bin_cap(c));
        bin->fill = min_u32(FIRST_FILL, bin->cap / 2); /* (cap >= 2) */
        bin->slots = (tslot_t *)(t + 1) + (size_t)c * NARROW;
        bin->wide_at = (uint16_t)wide_at;
        bin->refills = 0;
        wide_at += bin_cap(c);
    }
    t->bytes = bytes;
    t->ops_left = MH_TICK_OPS;
    static _Atomic uint32_t next_arena;
    t->arena = atomic_fetch_add(&next_arena, 1) % narenas();
    t->check_left = (int32_t)mh_opt.check_every;
    t->owner_cache = &mh_tcache;
    t->owner_in_op = &mh_thread.in_op;
    t->active_ms = os_now_ms();
    if (mh_opt.sample_rate) {
        uint32_t r;
        mh_random(&r, sizeof r);
        /* The first sample at a random place, 1 .. 2N-1 (mean N): with
         * sample_rate=1, every block, the first included (it was 1 .. 2N,
         * and a program whose first block was its only one got it unsampled
         * half the time). */
        t->sample_left = (int32_t)(1 + r % (2 * mh_opt.sample_rate - 1));
    }
    mh_lock(&mh_locks.caches);
    *first = all_caches == NULL;
    t->next = all_caches;
    if (all_caches) all_caches->prev = t;
    all_caches = t;
    mh_unlock(&mh_locks.caches);
    return t;
}

tcache_t *tcache_get_slow(void) {
    mh_ensure_init();
    if (!mh_opt.tcache || t_exiting) return NULL;
    if (mh_tcache) return mh_tcache;
    if (t_home) return NULL; /* parked: the purge thread is emptying it */
    bool first = false;
    tcache_t *t = spare_take();
    if (!t) t = tcache_new(&first);
    if (!t) return NULL;
    mh_tcache = t;
    t_home = t;
    if (first) solo_start(t);
    count_self(t);
    return t;
}

tslot_t tcache_refill(tcache_t *t, uint32_t cls) {
    tbin_t *bin = &t->bins[cls];
    if (bin->room <= NARROW && ++bin->refills >= 2) bin_widen(t, cls);
    bin->cap = bin->room; /* the thread allocates this class (see tcache_overflow) */
    uint32_t n = slab_alloc_batch(t->arena, cls, bin->slots, bin->fill);
    if (!n) return (tslot_t){NULL, NULL};
    /* The bin hands blocks out last first: in the order the slab chose
     * them (address order, without random), batch after batch. */
    for (uint32_t i = 0, j = n - 1; i < j; i++, j--) {
        tslot_t x = bin->slots[i];
        bin->slots[i] = bin->slots[j];
        bin->slots[j] = x;
    }
    bin->fill = min_u32(bin->fill * 2, bin->cap / 2);
    bin->count = n - 1;
    return bin->slots[n - 1];
}

/* The oldest blocks go; the most recently freed (cache-warm) stay. Each
 * chunk leaves the cache before it enters its slabs: a fork() that catches
 * this thread in between (it waits for an arena's lock the fork holds) must
 * not find a block both cached and free (see tcache_adopt_orphans). */
static void flush_bin_since(tcache_t *t, uint32_t cls, uint32_t keep, uint64_t since) {
    tbin_t *bin = &t->bins[cls];
    while (bin->count > keep) {
        void *chunk[64];
        uint32_t n = bin->count - keep < 64 ? bin->count - keep : 64;
        for (uint32_t i = 0; i < n; i++) chunk[i] = bin->slots[i].tagged;
        memmove(bin->slots, bin->slots + n, (bin->count - n) * sizeof *bin->slots);
        bin->count -= n;
        atomic_thread_fence(memory_order_release);
        slab_free_batch_since(cls, chunk, n, since);
    }
}
void tcache_flush_bin(tcache_t *t, uint32_t cls, uint32_t keep) { flush_bin_since(t, cls, keep, os_now_ms()); }

/* A free found bin cls full. Half of it goes back to the slabs, the most
 * recently freed half stays for the thread's next allocations. But a
 * thread that allocated nothing at all since the bin last overflowed (a
 * consumer; a main thread that frees what its workers made) only frees
 * into it: what the bin keeps serves no allocation and pins pages (bench
 * tasks: the main thread's bins held 1.4 MB of its workers' results). Such
 * a bin goes back whole, and holds half as many the next time, down to
 * FREE_ONLY_BYTES' worth within FREE_ONLY_MIN..FREE_ONLY_CAP blocks (a
 * floor of 2 blocks cost bench prodcons' consumer 5 % more CPU time: a
 * lock for every other free). A refill (the thread allocates the class)
 * gives the bin its room back. */
#define FREE_ONLY_BYTES 16384
#define FREE_ONLY_CAP 64
#define FREE_ONLY_MIN 4
void tcache_overflow(tcache_t *t, uint32_t cls) {
    tbin_t *bin = &t->bins[cls];
    bin_widen(t, cls);
    uint32_t mark = (uint32_t)t->allocs;
    if (mark == bin->allocs_mark) {
        tcache_flush_bin(t, cls, 0);
        uint32_t floor = min_u32(blocks_worth(cls, FREE_ONLY_BYTES, FREE_ONLY_MIN, FREE_ONLY_CAP), bin->room);
        bin->cap = bin->cap / 2 > floor ? bin->cap / 2 : floor;
    } else {
        tcache_flush_bin(t, cls, bin->cap / 2);
    }
    bin->allocs_mark = mark;
}

/* Everything t holds goes back, unused since `since`: blocks of a cache
 * left idle (or spare) for decay_ms have their pages given back at the
 * next pass, not decay_ms after it (bench memory spike: 1.7 MB of a
 * drained cache still resident 2 x decay_ms after the drop). */
static void flush_all_since(tcache_t *t, uint64_t since) {
    for (uint32_t c = 0; c < mh_nclasses; c++) flush_bin_since(t, c, 0, since);
}
void tcache_flush_all(tcache_t *t) { flush_all_since(t, os_now_ms()); }

#define QUARANTINE_SLOTS 16384

/* quarantine_mb is the budget of the whole process (valgrind's freed-block
 * list and ASan's quarantine are process-wide too): as a budget per thread,
 * the 8 threads of bench mstress held 128 MiB, and every reused block came
 * back cold from memory. Each thread keeps its own ring (a free takes no
 * lock). A thread gives up its oldest blocks only while the process is over
 * the budget and it holds more than its fair share (the budget over the
 * threads whose rings hold blocks), so one busy thread among idle ones has
 * the whole budget. Threads that hold more than their share and free no
 * more can leave the total at up to twice the budget. A ring adds its
 * changes to the total in steps of QUARANTINE_STEP: a locked add at every
 * push and pop was 6 % of debug larson (the line moves between cores). */
#define QUARANTINE_STEP ((size_t)64 << 10)
static _Alignas(64) _Atomic size_t quarantine_total;
static _Alignas(64) _Atomic uint32_t quarantine_holders;

static void quarantine_publish(quarantine_t *q) {
    if (q->bytes >= q->published + QUARANTINE_STEP) {
        atomic_fetch_add_explicit(&quarantine_total, q->bytes - q->published, memory_order_relaxed);
        q->published = q->bytes;
    } else if (q->published >= q->bytes + QUARANTINE_STEP) {
        atomic_fetch_sub_explicit(&quarantine_total, q->published - q->bytes, memory_order_relaxed);
        q->published = q->bytes;
    }
}

/* Leaving (on false), what the ring added to the total leaves it: its
 * blocks were popped, adopted (an orphan of a fork) or dropped (mh_reset). */
static void quarantine_hold(quarantine_t *q, bool on) {
    if (q->holding == on) return;
    q->holding = on;
    atomic_fetch_add_explicit(&quarantine_holders, on ? 1u : (uint32_t)-1, memory_order_relaxed);
    if (!on) {
        atomic_fetch_sub_explicit(&quarantine_total, q->published, memory_order_relaxed);
        q->bytes = q->published = 0;
    }
}

/* The oldest block leaves, still tagged as poisoned: its poison is checked
 * when the slot is handed out again (prepare_block), where the allocation
 * writes the same cache lines anyway, or by mh_check() (at exit in debug
 * mode), not here, where it would be read cold a second time. */
static void *quarantine_take(quarantine_t *q) {
    void *old = q->slots[q->head];
    q->slots[q->head] = NULL;
    q->head = (q->head + 1) % q->cap;
    q->count--;
    return old;
}
static void quarantine_pop(quarantine_t *q) {
    q->bytes -= block_release(quarantine_take(q));
    quarantine_publish(q);
}

/* Freed blocks wait here, first in first out, bounded in count and by the
 * budget (above); leaving, each is checked for writes after free. */
void quarantine_push(tcache_t *t, void *tagged, size_t bytes) {
    quarantine_t *q = &t->q;
    if (!q->slots) {
        q->slots = os_map(QUARANTINE_SLOTS * sizeof(void *));
        if (!q->slots) { block_release(tagged); return; }
        q->cap = QUARANTINE_SLOTS;
    }
    quarantine_hold(q, true);
    size_t budget = mh_cfg.quarantine;
    size_t share = budget / atomic_load_explicit(&quarantine_holders, memory_order_relaxed);
    while (q->count && (q->count == q->cap ||
                        (q->bytes + bytes > share &&
                         atomic_load_explicit(&quarantine_total, memory_order_relaxed) + bytes > budget))) {
        quarantine_pop(q);
    }
    q->slots[(q->head + q->count) % q->cap] = tagged;
    atomic_thread_fence(memory_order_release); /* a forked child sees the slot if it sees the count */
    q->count++;
    q->bytes += bytes;
    quarantine_publish(q);
}

void quarantine_drain(tcache_t *t) {
    quarantine_t *q = &t->q;
    while (q->count) quarantine_pop(q);
    quarantine_hold(q, false);
}

/* Free an unlisted cache (its blocks are gone already); mh_locks.caches held. */
static void free_cache_locked(tcache_t *t) {
    quarantine_hold(&t->q, false); /* an orphan's (its blocks went back to their slabs) */
    if (t->q.slots) os_unmap(t->q.slots, QUARANTINE_SLOTS * sizeof(void *));
    dead_allocs += t->allocs;
    dead_frees += t->frees;
    /* Its slots hold stale copies of block pointers: a tool's leak scan of
     * the free metadata must not find them. */
    if (track_active()) memset(t + 1, 0, t->bytes - sizeof *t);
    meta_free(t, t->bytes);
}

/* Unlist a cache and free it (its blocks are gone already); list lock held. */
static void release_locked(tcache_t *t) {
    if (t->prev) t->prev->next = t->next; else all_caches = t->next;
    if (t->next) t->next->prev = t->prev;
    free_cache_locked(t);
}
static void tcache_release(tcache_t *t) {
    mh_lock(&mh_locks.caches);
    release_locked(t);
    mh_unlock(&mh_locks.caches);
}

/* At thread exit, with signals blocked: the program's handler would find
 * the cache half flushed, or wait on a class lock the flush holds (the
 * deadlock test_fork's signal test met in CI). */
static void tcache_destroy(void *arg) {
    if (arg == &no_cache) {
        t_exiting = 1;
    } else {
        tcache_t *t = arg;
        sigset_t saved;
        os_signals_block(&saved);
        op_enter();
        while (t_home && !__atomic_load_n(&mh_tcache, __ATOMIC_ACQUIRE)) os_yield(); /* parked: until it is back */
        quarantine_drain(t);
        solo_forget(t);
        t_exiting = 1;
        mh_tcache = NULL;
        t_home = NULL;
        if (!spare_leave(t)) {
            tcache_flush_all(t);
            tcache_release(t);
        }
        op_exit();
        os_signals_restore(&saved);
    }
    if (t_counted) {
        t_counted = 0;
        if (atomic_fetch_sub(&live_threads, 1) == 1) helpers_stop();
    }
}

/* Other threads' bins and counters, read without their owners' help: a
 * figure a few blocks off is fine for statistics. */
MH_NO_TSAN void tcache_stats(size_t *cached_bytes, uint64_t *allocs, uint64_t *frees) {
    size_t bytes = 0;
    uint64_t a, f;
    mh_lock(&mh_locks.caches);
    a = dead_allocs;
    f = dead_frees;
    for (tcache_t *t = all_caches; t; t = t->next) {
        for (uint32_t c = 0; c < mh_nclasses; c++) bytes += (size_t)t->bins[c].count * mh_classes[c].size;
        a += t->allocs;
        f += t->frees;
    }
    mh_unlock(&mh_locks.caches);
    *cached_bytes = bytes;
    *allocs = a;
    *frees = f;
}

/* In a forked child only the forking thread survives. The caches of the
 * others become orphans, handed back at the next give-back tick
 * (tcache_adopt_orphans) rather than here, so a child that calls exec at
 * once does not pay for it. Singly linked through next. */
static tcache_t *orphans;

/* mh_reset: the blocks the caches hold are about to be unmapped. */
void tcache_reset_all(void) {
    mh_lock(&mh_locks.caches);
    for (tcache_t *t = spares, *next; t; t = next) { /* (the options set next may lay a cache out otherwise) */
        next = t->spare_next;
        release_locked(t);
    }
    __atomic_store_n(&spares, NULL, __ATOMIC_RELAXED);
    nspares = 0;
    for (tcache_t *t = all_caches; t; t = t->next) {
        for (uint32_t c = 0; c < mh_nclasses; c++) t->bins[c].count = 0;
        t->arena = 0; /* valid whatever the arena count the next allocation fixes */
        t->q.count = t->q.head = 0;
        quarantine_hold(&t->q, false);
    }
    while (orphans) {
        tcache_t *t = orphans;
        orphans = t->next;
        free_cache_locked(t);
    }
    mh_unlock(&mh_locks.caches);
}

/* At exit, under a tool that scans memory for leaks (memcheck): slots of
 * the caches and quarantine rings outside what they hold keep stale copies
 * of pointers to blocks handed out since; cleared, so a leaked block is
 * reported as lost, not as reachable through them. */
void tcache_scrub_for_tools(void) {
    mh_lock(&mh_locks.caches);
    for (tcache_t *t = all_caches; t; t = t->next) {
        for (uint32_t c = 0; c < mh_nclasses; c++) {
            tbin_t *b = &t->bins[c];
            memset(b->slots + b->count, 0, (b->room - b->count) * sizeof *b->slots);
        }
        quarantine_t *q = &t->q;
        for (uint32_t i = q->count; q->slots && i < q->cap; i++) q->slots[(q->head + i) % q->cap] = NULL;
    }
    mh_unlock(&mh_locks.caches);
}

void tcache_lock_all(void) { mh_lock(&mh_locks.caches); }
void tcache_unlock_all(void) { mh_unlock(&mh_locks.caches); }

void tcache_after_fork_child(void) {
    tcache_t *me = mh_tcache;
    for (tcache_t *t = all_caches, *next; t; t = next) {
        next = t->next;
        if (t == me) continue;
        t->next = orphans;
        orphans = t;
    }
    all_caches = me;
    if (me) me->next = me->prev = NULL;
    __atomic_store_n(&spares, NULL, __ATOMIC_RELAXED); /* (orphans now, with the others) */
    nspares = 0;
    atomic_store(&live_threads, t_counted ? 1 : 0);
    mh_unlock(&mh_locks.caches);
}

/* One block an orphan held: to its slab if it is really a cached one (the
 * fork may have caught its thread between moving a block and counting it;
 * then it is skipped, a leak at worst, never a double free). Straight to
 * the slab, not to this thread's cache, which may be in the middle of a
 * refill (mh_tick runs from there). */
static void adopt_block(void *tagged, bool quarantined) {
    uint32_t idx;
    bool interior = false;
    slab_t *s = slab_of(untag(tagged), &idx, &interior);
    if (!s || !slab_block_cached(untag(tagged), s->cls)) return;
    if (quarantined) block_verify_poison(tagged, "free");
    void *p = quarantined ? untag(tagged) : tagged;
    slab_free_batch(s->cls, &p, 1);
}

/* From mh_tick (tick_lock held): the orphans' quarantined and cached blocks
 * go back to their slabs, so they pin no pages. */
void tcache_adopt_orphans(void) {
    mh_lock(&mh_locks.caches);
    tcache_t *o = orphans;
    orphans = NULL;
    mh_unlock(&mh_locks.caches);
    while (o) {
        tcache_t *next = o->next;
        for (uint32_t i = 0; i < o->q.count; i++) adopt_block(o->q.slots[(o->q.head + i) % o->q.cap], true);
        for (uint32_t c = 0; c < mh_nclasses; c++)
            for (uint32_t i = 0; i < o->bins[c].count; i++) adopt_block(o->bins[c].slots[i].tagged, false);
        mh_lock(&mh_locks.caches);
        free_cache_locked(o);
        mh_unlock(&mh_locks.caches);
        o = next;
    }
}

/* mh_reset: the calling thread starts again without a cache, so the options
 * set next (tcache=0, say) apply to it too. */
void tcache_drop_current(void) {
    tcache_t *t = mh_tcache;
    if (!t) return;
    solo_forget(t);
    mh_tcache = NULL;
    t_home = NULL;
    pthread_setspecific(tkey, t_counted ? &no_cache : NULL); /* still counted: its exit is still seen */
    tcache_release(t);
}

static _Atomic uint64_t idle_drains;
uint64_t tcache_idle_drains(void) { return atomic_load_explicit(&idle_drains, memory_order_relaxed); }

#ifdef MH_IDLE_DRAIN
/* A parked cache empties: its quarantined blocks and its bins go back to
 * their slabs, still tagged (the poison of each is verified when its slot
 * is handed out again, as for a block leaving the quarantine). */
static void drain_parked(tcache_t *t, uint64_t since) {
    quarantine_t *q = &t->q;
    while (q->count) {
        void *tagged = quarantine_take(q);
        uint32_t idx;
        bool interior = false;
        slab_t *s = slab_of(untag(tagged), &idx, &interior);
        slab_free_batch_since(s->cls, &tagged, 1, since);
    }
    quarantine_hold(q, false);
    flush_all_since(t, since);
}

/* From the purge thread, with the tick lock held (so no fork runs): the
 * caches whose owners made no give-back tick for decay_ms since they were
 * last emptied are parked, pass one barrier together, and are emptied
 * unless their owner is inside an operation (then: again after decay_ms).
 * Returns when the next cache falls due. */
#define DRAIN_MAX 64
uint64_t tcache_drain_idle(uint64_t now, uint64_t decay) {
    static int barrier = -1; /* (the purge thread only) */
    if (barrier < 0) barrier = os_membarrier_register();
    uint64_t due = UINT64_MAX;
    tcache_t *parked[DRAIN_MAX];
    uint32_t n = 0;
    mh_lock(&mh_locks.caches);
    tcache_t *t = all_caches;
    for (; t && n < DRAIN_MAX; t = t->next) {
        if (t->spare) continue; /* (tcache_release_spares) */
        uint64_t active = __atomic_load_n(&t->active_ms, __ATOMIC_RELAXED);
        if (active <= t->drained_ms || !purge_ripe(now, active, decay, false, &due)) continue;
        __atomic_store_n(t->owner_cache, NULL, __ATOMIC_RELAXED);
        parked[n++] = t;
    }
    if (t) due = now; /* more than DRAIN_MAX: the rest at once */
    bool passed = n && barrier && os_membarrier();
    for (uint32_t i = 0; i < n; i++) {
        t = parked[i];
        if (passed && !__atomic_load_n(t->owner_in_op, __ATOMIC_RELAXED)) {
            atomic_thread_fence(memory_order_acquire); /* the owner's last operation, in full */
            drain_parked(t, __atomic_load_n(&t->active_ms, __ATOMIC_RELAXED));
            t->drained_ms = now;
            atomic_fetch_add_explicit(&idle_drains, 1, memory_order_relaxed);
        } else if (now + decay < due) {
            due = now + decay;
        }
        __atomic_store_n(t->owner_cache, t, __ATOMIC_RELEASE);
    }
    mh_unlock(&mh_locks.caches);
    return due;
}
#else
uint64_t tcache_drain_idle(uint64_t now, uint64_t decay) {
    (void)now, (void)decay;
    return UINT64_MAX;
}
#endif
