/* tasks: a thread per task, as a server that starts a thread per request.
 *
 * Rounds of 4 threads: each thread handles one task, making 64 allocations
 * of mixed small sizes (a request's buffers and objects), writing them, and
 * freeing all but one, its result, which the main thread frees after
 * joining it. What this measures is mostly what a new thread's first
 * allocations and its exit cost an allocator.
 * Usage: tasks [scale]   (scale 1: 8,000 rounds)
 */
#include "bench.h"
#include <pthread.h>

#define THREADS 4
#define PER_TASK 64

typedef struct task {
    uint64_t seed;
    unsigned char *result;
    size_t result_len;
} task_t;

static void *run(void *arg)
{
    task_t *t = arg;
    rng_t r;
    rng_init(&r, t->seed);
    unsigned char *b[PER_TASK];
    size_t n[PER_TASK];
    for (int i = 0; i < PER_TASK; i++) {
        n[i] = rng_small_mix(&r);
        b[i] = xmalloc_or_die(n[i]);
        b[i][0] = (unsigned char)i;
        b[i][n[i] - 1] = (unsigned char)n[i];
    }
    int keep = (int)rng_below(&r, PER_TASK);
    for (int i = 0; i < PER_TASK; i++)
        if (i != keep)
            free(b[i]);
    t->result = b[keep];
    t->result_len = n[keep];
    return NULL;
}

int main(int argc, char **argv)
{
    double scale = bench_scale(argc, argv);
    size_t rounds = scaled(scale, 8000, 10);
    task_t tasks[THREADS];
    pthread_t th[THREADS];
    unsigned long long sum = 0;
    double t0 = now_s();
    for (size_t g = 0; g < rounds; g++) {
        for (int i = 0; i < THREADS; i++) {
            tasks[i].seed = BENCH_SEED + g * THREADS + (uint64_t)i;
            if (pthread_create(&th[i], NULL, run, &tasks[i]) != 0) {
                fprintf(stderr, "tasks: pthread_create failed\n");
                return 3;
            }
        }
        for (int i = 0; i < THREADS; i++) {
            pthread_join(th[i], NULL);
            sum += tasks[i].result[tasks[i].result_len - 1];
            free(tasks[i].result);
        }
    }
    double t1 = now_s();
    double ops = 2.0 * (double)rounds * THREADS * PER_TASK;
    printf("RESULT time_s=%.6f ops=%.0f ns_per_op=%.2f check=%llu\n", t1 - t0, ops, (t1 - t0) * 1e9 / ops, sum);
    return 0;
}
