/* Edge cases of every malloc-family entry point.
 *
 * Built twice (see mh_test.h): the prefixed build calls mh_* and links
 * libminiheap_prefixed.a; the plain build (-DUSE_PLAIN) calls malloc, free,
 * ... and runs under LD_PRELOAD=build/libminiheap.so. The semantics asserted
 * are glibc's (the contract in include/miniheap.h). Allocator-specific
 * expectations beyond glibc (pvalloc(0) is one page; mh_stats, mh_trim, ...)
 * are asserted only when the allocator under test is miniheap.
 */
#include "mh_test.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)

static size_t page_size;
static int on_miniheap;

#ifdef USE_PLAIN
/* glibc exports these without declaring them. */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);
extern void __libc_free(void *);

static void t_free_sized(void *p, size_t n)
{
    if (free_sized)
        free_sized(p, n);
    else
        free(p);
}
static void t_free_aligned_sized(void *p, size_t a, size_t n)
{
    if (free_aligned_sized)
        free_aligned_sized(p, a, n);
    else
        free(p);
}
#else
#define t_free_sized mh_free_sized
#define t_free_aligned_sized mh_free_aligned_sized
#endif

static int is_aligned(const void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

static size_t next_pow2(size_t x)
{
    size_t a = 1;
    while (a < x)
        a <<= 1;
    return a;
}

/* Offset-only pattern (survives realloc moving the block). */
static inline uint8_t off_byte(size_t i) { return (uint8_t)(i * 131u + (i >> 9) + 7u); }
static void off_fill(uint8_t *p, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        p[i] = off_byte(i);
}
static size_t off_check(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != off_byte(i))
            return i;
    return (size_t)-1;
}

/* Write the first and last byte of every page up to n bytes (cheap way to
 * prove a big block is mapped writable without touching all of it). */
static void touch(void *p, size_t n)
{
    uint8_t *b = p;
    if (!n)
        return;
    size_t head = n < 4096 ? n : 4096;
    memset(b, 0x5a, head);
    if (n > 4096)
        memset(b + n - 4096, 0x5b, 4096);
    for (size_t i = 4096; i + 4096 < n && i < 4 * MiB; i += page_size)
        b[i] = 0x5c;
    b[n - 1] = 0x5d;
}

static const size_t huge_sizes[] = {
    SIZE_MAX,
    SIZE_MAX - 7,
    SIZE_MAX - 4095,
    (size_t)PTRDIFF_MAX + 1,
    (size_t)PTRDIFF_MAX,
    (size_t)1 << 62,
};
#define N_HUGE (sizeof huge_sizes / sizeof huge_sizes[0])

/* ------------------------------------------------------------------ */

static void test_malloc_zero(void)
{
    enum { N = 200 };
    void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = A_MALLOC(opaque(0));
        CHECK(p[i] != NULL, "malloc(0) #%d returned NULL", i);
    }
    /* Unique: no two live malloc(0) results are equal. */
    int dup = 0;
    for (int i = 0; i < N && !dup; i++)
        for (int j = i + 1; j < N && !dup; j++)
            if (p[i] && p[i] == p[j]) {
                dup = 1;
                CHECK(0, "malloc(0) returned %p twice (#%d and #%d) while both are live", p[i], i, j);
            }
    for (int i = 0; i < N; i++)
        A_FREE(p[i]);
    /* realloc(NULL, 0) is malloc(0). */
    void *q = A_REALLOC(NULL, opaque(0));
    CHECK(q != NULL, "realloc(NULL, 0) returned NULL");
    A_FREE(q);
}

static void test_huge(void)
{
    for (size_t i = 0; i < N_HUGE; i++) {
        size_t n = opaque(huge_sizes[i]);
        void *p;

        errno = 0;
        p = A_MALLOC(n);
        CHECK(p == NULL && errno == ENOMEM, "malloc(%#zx) = %p errno %d, want NULL/ENOMEM", n, p, errno);
        if (p)
            A_FREE(p);

        errno = 0;
        p = A_CALLOC(1, n);
        CHECK(p == NULL && errno == ENOMEM, "calloc(1, %#zx) = %p errno %d, want NULL/ENOMEM", n, p, errno);
        if (p)
            A_FREE(p);

        errno = 0;
        p = A_REALLOC(NULL, n);
        CHECK(p == NULL && errno == ENOMEM, "realloc(NULL, %#zx) = %p errno %d, want NULL/ENOMEM", n, p, errno);
        if (p)
            A_FREE(p);

        void *out = NULL;
        int rc = A_POSIX_MEMALIGN(&out, 64, n);
        CHECK(rc == ENOMEM, "posix_memalign(64, %#zx) = %d, want ENOMEM", n, rc);
        if (rc == 0)
            A_FREE(out);

        errno = 0;
        p = A_ALIGNED_ALLOC(64, n);
        CHECK(p == NULL && errno == ENOMEM, "aligned_alloc(64, %#zx) = %p errno %d, want NULL/ENOMEM", n, p, errno);
        if (p)
            A_FREE(p);

        errno = 0;
        p = A_MEMALIGN(4096, n);
        CHECK(p == NULL && errno == ENOMEM, "memalign(4096, %#zx) = %p errno %d, want NULL/ENOMEM", n, p, errno);
        if (p)
            A_FREE(p);

        errno = 0;
        p = A_VALLOC(n);
        CHECK(p == NULL && errno == ENOMEM, "valloc(%#zx) = %p errno %d, want NULL/ENOMEM", n, p, errno);
        if (p)
            A_FREE(p);

        errno = 0;
        p = A_PVALLOC(n);
        CHECK(p == NULL && errno == ENOMEM, "pvalloc(%#zx) = %p errno %d, want NULL/ENOMEM", n, p, errno);
        if (p)
            A_FREE(p);
    }
    /* The allocator still works after all those failures. */
    void *p = A_MALLOC(100);
    CHECK(p != NULL, "malloc(100) failed after huge requests");
    A_FREE(p);
}

static void check_zero(const void *p, size_t n, const char *what, size_t a, size_t b)
{
    const uint8_t *q = p;
    for (size_t i = 0; i < n; i++)
        if (q[i]) {
            CHECK(0, "%s(%zu, %zu): byte %zu is %#x, not zero", what, a, b, i, q[i]);
            return;
        }
}

static void calloc_reuse_one(size_t n)
{
    /* Dirty a block of the same size (up to its usable size), free it, and
     * calloc the same size: whichever block comes back must be zeroed. */
    for (int rep = 0; rep < 2; rep++) {
        uint8_t *d = A_MALLOC(n);
        CHECK(d != NULL, "malloc(%zu) failed", n);
        if (!d)
            return;
        memset(d, 0xA5, A_USABLE(d));
        A_FREE(d);
        size_t a = rep ? n : 1, b = rep ? 1 : n;
        uint8_t *c = A_CALLOC(a, b);
        CHECK(c != NULL, "calloc(%zu, %zu) failed", a, b);
        if (!c)
            return;
        check_zero(c, n, "calloc", a, b);
        A_FREE(c);
    }
}

