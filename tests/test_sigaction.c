/* A SIGSEGV handler the program installs after miniheap's (plain build,
 * under LD_PRELOAD). With meshing on, miniheap must keep its own handler in
 * front: a write that meets a page being meshed faults and must only wait,
 * and redis-server, which installs a crash handler at start-up, crashed on
 * such a write (1 run in 8 of the redis benchmark with mesh=1). Without
 * meshing the program's handler replaces miniheap's, as it asked.
 *
 * Each configuration runs in a child (re-executed with MINIHEAP_OPTIONS):
 *   - sigaction() and signal() read back what the program installed;
 *   - the kernel's handler (read with the raw system call) is miniheap's
 *     with mesh=1 and the program's without;
 *   - so do sysv_signal() (signal() without _DEFAULT_SOURCE), and
 *     signal(SIG_ERR) fails with EINVAL, as in glibc;
 *   - a fault on a page the program protected reaches the program's handler,
 *     which fixes it and lets the access run again, with the signal mask the
 *     kernel would give it (SIGSEGV blocked, SIGBUS not: miniheap's own
 *     handler blocks both);
 *   - a write to a freed large block (inaccessible while cached, hardened
 *     mode) ends in miniheap's use-after-free report with mesh=1 (exit by
 *     SIGABRT), and in the program's handler without (exit 42).
 */
#include "mh_test.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#ifndef USE_PLAIN
#error "test_sigaction is built for the plain names only (LD_PRELOAD)"
#endif

static volatile sig_atomic_t fixed_faults, bus_blocked_in_handler = -1, segv_blocked_in_handler = -1;
static char *protected_page;

static void program_handler(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    char *a = si->si_addr;
    if (protected_page && a >= protected_page && a < protected_page + 4096) {
        sigset_t now;
        pthread_sigmask(SIG_BLOCK, NULL, &now);
        bus_blocked_in_handler = sigismember(&now, SIGBUS);
        segv_blocked_in_handler = sigismember(&now, SIGSEGV);
        mprotect(protected_page, 4096, PROT_READ | PROT_WRITE);
        fixed_faults++;
        return;
    }
    static const char msg[] = "program handler: a fault it does not know\n";
    if (write(2, msg, sizeof msg - 1) < 0) {}
    _exit(42);
}

struct kernel_sigaction { /* what rt_sigaction takes on x86-64 */
    void *handler;
    unsigned long flags;
    void *restorer;
    unsigned long mask;
};

static void *kernel_handler(int sig)
{
    struct kernel_sigaction k;
    memset(&k, 0, sizeof k);
    if (syscall(SYS_rt_sigaction, sig, NULL, &k, sizeof k.mask) != 0)
        return NULL;
    return k.handler;
}

