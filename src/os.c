/* The OS layer: every system call miniheap makes is in this file.
 * Calls that may fail harmlessly keep errno as the program left it. */
#include "internal.h"
#include "track.h"

#include <signal.h>
#include <ucontext.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <linux/futex.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <sys/auxv.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

_Atomic size_t os_purged_total, os_unmapped_total;

#ifndef MAP_NORESERVE
#define MAP_NORESERVE 0
#endif

static void *map_raw(void *hint, size_t size, int prot, int extra) {
    int saved = errno;
    void *p = mmap(hint, size, prot, MAP_PRIVATE | MAP_ANONYMOUS | extra, -1, 0);
    if (p == MAP_FAILED) {
        errno = saved;
        return NULL;
    }
    errno = saved;
    return p;
}

void *os_map(size_t size) { return map_raw(NULL, size, PROT_READ | PROT_WRITE, 0); }
/* Not MAP_NORESERVE: the kernel then charges the pages os_commit makes
 * writable (and what mremap grows them by) against its overcommit policy,
 * as it charges glibc's mmap, so a request no memory could back fails with
 * ENOMEM instead of succeeding. */
void *os_reserve(size_t size) { return map_raw(NULL, size, PROT_NONE, 0); }
void *os_map_noreserve(size_t size) {
    return map_raw(NULL, size, PROT_READ | PROT_WRITE, MAP_NORESERVE);
}

void os_unmap(void *p, size_t size) {
    if (!p || !size) return;
    int saved = errno;
    munmap(p, size);
    errno = saved;
}

/* Map size bytes aligned to align: try the exact size first (the kernel
 * often hands out aligned addresses when asked near one), else over-map and
 * trim both ends. */
static void *map_aligned_at(void *hint, size_t size, size_t align, int prot) {
    if (hint) {
        void *p = map_raw(hint, size, prot, 0);
        if (!p) return NULL;
        if (((uintptr_t)p & (align - 1)) == 0) return p;
        os_unmap(p, size);
    }
    if (size + align < size) return NULL;
    uint8_t *raw = map_raw(NULL, size + align, prot, 0);
    if (!raw) return NULL;
    uintptr_t aligned = ((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1);
    size_t front = aligned - (uintptr_t)raw, back = align - front;
    if (front) os_unmap(raw, front);
    if (back) os_unmap((uint8_t *)aligned + size, back);
    return (void *)aligned;
}

void *os_map_aligned(size_t size, size_t align) {
    if (align <= MH_PAGE) return os_map(size);
    return map_aligned_at(NULL, size, align, PROT_READ | PROT_WRITE);
}

bool os_commit(void *p, size_t size) {
    int saved = errno;
    bool ok = mprotect(p, size, PROT_READ | PROT_WRITE) == 0;
    errno = saved;
    return ok;
}

bool os_protect_none(void *p, size_t size) {
    int saved = errno;
    bool ok = mprotect(p, size, PROT_NONE) == 0;
    errno = saved;
    return ok;
}

/* Guard pages inside miniheaps. Since Linux 6.13, MADV_GUARD_INSTALL marks
 * pages in the page tables so that any access faults (SIGSEGV, SEGV_MAPERR),
 * without splitting the mapping: mprotect made every slab's guard two more
 * mappings, which fork() copies one by one (a hardened heap of 400 MB of
 * 256-byte blocks took 27-32 ms to fork against 6-8 ms without guards) and
 * vm.max_map_count bounds. Markers survive MADV_DONTNEED and fork. Not
 * used for mesh=1's shared file (a forked child maps a copy over it), under
 * valgrind (its address-space manager sees only mprotect) or with
 * LeakSanitizer (below); on an older kernel, or under a seccomp filter
 * that refuses it, the probe fails and mprotect is used. */
static int seg_fd = -1;          /* >= 0: miniheaps are views of this file */
#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#define MADV_GUARD_REMOVE 103
#endif
static _Atomic int light_guards = -1; /* -1 not probed yet, 0 mprotect, 1 marks */

/* LeakSanitizer reads every mapping that /proc/self/maps calls readable,
 * and a page-table guard is one: its tracer died of SIGSEGV on them (a
 * program built with -fsanitize=address or leak, miniheap linked or
 * preloaded into it, or miniheap's own ASan build). Its presence is told by
 * a symbol of its interface. */
extern void __lsan_ignore_object(const void *p) __attribute__((weak));

void os_guards_plain(void) { atomic_store(&light_guards, 0); }

/* Are guards inside miniheaps marks? One answer while miniheaps live (the
 * backing changes only when none does, at start or mh_reset), so a guard is
 * taken off as it was put on: probed once, on a page of its own, and the
 * first answer stored is everyone's. */
bool os_guards_light(void) {
    if (seg_fd >= 0) return false;
    int m = atomic_load_explicit(&light_guards, memory_order_acquire);
    if (m >= 0) return m;
    int ok = 0;
    if (!__lsan_ignore_object) {
        void *p = map_raw(NULL, MH_PAGE, PROT_READ | PROT_WRITE, 0);
        if (p) {
            ok = os_guard_mark(p, MH_PAGE);
            os_unmap(p, MH_PAGE);
        }
    }
    atomic_compare_exchange_strong(&light_guards, &m, ok);
    return atomic_load(&light_guards);
}

/* madvise, errno kept. */
static bool advise(void *p, size_t size, int advice) {
    int saved = errno;
    bool ok = madvise(p, size, advice) == 0;
    errno = saved;
    return ok;
}

bool os_guard_mark(void *p, size_t size) { return advise(p, size, MADV_GUARD_INSTALL); }
void os_guard_unmark(void *p, size_t size) { advise(p, size, MADV_GUARD_REMOVE); }

void os_purge(void *p, size_t size) {
    if (size && advise(p, size, MADV_DONTNEED)) atomic_fetch_add(&os_purged_total, size);
}

bool os_discard(void *p, size_t size) { return advise(p, size, MADV_DONTNEED); }

void *os_remap(void *old, size_t old_size, size_t new_size, void *fixed) {
    int saved = errno;
    void *p = fixed ? mremap(old, old_size, new_size, MREMAP_MAYMOVE | MREMAP_FIXED, fixed)
                    : mremap(old, old_size, new_size, MREMAP_MAYMOVE);
    errno = saved;
    return p == MAP_FAILED ? NULL : p;
}

void os_random(void *buf, size_t n) {
    int saved = errno;
    uint8_t *b = buf;
    while (n) {
        ssize_t r = getrandom(b, n, GRND_NONBLOCK);
        if (r <= 0) break;
        b += r;
        n -= (size_t)r;
    }
    if (n) { /* no entropy yet (early boot): mix the clock and addresses */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uintptr_t)buf ^
                     (uintptr_t)&ts;
        while (n--) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            *b++ = (uint8_t)x;
        }
    }
    errno = saved;
}

