/* The memory test of issue #2: does the allocator give a freed spike back?
 *
 * Allocate ~90 MB of blocks of uniformly random size 16 B .. 4 KiB (fixed
 * seed), touching every byte. Keep 1 in 50 at random plus the last 2 %; free
 * the rest. Sleep 1 s, do a little ordinary activity (2000 malloc/free pairs
 * of small sizes), then measure the process's resident memory: Pss from
 * /proc/self/smaps_rollup, minus a baseline taken before the spike.
 *
 * Assert: resident_settled / live_bytes <= MAX_RATIO (3.0). The program
 * calls no trim function: the allocator must release memory on its own.
 * Plain names only; run under LD_PRELOAD=build/libminiheap.so. Under glibc
 * this fails (its heap cannot shrink past the kept blocks): that is expected.
 */
#include "mh_test.h"

#define MiB (1024.0 * 1024.0)
#define SPIKE_BYTES ((size_t)90 * 1000 * 1000)
#define MIN_SIZE 16
#define MAX_SIZE 4096
#define MAX_BLOCKS (SPIKE_BYTES / MIN_SIZE + 1)
#define MAX_RATIO 3.0

/* Bookkeeping in static storage, touched before the baseline is taken, so
 * it is part of the baseline and not of the measurement. With a mean size
 * of 2056 B the spike has ~44k blocks; the arrays are sized for that with a
 * wide margin (checked). */
#define CAP 200000
static void *ptrs[CAP];
static uint32_t sizes[CAP];
static uint8_t keep[CAP];

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    mh_test_check_allocator("test_spike");
    memset(ptrs, 0, sizeof ptrs);
    memset(sizes, 0, sizeof sizes);
    memset(keep, 0, sizeof keep);

    /* Warm the allocator a little, then take the baseline. */
    for (int i = 0; i < 100; i++)
        free(opaque_ptr(malloc(opaque((size_t)i * 10 + 1))));
    long long base = mh_read_rollup("Pss");
    REQUIRE(base > 0, "cannot read Pss from /proc/self/smaps_rollup");

    rng_t r;
    rng_seed(&r, 2);
    size_t n = 0, total = 0;
    double t0 = now_sec();
    while (total < SPIKE_BYTES) {
        REQUIRE(n < CAP, "bookkeeping too small");
        size_t s = rng_range(&r, MIN_SIZE, MAX_SIZE);
        void *p = malloc(s);
        REQUIRE(p != NULL, "malloc(%zu) failed", s);
        memset(p, (int)(n & 0xff) | 1, s);
        ptrs[n] = p;
        sizes[n] = (uint32_t)s;
        total += s;
        n++;
    }
    double t_alloc = now_sec() - t0;
    long long peak = mh_read_rollup("Pss") - base;

    /* Keep 1 in 50 at random, plus the last 2 %. */
    size_t last_start = n - n / 50;
    size_t live = 0, nlive = 0;
    for (size_t i = 0; i < n; i++) {
        keep[i] = i >= last_start || rng_next(&r) % 50 == 0;
        if (keep[i]) {
            live += sizes[i];
            nlive++;
        }
    }
    for (size_t i = 0; i < n; i++)
        if (!keep[i]) {
            free(ptrs[i]);
            ptrs[i] = NULL;
        }
    long long after_drop = mh_read_rollup("Pss") - base;

    sleep(1);
    rng_t r2;
    rng_seed(&r2, 3);
    for (int i = 0; i < 2000; i++) {
        void *p = malloc(rng_range(&r2, 16, 512));
        REQUIRE(p != NULL, "malloc failed");
        memset(p, 1, 16);
        free(p);
    }
    long long settled = mh_read_rollup("Pss") - base;

    /* The kept blocks are intact. */
    for (size_t i = 0; i < n; i++)
        if (keep[i]) {
            const uint8_t *b = ptrs[i];
            uint8_t want = (uint8_t)((i & 0xff) | 1);
            if (b[0] != want || b[sizes[i] - 1] != want) {
                CHECK(0, "kept block %zu (%p, %u bytes) corrupted", i, ptrs[i], sizes[i]);
                break;
            }
        }

    double ratio_drop = (double)after_drop / (double)live;
    double ratio = (double)settled / (double)live;
    printf("  spike: %zu blocks, %.1f MB allocated in %.2fs; kept %zu blocks\n", n, total / 1e6, t_alloc,
           nlive);
    printf("  live            %8.2f MiB\n", live / MiB);
    printf("  peak (Pss)      %8.2f MiB\n", peak / MiB);
    printf("  after drop      %8.2f MiB  (ratio %.2f)\n", after_drop / MiB, ratio_drop);
    printf("  settled         %8.2f MiB  (ratio %.2f, limit %.1f)\n", settled / MiB, ratio, MAX_RATIO);

    CHECK(peak >= (long long)(SPIKE_BYTES * 9 / 10), "peak Pss %.1f MiB: the spike was not resident?", peak / MiB);
    CHECK(ratio <= MAX_RATIO, "resident %.2f MiB for %.2f MiB live: ratio %.2f > %.1f", settled / MiB, live / MiB,
          ratio, MAX_RATIO);

    for (size_t i = 0; i < n; i++)
        free(ptrs[i]);
    return mh_test_exit("test_spike");
}
