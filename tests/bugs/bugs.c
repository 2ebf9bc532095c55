/* One heap bug per run, chosen by the arguments; run under
 * LD_PRELOAD=libminiheap.so by tests/t_bugs.sh, once per mode.
 *
 *   bugs overflow ROUTE SIZE K [free|usable|realloc|check|alloc]
 *        ROUTE: malloc calloc memalign aligned_alloc realloc_shrink realloc_grow
 *        writes the K bytes right after the SIZE requested bytes, then hands
 *        the block to free (default), malloc_usable_size, realloc or
 *        mh_check, or only allocates 4 more blocks (for check_every=N)
 *   bugs sweep                         overflow by 1 of ~30000 sizes and routes, see sweep()
 *   bugs underflow SIZE                writes the byte before the block, frees it
 *   bugs uaf_write SIZE OFF [reuse|check|churn]
 *        frees the block, writes the byte at OFF, then: reuse = malloc the
 *        same size 8 times and free them all; check = mh_check();
 *        churn = 20000 malloc/free pairs of the same size
 *   bugs uaf_read SIZE OFF             frees the block and reads the byte at OFF
 *   bugs uaf_read_evicted              frees a 300 KiB block, then 24 blocks of
 *                                      1 MiB (more than debug's quarantine),
 *                                      then reads the first block
 *   bugs double_free small|medium|large|after_allocs|after_reuse|thread
 *   bugs invalid free|realloc|usable TARGET
 *        TARGET: interior_small interior_large stack global mmap wild stale
 *                freed_small freed_large
 *   bugs free_sized small_less|small_more|large|large_zero|aligned_small
 *   bugs sampled overflow SIZE K [nofree] | underflow | uaf_write | uaf_read |
 *                double_free | interior        (run with sample_rate=1)
 *   bugs leak                          leaks 100 + 200 + 300 bytes
 *   bugs clean                         every entry point used correctly
 *   bugs zero usable|realloc           blocks of size 0: written up to
 *                                      malloc_usable_size, or grown by realloc
 *   bugs zero_access read|write        reads or writes the first byte of malloc(0)
 *   bugs never_freed overflow|underflow SIZE
 *                                      writes 1 byte past (before) a block that
 *                                      is never freed (found at exit, if at all)
 *   bugs overread SIZE K               reads the K bytes past a block (no write)
^ *   bugs freed_pointer                 frees a block holding a pointer, then
 *                                      frees what that pointer (read from the
 *                                      freed block) points to
 *   bugs uaf_write_reused SIZE         frees a block, allocates the same size,
 *                                      writes through the stale pointer
 *   bugs clean_threads                 threads allocating, freeing each other's blocks
 *   bugs clean_rbp                     malloc and free called with rbp holding -16, 0 and
 *                                      an odd value (code built without frame pointers)
 *   bugs clean_altstack                the same in a handler on a signal stack, rbp at an
 *                                      unmapped page above it
 *
 * A bug that is not caught lets the program go on: it then cleans up and
 * exits 0 without writing anything (blocks it cannot free stay referenced
 * from `keep`, so a debug-mode leak report does not fire either). Anything
 * that goes wrong in the program itself is written to stderr with the
 * prefix "bugs: " and exits 2.
 *
 * The functions named site_* are where blocks are allocated and freed in
 * the double-free and leak cases; the runner checks that debug-mode reports
 * name them (they are global, and the program is linked with -rdynamic, so
 * dladdr finds them). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include "miniheap.h" /* types only: the functions are looked up with dlsym */

#define NOINLINE __attribute__((noinline))

/* Hide where a pointer came from, so the compiler neither warns about the
 * bug (-Wfree-nonheap-object, -Warray-bounds, ...) nor folds it away. */
static inline void *launder(void *p) {
    __asm__ volatile("" : "+r"(p));
    return p;
}
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }

static void die(const char *what) {
    fprintf(stderr, "bugs: %s (errno %d)\n", what, errno);
    exit(2);
}

/* Blocks the program keeps (never freed, always reachable: global, so the
 * compiler cannot drop the stores, and the leak scan sees them). */
void *keep[64];
unsigned nkeep;
static void keep_ptr(void *p) {
    if (nkeep < sizeof keep / sizeof keep[0]) keep[nkeep++] = p;
}

