/* Multi-threaded stress: random sizes, content checks, cross-thread frees and
 * reallocs, overlap checks, threads exiting with full thread caches, threads
 * created and joined in waves.
 *
 * Built prefixed (mh_*) and plain (-DUSE_PLAIN, run under LD_PRELOAD). Fixed
 * seeds; the workload of each thread is deterministic (the interleaving is
 * not). Bounded by operation counts, with a wall-clock guard.
 *
 * Phase "mesh": N threads (4, then 8) each own NSLOTS block slots. Each step
 * verifies a block's pattern (derived from pointer and size) and frees it,
 * reallocs it, or sends it to another thread's inbox; the receiver verifies,
 * then frees, reallocs or adopts it. Every CHECK_EVERY steps all threads stop
 * at a barrier and one of them checks that no two live blocks overlap (using
 * their usable sizes) and runs mh_check() when available.
 *
 * Phase "waves": WAVES generations of threads; each hands blocks to the next
 * generation (freed or realloc'ed after their allocating thread has exited)
 * and exits with a full thread cache.
 */
#include "mh_test.h"

#include <pthread.h>

#define NSLOTS 512
#define INBOX_CAP 1024
#define MAXT 8
#define CHECK_EVERY 8192

typedef struct {
    void *p;
    size_t size;
    uint64_t seed;
} blk_t;

typedef struct {
    pthread_mutex_t lock;
    blk_t items[INBOX_CAP];
    size_t head, count;
} inbox_t;

typedef struct {
    int id;
    rng_t rng;
    blk_t slots[NSLOTS];
    inbox_t inbox;
    long sent, received, reallocs_foreign, allocs, frees;
} tstate_t;

static tstate_t ts[MAXT];
static int nthreads;
static long ops_per_thread;
static pthread_barrier_t barrier;
static mh_check_fn heap_check;
static mh_stats_fn heap_stats;
static double deadline;
static atomic_int out_of_time;

static size_t rand_size(rng_t *r)
{
    uint64_t x = rng_next(r) % 1000;
    if (x < 900)
        return rng_range(r, 8, 256);
    if (x < 970)
        return rng_range(r, 257, 4096);
    if (x < 995)
        return rng_range(r, 4097, 65536);
    return rng_range(r, 65537, 300 * 1024);
}

static void verify(const blk_t *b, const char *where)
{
    size_t bad = pat_check_seed(b->p, b->size, b->seed);
    CHECK(bad == (size_t)-1, "%s: block %p size %zu corrupted at byte %zu", where, b->p, b->size, bad);
}

static void fill(blk_t *b)
{
    b->seed = pat_seed(b->p, b->size);
    pat_fill_seed(b->p, b->size, b->seed);
}

static void do_free(blk_t *b, const char *where)
{
    verify(b, where);
    A_FREE(b->p);
    b->p = NULL;
}

/* Allocate through a random entry point. */
static int do_alloc(tstate_t *t, blk_t *b)
{
    size_t n = rand_size(&t->rng);
    uint64_t how = rng_next(&t->rng) % 100;
    void *p = NULL;
    if (how < 85) {
        p = A_MALLOC(n);
    } else if (how < 90) {
        p = A_CALLOC(1, n);
        if (p) {
            const uint8_t *z = p;
            for (size_t i = 0; i < n; i += (n > 4096 ? 61 : 1))
                if (z[i]) {
                    CHECK(0, "calloc(1, %zu) byte %zu not zero", n, i);
                    break;
                }
        }
    } else if (how < 95) {
        size_t a = (size_t)64 << (rng_next(&t->rng) % 7); /* 64 .. 4096 */
        if (A_POSIX_MEMALIGN(&p, a, n) != 0)
            p = NULL;
        else
            CHECK(((uintptr_t)p & (a - 1)) == 0, "posix_memalign(%zu) = %p misaligned", a, p);
    } else {
        p = A_REALLOC(NULL, n);
    }
    CHECK(p != NULL, "thread %d: allocation of %zu bytes failed", t->id, n);
    if (!p)
        return 0;
    b->p = p;
    b->size = n;
    fill(b);
    t->allocs++;
    return 1;
}

