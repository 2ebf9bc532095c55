/* memory: how much memory an allocator gives back after the live heap drops.
 *
 * Usage: memory WORKLOAD [scale] [--idle-ms N] [--trace FILE] [--trace-ms N] [--trim]
 *
 * WORKLOAD is one of
 *   spike     ~90 MB of 16 B - 4 KiB blocks (log-uniform sizes), then free all
 *             but 1 in 50 at random, keeping the last 2 % allocated too;
 *   base      a 40 MB long-lived base, a spike to 90 MB, a drop back to ~42 MB
 *             (the spike's blocks freed as above);
 *   realloc   the spike, then one realloc of every survivor (to 1/8 more);
 *   sawtooth  10 cycles: open 50 MB, close it leaving 1 in 50 blocks alive
 *             plus the last 2 % (the spike's rule), so ~20 MB survive;
 *   redis     Redis's defragmentation test: fill 90 MB with 240 B values,
 *             delete a random half, refill as many 492 B values;
 *   large     256 MB of 64 KiB - 8 MiB blocks, free 90 % at random.
 * Sizes scale with the scale factor (1 = the sizes above).
 *
 * Resident memory is read from /proc/self/smaps_rollup (Pss, and Pss_Anon
 * plus Pss_Shmem, called "anon" below, as a heap on a memfd is shmem:
 * the heap's share) at start (the baseline: everything but the heap), right
 * after the drop, and once settled: after --idle-ms (1000) of sleep followed
 * by a little ordinary activity (5,000 small malloc/free pairs). The program
 * never calls malloc_trim, except with --trim (the "glibc+trim" variant),
 * which calls it once right after the drop.
 *
 * settled ratio = (Pss_Anon settled - Pss_Anon baseline) / live bytes,
 * where live bytes are the bytes requested by the blocks still allocated.
 * floor_kb is the page-granular floor for this heap layout: the 4 KiB pages
 * that the surviving blocks touch (what an allocator that returns every
 * free page, but moves nothing, would keep).
 *
 * --trace FILE samples Pss every --trace-ms (5) ms from a helper thread that
 * does not allocate, and writes "ms pss_kb anon_kb live_kb phase" lines.
 * The bookkeeping arrays are mmap'ed and touched before the baseline, so they
 * are not counted against the allocator.
 */
#include "bench.h"
#include <malloc.h>
#include <pthread.h>
#include <sys/mman.h>

#define MB (1024.0 * 1024.0)

static const char *phase_names[] = { "start", "fill", "drop", "idle", "activity", "done" };
enum { PH_START, PH_FILL, PH_DROP, PH_IDLE, PH_ACTIVITY, PH_DONE };

/* state shared with the trace thread */
static volatile int phase;
static size_t live_bytes; /* accessed atomically */
static volatile int trace_stop;

static size_t peak_live;
static int trace_ms = 5;

static void live_add(size_t n)
{
    size_t v = __atomic_add_fetch(&live_bytes, n, __ATOMIC_RELAXED);
    if (v > peak_live)
        peak_live = v;
}

static void live_sub(size_t n) { __atomic_sub_fetch(&live_bytes, n, __ATOMIC_RELAXED); }

/* ---- bookkeeping, outside the allocator ---- */

static void *map_zeroed(size_t n)
{
    if (n == 0)
        n = 1;
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("memory: mmap");
        exit(3);
    }
    memset(p, 0, n); /* fault it in before the baseline */
    return p;
}

typedef struct blocks {
    size_t n;
    void **p;
    uint32_t *size;
} blocks_t;

static blocks_t blocks_new(size_t n)
{
    blocks_t b = { n, map_zeroed(n * sizeof(void *)), map_zeroed(n * sizeof(uint32_t)) };
    return b;
}

/* count the blocks of sizes drawn from r until their total reaches bytes */
static size_t count_blocks(uint64_t seed, size_t bytes, size_t lo, size_t hi)
{
    rng_t r;
    rng_init(&r, seed);
    size_t n = 0, total = 0;
    while (total < bytes) {
        total += rng_logsize(&r, lo, hi);
        n++;
    }
    return n;
}

static void fill_sizes(blocks_t *b, size_t from, size_t count, uint64_t seed, size_t lo, size_t hi)
{
    rng_t r;
    rng_init(&r, seed);
    for (size_t i = 0; i < count; i++)
        b->size[from + i] = (uint32_t)rng_logsize(&r, lo, hi);
}

static void alloc_range(blocks_t *b, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        size_t n = b->size[i];
        b->p[i] = xmalloc_or_die(n);
        memset(b->p[i], (int)(i & 0x7f) | 1, n);
        live_add(n);
    }
}

