/* scale: cost of malloc/free as the live heap grows.
 *
 * Usage: scale [scale] [--max-mb N]   (defaults: 1, 1024 MB)
 *
 * The live heap is grown in steps to 1 MB, 16 MB, 256 MB, 1 GB, 4 GB and
 * 8 GB (those not above --max-mb) with blocks of 16 - 512 B (log-uniform),
 * each written. At each step two costs are measured, per malloc+free pair:
 *   pairs    bursts of 32 short-lived blocks of mixed small sizes, allocated
 *            and freed (the fast path, next to a big heap);
 *   replace  a random live block freed and a new one of a random size put in
 *            its place (frees land all over the heap: this is where data
 *            structures that grow with the heap show; part of its cost is the
 *            cache and TLB misses of touching a random block, which grow with
 *            the heap for every allocator, so compare with glibc's curve).
 * 2 million pairs of each kind per step at scale 1.
 * Prints "RESULT live_mb=... pairs_ns=... replace_ns=..." per step and a
 * final "RESULT time_s=..." line with the total measured time.
 */
#include "bench.h"
#include <sys/mman.h>

static const size_t steps_mb[] = { 1, 16, 256, 1024, 4096, 8192 };

int main(int argc, char **argv)
{
    double scale = 1.0;
    long max_mb = 1024;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--max-mb") == 0 && i + 1 < argc) {
            max_mb = atol(argv[++i]);
        } else if (i == 1) {
            scale = bench_scale(argc, argv);
        } else {
            fprintf(stderr, "usage: scale [scale] [--max-mb N]\n");
            return 2;
        }
    }
    if (max_mb < 1) {
        fprintf(stderr, "scale: --max-mb must be >= 1\n");
        return 2;
    }
    size_t ops = scaled(scale, 2000000, 1000);
    /* bookkeeping outside the allocator: the pointer table, mmap'ed */
    size_t cap = (size_t)max_mb * 1024 * 1024 / 100 + 1024; /* mean size is ~143 B */
    void **tab = mmap(NULL, cap * sizeof(void *), PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    uint16_t *sz = mmap(NULL, cap * sizeof(uint16_t), PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (tab == MAP_FAILED || sz == MAP_FAILED) {
        perror("scale: mmap");
        return 3;
    }
    rng_t r;
    rng_init(&r, BENCH_SEED);
    size_t n = 0, live = 0;
    unsigned long long sum = 0;
    double total = 0;
    for (size_t s = 0; s < sizeof steps_mb / sizeof steps_mb[0]; s++) {
        if ((long)steps_mb[s] > max_mb)
            break;
        size_t target = steps_mb[s] * 1024 * 1024;
        double g0 = now_s();
        while (live < target && n < cap) {
            size_t k = rng_logsize(&r, 16, 512);
            unsigned char *p = xmalloc_or_die(k);
            p[0] = (unsigned char)n;
            p[k - 1] = 1;
            tab[n] = p;
            sz[n] = (uint16_t)k;
            n++;
            live += k;
        }
        double g1 = now_s();

        /* pairs: bursts of 32 short-lived blocks */
        void *burst[32];
        double t0 = now_s();
        for (size_t i = 0; i < ops; i += 32) {
            for (int j = 0; j < 32; j++) {
                size_t k = 16 + (size_t)((i + (size_t)j * 37) % 497);
                unsigned char *p = xmalloc_or_die(k);
                p[0] = (unsigned char)j;
                burst[j] = p;
            }
            for (int j = 31; j >= 0; j--) {
                sum += *(unsigned char *)burst[j];
                free(burst[j]);
            }
        }
        double t1 = now_s();
        /* replace: random live block out, new block in */
        for (size_t i = 0; i < ops; i++) {
            size_t x = (size_t)rng_below(&r, n);
            sum += sz[x];
            free(tab[x]);
            live -= sz[x];
            size_t k = rng_logsize(&r, 16, 512);
            unsigned char *p = xmalloc_or_die(k);
            p[0] = (unsigned char)i;
            tab[x] = p;
            sz[x] = (uint16_t)k;
            live += k;
        }
        double t2 = now_s();
        size_t pairs = (ops + 31) / 32 * 32;
        memfig_t m = mem_now();
        printf("RESULT live_mb=%zu blocks=%zu grow_s=%.3f pairs_ns=%.2f replace_ns=%.2f rss_kb=%ld\n",
               steps_mb[s], n, g1 - g0, (t1 - t0) * 1e9 / (double)pairs,
               (t2 - t1) * 1e9 / (double)ops, m.rss_kb);
        fflush(stdout);
        total += t2 - t0;
    }
    for (size_t i = 0; i < n; i++)
        free(tab[i]);
    printf("RESULT time_s=%.6f check=%llu\n", total, sum);
    return 0;
}
