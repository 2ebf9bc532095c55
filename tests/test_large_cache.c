/* The cache of freed large mappings (src/large.c), in fast and hardened mode.
 *
 * Whether a new block reused a cached mapping is read from mincore(2)
 * before the block is written: the pages of a reused mapping are resident
 * already, those of a fresh one are not. No timing, no fault counts. Each
 * case runs with large_cache_mb=1 and an untouched live block (an anchor),
 * so what is cached is what the high-water rule allows.
 *
 *  - split: a 1 MiB request served from a cached 64 MiB mapping takes its
 *    head; the tail stays cached, and a 60 MiB request then gets resident
 *    pages (the tail used to be unmapped, so the 60 MiB came fresh);
 *  - high-water mark: four freed 8 MiB blocks are cached while the live
 *    blocks are below their peak, so four new ones reuse them (hardened
 *    mode keeps the one freed last from reuse);
 *  - nothing live: the cache keeps at most large_cache_mb, and after
 *    mh_trim() nothing, so a block allocated then is fresh;
 *  - grown into the cache: a 256 KiB block realloc'ed to 500 KiB while a
 *    512 KiB mapping is cached (open, fast mode) is copied into it, so its
 *    new pages are resident before they are written; moving the block's
 *    pages with mremap instead left them fresh (0 % resident);
 *  - sealed: a mapping made inaccessible at its free (fill_new=1 makes
 *    fast mode do that) is writable when reused after fill_new=0 (it was
 *    reused inaccessible, and the first write was reported as an overflow).
 */
#include <sys/mman.h>

#include "mh_test.h"

#define MiB ((size_t)1 << 20)

static size_t page;

static void touch(void *p, size_t n)
{
    for (size_t i = 0; i < n; i += page)
        ((volatile char *)p)[i] = 1;
}

/* Resident share of [p, p+n), in percent. */
static int resident_pct(void *p, size_t n)
{
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)(page - 1);
    size_t len = (uintptr_t)p + n - a, pages = (len + page - 1) / page, in = 0;
    static unsigned char vec[(64 << 20) / 4096 + 2];
    REQUIRE(pages <= sizeof vec, "block too large for the test's vector");
    REQUIRE(mincore((void *)a, len, vec) == 0, "mincore: %s", strerror(errno));
    for (size_t i = 0; i < pages; i++)
        in += vec[i] & 1;
    return (int)(in * 100 / pages);
}

static void set_mode(const char *mode, const char *extra)
{
    char opts[200];
    mh_reset();
    snprintf(opts, sizeof opts,
             "mode=%s:decay_ms=600000:background=0:leak_report=0:quarantine_mb=0:large_cache_mb=1%s", mode, extra);
    REQUIRE(mh_set_options(opts) == 0, "mh_set_options(\"%s\") rejected", opts);
    mh_reset();
}

static void split_keeps_tail(const char *mode)
{
    set_mode(mode, "");
    void *anchor = mh_malloc(72 * MiB);
    void *big = mh_malloc(64 * MiB);
    /* Hardened mode keeps the mapping freed last from reuse: a small one. */
    void *small = strcmp(mode, "fast") ? mh_malloc(256 << 10) : NULL;
    REQUIRE(anchor && big, "malloc failed");
    touch(big, 64 * MiB);
    mh_free(big);
    mh_free(small);
    void *a = mh_malloc(1 * MiB);
    void *b = mh_malloc(60 * MiB);
    REQUIRE(a && b, "malloc failed");
    int pct = resident_pct(b, 60 * MiB);
    CHECK(pct >= 99, "[%s] 60 MiB after a 1 MiB block took the head of a cached 64 MiB mapping: %d%% resident, "
                     "want the tail reused (>= 99%%)", mode, pct);
    touch(b, 60 * MiB);
    memset(a, 7, 1 * MiB);
    mh_free(a);
    mh_free(b);
    mh_free(anchor);
}