static void free_one(blocks_t *b, size_t i)
{
    if (b->p[i] == NULL)
        return;
    free(b->p[i]);
    b->p[i] = NULL;
    live_sub(b->size[i]);
}

/* free [from, to) except 1 in keep_one_in at random and the last keep_tail_pct % */
static void drop_range(blocks_t *b, size_t from, size_t to, rng_t *r, unsigned keep_one_in,
                       unsigned keep_tail_pct)
{
    size_t tail = (to - from) * keep_tail_pct / 100;
    for (size_t i = from; i < to; i++) {
        int keep = (i >= to - tail) || rng_below(r, keep_one_in) == 0;
        if (!keep)
            free_one(b, i);
    }
}

/* ---- resident-over-time trace ---- */

typedef struct sample {
    uint32_t ms;
    uint32_t phase;
    long pss_kb, anon_kb;
    size_t live;
} sample_t;

static sample_t *samples;
static size_t nsamples, maxsamples;
static double trace_t0;

static void *trace_thread(void *arg)
{
    (void)arg;
    while (!trace_stop && nsamples < maxsamples) {
        memfig_t m = mem_now();
        sample_t *s = &samples[nsamples];
        s->ms = (uint32_t)((now_s() - trace_t0) * 1000.0);
        s->phase = (uint32_t)phase;
        s->pss_kb = m.pss_kb;
        s->anon_kb = m.pss_anon_kb;
        s->live = __atomic_load_n(&live_bytes, __ATOMIC_RELAXED);
        __atomic_store_n(&nsamples, nsamples + 1, __ATOMIC_RELEASE);
        sleep_ms(trace_ms);
    }
    return NULL;
}

static int write_trace(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        perror(path);
        return -1;
    }
    char line[160];
    int n = snprintf(line, sizeof line, "# ms pss_kb anon_kb live_kb phase\n");
    if (write(fd, line, (size_t)n) != n)
        goto fail;
    for (size_t i = 0; i < nsamples; i++) {
        sample_t *s = &samples[i];
        n = snprintf(line, sizeof line, "%u %ld %ld %zu %s\n", s->ms, s->pss_kb, s->anon_kb,
                     s->live / 1024, phase_names[s->phase]);
        if (write(fd, line, (size_t)n) != n)
            goto fail;
    }
    close(fd);
    return 0;
fail:
    perror(path);
    close(fd);
    return -1;
}

/* ---- page-granular floor for the survivors ---- */

static void sift(uint64_t *a, size_t start, size_t end)
{
    size_t root = start;
    while (2 * root + 1 < end) {
        size_t child = 2 * root + 1;
        if (child + 1 < end && a[child] < a[child + 1])
            child++;
        if (a[root] >= a[child])
            return;
        uint64_t t = a[root];
        a[root] = a[child];
        a[child] = t;
        root = child;
    }
}

static void heapsort_u64(uint64_t *a, size_t n)
{
    for (size_t i = n / 2; i-- > 0;)
        sift(a, i, n);
    for (size_t end = n; end-- > 1;) {
        uint64_t t = a[0];
        a[0] = a[end];
        a[end] = t;
        sift(a, 0, end);
    }
}

/* 4 KiB pages the live blocks of the tables span, each block counted apart */
static size_t pages_spanned(blocks_t *tabs, int ntabs)
{
    size_t n = 0;
    for (int t = 0; t < ntabs; t++)
        for (size_t i = 0; i < tabs[t].n; i++)
            if (tabs[t].p[i] != NULL) {
                uintptr_t a = (uintptr_t)tabs[t].p[i];
                n += ((a + tabs[t].size[i] - 1) >> 12) - (a >> 12) + 1;
            }
    return n;
}

/* distinct 4 KiB pages touched by the live blocks of the tables */
static size_t floor_pages(blocks_t *tabs, int ntabs)
{
    size_t n = pages_spanned(tabs, ntabs);
    size_t bytes = n * sizeof(uint64_t);
    uint64_t *pg = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (pg == MAP_FAILED)
        return 0;
    size_t k = 0;
    for (int t = 0; t < ntabs; t++)
        for (size_t i = 0; i < tabs[t].n; i++)
            if (tabs[t].p[i] != NULL) {
                uintptr_t a = (uintptr_t)tabs[t].p[i];
                for (uintptr_t q = a >> 12; q <= (a + tabs[t].size[i] - 1) >> 12; q++)
                    pg[k++] = q;
            }
    heapsort_u64(pg, k);
    size_t distinct = 0;
    for (size_t i = 0; i < k; i++)
        if (i == 0 || pg[i] != pg[i - 1])
            distinct++;
    munmap(pg, bytes ? bytes : 1);
    return distinct;
}

