/* Live bits while one thread changes them. A free claims its block by
 * clearing the live bit of its info word: of two frees of one block, only
 * one clears it, which makes double frees exact. Across threads that takes
 * a locked instruction: 10-20 % of the time of single-threaded workloads.
 * (malloc sets the bit with a plain store: the word is the block's own.)
 *
 * While one thread (the owner) is the only one that changes live bits, it
 * changes them with single non-locked instructions (`btr`): a signal
 * handler on that thread cannot split one. The first claim by any other
 * thread ends this for the process, and must not run beside a plain change of the owner: the owner
 * marks each in mh_solo_busy (plain stores, no fence), and the leaving
 * thread clears mh_solo, makes every thread pass a full barrier
 * (membarrier), then waits for mh_solo_busy to read 0. The owner either
 * published its mark before that barrier (the leaver sees it and waits) or
 * reads mh_solo after it (NULL: it takes the locked path). Without
 * membarrier there is no owner.
 *
 * Started with the first thread cache, only while glibc says the process
 * is single-threaded, and in a forked child for the forking thread; never
 * under valgrind (which serialises threads) or a sanitizer (which should see
 * the locked path). */
#include "internal.h"
#include "track.h"

#if defined(MH_SOLO) && __has_include(<sys/single_threaded.h>)
#include <sys/single_threaded.h>
#define SINGLE_THREADED() (__libc_single_threaded != 0)
#else
#define SINGLE_THREADED() false /* no way to know: never start */
#endif

#ifdef MH_SOLO
tcache_t *_Atomic mh_solo;
_Atomic uint32_t mh_solo_busy;
_Atomic uint32_t mh_solo_state; /* SOLO_OFF, SOLO_ON, SOLO_LEAVING */
tcache_t *_Atomic mh_solo_owner;
static bool registered;

static void begin(tcache_t *t) {
    atomic_store(&mh_solo_owner, t);
    atomic_store(&mh_solo_busy, 0);
    atomic_store(&mh_solo, t);
    atomic_store(&mh_solo_state, SOLO_ON);
}

/* (A registration holds for the process and its forked children, not
 * across exec.) */
static void try_begin(tcache_t *t) {
    if (mh_track_valgrind) return;
    if (!registered) registered = os_membarrier_register();
    if (registered) begin(t);
}

void solo_start(tcache_t *t) {
    if (SINGLE_THREADED() && atomic_load(&mh_solo_state) == SOLO_OFF) try_begin(t);
}

static void end_here(void) {
    atomic_store(&mh_solo, NULL);
    atomic_store(&mh_solo_owner, NULL);
    atomic_store_explicit(&mh_solo_state, SOLO_OFF, memory_order_release);
}

/* True: this thread ends the mode (it was on). False: it is off, once a
 * transition another thread has begun is over. */
static bool take_leave(void) {
    uint32_t on = SOLO_ON;
    if (atomic_compare_exchange_strong(&mh_solo_state, &on, SOLO_LEAVING)) return true;
    while (atomic_load_explicit(&mh_solo_state, memory_order_acquire) == SOLO_LEAVING) os_yield();
    return false;
}

/* A thread other than the owner is about to change a live bit. Signals
 * are blocked while a handler of this thread could wait on its own
 * transition. */
void solo_leave(void) {
    sigset_t saved;
    os_signals_block(&saved);
    if (take_leave()) {
        atomic_store(&mh_solo, NULL);
        if (!os_membarrier()) mh_fatal("cannot end single-thread live bits: membarrier failed");
        while (atomic_load(&mh_solo_busy)) os_yield();
        end_here();
    }
    os_signals_restore(&saved);
}

/* t's cache goes away (its thread exits, or mh_reset): if it is the
 * owner's, the owner itself ends the plain changes; it is not inside one. */
void solo_forget(tcache_t *t) {
    if (t && t == atomic_load(&mh_solo_owner) && take_leave()) end_here();
}

/* A forked child has one thread, the forking one: it may change live bits
 * plainly, whatever the parent had (glibc leaves __libc_single_threaded as
 * it was). */
void solo_after_fork_child(void) {
    end_here();
    if (mh_tcache) try_begin(mh_tcache);
}
#else
void solo_start(tcache_t *t) { (void)t; }
void solo_forget(tcache_t *t) { (void)t; }
void solo_after_fork_child(void) {}
#endif
