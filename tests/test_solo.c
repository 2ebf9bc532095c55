/* Claims while one thread frees (src/solo.c): a program with one thread
 * clears live bits without a locked instruction, and the first free of a
 * second thread ends that. Double frees stay exact throughout:
 *
 *   - one thread: the mode is on, a double free is reported once;
 *   - a forked child has the mode, whether its parent had one thread (the
 *     first half of the rounds) or two (the second half);
 *   - the transition: in each of ROUNDS children, the main thread and a
 *     new thread free one block at the same moment (a barrier), the new
 *     thread's free being its first: exactly one of the two is reported,
 *     and the mode is off after;
 *   - after a second thread freed, the mode is off and a double free is
 *     reported once.
 *
 * White-box: it reads mh_solo_state, an internal of the static library.
 * Prefixed build only. Skipped where the kernel has no membarrier. */
#include "mh_test.h"

#include <pthread.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define ROUNDS 300

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

static void *second_freer(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&go);
    mh_free(shared);
    return NULL;
}

/* One child: both threads free the same block at once. Exit status 0 when
 * exactly one free was reported and the mode ended. */
static int transition_round(size_t size)
{
    atomic_store(&nreports, 0);
    atomic_store(&nother, 0);
    if (atomic_load(&mh_solo_state) != 1)
        return 3;
    shared = mh_malloc(size);
    if (!shared)
        return 6;
    pthread_barrier_init(&go, NULL, 2);
    pthread_t t;
    if (pthread_create(&t, NULL, second_freer, NULL) != 0)
        return 7;
    pthread_barrier_wait(&go);
    mh_free(shared);
    pthread_join(t, NULL);
    if (atomic_load(&nother))
        return 8;
    if (atomic_load(&nreports) != 1)
        return atomic_load(&nreports) == 0 ? 4 : 5;
    return atomic_load(&mh_solo_state) == 0 ? 0 : 9;
}

static void *free_one(void *p)
{
    mh_free(p);
    return NULL;
}

int main(void)
{
    long q = syscall(SYS_membarrier, 0 /* MEMBARRIER_CMD_QUERY */, 0, 0);
    if (q < 0 || !(q & 8) || !(q & 16)) {
        printf("  skipped: no private expedited membarrier (query %ld)\n", q);
        return mh_test_exit("test_solo");
    }
    REQUIRE(mh_set_options("mode=hardened:abort_on_error=0") == 0, "options");
    mh_set_error_handler(count_report, NULL);

    void *p = mh_malloc(64);
    mh_free(p);
    CHECK(atomic_load(&mh_solo_state) == 1, "one thread: single-thread claims are on (state %u)",
          atomic_load(&mh_solo_state));
    p = mh_malloc(64);
    mh_free(p);
    mh_free(opaque_ptr(p));
    CHECK(atomic_load(&nreports) == 1, "one thread: a double free is reported once (%d)", atomic_load(&nreports));

    int status_count[16] = {0}, bad = 0;
    for (int r = 0; r < ROUNDS; r++) {
        if (r == ROUNDS / 2) { /* the parent has two threads from now on: its children start again */
            pthread_t t2;
            REQUIRE(pthread_create(&t2, NULL, free_one, mh_malloc(100)) == 0, "pthread_create");
            pthread_join(t2, NULL);
            CHECK(atomic_load(&mh_solo_state) == 0, "a second thread freed: the mode is off (state %u)",
                  atomic_load(&mh_solo_state));
        }
        fflush(stdout);
        pid_t pid = fork();
        REQUIRE(pid >= 0, "fork");
        if (pid == 0)
            _exit(transition_round(r & 1 ? 64 : 3000));
        int st = 0;
        REQUIRE(waitpid(pid, &st, 0) == pid, "waitpid");
        int code = WIFEXITED(st) ? WEXITSTATUS(st) : 15;
        if (code != 0)
            bad++;
        status_count[code < 16 ? code : 15]++;
    }
    CHECK(bad == 0,
          "transition: %d of %d rounds wrong (3 mode off in the child %d, 4 no report %d, 5 two reports %d, "
          "8 another kind %d, 9 mode still on %d, 15 died %d)",
          bad, ROUNDS, status_count[3], status_count[4], status_count[5], status_count[8], status_count[9],
          status_count[15]);

    atomic_store(&nreports, 0);
    p = mh_malloc(64);
    mh_free(p);
    mh_free(opaque_ptr(p));
    CHECK(atomic_load(&nreports) == 1, "two threads: a double free is reported once (%d)", atomic_load(&nreports));
    printf("  single-thread claims: on with one thread and in forked children, %d transitions with a racing "
           "double free each reported once, off after a second thread freed\n",
           ROUNDS - bad);
    return mh_test_exit("test_solo");
}