static void test_calloc(void)
{
    void *p;
    struct { size_t a, b; } ovf[] = {
        {SIZE_MAX, 2}, {2, SIZE_MAX}, {SIZE_MAX, SIZE_MAX},
        {(size_t)1 << 32, (size_t)1 << 32},      /* product wraps to exactly 0 */
        {SIZE_MAX / 2 + 1, 2},                   /* product wraps to 0 */
        {((size_t)1 << 33) + 1, (size_t)1 << 31}, /* wraps to 2^31 */
    };
    for (size_t i = 0; i < sizeof ovf / sizeof ovf[0]; i++) {
        errno = 0;
        p = A_CALLOC(opaque(ovf[i].a), opaque(ovf[i].b));
        CHECK(p == NULL && errno == ENOMEM, "calloc(%#zx, %#zx) = %p errno %d, want NULL/ENOMEM", ovf[i].a,
              ovf[i].b, p, errno);
        if (p)
            A_FREE(p);
    }
    p = A_CALLOC(0, 0);
    CHECK(p != NULL, "calloc(0, 0) returned NULL");
    A_FREE(p);
    p = A_CALLOC(0, 100);
    CHECK(p != NULL, "calloc(0, 100) returned NULL");
    A_FREE(p);
    p = A_CALLOC(100, 0);
    CHECK(p != NULL, "calloc(100, 0) returned NULL");
    A_FREE(p);

    for (size_t n = 1; n <= 1024; n++)
        calloc_reuse_one(n);
    for (size_t n = 1025; n <= 70000; n += 97)
        calloc_reuse_one(n);
    const size_t big[] = {128 * KiB, 200 * KiB, 256 * KiB + 1, 1 * MiB, 5 * MiB};
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++)
        calloc_reuse_one(big[i]);

    /* Many dirty blocks of one class freed, then calloc'ed back (thread
     * cache and slab reuse). */
    enum { M = 2000 };
    static void *blk[M];
    for (int i = 0; i < M; i++) {
        blk[i] = A_MALLOC(48);
        CHECK(blk[i] != NULL, "malloc(48) failed");
        if (blk[i])
            memset(blk[i], 0xEE, 48);
    }
    for (int i = 0; i < M; i++)
        A_FREE(blk[i]);
    for (int i = 0; i < M; i++) {
        blk[i] = A_CALLOC(6, 8);
        CHECK(blk[i] != NULL, "calloc(6, 8) failed");
        if (blk[i])
            check_zero(blk[i], 48, "calloc", 6, 8);
    }
    for (int i = 0; i < M; i++)
        A_FREE(blk[i]);

    /* Large calloc as count*size split. */
    uint8_t *c = A_CALLOC(200 * KiB / 8, 8);
    CHECK(c != NULL, "calloc(200K/8, 8) failed");
    if (c) {
        check_zero(c, 200 * KiB, "calloc", 200 * KiB / 8, 8);
        A_FREE(c);
    }
}

static void test_realloc(void)
{
    /* realloc(NULL, n) == malloc(n) */
    for (size_t n = 1; n <= 300 * KiB; n = n * 3 + 1) {
        uint8_t *p = A_REALLOC(NULL, n);
        CHECK(p != NULL, "realloc(NULL, %zu) returned NULL", n);
        if (!p)
            continue;
        CHECK(A_USABLE(p) >= n, "realloc(NULL, %zu): usable %zu", n, A_USABLE(p));
        memset(p, 1, n);
        A_FREE(p);
    }

    /* realloc(p, 0) frees p and returns NULL (glibc). */
    for (size_t n = 1; n <= 2 * MiB; n *= 8) {
#ifndef USE_PLAIN
        mh_stats_t s0, s1;
        mh_stats(&s0);
#endif
        void *p = A_MALLOC(n);
        CHECK(p != NULL, "malloc(%zu) failed", n);
        void *q = A_REALLOC(p, opaque(0));
        CHECK(q == NULL, "realloc(p, 0) returned %p, want NULL (glibc semantics: frees p)", q);
        if (q)
            A_FREE(q);
#ifndef USE_PLAIN
        mh_stats(&s1);
        CHECK(s1.live_blocks == s0.live_blocks, "realloc(p[%zu], 0) did not free p: live_blocks %zu -> %zu", n,
              s0.live_blocks, s1.live_blocks);
#endif
    }

    /* Growth one byte at a time through the small range, then by jumps
     * through the large ranges, then back down: contents must survive. */
    static const size_t jumps[] = {4097, 8 * KiB, 16 * KiB, 64 * KiB, 200 * KiB, 1 * MiB, 5 * MiB, 30 * MiB};
    size_t njumps = sizeof jumps / sizeof jumps[0];
    uint8_t *p = NULL;
    size_t cur = 0;
    for (size_t n = 1; n <= 4096; n++) {
        uint8_t *q = A_REALLOC(p, n);
        REQUIRE(q != NULL, "realloc(%p, %zu) returned NULL", (void *)p, n);
        size_t bad = off_check(q, cur);
        CHECK(bad == (size_t)-1, "realloc grow %zu -> %zu lost byte %zu", cur, n, bad);
        off_fill(q, cur, n);
        p = q;
        cur = n;
    }
    for (size_t j = 0; j < njumps; j++) {
        size_t n = jumps[j];
        uint8_t *q = A_REALLOC(p, n);
        REQUIRE(q != NULL, "realloc(%zu -> %zu) returned NULL", cur, n);
        size_t bad = off_check(q, cur);
        CHECK(bad == (size_t)-1, "realloc grow %zu -> %zu lost byte %zu", cur, n, bad);
        CHECK(A_USABLE(q) >= n, "realloc to %zu: usable %zu", n, A_USABLE(q));
        off_fill(q, cur, n);
        p = q;
        cur = n;
    }
    for (size_t j = njumps - 1; j-- > 0;) {
        size_t n = jumps[j];
        uint8_t *q = A_REALLOC(p, n);
        REQUIRE(q != NULL, "realloc shrink %zu -> %zu returned NULL", cur, n);
        size_t bad = off_check(q, n);
        CHECK(bad == (size_t)-1, "realloc shrink %zu -> %zu lost byte %zu", cur, n, bad);
        p = q;
        cur = n;
    }
    for (size_t n = 4096; n >= 1; n -= (n > 600 ? 37 : 1)) {
        uint8_t *q = A_REALLOC(p, n);
        REQUIRE(q != NULL, "realloc shrink %zu -> %zu returned NULL", cur, n);
        size_t bad = off_check(q, n);
        CHECK(bad == (size_t)-1, "realloc shrink %zu -> %zu lost byte %zu", cur, n, bad);
        p = q;
        cur = n;
    }
    A_FREE(p);

    /* Every pair of size ranges, in both directions. */
    static const size_t sz[] = {1, 16, 100, 1000, 4096, 64 * KiB, 200 * KiB, 5 * MiB, 30 * MiB};
    size_t nsz = sizeof sz / sizeof sz[0];
    for (size_t a = 0; a < nsz; a++)
        for (size_t b = 0; b < nsz; b++) {
            uint8_t *x = A_MALLOC(sz[a]);
            REQUIRE(x != NULL, "malloc(%zu) failed", sz[a]);
            off_fill(x, 0, sz[a]);
            uint8_t *y = A_REALLOC(x, sz[b]);
            REQUIRE(y != NULL, "realloc(%zu -> %zu) returned NULL", sz[a], sz[b]);
            size_t keep = sz[a] < sz[b] ? sz[a] : sz[b];
            size_t bad = off_check(y, keep);
            CHECK(bad == (size_t)-1, "realloc %zu -> %zu lost byte %zu", sz[a], sz[b], bad);
            CHECK(A_USABLE(y) >= sz[b], "realloc %zu -> %zu: usable %zu", sz[a], sz[b], A_USABLE(y));
            memset(y, 0x11, sz[b]);
            A_FREE(y);
        }

    /* Growing within the usable size keeps the contents too. */
    p = A_MALLOC(20);
    REQUIRE(p != NULL, "malloc(20) failed");
    size_t u = A_USABLE(p);
    off_fill(p, 0, u);
    uint8_t *q = A_REALLOC(p, u);
    REQUIRE(q != NULL, "realloc to usable size failed");
    CHECK(off_check(q, u) == (size_t)-1, "realloc(p, usable=%zu) lost contents", u);
    A_FREE(q);

    /* A large block grown a little at a time (a string realloc'ed at every
     * append) keeps its contents, and on miniheap seldom moves: a block
     * that moves to grow is given room to grow in place. Moving at every
     * page (which it did) made 64 MiB of 100-byte appends take 9.4 s
     * against glibc's 0.25 s, each move taking the whole block's pages. */
    {
        size_t n = 200 * KiB, moves = 0;
        uint8_t *g = A_MALLOC(n);
        REQUIRE(g != NULL, "malloc(%zu) failed", n);
        off_fill(g, 0, n);
        while (n < 16 * MiB) {
            uint8_t *h = A_REALLOC(g, n + 1000);
            REQUIRE(h != NULL, "realloc grow %zu -> %zu returned NULL", n, n + 1000);
            moves += h != g;
            off_fill(h, n, n + 1000);
            g = h;
            n += 1000;
        }
        size_t bad = off_check(g, n);
        CHECK(bad == (size_t)-1, "small-step growth to %zu lost byte %zu", n, bad);
        if (on_miniheap)
            CHECK(moves <= 32, "growing 200 KiB -> 16 MiB by 1000 bytes moved the block %zu times", moves);
        A_FREE(g);
    }

    /* A block whose mapping the program split (madvise of part of it: the
     * kernel's mremap takes one mapping) still grows. (MADV_DONTDUMP: the
     * page is left out of core dumps, harmless wherever it is reused.) */
    {
        size_t n = 1 * MiB;
        uint8_t *g = A_MALLOC(n);
        REQUIRE(g != NULL, "malloc(%zu) failed", n);
        off_fill(g, 0, n);
        uintptr_t mid = ((uintptr_t)g + n / 2) & ~(uintptr_t)(page_size - 1);
        CHECK(madvise((void *)mid, page_size, MADV_DONTDUMP) == 0, "madvise(MADV_DONTDUMP): %s", strerror(errno));
        uint8_t *h = A_REALLOC(g, 8 * MiB);
        CHECK(h != NULL, "realloc(1 MiB -> 8 MiB) of a block split by madvise returned NULL (errno %d)", errno);
        if (h) {
            size_t bad = off_check(h, n);
            CHECK(bad == (size_t)-1, "realloc of a split block lost byte %zu", bad);
            A_FREE(h);
        } else {
            A_FREE(g);
        }
    }

    /* realloc to a huge size fails with ENOMEM and leaves the block intact. */
    static const size_t olds[] = {100, 5000, 300 * KiB};
    for (size_t o = 0; o < sizeof olds / sizeof olds[0]; o++) {
        size_t n = olds[o];
        p = A_MALLOC(n);
        REQUIRE(p != NULL, "malloc(%zu) failed", n);
        off_fill(p, 0, n);
        for (size_t i = 0; i < N_HUGE; i++) {
            errno = 0;
            q = A_REALLOC(p, opaque(huge_sizes[i]));
            CHECK(q == NULL && errno == ENOMEM, "realloc(p[%zu], %#zx) = %p errno %d, want NULL/ENOMEM", n,
                  huge_sizes[i], (void *)q, errno);
            if (q) {
                p = q;
                continue;
            }
            size_t bad = off_check(p, n);
            CHECK(bad == (size_t)-1, "failed realloc(p[%zu], %#zx) damaged byte %zu", n, huge_sizes[i], bad);
        }
        A_FREE(p);
    }
}

