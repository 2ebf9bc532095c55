/* fork() while other threads allocate, and malloc from signal handlers.
 *
 * 1. fork-while-allocating: worker threads allocate, realloc and free in a
 *    loop while the main thread forks FORKS times. Each child (alarm()-guarded:
 *    a deadlock kills it with SIGALRM, which fails the test) verifies and frees
 *    blocks inherited from the parent, mallocs/frees/reallocs small and large
 *    blocks, spawns a thread that allocates, runs mh_check() when available,
 *    and exits 0.
 * 2. signals: thread A hammers the allocator while the main thread sends
 *    SIGUSR1 to thread B with pthread_kill, over and over; B's handler
 *    mallocs, reallocs and frees. Round 1: B does not allocate outside the
 *    handler (its first allocation ever happens in the handler). Round 2: B
 *    allocates too, with SIGUSR1 blocked around its own calls (the usual safe
 *    pattern), so handler and thread interleave on the same thread cache.
 *    A deadlock trips alarm(), whose handler fails the test.
 *    Rounds 3 and 4 flood one thread with signals whose handler allocates a
 *    block of every size class, while that thread runs allocator work the
 *    program cannot wrap in a signal mask: its cache flushed at its exit
 *    (round 3), fork's handlers (round 4). Holding a class lock there with
 *    signals open deadlocked at the first signal that landed (every run of
 *    round 3 before the fix; glibc's malloc deadlocks in both).
 * 3. orphans (prefixed build): threads hold freed blocks in their caches
 *    when the main thread forks; in the child those caches have no thread,
 *    and mh_trim() must still give their slabs back.
 *
 * Built prefixed (mh_*) and plain (-DUSE_PLAIN, run under LD_PRELOAD).
 */
#include "mh_test.h"

#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/wait.h>

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)
#define FORKS 50
#define NWORKERS 3
#define WSLOTS 128

static atomic_int stop_workers;
static mh_check_fn heap_check;

typedef struct {
    void *p;
    size_t size;
} wblk_t;

static void *worker(void *arg)
{
    rng_t r;
    rng_seed(&r, (uint64_t)(uintptr_t)arg + 100);
    wblk_t slots[WSLOTS];
    memset(slots, 0, sizeof slots);
    long ops = 0;
    while (!atomic_load_explicit(&stop_workers, memory_order_relaxed)) {
        wblk_t *b = &slots[rng_next(&r) % WSLOTS];
        if (b->p) {
            size_t bad = pat_check(b->p, b->size);
            CHECK(bad == (size_t)-1, "worker: block %p size %zu corrupted at %zu", b->p, b->size, bad);
            if (rng_next(&r) % 4 == 0) {
                size_t n = rng_range(&r, 1, 8192);
                void *q = A_REALLOC(b->p, n);
                CHECK(q != NULL, "worker: realloc failed");
                if (!q) {
                    A_FREE(b->p);
                    b->p = NULL;
                    continue;
                }
                b->p = q;
                b->size = n;
                pat_fill(q, n);
            } else {
                A_FREE(b->p);
                b->p = NULL;
            }
        } else {
            uint64_t k = rng_next(&r) % 100;
            size_t n = k < 90 ? rng_range(&r, 1, 512) : k < 99 ? rng_range(&r, 513, 16384) : rng_range(&r, 16385, 256 * KiB);
            b->p = A_MALLOC(n);
            CHECK(b->p != NULL, "worker: malloc(%zu) failed", n);
            if (b->p) {
                b->size = n;
                pat_fill(b->p, n);
            }
        }
        ops++;
    }
    for (int i = 0; i < WSLOTS; i++)
        if (slots[i].p) {
            CHECK(pat_check(slots[i].p, slots[i].size) == (size_t)-1, "worker: final block corrupted");
            A_FREE(slots[i].p);
        }
    return (void *)(intptr_t)ops;
}

/* ---- the child ---- */