/* realloc to a new random size; the surviving prefix must hold the old
 * pattern. Returns 0 (and leaves b freed) on failure. */
static int do_realloc(tstate_t *t, blk_t *b, const char *where)
{
    verify(b, where);
    size_t n = rand_size(&t->rng);
    void *q = A_REALLOC(b->p, n);
    CHECK(q != NULL, "%s: realloc(%zu -> %zu) failed", where, b->size, n);
    if (!q) {
        A_FREE(b->p);
        b->p = NULL;
        return 0;
    }
    size_t bad = pat_check_lim(q, b->size, b->seed, n);
    CHECK(bad == (size_t)-1, "%s: realloc %p(%zu) -> %p(%zu) lost byte %zu", where, b->p, b->size, q, n, bad);
    b->p = q;
    b->size = n;
    fill(b);
    return 1;
}

static int send_to(int target, const blk_t *b)
{
    inbox_t *in = &ts[target].inbox;
    int ok = 0;
    pthread_mutex_lock(&in->lock);
    if (in->count < INBOX_CAP) {
        in->items[(in->head + in->count) % INBOX_CAP] = *b;
        in->count++;
        ok = 1;
    }
    pthread_mutex_unlock(&in->lock);
    return ok;
}

static void drain_inbox(tstate_t *t, int adopt)
{
    blk_t got[64];
    for (;;) {
        size_t n = 0;
        pthread_mutex_lock(&t->inbox.lock);
        while (n < 64 && t->inbox.count) {
            got[n++] = t->inbox.items[t->inbox.head];
            t->inbox.head = (t->inbox.head + 1) % INBOX_CAP;
            t->inbox.count--;
        }
        pthread_mutex_unlock(&t->inbox.lock);
        if (!n)
            return;
        for (size_t i = 0; i < n; i++) {
            blk_t *b = &got[i];
            t->received++;
            uint64_t what = adopt ? rng_next(&t->rng) % 4 : 0;
            if (what == 2) {
                t->reallocs_foreign++;
                if (!do_realloc(t, b, "foreign realloc"))
                    continue;
                what = 3;
            }
            if (what == 3) {
                /* Adopt into a free slot if there is one. */
                size_t s = rng_next(&t->rng) % NSLOTS;
                if (!t->slots[s].p) {
                    verify(b, "adopt");
                    t->slots[s] = *b;
                    continue;
                }
            }
            do_free(b, "cross-thread free");
            t->frees++;
        }
    }
}

static int cmp_blk(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const blk_t *)a)->p, y = (uintptr_t)((const blk_t *)b)->p;
    return x < y ? -1 : x > y;
}

/* Called by one thread while all others wait at the barrier. */
static void overlap_check(void)
{
    static blk_t all[MAXT * (NSLOTS + INBOX_CAP)];
    size_t n = 0;
    for (int i = 0; i < nthreads; i++) {
        for (int s = 0; s < NSLOTS; s++)
            if (ts[i].slots[s].p)
                all[n++] = ts[i].slots[s];
        for (size_t k = 0; k < ts[i].inbox.count; k++)
            all[n++] = ts[i].inbox.items[(ts[i].inbox.head + k) % INBOX_CAP];
    }
    qsort(all, n, sizeof all[0], cmp_blk);
    for (size_t i = 0; i < n; i++) {
        size_t u = A_USABLE(all[i].p);
        CHECK(u >= all[i].size, "usable size %zu < requested %zu for %p", u, all[i].size, all[i].p);
        if (i + 1 < n)
            CHECK((uintptr_t)all[i].p + u <= (uintptr_t)all[i + 1].p,
                  "live blocks overlap: %p (usable %zu) and %p", all[i].p, u, all[i + 1].p);
    }
    /* Inbox blocks are verified here too (they may sit there a while). */
    for (size_t i = 0; i < n; i++)
        verify(&all[i], "overlap-check sample");
    if (heap_check)
        CHECK(heap_check() == 0, "mh_check() failed with %zu live blocks across %d threads", n, nthreads);
}