static void test_reallocarray(void)
{
    uint8_t *p = A_REALLOCARRAY(NULL, 10, 10);
    REQUIRE(p != NULL, "reallocarray(NULL, 10, 10) returned NULL");
    CHECK(A_USABLE(p) >= 100, "reallocarray(NULL, 10, 10): usable %zu", A_USABLE(p));
    off_fill(p, 0, 100);
    uint8_t *q = A_REALLOCARRAY(p, 100, 100);
    REQUIRE(q != NULL, "reallocarray(p, 100, 100) returned NULL");
    CHECK(off_check(q, 100) == (size_t)-1, "reallocarray grow lost contents");
    off_fill(q, 100, 10000);
    p = q;

    struct { size_t a, b; } ovf[] = {
        {SIZE_MAX, 2}, {2, SIZE_MAX}, {(size_t)1 << 32, (size_t)1 << 32}, {SIZE_MAX / 2 + 1, 2},
        {(size_t)1 << 40, (size_t)1 << 30},
    };
    for (size_t i = 0; i < sizeof ovf / sizeof ovf[0]; i++) {
        errno = 0;
        q = A_REALLOCARRAY(p, opaque(ovf[i].a), opaque(ovf[i].b));
        CHECK(q == NULL && errno == ENOMEM, "reallocarray(p, %#zx, %#zx) = %p errno %d, want NULL/ENOMEM",
              ovf[i].a, ovf[i].b, (void *)q, errno);
        if (q) {
            p = q;
            continue;
        }
        CHECK(off_check(p, 10000) == (size_t)-1, "failed reallocarray damaged the block");
        errno = 0;
        q = A_REALLOCARRAY(NULL, opaque(ovf[i].a), opaque(ovf[i].b));
        CHECK(q == NULL && errno == ENOMEM, "reallocarray(NULL, %#zx, %#zx) = %p errno %d, want NULL/ENOMEM",
              ovf[i].a, ovf[i].b, (void *)q, errno);
        if (q)
            A_FREE(q);
    }
    q = A_REALLOCARRAY(p, 50, 2);
    REQUIRE(q != NULL, "reallocarray shrink returned NULL");
    CHECK(off_check(q, 100) == (size_t)-1, "reallocarray shrink lost contents");
    A_FREE(q);
}

static void check_aligned_block(const char *what, void *p, size_t align, size_t size)
{
    CHECK(p != NULL, "%s(align %zu, size %zu) returned NULL", what, align, size);
    if (!p)
        return;
    CHECK(is_aligned(p, align), "%s(align %zu, size %zu) = %p is misaligned", what, align, size, p);
    size_t u = A_USABLE(p);
    CHECK(u >= size, "%s(align %zu, size %zu): usable size %zu", what, align, size, u);
    touch(p, u >= size ? u : size);
}