uint64_t os_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void os_write_stderr(const char *s, size_t n) {
    int saved = errno;
    while (n) {
        ssize_t w = write(2, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        s += w;
        n -= (size_t)w;
    }
    errno = saved;
}

/* As abort() does, without its stdio work (which may allocate): the
 * program's own SIGABRT handler runs first (a fuzzer's saves the crashing
 * input there, a test harness records the failure); only if it returns,
 * the default action. */
void os_abort(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGABRT);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    raise(SIGABRT);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    __sigaction(SIGABRT, &dfl, NULL);
    raise(SIGABRT);
    _exit(134);
}

void os_exit(int status) { _exit(status); }

/* Copy n bytes of this process's memory without ever faulting: false when
 * any of them is unreadable (unmapped, a guard page). Used by stack walks
 * that may meet a bad frame pointer, in reports and in the fault handler. */
bool os_read_self(void *dst, const void *src, size_t n) {
    static _Atomic int unusable; /* process_vm_readv forbidden here (seccomp) */
    if (atomic_load_explicit(&unusable, memory_order_relaxed)) return false;
    int saved = errno;
    struct iovec local = {dst, n}, remote = {(void *)src, n};
    ssize_t r = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
    if (r < 0 && (errno == ENOSYS || errno == EPERM)) atomic_store_explicit(&unusable, 1, memory_order_relaxed);
    errno = saved;
    return r == (ssize_t)n;
}

/* From the kernel's auxiliary vector, as the dynamic loader got it. */
size_t os_page_size(void) {
    unsigned long v = getauxval(AT_PAGESZ);
    return v ? (size_t)v : MH_PAGE;
}

/* A set-user-ID or otherwise privileged program (AT_SECURE): its
 * environment was chosen by a less privileged user. */
bool os_secure(void) { return getauxval(AT_SECURE) != 0; }

/* Is the address space limited (RLIMIT_AS)? */
bool os_address_space_limited(void) {
    int saved = errno;
    struct rlimit as;
    bool limited = getrlimit(RLIMIT_AS, &as) != 0 || as.rlim_cur != RLIM_INFINITY;
    errno = saved;
    return limited;
}

/* Strict overcommit (vm.overcommit_memory=2): pages once writable stay
 * charged while mapped. */
