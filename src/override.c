/* The plain malloc family, exported by libminiheap.so and libminiheap.a so
 * that linking or LD_PRELOAD replaces the system allocator. Each forwards to
 * the prefixed API. libminiheap_prefixed.a leaves this file out. */
#include "internal.h"
#include "track.h"

#include <malloc.h>
#include <signal.h>
#include <errno.h>

#define EXPORT __attribute__((visibility("default")))

/* Defined only where this file is linked in: stack.c's find_self tells by
 * it that the library holding our code is an allocator of its own. */
MH_INTERNAL const char mh_replaces_malloc = 1;

/* MH_TRACK_ENTRY: under valgrind, the block's client request is made here
 * (src/track.h), so memcheck's stacks start in the program's caller. */
EXPORT void *malloc(size_t n) { void *p; MH_TRACK_ENTRY(p = mh_malloc(n)); return p; }
EXPORT void free(void *p) { MH_TRACK_ENTRY(mh_free(p)); }
EXPORT void *calloc(size_t c, size_t n) { void *p; MH_TRACK_ENTRY(p = mh_calloc(c, n)); return p; }
EXPORT void *realloc(void *p, size_t n) { return mh_realloc(p, n); }
EXPORT void *reallocarray(void *p, size_t c, size_t n) { return mh_reallocarray(p, c, n); }
EXPORT int posix_memalign(void **out, size_t a, size_t n) { int r; MH_TRACK_ENTRY(r = mh_posix_memalign(out, a, n)); return r; }
EXPORT void *aligned_alloc(size_t a, size_t n) { void *p; MH_TRACK_ENTRY(p = mh_aligned_alloc(a, n)); return p; }
EXPORT void *memalign(size_t a, size_t n) { void *p; MH_TRACK_ENTRY(p = mh_memalign(a, n)); return p; }
EXPORT void *valloc(size_t n) { void *p; MH_TRACK_ENTRY(p = mh_valloc(n)); return p; }
EXPORT void *pvalloc(size_t n) { void *p; MH_TRACK_ENTRY(p = mh_pvalloc(n)); return p; }
EXPORT size_t malloc_usable_size(void *p) { return mh_malloc_usable_size(p); }
EXPORT void free_sized(void *p, size_t n) { MH_TRACK_ENTRY(mh_free_sized(p, n)); }
EXPORT void free_aligned_sized(void *p, size_t a, size_t n) { MH_TRACK_ENTRY(mh_free_aligned_sized(p, a, n)); }
EXPORT int malloc_trim(size_t pad) { return mh_trim(pad); }

/* glibc's own names of its allocator, which some programs and interposers
 * call to reach "the real malloc": theirs must be the blocks free() takes,
 * or a block crosses allocators (an invalid free, or glibc's abort). The
 * same functions under a second name. */
#if defined(__clang__)
#define SAME_AS(f) EXPORT __typeof__(f) __attribute__((alias(#f)))
#else /* gcc wants an alias to carry its target's attributes (malloc, alloc_size, ...) */
#define SAME_AS(f) EXPORT __typeof__(f) __attribute__((alias(#f), copy(f)))
#endif
SAME_AS(malloc) __libc_malloc;
SAME_AS(free) __libc_free;
SAME_AS(free) cfree;
SAME_AS(calloc) __libc_calloc;
SAME_AS(realloc) __libc_realloc;
SAME_AS(memalign) __libc_memalign;
SAME_AS(valloc) __libc_valloc;
SAME_AS(pvalloc) __libc_pvalloc;
EXPORT void malloc_stats(void) { mh_print_stats(); }

/* The stack walk of debug mode bounds itself by the thread's signal stack
 * when it runs there (stack.c): it must hear of a new one. */
EXPORT int sigaltstack(const stack_t *ss, stack_t *old) {
    int r = os_set_signal_stack(ss, old);
    if (r == 0 && ss) stack_altstack_changed();
    return r;
}

/* A program on miniheap starts it when it is loaded, not at its first
 * allocation: what the options ask for at exit or on a signal (statistics,
 * the leak report) happens in a program that never allocates too, such as
 * /bin/true. (The prefixed library stays lazy: a program may link it and
 * never use it.) In either order with stats.c's constructor, the statistics
 * thread starts if asked for. */
__attribute__((constructor)) static void start_at_load(void) {
    mh_ensure_init();
    stats_start_if_wanted();
}

/* Signal handlers: with meshing on, miniheap's fault handler stays in front
 * of the program's (os_program_sigaction). glibc's signal functions set
 * handlers without calling sigaction by name, so they are here too:
 * signal() and bsd_signal() (BSD semantics; glibc's own, ssignal, for other
 * signals and without mesh=1), and sysv_signal() (what signal() is when a
 * program is built without _DEFAULT_SOURCE), done as glibc does it. sigset()
 * is not covered (SECURITY.md). */
EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    return os_program_sigaction(sig, act, old);
}

static sighandler_t set_handler(int sig, sighandler_t fn, int flags, bool self_blocked) {
    if (fn == SIG_ERR || sig < 1 || sig >= NSIG) {
        errno = EINVAL;
        return SIG_ERR;
    }
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    if (self_blocked) sigaddset(&sa.sa_mask, sig);
    if (os_program_sigaction(sig, &sa, &old) < 0) return SIG_ERR;
    return old.sa_handler;
}

static sighandler_t bsd_signal_impl(int sig, sighandler_t fn) {
    if (!os_keeps_fault_handler(sig)) return ssignal(sig, fn);
    return set_handler(sig, fn, SA_RESTART, true);
}
EXPORT sighandler_t signal(int sig, sighandler_t fn) { return bsd_signal_impl(sig, fn); }
EXPORT sighandler_t bsd_signal(int sig, sighandler_t fn) { return bsd_signal_impl(sig, fn); }
EXPORT sighandler_t sysv_signal(int sig, sighandler_t fn) { return set_handler(sig, fn, SA_RESETHAND | SA_NODEFER, false); }
EXPORT sighandler_t __sysv_signal(int sig, sighandler_t fn) { return sysv_signal(sig, fn); }

static size_t clamp_int(size_t v) { return v > 0x7fffffff ? 0x7fffffff : v; }

EXPORT struct mallinfo2 mallinfo2(void) {
    mh_stats_t st;
    mh_stats(&st);
    struct mallinfo2 mi;
    memset(&mi, 0, sizeof mi);
    size_t large_bytes = st.live_bytes; /* refined below */
    (void)large_bytes;
    mi.arena = st.mapped_bytes;
    mi.ordblks = st.slabs;
    mi.hblks = st.large_blocks;
    mi.uordblks = st.live_bytes;
    mi.fordblks = st.mapped_bytes > st.live_bytes ? st.mapped_bytes - st.live_bytes : 0;
    mi.keepcost = st.cached_bytes;
    return mi;
}

EXPORT struct mallinfo mallinfo(void) {
    struct mallinfo2 m2 = mallinfo2();
    struct mallinfo mi;
    memset(&mi, 0, sizeof mi);
    mi.arena = (int)clamp_int(m2.arena);
    mi.ordblks = (int)clamp_int(m2.ordblks);
    mi.hblks = (int)clamp_int(m2.hblks);
    mi.uordblks = (int)clamp_int(m2.uordblks);
    mi.fordblks = (int)clamp_int(m2.fordblks);
    mi.keepcost = (int)clamp_int(m2.keepcost);
    return mi;
}