static int child_failed;
#define CCHECK(cond, ...)                                                                                         \
    do {                                                                                                          \
        if (!(cond)) {                                                                                            \
            child_failed = 1;                                                                                     \
            CHECK(0, __VA_ARGS__);                                                                                \
        }                                                                                                         \
    } while (0)

static void *child_thread(void *arg)
{
    (void)arg;
    void *blk[500];
    for (int i = 0; i < 500; i++) {
        size_t n = (size_t)(i * 131 % 2000) + 1 + (i % 100 == 0 ? 300 * KiB : 0);
        blk[i] = A_MALLOC(n);
        CCHECK(blk[i] != NULL, "child thread: malloc(%zu) failed", n);
        if (blk[i])
            pat_fill(blk[i], n);
    }
    for (int i = 0; i < 500; i++) {
        size_t n = (size_t)(i * 131 % 2000) + 1 + (i % 100 == 0 ? 300 * KiB : 0);
        if (blk[i]) {
            CCHECK(pat_check(blk[i], n) == (size_t)-1, "child thread: block corrupted");
            A_FREE(blk[i]);
        }
    }
    return NULL;
}

#define NINHERIT 6
static const size_t inherit_sizes[NINHERIT] = {1, 100, 4000, 70000, 2 * MiB, 17};

static void child_main(void **inherited, int round)
{
    alarm(8); /* default action terminates: the parent reports SIGALRM */
    /* Blocks allocated by the parent before fork are intact and freeable. */
    for (int i = 0; i < NINHERIT; i++) {
        CCHECK(pat_check(inherited[i], inherit_sizes[i]) == (size_t)-1, "child %d: inherited block %d corrupted",
               round, i);
        A_FREE(inherited[i]);
    }
    rng_t r;
    rng_seed(&r, (uint64_t)round);
    void *blk[1000];
    size_t sz[1000];
    for (int i = 0; i < 1000; i++) {
        sz[i] = rng_range(&r, 1, 3000);
        blk[i] = (i % 5 == 0) ? A_CALLOC(1, sz[i]) : A_MALLOC(sz[i]);
        CCHECK(blk[i] != NULL, "child %d: malloc(%zu) failed", round, sz[i]);
        if (!blk[i])
            _exit(1);
        if (i % 5 == 0) {
            const uint8_t *z = blk[i];
            for (size_t k = 0; k < sz[i]; k++)
                if (z[k]) {
                    CCHECK(0, "child %d: calloc byte not zero", round);
                    break;
                }
        }
        pat_fill(blk[i], sz[i]);
    }
    for (int i = 0; i < 1000; i += 2) {
        CCHECK(pat_check(blk[i], sz[i]) == (size_t)-1, "child %d: block corrupted", round);
        A_FREE(blk[i]);
    }
    /* realloc chain through the size ranges, up to 8 MiB. */
    uint8_t *p = NULL;
    size_t cur = 0;
    for (size_t n = 8; n <= 8 * MiB; n = n * 5 / 2) {
        uint8_t *q = A_REALLOC(p, n);
        CCHECK(q != NULL, "child %d: realloc to %zu failed", round, n);
        if (!q)
            _exit(1);
        for (size_t k = 0; k < cur; k += (cur > 65536 ? 997 : 1))
            if (q[k] != (uint8_t)(k * 7 + 1)) {
                CCHECK(0, "child %d: realloc %zu -> %zu lost byte %zu", round, cur, n, k);
                break;
            }
        for (size_t k = cur; k < n; k++)
            q[k] = (uint8_t)(k * 7 + 1);
        p = q;
        cur = n;
    }
    A_FREE(p);
    /* A large block, touched. */
    uint8_t *big = A_MALLOC(16 * MiB);
    CCHECK(big != NULL, "child %d: malloc(16 MiB) failed", round);
    if (big) {
        for (size_t k = 0; k < 16 * MiB; k += 4096)
            big[k] = 1;
        A_FREE(big);
    }
    /* A thread that allocates. */
    pthread_t th;
    CCHECK(pthread_create(&th, NULL, child_thread, NULL) == 0, "child %d: pthread_create failed", round);
    pthread_join(th, NULL);
    for (int i = 1; i < 1000; i += 2) {
        CCHECK(pat_check(blk[i], sz[i]) == (size_t)-1, "child %d: block corrupted", round);
        A_FREE(blk[i]);
    }
    if (heap_check)
        CCHECK(heap_check() == 0, "child %d: mh_check() failed", round);
    _exit(child_failed ? 1 : 0);
}