static void test_posix_memalign(void)
{
    static const size_t bad[] = {0, 1, 2, 3, sizeof(void *) / 2, 12, 24, 48, 3 * sizeof(void *), 4097,
                                 (size_t)1 << 20 | 8, SIZE_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        void *out = (void *)0x1;
        int rc = A_POSIX_MEMALIGN(&out, opaque(bad[i]), 64);
        CHECK(rc == EINVAL, "posix_memalign(align %zu) = %d, want EINVAL", bad[i], rc);
        if (rc == 0)
            A_FREE(out);
    }
    for (size_t a = sizeof(void *); a <= 64 * MiB; a <<= 1) {
        const size_t sizes[] = {0, 1, 17, a - 1, a, a + 1};
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            void *out = NULL;
            int rc = A_POSIX_MEMALIGN(&out, a, sizes[k]);
            CHECK(rc == 0, "posix_memalign(align %zu, size %zu) = %d", a, sizes[k], rc);
            if (rc)
                continue;
            check_aligned_block("posix_memalign", out, a, sizes[k]);
            A_FREE(out);
        }
    }
    /* Several big-alignment blocks live at once do not overlap. */
    enum { K = 16 };
    void *blk[K];
    for (int i = 0; i < K; i++) {
        int rc = A_POSIX_MEMALIGN(&blk[i], (size_t)1 << (12 + i % 8), 3000 + (size_t)i * 1000);
        CHECK(rc == 0, "posix_memalign #%d failed: %d", i, rc);
        if (rc)
            blk[i] = NULL;
        else
            pat_fill(blk[i], 3000 + (size_t)i * 1000);
    }
    for (int i = 0; i < K; i++)
        if (blk[i]) {
            CHECK(pat_check(blk[i], 3000 + (size_t)i * 1000) == (size_t)-1, "aligned block %d overwritten", i);
            A_FREE(blk[i]);
        }
}

static void test_aligned_alloc_memalign(void)
{
    for (size_t a = 1; a <= 16 * MiB; a <<= 1) {
        const size_t sizes[] = {0, 1, 17, a, 3 * a};
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            if (sizes[k] > 48 * MiB)
                continue;
            void *p = A_ALIGNED_ALLOC(a, sizes[k]);
            check_aligned_block("aligned_alloc", p, a, sizes[k]);
            A_FREE(p);
            p = A_MEMALIGN(a, sizes[k]);
            check_aligned_block("memalign", p, a, sizes[k]);
            A_FREE(p);
        }
    }
    /* memalign with an alignment that is not a power of two: glibc rounds it
     * up to the next power of two. We assert exactly that: non-NULL and
     * aligned to next_pow2(alignment). */
    static const size_t odd[] = {3, 5, 24, 48, 100, 1000, 4097, 100000, 3 * MiB};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        void *p = A_MEMALIGN(opaque(odd[i]), 100);
        check_aligned_block("memalign(non-power-of-two)", p, next_pow2(odd[i]), 100);
        A_FREE(p);
        /* aligned_alloc with such an alignment: either rejected (NULL,
         * EINVAL: C DR 460, glibc >= 2.38) or treated like memalign. */
        errno = 0;
        p = A_ALIGNED_ALLOC(opaque(odd[i]), 100);
        if (p) {
            check_aligned_block("aligned_alloc(non-power-of-two)", p, next_pow2(odd[i]), 100);
            A_FREE(p);
        } else {
            CHECK(errno == EINVAL, "aligned_alloc(%zu, 100) = NULL with errno %d, want EINVAL", odd[i], errno);
        }
    }
    /* memalign(0, n) behaves like malloc. */
    void *p = A_MEMALIGN(opaque(0), 100);
    check_aligned_block("memalign", p, 1, 100);
    A_FREE(p);

    /* valloc: page aligned. */
    const size_t vs[] = {0, 1, page_size - 1, page_size, page_size + 1, 100000, 1 * MiB, 3 * MiB + 5};
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) {
        p = A_VALLOC(vs[i]);
        check_aligned_block("valloc", p, page_size, vs[i]);
        A_FREE(p);
    }
    /* pvalloc: page aligned, usable size covers the size rounded up to a page. */
    const size_t ps[] = {1, page_size - 1, page_size, page_size + 1, 100000, 1 * MiB + 1};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
        size_t rounded = (ps[i] + page_size - 1) / page_size * page_size;
        p = A_PVALLOC(ps[i]);
        check_aligned_block("pvalloc", p, page_size, rounded);
        A_FREE(p);
    }
    p = A_PVALLOC(opaque(0));
    CHECK(p != NULL && is_aligned(p, page_size), "pvalloc(0) = %p, want a page-aligned block", p);
    if (p) {
        size_t u = A_USABLE(p);
        if (on_miniheap) {
            CHECK(u >= page_size, "pvalloc(0): usable size %zu, want one page (%zu)", u, page_size);
            if (u >= page_size)
                touch(p, page_size);
        } else {
            printf("note: system allocator: pvalloc(0) usable size %zu (glibc returns a minimum chunk, "
                   "miniheap must return one page)\n",
                   u);
        }
        A_FREE(p);
    }
}

static void test_usable_size(void)
{
    CHECK(A_USABLE(NULL) == 0, "malloc_usable_size(NULL) = %zu", A_USABLE(NULL));
    size_t n = 0;
    while (n <= 70000) {
        uint8_t *p = A_MALLOC(n);
        CHECK(p != NULL, "malloc(%zu) failed", n);
        if (p) {
            size_t u = A_USABLE(p);
            CHECK(u >= n, "malloc_usable_size(malloc(%zu)) = %zu", n, u);
            /* The whole usable size is ours to write. */
            memset(p, 0xC3, u);
            A_FREE(p);
        }
        n += n < 1100 ? 1 : (n < 9000 ? 7 : 61);
    }
    /* Several blocks written to their full usable size do not clobber each
     * other. */
    enum { K = 64 };
    uint8_t *blk[K];
    size_t us[K];
    for (int i = 0; i < K; i++) {
        blk[i] = A_MALLOC((size_t)(i * 37 % 300) + (size_t)i);
        REQUIRE(blk[i] != NULL, "malloc failed");
        us[i] = A_USABLE(blk[i]);
        memset(blk[i], i + 1, us[i]);
    }
    for (int i = 0; i < K; i++) {
        for (size_t j = 0; j < us[i]; j++)
            if (blk[i][j] != (uint8_t)(i + 1)) {
                CHECK(0, "block %d byte %zu of usable %zu overwritten by a neighbour", i, j, us[i]);
                break;
            }
        A_FREE(blk[i]);
    }
}