static int child(int kept)
{
    free(malloc(64)); /* miniheap starts (and installs its handler) */
    struct sigaction sa, old, cur;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = program_handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    REQUIRE(sigaction(SIGSEGV, &sa, &old) == 0, "sigaction");
    REQUIRE(sigaction(SIGSEGV, NULL, &cur) == 0, "sigaction (read)");
    CHECK(cur.sa_sigaction == program_handler, "sigaction reads back another handler than the program's");
    void *k = kernel_handler(SIGSEGV);
    if (kept)
        CHECK(k != NULL && k != (void *)program_handler, "mesh=1: the program's handler replaced miniheap's in the kernel");
    else
        CHECK(k == (void *)program_handler, "mesh=0: the kernel's handler is not the one the program installed");

    /* signal() goes through the same door. */
    sighandler_t prev = signal(SIGSEGV, SIG_DFL);
    CHECK(prev == (sighandler_t)(void *)program_handler, "signal() returned another handler than the program's");
    REQUIRE(sigaction(SIGSEGV, NULL, &cur) == 0, "sigaction (read)");
    CHECK(cur.sa_handler == SIG_DFL, "after signal(SIG_DFL), sigaction reads back another handler");
    if (kept)
        CHECK(kernel_handler(SIGSEGV) == k, "mesh=1: signal() replaced miniheap's handler in the kernel");
    prev = sysv_signal(SIGSEGV, SIG_IGN);
    CHECK(prev == SIG_DFL, "sysv_signal() returned another handler than the one signal() set");
    REQUIRE(sigaction(SIGSEGV, NULL, &cur) == 0, "sigaction (read)");
    CHECK(cur.sa_handler == SIG_IGN && (cur.sa_flags & SA_RESETHAND), "after sysv_signal, sigaction reads back %p, flags %#x",
          (void *)cur.sa_handler, (unsigned)cur.sa_flags);
    if (kept)
        CHECK(kernel_handler(SIGSEGV) == k, "mesh=1: sysv_signal() replaced miniheap's handler in the kernel");
    errno = 0;
    CHECK(signal(SIGSEGV, SIG_ERR) == SIG_ERR && errno == EINVAL, "signal(SIG_ERR) did not fail with EINVAL");
    REQUIRE(sigaction(SIGSEGV, &sa, NULL) == 0, "sigaction");

    protected_page = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(protected_page != MAP_FAILED, "mmap");
    protected_page[8] = 1; /* faults; the program's handler fixes it */
    CHECK(fixed_faults == 1 && protected_page[8] == 1, "the program's handler did not see its own fault (%d)",
          (int)fixed_faults);
    CHECK(segv_blocked_in_handler == 1 && bus_blocked_in_handler == 0,
          "the program's handler ran with SIGSEGV %s and SIGBUS %s (the kernel blocks SIGSEGV only)",
          segv_blocked_in_handler == 1 ? "blocked" : "not blocked", bus_blocked_in_handler == 1 ? "blocked" : "not blocked");
    if (mh_test_failed())
        return 1;

    volatile char *big = malloc(300 << 10);
    REQUIRE(big != NULL, "malloc");
    big[0] = 1;
    free((void *)big);
    big[100] = 1; /* use after free: miniheap's report (mesh=1), or the program's handler */
    return 3;     /* neither caught it */
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && !strcmp(argv[1], "child"))
        return child(argv[2][0] == '1');
    mh_test_check_allocator("test_sigaction");
    if (!mh_under_miniheap()) {
        printf("  not under miniheap: nothing to test\n");
        return mh_test_exit("test_sigaction");
    }
    static const struct {
        const char *opts, *kept;
        int want_exit, want_signal;
        const char *want_text;
    } cfg[] = {
        {"mode=hardened:mesh=1:leak_report=0", "1", -1, SIGABRT, "miniheap: ERROR: use-after-free"},
        {"mode=hardened:mesh=0:leak_report=0", "0", 42, 0, "program handler: a fault it does not know"},
    };
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        char path[] = "/tmp/mh-sigaction-XXXXXX";
        int fd = mkstemp(path);
        REQUIRE(fd >= 0, "mkstemp");
        pid_t pid = fork();
        REQUIRE(pid >= 0, "fork");
        if (pid == 0) {
            dup2(fd, 2);
            alarm(20);
            setenv("MINIHEAP_OPTIONS", cfg[i].opts, 1);
            char *args[] = {argv[0], "child", (char *)cfg[i].kept, NULL};
            execv("/proc/self/exe", args);
            _exit(127);
        }
        char out[8192];
        int st = mh_test_child_output(pid, fd, path, out, sizeof out);
        int ok = cfg[i].want_exit >= 0 ? WIFEXITED(st) && WEXITSTATUS(st) == cfg[i].want_exit
                                       : WIFSIGNALED(st) && WTERMSIG(st) == cfg[i].want_signal;
        ok = ok && strstr(out, cfg[i].want_text) != NULL;
        CHECK(ok, "%s: ended with %s %d; output:\n%s", cfg[i].opts, WIFSIGNALED(st) ? "signal" : "exit",
              WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), out);
        if (ok)
            printf("  %s: ok (%s)\n", cfg[i].opts, cfg[i].want_text);
    }
    return mh_test_exit("test_sigaction");
}
