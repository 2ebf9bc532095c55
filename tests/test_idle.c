/* An idle program gives memory back (issue #12).
 *
 * In each mode: allocate about 200 MB of 16 B - 4 KiB blocks, keep 1 in 50,
 * free the rest, then make no allocator call at all and watch the resident
 * size for 2 x decay_ms. Then malloc_trim(0) gives back all it can: the
 * floor. With the purge thread (the default) the resident size must have
 * come within 2 MiB (the thread's cache), what the mode keeps on purpose
 * (debug's quarantines) and 5 % of the drop of that floor, within
 * 2 x decay_ms. With background=0 (the control) nothing can give it back
 * before the trim, since no allocator call runs the give-back clock, and it
 * must stay high. Plain build only
 * (run under LD_PRELOAD); each mode and the control in a fresh process.
 *
 * The program has 256 KiB of __thread data, which glibc places on the stack
 * of every thread: the purge thread's 128 KiB stack was too small for it,
 * pthread_create failed, and such a program never gave memory back.
 */
#include "mh_test.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define MiB ((size_t)1 << 20)
#define DECAY_MS 1000

static __thread volatile char tls_data[256 << 10];

static double ms_since(struct timespec t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0.tv_sec) * 1e3 + (double)(t.tv_nsec - t0.tv_nsec) / 1e6;
}

/* One run; returns 0 when it behaved as `background` says. `kept`: what
 * the mode holds back on purpose (debug's quarantines). */
static int run(int background, size_t kept)
{
    enum { N = 96000 }; /* blocks of 16 B - 4 KiB: about 200 MB */
    static char out[512];
    void **blocks = mmap(NULL, (size_t)N * sizeof(void *), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(blocks != MAP_FAILED, "mmap");
    tls_data[sizeof tls_data - 1] = 1;
    size_t base = mh_test_resident_bytes(), live = 0, total = 0;
    rng_t r;
    rng_seed(&r, 42);
    size_t nb = N;
    for (size_t i = 0; i < nb; i++) {
        size_t n = rng_range(&r, 16, 4096);
        blocks[i] = A_MALLOC(n);
        REQUIRE(blocks[i] != NULL, "malloc");
        memset(blocks[i], 1, n);
        total += n;
        if (i % 50 == 0)
            live += n;
    }
    for (size_t i = 0; i < nb; i++)
        if (i % 50 != 0)
            A_FREE(blocks[i]);
    size_t dropped = mh_test_resident_bytes();
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* No allocator call from here on: only reads of /proc/self/statm. */
    static size_t rss[1000];
    static double at[1000];
    int ns = 0;
    while (ns < 1000 && (ns == 0 || at[ns - 1] < 2 * DECAY_MS)) {
        at[ns] = ms_since(t0);
        rss[ns++] = mh_test_resident_bytes();
        usleep(10000);
    }
    /* What a forced give-back reaches: the floor the thread should get near
     * on its own (trim also empties this thread's cache and quarantine: the
     * allowance for those is 2 MiB of cache plus what the mode keeps). */
    malloc_trim(0);
    size_t trimmed = mh_test_resident_bytes();
    size_t limit = trimmed + 2 * MiB + kept + (dropped - base) / 20;
    double fell_at = -1;
    for (int i = 0; i < ns && fell_at < 0; i++)
        if (rss[i] <= limit)
            fell_at = at[i];
    size_t now = rss[ns - 1];
    int n = snprintf(out, sizeof out,
                     "  background=%d: %zu MB allocated, %zu MB live; resident (above the start) %zu MB after the drop, "
                     "%zu MB %d ms later, %zu MB after malloc_trim; limit %zu MB%s",
                     background, total / MiB, live / MiB, (dropped - base) / MiB, (now - base) / MiB, 2 * DECAY_MS,
                     (trimmed - base) / MiB, (limit - base) / MiB, fell_at >= 0 ? "" : ", never under it\n");
    if (write(1, out, (size_t)n) < 0) {}
    if (fell_at >= 0) {
        n = snprintf(out, sizeof out, ", under it %.0f ms after the drop\n", fell_at);
        if (write(1, out, (size_t)n) < 0) {}
    }
    if (background)
        return fell_at >= 0 && fell_at <= 2 * DECAY_MS ? 0 : 1;
    /* The control: nothing may have given the memory back before the trim. */
    return now > base + (dropped - base) / 2 ? 0 : 1;
}

/* Threads that go idle with full caches: TN threads each run bursts of
 * 16 B - 64 KiB blocks, free them all and wait on a barrier, making no
 * allocator call (or exit: their caches wait for new threads, up to 4,
 * and go back after decay_ms; those few MB fit in IDLE_SLACK, so
 * test_options checks that they go). Each cache holds up to 32 KiB per size class. The purge
 * thread must empty them (once a thread made no give-back tick for
 * decay_ms) and give their pages back in the same pass, since the blocks
 * were unused for decay_ms already: the resident size must come within
 * IDLE_SLACK of where it started within 1.5 x decay_ms. It came at
 * 990-1015 ms (decay_ms 1000); when the emptied blocks' pages waited
 * decay_ms more, at 1975-2005 ms.
 * With the caches left alone, 8 threads kept 15 MB (fast), 18 MB
 * (hardened) and 33 MB (debug, quarantine_mb=1); emptied, 3-6 MB (debug
 * 6-9 MB, with 10 MB more allowed). */
enum { TN = 8, TBLOCKS = 4000 };
#define IDLE_SLACK (10 * MiB)
static pthread_barrier_t idle_barrier;
static int threads_exit; /* the threads exit instead of waiting: their caches wait for new threads */
static void *burst_then_idle(void *arg)
{
    static void *blocks[TN][TBLOCKS];
    void **b = blocks[(uintptr_t)arg];
    rng_t r;
    rng_seed(&r, 1 + (uintptr_t)arg);
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < TBLOCKS; i++) {
            size_t n = (size_t)16 << rng_range(&r, 0, 12);
            n += rng_range(&r, 0, n - 1);
            b[i] = A_MALLOC(n);
            REQUIRE(b[i] != NULL, "malloc");
            memset(b[i], 1, n < 64 ? n : 64);
        }
        for (int i = 0; i < TBLOCKS; i++)
            A_FREE(b[i]);
    }
    if (threads_exit)
        return NULL;
    pthread_barrier_wait(&idle_barrier); /* idle from here */
    pthread_barrier_wait(&idle_barrier); /* measured */
    return NULL;
}

