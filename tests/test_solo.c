/* Single-thread live bits (src/solo.c): a program with one thread clears
 * live bits (in each block's info word) without a locked instruction, and
 * the first claim by a second thread ends that. In each mode, in a process
 * of its own:
 *
 *   - one thread: the mode is on, a double free is reported once;
 *   - a forked child has the mode, whether its parent had one thread (the
 *     first half of the rounds) or two (the second half);
 *   - the transition by a free: in each round's child, the main thread and
 *     a new thread free one block at once (a barrier), the new thread's
 *     free being its first: exactly one of the two is reported, and the
 *     mode is off after;
 *   - the transition by an allocation: the main thread frees 256 blocks
 *     while a new thread, at once, allocates 256 of the same size: no
 *     report, every block is live or free as it should be (mh_check, and
 *     freeing all of them reports nothing), and the mode is still on: an
 *     allocation sets its own block's word with a plain store, which
 *     cannot meet the owner's change;
 *   - after a second thread freed, the mode is off and a double free is
 *     reported once.
 *
 * White-box: it reads mh_solo_state, an internal of the static library.
 * Prefixed build only. Skipped where the kernel has no membarrier. */
#include "mh_test.h"

#include <pthread.h>
#include <stdbool.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define ROUNDS 200
#define NBLOCKS 256

extern _Atomic unsigned mh_solo_state; /* src/solo.c: 0 off, 1 on, 2 leaving */

static atomic_int nreports, nother;

static void count_report(const mh_error_t *e, void *arg)
{
    (void)arg;
    if (!strcmp(e->kind, "double-free"))
        atomic_fetch_add(&nreports, 1);
    else
        atomic_fetch_add(&nother, 1);
}

static pthread_barrier_t go;
static void *volatile shared;
static void *mine[NBLOCKS], *theirs[NBLOCKS];

static void *second_freer(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&go);
    mh_free(shared);
    return NULL;
}

static void *second_allocator(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&go);
    for (int i = 0; i < NBLOCKS; i++)
        theirs[i] = mh_malloc(48);
    return NULL;
}

static void free_shared(void) { mh_free(shared); }
static void free_mine(void)
{
    for (int i = 0; i < NBLOCKS; i++)
        mh_free(mine[i]);
}

/* A new thread runs second and this one first, from the same barrier.
 * False if the thread could not start. */
static bool race(void *(*second)(void *), void (*first)(void))
{
    pthread_barrier_init(&go, NULL, 2);
    pthread_t t;
    if (pthread_create(&t, NULL, second, NULL) != 0)
        return false;
    pthread_barrier_wait(&go);
    first();
    pthread_join(t, NULL);
    return true;
}

/* One child: both threads free the same block at once. Exit status 0 when
 * exactly one free was reported and the mode ended. */
static int free_round(size_t size)
{
    shared = mh_malloc(size);
    if (!shared)
        return 6;
    if (!race(second_freer, free_shared))
        return 7;
    if (atomic_load(&nother))
        return 8;
    if (atomic_load(&nreports) != 1)
        return atomic_load(&nreports) == 0 ? 4 : 5;
    return atomic_load(&mh_solo_state) == 0 ? 0 : 9;
}

/* One child: the main thread frees while a new thread allocates blocks of
 * the same size. Exit status 0 when nothing was reported, the heap checks
 * and the mode is still on (an allocation's plain store to its own info
 * word cannot meet the owner's change). */
static int alloc_round(void)
{
    for (int i = 0; i < NBLOCKS; i++)
        if (!(mine[i] = mh_malloc(48)))
            return 6;
    if (!race(second_allocator, free_mine))
        return 7;
    if (mh_check() != 0)
        return 10;
    for (int i = 0; i < NBLOCKS; i++)
        mh_free(theirs[i]);
    if (atomic_load(&nother) || atomic_load(&nreports))
        return 11;
    return atomic_load(&mh_solo_state) == 1u ? 0 : 9;
}

static void *free_one(void *p)
{
    mh_free(p);
    return NULL;
}

/* The whole scenario in one mode, in a process whose first allocation is
 * this one's. */