static void test_fork_while_allocating(void)
{
    pthread_t th[NWORKERS];
    atomic_store(&stop_workers, 0);
    for (int i = 0; i < NWORKERS; i++)
        REQUIRE(pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i) == 0, "pthread_create failed");
    double t0 = now_sec();
    int ok = 0;
    int bad = 0;
    for (int round = 0; round < FORKS && bad < 3; round++) {
        void *inherited[NINHERIT];
        for (int i = 0; i < NINHERIT; i++) {
            inherited[i] = A_MALLOC(inherit_sizes[i]);
            REQUIRE(inherited[i] != NULL, "malloc failed");
            pat_fill(inherited[i], inherit_sizes[i]);
        }
        /* Let the workers get going between forks. */
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
        pid_t pid = fork();
        REQUIRE(pid >= 0, "fork failed: %s", strerror(errno));
        if (pid == 0)
            child_main(inherited, round);
        int st = 0;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        if (WIFSIGNALED(st))
            CHECK(0, "fork round %d: child killed by signal %d (%s)%s", round, WTERMSIG(st), strsignal(WTERMSIG(st)),
                  WTERMSIG(st) == SIGALRM ? " -- deadlock in the child after fork" : "");
        else if (WEXITSTATUS(st) != 0)
            CHECK(0, "fork round %d: child exited with %d", round, WEXITSTATUS(st));
        else
            ok++;
        if (WIFSIGNALED(st) || WEXITSTATUS(st) != 0)
            bad++;
        /* The parent's copies are untouched by the child. */
        for (int i = 0; i < NINHERIT; i++) {
            CHECK(pat_check(inherited[i], inherit_sizes[i]) == (size_t)-1, "parent block %d corrupted after fork", i);
            A_FREE(inherited[i]);
        }
    }
    atomic_store(&stop_workers, 1);
    long ops = 0;
    for (int i = 0; i < NWORKERS; i++) {
        void *r;
        pthread_join(th[i], &r);
        ops += (long)(intptr_t)r;
    }
    if (bad >= 3)
        printf("  fork: gave up after 3 failed children\n");
    printf("  fork: %d/%d children ok while %d threads did %ld operations, %.2fs\n", ok, FORKS, NWORKERS, ops,
           now_sec() - t0);
    if (heap_check)
        CHECK(heap_check() == 0, "mh_check() failed in the parent after the forks");
}

/* ---- signals ---- */

static atomic_long handled;
static sem_t handled_sem;
static atomic_int handler_bad;
static atomic_int stop_sig;

static void usr1_handler(int sig)
{
    (void)sig;
    int saved = errno;
    static const size_t sizes[] = {24, 200, 3000, 40000, 150000};
    void *p[5];
    for (int i = 0; i < 5; i++) {
        p[i] = A_MALLOC(sizes[i]);
        if (!p[i]) {
            atomic_store(&handler_bad, 1);
            continue;
        }
        memset(p[i], 0x3c, sizes[i]);
    }
    void *q = A_REALLOC(p[0], 5000);
    if (!q)
        atomic_store(&handler_bad, 1);
    else {
        const uint8_t *b = q;
        for (int i = 0; i < 24; i++)
            if (b[i] != 0x3c)
                atomic_store(&handler_bad, 2);
        p[0] = q;
    }
    for (int i = 0; i < 5; i++)
        A_FREE(p[i]);
    atomic_fetch_add(&handled, 1);
    sem_post(&handled_sem); /* async-signal-safe */
    errno = saved;
}