static void *mesh_thread(void *arg)
{
    tstate_t *t = arg;
    for (long op = 1; op <= ops_per_thread; op++) {
        if (op % 64 == 0)
            drain_inbox(t, 1);
        if (op % CHECK_EVERY == 0) {
            /* Only the serial thread writes the flag, between the two
             * barriers; everyone reads it after the second one. */
            if (pthread_barrier_wait(&barrier) == PTHREAD_BARRIER_SERIAL_THREAD) {
                overlap_check();
                if (now_sec() > deadline)
                    atomic_store(&out_of_time, 1);
            }
            pthread_barrier_wait(&barrier);
            if (atomic_load(&out_of_time))
                break;
        }
        blk_t *b = &t->slots[rng_next(&t->rng) % NSLOTS];
        if (!b->p) {
            do_alloc(t, b);
            continue;
        }
        uint64_t r = rng_next(&t->rng) % 100;
        if (r < 45) {
            do_free(b, "local free");
            t->frees++;
        } else if (r < 75) {
            int target = (int)(rng_next(&t->rng) % (uint64_t)(nthreads - 1));
            if (target >= t->id)
                target++;
            verify(b, "send");
            if (send_to(target, b)) {
                t->sent++;
                b->p = NULL;
            } else {
                do_free(b, "local free (inbox full)");
                t->frees++;
            }
        } else if (r < 90) {
            do_realloc(t, b, "local realloc");
        } else {
            verify(b, "keep");
        }
    }
    /* Nobody sends after this barrier; then empty the inbox and the slots. */
    pthread_barrier_wait(&barrier);
    drain_inbox(t, 0);
    for (int s = 0; s < NSLOTS; s++)
        if (t->slots[s].p) {
            do_free(&t->slots[s], "final free");
            t->frees++;
        }
    /* Exit with a full thread cache: churn small sizes, leaving freed blocks
     * cached in this thread. */
    void *tmp[256];
    for (int i = 0; i < 256; i++) {
        tmp[i] = A_MALLOC((size_t)(i % 32 + 1) * 16);
        CHECK(tmp[i] != NULL, "malloc failed");
    }
    for (int i = 0; i < 256; i++)
        A_FREE(tmp[i]);
    return NULL;
}

static size_t live_blocks_now(void)
{
    if (!heap_stats)
        return 0;
    mh_stats_t s;
    heap_stats(&s);
    return s.live_blocks;
}

static void run_mesh(int n, long ops, uint64_t seed)
{
    nthreads = n;
    ops_per_thread = ops;
    deadline = now_sec() + 4.0;
    atomic_store(&out_of_time, 0);
    pthread_barrier_init(&barrier, NULL, (unsigned)n);
    size_t live0 = live_blocks_now();
    for (int i = 0; i < n; i++) {
        memset(&ts[i], 0, sizeof ts[i]);
        ts[i].id = i;
        rng_seed(&ts[i].rng, seed * 1000 + (uint64_t)i);
        pthread_mutex_init(&ts[i].inbox.lock, NULL);
    }
    pthread_t th[MAXT];
    double t0 = now_sec();
    for (int i = 0; i < n; i++)
        REQUIRE(pthread_create(&th[i], NULL, mesh_thread, &ts[i]) == 0, "pthread_create failed");
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    long sent = 0, recv = 0, rf = 0, allocs = 0, frees = 0;
    for (int i = 0; i < n; i++) {
        sent += ts[i].sent;
        recv += ts[i].received;
        rf += ts[i].reallocs_foreign;
        allocs += ts[i].allocs;
        frees += ts[i].frees;
        pthread_mutex_destroy(&ts[i].inbox.lock);
    }
    pthread_barrier_destroy(&barrier);
    printf("  mesh %d threads: %ld allocs, %ld frees, %ld sent / %ld received cross-thread, %ld foreign reallocs, "
           "%.2fs%s\n",
           n, allocs, frees, sent, recv, rf, now_sec() - t0, atomic_load(&out_of_time) ? " (stopped at time guard)" : "");
    CHECK(sent == recv, "%ld blocks sent but %ld received", sent, recv);
    CHECK(allocs == frees, "%ld blocks allocated but %ld freed", allocs, frees);
    CHECK(sent > 0, "no cross-thread traffic");
#ifndef USE_PLAIN
    /* Only this program allocates through mh_*: the count is exact. */
    size_t live1 = live_blocks_now();
    CHECK(live1 == live0, "live_blocks %zu before the mesh, %zu after all threads exited", live0, live1);
#else
    (void)live0;
#endif
    if (heap_check)
        CHECK(heap_check() == 0, "mh_check() failed after the mesh with %d threads", n);
}

