/* fork() in every mode, while other threads allocate and report (issue #10).
 *
 * For each mode (fast, hardened, debug), in a process of its own:
 *   - allocating threads churn blocks (in debug mode each with new stacks,
 *     so the stack depot's lock is taken often);
 *   - a reporting thread makes error reports over and over (double frees,
 *     with abort_on_error=0 and a handler), so the report lock is often held;
 *   - the main thread forks FORKS times. Each child must allocate, free,
 *     make a report of its own and pass mh_check() within a few seconds: a
 *     lock the fork left held would hang it (wait_child).
 * Then, once per mode, slot randomness: a parent and its child each take 512
 * blocks of a fresh class; they must not get the same slots in the same
 * order (the child reseeds), with kernel randomness and with seed=N.
 */
#include "mh_test.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#define FORKS 40
#define NALLOC 2

static atomic_int stop;
static atomic_long reports;

static void on_report(const mh_error_t *e, void *arg)
{
    (void)arg;
    (void)e;
    atomic_fetch_add(&reports, 1);
}

/* Recursion of varying depth: in debug mode every depth is a new stack. */
static __attribute__((noinline)) void *alloc_at_depth(int depth, size_t n)
{
    if (depth <= 0)
        return mh_malloc(n);
    void *p = alloc_at_depth(depth - 1, n);
    __asm__ volatile("" ::: "memory"); /* no tail call: each level is a frame */
    return p;
}

static void *allocator_thread(void *arg)
{
    rng_t r;
    rng_seed(&r, (uint64_t)(uintptr_t)arg);
    void *slots[64] = {0};
    while (!atomic_load(&stop)) {
        int i = (int)(rng_next(&r) % 64);
        if (slots[i]) {
            mh_free(slots[i]);
            slots[i] = NULL;
        } else {
            size_t n = rng_range(&r, 1, rng_next(&r) % 16 ? 2000 : 300000);
            slots[i] = alloc_at_depth((int)(rng_next(&r) % 24), n);
            if (slots[i])
                memset(slots[i], 1, n < 64 ? n : 64);
        }
    }
    for (int i = 0; i < 64; i++)
        mh_free(slots[i]);
    return NULL;
}

static void *reporter_thread(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop)) {
        void *p = mh_malloc(32);
        mh_free(p);
        mh_free(opaque_ptr(p)); /* a double free: reported, then ignored */
    }
    return NULL;
}

/* A child lets the parent's gdb attach (see wait_child): with Yama's
 * ptrace_scope=1 only a declared tracer and its descendants may. The alarm
 * ends a child whose parent is gone; the parent kills a hung one at 15 s. */
static void child_start(void)
{
    prctl(PR_SET_PTRACER, (unsigned long)getppid(), 0, 0, 0);
    alarm(45);
}

static void child_work(void)
{
    child_start();
    long before = atomic_load(&reports);
    void *a[100];
    for (int i = 0; i < 100; i++) {
        a[i] = mh_malloc((size_t)i * 97 + (i % 10 == 0 ? 200000 : 1));
        if (!a[i])
            _exit(2);
    }
    for (int i = 0; i < 100; i++)
        mh_free(a[i]);
    void *p = mh_malloc(48);
    mh_free(p);
    mh_free(opaque_ptr(p)); /* the report lock must be free in the child */
    if (atomic_load(&reports) != before + 1)
        _exit(3);
    if (mh_check() != 0)
        _exit(4);
    /* A thread in the child allocates too. */
    pthread_t t;
    atomic_store(&stop, 0);
    if (pthread_create(&t, NULL, allocator_thread, (void *)(uintptr_t)99) != 0)
        _exit(5);
    usleep(2000);
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    _exit(0);
}

/* Wait for a child at most `secs` seconds. One still running then hangs
 * (a lock the fork left held): its threads' stacks are printed, with gdb
 * where it is installed, and it is killed. A hang seen once under load in
 * the TSan build (December 2026) did not recur in 1,800 children, and the
 * child's own alarm had killed it without a trace. (gdb is given 30 s.) */
static int wait_child(pid_t pid, int secs, int *st)
{
    for (int ms = 0; ms < secs * 1000; ms += 2) {
        pid_t r = waitpid(pid, st, WNOHANG);
        if (r == pid)
            return 1;
        usleep(2000);
    }
    char cmd[200];
    snprintf(cmd, sizeof cmd,
             "echo '  hung child %d:' >&2; command -v gdb >/dev/null && timeout 30 gdb -q -batch -p %d "
             "-ex 'thread apply all bt' </dev/null 2>&1 | grep -v '^\\[' | head -n 100 >&2",
             (int)pid, (int)pid);
    if (system(cmd) == -1)
        perror("system");
    kill(pid, SIGKILL);
    waitpid(pid, st, 0);
    return 0;
}