static void alarm_handler(int sig)
{
    (void)sig;
    static const char msg[] = "FAIL test_fork: alarm fired -- deadlock (malloc from a signal handler?)\n";
    ssize_t w = write(STDOUT_FILENO, msg, sizeof msg - 1);
    (void)w;
    _exit(2);
}

static void *hammer(void *arg)
{
    rng_t r;
    rng_seed(&r, 999 + (uint64_t)(uintptr_t)arg);
    void *slots[64] = {0};
    long ops = 0;
    while (!atomic_load_explicit(&stop_sig, memory_order_relaxed)) {
        int s = (int)(rng_next(&r) % 64);
        if (slots[s]) {
            A_FREE(slots[s]);
            slots[s] = NULL;
        } else {
            size_t n = rng_next(&r) % 50 == 0 ? rng_range(&r, 64 * KiB, 512 * KiB) : rng_range(&r, 1, 2048);
            slots[s] = A_MALLOC(n);
            if (slots[s])
                ((uint8_t *)slots[s])[n - 1] = 1;
        }
        ops++;
    }
    for (int i = 0; i < 64; i++)
        A_FREE(slots[i]);
    return (void *)(intptr_t)ops;
}

static atomic_int b_allocates;

static void *thread_b(void *arg)
{
    (void)arg;
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigset_t none;
    sigemptyset(&none);
    rng_t r;
    rng_seed(&r, 5);
    while (!atomic_load(&stop_sig)) {
        if (atomic_load(&b_allocates)) {
            pthread_sigmask(SIG_BLOCK, &usr1, NULL);
            void *p = A_MALLOC(rng_range(&r, 1, 400));
            void *q = A_MALLOC(rng_range(&r, 1, 5000));
            A_FREE(p);
            q = A_REALLOC(q, rng_range(&r, 1, 9000));
            A_FREE(q);
            pthread_sigmask(SIG_UNBLOCK, &usr1, NULL); /* a pending signal lands here */
        } else {
            /* Idle until a signal arrives; the handler runs here. */
            pthread_sigmask(SIG_BLOCK, &usr1, NULL);
            if (!atomic_load(&stop_sig))
                sigsuspend(&none);
            pthread_sigmask(SIG_UNBLOCK, &usr1, NULL);
        }
    }
    return NULL;
}

static void signal_round(int allocating_b, int nsignals)
{
    atomic_store(&stop_sig, 0);
    atomic_store(&b_allocates, allocating_b);
    atomic_store(&handled, 0);
    pthread_t a, b;
    REQUIRE(pthread_create(&a, NULL, hammer, (void *)1) == 0, "pthread_create failed");
    REQUIRE(pthread_create(&b, NULL, thread_b, NULL) == 0, "pthread_create failed");
    double t0 = now_sec();
    int sent = 0;
    for (int i = 0; i < nsignals && now_sec() - t0 < 5.0; i++) {
        int rc = pthread_kill(b, SIGUSR1);
        CHECK(rc == 0, "pthread_kill failed: %d", rc);
        sent++;
        /* Wait until it has been handled (so signals are not merged); the
         * alarm turns a hang here into a failure. */
        while (sem_wait(&handled_sem) != 0 && errno == EINTR)
            ;
    }
    atomic_store(&stop_sig, 1);
    pthread_kill(b, SIGUSR1); /* wake B from sigsuspend */
    void *r1;
    pthread_join(a, &r1);
    pthread_join(b, NULL);
    while (sem_trywait(&handled_sem) == 0)
        ;
    printf("  signals (thread B %s): %d signals handled in %.2fs while thread A did %ld operations\n",
           allocating_b ? "allocating with SIGUSR1 blocked" : "idle", sent, now_sec() - t0, (long)(intptr_t)r1);
    /* The wake-up signal may or may not have been handled. */
    long h = atomic_load(&handled);
    CHECK(h == sent || h == sent + 1, "%ld signals handled, %d sent", h, sent);
    CHECK(atomic_load(&handler_bad) == 0, "allocation in the signal handler failed or lost data (%d)",
          atomic_load(&handler_bad));
    CHECK(sent >= 1000, "only %d signals handled in the time allowed", sent);
}

