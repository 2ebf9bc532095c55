/* Shared helpers for the miniheap benchmark workloads in bench/src.
 *
 * Each workload is a small C17 program with a fixed seed. It takes a scale
 * factor as its first argument (1.0 = the benchmark size, 0.01 = a smoke
 * test) and prints machine-readable lines "RESULT key=value ..." on stdout,
 * which bench/run parses. Nothing here allocates with malloc, so the
 * helpers do not disturb the allocator being measured.
 */
#ifndef BENCH_H
#define BENCH_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BENCH_SEED 0x6d696e6968656170ULL /* "miniheap" */

/* splitmix64 seeding + xoshiro256** generator: fast, deterministic. */
typedef struct rng {
    uint64_t s[4];
} rng_t;

static inline uint64_t bench_splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline void rng_init(rng_t *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = bench_splitmix(&x);
}

static inline uint64_t rng_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t rng_next(rng_t *r)
{
    uint64_t *s = r->s;
    uint64_t result = rng_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rng_rotl(s[3], 45);
    return result;
}

/* Uniform in [0, n). */
static inline uint64_t rng_below(rng_t *r, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)rng_next(r) * n) >> 64);
}

/* Uniform in [lo, hi]. */
static inline uint64_t rng_range(rng_t *r, uint64_t lo, uint64_t hi)
{
    return lo + rng_below(r, hi - lo + 1);
}

/* Log-uniform in [lo, hi]: as many blocks in 16-32 B as in 2-4 KiB. */
static inline size_t rng_logsize(rng_t *r, size_t lo, size_t hi)
{
    int lb = 63 - __builtin_clzll((unsigned long long)lo);
    int hb = 63 - __builtin_clzll((unsigned long long)hi);
    for (;;) {
        int b = lb + (int)rng_below(r, (uint64_t)(hb - lb + 1));
        size_t base = (size_t)1 << b;
        size_t s = base + (size_t)rng_below(r, base);
        if (s >= lo && s <= hi)
            return s;
    }
}

/* Mixed small sizes as seen in C programs (espresso, cfrac, alloc-test):
 * mostly 8-64 B, some up to 512 B, a few up to 4 KiB and rarely 32 KiB. */
static inline size_t rng_small_mix(rng_t *r)
{
    uint64_t p = rng_below(r, 1000);
    if (p < 700)
        return (size_t)rng_range(r, 8, 64);
    if (p < 920)
        return (size_t)rng_range(r, 65, 512);
    if (p < 995)
        return (size_t)rng_range(r, 513, 4096);
    return (size_t)rng_range(r, 4097, 32768);
}

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Scale factor from argv[1] (default 1.0), refusing nonsense. */
static inline double bench_scale(int argc, char **argv)
{
    if (argc < 2)
        return 1.0;
    char *end;
    double s = strtod(argv[1], &end);
    if (*end != '\0' || !(s > 0.0) || s > 1e6) {
        fprintf(stderr, "%s: bad scale '%s' (want a number > 0, 1 = full size)\n", argv[0], argv[1]);
        exit(2);
    }
    return s;
}

/* n scaled, at least min. */
static inline size_t scaled(double scale, double n, size_t min)
{
    double v = n * scale;
    return v < (double)min ? min : (size_t)v;
}

static inline void *xmalloc_or_die(size_t n)
{
    void *p = malloc(n);
    if (p == NULL && n != 0) {
        fprintf(stderr, "bench: malloc(%zu) failed\n", n);
        exit(3);
    }
    return p;
}

/* Write something into a block so the allocation cannot be elided and the
 * memory is really touched (first and last byte, plus one per page). */
static inline void touch(void *p, size_t n, unsigned char v)
{
    unsigned char *c = p;
    if (n == 0)
        return;
    for (size_t i = 0; i < n; i += 4096)
        c[i] = v;
    c[n - 1] = v;
}

/* Memory figures of this process, in KiB, read without allocating. */
typedef struct memfig {
    long rss_kb;      /* Rss from smaps_rollup */
    long pss_kb;      /* Pss */
    long pss_anon_kb; /* Pss_Anon + Pss_Shmem: heap, stacks, written data; a heap on a
                         memfd (miniheap's with mesh=1) is shmem */
    long hwm_kb;      /* VmHWM from /proc/self/status: peak RSS */
} memfig_t;

static inline long bench_field(const char *buf, const char *key)
{
    size_t kl = strlen(key);
    const char *p = buf;
    while ((p = strstr(p, key)) != NULL) {
        if ((p == buf || p[-1] == '\n') && p[kl] == ':')
            return strtol(p + kl + 1, NULL, 10);
        p += kl;
    }
    return -1;
}

static inline ssize_t bench_slurp(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, buf + got, cap - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
        if (got >= cap - 1)
            break;
    }
    close(fd);
    buf[got] = '\0';
    return (ssize_t)got;
}

static inline memfig_t mem_now(void)
{
    char buf[4096];
    memfig_t m = { -1, -1, -1, -1 };
    if (bench_slurp("/proc/self/smaps_rollup", buf, sizeof buf) > 0) {
        m.rss_kb = bench_field(buf, "Rss");
        m.pss_kb = bench_field(buf, "Pss");
        m.pss_anon_kb = bench_field(buf, "Pss_Anon");
        if (m.pss_anon_kb < 0)
            m.pss_anon_kb = bench_field(buf, "Anonymous");
        long shmem = bench_field(buf, "Pss_Shmem");
        if (shmem > 0 && m.pss_anon_kb >= 0)
            m.pss_anon_kb += shmem;
    }
    if (bench_slurp("/proc/self/status", buf, sizeof buf) > 0)
        m.hwm_kb = bench_field(buf, "VmHWM");
    return m;
}

#endif