static void cache_follows_high_water(const char *mode)
{
    set_mode(mode, "");
    void *anchor = mh_malloc(40 * MiB);
    REQUIRE(anchor, "malloc failed");
    void *p[4];
    for (int i = 0; i < 4; i++) {
        p[i] = mh_malloc(8 * MiB);
        REQUIRE(p[i], "malloc failed");
        touch(p[i], 8 * MiB);
    }
    for (int i = 0; i < 4; i++)
        mh_free(p[i]);
    int reused = 0;
    for (int i = 0; i < 4; i++) {
        p[i] = mh_malloc(8 * MiB);
        REQUIRE(p[i], "malloc failed");
        reused += resident_pct(p[i], 8 * MiB) >= 99;
    }
    int want = strcmp(mode, "fast") == 0 ? 4 : 3;
    CHECK(reused >= want, "[%s] large_cache_mb=1, 4 x 8 MiB freed below the high-water mark: %d reused, want %d",
          mode, reused, want);
    for (int i = 0; i < 4; i++)
        mh_free(p[i]);
    mh_free(anchor);
    mh_stats_t st;
    mh_stats(&st);
    CHECK(st.cached_bytes < 2 * MiB, "[%s] nothing live, large_cache_mb=1: %zu bytes cached", mode,
          (size_t)st.cached_bytes);
    mh_trim(0);
    void *q = mh_malloc(8 * MiB);
    REQUIRE(q, "malloc failed");
    int pct = resident_pct(q, 8 * MiB);
    CHECK(pct == 0, "[%s] after mh_trim the cache is empty, yet a new 8 MiB block is %d%% resident", mode, pct);
    mh_stats(&st);
    CHECK(st.cached_bytes < MiB, "[%s] after mh_trim: %zu bytes cached", mode, (size_t)st.cached_bytes);
    mh_free(q);
}

static void grown_into_cache(void)
{
    set_mode("fast", "");
    unsigned char *p = mh_malloc(256 << 10);
    void *c = mh_malloc(512 << 10);
    REQUIRE(p && c, "malloc failed");
    for (size_t i = 0; i < (256 << 10); i++)
        p[i] = (unsigned char)(i * 7 + 3);
    touch(c, 512 << 10);
    mh_free(c);
    mh_stats_t s0, s1;
    mh_stats(&s0);
    unsigned char *q = mh_realloc(p, 500 << 10);
    REQUIRE(q, "realloc(256 KiB -> 500 KiB) failed");
    mh_stats(&s1);
    int pct = resident_pct(q + (256 << 10), (500 - 256) << 10);
    CHECK(pct >= 99, "[fast] 256 KiB grown to 500 KiB with a 512 KiB mapping cached: new part %d%% resident, "
                     "want the cached mapping reused (>= 99%%)", pct);
    size_t bad = (size_t)-1;
    for (size_t i = 0; i < (256 << 10) && bad == (size_t)-1; i++)
        if (q[i] != (unsigned char)(i * 7 + 3)) bad = i;
    CHECK(bad == (size_t)-1, "[fast] realloc into a cached mapping lost byte %zu", bad);
    CHECK(s1.live_blocks == s0.live_blocks, "[fast] realloc into a cached mapping: live blocks %zu -> %zu",
          (size_t)s0.live_blocks, (size_t)s1.live_blocks);
    memset(q + (256 << 10), 5, (500 - 256) << 10);
    mh_free(q);
}

static void sealed_then_reused(void)
{
    set_mode("fast", ":fill_new=1");
    void *p[4];
    for (int i = 0; i < 4; i++) {
        p[i] = mh_malloc(MiB);
        REQUIRE(p[i], "malloc failed");
        memset(p[i], 1, MiB);
    }
    for (int i = 0; i < 4; i++)
        mh_free(p[i]);
    REQUIRE(mh_set_options("fill_new=0") == 0, "mh_set_options(fill_new=0) rejected");
    for (int i = 0; i < 4; i++) {
        p[i] = mh_malloc(MiB);
        REQUIRE(p[i], "malloc failed");
        memset(p[i], 2, MiB); /* a sealed mapping faults: reported, the test aborts */
    }
    for (int i = 0; i < 4; i++)
        mh_free(p[i]);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    mh_test_check_allocator("test_large_cache");
    page = (size_t)sysconf(_SC_PAGESIZE);
    const char *modes[] = {"fast", "hardened"};
    for (int i = 0; i < 2; i++) {
        split_keeps_tail(modes[i]);
        cache_follows_high_water(modes[i]);
    }
    grown_into_cache();
    sealed_then_reused();
    return mh_test_exit("test_large_cache");
}