/* ---- signals during allocator work the program does not call ---- */

#define EXIT_THREADS 20
#define EXIT_BLOCKS 64
static size_t class_sizes[64];
static int nclass_sizes;
static atomic_long flood_handled;
static atomic_int flood_stop;

static void every_class_handler(int sig)
{
    (void)sig;
    int saved = errno;
    void *p[64];
    for (int i = 0; i < nclass_sizes; i++) {
        p[i] = A_MALLOC(class_sizes[i]);
        if (p[i])
            memset(p[i], 0x5a, class_sizes[i]);
        else
            atomic_store(&handler_bad, 3);
    }
    for (int i = 0; i < nclass_sizes; i++)
        A_FREE(p[i]);
    atomic_fetch_add(&flood_handled, 1);
    errno = saved;
}

/* Fills its cache with blocks of every class (SIGUSR1 blocked: the
 * program's own calls are safe), then ends with signals open: the cache is
 * flushed after this returns, while the main thread keeps signalling. */
static void *exiting_thread(void *arg)
{
    (void)arg;
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);
    static __thread void *blk[64][EXIT_BLOCKS];
    for (int i = 0; i < nclass_sizes; i++)
        for (int k = 0; k < EXIT_BLOCKS; k++)
            blk[i][k] = A_MALLOC(class_sizes[i]);
    for (int i = 0; i < nclass_sizes; i++)
        for (int k = 0; k < EXIT_BLOCKS; k++)
            A_FREE(blk[i][k]);
    pthread_sigmask(SIG_UNBLOCK, &usr1, NULL);
    return NULL;
}

static void thread_exit_round(void)
{
    long sent = 0;
    for (int i = 0; i < EXIT_THREADS; i++) {
        pthread_t t;
        REQUIRE(pthread_create(&t, NULL, exiting_thread, NULL) == 0, "pthread_create failed");
        /* Until it is gone: tryjoin keeps the thread valid to signal. */
        while (pthread_tryjoin_np(t, NULL) == EBUSY) {
            pthread_kill(t, SIGUSR1);
            sent++;
        }
    }
    printf("  signals (threads exiting): %d threads ended under %ld signals, %ld handled\n", EXIT_THREADS, sent,
           atomic_load(&flood_handled));
}

static void *flood_thread(void *arg)
{
    pthread_t target = *(pthread_t *)arg;
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);
    while (!atomic_load(&flood_stop))
        pthread_kill(target, SIGUSR1);
    return NULL;
}

static void fork_flood_round(void)
{
    atomic_store(&flood_stop, 0);
    atomic_store(&flood_handled, 0);
    pthread_t self = pthread_self(), flood;
    REQUIRE(pthread_create(&flood, NULL, flood_thread, &self) == 0, "pthread_create failed");
    int forks = 0;
    for (; forks < 100; forks++) {
        pid_t pid = fork();
        REQUIRE(pid >= 0, "fork failed");
        if (pid == 0) {
            void *p = A_MALLOC(100);
            sigset_t now;
            pthread_sigmask(SIG_BLOCK, NULL, &now);
            _exit(!p ? 1 : sigismember(&now, SIGUSR1) ? 2 : 0); /* 2: fork left the signals blocked */
        }
        int st = 0;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child of fork %d: status 0x%x", forks, st);
    }
    atomic_store(&flood_stop, 1);
    pthread_join(flood, NULL);
    sigset_t now;
    pthread_sigmask(SIG_BLOCK, NULL, &now);
    CHECK(!sigismember(&now, SIGUSR1), "fork left SIGUSR1 blocked in the parent");
    printf("  signals (forking): %d forks under signals, %ld handled\n", forks, atomic_load(&flood_handled));
}