static int run_threads(int background, size_t kept)
{
    static char out[512];
    size_t base = mh_test_resident_bytes();
    pthread_t t[TN];
    pthread_barrier_init(&idle_barrier, NULL, TN + 1);
    for (uintptr_t i = 0; i < TN; i++)
        REQUIRE(pthread_create(&t[i], NULL, burst_then_idle, (void *)i) == 0, "pthread_create");
    if (threads_exit)
        for (int i = 0; i < TN; i++)
            pthread_join(t[i], NULL);
    else
        pthread_barrier_wait(&idle_barrier);
    size_t dropped = mh_test_resident_bytes(), now = dropped;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double fell_at = -1, at;
    while ((at = ms_since(t0)) < 1.5 * DECAY_MS) {
        now = mh_test_resident_bytes();
        if (now <= base + IDLE_SLACK + kept) {
            fell_at = at;
            break;
        }
        usleep(10000);
    }
    if (!threads_exit) {
        pthread_barrier_wait(&idle_barrier);
        for (int i = 0; i < TN; i++)
            pthread_join(t[i], NULL);
    }
    int n = snprintf(out, sizeof out,
                     "  %d %s threads, background=%d: resident (above the start) %zu MB when they went idle, "
                     "%zu MB %.0f ms later; limit %zu MB%s\n",
                     TN, threads_exit ? "exited" : "idle", background, (dropped - base) / MiB, (now - base) / MiB, fell_at >= 0 ? fell_at : at,
                     (IDLE_SLACK + kept) / MiB, fell_at >= 0 ? "" : ", never under it");
    if (write(1, out, (size_t)n) < 0) {}
    if (background)
        return fell_at >= 0 ? 0 : 1;
    return now > base + IDLE_SLACK + kept ? 0 : 1; /* the control */
}

/* The purge thread empties caches while their threads run and sleep by
 * turns (decay_ms=2: a thread that sleeps 5 ms is emptied). No block may
 * change under its owner nor be handed out twice: every block holds a
 * pattern, checked before it is freed. Runs 1.5 s, and on until a cache
 * was emptied (the test cannot pass without one), then mh_check(). */