static void run_mode(const char *mode)
{
    char opts[64];
    snprintf(opts, sizeof opts, "mode=%s:abort_on_error=0", mode);
    REQUIRE(mh_set_options(opts) == 0, "options");
    mh_set_error_handler(count_report, NULL);

    void *p = mh_malloc(64);
    mh_free(p);
    CHECK(atomic_load(&mh_solo_state) == 1, "[%s] one thread: the mode is on (state %u)", mode,
          atomic_load(&mh_solo_state));
    p = mh_malloc(64);
    mh_free(p);
    mh_free(opaque_ptr(p));
    CHECK(atomic_load(&nreports) == 1, "[%s] one thread: a double free is reported once (%d)", mode,
          atomic_load(&nreports));

    int status_count[16] = {0}, bad = 0;
    for (int r = 0; r < ROUNDS; r++) {
        if (r == ROUNDS / 2) { /* the parent has two threads from now on: its children start again */
            pthread_t t2;
            REQUIRE(pthread_create(&t2, NULL, free_one, mh_malloc(100)) == 0, "pthread_create");
            pthread_join(t2, NULL);
            CHECK(atomic_load(&mh_solo_state) == 0, "[%s] a second thread freed: the mode is off (state %u)", mode,
                  atomic_load(&mh_solo_state));
        }
        fflush(stdout);
        pid_t pid = fork();
        REQUIRE(pid >= 0, "fork");
        if (pid == 0) {
            atomic_store(&nreports, 0);
            atomic_store(&nother, 0);
            if (atomic_load(&mh_solo_state) != 1)
                _exit(3);
            _exit(r % 3 == 2 ? alloc_round() : free_round(r & 1 ? 64 : 3000));
        }
        int st = 0;
        REQUIRE(waitpid(pid, &st, 0) == pid, "waitpid");
        int code = WIFEXITED(st) ? WEXITSTATUS(st) : 15;
        if (code != 0)
            bad++;
        status_count[code < 16 ? code : 15]++;
    }
    CHECK(bad == 0,
          "[%s] transitions: %d of %d rounds wrong (3 mode off in the child %d, 4 no report %d, 5 two reports %d, "
          "8 another kind %d, 9 mode still on %d, 10 mh_check failed %d, 11 a report after allocating %d, "
          "15 died %d)",
          mode, bad, ROUNDS, status_count[3], status_count[4], status_count[5], status_count[8], status_count[9],
          status_count[10], status_count[11], status_count[15]);

    atomic_store(&nreports, 0);
    p = mh_malloc(64);
    mh_free(p);
    mh_free(opaque_ptr(p));
    CHECK(atomic_load(&nreports) == 1, "[%s] two threads: a double free is reported once (%d)", mode,
          atomic_load(&nreports));
    printf("  [%s] single-thread live bits: on with one thread and in forked children, %d transitions (by a racing "
           "double free, each reported once, or by an allocation beside frees) right, off after a second thread "
           "freed\n",
           mode, ROUNDS - bad);
}

int main(void)
{
    long q = syscall(SYS_membarrier, 0 /* MEMBARRIER_CMD_QUERY */, 0, 0);
    if (q < 0 || !(q & 8) || !(q & 16)) {
        printf("  skipped: no private expedited membarrier (query %ld)\n", q);
        return mh_test_exit("test_solo");
    }
    static const char *modes[] = {"fast", "hardened", "debug"};
    for (int m = 0; m < 3; m++) {
        fflush(stdout);
        pid_t pid = fork();
        REQUIRE(pid >= 0, "fork");
        if (pid == 0) {
            atomic_store(&mh_test_failures, 0); /* this mode's own */
            atomic_store(&mh_test_checks, 0);
            run_mode(modes[m]);
            _exit(mh_test_exit("test_solo") == 0 ? 0 : 1);
        }
        int st = 0;
        REQUIRE(waitpid(pid, &st, 0) == pid, "waitpid");
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "[%s] the mode's process failed (status 0x%x)", modes[m], st);
    }
    return mh_test_exit("test_solo");
}