bool os_overcommit_strict(void) {
    char buf[16];
    return os_read_file("/proc/sys/vm/overcommit_memory", buf, sizeof buf) > 0 && buf[0] == '2';
}

/* All but the faults: a blocked SIGSEGV is fatal when the access raises it,
 * and meshing's write barrier is a fault its handler waits out. glibc
 * leaves out the signals it uses itself (cancellation, setxid). */
void os_signals_block(sigset_t *saved) {
    static const int faults[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS};
    sigset_t all;
    sigfillset(&all);
    for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) sigdelset(&all, faults[i]);
    pthread_sigmask(SIG_BLOCK, &all, saved);
}

void os_signals_restore(const sigset_t *saved) { pthread_sigmask(SIG_SETMASK, saved, NULL); }

/* The calling thread's signal stack, lo == hi when it has none. A system
 * call of its own: override.c's sigaltstack is the program's. */
void os_signal_stack(uintptr_t *lo, uintptr_t *hi) {
    stack_t ss = {0}; /* (MemorySanitizer does not see a raw syscall fill it) */
    int saved = errno;
    if (syscall(SYS_sigaltstack, NULL, &ss) != 0 || (ss.ss_flags & SS_DISABLE) || !ss.ss_sp) {
        *lo = *hi = 0;
    } else {
        *lo = (uintptr_t)ss.ss_sp;
        *hi = *lo + ss.ss_size;
    }
    errno = saved;
}

int os_set_signal_stack(const stack_t *ss, stack_t *old) { return (int)syscall(SYS_sigaltstack, ss, old); }

/* A 128 KiB stack, or the default size when that is too small: glibc
 * places the program's static TLS on every thread's stack, and with more
 * than about 100 KiB of __thread data pthread_create says EINVAL (the purge
 * thread never started, and an idle program kept its memory). */
bool os_thread_start(void *(*fn)(void *), const char *name, pthread_t *out) {
    sigset_t old;
    os_signals_block(&old); /* inherited: no signal of the program lands on it */
    int saved = errno, rc = EINVAL;
    for (int small = 1; small >= 0 && rc == EINVAL; small--) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_JOINABLE);
        if (small) pthread_attr_setstacksize(&attr, (size_t)128 << 10);
        rc = pthread_create(out, &attr, fn, NULL);
        pthread_attr_destroy(&attr);
    }
    if (rc == 0) pthread_setname_np(*out, name);
    errno = saved;
    os_signals_restore(&old);
    return rc == 0;
}

/* The CLOCK_REALTIME time ms from now, for the timed waits. */
struct timespec os_deadline(uint32_t ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) { ts.tv_sec++; ts.tv_nsec -= 1000000000; }
    return ts;
}

/* Waits up to timeout_ms for a thread of os_thread_start to end. */
bool os_thread_join(pthread_t t, uint32_t timeout_ms) {
    struct timespec ts = os_deadline(timeout_ms);
    int saved = errno;
    bool ok = pthread_timedjoin_np(t, NULL, &ts) == 0;
    errno = saved;
    return ok;
}

uint32_t os_cpu_count(void) {
    cpu_set_t set;
    int saved = errno;
    int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    errno = saved;
    return n > 0 ? (uint32_t)n : 1;
}

int os_getpid(void) { return (int)getpid(); }
uint32_t os_thread_id(void) { return (uint32_t)syscall(SYS_gettid); }

void os_close(int fd) {
    int saved = errno;
    close(fd);
    errno = saved;
}

int os_open_append(const char *path) {
    int saved = errno;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    errno = saved;
    return fd;
}

void os_write_fd(int fd, const void *buf, size_t n) {
    int saved = errno;
    const char *s = buf;
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        s += w;
        n -= (size_t)w;
    }
    errno = saved;
}

long os_read_fd(int fd, void *buf, size_t n) {
    int saved = errno;
    ssize_t r;
    do r = read(fd, buf, n); while (r < 0 && errno == EINTR);
    errno = saved;
    return (long)r;
}

bool os_pipe(int fds[2]) {
    int saved = errno;
    bool ok = pipe2(fds, O_CLOEXEC) == 0;
    errno = saved;
    return ok;
}

int os_wait_readable(int fd, int timeout_ms) {
    int saved = errno;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r;
    do r = poll(&p, 1, timeout_ms); while (r < 0 && errno == EINTR);
    errno = saved;
    return r < 0 ? -1 : r;
}

/* fn as sig's handler (SA_RESTART); the old action in *old when old is
 * not NULL, for os_restore_signal. */
