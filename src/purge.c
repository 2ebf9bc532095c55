/* Giving memory back, on two clocks.
 *
 * The give-back clock (mh_tick) runs from the allocator's slow paths and
 * every MH_TICK_OPS operations of a thread: free pages of slabs, free units
 * and empty miniheaps, and cached large mappings go back to the kernel once
 * they stayed free for decay_ms.
 *
 * The purge thread runs the same passes while the program makes no
 * allocator call at all: a program that drops its data and sleeps gives the
 * memory back within decay_ms. It is started from an allocation path
 * (helpers_start_if_wanted says why never from a free): the first
 * allocation after something became free to give back, or after the heap
 * took PURGER_AT_TAKEN from the kernel, and not before the process (or
 * forked child) is decay_ms / 2 old unless it took that much (see
 * worth_a_thread). It sleeps until the next piece of
 * free memory falls due, and waits without a timeout when nothing is
 * pending, so it costs nothing then. A forked child starts its own by the
 * same rules, counted from the fork. At exit it is stopped only before the heap is
 * walked (leak.c). background=0 turns it off (a program that must stay
 * single-threaded, say for unshare(CLONE_NEWUSER)). It also empties the
 * caches of threads that made no allocator call for decay_ms
 * (tcache_drain_idle). */
#include "internal.h"

static _Atomic uint64_t next_tick_ms;

enum { PURGER_OFF, PURGER_STARTING, PURGER_RUNNING, PURGER_FAILED };
static struct {
    mh_lock_t lock;          /* guards cond, poked, stopping, unjoined, thread; never held while taking another */
    pthread_cond_t cond;     /* the thread waits here */
    _Atomic int state;       /* PURGER_* */
    _Atomic int wanted;      /* something became free to give back and no thread runs: start one */
    _Atomic int idle;        /* the thread may be about to wait with nothing pending: wake it */
    _Atomic int allowed;     /* after libc's start-up (our constructor): threads may be created */
    bool poked, stopping;
    bool unjoined;           /* thread was started and nobody joined it yet */
    pthread_t thread;
} purger = {.lock = MH_LOCK_INIT, .cond = PTHREAD_COND_INITIALIZER};

/* The purge thread is wanted and none runs: the next allocation starts it
 * (helpers_start_if_wanted). Called with allocator locks held. */
static void want_purger(void) {
    if (atomic_load_explicit(&purger.state, memory_order_relaxed) == PURGER_OFF && OPT(background) &&
        !atomic_load_explicit(&purger.wanted, memory_order_relaxed))
        atomic_store_explicit(&purger.wanted, 1, memory_order_relaxed);
}

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* Growth: fresh memory taken (units never used or given back, for new
 * slabs; new large mappings) since the last pass that gave back early.
 * Size classes do not share free memory, so a program whose blocks move
 * through the classes (strings growing by realloc) takes fresh pages for
 * one class while pages freed in others wait out decay_ms: bench realloc
 * peaked at 1.48 x glibc's resident set. Past GROW_TRIGGER, the next pass
 * gives back what has been free for decay_ms / GROW_DIV already, so the
 * footprint follows what is in use; a heap that reuses its free memory
 * takes nothing fresh and keeps it for the whole decay_ms. */
#define GROW_TRIGGER ((size_t)2 << 20)
#define GROW_DIV 8
static _Atomic size_t grown;
/* Fresh memory taken in all: past PURGER_AT_TAKEN the purge thread is
 * started (at the next allocation) even before anything was freed, since
 * a program that only frees from then on could not start it (see
 * helpers_start_if_wanted). A smaller program (ls) gets no thread until
 * it has something to give back and allocates again. */
#define PURGER_AT_TAKEN ((size_t)4 << 20)
static _Atomic size_t taken;

void purge_grew(size_t bytes) {
    size_t before = atomic_fetch_add_explicit(&grown, bytes, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&taken, bytes, memory_order_relaxed) + bytes >= PURGER_AT_TAKEN) want_purger();
    if (before < GROW_TRIGGER && before + bytes >= GROW_TRIGGER)
        atomic_store_explicit(&next_tick_ms, 0, memory_order_relaxed); /* the next tick passes */
}

/* One pass over everything that may hold memory to give back (tick lock
 * held); returns when the next of it falls due, UINT64_MAX when nothing
 * is pending. */
static uint64_t purge_pass(uint64_t now, bool force) {
    uint32_t step = OPT(decay_ms) / 4;
    atomic_store_explicit(&next_tick_ms, now + (step < 10 ? 10 : step), memory_order_relaxed);
    uint64_t decay = OPT(decay_ms);
    if (atomic_load_explicit(&grown, memory_order_relaxed) >= GROW_TRIGGER) {
        atomic_store_explicit(&grown, 0, memory_order_relaxed);
        decay /= GROW_DIV;
    }
    tcache_adopt_orphans();
    uint64_t due = tcache_release_spares(now, decay, force);
    for (uint32_t c = 0; c < mh_nclasses; c++) due = min_u64(due, slab_purge_class(c, now, decay, force));
    due = min_u64(due, miniheap_purge(now, decay, force));
    due = min_u64(due, large_purge(now, decay, force));
    due = min_u64(due, meta_purge(now, decay, force));
    return due;
}