static void test_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = usr1_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = alarm_handler;
    sigaction(SIGALRM, &sa, NULL);
    sem_init(&handled_sem, 0, 0);
    alarm(40);
    signal_round(0, 20000);
    signal_round(1, 20000);
    alarm(60);
    for (size_t n = 16; n <= 16384 && nclass_sizes < 64; n = n * 5 / 4 + 16)
        class_sizes[nclass_sizes++] = n;
    sa.sa_handler = every_class_handler;
    sigaction(SIGUSR1, &sa, NULL);
    thread_exit_round();
    fork_flood_round();
    alarm(0);
    CHECK(atomic_load(&handler_bad) == 0, "allocation in the signal handler failed (%d)", atomic_load(&handler_bad));
    if (heap_check)
        CHECK(heap_check() == 0, "mh_check() failed after the signal test");
}

#ifndef USE_PLAIN
#define ORPHAN_THREADS 4
#define ORPHAN_BLOCKS 2000
static pthread_barrier_t orphans_cached, orphans_done;

static void *orphan_worker(void *arg)
{
    (void)arg;
    static __thread void *p[ORPHAN_BLOCKS];
    for (int i = 0; i < ORPHAN_BLOCKS; i++) p[i] = mh_malloc(100 + (size_t)(i % 4) * 300);
    for (int i = 0; i < ORPHAN_BLOCKS; i++) mh_free(p[i]);
    pthread_barrier_wait(&orphans_cached);
    pthread_barrier_wait(&orphans_done); /* alive, its cache full, across the fork */
    return NULL;
}

static void test_fork_orphans(void)
{
    mh_trim(0);
    mh_stats_t base;
    mh_stats(&base);
    pthread_t t[ORPHAN_THREADS];
    pthread_barrier_init(&orphans_cached, NULL, ORPHAN_THREADS + 1);
    pthread_barrier_init(&orphans_done, NULL, ORPHAN_THREADS + 1);
    for (int i = 0; i < ORPHAN_THREADS; i++) REQUIRE(pthread_create(&t[i], NULL, orphan_worker, NULL) == 0, "pthread_create");
    pthread_barrier_wait(&orphans_cached);
    mh_trim(0); /* empty slabs go: only the workers' cached blocks can keep slabs */
    mh_stats_t held;
    mh_stats(&held);
    CHECK(held.slabs > base.slabs, "the workers' caches hold no slab (%zu, %zu before): the test proves nothing",
          held.slabs, base.slabs);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork failed");
    if (pid == 0) {
        alarm(20);
        mh_trim(0);
        mh_stats_t st;
        mh_stats(&st);
        if (st.slabs > base.slabs) {
            printf("FAIL child: %zu slabs after mh_trim, %zu before the threads ran (%zu with their caches)\n",
                   st.slabs, base.slabs, held.slabs);
            _exit(1);
        }
        _exit(heap_check && heap_check() != 0 ? 2 : 0);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: status 0x%x", status);
    pthread_barrier_wait(&orphans_done);
    for (int i = 0; i < ORPHAN_THREADS; i++) pthread_join(t[i], NULL);
    pthread_barrier_destroy(&orphans_cached);
    pthread_barrier_destroy(&orphans_done);
}
#endif

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    mh_test_check_allocator("test_fork");
    heap_check = mh_find_check();
    test_fork_while_allocating();
    test_signals();
#ifndef USE_PLAIN
    test_fork_orphans();
#endif
    return mh_test_exit("test_fork");
}
