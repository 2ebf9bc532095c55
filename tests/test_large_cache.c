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
 *  - grown into the cache: a 256 KiB block realloc'ed to 600 KiB (past its
 *    room) while a 640 KiB mapping is cached (open, fast mode) is copied
 *    into it, so its new pages are resident before they are written;
 *    moving the block's pages with mremap instead left them fresh;
 *  - room: a new 1 MiB block grows to 1.5 MiB in place, and freed and
 *    reused for 2 MiB it grows in place again (its room is kept in the
 *    cache), where address space is not limited (else skipped, said so);
 *  - sealed: a mapping made inaccessible at its free (fill_new=1 makes
 *    fast mode do that) is writable when reused after fill_new=0 (it was
 *    reused inaccessible, and the first write was reported as an overflow).
 */
#include <sys/mman.h>
#include <stdbool.h>
#include <sys/resource.h>

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
    void *c = mh_malloc(640 << 10);
    REQUIRE(p && c, "malloc failed");
    for (size_t i = 0; i < (256 << 10); i++)
        p[i] = (unsigned char)(i * 7 + 3);
    touch(c, 640 << 10);
    mh_free(c);
    mh_stats_t s0, s1;
    mh_stats(&s0);
    unsigned char *q = mh_realloc(p, 600 << 10);
    REQUIRE(q, "realloc(256 KiB -> 600 KiB) failed");
    mh_stats(&s1);
    int pct = resident_pct(q + (256 << 10), (600 - 256) << 10);
    CHECK(pct >= 99, "[fast] 256 KiB grown to 600 KiB with a 640 KiB mapping cached: new part %d%% resident, "
                     "want the cached mapping reused (>= 99%%)", pct);
    size_t bad = (size_t)-1;
    for (size_t i = 0; i < (256 << 10) && bad == (size_t)-1; i++)
        if (q[i] != (unsigned char)(i * 7 + 3)) bad = i;
    CHECK(bad == (size_t)-1, "[fast] realloc into a cached mapping lost byte %zu", bad);
    CHECK(s1.live_blocks == s0.live_blocks, "[fast] realloc into a cached mapping: live blocks %zu -> %zu",
          (size_t)s0.live_blocks, (size_t)s1.live_blocks);
    memset(q + (256 << 10), 5, (600 - 256) << 10);
    mh_free(q);
}

/* Is address space free here (what src/large.c's room_allowed_now asks)? */
static bool address_space_free(void)
{
    struct rlimit as;
    return getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur == RLIM_INFINITY && mh_test_overcommit_policy() != 2;
}

static void grows_in_room(const char *mode)
{
    if (!address_space_free()) {
        printf("SKIP [%s] room: RLIMIT_AS or vm.overcommit_memory=2 here, blocks get no room\n", mode);
        return;
    }
    set_mode(mode, ":large_cache_mb=64");
    void *anchor = mh_malloc(8 * MiB);
    unsigned char *a = mh_malloc(MiB);
    REQUIRE(anchor && a, "malloc failed");
    memset(a, 9, MiB);
    unsigned char *b = mh_realloc(a, 3 * MiB / 2);
    REQUIRE(b, "realloc(1 MiB -> 1.5 MiB) failed");
    CHECK(b == a, "[%s] a new 1 MiB block grown to 1.5 MiB moved (%p -> %p): want it grown into its room", mode,
          (void *)a, (void *)b);
    CHECK(b[0] == 9 && b[MiB - 1] == 9, "[%s] realloc into the room lost the contents", mode);
    memset(b, 3, 3 * MiB / 2);
    mh_free(b);
    /* Hardened mode keeps the mapping freed last from reuse: a small one. */
    void *small = strcmp(mode, "fast") ? mh_malloc(256 << 10) : NULL;
    mh_free(small);
    unsigned char *c = mh_malloc(2 * MiB);
    REQUIRE(c, "malloc(2 MiB) failed");
    CHECK(c == b, "[%s] 2 MiB after a freed 1.5 MiB block with room: %p, want the cached mapping grown in place "
                  "at %p", mode, (void *)c, (void *)b);
    memset(c, 4, 2 * MiB);
    mh_free(c);
    mh_free(anchor);
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
        grows_in_room(modes[i]);
    }
    grown_into_cache();
    sealed_then_reused();
    return mh_test_exit("test_large_cache");
}
