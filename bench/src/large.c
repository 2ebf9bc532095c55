/* large: large blocks, 64 KiB - 32 MiB, allocated, written and freed.
 *
 * A table of 24 live large blocks; each step frees a random one and
 * allocates a block of a log-uniform size in 64 KiB - 32 MiB in its place,
 * writing one byte per page (so the cost of faulting pages in counts).
 * Usage: large [scale]
 */
#include "bench.h"

#define LIVE 24

int main(int argc, char **argv)
{
    double scale = bench_scale(argc, argv);
    size_t steps = scaled(scale, 600, 20);
    rng_t r;
    rng_init(&r, BENCH_SEED);
    void *blk[LIVE] = { 0 };
    size_t len[LIVE] = { 0 };
    unsigned long long sum = 0, bytes = 0;
    double t0 = now_s();
    for (size_t s = 0; s < steps; s++) {
        size_t k = (size_t)rng_below(&r, LIVE);
        if (blk[k] != NULL) {
            sum += ((unsigned char *)blk[k])[len[k] - 1];
            free(blk[k]);
        }
        size_t n = rng_logsize(&r, 64 << 10, 32 << 20);
        blk[k] = xmalloc_or_die(n);
        len[k] = n;
        touch(blk[k], n, (unsigned char)s);
        bytes += n;
    }
    double t1 = now_s();
    for (int k = 0; k < LIVE; k++)
        free(blk[k]);
    printf("RESULT time_s=%.6f ops=%zu ns_per_op=%.2f bytes=%llu check=%llu\n", t1 - t0,
           2 * steps, (t1 - t0) * 1e9 / (double)(2 * steps), bytes, sum);
    return 0;
}