enum { SN = 4, SBLOCKS = 256 };
static atomic_int stress_stop, stress_bad;
static void *stress_thread(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    static unsigned char *blocks[SN][SBLOCKS];
    static size_t lens[SN][SBLOCKS];
    unsigned char **b = blocks[id];
    size_t *len = lens[id];
    rng_t r;
    rng_seed(&r, 100 + id);
    for (int pass = 0; !atomic_load(&stress_stop) || pass < 2; pass++) {
        for (int i = 0; i < SBLOCKS; i++) {
            unsigned char tag = (unsigned char)(id * 31 + (uintptr_t)i);
            if (b[i]) {
                for (size_t k = 0; k < len[i]; k++)
                    if (b[i][k] != tag) {
                        atomic_fetch_add(&stress_bad, 1);
                        break;
                    }
                A_FREE(b[i]);
                b[i] = NULL;
            }
            if (atomic_load(&stress_stop))
                continue;
            len[i] = rng_range(&r, 16, 2048);
            b[i] = A_MALLOC(len[i]);
            if (!b[i]) {
                atomic_fetch_add(&stress_bad, 1);
                continue;
            }
            memset(b[i], tag, len[i]);
            if (i % 16 == 0) {
                /* Operations that last (a realloc copies 96 KiB between
                 * taking the new block from the cache and putting the old
                 * one there), with pauses: the give-back tick comes every
                 * 256 operations, so the purge thread takes the thread for
                 * idle while it runs, and parks its cache in the middle of
                 * some. */
                enum { BIG = 96 << 10 };
                unsigned char *q = A_MALLOC(BIG);
                if (q)
                    memset(q, tag, BIG);
                unsigned char *q2 = q ? A_REALLOC(q, BIG + (32 << 10)) : NULL;
                if (!q2) {
                    atomic_fetch_add(&stress_bad, 1);
                    continue;
                }
                for (size_t k = 0; k < BIG; k += 64)
                    if (q2[k] != tag) {
                        atomic_fetch_add(&stress_bad, 1);
                        break;
                    }
                A_FREE(q2);
                usleep(200);
            }
        }
        if (rng_range(&r, 0, 3) == 0)
            usleep(5000); /* idle: its cache may be emptied */
    }
    return NULL;
}

static int run_stress(void)
{
    mh_check_fn check = mh_find_check();
    mh_stats_fn stats = mh_find_stats();
    REQUIRE(check && stats, "mh_check and mh_stats are not exported");
    pthread_t t[SN];
    for (uintptr_t i = 0; i < SN; i++)
        REQUIRE(pthread_create(&t[i], NULL, stress_thread, (void *)i) == 0, "pthread_create");
    /* 1.5 s, and on until a cache was emptied (at most 10 s more). */
    mh_stats_t st;
    usleep(1500 * 1000);
    stats(&st);
    for (int i = 0; i < 1000 && st.idle_drains == 0; i++) {
        usleep(10000);
        stats(&st);
    }
    atomic_store(&stress_stop, 1);
    for (int i = 0; i < SN; i++)
        pthread_join(t[i], NULL);
    int bad = atomic_load(&stress_bad), heap = check();
    static char out[256];
    int n = snprintf(out, sizeof out,
                     "  stress: %d threads sleeping by turns: caches emptied %llu times while they ran; %d bad blocks, "
                     "mh_check %d\n",
                     SN, (unsigned long long)st.idle_drains, bad, heap);
    if (write(1, out, (size_t)n) < 0) {}
    return bad == 0 && heap == 0 && st.idle_drains > 0 ? 0 : 1;
}

/* A thread inside an allocator call is never emptied, however long the
 * call lasts: here an error handler (abort_on_error=0) that sleeps 500 ms
 * inside free() of a double free, with decay_ms=100. Its cache must not be
 * emptied during the call, and must be once the thread waits outside.
 * The count is taken while the thread is still inside the handler, and
 * only that thread's cache can be emptied then (see run_inside). Until
 * ec5715c the purge thread only started at pthread_create, 10 s into the
 * test, so this thread's cache was emptied at about the time of the call:
 * with both CPUs busy, inside the window (3 runs of 3). decay_ms is 100,
 * not 2: the thread makes its last give-back tick microseconds before the
 * call, and must not be emptied for a short preemption there. */
static atomic_int in_handler, counted;
static void slow_handler(const mh_error_t *err, void *arg)
{
    (void)err, (void)arg;
    atomic_store(&in_handler, 1);
    usleep(500 * 1000);
    /* Still inside: the main thread counts the drains now, so that one that
     * follows the call cannot be counted against it, however late the main
     * thread wakes (a busy machine). */
    atomic_store(&in_handler, 2);
    while (!atomic_load(&counted))
        usleep(1000);
    atomic_store(&in_handler, 0);
}
static atomic_int inside_phase, outside_done, inside_go;
static void *double_free_thread(void *arg)
{
    (void)arg;
    while (!atomic_load(&inside_go))
        usleep(1000);
    void *b[300];
    for (int i = 0; i < 300; i++) /* more than 256 operations: a give-back tick */
        b[i] = A_MALLOC(64);
    for (int i = 1; i < 300; i++)
        A_FREE(b[i]);
    A_FREE(b[0]);
    atomic_store(&inside_phase, 1);
    A_FREE(b[0]); /* the double free: the handler sleeps inside */
    atomic_store(&inside_phase, 2);
    while (!atomic_load(&outside_done)) /* outside: now it may be emptied */
        usleep(1000);
    return NULL;
}