bool os_install_signal(int sig, void (*fn)(int), struct sigaction *old) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    int saved = errno;
    bool ok = __sigaction(sig, &sa, old) == 0;
    errno = saved;
    return ok;
}
void os_restore_signal(int sig, const struct sigaction *old) {
    int saved = errno;
    __sigaction(sig, old, NULL);
    errno = saved;
}

bool os_executable(const char *path) {
    int saved = errno;
    bool ok = access(path, X_OK) == 0;
    errno = saved;
    return ok;
}

/* Run argv[0] (a full path) with argv, stdin and stderr on /dev/null, and
 * collect its standard output into out (NUL-terminated), waiting at most
 * timeout_ms for it to finish. vfork: no fork handlers run (a report may
 * hold the locks they take) and nothing is copied; the child only calls
 * dup2, execve and _exit. Returns the bytes read, or -1. */
long os_run_capture(const char *const argv[], char *out, size_t cap, int timeout_ms) {
    int saved = errno, fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) { errno = saved; return -1; }
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    /* The tool runs on the system allocator, not on us (LD_PRELOAD) nor
     * with our options: it would run its own checks and reports. */
    extern char **environ;
    static char *env[256];
    size_t ne = 0;
    for (char **e = environ; e && *e && ne + 1 < sizeof env / sizeof env[0]; e++)
        if (strncmp(*e, "LD_PRELOAD=", 11) != 0 && strncmp(*e, "MINIHEAP_OPTIONS=", 17) != 0) env[ne++] = *e;
    env[ne] = NULL;
    pid_t pid = vfork();
    if (pid == 0) {
        dup2(fds[1], 1);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 2);
        }
        execve(argv[0], (char *const *)argv, env);
        _exit(127);
    }
    close(fds[1]);
    if (devnull >= 0) close(devnull);
    size_t n = 0;
    if (pid > 0) {
        uint64_t deadline = os_now_ms() + (uint64_t)timeout_ms;
        while (n + 1 < cap) {
            uint64_t now = os_now_ms();
            if (now >= deadline) break;
            struct pollfd p = {.fd = fds[0], .events = POLLIN};
            int r = poll(&p, 1, (int)(deadline - now));
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) break;
            ssize_t k = read(fds[0], out + n, cap - 1 - n);
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) break;
            n += (size_t)k;
        }
        if (kill(pid, 0) == 0 && n + 1 >= cap) kill(pid, SIGKILL);
        int st;
        /* Still running after the deadline: end it. */
        if (waitpid(pid, &st, WNOHANG) == 0) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
        }
    }
    close(fds[0]);
    out[n] = 0;
    errno = saved;
    return pid > 0 ? (long)n : -1;
}

/* Up to cap - 1 bytes of a file, NUL-terminated; -1 if it cannot be read. */
long os_read_file(const char *path, char *buf, size_t cap) {
    int saved = errno;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { errno = saved; return -1; }
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    errno = saved;
    return (long)n;
}

/* The path of the running executable ("" if unknown). */
void os_self_exe(char *buf, size_t cap) {
    int saved = errno;
    ssize_t n = readlink("/proc/self/exe", buf, cap - 1);
    buf[n > 0 ? n : 0] = 0;
    errno = saved;
}

long os_read_number(const char *path, long fallback) {
    int saved = errno;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { errno = saved; return fallback; }
    char buf[32];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    errno = saved;
    if (n <= 0) return fallback;
    long v = 0;
    for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; i++) v = v * 10 + (buf[i] - '0');
    return v ? v : fallback;
}

static struct sigaction old_segv, old_bus;
static _Atomic bool fault_handler_in;

/* On the program's alternate signal stack if it has one (a fault from a
 * stack overflow has no room on its own stack); SIGSEGV and SIGBUS stay
 * blocked while the handler runs, so a fault in it cannot re-enter it. */
bool os_install_fault_handler(void (*fn)(int, void *, void *)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = (void (*)(int, siginfo_t *, void *))(void *)fn;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGSEGV);
    sigaddset(&sa.sa_mask, SIGBUS);
    int saved = errno;
    bool ok = __sigaction(SIGSEGV, &sa, &old_segv) == 0 && __sigaction(SIGBUS, &sa, &old_bus) == 0;
    errno = saved;
    if (ok) atomic_store_explicit(&fault_handler_in, true, memory_order_release);
    return ok;
}

/* The program's sigaction (override.c interposes it). With meshing on, a
 * SIGSEGV or SIGBUS handler the program installs after miniheap's does not
 * replace it: miniheap's must see the writes that meet a page being meshed,
 * which are not errors and only wait, or the program's handler would take
 * them for crashes (redis-server's did, in 1 of 8 runs). The program's
 * handler is kept as the one faults that are not miniheap's are passed to,
 * and the program reads back what it installed. Otherwise, and for every
 * other signal, glibc's sigaction. */