static void forks_while_busy(const char *mode)
{
    atomic_store(&stop, 0);
    pthread_t th[NALLOC + 1];
    for (int i = 0; i < NALLOC; i++)
        REQUIRE(pthread_create(&th[i], NULL, allocator_thread, (void *)(uintptr_t)(i + 1)) == 0, "pthread_create");
    REQUIRE(pthread_create(&th[NALLOC], NULL, reporter_thread, NULL) == 0, "pthread_create");
    usleep(20000);
    int hung = 0, failed = 0, forked = 0;
    for (int k = 0; k < FORKS; k++, forked++) {
        pid_t pid = fork();
        REQUIRE(pid >= 0, "fork failed");
        if (pid == 0)
            child_work();
        int st = 0;
        if (!wait_child(pid, 15, &st) || (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)) {
            hung++;
            forked++;
            break; /* (one is a failure: 40 would take 10 minutes) */
        } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            failed++;
        }
        usleep(500);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i <= NALLOC; i++)
        pthread_join(th[i], NULL);
    CHECK(hung == 0, "[%s] child %d of %d hung (a lock held across fork); forks stopped there", mode, forked, FORKS);
    CHECK(failed == 0, "[%s] %d of %d children failed", mode, failed, forked);
    printf("  [%s] %d forks while 2 threads allocate and 1 reports: %d hung, %d failed; %ld reports in the parent\n",
           mode, forked, hung, failed, atomic_load(&reports));
}

/* Where NSLOTS blocks of a fresh class land; the child sends its own over a
 * pipe. Enough of them for a score of batches: two independent draws then
 * coincide with no chance worth counting (with 64, 1 parent and child in
 * 3,000 took the same slots). */
#define NSLOTS 512
static void take_slots(uintptr_t *off)
{
    static void *p[NSLOTS];
    for (int i = 0; i < NSLOTS; i++) {
        p[i] = mh_malloc(700);
        off[i] = (uintptr_t)p[i];
    }
    for (int i = 0; i < NSLOTS; i++)
        mh_free(p[i]);
}

static void child_slots_differ(const char *mode, const char *opts)
{
    mh_reset();
    REQUIRE(mh_set_options(opts) == 0, "mh_set_options(\"%s\") rejected", opts);
    mh_reset();
    void *warm = mh_malloc(700); /* the class's generator is drawn before the fork */
    int fd[2];
    REQUIRE(pipe(fd) == 0, "pipe");
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork failed");
    static uintptr_t mine[NSLOTS], theirs[NSLOTS];
    if (pid == 0) {
        child_start();
        take_slots(mine);
        ssize_t w = write(fd[1], mine, sizeof mine);
        _exit(w == (ssize_t)sizeof mine ? 0 : 1);
    }
    take_slots(mine);
    close(fd[1]);
    struct pollfd pf = {.fd = fd[0], .events = POLLIN};
    ssize_t n = poll(&pf, 1, 15000) == 1 ? read(fd[0], theirs, sizeof theirs) : -1; /* (hung: wait_child) */
    int st;
    wait_child(pid, 15, &st);
    close(fd[0]);
    REQUIRE(n == (ssize_t)sizeof theirs, "short read from the child");
    CHECK(memcmp(mine, theirs, sizeof mine) != 0, "[%s] %s: parent and child took the same %d slots in the same order",
          mode, opts, NSLOTS);
    mh_free(warm);
}

static int run_mode(const char *mode)
{
    char opts[160];
    mh_reset();
    snprintf(opts, sizeof opts, "mode=%s:abort_on_error=0:leak_report=0", mode);
    REQUIRE(mh_set_options(opts) == 0, "mh_set_options(\"%s\") rejected", opts);
    mh_set_error_handler(on_report, NULL);
    forks_while_busy(mode);
    snprintf(opts, sizeof opts, "mode=%s:abort_on_error=0:leak_report=0:random=1:seed=0", mode);
    child_slots_differ(mode, opts);
    snprintf(opts, sizeof opts, "mode=%s:abort_on_error=0:leak_report=0:random=1:seed=5", mode);
    child_slots_differ(mode, opts);
    return mh_test_failed() ? 1 : 0;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    mh_test_check_allocator("test_fork_modes");
    mh_test_each_mode(run_mode, 0);
    return mh_test_exit("test_fork_modes");
}
