/* realloc: realloc-heavy growth of arrays and strings.
 *
 * 256 live containers of three kinds (9 : 9 : 2), worked on in random order:
 *  - dynamic arrays growing one element at a time with capacity doubling
 *    (a vector), up to 64 Ki elements of 8 B, then dropped;
 *  - strings built by appending short pieces, realloc'ed on every append to
 *    the exact length (naive strcat growth), up to 64 KiB, then dropped;
 *  - (1 in 10) buffers resized up and down at random, 16 B - 256 KiB.
 * Usage: realloc [scale]
 */
#include "bench.h"

#define CONTAINERS 256

typedef struct cont {
    int kind;
    unsigned char *p;
    size_t len, cap, limit;
} cont_t;

static cont_t c[CONTAINERS];

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (q == NULL) {
        fprintf(stderr, "realloc: realloc(%zu) failed\n", n);
        exit(3);
    }
    return q;
}

static void reset(cont_t *k, rng_t *r)
{
    free(k->p);
    k->p = NULL;
    k->len = k->cap = 0;
    {
        uint64_t q = rng_below(r, 20);
        k->kind = q < 9 ? 0 : q < 18 ? 1 : 2;
    }
    switch (k->kind) {
    case 0: k->limit = (size_t)rng_logsize(r, 64, 65536) * 8; break;
    case 1: k->limit = (size_t)rng_logsize(r, 64, 65536); break;
    default: k->limit = 64 + (size_t)rng_below(r, 64); break; /* number of resizes */
    }
}

int main(int argc, char **argv)
{
    double scale = bench_scale(argc, argv);
    size_t steps = scaled(scale, 8000000, 1000);
    rng_t r;
    rng_init(&r, BENCH_SEED);
    unsigned long long sum = 0, reallocs = 0;
    for (int i = 0; i < CONTAINERS; i++)
        reset(&c[i], &r);

    double t0 = now_s();
    for (size_t s = 0; s < steps; s++) {
        cont_t *k = &c[rng_below(&r, CONTAINERS)];
        switch (k->kind) {
        case 0: /* vector push_back of 1-16 elements */
            for (int e = 1 + (int)rng_below(&r, 16); e > 0; e--) {
                if (k->len + 8 > k->cap) {
                    k->cap = k->cap ? 2 * k->cap : 32;
                    k->p = xrealloc(k->p, k->cap);
                    reallocs++;
                }
                memcpy(k->p + k->len, &s, 8);
                k->len += 8;
            }
            if (k->len >= k->limit) {
                sum += k->p[k->len / 2];
                reset(k, &r);
            }
            break;
        case 1: { /* string append of 1-40 chars, exact-size realloc */
            size_t add = 1 + (size_t)rng_below(&r, 40);
            k->p = xrealloc(k->p, k->len + add + 1);
            reallocs++;
            memset(k->p + k->len, 'a' + (int)(s % 26), add);
            k->len += add;
            k->p[k->len] = '\0';
            if (k->len >= k->limit) {
                sum += k->p[k->len - 1];
                reset(k, &r);
            }
            break;
        }
        default: { /* resize up or down */
            size_t n = rng_logsize(&r, 16, 256 << 10);
            k->p = xrealloc(k->p, n);
            reallocs++;
            touch(k->p, n, (unsigned char)s);
            k->len = n;
            if (--k->limit == 0) {
                sum += k->p[0];
                reset(k, &r);
            }
            break;
        }
        }
    }
    double t1 = now_s();
    for (int i = 0; i < CONTAINERS; i++)
        free(c[i].p);
    printf("RESULT time_s=%.6f ops=%llu ns_per_op=%.2f check=%llu\n", t1 - t0, reallocs,
           (t1 - t0) * 1e9 / (double)reallocs, sum);
    return 0;
}