bool os_keeps_fault_handler(int sig) {
    return (sig == SIGSEGV || sig == SIGBUS) && OPT(mesh) &&
           atomic_load_explicit(&fault_handler_in, memory_order_acquire);
}

int os_program_sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (os_keeps_fault_handler(sig)) {
        struct sigaction *kept = sig == SIGBUS ? &old_bus : &old_segv;
        sigset_t all, saved;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &saved); /* a fault now would read a half-written record */
        if (old) *old = *kept;
        if (act) *kept = *act;
        pthread_sigmask(SIG_SETMASK, &saved, NULL);
        return 0;
    }
    return __sigaction(sig, act, old);
}

/* A fault that is not miniheap's goes to whatever handled the signal before
 * miniheap started, as if miniheap were not there; our handler stays
 * installed for the next fault. */
void os_chain_fault(int sig, void *info, void *uctx) {
    struct sigaction *old = sig == SIGBUS ? &old_bus : &old_segv;
    siginfo_t *si = info;
    if ((old->sa_flags & SA_SIGINFO) ? old->sa_sigaction == NULL
                                     : (old->sa_handler == SIG_DFL || old->sa_handler == SIG_IGN)) {
        bool sent = si->si_code <= 0; /* kill(), tgkill(): returning would not re-raise it */
        if (sent && old->sa_handler == SIG_IGN) return;
        /* The default action: the access runs again and faults with it,
         * or a signal sent by a program is raised again. */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        __sigaction(sig, &dfl, NULL);
        if (sent) {
            sigset_t set;
            sigemptyset(&set);
            sigaddset(&set, sig);
            pthread_sigmask(SIG_UNBLOCK, &set, NULL);
            raise(sig);
        }
        return;
    }
    /* The program's handler, with the mask the kernel would have given it:
     * the interrupted code's, its sa_mask, and the signal itself unless
     * SA_NODEFER (not miniheap's own mask, which blocks SIGSEGV and SIGBUS:
     * a handler that leaves with longjmp would leave them blocked). */
    sigset_t mask, saved;
    if (uctx) mask = ((ucontext_t *)uctx)->uc_sigmask;
    else pthread_sigmask(SIG_BLOCK, NULL, &mask);
    sigorset(&mask, &mask, &old->sa_mask);
    if (!(old->sa_flags & SA_NODEFER)) sigaddset(&mask, sig);
    pthread_sigmask(SIG_SETMASK, &mask, &saved);
    if (old->sa_flags & SA_SIGINFO) {
        void (*fn)(int, siginfo_t *, void *) = old->sa_sigaction;
        if (old->sa_flags & SA_RESETHAND) old->sa_sigaction = NULL;
        fn(sig, si, uctx);
    } else {
        void (*fn)(int) = old->sa_handler;
        if (old->sa_flags & SA_RESETHAND) old->sa_handler = SIG_DFL;
        fn(sig);
    }
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
}

/* ---- miniheap backing -----------------------------------------------------
 * Anonymous memory, or with meshing (mesh.c) views of one memfd at file
 * offset == address: a span's pages can then be mapped onto another span's
 * file pages, and memory is freed by punching holes in the file. */

/* Where the next miniheap is asked for, as a segment number (held as an
 * address it pointed at the first block of a miniheap, and memcheck's leak
 * search counted that block as reachable through it): just below the last
 * one made (the kernel fills downwards), or where one was given back above
 * that (the highest such). So miniheaps keep to one range of addresses,
 * and the radix tables' pages that map them, never given back, stay few.
 * Asked for always lower, each spike of a program that comes back down took
 * new address space (a program that rose by 83 MB of small blocks and fell
 * back, 30 times: 10.8 KB of table pages more each time). Written under
 * mh_locks.heap, which every caller of os_segment_alloc and _free holds. */
static uintptr_t seg_hint;
static uint8_t *copy_buf;        /* fork: the child's bounce buffer */
#define COPY_BUF ((size_t)256 << 10)

bool os_shared_backing_init(void) {
    int saved = errno;
    struct rlimit fs;
    /* The file is as large as the address space (sparse, it costs nothing);
     * a file size limit would make growing it raise SIGXFSZ. */
    if (getrlimit(RLIMIT_FSIZE, &fs) != 0 || fs.rlim_cur != RLIM_INFINITY) { errno = saved; return false; }
    int fd = memfd_create("miniheap", MFD_CLOEXEC);
    if (fd < 0) { errno = saved; return false; }
    if (ftruncate(fd, (off_t)1 << MH_ADDR_BITS) != 0) {
        close(fd);
        errno = saved;
        return false;
    }
    seg_fd = fd;
    errno = saved;
    return true;
}

