/* Shared helpers for the valgrind/sanitizer test programs (valgrind/tests/).
 *
 * Each program is built in two flavours from the same source:
 *   plain     (default): calls malloc, free, ... ; run under valgrind, with
 *             libminiheap.so preloaded (valgrind/miniheap-valgrind) or on
 *             the system allocator (the baseline: valgrind's own messages
 *             for glibc, which miniheap must reproduce);
 *   prefixed  (-DVG_PREFIXED): the same calls, #defined to the mh_* API and
 *             linked with a libminiheap_prefixed.a; this is how the ASan,
 *             MSan and UBSan builds are tested.
 *
 * The programs never use stdio on stdout (its buffer would be a heap block
 * of libc's): every line goes to stderr through write(2) from a stack
 * buffer. Lines starting with "VG: " are read by valgrind/run-tests.sh.
 * Include this header before anything else (it includes the system headers
 * the programs need, then #defines the allocator names).
 */
#ifndef VG_TEST_H
#define VG_TEST_H

#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "miniheap.h"

#ifdef VG_PREFIXED
/* After the system headers: from here on the program calls miniheap. */
#define malloc mh_malloc
#define calloc mh_calloc
#define realloc mh_realloc
#define reallocarray mh_reallocarray
#define free mh_free
#define posix_memalign mh_posix_memalign
#define aligned_alloc mh_aligned_alloc
#define memalign mh_memalign
#define valloc mh_valloc
#define pvalloc mh_pvalloc
#define malloc_usable_size mh_malloc_usable_size
#define malloc_trim mh_trim
#define VG_FREE_SIZED mh_free_sized
#define VG_FREE_ALIGNED_SIZED mh_free_aligned_sized
#define VG_HAVE_FREE_SIZED 1
#define VG_HAVE_FREE_ALIGNED_SIZED 1
#define VG_FLAVOUR "prefixed"
#else
/* C23 additions glibc 2.36 does not have. Weak: they resolve to
 * libminiheap.so's when it is preloaded and stay NULL on glibc. */
extern void free_sized(void *ptr, size_t size) __attribute__((weak));
extern void free_aligned_sized(void *ptr, size_t alignment, size_t size) __attribute__((weak));
#define VG_FREE_SIZED free_sized
#define VG_FREE_ALIGNED_SIZED free_aligned_sized
#define VG_HAVE_FREE_SIZED (free_sized != NULL)
#define VG_HAVE_FREE_ALIGNED_SIZED (free_aligned_sized != NULL)
#define VG_FLAVOUR "plain"
#endif

#define VG_NOINLINE __attribute__((noinline))
#define VG_UNUSED __attribute__((unused))

/* printf to stderr without allocating. */
__attribute__((format(printf, 1, 2))) static VG_UNUSED void vg_say(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n > sizeof buf - 2) n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    ssize_t w = write(2, buf, (size_t)n);
    (void)w;
}

static int vg_failures;
#define VG_CHECK(cond)                                                                  \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            vg_say("VG: FAIL %s:%d: %s", __FILE__, __LINE__, #cond);                    \
            vg_failures++;                                                              \
        }                                                                               \
    } while (0)

/* Which allocator serves malloc: miniheap when its mh_stats is visible (it is
 * exported by the preloaded libminiheap.so; the prefixed flavour links it).
 * Prints "VG: allocator=miniheap allocs=N live=N" or "VG: allocator=system";
 * returns 1 for miniheap. */
typedef void (*vg_stats_fn)(mh_stats_t *);
static VG_UNUSED vg_stats_fn vg_stats_function(void) {
#ifdef VG_PREFIXED
    return mh_stats;
#else
    return (vg_stats_fn)dlsym(RTLD_DEFAULT, "mh_stats");
#endif
}

static VG_UNUSED int vg_report_allocator(const char *when) {
    vg_stats_fn f = vg_stats_function();
    if (!f) {
        vg_say("VG: allocator=system (%s)", when);
        return 0;
    }
    mh_stats_t st;
    memset(&st, 0, sizeof st);
    f(&st);
    vg_say("VG: allocator=miniheap allocs=%llu live=%zu (%s)", (unsigned long long)st.total_allocs,
           st.live_blocks, when);
    return 1;
}

static VG_UNUSED int vg_on_miniheap(void) { return vg_stats_function() != NULL; }

/* Overwrite the dead part of the stack so that no stale copy of a pointer
 * the program dropped keeps a leaked block reachable for memcheck. */
static VG_UNUSED VG_NOINLINE void vg_clobber_stack(void) {
    volatile char pad[16384];
    for (size_t i = 0; i < sizeof pad; i++) pad[i] = 0;
}

/* Fill / check a block with a pattern derived from its size. */
static VG_UNUSED void vg_fill(void *p, size_t n, unsigned seed) {
    unsigned char *c = p;
    for (size_t i = 0; i < n; i++) c[i] = (unsigned char)(seed + i * 7);
}
static VG_UNUSED int vg_check_fill(const void *p, size_t n, unsigned seed) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i] != (unsigned char)(seed + i * 7)) return 0;
    return 1;
}

static VG_UNUSED int vg_exit(const char *prog) {
    if (vg_failures) {
        vg_say("VG: %s: %d check(s) failed", prog, vg_failures);
        return 1;
    }
    vg_say("VG: %s: done", prog);
    return 0;
}

#endif