/* The bad accesses, through volatile so each is one plain store or load. */
NOINLINE void poke(void *p, ptrdiff_t off, size_t len) {
    volatile unsigned char *q = (volatile unsigned char *)launder(p) + off;
    for (size_t i = 0; i < len; i++) q[i] = 0x41;
}
NOINLINE unsigned peek(void *p, ptrdiff_t off) {
    volatile unsigned char *q = (volatile unsigned char *)launder(p) + off;
    return *q;
}
static void fill(void *p, size_t n) {
    if (p) memset(p, 0x5a, n);
}

typedef int (*check_fn)(void);
typedef void (*free_sized_fn)(void *, size_t);
typedef void (*free_aligned_sized_fn)(void *, size_t, size_t);
static void *sym(const char *name) {
    void *f = dlsym(RTLD_DEFAULT, name);
    if (!f) {
        fprintf(stderr, "bugs: %s not found (is libminiheap.so preloaded?)\n", name);
        exit(2);
    }
    return f;
}
static void heap_check(void) { ((check_fn)sym("mh_check"))(); }

/* ---- allocation and free sites (named in debug-mode reports) ------------- */
NOINLINE void *site_alloc(size_t n) {
    void *p = malloc(n);
    if (!p) die("malloc failed");
    fill(p, n);
    return launder(p);
}
NOINLINE void site_free(void *p) {
    free(launder(p));
    barrier();
}
static volatile int second_frees;
NOINLINE void site_double_free(void *p) {
    free(launder(p));
    second_frees++;
    barrier();
}
NOINLINE void *site_thread_free(void *p) {
    free(launder(p));
    barrier();
    return NULL;
}

/* ---- overflow ---------------------------------------------------------------- */
static unsigned char *alloc_route(const char *route, size_t n) {
    void *p = NULL;
    if (!strcmp(route, "malloc")) {
        p = malloc(n);
    } else if (!strcmp(route, "calloc")) {
        p = calloc(1, n);
    } else if (!strcmp(route, "memalign")) {
        p = memalign(64, n);
    } else if (!strcmp(route, "aligned_alloc")) {
        p = aligned_alloc(64, n);
    } else if (!strcmp(route, "realloc_shrink")) {
        p = malloc(n + 8);
        fill(p, n + 8);
        p = realloc(p, n);
    } else if (!strcmp(route, "realloc_grow")) {
        p = malloc(n / 2);
        fill(p, n / 2);
        p = realloc(p, n);
    } else {
        die("unknown allocation route");
    }
    if (!p) die("allocation failed");
    return launder(p);
}

static int overflow(const char *route, size_t n, size_t k, const char *detect) {
    unsigned char *p = alloc_route(route, n);
    fill(p, n); /* all of it is ours */
    poke(p, (ptrdiff_t)n, k);
    if (!strcmp(detect, "free")) {
        free(p);
    } else if (!strcmp(detect, "usable")) {
        if (malloc_usable_size(p) < n) die("malloc_usable_size below the requested size");
        keep_ptr(p);
    } else if (!strcmp(detect, "realloc")) {
        void *q = realloc(p, 2 * n);
        if (!q) die("realloc failed");
        keep_ptr(q);
    } else if (!strcmp(detect, "check")) {
        heap_check();
        keep_ptr(p);
    } else if (!strcmp(detect, "alloc")) { /* for check_every=N */
        for (int i = 0; i < 4; i++) keep_ptr(site_alloc(32));
        keep_ptr(p);
    } else {
        die("unknown detection");
    }
    return 0;
}

/* The block with the highest address of several: whatever the slot choice,
 * the slot before it is one of the slab's (never the slab's start), so
 * writing the byte before the block stays in the slab. */
static unsigned char *highest_of(size_t n, int count) {
    unsigned char *best = NULL;
    for (int i = 0; i < count; i++) {
        unsigned char *p = malloc(n);
        if (!p) die("malloc failed");
        fill(p, n);
        if (best && p < best) {
            keep_ptr(p);
        } else {
            if (best) keep_ptr(best);
            best = p;
        }
    }
    return launder(best);
}

static int underflow(size_t n) {
    unsigned char *p = n > 128 * 1024 ? site_alloc(n) : highest_of(n, 8);
    poke(p, -1, 1);
    free(p);
    return 0;
}