static void test_free_variants(void)
{
    A_FREE(NULL);
    t_free_sized(NULL, 0);
    t_free_sized(NULL, 100);
    t_free_aligned_sized(NULL, 64, 0);
#ifdef USE_PLAIN
    if (on_miniheap) {
        CHECK(free_sized != NULL, "libminiheap.so does not export free_sized");
        CHECK(free_aligned_sized != NULL, "libminiheap.so does not export free_aligned_sized");
    } else if (!free_sized || !free_aligned_sized) {
        printf("note: system allocator lacks free_sized/free_aligned_sized; using free()\n");
    }
#endif
    static const size_t sizes[] = {0, 1, 8, 15, 16, 100, 1000, 4096, 5000, 32 * KiB, 200 * KiB, 1 * MiB};
#ifndef USE_PLAIN
    mh_stats_t s0, s1;
    mh_stats(&s0);
#endif
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        for (int rep = 0; rep < 50; rep++) {
            void *p = A_MALLOC(sizes[i]);
            CHECK(p != NULL, "malloc(%zu) failed", sizes[i]);
            if (p)
                memset(p, 7, sizes[i]);
            t_free_sized(p, sizes[i]);
        }
        void *c = A_CALLOC(sizes[i], 1);
        CHECK(c != NULL, "calloc failed");
        t_free_sized(c, sizes[i]);
    }
    static const size_t aligns[] = {1, 16, 64, 4096, 65536, 2 * MiB};
    for (size_t i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
        for (size_t m = 0; m < 4; m++) {
            size_t n = aligns[i] * m + (m == 3 ? aligns[i] * 5 : 0);
            void *p = A_ALIGNED_ALLOC(aligns[i], n);
            check_aligned_block("aligned_alloc", p, aligns[i], n);
            t_free_aligned_sized(p, aligns[i], n);
        }
    }
#ifndef USE_PLAIN
    mh_stats(&s1);
    CHECK(s1.live_blocks == s0.live_blocks, "free_sized/free_aligned_sized leaked: live_blocks %zu -> %zu",
          s0.live_blocks, s1.live_blocks);
#endif
}

/* Run fn with stderr redirected to a temporary file; return bytes written. */
static long capture_stderr(void (*fn)(void))
{
    char path[] = "/tmp/mh_test_stderr_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    unlink(path);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    fn();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t len = lseek(fd, 0, SEEK_END);
    close(fd);
    return (long)len;
}

#ifdef USE_PLAIN
static void call_malloc_stats(void) { malloc_stats(); }

static void test_glibc_extras(void)
{
    /* mallinfo2: uordblks ("total allocated space") grows by at least the
     * 10 MiB allocated (1 KiB blocks, so it is heap and not mmapped chunks on
     * glibc), and falls again when they are freed. */
    enum { NB = 10240 };
    static void *blk[NB];
    struct mallinfo2 m0 = mallinfo2();
    for (int i = 0; i < NB; i++) {
        blk[i] = malloc(1024);
        REQUIRE(blk[i] != NULL, "malloc(1024) failed");
        memset(blk[i], 3, 1024);
    }
    struct mallinfo2 m1 = mallinfo2();
    CHECK(m1.uordblks >= m0.uordblks + 10 * MiB, "mallinfo2: uordblks %zu -> %zu after allocating 10 MiB",
          m0.uordblks, m1.uordblks);
    for (int i = 0; i < NB; i++)
        free(blk[i]);
    struct mallinfo2 m2 = mallinfo2();
    CHECK(m2.uordblks + 5 * MiB <= m1.uordblks, "mallinfo2: uordblks %zu -> %zu after freeing 10 MiB",
          m1.uordblks, m2.uordblks);
    printf("mallinfo2 uordblks: before %zu, 10 MiB live %zu, freed %zu\n", m0.uordblks, m1.uordblks,
           m2.uordblks);

    long n = capture_stderr(call_malloc_stats);
    CHECK(n > 0, "malloc_stats() wrote %ld bytes to stderr", n);

    int r = malloc_trim(0);
    CHECK(r == 0 || r == 1, "malloc_trim(0) = %d", r);
    r = malloc_trim(1 * MiB);
    CHECK(r == 0 || r == 1, "malloc_trim(1 MiB) = %d", r);

    /* glibc's own names of its allocator (__libc_malloc, ...), which some
     * programs and interposers call: they must reach the allocator that
     * free() is, or a block crosses allocators (an invalid free). */
    {
        void *a = __libc_malloc(100);
        REQUIRE(a != NULL, "__libc_malloc(100) failed");
        memset(a, 1, 100);
        free(a);
        unsigned char *c = __libc_calloc(10, 10);
        REQUIRE(c != NULL, "__libc_calloc(10, 10) failed");
        int zero = 1;
        for (int i = 0; i < 100; i++) zero &= c[i] == 0;
        CHECK(zero, "__libc_calloc: block not zeroed");
        memset(c, 7, 100);
        c = __libc_realloc(c, 5000);
        REQUIRE(c != NULL, "__libc_realloc(5000) failed");
        CHECK(c[0] == 7 && c[99] == 7, "__libc_realloc lost the contents");
        __libc_free(c);
        void *m = __libc_memalign(256, 300);
        REQUIRE(m != NULL, "__libc_memalign(256, 300) failed");
        CHECK(is_aligned(m, 256), "__libc_memalign(256): %p", m);
        free(m);
        void *v = __libc_valloc(10);
        CHECK(v != NULL && is_aligned(v, page_size), "__libc_valloc(10) = %p", v);
        free(v);
        void *pv = __libc_pvalloc(10);
        CHECK(pv != NULL && is_aligned(pv, page_size), "__libc_pvalloc(10) = %p", pv);
        free(pv);
        void *b = malloc(64);
        REQUIRE(b != NULL, "malloc(64) failed");
        __libc_free(b);
        __libc_free(NULL);
    }

    /* The same allocator answers mh_check when it is miniheap. */
    mh_check_fn chk = mh_find_check();
    if (on_miniheap) {
        CHECK(chk != NULL, "libminiheap.so does not export mh_check");
        if (chk)
            CHECK(chk() == 0, "mh_check() failed after the plain workload");
    }
}
#else /* prefixed build: miniheap's own API */

