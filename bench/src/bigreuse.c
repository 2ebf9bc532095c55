/* bigreuse: repeated 5-25 MiB blocks.
 *
 * A program that allocates a big buffer, fills part of it and frees it,
 * again and again (a decoder's frame, a request body): one or two blocks of
 * 5 - 25 MiB live at a time, a quarter of the pages written. Allocators that
 * unmap at once and fault the pages back on every reuse are slow here.
 * Usage: bigreuse [scale]
 */
#include "bench.h"

int main(int argc, char **argv)
{
    double scale = bench_scale(argc, argv);
    size_t steps = scaled(scale, 800, 20);
    rng_t r;
    rng_init(&r, BENCH_SEED);
    unsigned long long sum = 0;
    void *keep = NULL;
    double t0 = now_s();
    for (size_t s = 0; s < steps; s++) {
        size_t n = (size_t)rng_range(&r, 5 << 20, 25 << 20);
        unsigned char *p = xmalloc_or_die(n);
        /* write every 4th page, as a producer filling a frame sparsely */
        for (size_t i = 0; i < n; i += 4 * 4096)
            p[i] = (unsigned char)s;
        p[n - 1] = 1;
        sum += p[0];
        if (rng_below(&r, 4) == 0) { /* sometimes keep it across the next step */
            free(keep);
            keep = p;
        } else {
            free(p);
        }
    }
    free(keep);
    double t1 = now_s();
    printf("RESULT time_s=%.6f ops=%zu ns_per_op=%.2f check=%llu\n", t1 - t0, 2 * steps,
           (t1 - t0) * 1e9 / (double)(2 * steps), sum);
    return 0;
}