/* ---- use after free ---------------------------------------------------------- */
static int uaf_write(size_t n, size_t off, const char *then) {
    unsigned char *p = site_alloc(n);
    site_free(p);
    poke(p, (ptrdiff_t)off, 1);
    if (!strcmp(then, "reuse")) {
        void *q[8];
        for (int i = 0; i < 8; i++) q[i] = site_alloc(n);
        for (int i = 0; i < 8; i++) free(q[i]);
    } else if (!strcmp(then, "check")) {
        heap_check();
    } else if (!strcmp(then, "churn")) {
        for (int i = 0; i < 20000; i++) free(site_alloc(n));
    } else {
        die("unknown follow-up");
    }
    return 0;
}

static int uaf_read(size_t n, size_t off) {
    unsigned char *p = site_alloc(n);
    site_free(p);
    volatile unsigned v = peek(p, (ptrdiff_t)off);
    (void)v;
    return 0;
}

/* Past the quarantine: the freed mapping waits in the mapping cache, still
 * inaccessible (nothing is allocated after the frees, so it is not reused). */
static int uaf_read_evicted(void) {
    void *other[24];
    for (int i = 0; i < 24; i++) other[i] = site_alloc((size_t)1 << 20);
    unsigned char *p = site_alloc(300 * 1024);
    site_free(p);
    for (int i = 0; i < 24; i++) site_free(other[i]);
    volatile unsigned v = peek(p, 100);
    (void)v;
    return 0;
}

/* ---- double free --------------------------------------------------------------- */
static int double_free(const char *how) {
    if (!strcmp(how, "small") || !strcmp(how, "medium") || !strcmp(how, "large")) {
        size_t n = how[0] == 's' ? 24 : how[0] == 'm' ? 5000 : 300 * 1024;
        void *p = site_alloc(n);
        site_free(p);
        site_double_free(p);
    } else if (!strcmp(how, "after_allocs")) {
        /* Other allocations (of other sizes) between the two frees. */
        void *p = site_alloc(24);
        site_free(p);
        for (int i = 0; i < 32; i++) keep_ptr(site_alloc(64 + 48 * (size_t)i));
        keep_ptr(site_alloc(1 << 20));
        site_double_free(p);
    } else if (!strcmp(how, "after_reuse")) {
        /* The slot is handed out again before the second free, which then
         * frees the new owner's block; the new owner's own free is the
         * second free of that address. */
        void *p = site_alloc(24);
        site_free(p);
        void *q = site_alloc(24);
        site_double_free(p);
        site_free(q);
    } else if (!strcmp(how, "thread")) {
        void *p = site_alloc(24);
        site_free(p);
        pthread_t t;
        if (pthread_create(&t, NULL, site_thread_free, p) != 0) die("pthread_create");
        pthread_join(t, NULL);
    } else {
        die("unknown double free");
    }
    return 0;
}

/* ---- invalid pointers --------------------------------------------------------- */
static char global_buf[256];

/* 8 MiB of small blocks, all freed, malloc_trim(0): a pointer that was in a
 * miniheap that has been given back (its page is no longer mapped). */
#define STALE_N 32768
static void *stale_ptrs[STALE_N];
static void *stale_pointer(void) {
    for (int i = 0; i < STALE_N; i++) {
        stale_ptrs[i] = malloc(256);
        if (!stale_ptrs[i]) die("malloc failed");
        fill(stale_ptrs[i], 256);
    }
    for (int i = 0; i < STALE_N; i++) free(stale_ptrs[i]);
    malloc_trim(0);
    unsigned char vec;
    long page = sysconf(_SC_PAGESIZE);
    for (int i = STALE_N; i-- > 0;) {
        void *pg = (void *)((uintptr_t)stale_ptrs[i] & ~(uintptr_t)(page - 1));
        if (mincore(pg, (size_t)page, &vec) != 0 && errno == ENOMEM) return stale_ptrs[i];
    }
    die("no miniheap was given back after malloc_trim(0)");
    return NULL;
}

static void *target(const char *what, void *stack_buf) {
    if (!strcmp(what, "interior_small")) {
        unsigned char *p = site_alloc(24);
        keep_ptr(p);
        return p + 8;
    }
    if (!strcmp(what, "interior_large")) {
        unsigned char *p = site_alloc(300 * 1024);
        keep_ptr(p);
        return p + 4096;
    }
    if (!strcmp(what, "stack")) return stack_buf;
    if (!strcmp(what, "global")) return global_buf + 64;
    if (!strcmp(what, "mmap")) {
        void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) die("mmap");
        return m;
    }
    if (!strcmp(what, "wild")) return (void *)(uintptr_t)0x1000;
    if (!strcmp(what, "stale")) return stale_pointer();
    if (!strcmp(what, "freed_small") || !strcmp(what, "freed_large")) {
        void *p = site_alloc(what[6] == 's' ? 24 : 300 * 1024);
        site_free(p);
        return p;
    }
    die("unknown target");
    return NULL;
}