static void purger_start(void);

/* When the process started, or this child was forked (os_now_ms). */
static _Atomic uint64_t born_ms;

/* A process younger than decay_ms / 2 that has taken less than
 * PURGER_AT_TAKEN waits for its thread: nothing it frees falls due before
 * decay_ms, and most such processes are gone by then. A shell's children
 * exec or exit within a millisecond, and each one that started a thread
 * paid for it (bash, `echo $i | cat` 300 times: 2.0 ms an iteration against
 * glibc's 1.1, 1.4 with background=0). */
static bool worth_a_thread(void) {
    return atomic_load_explicit(&taken, memory_order_relaxed) >= PURGER_AT_TAKEN ||
           os_now_ms() >= atomic_load_explicit(&born_ms, memory_order_relaxed) + OPT(decay_ms) / 2;
}

/* Our threads are created from allocation paths only, never from a free:
 * glibc frees a finished thread's TLS with free() while it holds its stack
 * cache lock (in pthread_join, and as a detached thread ends), and
 * pthread_create takes that lock, so a thread started from such a free
 * never returns (bench prodcons with tcache=0 hung in pthread_join). glibc
 * allocates (a new thread's TLS) without the lock held. */
void helpers_start_if_wanted(void) {
    if (unlikely(atomic_load_explicit(&purger.wanted, memory_order_relaxed)) && worth_a_thread()) purger_start();
    stats_start_if_wanted();
}

bool mh_tick_due(uint64_t now) { return now >= atomic_load_explicit(&next_tick_ms, memory_order_relaxed); }

void mh_tick(bool force) {
    uint64_t now = os_now_ms();
    if (!force && now < atomic_load_explicit(&next_tick_ms, memory_order_relaxed)) return;
    if (force) mh_lock(&mh_locks.tick);
    else if (!mh_trylock(&mh_locks.tick)) return;
    purge_pass(now, force);
    mh_unlock(&mh_locks.tick);
}

/* An allocation failed: what the caches hold that no slab or block uses
 * (cached large mappings, empty miniheaps, free units, the large blocks in
 * quarantine) goes back at once.
 * Not the caches of running threads or partly used slabs: a fuzzer that asks for 1 TiB
 * again and again must not lose its warm heap each time (libFuzzer ran
 * fuzz_ops at 107 and fuzz_threads at 130 exec/s with a full mh_trim here,
 * at 125 and 157 with this). */
bool mh_release_unused(void) {
    uint64_t before = os_given_back();
    mh_lock(&mh_locks.tick);
    uint64_t now = os_now_ms();
    tcache_release_spares(now, 0, true); /* (exited threads' blocks) */
    miniheap_purge(now, 0, true);
    large_purge(now, 0, true);
    large_release_quarantine();
    large_drop_rooms();
    meta_purge(now, 0, true);
    mh_unlock(&mh_locks.tick);
    return os_given_back() != before;
}

static void poke(void) {
    mh_lock(&purger.lock);
    purger.poked = true;
    pthread_cond_broadcast(&purger.cond);
    mh_unlock(&purger.lock);
}

/* decay_ms changed: the next tick comes on the new clock (with the start-up
 * schedule, decay_ms=0 set later would wait the default 500 ms). */
void mh_tick_reschedule(void) {
    uint32_t step = OPT(decay_ms) / 4;
    atomic_store_explicit(&next_tick_ms, os_now_ms() + (step < 10 ? 10 : step), memory_order_relaxed);
    if (atomic_load(&purger.state) == PURGER_RUNNING) poke();
}

/* Something just became free to give back (a slab got free pages, a unit
 * or a miniheap was freed, a large mapping was cached). Called with
 * allocator locks held, so it never creates the thread itself. */
void purge_pending(void) {
    int st = atomic_load_explicit(&purger.state, memory_order_relaxed);
    if (st == PURGER_OFF) want_purger();
    else if (st == PURGER_RUNNING && atomic_load(&purger.idle)) poke();
}