void os_shared_backing_close(void) {
    os_close(seg_fd);
    seg_fd = -1;
}

/* The raw system call: a sanitizer's mmap would take the remap for a write
 * of the range by this thread, but the bytes there do not change. */
static void *map_shared_at(void *at, size_t size, const void *offset) {
    long p = syscall(SYS_mmap, at, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, seg_fd, (off_t)(uintptr_t)offset);
    return p == -1 ? NULL : (void *)p;
}

void *os_segment_alloc(void) {
    uintptr_t h = seg_hint << MH_SEG_SHIFT;
    int prot = seg_fd >= 0 ? PROT_NONE : PROT_READ | PROT_WRITE;
    void *p = map_aligned_at((void *)h, MH_SEG_SIZE, MH_SEG_SIZE, prot);
    if (!p) return NULL;
    if (seg_fd >= 0) {
        int saved = errno;
        bool ok = map_shared_at(p, MH_SEG_SIZE, p) != NULL;
        errno = saved;
        if (!ok) {
            os_unmap(p, MH_SEG_SIZE);
            return NULL;
        }
    }
    seg_hint = ((uintptr_t)p >> MH_SEG_SHIFT) - 1;
    /* The last unit is a guard: a linear overflow out of the last slab faults
     * instead of running into the next miniheap. */
    os_protect_none((uint8_t *)p + (size_t)MH_USABLE_UNITS * MH_UNIT_SIZE,
                    (size_t)(MH_UNITS - MH_USABLE_UNITS) * MH_UNIT_SIZE);
    return p;
}

static bool punch(const void *p, size_t size) {
    return fallocate(seg_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(uintptr_t)p, (off_t)size) == 0;
}

void os_segment_free(void *seg) {
    os_unmap(seg, MH_SEG_SIZE);
    int saved = errno;
    bool clean = seg_fd < 0 || punch(seg, MH_SEG_SIZE);
    errno = saved;
    /* Raise the hint (seg_hint), but not to a segment whose file pages are
     * still there (a punch refused): a new miniheap takes its units as zero. */
    uintptr_t mine = (uintptr_t)seg >> MH_SEG_SHIFT;
    if (clean && mine > seg_hint) seg_hint = mine;
    atomic_fetch_add(&os_unmapped_total, MH_SEG_SIZE);
}

/* process_madvise on the calling thread's own memory (PIDFD_SELF_THREAD,
 * Linux 6.15) with any advice (6.13); on 6.18 one call costs one TLB
 * flush, measured. Elsewhere it fails and each range gets its own madvise.
 * Not under a seccomp filter, which may kill a process for a call it does
 * not know (sshd's sandbox). A filter may be installed at any time and is
 * never removed, so the Seccomp: field of /proc/self/status is read before
 * every batched call until one is seen. The read costs ~20 us, about three
 * madvise calls on a quiet CPU: hence a batch of at least OS_BATCH_MIN. */
#define OS_PIDFD_SELF_THREAD (-10000)
#define OS_BATCH_MIN 4
static _Atomic int batch_off; /* the call is missing or refused, or a filter was seen */

static bool batch_allowed(void) {
    if (atomic_load_explicit(&batch_off, memory_order_relaxed) || track_active()) return false;
    char buf[4096];
    bool ok = false;
    if (os_read_file("/proc/self/status", buf, sizeof buf) > 0) {
        const char *f = strstr(buf, "\nSeccomp:");
        ok = f && f[9] == '\t' && f[10] == '0' && f[11] == '\n';
    }
    if (!ok) atomic_store_explicit(&batch_off, 1, memory_order_relaxed);
    return ok;
}

/* All of b's ranges given back in one call; false if the call is missing,
 * refused or partial (madvise per range then redoes them all: idempotent). */
static bool purge_batched(os_purge_batch_t *b) {
#ifdef SYS_process_madvise
    /* (not under memcheck either, which does not know the call and says so) */
    if (b->n < OS_BATCH_MIN || !batch_allowed()) return false;
    size_t total = 0;
    for (uint32_t i = 0; i < b->n; i++) total += b->r[i].len;
    long done = syscall(SYS_process_madvise, OS_PIDFD_SELF_THREAD, (struct iovec *)b->r, (size_t)b->n, MADV_DONTNEED, 0);
    if (done < 0 && (errno == EBADF || errno == EINVAL || errno == ENOSYS || errno == EPERM || errno == ESRCH))
        atomic_store_explicit(&batch_off, 1, memory_order_relaxed);
    if (done != (long)total) return false;
    atomic_fetch_add(&os_purged_total, total);
    return true;
#else
    (void)b;
    return false;
#endif
}