/* ---- what meshing could do at best ----
 * Meshing (Mesh, PLDI 2019) maps two virtual pages whose live bytes do not
 * overlap onto one physical page. The bound below is the physical pages left
 * when the survivors' pages are merged greedily (first fit, fullest first)
 * by their 16-byte granules, ignoring every constraint a real allocator has
 * (same size class, same slot layout, free slots rather than free bytes):
 * about the best meshing could do for these survivors (first fit is not
 * optimal, but close for pages this sparse). */

typedef struct page_occ {
    uint64_t page;
    uint64_t g[4]; /* 256 granules of 16 bytes */
} page_occ_t;

static int occ_count(const uint64_t *g)
{
    return __builtin_popcountll(g[0]) + __builtin_popcountll(g[1]) +
           __builtin_popcountll(g[2]) + __builtin_popcountll(g[3]);
}

static size_t mesh_pages(blocks_t *tabs, int ntabs)
{
    size_t n = pages_spanned(tabs, ntabs);
    if (n == 0)
        return 0;
    /* one key per (page, granule run): page << 16 | first << 8 | last */
    size_t kbytes = n * sizeof(uint64_t);
    uint64_t *key = map_zeroed(kbytes);
    size_t k = 0;
    for (int t = 0; t < ntabs; t++)
        for (size_t i = 0; i < tabs[t].n; i++)
            if (tabs[t].p[i] != NULL) {
                uintptr_t a = (uintptr_t)tabs[t].p[i], e = a + tabs[t].size[i] - 1;
                for (uintptr_t q = a >> 12; q <= e >> 12; q++) {
                    uintptr_t lo = q == a >> 12 ? (a & 4095) >> 4 : 0;
                    uintptr_t hi = q == e >> 12 ? (e & 4095) >> 4 : 255;
                    key[k++] = (uint64_t)q << 16 | lo << 8 | hi;
                }
            }
    heapsort_u64(key, k);
    size_t pbytes = k * sizeof(page_occ_t);
    page_occ_t *pg = map_zeroed(pbytes);
    size_t np = 0;
    for (size_t i = 0; i < k; i++) {
        uint64_t page = key[i] >> 16;
        if (np == 0 || pg[np - 1].page != page)
            pg[np++].page = page;
        for (unsigned b = (key[i] >> 8) & 255; b <= (key[i] & 255); b++)
            pg[np - 1].g[b >> 6] |= (uint64_t)1 << (b & 63);
    }
    /* fullest first: sort by occupancy (count in the high bits of a key) */
    for (size_t i = 0; i < np; i++)
        key[i] = (uint64_t)(256 - occ_count(pg[i].g)) << 40 | i;
    heapsort_u64(key, np);
    size_t bbytes = np * sizeof(page_occ_t);
    page_occ_t *bin = map_zeroed(bbytes);
    size_t nbins = 0, first_open = 0;
    for (size_t j = 0; j < np; j++) {
        const page_occ_t *p = &pg[key[j] & ((1ull << 40) - 1)];
        size_t b;
        /* a window of 4096 bins keeps this fast; full bins drop out */
        for (b = first_open; b < nbins && b < first_open + 4096; b++)
            if (!((bin[b].g[0] & p->g[0]) | (bin[b].g[1] & p->g[1]) |
                  (bin[b].g[2] & p->g[2]) | (bin[b].g[3] & p->g[3])))
                break;
        if (b == nbins || b == first_open + 4096)
            b = nbins++;
        for (int w = 0; w < 4; w++)
            bin[b].g[w] |= p->g[w];
        while (first_open < nbins && occ_count(bin[first_open].g) > 240)
            first_open++;
    }
    munmap(key, kbytes);
    munmap(pg, pbytes);
    munmap(bin, bbytes);
    return nbins;
}

/* ---- the settle step ---- */

static void little_activity(void)
{
    void *ring[64] = { 0 };
    rng_t r;
    rng_init(&r, BENCH_SEED ^ 0xac71);
    for (int i = 0; i < 5000; i++) {
        int k = i & 63;
        free(ring[k]);
        size_t n = (size_t)rng_range(&r, 16, 256);
        ring[k] = xmalloc_or_die(n);
        memset(ring[k], 1, n);
    }
    for (int k = 0; k < 64; k++)
        free(ring[k]);
}

