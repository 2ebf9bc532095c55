/* mstress: many threads, each churning its own heap, with some blocks
 * migrating between threads (the mstress / rptest pattern).
 *
 * 8 threads (more than the cores here) each keep 2,000 live blocks; a step
 * replaces a random block with one of a random size (mostly small, 1 in 100
 * up to 64 KiB, as rptest). One step in 16 instead swaps the block with a
 * slot of a shared array, so other threads free it later. Threads are
 * restarted in 4 waves, leaving their blocks to the next wave.
 * Usage: mstress [scale] [threads]   (defaults: 1, 8 threads)
 */
#include "bench.h"
#include <pthread.h>

#define SLOTS 2000
#define SHARED 4096
#define WAVES 4

static void *shared[SHARED];
static size_t steps;

typedef struct worker {
    void *blocks[SLOTS];
    rng_t rng;
    unsigned long long sum;
    pthread_t tid;
} worker_t;

static size_t pick_size(rng_t *r)
{
    if (rng_below(r, 100) == 0)
        return (size_t)rng_range(r, 4096, 65536);
    return rng_logsize(r, 8, 2048);
}

static void *run(void *arg)
{
    worker_t *w = arg;
    unsigned long long sum = 0;
    for (size_t i = 0; i < steps; i++) {
        size_t k = (size_t)rng_below(&w->rng, SLOTS);
        if (rng_below(&w->rng, 16) == 0) {
            size_t s = (size_t)rng_below(&w->rng, SHARED);
            w->blocks[k] = __atomic_exchange_n(&shared[s], w->blocks[k], __ATOMIC_ACQ_REL);
            continue;
        }
        if (w->blocks[k] != NULL) {
            sum += *(unsigned char *)w->blocks[k];
            free(w->blocks[k]);
        }
        size_t n = pick_size(&w->rng);
        unsigned char *p = xmalloc_or_die(n);
        memset(p, (int)(i & 0xff), n < 16 ? n : 16);
        p[n - 1] = 1;
        w->blocks[k] = p;
    }
    w->sum += sum;
    return NULL;
}

int main(int argc, char **argv)
{
    double scale = bench_scale(argc, argv);
    int nthreads = argc > 2 ? atoi(argv[2]) : 8;
    if (nthreads < 1 || nthreads > 256) {
        fprintf(stderr, "mstress: bad thread count\n");
        return 2;
    }
    steps = scaled(scale, 500000, 100);
    worker_t *w = calloc((size_t)nthreads, sizeof *w);
    if (w == NULL)
        return 3;
    for (int t = 0; t < nthreads; t++)
        rng_init(&w[t].rng, BENCH_SEED + (uint64_t)t);
    double t0 = now_s();
    for (int wave = 0; wave < WAVES; wave++) {
        for (int t = 0; t < nthreads; t++)
            if (pthread_create(&w[t].tid, NULL, run, &w[t]) != 0)
                return 3;
        for (int t = 0; t < nthreads; t++)
            pthread_join(w[t].tid, NULL);
    }
    double t1 = now_s();
    unsigned long long sum = 0;
    for (int t = 0; t < nthreads; t++) {
        sum += w[t].sum;
        for (size_t k = 0; k < SLOTS; k++)
            free(w[t].blocks[k]);
    }
    for (size_t s = 0; s < SHARED; s++)
        free(shared[s]);
    double ops = 2.0 * WAVES * (double)steps * nthreads;
    printf("RESULT time_s=%.6f ops=%.0f ns_per_op=%.2f check=%llu\n", t1 - t0, ops,
           (t1 - t0) * 1e9 / ops, sum);
    free(w);
    return 0;
}
