/* larson: the server pattern of the Larson benchmark.
 *
 * Each of T worker threads owns a table of live blocks; a step frees a random
 * block of the table and allocates a new one of a random small size in its
 * place. After a fixed number of steps a worker exits and a new thread takes
 * its table over, so from the second generation on most frees are of blocks
 * another (dead) thread allocated. Between generations, tables are also
 * rotated among the workers, as a server hands connections to other threads.
 * Usage: larson [scale] [threads]   (defaults: 1, 4 threads)
 */
#include "bench.h"
#include <pthread.h>

#define SLOTS 4000

typedef struct worker {
    void *blocks[SLOTS];
    rng_t rng;
    size_t steps;
    unsigned long long sum;
    pthread_t tid;
} worker_t;

static void *run(void *arg)
{
    worker_t *w = arg;
    unsigned long long sum = 0;
    for (size_t i = 0; i < w->steps; i++) {
        size_t k = (size_t)rng_below(&w->rng, SLOTS);
        if (w->blocks[k] != NULL) {
            sum += *(unsigned char *)w->blocks[k];
            free(w->blocks[k]);
        }
        size_t n = (size_t)rng_range(&w->rng, 8, 1000);
        unsigned char *p = xmalloc_or_die(n);
        p[0] = (unsigned char)i;
        p[n - 1] = (unsigned char)k;
        w->blocks[k] = p;
    }
    w->sum += sum;
    return NULL;
}

int main(int argc, char **argv)
{
    double scale = bench_scale(argc, argv);
    int nthreads = argc > 2 ? atoi(argv[2]) : 4;
    if (nthreads < 1 || nthreads > 256) {
        fprintf(stderr, "larson: bad thread count\n");
        return 2;
    }
    size_t gens = scaled(scale, 80, 2);
    size_t steps = 50000;
    worker_t *w = calloc((size_t)nthreads, sizeof *w);
    void **spare = calloc(SLOTS, sizeof(void *));
    if (w == NULL || spare == NULL)
        return 3;
    for (int t = 0; t < nthreads; t++)
        rng_init(&w[t].rng, BENCH_SEED + (uint64_t)t);

    double t0 = now_s();
    for (size_t g = 0; g < gens; g++) {
        for (int t = 0; t < nthreads; t++) {
            w[t].steps = steps;
            if (pthread_create(&w[t].tid, NULL, run, &w[t]) != 0) {
                fprintf(stderr, "larson: pthread_create failed\n");
                return 3;
            }
        }
        for (int t = 0; t < nthreads; t++)
            pthread_join(w[t].tid, NULL);
        /* rotate the tables: worker t+1 gets worker t's blocks */
        memcpy(spare, w[nthreads - 1].blocks, sizeof w[0].blocks);
        for (int t = nthreads - 1; t > 0; t--)
            memcpy(w[t].blocks, w[t - 1].blocks, sizeof w[0].blocks);
        memcpy(w[0].blocks, spare, sizeof w[0].blocks);
    }
    double t1 = now_s();
    unsigned long long sum = 0;
    for (int t = 0; t < nthreads; t++) {
        sum += w[t].sum;
        for (size_t k = 0; k < SLOTS; k++)
            free(w[t].blocks[k]);
    }
    double ops = 2.0 * (double)gens * (double)steps * nthreads;
    printf("RESULT time_s=%.6f ops=%.0f ns_per_op=%.2f check=%llu\n", t1 - t0, ops,
           (t1 - t0) * 1e9 / ops, sum);
    free(spare);
    free(w);
    return 0;
}