void os_purge_flush(os_purge_batch_t *b) {
    _Static_assert(sizeof b->r[0] == sizeof(struct iovec), "a batch entry is an iovec");
    if (!b->n) return;
    int saved = errno;
    if (seg_fd >= 0) {
        /* mesh=1: a punch frees the file's pages and takes them out of the
         * views itself. A batched MADV_DONTNEED before the punches did that
         * part twice: bench memory spike's 90 MB came back in 242 ms, not
         * 210 (medians of 8, the machine to itself), for the same CPU time;
         * it won only with the other CPU busy (515 ms, not 570). */
        for (uint32_t i = 0; i < b->n; i++) os_segment_punch(b->r[i].base, b->r[i].len);
    } else if (!purge_batched(b)) {
        for (uint32_t i = 0; i < b->n; i++) os_purge(b->r[i].base, b->r[i].len);
    }
    b->n = 0;
    errno = saved;
}

/* mesh=1 (seg_fd >= 0): os_purge_flush punches the file's pages (the
 * kernel's MADV_DONTNEED would only drop the view). Purged ranges are never
 * meshed views, so their pages are at offset == address; a punch ignores
 * the protection (MADV_REMOVE before Linux 6.7 stops at the first page that
 * is not writable, a slab guard say). */
void os_segment_purge(os_purge_batch_t *b, void *p, size_t size) {
    if (!size) return;
    if (b->n == OS_PURGE_BATCH) os_purge_flush(b);
    b->r[b->n].base = p;
    b->r[b->n].len = size;
    b->n++;
}

bool os_protect_read(void *p, size_t size) {
    int saved = errno;
    bool ok = mprotect(p, size, PROT_READ) == 0;
    errno = saved;
    return ok;
}

bool os_segment_alias(void *at, const void *onto, size_t size) {
    int saved = errno;
    bool ok = map_shared_at(at, size, onto) != NULL;
    errno = saved;
    return ok;
}

void os_segment_punch(const void *p, size_t size) {
    int saved = errno;
    if (punch(p, size)) atomic_fetch_add(&os_purged_total, size);
    errno = saved;
}

/* A forked child gets a file of its own with the same data: the parent's
 * data extents of each miniheap (holes stay holes), then its views remapped.
 * Runs in the child with only the forking thread, locks held. */
int os_backing_fork_begin(void) {
    int saved = errno;
    int fd = memfd_create("miniheap", MFD_CLOEXEC);
    if (fd >= 0 && ftruncate(fd, (off_t)1 << MH_ADDR_BITS) != 0) {
        close(fd);
        fd = -1;
    }
    if (fd >= 0 && !copy_buf) {
        copy_buf = map_raw(NULL, COPY_BUF, PROT_READ | PROT_WRITE, 0);
        if (!copy_buf) {
            close(fd);
            fd = -1;
        }
    }
    errno = saved;
    return fd;
}

bool os_backing_copy(int to, const void *seg, size_t size) {
    int saved = errno;
    off_t at = (off_t)(uintptr_t)seg, end = at + (off_t)size;
    bool ok = true;
    while (ok && at < end) {
        off_t data = lseek(seg_fd, at, SEEK_DATA);
        if (data < 0) {
            ok = errno == ENXIO; /* no data after at; anything else is a failed copy */
            break;
        }
        if (data >= end) break;
        off_t hole = lseek(seg_fd, data, SEEK_HOLE);
        if (hole < 0 || hole > end) hole = end;
        for (off_t o = data; ok && o < hole;) {
            size_t n = (size_t)(hole - o) < COPY_BUF ? (size_t)(hole - o) : COPY_BUF;
            ssize_t r = pread(seg_fd, copy_buf, n, o);
            ok = r > 0 && pwrite(to, copy_buf, (size_t)r, o) == r;
            o += r > 0 ? r : 0;
        }
        at = hole;
    }
    errno = saved;
    return ok;
}

bool os_backing_fork_remap(int to, void *seg) {
    int saved = errno;
    void *p = mmap(seg, MH_SEG_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, to, (off_t)(uintptr_t)seg);
    errno = saved;
    return p != MAP_FAILED;
}

void os_backing_fork_end(int to) {
    os_close(seg_fd);
    seg_fd = to;
}

/* Threads that write to a page being meshed wait in the fault handler. */
/* Called from the fault handler, where SIGSEGV and SIGBUS are blocked: a
 * signal handler of the program that runs during the wait and writes to the
 * heap must be able to fault (and wait) in turn, not be killed. */