static int invalid(const char *op, const char *what) {
    char stack_buf[256];
    memset(stack_buf, 1, sizeof stack_buf);
    void *p = launder(target(what, stack_buf));
    if (!strcmp(op, "free")) {
        free(p);
    } else if (!strcmp(op, "realloc")) {
        void *q = realloc(p, 100);
        if (q) keep_ptr(q);
    } else if (!strcmp(op, "usable")) {
        volatile size_t u = malloc_usable_size(p);
        (void)u;
    } else {
        die("unknown operation");
    }
    barrier();
    return 0;
}

/* ---- sized frees ------------------------------------------------------------- */
static int free_sized_case(const char *how) {
    free_sized_fn fs = (free_sized_fn)sym("free_sized");
    if (!strcmp(how, "small_less")) {
        fs(site_alloc(24), 16);
    } else if (!strcmp(how, "small_more")) {
        fs(site_alloc(24), 4096);
    } else if (!strcmp(how, "large")) {
        fs(site_alloc(300 * 1024), 300 * 1024 - 1);
    } else if (!strcmp(how, "large_zero")) {
        fs(site_alloc(300 * 1024), 0);
    } else if (!strcmp(how, "aligned_small")) {
        free_aligned_sized_fn fas = (free_aligned_sized_fn)sym("free_aligned_sized");
        void *p = aligned_alloc(64, 48);
        if (!p) die("aligned_alloc failed");
        fas(launder(p), 64, 40);
    } else {
        die("unknown sized free");
    }
    return 0;
}

/* ---- sampled blocks (run with sample_rate=1) ----------------------------------- */
static int sampled(const char *what, size_t n, size_t k, const char *then) {
    free(malloc(n)); /* the first allocation of a thread may not be sampled; the next are */
    unsigned char *p = site_alloc(n);
    if (!strcmp(what, "overflow")) {
        poke(p, (ptrdiff_t)n, k);
        if (!strcmp(then, "nofree")) keep_ptr(p);
        else free(p);
    } else if (!strcmp(what, "underflow")) {
        poke(p, -1, 1);
        free(p);
    } else if (!strcmp(what, "uaf_write")) {
        site_free(p);
        poke(p, 0, 1);
    } else if (!strcmp(what, "uaf_read")) {
        site_free(p);
        volatile unsigned v = peek(p, 0);
        (void)v;
    } else if (!strcmp(what, "double_free")) {
        site_free(p);
        site_double_free(p);
    } else if (!strcmp(what, "interior")) {
        keep_ptr(p);
        free(launder(p + 8));
    } else {
        die("unknown sampled case");
    }
    return 0;
}

/* ---- bugs found at the access, or at exit ------------------------------------------- */
static int zero_access(const char *how) {
    unsigned char *p = site_alloc(0);
    keep_ptr(p);
    if (!strcmp(how, "write")) {
        poke(p, 0, 1);
    } else {
        volatile unsigned v = peek(p, 0);
        (void)v;
    }
    return 0;
}

static int never_freed(const char *how, size_t n) {
    unsigned char *p = n > 128 * 1024 ? site_alloc(n) : highest_of(n, 8);
    fill(p, n);
    keep_ptr(p);
    poke(p, !strcmp(how, "underflow") ? -1 : (ptrdiff_t)n, 1);
    return 0; /* exit: only an exit-time check can see it */
}

static int overread(size_t n, size_t k) {
    unsigned char *p = site_alloc(n);
    fill(p, n);
    volatile unsigned v = 0;
    for (size_t i = 0; i < k; i++) v += peek(p, (ptrdiff_t)(n + i));
    (void)v;
    free(p);
    return 0;
}

struct node { struct node *next; char pad[56]; };
static int freed_pointer(void) {
    struct node *a = site_alloc(sizeof *a);
    a->next = site_alloc(sizeof *a);
    site_free(a);
    struct node *next = ((struct node *volatile)launder(a))->next; /* read from freed memory */
    free(next); /* the real block (not caught), or the poison: caught here */
    return 0;
}

static int uaf_write_reused(size_t n) {
    unsigned char *p = site_alloc(n);
    fill(p, n);
    site_free(p);
    unsigned char *q = site_alloc(n); /* may be p's memory again */
    fill(q, n);
    poke(p, 8, 1);
    free(q);
    return 0;
}

