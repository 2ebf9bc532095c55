/* churn: single-thread churn of small objects of mixed sizes.
 *
 * The alloc-test / espresso / cfrac pattern. Two interleaved parts:
 *  - a table of live objects (50,000 slots); each step frees a random slot
 *    and puts a fresh object of a mixed small size there (alloc-test);
 *  - bursts of short-lived temporaries freed mostly in LIFO order, like the
 *    bignum digits of cfrac or the cube lists of espresso.
 * Usage: churn [scale]   (scale 1 = about 7.5M operations)
 */
#include "bench.h"

#define SLOTS 50000

static void *slot[SLOTS];
static size_t slot_size[SLOTS];

int main(int argc, char **argv)
{
    double scale = bench_scale(argc, argv);
    size_t rounds = scaled(scale, 45000, 10);
    rng_t r;
    rng_init(&r, BENCH_SEED);
    unsigned long long sum = 0, ops = 0;

    double t0 = now_s();
    for (size_t round = 0; round < rounds; round++) {
        /* alloc-test: 64 random replacements in the live table */
        for (int i = 0; i < 64; i++) {
            size_t k = (size_t)rng_below(&r, SLOTS);
            if (slot[k] != NULL) {
                sum += ((unsigned char *)slot[k])[slot_size[k] - 1];
                free(slot[k]);
            }
            size_t n = rng_small_mix(&r);
            slot[k] = xmalloc_or_die(n);
            slot_size[k] = n;
            memset(slot[k], (int)(k & 0xff), n < 64 ? n : 64);
            ((unsigned char *)slot[k])[n - 1] = (unsigned char)k;
            ops += 2;
        }
        /* cfrac/espresso: a burst of temporaries, freed LIFO with some
         * out-of-order frees */
        void *tmp[32];
        int nt = 8 + (int)rng_below(&r, 25);
        for (int i = 0; i < nt; i++) {
            size_t n = (size_t)rng_range(&r, 8, 96);
            tmp[i] = xmalloc_or_die(n);
            memset(tmp[i], i, n);
        }
        for (int i = nt - 1; i >= 0; i--) {
            int j = (rng_below(&r, 8) == 0) ? (int)rng_below(&r, (uint64_t)i + 1) : i;
            void *p = tmp[j];
            tmp[j] = tmp[i];
            sum += ((unsigned char *)p)[0];
            free(p);
        }
        ops += 2 * (unsigned long long)nt;
    }
    double t1 = now_s();
    for (size_t k = 0; k < SLOTS; k++)
        free(slot[k]);
    printf("RESULT time_s=%.6f ops=%llu ns_per_op=%.2f check=%llu\n", t1 - t0, ops,
           (t1 - t0) * 1e9 / (double)ops, sum);
    return 0;
}