/* ---- waves ---- */

#define WAVES 40
#define WAVE_THREADS 4
#define WAVE_BLOCKS 1500
#define HANDOFF_CAP (WAVE_THREADS * WAVE_BLOCKS)

static pthread_mutex_t handoff_lock = PTHREAD_MUTEX_INITIALIZER;
static blk_t handoff[2][HANDOFF_CAP];
static size_t handoff_n[2];
static atomic_long wave_foreign_frees, wave_foreign_reallocs;

typedef struct {
    int wave, id;
} wave_arg_t;

static void *wave_thread(void *arg)
{
    const wave_arg_t *wa = arg;
    tstate_t local;
    memset(&local, 0, sizeof local);
    local.id = wa->id;
    rng_seed(&local.rng, 777 + (uint64_t)wa->wave * 64 + (uint64_t)wa->id);
    int in = wa->wave & 1, out = in ^ 1;

    /* Take this thread's share of the previous generation's blocks (their
     * allocating threads have exited): free or realloc them. */
    for (;;) {
        blk_t b;
        pthread_mutex_lock(&handoff_lock);
        int have = handoff_n[in] > 0;
        if (have)
            b = handoff[in][--handoff_n[in]];
        pthread_mutex_unlock(&handoff_lock);
        if (!have)
            break;
        if (rng_next(&local.rng) % 3 == 0) {
            atomic_fetch_add(&wave_foreign_reallocs, 1);
            if (!do_realloc(&local, &b, "wave realloc"))
                continue;
        }
        do_free(&b, "wave free of a dead thread's block");
        atomic_fetch_add(&wave_foreign_frees, 1);
    }

    blk_t mine[WAVE_BLOCKS];
    for (int i = 0; i < WAVE_BLOCKS; i++) {
        if (!do_alloc(&local, &mine[i]))
            mine[i].p = NULL;
    }
    for (int i = 0; i < WAVE_BLOCKS; i++) {
        if (!mine[i].p)
            continue;
        uint64_t r = rng_next(&local.rng) % 4;
        if (r == 0) {
            int passed = 0;
            pthread_mutex_lock(&handoff_lock);
            if (handoff_n[out] < HANDOFF_CAP) {
                handoff[out][handoff_n[out]++] = mine[i];
                passed = 1;
            }
            pthread_mutex_unlock(&handoff_lock);
            if (passed)
                continue;
        }
        do_free(&mine[i], "wave local free");
    }
    /* Exit right after a burst of small frees: the thread cache is full. */
    void *tmp[512];
    for (int i = 0; i < 512; i++)
        tmp[i] = A_MALLOC((size_t)(i % 64 + 1) * 8);
    for (int i = 0; i < 512; i++)
        A_FREE(tmp[i]);
    return NULL;
}

static void run_waves(void)
{
    size_t live0 = live_blocks_now();
    double t0 = now_sec();
    handoff_n[0] = handoff_n[1] = 0;
    for (int w = 0; w < WAVES; w++) {
        pthread_t th[WAVE_THREADS];
        wave_arg_t args[WAVE_THREADS];
        /* The generation that fills handoff[out] must find it empty. */
        CHECK(handoff_n[(w & 1) ^ 1] == 0, "handoff list not drained");
        for (int i = 0; i < WAVE_THREADS; i++) {
            args[i].wave = w;
            args[i].id = i;
            REQUIRE(pthread_create(&th[i], NULL, wave_thread, &args[i]) == 0, "pthread_create failed");
        }
        for (int i = 0; i < WAVE_THREADS; i++)
            pthread_join(th[i], NULL);
        /* Every inherited block was taken (and freed) by this generation. */
        CHECK(handoff_n[w & 1] == 0, "wave %d left %zu inherited blocks", w, handoff_n[w & 1]);
    }
    /* The main thread frees the last generation's blocks. */
    int last = WAVES & 1;
    for (size_t i = 0; i < handoff_n[last]; i++)
        do_free(&handoff[last][i], "main free of a dead thread's block");
    handoff_n[last] = 0;
    printf("  waves: %d generations of %d threads, %ld frees and %ld reallocs of dead threads' blocks, %.2fs\n",
           WAVES, WAVE_THREADS, (long)atomic_load(&wave_foreign_frees), (long)atomic_load(&wave_foreign_reallocs),
           now_sec() - t0);
    CHECK(atomic_load(&wave_foreign_frees) > 0, "no block crossed a generation");
#ifndef USE_PLAIN
    size_t live1 = live_blocks_now();
    CHECK(live1 == live0, "live_blocks %zu before the waves, %zu after", live0, live1);
#else
    (void)live0;
#endif
    if (heap_check)
        CHECK(heap_check() == 0, "mh_check() failed after the waves");
}