/* ---- leak --------------------------------------------------------------------- */
NOINLINE void site_leak(void) {
    /* Three blocks that nothing points to once this returns. */
    launder(site_alloc(100));
    launder(site_alloc(200));
    launder(site_alloc(300));
    barrier();
}
/* Clear the dead part of the stack, so no stale copy of a leaked pointer
 * keeps it reachable for the conservative leak scan. */
NOINLINE void scrub_stack(void) {
    volatile unsigned char buf[64 * 1024];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = 0;
}

/* ---- clean ----------------------------------------------------------------------- */
static int failures;
#define CHECK(c)                                                                      \
    do {                                                                              \
        if (!(c)) {                                                                   \
            fprintf(stderr, "bugs: clean: check failed: %s (line %d)\n", #c, __LINE__); \
            failures++;                                                               \
        }                                                                             \
    } while (0)

/* Fill the whole usable size (what may legally be written), check it. */
static void use_fully(void *p, size_t n, unsigned char v) {
    CHECK(p != NULL);
    if (!p || n == 0) return; /* size 0: see zero() */
    size_t u = malloc_usable_size(p);
    CHECK(u >= n);
    memset(p, v, u);
    const unsigned char *c = p;
    CHECK(u == 0 || (c[0] == v && c[u - 1] == v));
}

static void *clean_thread(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    void *blocks[64] = {0};
    for (int i = 0; i < 2000; i++) {
        seed = seed * 1103515245u + 12345u;
        int slot = (int)(seed >> 16) % 64;
        size_t n = (seed >> 8) % 3 == 0 ? (seed >> 4) % 70000 : (seed >> 4) % 600;
        free(blocks[slot]);
        blocks[slot] = malloc(n);
        use_fully(blocks[slot], n, (unsigned char)i);
    }
    for (int i = 0; i < 64; i++) free(blocks[i]);
    return NULL;
}

static int clean(void) {
    static const size_t aligns[] = {8, 16, 32, 64, 256, 4096, 65536, 1 << 20};
    static const size_t sizes[] = {0, 1, 15, 16, 17, 24, 31, 32, 48, 100, 128, 129, 1000, 4095, 4096,
                                   4097, 5000, 65536, 131071, 131072, 131073, 300 * 1024, 1 << 20};
    const size_t nsizes = sizeof sizes / sizeof sizes[0];
    /* malloc: every size up to 4 KiB, written up to malloc_usable_size */
    for (size_t n = 0; n <= 4096; n++) {
        void *p = malloc(n);
        use_fully(p, n, (unsigned char)n);
        free(p);
    }
    for (size_t i = 0; i < nsizes; i++) {
        size_t n = sizes[i];
        void *p = malloc(n);
        use_fully(p, n, 1);
        free(p);
        /* calloc: zeroed, also when the block is reused */
        unsigned char *c = calloc(1, n);
        CHECK(c != NULL);
        for (size_t j = 0; c && j < n; j++)
            if (c[j]) { CHECK(!"calloc not zeroed"); break; }
        use_fully(c, n, 2);
        free(c);
        for (size_t a = 0; a < sizeof aligns / sizeof aligns[0]; a++) {
            void *m = memalign(aligns[a], n);
            CHECK(m && ((uintptr_t)m & (aligns[a] - 1)) == 0);
            use_fully(m, n, 3);
            free(m);
            void *pm = NULL;
            CHECK(posix_memalign(&pm, aligns[a], n) == 0 && ((uintptr_t)pm & (aligns[a] - 1)) == 0);
            use_fully(pm, n, 4);
            free(pm);
            void *aa = aligned_alloc(aligns[a], n);
            CHECK(aa && ((uintptr_t)aa & (aligns[a] - 1)) == 0);
            use_fully(aa, n, 5);
            free(aa);
        }
        void *v = valloc(n);
        CHECK(v && ((uintptr_t)v & 4095) == 0);
        use_fully(v, n, 6);
        free(v);
        void *pv = pvalloc(n);
        CHECK(pv && ((uintptr_t)pv & 4095) == 0);
        use_fully(pv, n, 7);
        free(pv);
    }
    /* realloc across every pair of sizes: contents kept, new size usable */
    for (size_t i = 0; i < nsizes; i++) {
        for (size_t j = 0; j < nsizes; j++) {
            size_t a = sizes[i] ? sizes[i] : 1, b = sizes[j] ? sizes[j] : 1; /* 0: see zero() */
            unsigned char *p = malloc(a);
            CHECK(p != NULL);
            if (!p) continue;
            for (size_t x = 0; x < a; x++) p[x] = (unsigned char)(x * 7);
            unsigned char *q = realloc(p, b);
            CHECK(q != NULL);
            if (!q) { free(p); continue; }
            size_t keepn = a < b ? a : b;
            for (size_t x = 0; x < keepn; x++)
                if (q[x] != (unsigned char)(x * 7)) { CHECK(!"realloc lost contents"); break; }
            use_fully(q, b, 8);
            free(q);
        }
    }
    /* realloc growing a block step by step (in place where it fits) */
    unsigned char *g = NULL;
    for (size_t n = 1; n < 200000; n += n / 3 + 1) {
        g = realloc(g, n);
        use_fully(g, n, 9);
    }
    g = realloc(g, 0); /* glibc: frees, returns NULL */
    CHECK(g == NULL);
    void *ra = reallocarray(NULL, 10, 100);
    use_fully(ra, 1000, 10);
    ra = reallocarray(ra, 100, 100);
    use_fully(ra, 10000, 11);
    free(ra);
    /* sized frees with the right size */
    free_sized_fn fs = (free_sized_fn)sym("free_sized");
    free_aligned_sized_fn fas = (free_aligned_sized_fn)sym("free_aligned_sized");
    for (size_t i = 0; i < nsizes; i++) {
        size_t n = sizes[i];
        void *p = malloc(n);
        use_fully(p, n, 12);
        fs(p, n);
        void *a = aligned_alloc(64, n);
        use_fully(a, n, 13);
        fas(a, 64, n);
    }
    free(NULL);
    fs(NULL, 0);
    /* the heap checks out, and trim is quiet */
    CHECK(((check_fn)sym("mh_check"))() == 0);
    malloc_trim(0);
    CHECK(((check_fn)sym("mh_check"))() == 0);
    return failures ? 1 : 0;
}

#if defined(__x86_64__)
/* malloc(n) then free of it, called with rbp = bp, as from code built
 * without frame pointers that keeps any value there. (128 bytes skip the
 * red zone; the stack is aligned to 16 bytes for the calls.) */
__attribute__((noinline)) static void alloc_free_rbp(size_t n, uintptr_t bp) {
    __asm__ volatile("sub $128, %%rsp\n\t"
                     "push %%rbp\n\t"
                     "push %%r12\n\t"
                     "mov %%rsp, %%r12\n\t"
                     "and $-16, %%rsp\n\t"
                     "mov %0, %%rdi\n\t"
                     "mov %1, %%rbp\n\t"
                     "call malloc@PLT\n\t"
                     "mov %%rax, %%rdi\n\t"
                     "call free@PLT\n\t"
                     "mov %%r12, %%rsp\n\t"
                     "pop %%r12\n\t"
                     "pop %%rbp\n\t"
                     "add $128, %%rsp"
                     : "+S"(n), "+d"(bp)
                     :
                     : "rax", "rcx", "rdi", "r8", "r9", "r10", "r11", "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3",
                       "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14",
                       "xmm15");
}
#endif

/* The stack walk of debug mode follows rbp: it must stop, not fault, on
 * whatever a program keeps there (-16 once wrapped its bounds check: GNU as
 * crashed under mode=debug). */
static int clean_rbp(void) {
#if defined(__x86_64__)
    const uintptr_t bps[] = {(uintptr_t)-16, (uintptr_t)-8, 0, 0x7, (uintptr_t)1 << 47};
    for (size_t i = 0; i < sizeof bps / sizeof bps[0]; i++)
        for (size_t n = 16; n <= 4096; n *= 4) alloc_free_rbp(n, bps[i]);
#endif
    return 0;
}

static uintptr_t altstack_hole;
static void altstack_handler(int sig) {
    (void)sig;
#if defined(__x86_64__)
    for (size_t n = 16; n <= 4096; n *= 4) alloc_free_rbp(n, altstack_hole);
#endif
}

/* The same on a signal stack, with rbp pointing at an unmapped page between
 * it and the thread's own stack top: the walk must not go past the signal
 * stack (debug mode crashed here). */
static int clean_altstack(void) {
    const size_t pg = 4096;
    uint8_t *r = mmap(NULL, 64 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(r != MAP_FAILED);
    if (r == MAP_FAILED) return 1;
    CHECK(munmap(r + 40 * pg, pg) == 0);
    altstack_hole = (uintptr_t)(r + 40 * pg + 64);
    stack_t ss = {.ss_sp = r, .ss_size = 32 * pg};
    CHECK(sigaltstack(&ss, NULL) == 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = altstack_handler;
    sa.sa_flags = SA_ONSTACK;
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
    for (int i = 0; i < 4; i++) raise(SIGUSR1);
    /* and after the program moves its signal stack (miniheap hears of it) */
    ss.ss_sp = r + 8 * pg;
    CHECK(sigaltstack(&ss, NULL) == 0);
    raise(SIGUSR1);
    return failures ? 1 : 0;
}

/* Threads allocating and freeing, blocks freed by another thread. */
static int clean_threads(void) {
    pthread_t t[3];
    void *handoff[3];
    for (int i = 0; i < 3; i++) CHECK(pthread_create(&t[i], NULL, clean_thread, (void *)(uintptr_t)(i + 1)) == 0);
    for (int i = 0; i < 3; i++) {
        handoff[i] = malloc(777);
        use_fully(handoff[i], 777, 1);
    }
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 3; i++) CHECK(pthread_create(&t[i], NULL, site_thread_free, handoff[i]) == 0);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    CHECK(((check_fn)sym("mh_check"))() == 0);
    return failures ? 1 : 0;
}

/* Blocks of size 0 from every entry point: "usable" writes each up to its
 * malloc_usable_size and frees it; "realloc" grows each to 100 bytes. */
static int zero(const char *how) {
    void *p[6];
    p[0] = malloc(0);
    p[1] = calloc(0, 1);
    p[2] = memalign(16, 0);
    p[3] = aligned_alloc(8, 0);
    p[4] = realloc(NULL, 0);
    p[5] = NULL;
    CHECK(posix_memalign(&p[5], 16, 0) == 0);
    for (int i = 0; i < 6; i++) {
        CHECK(p[i] != NULL);
        if (!p[i]) continue;
        if (!strcmp(how, "usable")) {
            memset(p[i], 0x33, malloc_usable_size(p[i]));
            free(p[i]);
        } else {
            void *q = realloc(p[i], 100);
            use_fully(q, 100, 0x44);
            free(q);
        }
    }
    return failures ? 1 : 0;
}

/* Overflow by 1 of every size up to 1100 B, of the sizes around every
 * multiple of 16 up to 16 KiB and just below large-block page ends, from 4
 * allocation routes, and of 16k - 1 and 16k up to 128 KiB from malloc,
 * with abort_on_error=0 and a handler counting the reports. All caught: the
 * first report is printed and the program aborts (as if it had been the only
 * bug); none caught (fast): exit 0, silent; some caught: the first miss is
 * printed, exit 1. */
static size_t sweep_caught, sweep_total, sweep_bad_size;
static const char *sweep_bad_route;
/* Written by the handler, inside free(), which glibc's headers declare
 * __leaf__ (never calling back into this file): volatile, or the compiler
 * may assume free() leaves them alone. */
static volatile char sweep_first[8192];
static volatile int sweep_pending;
static void sweep_handler(const mh_error_t *e, void *arg) {
    (void)arg;
    if (!sweep_first[0]) {
        size_t n = strlen(e->message);
        if (n >= sizeof sweep_first) n = sizeof sweep_first - 1;
        for (size_t i = 0; i < n; i++) sweep_first[i] = e->message[i];
    }
    if (!strcmp(e->kind, "heap-buffer-overflow")) sweep_pending++;
    else sweep_pending = -1000000; /* another kind: counts as a miss */
}
static void sweep_one(const char *route, size_t n) {
    unsigned char *p = alloc_route(route, n);
    fill(p, n);
    poke(p, (ptrdiff_t)n, 1);
    sweep_pending = 0;
    free(p);
    sweep_total++;
    if (sweep_pending == 1) {
        sweep_caught++;
    } else if (!sweep_bad_route) {
        sweep_bad_route = route;
        sweep_bad_size = n;
    }
}
static int sweep(void) {
    /* (not memalign: in debug mode an aligned block is a large one, and a
     * reported large block stays allocated when the report returns) */
    static const char *const routes[] = {"malloc", "calloc", "realloc_shrink", "realloc_grow"};
    ((int (*)(const char *))sym("mh_set_options"))("abort_on_error=0");
    ((void (*)(mh_error_handler_t, void *))sym("mh_set_error_handler"))(sweep_handler, NULL);
    for (size_t r = 0; r < sizeof routes / sizeof routes[0]; r++) {
        for (size_t n = 1; n <= 1100; n++) sweep_one(routes[r], n);
        for (size_t c = 1104; c <= 16384; c += 16)
            for (size_t n = c - 1; n <= c + 1; n++) sweep_one(routes[r], n);
        /* large blocks ending 1 or 2 bytes before a page boundary (n + 1
         * past it would hit the guard page, in fast mode a bare SIGSEGV) */
        for (size_t c = 33 * 4096; c <= 40 * 4096; c += 4096)
            for (size_t n = c - 2; n <= c - 1; n++) sweep_one(routes[r], n);
    }
    /* Above 16 KiB, malloc only (debug mode poisons and checks whole
     * blocks): 16k - 1 fills a class exactly with the canary byte, in
     * hardened and in debug mode (16 bytes of front canary), 16k does not. */
    for (size_t c = 16400; c <= 128 * 1024; c += 16)
        for (size_t n = c - 1; n <= c; n++) sweep_one("malloc", n);
    if (sweep_caught == 0) return 0;
    if (sweep_caught == sweep_total) {
        char text[sizeof sweep_first];
        for (size_t i = 0; i < sizeof text; i++) text[i] = sweep_first[i];
        text[sizeof text - 1] = 0;
        fputs(text, stderr);
        fflush(stderr);
        abort();
    }
    fprintf(stderr, "bugs: sweep: %zu of %zu overflows by 1 not reported as heap-buffer-overflow, the first"
            " of a %zu-byte block from %s\n", sweep_total - sweep_caught, sweep_total, sweep_bad_size,
            sweep_bad_route);
    return 1;
}

/* ---- main ---------------------------------------------------------------------- */
static size_t num(const char *s) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end || end == s) die("bad number");
    return (size_t)v;
}