_Noreturn static void usage(void)
{
    fprintf(stderr, "usage: memory spike|base|realloc|sawtooth|redis|large [scale] "
                    "[--idle-ms N] [--trace FILE] [--trace-ms N] [--trim]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    const char *wl = argv[1];
    double scale = 1.0;
    long idle_ms = 1000;
    const char *trace = NULL;
    int trim = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--idle-ms") == 0 && i + 1 < argc)
            idle_ms = atol(argv[++i]);
        else if (strcmp(argv[i], "--trace") == 0 && i + 1 < argc)
            trace = argv[++i];
        else if (strcmp(argv[i], "--trace-ms") == 0 && i + 1 < argc)
            trace_ms = atoi(argv[++i]);
        else if (strcmp(argv[i], "--trim") == 0)
            trim = 1;
        else if (i == 2) {
            char *a[2] = { argv[0], argv[i] };
            scale = bench_scale(2, a);
        } else
            usage();
    }
    if (trace_ms < 1)
        trace_ms = 1;

    /* plan the blocks first (bookkeeping outside the allocator) */
    enum { W_SPIKE, W_BASE, W_REALLOC, W_SAW, W_REDIS, W_LARGE } w;
    if (strcmp(wl, "spike") == 0)
        w = W_SPIKE;
    else if (strcmp(wl, "base") == 0)
        w = W_BASE;
    else if (strcmp(wl, "realloc") == 0)
        w = W_REALLOC;
    else if (strcmp(wl, "sawtooth") == 0)
        w = W_SAW;
    else if (strcmp(wl, "redis") == 0)
        w = W_REDIS;
    else if (strcmp(wl, "large") == 0)
        w = W_LARGE;
    else
        usage();

    const size_t spike_bytes = (size_t)(90 * MB * scale);
    const size_t base_bytes = (size_t)(40 * MB * scale);
    const size_t saw_bytes = (size_t)(50 * MB * scale);
    const size_t large_bytes = (size_t)(256 * MB * scale);
    const int saw_cycles = 10;
    blocks_t tab[2];
    int ntab = 1;
    size_t n1 = 0, n2 = 0;
    switch (w) {
    case W_SPIKE:
    case W_REALLOC:
        n1 = count_blocks(BENCH_SEED, spike_bytes, 16, 4096);
        tab[0] = blocks_new(n1);
        fill_sizes(&tab[0], 0, n1, BENCH_SEED, 16, 4096);
        break;
    case W_BASE:
        n1 = count_blocks(BENCH_SEED, base_bytes, 16, 4096);
        n2 = count_blocks(BENCH_SEED + 1, spike_bytes - base_bytes, 16, 4096);
        tab[0] = blocks_new(n1 + n2);
        fill_sizes(&tab[0], 0, n1, BENCH_SEED, 16, 4096);
        fill_sizes(&tab[0], n1, n2, BENCH_SEED + 1, 16, 4096);
        break;
    case W_SAW:
        n1 = count_blocks(BENCH_SEED, saw_bytes, 16, 4096);
        tab[0] = blocks_new(n1 * (size_t)saw_cycles);
        for (int c = 0; c < saw_cycles; c++)
            fill_sizes(&tab[0], n1 * (size_t)c, n1, BENCH_SEED + (uint64_t)c, 16, 4096);
        break;
    case W_REDIS:
        n1 = spike_bytes / 240;
        if (n1 < 2)
            n1 = 2;
        tab[0] = blocks_new(n1);
        for (size_t i = 0; i < n1; i++)
            tab[0].size[i] = 240;
        tab[1] = blocks_new(n1); /* the refill, at most n1 values */
        ntab = 2;
        break;
    case W_LARGE:
        n1 = count_blocks(BENCH_SEED, large_bytes, 64 << 10, 8 << 20);
        tab[0] = blocks_new(n1);
        fill_sizes(&tab[0], 0, n1, BENCH_SEED, 64 << 10, 8 << 20);
        break;
    }

    pthread_t tracer;
    if (trace != NULL) {
        maxsamples = (size_t)(120000 / trace_ms) + 1000; /* two minutes */
        samples = map_zeroed(maxsamples * sizeof(sample_t));
    }
    /* let the allocator initialise before the baseline */
    free(xmalloc_or_die(16));
    memfig_t base = mem_now();
    if (trace != NULL) {
        trace_t0 = now_s();
        if (pthread_create(&tracer, NULL, trace_thread, NULL) != 0) {
            fprintf(stderr, "memory: cannot start the trace thread\n");
            return 3;
        }
        sleep_ms(3 * trace_ms);
    }

    rng_t r;
    rng_init(&r, BENCH_SEED ^ 0xd20b);
    double t0 = now_s();
    phase = PH_FILL;
    switch (w) {
    case W_SPIKE:
    case W_REALLOC:
        alloc_range(&tab[0], 0, n1);
        phase = PH_DROP;
        drop_range(&tab[0], 0, n1, &r, 50, 2);
        if (w == W_REALLOC) {
            for (size_t i = 0; i < n1; i++) {
                if (tab[0].p[i] == NULL)
                    continue;
                size_t old = tab[0].size[i], n = old + old / 8 + 1;
                void *q = realloc(tab[0].p[i], n);
                if (q == NULL) {
                    fprintf(stderr, "memory: realloc failed\n");
                    return 3;
                }
                memset((char *)q + old, 2, n - old);
                tab[0].p[i] = q;
                tab[0].size[i] = (uint32_t)n;
                live_add(n - old);
            }
        }
        break;
    case W_BASE:
        alloc_range(&tab[0], 0, n1);
        alloc_range(&tab[0], n1, n1 + n2);
        phase = PH_DROP;
        drop_range(&tab[0], n1, n1 + n2, &r, 50, 2);
        break;
    case W_SAW:
        for (int c = 0; c < saw_cycles; c++) {
            phase = PH_FILL;
            alloc_range(&tab[0], n1 * (size_t)c, n1 * (size_t)(c + 1));
            phase = PH_DROP;
            drop_range(&tab[0], n1 * (size_t)c, n1 * (size_t)(c + 1), &r, 50, 2);
        }
        break;
    case W_REDIS: {
        alloc_range(&tab[0], 0, n1);
        phase = PH_DROP;
        size_t deleted = 0;
        for (size_t i = 0; i < n1; i++)
            if (rng_below(&r, 2) == 0) {
                free_one(&tab[0], i);
                deleted++;
            }
        phase = PH_FILL;
        for (size_t i = 0; i < deleted; i++)
            tab[1].size[i] = 492;
        alloc_range(&tab[1], 0, deleted);
        break;
    }
    case W_LARGE:
        alloc_range(&tab[0], 0, n1);
        phase = PH_DROP;
        for (size_t i = 0; i < n1; i++)
            if (rng_below(&r, 10) != 0)
                free_one(&tab[0], i);
        break;
    }
    if (trim)
        malloc_trim(0);
    double t1 = now_s();
    memfig_t drop = mem_now();

    phase = PH_IDLE;
    sleep_ms(idle_ms);
    phase = PH_ACTIVITY;
    double t2 = now_s();
    little_activity();
    double t3 = now_s();
    memfig_t settled = mem_now();
    phase = PH_DONE;
    if (trace != NULL) {
        sleep_ms(3 * trace_ms);
        trace_stop = 1;
        pthread_join(tracer, NULL);
    }

    size_t live = __atomic_load_n(&live_bytes, __ATOMIC_RELAXED);
    size_t floor_kb = floor_pages(tab, ntab) * 4;
    size_t mesh_kb = mesh_pages(tab, ntab) * 4;
    double lv = live ? (double)live : 1.0;
    printf("RESULT workload=%s time_s=%.6f live_bytes=%zu peak_live_bytes=%zu "
           "base_pss_kb=%ld base_anon_kb=%ld drop_pss_kb=%ld drop_anon_kb=%ld "
           "settled_pss_kb=%ld settled_anon_kb=%ld hwm_kb=%ld floor_kb=%zu mesh_kb=%zu "
           "drop_ratio=%.3f settled_ratio=%.3f floor_ratio=%.3f mesh_ratio=%.3f trim=%d\n",
           wl, (t1 - t0) + (t3 - t2), live, peak_live, base.pss_kb, base.pss_anon_kb,
           drop.pss_kb, drop.pss_anon_kb, settled.pss_kb, settled.pss_anon_kb, settled.hwm_kb,
           floor_kb, mesh_kb, (double)(drop.pss_anon_kb - base.pss_anon_kb) * 1024.0 / lv,
           (double)(settled.pss_anon_kb - base.pss_anon_kb) * 1024.0 / lv,
           (double)floor_kb * 1024.0 / lv, (double)mesh_kb * 1024.0 / lv, trim);
    if (trace != NULL && write_trace(trace) != 0)
        return 1;
    for (int t = 0; t < ntab; t++)
        for (size_t i = 0; i < tab[t].n; i++)
            free(tab[t].p[i]);
    return 0;
}