static void test_stats(void)
{
    mh_stats_t s0, s1, s2;
    enum { N = 1000 };
    static void *blk[N];
    rng_t r;
    rng_seed(&r, 42);
    mh_stats(&s0);
    CHECK(s0.small_blocks + s0.large_blocks == s0.live_blocks, "small %zu + large %zu != live %zu",
          s0.small_blocks, s0.large_blocks, s0.live_blocks);
    size_t usable = 0;
    for (int i = 0; i < N; i++) {
        size_t n = i % 100 == 0 ? 1 * MiB + (size_t)i : rng_range(&r, 1, 4096);
        blk[i] = mh_malloc(n);
        REQUIRE(blk[i] != NULL, "mh_malloc(%zu) failed", n);
        usable += mh_malloc_usable_size(blk[i]);
    }
    mh_stats(&s1);
    CHECK(s1.live_blocks == s0.live_blocks + N, "live_blocks %zu -> %zu after %d allocations", s0.live_blocks,
          s1.live_blocks, N);
    CHECK(s1.live_bytes == s0.live_bytes + usable,
          "live_bytes %zu -> %zu after allocating blocks of total usable size %zu", s0.live_bytes, s1.live_bytes,
          usable);
    CHECK(s1.small_blocks + s1.large_blocks == s1.live_blocks, "small %zu + large %zu != live %zu",
          s1.small_blocks, s1.large_blocks, s1.live_blocks);
    CHECK(s1.mapped_bytes >= s1.live_bytes, "mapped_bytes %zu < live_bytes %zu", s1.mapped_bytes, s1.live_bytes);
    CHECK(s1.resident_bytes <= s1.mapped_bytes, "resident_bytes %zu > mapped_bytes %zu", s1.resident_bytes,
          s1.mapped_bytes);
    CHECK(s1.total_allocs >= s0.total_allocs + N,
          "total_allocs %llu -> %llu after %d allocations (%d of them 1 MiB) in this thread",
          (unsigned long long)s0.total_allocs, (unsigned long long)s1.total_allocs, N, N / 100);
    CHECK(mh_check() == 0, "mh_check() failed with 1000 live blocks");
    for (int i = 0; i < N; i++)
        mh_free(blk[i]);
    mh_stats(&s2);
    CHECK(s2.live_blocks == s0.live_blocks, "live_blocks %zu -> %zu -> %zu: not back to baseline", s0.live_blocks,
          s1.live_blocks, s2.live_blocks);
    CHECK(s2.live_bytes == s0.live_bytes, "live_bytes %zu -> %zu -> %zu: not back to baseline", s0.live_bytes,
          s1.live_bytes, s2.live_bytes);
    CHECK(s2.total_frees >= s0.total_frees + N, "total_frees %llu -> %llu after %d frees (%d of them 1 MiB)",
          (unsigned long long)s0.total_frees, (unsigned long long)s2.total_frees, N, N / 100);
    CHECK(mh_check() == 0, "mh_check() failed after freeing");

    /* Every other entry point is counted too. */
    mh_stats(&s0);
    void *a = mh_calloc(10, 10), *b = mh_memalign(4096, 10), *c = mh_aligned_alloc(64, 128);
    void *d = mh_valloc(10), *e = mh_pvalloc(10), *f = mh_realloc(NULL, 10), *g = NULL;
    CHECK(mh_posix_memalign(&g, 256, 10) == 0, "mh_posix_memalign failed");
    mh_stats(&s1);
    CHECK(s1.live_blocks == s0.live_blocks + 7, "7 allocations through the other entry points: live_blocks %zu -> %zu",
          s0.live_blocks, s1.live_blocks);
    mh_free(a), mh_free(b), mh_free(c), mh_free(d), mh_free(e), mh_free(f), mh_free(g);
    mh_stats(&s2);
    CHECK(s2.live_blocks == s0.live_blocks, "live_blocks not back to baseline (%zu -> %zu)", s0.live_blocks,
          s2.live_blocks);
}

static void test_trim(void)
{
    /* A 64 MiB spike of small blocks, touched, then freed: mh_trim must give
     * most of it back (resident_bytes falls, purged/unmapped rise), and the
     * process's real footprint (Rss) must fall accordingly. */
    const size_t spike = 64 * MiB;
    size_t cap = spike / 256 + 16;
    void **blk = malloc(cap * sizeof *blk); /* system malloc: not part of the heap under test */
    REQUIRE(blk != NULL, "bookkeeping malloc failed");
    memset(blk, 0, cap * sizeof *blk);
    rng_t r;
    rng_seed(&r, 7);
    mh_stats_t s0, speak, sfreed, strim;
    /* No purge thread: what mh_trim gives back must be the trim's doing. */
    CHECK(mh_set_options("background=0") == 0, "background=0 refused");
    mh_trim(0); /* start from a trimmed heap: the spike cannot reuse resident caches */
    mh_stats(&s0);
    size_t total = 0, nb = 0;
    while (total < spike && nb < cap) {
        size_t n = rng_range(&r, 256, 4096);
        blk[nb] = mh_malloc(n);
        REQUIRE(blk[nb] != NULL, "mh_malloc(%zu) failed", n);
        memset(blk[nb], 0x77, n);
        total += n;
        nb++;
    }
    mh_stats(&speak);
    long long rss_peak = mh_read_rollup("Rss");
    for (size_t i = 0; i < nb; i++)
        mh_free(blk[i]);
    mh_stats(&sfreed);
    int rc = mh_trim(0);
    mh_stats(&strim);
    long long rss_trim = mh_read_rollup("Rss");
    free(blk);
    printf("mh_trim: resident_bytes baseline %.1f MiB, peak %.1f MiB, freed %.1f MiB, trimmed %.1f MiB (rc %d); "
           "Rss peak %.1f MiB, after trim %.1f MiB\n",
           s0.resident_bytes / 1048576.0, speak.resident_bytes / 1048576.0, sfreed.resident_bytes / 1048576.0,
           strim.resident_bytes / 1048576.0, rc, rss_peak / 1048576.0, rss_trim / 1048576.0);
    CHECK(rc == 0 || rc == 1, "mh_trim(0) = %d", rc);
    CHECK(speak.resident_bytes >= s0.resident_bytes + spike - spike / 8,
          "resident_bytes did not account for the spike: %zu -> %zu", s0.resident_bytes, speak.resident_bytes);
    CHECK(strim.resident_bytes < speak.resident_bytes, "mh_trim: resident_bytes did not fall (%zu -> %zu)",
          speak.resident_bytes, strim.resident_bytes);
    CHECK(strim.resident_bytes + spike / 2 <= speak.resident_bytes,
          "mh_trim: less than half of a freed 64 MiB spike released (resident %zu -> %zu)", speak.resident_bytes,
          strim.resident_bytes);
    CHECK(strim.resident_bytes <= sfreed.resident_bytes, "mh_trim: resident_bytes rose (%zu -> %zu)",
          sfreed.resident_bytes, strim.resident_bytes);
    if (strim.resident_bytes < sfreed.resident_bytes)
        CHECK(rc == 1, "mh_trim released %zu bytes but returned %d", sfreed.resident_bytes - strim.resident_bytes,
              rc);
    uint64_t given0 = s0.purged_bytes + s0.unmapped_bytes, given1 = strim.purged_bytes + strim.unmapped_bytes;
    CHECK(given1 >= given0 + spike / 2, "purged+unmapped bytes rose by only %llu after trimming a 64 MiB spike",
          (unsigned long long)(given1 - given0));
    if (rss_peak > 0 && rss_trim > 0)
        CHECK(rss_trim + (long long)(spike / 2) <= rss_peak,
              "process Rss fell only from %lld to %lld after mh_trim", rss_peak, rss_trim);
    CHECK(strim.live_blocks == s0.live_blocks, "live_blocks %zu -> %zu after the spike", s0.live_blocks,
          strim.live_blocks);
    CHECK(mh_check() == 0, "mh_check() failed after mh_trim");
    CHECK(mh_set_options("background=1") == 0, "background=1 refused");
    void *p = mh_malloc(1000);
    CHECK(p != NULL, "mh_malloc after mh_trim failed");
    if (p)
        memset(p, 1, 1000);
    mh_free(p);
}

static void call_print_stats(void) { mh_print_stats(); }

/* Error reporting, in a child process (a failing allocator may abort). */
struct err_log {
    int count;
    char kind[8][32];
    const void *addr[8];
    int has_message;
};
static void record_error(const mh_error_t *e, void *arg)
{
    struct err_log *log = arg;
    if (log->count < 8) {
        snprintf(log->kind[log->count], sizeof log->kind[0], "%s", e->kind ? e->kind : "(null)");
        log->addr[log->count] = e->address;
    }
    log->has_message += e->message && e->message[0];
    log->count++;
}

