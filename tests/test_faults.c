/* miniheap's fault handler beside the program's own (issue #10). Each case
 * runs in a child process. The program installs its SIGSEGV handler before
 * miniheap starts (miniheap's then sits in front of it):
 *
 *   foreign:   a fault that is not miniheap's (a page the program protected
 *              itself) reaches the program's handler, which fixes the page
 *              and lets the access run again; twice, and then a use after
 *              free of a large block is still reported by miniheap (the
 *              handler used to uninstall itself at the first foreign fault);
 *   overflow:  a stack overflow, handled by the program on its alternate
 *              signal stack: miniheap's handler must run on that stack too
 *              (SA_ONSTACK) and pass the fault on;
 *   bad_fp:    a use after free from code whose frame pointer is garbage:
 *              the report's stack walk must stop at the bad frame, not
 *              fault inside the report (which deadlocked on the report lock);
 *   sent:      a SIGSEGV sent with kill() goes to the program's handler.
 */
#include "mh_test.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

static volatile sig_atomic_t program_handler_calls;
static char *protected_page;

static void program_handler(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    program_handler_calls++;
    if (si->si_code > 0 && protected_page && (char *)si->si_addr >= protected_page &&
        (char *)si->si_addr < protected_page + 4096) {
        mprotect(protected_page, 4096, PROT_READ | PROT_WRITE); /* fixed: the access runs again */
        return;
    }
    if (si->si_code <= 0) /* sent with kill(): note it and go on */
        return;
    static const char msg[] = "program handler: stack overflow caught on the alternate stack\n";
    if (write(1, msg, sizeof msg - 1) < 0) {}
    _exit(42);
}

static void install_program_handler(void)
{
    static char altstack[64 * 1024];
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
    sigaltstack(&ss, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = program_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
}

static int case_foreign(void)
{
    protected_page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (int round = 0; round < 2; round++) {
        mprotect(protected_page, 4096, PROT_NONE);
        ((volatile char *)protected_page)[100] = 1;
    }
    if (program_handler_calls != 2) {
        printf("the program's handler ran %d times for 2 foreign faults\n", (int)program_handler_calls);
        return 1;
    }
    /* miniheap's handler is still in front: a use after free is reported. */
    char *p = mh_malloc(300000);
    mh_free(p);
    printf("reading a freed 300 KiB block\n");
    fflush(stdout);
    return ((volatile char *)p)[10]; /* miniheap reports and aborts */
}

static volatile int depth_limit = 1 << 30; /* never reached: the stack ends first */
static __attribute__((noinline)) int recurse(volatile char *prev, int depth)
{
    volatile char pad[4096];
    pad[0] = prev ? prev[0] : 1;
    if (depth >= depth_limit)
        return 0;
    return recurse(pad, depth + 1) + pad[100];
}

static int case_overflow(void)
{
    void *p = mh_malloc(10); /* miniheap is running */
    mh_free(p);
    return recurse(NULL, 0);
}

/* Read *p with rbp pointing at unmapped memory below the stack. */
static __attribute__((noinline)) int read_with_bad_fp(volatile char *p, uintptr_t bad)
{
    int v;
#if defined(__x86_64__)
    __asm__ volatile("push %%rbp\n\t"
                     "mov %2, %%rbp\n\t"
                     "movzbl (%1), %0\n\t"
                     "pop %%rbp"
                     : "=r"(v)
                     : "r"(p), "r"(bad)
                     : "memory");
#else
    (void)bad;
    v = *p;
#endif
    return v;
}

static int case_bad_fp(void)
{
    char *p = mh_malloc(300000);
    mh_free(p);
    /* A frame pointer 512 MiB below this frame: inside the range a walk
     * would trust for the main thread, and unmapped. */
    uintptr_t here = (uintptr_t)__builtin_frame_address(0);
    uintptr_t bad = (here - ((uintptr_t)512 << 20)) & ~(uintptr_t)15;
    return read_with_bad_fp(p + 10, bad);
}

static int case_sent(void)
{
    void *p = mh_malloc(10);
    mh_free(p);
    kill(getpid(), SIGSEGV);
    kill(getpid(), SIGSEGV);
    printf("program handler calls after 2 kill(SIGSEGV): %d\n", (int)program_handler_calls);
    return program_handler_calls == 2 ? 0 : 1;
}

typedef struct {
    const char *name;
    int (*fn)(void);
    int want_exit;          /* -1: want death by want_signal */
    int want_signal;
    const char *want_text;  /* in the child's output */
} fault_case_t;

static void run_case(const fault_case_t *c, const char *mode)
{
    char path[] = "/tmp/mh-faults-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0, "mkstemp");
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        alarm(20); /* a deadlock in a report ends as SIGALRM */
        install_program_handler();
        char opts[96];
        snprintf(opts, sizeof opts, "mode=%s:leak_report=0", mode);
        mh_set_options(opts);
        _exit(c->fn());
    }
    char out[8192];
    int st = mh_test_child_output(pid, fd, path, out, sizeof out);
    int ok;
    if (c->want_exit >= 0)
        ok = WIFEXITED(st) && WEXITSTATUS(st) == c->want_exit;
    else
        ok = WIFSIGNALED(st) && WTERMSIG(st) == c->want_signal;
    if (ok && c->want_text && !strstr(out, c->want_text))
        ok = 0;
    char how[64];
    if (WIFSIGNALED(st))
        snprintf(how, sizeof how, "signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(how, sizeof how, "exit %d", WEXITSTATUS(st));
    CHECK(ok, "[%s] %s: ended with %s; output:\n%s", mode, c->name, how, out);
    if (ok)
        printf("  [%s] %s: ok (%s)\n", mode, c->name, how);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    static const fault_case_t cases[] = {
        {"foreign faults, then a use after free", case_foreign, -1, SIGABRT, "miniheap: ERROR: use-after-free"},
        {"stack overflow on the alternate stack", case_overflow, 42, 0, "caught on the alternate stack"},
        {"use after free with a garbage frame pointer", case_bad_fp, -1, SIGABRT, "miniheap: ERROR: use-after-free"},
        {"SIGSEGV sent with kill()", case_sent, 0, 0, NULL},
    };
    static const char *const modes[] = {"fast", "hardened", "debug"};
    for (size_t m = 0; m < 3; m++)
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            /* fast mode keeps no quarantine: freed large blocks are unmapped
             * or cached accessible, so there is no fault of miniheap's */
            if (!strcmp(modes[m], "fast") && cases[i].want_text && strstr(cases[i].want_text, "use-after-free"))
                continue;
            run_case(&cases[i], modes[m]);
        }
    return mh_test_exit("test_faults");
}