static int run_inside(void)
{
    mh_stats_fn stats = mh_find_stats();
    void (*set_handler)(mh_error_handler_t, void *);
    void *sym = dlsym(RTLD_DEFAULT, "mh_set_error_handler");
    REQUIRE(stats && sym, "mh_stats and mh_set_error_handler are not exported");
    memcpy(&set_handler, &sym, sizeof set_handler);
    set_handler(slow_handler, NULL);
    /* The thread is made first (pthread_create allocates in this thread,
     * and could make a give-back tick here) and waits. Then the purge
     * thread runs and empties every other cache (this thread's; its own,
     * if it has one), so that during the call below only the thread
     * making it could be emptied. The purge thread starts at an
     * allocation's slow path once something is free to give back and the
     * process is decay_ms / 2 old: the large block below, after the
     * blocks that overflowed this thread's cache into their slabs. This
     * thread makes no give-back tick after, so it is not emptied again. */
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, double_free_thread, NULL) == 0, "pthread_create");
    static void *warm[2000];
    for (int i = 0; i < 2000; i++)
        warm[i] = A_MALLOC(1000);
    for (int i = 0; i < 2000; i++)
        A_FREE(warm[i]);
    usleep(60 * 1000);
    A_FREE(A_MALLOC(256 << 10));
    mh_stats_t st;
    stats(&st);
    uint64_t seen = st.idle_drains;
    for (int i = 0, still = 0; i < 1000 && (seen == 0 || still < 30); i++) { /* 300 ms without a change */
        usleep(10000);
        stats(&st);
        still = st.idle_drains == seen ? still + 1 : 0;
        seen = st.idle_drains;
    }
    REQUIRE(seen > 0, "no cache was emptied in 10 s: the purge thread did not start");
    atomic_store(&inside_go, 1);
    while (!atomic_load(&in_handler))
        usleep(1000);
    stats(&st);
    uint64_t before = st.idle_drains;
    while (atomic_load(&in_handler) != 2)
        usleep(1000);
    stats(&st);
    uint64_t inside = st.idle_drains - before;
    atomic_store(&counted, 1);
    /* Outside the call it must be emptied: wait for that (10 s at most). */
    for (int i = 0; i < 10000; i++) {
        stats(&st);
        if (st.idle_drains - before > inside)
            break;
        usleep(1000);
    }
    atomic_store(&outside_done, 1);
    pthread_join(t, NULL);
    stats(&st);
    uint64_t after = st.idle_drains - before;
    static char out[200];
    int n = snprintf(out, sizeof out,
                     "  a thread 500 ms inside free(): its cache emptied %llu times meanwhile, %llu once it waited "
                     "outside\n", (unsigned long long)inside, (unsigned long long)(after - inside));
    if (write(1, out, (size_t)n) < 0) {}
    return inside == 0 && after > inside ? 0 : 1;
}

/* Threads of ours named miniheap-purge in this process. */
static int purge_threads(void) { return mh_test_threads_named("miniheap-purge"); }

/* Small allocations and frees that go through the slow paths (refills and
 * flushes of the thread cache): about 0.5 MB, well under the 4 MiB that
 * starts the thread at once, also in debug mode, where the quarantine
 * keeps what it frees and the next call takes fresh memory. */
static void small_churn(void)
{
    static void *p[1000];
    for (int i = 0; i < 1000; i++)
        p[i] = malloc(16 + (size_t)(i % 64) * 16);
    for (int i = 0; i < 1000; i++)
        free(p[i]);
}

/* A forked child (decay_ms 4000) starts no purge thread while it is younger
 * than decay_ms / 2 and has taken under 4 MiB, though its parent had one: a
 * shell's children exec or exit at once, and each thread cost them about
 * 0.4 ms. Past that age, its next allocation starts one, so a forked
 * worker still gives memory back while idle. The child's first churn takes
 * milliseconds against the 2 s window. */