static void error_child(void)
{
    static struct err_log log;
    long failures_before = mh_test_failed(); /* inherited from the parent */
    alarm(30);
    mh_reset();
    CHECK(mh_set_options("abort_on_error=0") == 0, "mh_set_options(\"abort_on_error=0\") rejected");
    mh_set_error_handler(record_error, &log);
    CHECK(mh_set_options("no_such_option_xyz=1") == -1, "mh_set_options accepted an unknown option");
    memset(&log, 0, sizeof log);

    /* A live neighbour keeps the slab (and its metadata) in place. */
    void *keep = mh_malloc(64);
    REQUIRE(keep != NULL, "mh_malloc failed");
    memset(keep, 0x42, 64);

    static char foreign[256] __attribute__((aligned(64)));
    mh_free(foreign + 64);
    CHECK(log.count == 1 && strcmp(log.kind[0], "invalid-free") == 0 && log.addr[0] == foreign + 64,
          "free of a static-storage pointer: %d reports, first kind \"%s\" address %p (want 1 \"invalid-free\" at %p)",
          log.count, log.count ? log.kind[0] : "", log.count ? log.addr[0] : NULL, (void *)(foreign + 64));

    memset(&log, 0, sizeof log);
    void *p = mh_malloc(64);
    REQUIRE(p != NULL, "mh_malloc failed");
    mh_free(p);
    mh_free(opaque_ptr(p));
    CHECK(log.count == 1 && strcmp(log.kind[0], "double-free") == 0 && log.addr[0] == p,
          "double free of a 64-byte block: %d reports, first kind \"%s\" (want 1 \"double-free\")", log.count,
          log.count ? log.kind[0] : "");

    memset(&log, 0, sizeof log);
    p = mh_malloc(64);
    REQUIRE(p != NULL, "mh_malloc failed");
    mh_free((char *)p + 16);
    CHECK(log.count == 1 && strcmp(log.kind[0], "invalid-free") == 0,
          "free of an interior pointer: %d reports, first kind \"%s\" (want 1 \"invalid-free\")", log.count,
          log.count ? log.kind[0] : "");
    mh_free(p);
    CHECK(log.count == 1, "freeing the block after the bad interior free reported an error");

    memset(&log, 0, sizeof log);
    p = mh_malloc(1 * MiB);
    REQUIRE(p != NULL, "mh_malloc failed");
    mh_free(p);
    mh_free(opaque_ptr(p));
    CHECK(log.count == 1 && (strcmp(log.kind[0], "double-free") == 0 || strcmp(log.kind[0], "invalid-free") == 0),
          "double free of a 1 MiB block: %d reports, first kind \"%s\" (want double-free or invalid-free)",
          log.count, log.count ? log.kind[0] : "");
    CHECK(log.has_message == log.count, "an error report had no message");

    /* Layout options cannot change while blocks exist (issue #10: debug ->
     * hardened with blocks live made malloc(40) hand out blocks 48 bytes
     * apart with 32 usable, and write canaries past them). Each is refused
     * with a warning and the heap goes on as it was; the other options
     * still apply, and a layout key may be given its current value. */
    static const char *const layout_changes[] = {
        "mode=debug", "mode=fast", "canary=0", "underflow=1", "poison=2", "mismatch=0", "stacks=1",
        "tcache=0", "quarantine_mb=4", "sample_rate=1",
    };
    memset(&log, 0, sizeof log);
    for (size_t i = 0; i < sizeof layout_changes / sizeof layout_changes[0]; i++)
        CHECK(mh_set_options(layout_changes[i]) == -1, "\"%s\" accepted while blocks are live", layout_changes[i]);
    CHECK(mh_set_options("mode=hardened:canary=1:decay_ms=400:fill_new=1") == 0,
          "current layout values or a non-layout option refused while blocks are live");
    CHECK(mh_set_options("decay_ms=500:fill_new=0") == 0, "non-layout options refused while blocks are live");
    CHECK(log.count == 0, "refusing an option reported an error");
    for (int round = 0; round < 2; round++) {
        p = mh_malloc(40);
        REQUIRE(p != NULL, "mh_malloc failed");
        CHECK(mh_malloc_usable_size(p) == 40, "usable size %zu of a 40-byte block after refused changes",
              mh_malloc_usable_size(p));
        volatile char *c = p;
        char saved = c[40];
        c[40] = (char)(saved + 1); /* into the canary */
        mh_free(p);
        CHECK(log.count == 1 && strcmp(log.kind[0], "heap-buffer-overflow") == 0,
              "overflow by 1 after refused layout changes: %d reports, first \"%s\"", log.count,
              log.count ? log.kind[0] : "");
        memset(&log, 0, sizeof log); /* a small block is freed all the same: its neighbours are intact */
    }

    /* Info words (the size a canary follows, how a block was allocated,
     * whether it is live) are 16 bits in slabs of blocks under 8 KiB and 32
     * above: every size up to past that line reads back exactly, an
     * overflow by one is found at the size, and a second free is a
     * double-free, on both sides of it. */
    for (size_t n = 0; n <= 8400; n++) {
        p = mh_malloc(n);
        REQUIRE(p != NULL, "mh_malloc(%zu) failed", n);
        if (mh_malloc_usable_size(p) != n) {
            CHECK(0, "hardened: usable size %zu of a %zu-byte block", mh_malloc_usable_size(p), n);
            break;
        }
        mh_free(p);
    }
    static const size_t edge[] = {1, 4000, 8000, 8180, 8191, 8192, 8193, 8400};
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) {
        memset(&log, 0, sizeof log);
        p = mh_malloc(edge[i]);
        REQUIRE(p != NULL, "mh_malloc failed");
        volatile char *c = p;
        c[edge[i]] = (char)(c[edge[i]] + 1);
        mh_free(p);
        CHECK(log.count == 1 && strcmp(log.kind[0], "heap-buffer-overflow") == 0,
              "overflow by 1 of a %zu-byte block: %d reports, first \"%s\"", edge[i], log.count,
              log.count ? log.kind[0] : "");
        memset(&log, 0, sizeof log);
        p = mh_malloc(edge[i]);
        REQUIRE(p != NULL, "mh_malloc failed");
        mh_free(p);
        mh_free(opaque_ptr(p));
        CHECK(log.count == 1 && strcmp(log.kind[0], "double-free") == 0,
              "double free of a %zu-byte block: %d reports, first \"%s\"", edge[i], log.count,
              log.count ? log.kind[0] : "");
    }
    memset(&log, 0, sizeof log);

    /* The tail canary is one 8-byte window that ends where the canary does,
     * written before the block's bytes: for every size, a change to any
     * canary byte is reported at that byte, the block's own bytes (those
     * the window covers included) may be written freely, and calloc's
     * zeros cover them. Sizes up to 112, whose slots (16-byte classes up
     * to 128, one byte of canary at least) are known: the canary is the
     * slack, up to 8 bytes, every length and alignment. */
    for (size_t n = 1; n <= 112; n++) {
        unsigned char *z = mh_calloc(1, n);
        REQUIRE(z != NULL, "mh_calloc(1, %zu) failed", n);
        for (size_t i = 0; i < n; i++)
            if (z[i]) {
                CHECK(0, "hardened: byte %zu of calloc(1, %zu) is %#x", i, n, z[i]);
                break;
            }
        memset(z, 0xff, n);
        mh_free(z);
        CHECK(log.count == 0, "hardened: a %zu-byte block written whole was reported (%s)", n,
              log.count ? log.kind[0] : "");
        memset(&log, 0, sizeof log);
        size_t slack = (n + 1 + 15) / 16 * 16 - n, len = slack < 8 ? slack : 8;
        for (size_t k = 0; k < len; k++) {
            volatile unsigned char *c = mh_malloc(n);
            REQUIRE(c != NULL, "mh_malloc(%zu) failed", n);
            c[n + k] ^= 0x01;
            mh_free(opaque_ptr((void *)c));
            CHECK(log.count == 1 && strcmp(log.kind[0], "heap-buffer-overflow") == 0 && log.addr[0] == c + n + k,
                  "hardened: canary byte %zu after a %zu-byte block changed: %d reports, first \"%s\" at %p "
                  "(want %p)", k, n, log.count, log.count ? log.kind[0] : "", log.count ? log.addr[0] : NULL,
                  (void *)(c + n + k));
            memset(&log, 0, sizeof log);
        }
    }

    /* The heap survived: consistent, the neighbour intact, still working. */
    CHECK(mh_check() == 0, "mh_check() failed after the reported errors");
    const uint8_t *k = keep;
    for (int i = 0; i < 64; i++)
        if (k[i] != 0x42) {
            CHECK(0, "live neighbour damaged at byte %d", i);
            break;
        }
    mh_stats_t s;
    mh_stats(&s);
    CHECK(s.live_blocks == 1, "live_blocks = %zu after the error tests, want 1", s.live_blocks);
    mh_free(keep);
    void *q = mh_malloc(64);
    CHECK(q != NULL, "mh_malloc after the errors failed");
    mh_free(q);
    fflush(stdout);
    _exit(mh_test_failed() != failures_before ? 1 : 0);
}