#ifndef USE_PLAIN
/* A thread that only frees (a consumer; a main thread that frees what its
 * workers made) must not keep what it frees in its cache: nothing there
 * serves an allocation, and the blocks pin their pages. A worker makes
 * blocks of one class and this thread, its cache emptied by mh_trim(),
 * frees every other one (their slabs stay in use, so only thread caches
 * change what is cached). Once its bin has overflowed twice, it must go
 * back down to one block at each overflow; a thread that allocates keeps
 * half (4 of 8 blocks of 4 KiB). The decay is put off so the purge
 * thread's idle drain cannot empty a cache meanwhile. */
#define FREE_ONLY_BLOCKS 2000
#define FREE_ONLY_SIZE 4000
#define FREE_ONLY_CLASS 4096 /* the class of FREE_ONLY_SIZE bytes */
static void *free_only_maker(void *arg)
{
    void **blocks = arg;
    for (int i = 0; i < FREE_ONLY_BLOCKS; i++) {
        blocks[i] = A_MALLOC(FREE_ONLY_SIZE);
        if (blocks[i])
            memset(blocks[i], 1, FREE_ONLY_SIZE);
    }
    return NULL;
}

static void run_free_only(void)
{
    static void *blocks[FREE_ONLY_BLOCKS];
    CHECK(mh_set_options("decay_ms=600000") == 0, "mh_set_options(decay_ms) failed");
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, free_only_maker, blocks) == 0, "pthread_create failed");
    pthread_join(th, NULL);
    for (int i = 0; i < FREE_ONLY_BLOCKS; i++)
        REQUIRE(blocks[i] != NULL, "malloc(%d) failed", FREE_ONLY_SIZE);
    mh_trim(0);
    mh_stats_t st;
    mh_stats(&st);
    size_t base = st.cached_bytes, lo = SIZE_MAX;
    for (int i = 0; i < FREE_ONLY_BLOCKS; i += 2) {
        mh_free(blocks[i]);
        if (i < FREE_ONLY_BLOCKS / 2)
            continue;
        mh_stats(&st);
        lo = st.cached_bytes < lo ? st.cached_bytes : lo;
    }
    size_t kept = lo - base;
    printf("  free-only thread: its cache went down to %zu bytes over its last %d frees\n", kept,
           FREE_ONLY_BLOCKS / 4);
    CHECK(kept < 2 * FREE_ONLY_CLASS, "a thread that only frees kept at least %zu blocks of %d bytes",
          kept / FREE_ONLY_CLASS, FREE_ONLY_CLASS);
    for (int i = 1; i < FREE_ONLY_BLOCKS; i += 2)
        mh_free(blocks[i]);
    CHECK(mh_set_options("decay_ms=500") == 0, "mh_set_options(decay_ms) failed");
}
#endif

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    mh_test_check_allocator("test_threads");
    heap_check = mh_find_check();
    heap_stats = mh_find_stats();
    double t0 = now_sec();
    run_mesh(4, 400000, 1);
    run_mesh(8, 200000, 2);
    run_mesh(2, 400000, 3);
    run_waves();
#ifndef USE_PLAIN
    run_free_only();
#endif
    printf("  total %.2fs\n", now_sec() - t0);
    return mh_test_exit("test_threads");
}