static int run_forked(void)
{
    for (int i = 0; i < 1000 && purge_threads() < 1; i++) {
        void *big = malloc(8 * MiB);
        if (!big)
            return 2;
        memset(big, 1, 8 * MiB);
        free(big);
        small_churn();
        usleep(10000);
    }
    if (purge_threads() < 1) {
        printf("  the parent started no purge thread\n");
        return 3;
    }
    pid_t pid = fork();
    if (pid < 0)
        return 4;
    if (pid == 0) {
        small_churn();
        int young = purge_threads();
        sleep(2);
        usleep(300000);
        int old = 0;
        for (int i = 0; i < 100 && old < 1; i++) {
            small_churn();
            old = purge_threads();
            if (old < 1)
                usleep(10000);
        }
        printf("  forked child: %d purge thread(s) in its first milliseconds, %d after 2.3 s\n", young, old);
        _exit(young == 0 && old == 1 ? 0 : 1);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 5;
}

/* This program again, in a fresh process with MINIHEAP_OPTIONS=opts and
 * up to three arguments (NULL ends them); returns its wait status. */
static int run_self(const char *argv0, const char *opts, const char *a1, const char *a2, const char *a3)
{
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        setenv("MINIHEAP_OPTIONS", opts, 1);
        execl("/proc/self/exe", argv0, a1, a2, a3, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return st;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    mh_test_check_allocator("test_idle");
#ifndef USE_PLAIN
    printf("test_idle: the plain build only (options come from the environment)\n");
    return 0;
#endif
    if (argc == 3)
        return run(atoi(argv[1]), (size_t)atol(argv[2]) * MiB);
    if (argc == 4) {
        threads_exit = strcmp(argv[3], "exited") == 0;
        return run_threads(atoi(argv[1]), (size_t)atol(argv[2]) * MiB);
    }
    if (argc == 2)
        return strcmp(argv[1], "inside") == 0 ? run_inside() : strcmp(argv[1], "forked") == 0 ? run_forked() : run_stress();
    static const char *const modes[] = {"fast", "hardened", "debug"};
    char opts[160], arg[8], kept[8];
    for (int m = 0; m < 3; m++)
        for (int bg = 1; bg >= 0; bg--) {
            snprintf(opts, sizeof opts, "mode=%s:decay_ms=%d:background=%d:leak_report=0", modes[m], DECAY_MS, bg);
            /* debug: 16 MiB of small blocks and 16 MiB of sampled ones in quarantine */
            snprintf(arg, sizeof arg, "%d", bg);
            snprintf(kept, sizeof kept, "%d", m == 2 ? 32 : 0);
            int st = run_self(argv[0], opts, arg, kept, NULL);
            CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "[%s] %s: the resident size %s (status %#x)", modes[m],
                  bg ? "with the purge thread" : "background=0 (control)",
                  bg ? "did not fall within 2 x decay_ms" : "fell without the thread", st);
        }
    /* Idle threads with full caches (and, in debug mode, quarantines). */
    for (int m = 0; m < 3; m++)
        for (int bg = 1; bg >= 0; bg--) {
            /* (debug: a 1 MiB quarantine, so that what it keeps on purpose
             * stays small beside what the caches and rings held) */
            snprintf(opts, sizeof opts, "mode=%s:decay_ms=%d:background=%d:leak_report=0%s", modes[m], DECAY_MS, bg,
                     m == 2 ? ":quarantine_mb=1" : "");
            snprintf(arg, sizeof arg, "%d", bg);
            /* debug: 10 MB more (its sampled blocks; emptied 6-9 MB, kept 33) */
            for (int exited = 0; exited < 2; exited++) {
                int st = run_self(argv[0], opts, arg, m == 2 ? "10" : "0", exited ? "exited" : "threads");
                CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                      "[%s] %d %s threads, %s: the resident size %s (status %#x)", modes[m], TN,
                      exited ? "exited" : "idle", bg ? "with the purge thread" : "background=0 (control)",
                      bg ? "did not fall within 1.5 x decay_ms" : "fell without the thread", st);
            }
        }
    for (int m = 0; m < 3; m++) {
        snprintf(opts, sizeof opts, "mode=%s:decay_ms=2:leak_report=0", modes[m]);
        int st = run_self(argv[0], opts, "stress", NULL, NULL);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "[%s] caches emptied while their threads run: a block changed, mh_check failed or no cache was emptied "
              "(status %#x)", modes[m], st);
    }
    int st = run_self(argv[0], "mode=fast:decay_ms=100:abort_on_error=0:leak_report=0", "inside", NULL, NULL);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0,
          "a thread's cache was emptied while it was inside free(), or not once it was outside (status %#x)", st);
    for (int m = 0; m < 3; m++) {
        snprintf(opts, sizeof opts, "mode=%s:decay_ms=4000:leak_report=0", modes[m]);
        st = run_self(argv[0], opts, "forked", NULL, NULL);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "[%s] a forked child started the purge thread in its first milliseconds, or not once older "
              "than decay_ms / 2 (status %#x)", modes[m], st);
    }
    return mh_test_exit("test_idle");
}