/* Spikes one after another, each given back: the next one's miniheaps are
 * where the last one's were. When each took the address space below the
 * last, a program that rose and fell wrote new pages of the radix tables
 * each time, never given back (10.8 KB a spike of 83 MB). */
static void test_spikes_reuse_addresses(void)
{
    const size_t spike = 32 * MiB;
    const int rounds = 12;
    size_t drift = mh_test_spike_drift(mh_malloc, mh_free, mh_trim, spike, rounds);
    printf("spikes: %d of %zu MiB, the lowest block %.1f MiB below the first spike's\n", rounds, spike / MiB,
           (double)drift / MiB);
    /* Less than two spikes' worth, where walking down took 11 more. */
    CHECK(drift < 2 * spike, "%d spikes of %zu MiB, each given back, went down %.1f MiB in the address space", rounds,
          spike / MiB, (double)drift / MiB);
}

static void test_errors(void)
{
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork failed");
    if (pid == 0)
        error_child();
    int st = 0;
    waitpid(pid, &st, 0);
    if (WIFSIGNALED(st))
        CHECK(0, "error-reporting child killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        CHECK(WEXITSTATUS(st) == 0, "error-reporting child failed (exit %d)", WEXITSTATUS(st));
}

static void test_reset(void)
{
    void *blk[100];
    for (int i = 0; i < 100; i++) {
        blk[i] = mh_malloc((size_t)i * 500 + (i == 99 ? 2 * MiB : 0));
        REQUIRE(blk[i] != NULL, "mh_malloc failed");
    }
    (void)blk;
    mh_reset();
    mh_stats_t s;
    mh_stats(&s);
    CHECK(s.live_blocks == 0 && s.live_bytes == 0, "after mh_reset: live_blocks %zu live_bytes %zu", s.live_blocks,
          s.live_bytes);
    CHECK(mh_check() == 0, "mh_check() failed after mh_reset");
    for (int i = 0; i < 100; i++) {
        size_t n = (size_t)i * 300;
        blk[i] = mh_malloc(n);
        CHECK(blk[i] != NULL, "mh_malloc after mh_reset failed");
        if (blk[i])
            pat_fill(blk[i], n);
    }
    for (int i = 0; i < 100; i++)
        if (blk[i]) {
            CHECK(pat_check(blk[i], (size_t)i * 300) == (size_t)-1, "block %d overwritten after mh_reset", i);
            mh_free(blk[i]);
        }
    mh_stats(&s);
    CHECK(s.live_blocks == 0, "live_blocks %zu at the end", s.live_blocks);
}

/* Where 64 blocks of one class land inside their 64 KiB units, after a
 * reset, with randomised slot choice and the given seed. */
static void slot_offsets(const char *opts, uintptr_t *off)
{
    mh_reset();
    REQUIRE(mh_set_options(opts) == 0, "mh_set_options(\"%s\") rejected", opts);
    mh_reset(); /* restarts the seeded sequence */
    void *p[64];
    for (int i = 0; i < 64; i++) {
        p[i] = mh_malloc(48);
        REQUIRE(p[i] != NULL, "mh_malloc(48) failed");
        off[i] = (uintptr_t)p[i] & 0xffff;
    }
    for (int i = 0; i < 64; i++) mh_free(p[i]);
}

/* seed=N: the same choices after every reset; another seed, other choices. */
static void test_seed(void)
{
    uintptr_t a[64], b[64], c[64];
    slot_offsets("mode=hardened:abort_on_error=0:seed=7", a);
    slot_offsets("mode=hardened:abort_on_error=0:seed=7", b);
    slot_offsets("mode=hardened:abort_on_error=0:seed=8", c);
    CHECK(memcmp(a, b, sizeof a) == 0, "seed=7 twice: different slot choices");
    CHECK(memcmp(a, c, sizeof a) != 0, "seed=7 and seed=8: the same slot choices");
    mh_reset();
    CHECK(mh_set_options("mode=hardened:abort_on_error=0:seed=0") == 0, "seed=0 rejected");
}
#endif

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    mh_test_check_allocator("test_api");
    on_miniheap = mh_under_miniheap();

    struct { const char *name; void (*fn)(void); } tests[] = {
        {"malloc_zero", test_malloc_zero},
        {"huge", test_huge},
        {"calloc", test_calloc},
        {"realloc", test_realloc},
        {"reallocarray", test_reallocarray},
        {"posix_memalign", test_posix_memalign},
        {"aligned_alloc_memalign_valloc_pvalloc", test_aligned_alloc_memalign},
        {"usable_size", test_usable_size},
        {"free_variants", test_free_variants},
#ifdef USE_PLAIN
        {"mallinfo2_malloc_stats_trim", test_glibc_extras},
#else
        {"stats", test_stats},
        {"trim", test_trim},
        {"spikes_reuse_addresses", test_spikes_reuse_addresses},
        {"errors", test_errors},
        {"reset", test_reset},
        {"seed", test_seed},
#endif
    };
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        long before = mh_test_failed();
        double t0 = now_sec();
        tests[i].fn();
        printf("  %-40s %s (%.2fs)\n", tests[i].name, mh_test_failed() == before ? "ok" : "FAILED", now_sec() - t0);
    }
#ifndef USE_PLAIN
    {
        long n = capture_stderr(call_print_stats);
        CHECK(n > 0, "mh_print_stats() wrote %ld bytes to stderr", n);
        CHECK(mh_check() == 0, "mh_check() failed at the end");
    }
#endif
    return mh_test_exit("test_api");
}