static void *purge_main(void *arg) {
    (void)arg;
    thread_mark_helper();
    mh_lock(&purger.lock);
    while (!purger.stopping && OPT(background)) {
        purger.poked = false;
        mh_unlock(&purger.lock);
        /* Idle from before the pass: whatever becomes pending while it runs
         * (after it looked) pokes, so the wait below cannot miss it. */
        atomic_store(&purger.idle, 1);
        mh_lock(&mh_locks.tick);
        uint64_t now = os_now_ms();
        /* Idle caches first: what they held was unused for decay_ms
         * already, so this very pass gives its pages back. */
        uint64_t due = tcache_drain_idle(now, OPT(decay_ms));
        due = min_u64(due, purge_pass(now, false));
        mh_unlock(&mh_locks.tick);
        mh_lock(&purger.lock);
        if (purger.stopping || purger.poked) continue;
        if (due == UINT64_MAX) {
            pthread_cond_wait(&purger.cond, &purger.lock);
        } else {
            atomic_store(&purger.idle, 0);
            uint64_t now = os_now_ms();
            uint64_t wait_ms = due > now + 10 ? due - now : 10; /* never spin */
            struct timespec ts = os_deadline(wait_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)wait_ms);
            pthread_cond_timedwait(&purger.cond, &purger.lock, &ts);
        }
    }
    atomic_store(&purger.idle, 0);
    atomic_store(&purger.state, PURGER_OFF);
    mh_unlock(&purger.lock);
    return NULL;
}

/* From an allocation path that holds no allocator lock (pthread_create
 * allocates through us). Only one caller gets to start it. */
static void purger_start(void) {
    atomic_store_explicit(&purger.wanted, 0, memory_order_relaxed);
    int expect = PURGER_OFF;
    if (!OPT(background) || !atomic_load(&purger.allowed) || !thread_count_self() ||
        !atomic_compare_exchange_strong(&purger.state, &expect, PURGER_STARTING))
        return;
    mh_lock(&purger.lock);
    purger.stopping = purger.poked = false;
    bool old = purger.unjoined;
    pthread_t old_thread = purger.thread;
    purger.unjoined = false;
    mh_unlock(&purger.lock);
    /* One that ended by itself (background=0 came and went): its stack. */
    if (old) os_thread_join(old_thread, 1000);
    pthread_t t;
    if (os_thread_start(purge_main, "miniheap-purge", &t)) {
        mh_lock(&purger.lock);
        purger.thread = t;
        purger.unjoined = true;
        mh_unlock(&purger.lock);
        atomic_store(&purger.state, PURGER_RUNNING);
    } else
        atomic_store(&purger.state, PURGER_FAILED); /* no threads here: the give-back clock alone */
}

/* Our constructors run after libc's: from then on threads may be made. */
__attribute__((constructor)) static void purge_allow(void) {
    atomic_store(&born_ms, os_now_ms());
    atomic_store(&purger.allowed, 1);
}

/* Ends the thread and joins it, waiting up to timeout_ms: true if one was
 * running. Also joins one that ended by itself (background=0), so that no
 * finished thread is left unjoined (ThreadSanitizer reports one). */
static bool purger_end(uint32_t timeout_ms) {
    int st = atomic_load(&purger.state);
    if (st != PURGER_RUNNING && st != PURGER_OFF) return false;
    mh_lock(&purger.lock);
    if (st == PURGER_RUNNING) {
        purger.stopping = true;
        pthread_cond_broadcast(&purger.cond);
    }
    bool join = purger.unjoined;
    pthread_t t = purger.thread;
    purger.unjoined = false;
    mh_unlock(&purger.lock);
    if (join) os_thread_join(t, timeout_ms);
    return st == PURGER_RUNNING;
}

/* At exit: end the thread before the exit-time checks walk the heap. It is
 * waited for a little only: a process that exits from inside the allocator
 * (a signal handler) must not hang here. */
void purge_stop(void) { purger_end(100); }

/* The program's last counted thread is exiting (tcache.c): the thread
 * ends, and is joined so that it is gone before the exiting thread ends;
 * then glibc sees the program's last thread end and exits the process from
 * it. The next allocation slow path of a thread still running starts it
 * again. */
void purge_end(void) {
    if (purger_end(2000)) want_purger();
}

void helpers_stop(void) {
    purge_end();
    stats_end();
}

/* The child has no purge thread (only the forking thread survives): if
 * the parent had one, it starts its own as worth_a_thread says, its age
 * and what it took counted from the fork. */
void purge_after_fork_child(void) {
    bool had = atomic_load(&purger.state) == PURGER_RUNNING;
    pthread_mutex_init(&purger.lock, NULL);
    pthread_cond_init(&purger.cond, NULL);
    atomic_store(&purger.idle, 0);
    atomic_store(&purger.state, PURGER_OFF);
    atomic_store(&purger.wanted, had ? 1 : 0);
    atomic_store(&born_ms, os_now_ms()); /* (and its taken counts from here) */
    atomic_store(&taken, 0);
    purger.unjoined = false; /* the parent's thread: not ours to join */
}

/* For the statistics and tests: is the thread running? */
bool purge_thread_running(void) { return atomic_load(&purger.state) == PURGER_RUNNING; }
