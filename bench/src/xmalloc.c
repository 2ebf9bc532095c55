/* xmalloc: blocks allocated by one thread and freed by another
 * (the xmalloc-test pattern).
 *
 * T threads are arranged in a ring. Each round a thread allocates a batch of
 * small blocks of mixed sizes, hands the batch to its successor's inbox, then
 * takes the batches waiting in its own inbox and frees every block in them.
 * Nearly every free is a remote free.
 * Usage: xmalloc [scale] [threads]   (defaults: 1, 4 threads)
 */
#include "bench.h"
#include <pthread.h>

#define BATCH 256
#define MAXPENDING 8 /* a producer waits when its successor lags this far */

typedef struct batch {
    struct batch *next;
    int n;
    void *p[BATCH];
} batch_t;

typedef struct inbox {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    batch_t *head;
    int pending;
    int done; /* producer feeding this inbox has finished */
} inbox_t;

static int nthreads;
static size_t rounds;
static inbox_t *boxes;

typedef struct arg {
    int id;
    unsigned long long sum;
} arg_t;

static unsigned long long drain(inbox_t *in, int wait_all)
{
    unsigned long long sum = 0;
    for (;;) {
        pthread_mutex_lock(&in->mu);
        while (in->head == NULL && wait_all && !in->done)
            pthread_cond_wait(&in->cv, &in->mu);
        batch_t *b = in->head;
        in->head = NULL;
        in->pending = 0;
        int done = in->done;
        pthread_cond_broadcast(&in->cv);
        pthread_mutex_unlock(&in->mu);
        while (b != NULL) {
            batch_t *next = b->next;
            for (int i = 0; i < b->n; i++) {
                sum += *(unsigned char *)b->p[i];
                free(b->p[i]);
            }
            free(b);
            b = next;
        }
        if (!wait_all || done)
            return sum;
    }
}

static void *run(void *argp)
{
    arg_t *a = argp;
    rng_t r;
    rng_init(&r, BENCH_SEED + (uint64_t)a->id);
    inbox_t *out = &boxes[(a->id + 1) % nthreads];
    inbox_t *in = &boxes[a->id];
    for (size_t round = 0; round < rounds; round++) {
        batch_t *b = xmalloc_or_die(sizeof *b);
        b->n = BATCH;
        for (int i = 0; i < BATCH; i++) {
            size_t n = rng_small_mix(&r);
            unsigned char *p = xmalloc_or_die(n);
            p[0] = (unsigned char)i;
            p[n - 1] = (unsigned char)round;
            b->p[i] = p;
        }
        pthread_mutex_lock(&out->mu);
        while (out->pending >= MAXPENDING)
            pthread_cond_wait(&out->cv, &out->mu);
        b->next = out->head;
        out->head = b;
        out->pending++;
        pthread_cond_broadcast(&out->cv);
        pthread_mutex_unlock(&out->mu);
        a->sum += drain(in, 0);
    }
    pthread_mutex_lock(&out->mu);
    out->done = 1;
    pthread_cond_broadcast(&out->cv);
    pthread_mutex_unlock(&out->mu);
    a->sum += drain(in, 1);
    return NULL;
}

int main(int argc, char **argv)
{
    double scale = bench_scale(argc, argv);
    nthreads = argc > 2 ? atoi(argv[2]) : 4;
    if (nthreads < 2 || nthreads > 256) {
        fprintf(stderr, "xmalloc: thread count must be 2..256\n");
        return 2;
    }
    rounds = scaled(scale, 10000, 4);
    boxes = calloc((size_t)nthreads, sizeof *boxes);
    arg_t *args = calloc((size_t)nthreads, sizeof *args);
    pthread_t *tids = calloc((size_t)nthreads, sizeof *tids);
    if (boxes == NULL || args == NULL || tids == NULL)
        return 3;
    for (int t = 0; t < nthreads; t++) {
        pthread_mutex_init(&boxes[t].mu, NULL);
        pthread_cond_init(&boxes[t].cv, NULL);
        args[t].id = t;
    }
    double t0 = now_s();
    for (int t = 0; t < nthreads; t++)
        if (pthread_create(&tids[t], NULL, run, &args[t]) != 0)
            return 3;
    unsigned long long sum = 0;
    for (int t = 0; t < nthreads; t++) {
        pthread_join(tids[t], NULL);
        sum += args[t].sum;
    }
    double t1 = now_s();
    double ops = 2.0 * (double)rounds * BATCH * nthreads;
    printf("RESULT time_s=%.6f ops=%.0f ns_per_op=%.2f check=%llu\n", t1 - t0, ops,
           (t1 - t0) * 1e9 / ops, sum);
    free(tids);
    free(args);
    free(boxes);
    return 0;
}