int main(int argc, char **argv) {
    const char *c = argc > 1 ? argv[1] : "";
    const char *a2 = argc > 2 ? argv[2] : "", *a3 = argc > 3 ? argv[3] : "0";
    const char *a4 = argc > 4 ? argv[4] : "0", *a5 = argc > 5 ? argv[5] : "";
    if (!strcmp(c, "overflow") && argc >= 5) return overflow(a2, num(a3), num(a4), argc > 5 ? a5 : "free");
    if (!strcmp(c, "underflow") && argc == 3) return underflow(num(a2));
    if (!strcmp(c, "uaf_write") && argc >= 4) return uaf_write(num(a2), num(a3), argc > 4 ? a4 : "reuse");
    if (!strcmp(c, "uaf_read") && argc == 4) return uaf_read(num(a2), num(a3));
    if (!strcmp(c, "uaf_read_evicted") && argc == 2) return uaf_read_evicted();
    if (!strcmp(c, "double_free") && argc == 3) return double_free(a2);
    if (!strcmp(c, "invalid") && argc == 4) return invalid(a2, a3);
    if (!strcmp(c, "free_sized") && argc == 3) return free_sized_case(a2);
    if (!strcmp(c, "sampled") && argc >= 3)
        return sampled(a2, argc > 3 ? num(a3) : 24, argc > 4 ? num(a4) : 1, argc > 5 ? a5 : "free");
    if (!strcmp(c, "leak") && argc == 2) {
        site_leak();
        scrub_stack();
        return 0;
    }
    if (!strcmp(c, "sweep") && argc == 2) return sweep();
    if (!strcmp(c, "clean") && argc == 2) return clean();
    if (!strcmp(c, "zero") && argc == 3) return zero(a2);
    if (!strcmp(c, "zero_access") && argc == 3) return zero_access(a2);
    if (!strcmp(c, "never_freed") && argc == 4) return never_freed(a2, num(a3));
    if (!strcmp(c, "overread") && argc == 4) return overread(num(a2), num(a3));
    if (!strcmp(c, "freed_pointer") && argc == 2) return freed_pointer();
    if (!strcmp(c, "uaf_write_reused") && argc == 3) return uaf_write_reused(num(a2));
    if (!strcmp(c, "clean_threads") && argc == 2) return clean_threads();
    if (!strcmp(c, "clean_rbp") && argc == 2) return clean_rbp();
    if (!strcmp(c, "clean_altstack") && argc == 2) return clean_altstack();
    fprintf(stderr, "bugs: unknown case (see the comment at the top of tests/bugs/bugs.c)\n");
    return 2;
}