void os_futex_wait(_Atomic uint32_t *word, uint32_t val, int timeout_ms) {
    int saved = errno;
    sigset_t faults, old;
    sigemptyset(&faults);
    sigaddset(&faults, SIGSEGV);
    sigaddset(&faults, SIGBUS);
    pthread_sigmask(SIG_UNBLOCK, &faults, &old);
    struct timespec ts = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000};
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, val, &ts, NULL, 0);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = saved;
}

void os_futex_wake(_Atomic uint32_t *word) {
    int saved = errno;
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
    errno = saved;
}

/* Asymmetric fences for solo.c. PRIVATE_EXPEDITED makes every running
 * thread of the process execute a full memory barrier before it returns
 * (an IPI), and needs registering first; GLOBAL waits for every CPU to pass
 * through the scheduler instead (slow, needs no registration). */
#ifndef MEMBARRIER_CMD_GLOBAL
#define MEMBARRIER_CMD_GLOBAL 1
#define MEMBARRIER_CMD_PRIVATE_EXPEDITED 8
#define MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED 16
#endif
bool os_membarrier_register(void) {
#ifdef SYS_membarrier
    int saved = errno;
    long r = syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0);
    errno = saved;
    return r == 0;
#else
    return false;
#endif
}
bool os_membarrier(void) {
#ifdef SYS_membarrier
    int saved = errno;
    long r = syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
    if (r != 0) r = syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0);
    errno = saved;
    return r == 0;
#else
    return false;
#endif
}
void os_yield(void) { sched_yield(); }

/* ---- other threads (the leak scan stops them: leak.c) ---- */

/* The kernel ids of the process's other threads, up to max (from
 * /proc/self/task; 0 when it cannot be read). */
size_t os_other_threads(uint32_t *tids, size_t max) {
    int saved = errno;
    int fd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) { errno = saved; return 0; }
    uint32_t self = os_thread_id();
    size_t n = 0;
    _Alignas(8) char buf[4096];
    long got;
    while (n < max && (got = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0) {
        track_kernel_wrote(buf, (size_t)got);
        for (long off = 0; off < got;) {
            const char *name = buf + off + 19; /* d_ino 8, d_off 8, d_reclen 2, d_type 1 */
            uint16_t reclen;
            memcpy(&reclen, buf + off + 16, sizeof reclen);
            off += reclen;
            uint32_t tid = 0;
            bool digits = *name != 0;
            for (const char *c = name; *c; c++) {
                if (*c < '0' || *c > '9') { digits = false; break; }
                tid = tid * 10 + (uint32_t)(*c - '0');
            }
            if (digits && tid != self && n < max) tids[n++] = tid;
        }
    }
    close(fd);
    errno = saved;
    return n;
}

bool os_signal_thread(uint32_t tid, int sig) {
    int saved = errno;
    bool ok = syscall(SYS_tgkill, getpid(), (pid_t)tid, sig) == 0;
    errno = saved;
    return ok;
}


/* For each of addrs[0..n), the readable mapping that holds it, [lo, hi)
 * (0, 0 when none does), from one read of /proc/self/maps. */
void os_readable_mappings(const uintptr_t *addrs, size_t n, uintptr_t *lo, uintptr_t *hi) {
    for (size_t i = 0; i < n; i++) lo[i] = hi[i] = 0;
    int saved = errno;
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) { errno = saved; return; }
    char buf[8192];
    size_t have = 0;
    for (;;) {
        ssize_t r = read(fd, buf + have, sizeof buf - have);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        have += (size_t)r;
        size_t start = 0;
        for (size_t e = 0; e < have; e++) {
            if (buf[e] != '\n') continue;
            /* "lo-hi rwxp ..." */
            const char *c = buf + start, *end = buf + e;
            uintptr_t v[2] = {0, 0};
            for (int k = 0; k < 2 && c < end; k++, c++) {
                for (; c < end && *c != '-' && *c != ' '; c++)
                    v[k] = v[k] * 16 + (uintptr_t)(*c <= '9' ? *c - '0' : (*c | 0x20) - 'a' + 10);
            }
            if (c < end && *c == 'r') {
                for (size_t i = 0; i < n; i++)
                    if (addrs[i] >= v[0] && addrs[i] < v[1]) { lo[i] = v[0]; hi[i] = v[1]; }
            }
            start = e + 1;
        }
        memmove(buf, buf + start, have - start);
        have -= start;
        if (have == sizeof buf) have = 0; /* a line longer than the buffer: not one we need */
    }
    close(fd);
    errno = saved;
}
