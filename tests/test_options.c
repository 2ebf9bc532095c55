/* Every option of the README's table does what it says (issue #10).
 *
 * Each case runs in a child process of its own: mh_reset(), the options,
 * then a small program whose outcome depends on the option, run once with
 * the option off and once on (or with two values). A case passes only if
 * the two runs differ as the option says; so an option that had no effect
 * (mismatch=0 followed canary) fails here.
 */
#include "mh_test.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)

/* ---- reports ------------------------------------------------------------- */
static int nreports;
static char kinds[8][40];
static char messages[2][4096];

static void record(const mh_error_t *e, void *arg)
{
    (void)arg;
    if (nreports < 8)
        snprintf(kinds[nreports], sizeof kinds[0], "%s", e->kind);
    if (nreports < 2)
        snprintf(messages[nreports], sizeof messages[0], "%s", e->message);
    nreports++;
}

static int reported(const char *kind)
{
    for (int i = 0; i < nreports && i < 8; i++)
        if (!strcmp(kinds[i], kind))
            return 1;
    return 0;
}

static void set(const char *opts)
{
    char full[256];
    mh_reset();
    snprintf(full, sizeof full, "abort_on_error=0:leak_report=0:%s", opts);
    REQUIRE(mh_set_options(full) == 0, "mh_set_options(\"%s\") rejected", full);
    mh_set_error_handler(record, NULL);
    nreports = 0;
}

/* Permissions of the page holding addr, from /proc/self/maps ("rw-p", "---p"). */
static void perms_at(uintptr_t addr, char out[5])
{
    strcpy(out, "none");
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char perms[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perms) == 3 && addr >= lo && addr < hi) {
            memcpy(out, perms, 5);
            break;
        }
    }
    fclose(f);
}

/* ---- the cases: each returns what it observed, the caller compares ---------- */

/* Overflow by one, then free: was it reported? */
static int obs_overflow(const char *opts)
{
    set(opts);
    char *p = mh_malloc(24);
    p[24] = 'X';
    mh_free(p);
    return reported("heap-buffer-overflow");
}

static int obs_underflow(const char *opts)
{
    set(opts);
    char *p = mh_malloc(24);
    p[-1] = 'X';
    mh_free(p);
    return reported("heap-buffer-underflow");
}

/* Write after free at `off` in a 120-byte block, then take it again. */
static int obs_write_after_free(const char *opts, size_t off)
{
    set(opts);
    char *p = mh_malloc(120);
    mh_free(p);
    p[off] = 'X';
    for (int i = 0; i < 4; i++) {
        void *q = mh_malloc(120);
        if (q == p)
            break;
    }
    return reported("use-after-free");
}

static int obs_fill(const char *opts)
{
    set(opts);
    unsigned char *p = mh_malloc(100);
    memset(p, 0x11, 100);
    mh_free(p);
    p = mh_malloc(100);
    int filled = 1;
    for (int i = 0; i < 100; i++)
        filled &= p[i] == 0xbe;
    mh_free(p);
    return filled;
}

/* Is a freed block handed out again by the next 100 allocations? */
static int obs_reuse(const char *opts)
{
    set(opts);
    void *p = mh_malloc(200);
    mh_free(p);
    int again = 0;
    void *keep[100];
    for (int i = 0; i < 100; i++) {
        keep[i] = mh_malloc(200);
        again |= keep[i] == p;
    }
    for (int i = 0; i < 100; i++)
        mh_free(keep[i]);
    return again;
}

/* quarantine_mb is one budget for the process. `others` threads each
 * quarantine `each` blocks of 2 KiB and wait; this thread frees a 200-byte
 * block, then 200 blocks of 2 KiB (400 KiB): is the first block handed out
 * again by the next malloc(200)? Alone, with 1 MiB, it stays in quarantine.
 * With 3 others holding 300 KiB each the process is over the budget and
 * this thread over its fair share (256 KiB), so it has left. With 3 others
 * holding one block each the budget is not used up: it stays. (Rings add
 * to the process's total in 64 KiB steps: the figures keep clear of them.) */
static pthread_barrier_t hold_barrier;
static void *hold_some(void *arg)
{
    int each = *(const int *)arg;
    void *b[150];
    for (int i = 0; i < each; i++)
        b[i] = mh_malloc(2000);
    for (int i = 0; i < each; i++)
        mh_free(b[i]);
    pthread_barrier_wait(&hold_barrier); /* quarantined */
    pthread_barrier_wait(&hold_barrier); /* the main thread is done */
    return NULL;
}

static int obs_quarantine_share(const char *opts, int others, int each)
{
    set(opts);
    pthread_t t[3];
    pthread_barrier_init(&hold_barrier, NULL, (unsigned)others + 1);
    for (int i = 0; i < others; i++)
        REQUIRE(pthread_create(&t[i], NULL, hold_some, &each) == 0, "pthread_create failed");
    if (others)
        pthread_barrier_wait(&hold_barrier);
    enum { N = 200 };
    void *b[N];
    for (int i = 0; i < N; i++)
        b[i] = mh_malloc(2000);
    void *p = mh_malloc(200);
    mh_free(p);
    for (int i = 0; i < N; i++)
        mh_free(b[i]);
    void *q = mh_malloc(200);
    int again = q == p;
    mh_free(q);
    if (others)
        pthread_barrier_wait(&hold_barrier);
    for (int i = 0; i < others; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&hold_barrier);
    return again;
}

/* The cached_bytes a second thread adds by running work(arg), measured
 * while it still runs (its cache in place). */
typedef struct thread_work {
    void (*work)(void *);
    void *arg;
} thread_work_t;
static pthread_barrier_t work_barrier;
static void *work_then_wait(void *p)
{
    thread_work_t *w = p;
    w->work(w->arg);
    pthread_barrier_wait(&work_barrier); /* done: the main thread measures */
    pthread_barrier_wait(&work_barrier);
    return NULL;
}
static long cached_by_thread(void (*work)(void *), void *arg)
{
    thread_work_t w = {work, arg};
    mh_stats_t before, after;
    mh_stats(&before);
    pthread_t t;
    pthread_barrier_init(&work_barrier, NULL, 2);
    REQUIRE(pthread_create(&t, NULL, work_then_wait, &w) == 0, "pthread_create failed");
    pthread_barrier_wait(&work_barrier);
    mh_stats(&after);
    pthread_barrier_wait(&work_barrier);
    pthread_join(t, NULL);
    pthread_barrier_destroy(&work_barrier);
    return (long)after.cached_bytes - (long)before.cached_bytes;
}

/* Bytes a second thread's cache holds after it frees 64 of the main
 * thread's 2000-byte blocks (class 2048) and allocates none: a bin flushes
 * half of itself when full, so it ends with between half its cap and its
 * cap. Every other block stays live, so no slab empties (an empty slab
 * counts in cached_bytes too). */
static void free_odd_blocks(void *arg)
{
    void **b = arg;
    for (int i = 1; i < 128; i += 2)
        mh_free(b[i]);
}

static long obs_cache_held(const char *opts)
{
    set(opts);
    static void *b[128];
    for (int i = 0; i < 128; i++)
        b[i] = mh_malloc(2000);
    long held = cached_by_thread(free_odd_blocks, b);
    for (int i = 0; i < 128; i += 2)
        mh_free(b[i]);
    return held;
}

/* Bytes a new thread's cache holds after its first malloc of 1000 B (class
 * 1024, a bin of 32 blocks): the first refill takes 4 blocks, so 3 wait in
 * the cache (it took half the bin, 16, before). The main thread allocates a
 * block of the class first, so the slab exists and the refill takes no
 * empty one (which counts in cached_bytes too). */
static void first_malloc(void *arg)
{
    *(void **)arg = mh_malloc(1000);
}

static long obs_first_fill(const char *opts)
{
    set(opts);
    void *mine = mh_malloc(1000), *theirs = NULL;
    long held = cached_by_thread(first_malloc, &theirs);
    mh_free(theirs);
    mh_free(mine);
    return held;
}

/* An exiting thread leaves its cache for the next thread. Thread A mallocs
 * 8 blocks of 1000 B, frees them in order and exits; thread B's first
 * malloc(1000) takes A's last freed block, the top of A's cache (with the
 * cache flushed at A's exit, B took 4 blocks from the slab, the lowest
 * first in fast mode: A's first). Then the cache sits unused, both threads
 * gone, for decay_ms, and the program makes a give-back tick: thread C's
 * first malloc(1000) must not take B's block from it. */
static void *spare_blocks[8];
static void *eight_blocks(void *arg)
{
    (void)arg;
    for (int i = 0; i < 8; i++)
        spare_blocks[i] = mh_malloc(1000);
    for (int i = 0; i < 8; i++)
        mh_free(spare_blocks[i]);
    return NULL;
}
static void *one_block(void *arg)
{
    void *p = mh_malloc(1000);
    mh_free(p);
    *(void **)arg = p;
    return NULL;
}
static void obs_spare(const char *opts, int *reused, int *released)
{
    set(opts);
    void *mine = mh_malloc(64); /* (this thread has a cache: it takes no spare) */
    void *b = NULL, *c = NULL;
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, eight_blocks, NULL) == 0, "pthread_create failed");
    pthread_join(t, NULL);
    REQUIRE(pthread_create(&t, NULL, one_block, &b) == 0, "pthread_create failed");
    pthread_join(t, NULL);
    usleep(150 * 1000);
    for (int i = 0; i < 1000; i++) /* (ticks: one every 256 operations) */
        mh_free(mh_malloc(64));
    REQUIRE(pthread_create(&t, NULL, one_block, &c) == 0, "pthread_create failed");
    pthread_join(t, NULL);
    mh_free(mine);
    *reused = b == spare_blocks[7];
    *released = c != b;
}

/* Are 64 fresh blocks of 48 B handed out in address order (one way or the
 * other: a thread cache hands out its batch last first)? */
static int obs_sequential(const char *opts)
{
    set(opts);
    char *p[64];
    int up = 1, down = 1;
    for (int i = 0; i < 64; i++) {
        p[i] = mh_malloc(48);
        if (i && p[i] != p[i - 1] + 48)
            up = 0;
        if (i && p[i] != p[i - 1] - 48)
            down = 0;
    }
    int seq = up || down;
    for (int i = 0; i < 64; i++)
        mh_free(p[i]);
    return seq;
}

/* Does poke() fault, reported (the report's abort), in a child run with
 * opts? */
static int write_faults(const char *opts, void (*poke)(void))
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        mh_reset();
        mh_set_options(opts);
        int fd = open("/dev/null", 1);
        dup2(fd, 2);
        poke();
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
}

/* Is the last page of the first 4 KiB-block slab a guard page? Told by a
 * write to it: /proc/self/maps shows an mprotect guard, but not one in the
 * page tables (MADV_GUARD_INSTALL). */
static void write_slab_end(void)
{
    char *p = mh_malloc(4096);
    *(volatile char *)(((uintptr_t)p & ~(uintptr_t)0xffff) + 60 * KiB) = 1;
}
static int obs_slab_guard(const char *opts) { return write_faults(opts, write_slab_end); }

/* Is a freed 256 KiB block's mapping inaccessible while it is cached? */
static int obs_sealed(const char *opts)
{
    set(opts);
    void *p = mh_malloc(256 * KiB);
    memset(p, 1, 256 * KiB);
    mh_free(p);
    char perms[5];
    perms_at((uintptr_t)p + 128 * KiB, perms);
    return !strcmp(perms, "---p");
}

/* Does a 24-byte block end right before an inaccessible page? (The third
 * one: sampling starts after a random count of at most 2 * sample_rate.) */
static int obs_sampled(const char *opts)
{
    set(opts);
    char *p = NULL;
    for (int i = 0; i < 3; i++)
        p = mh_malloc(24);
    uintptr_t next = ((uintptr_t)p + 24 + 4095) & ~(uintptr_t)4095;
    char perms[5];
    perms_at(next, perms);
    int sampled = next - ((uintptr_t)p + 24) < 64 && !strcmp(perms, "---p");
    mh_free(p);
    return sampled;
}

static __attribute__((noinline)) void *alloc_deep(int depth)
{
    if (depth == 0)
        return mh_malloc(40);
    void *p = alloc_deep(depth - 1);
    __asm__ volatile("" ::: "memory");
    return p;
}

/* Frames under "allocated by" in a double-free report (-1: no such section). */
static int obs_alloc_frames(const char *opts)
{
    set(opts);
    void *p = alloc_deep(12);
    mh_free(p);
    mh_free(opaque_ptr(p));
    const char *s = strstr(messages[0], "allocated by");
    if (nreports != 1 || !s)
        return -1;
    int frames = 0;
    for (s = strchr(s, '\n'); s && !strncmp(s + 1, "    #", 5); s = strchr(s + 1, '\n'))
        frames++;
    return frames;
}

static int obs_sized_free_smaller(const char *opts)
{
    set(opts);
    void *p = mh_malloc(24);
    mh_free_sized(p, 16);
    int r = reported("size-mismatch");
    if (r)
        mh_free(p); /* left allocated by the report */
    return r;
}

/* Overflow by one of a live block, then one malloc: reported then? */
static int obs_check_every(const char *opts)
{
    set(opts);
    char *p = mh_malloc(24);
    p[24] = 'X';
    void *q = mh_malloc(10);
    int r = reported("heap-buffer-overflow");
    p[24] = 0; /* (wrong canary byte: the free reports it again, uncounted) */
    (void)q;
    return r;
}


/* Bytes given back (madvise) after 16 MiB freed, a pause and some activity. */
static uint64_t obs_purged(const char *opts)
{
    set(opts);
    void *b[4096];
    for (int i = 0; i < 4096; i++)
        b[i] = mh_malloc(4000);
    mh_stats_t st;
    mh_stats(&st);
    uint64_t before = st.purged_bytes; /* (the purge thread may start at the first frees) */
    for (int i = 0; i < 4096; i++)
        mh_free(b[i]);
    usleep(50000);
    for (int i = 0; i < 2000; i++)
        mh_free(mh_malloc(64));
    mh_stats(&st);
    return st.purged_bytes - before;
}

/* Metadata grown by 32 MiB of small blocks of 64 sizes (some 500 slabs),
 * and what of it is still kept 100 ms after they were all freed. */
/* Bytes given back while the heap grows in another class: 24 MiB of 2 KiB
 * blocks, 1 in 32 kept (one a slab: their other pages are free), 150 ms
 * of rest, then 24 MiB of 3 KiB blocks, which take fresh units. */
static uint64_t obs_growth(const char *opts)
{
    set(opts);
    enum { N = 12288 };
    static void *a[N], *b[N];
    mh_trim(0);
    for (int i = 0; i < N; i++)
        a[i] = mh_malloc(2000);
    for (int i = 0; i < N; i++)
        if (i % 32)
            mh_free(a[i]);
    usleep(150000);
    mh_stats_t st;
    mh_stats(&st);
    uint64_t before = st.purged_bytes;
    for (int i = 0; i < 8192; i++)
        b[i] = mh_malloc(3000);
    mh_stats(&st);
    for (int i = 0; i < 8192; i++)
        mh_free(b[i]);
    for (int i = 0; i < N; i += 32)
        mh_free(a[i]);
    return st.purged_bytes - before;
}

/* How much the resident estimate grows when 768 KiB of a new class are
 * allocated while a miniheap has 1 MiB of free units given back (low) and
 * 1 MiB of free units still resident (high): a new slab should take the
 * resident ones (decay_ms=60000 gives nothing back meanwhile). */
static size_t obs_resident_reuse(const char *opts)
{
    set(opts);
    enum { N = 512 };
    static void *x[N], *y[N], *z[N];
    mh_trim(0);
    for (int i = 0; i < N; i++)
        x[i] = mh_malloc(2000);
    for (int i = 0; i < N; i++)
        y[i] = mh_malloc(2000);
    for (int i = 0; i < N; i++)
        mh_free(x[i]);
    mh_trim(0); /* x's units are given back */
    for (int i = 0; i < N; i++)
        mh_free(y[i]); /* y's stay resident */
    mh_stats_t st;
    mh_stats(&st);
    size_t before = st.resident_bytes;
    for (int i = 0; i < N / 2; i++)
        z[i] = mh_malloc(3000);
    mh_stats(&st);
    for (int i = 0; i < N / 2; i++)
        mh_free(z[i]);
    return st.resident_bytes > before ? st.resident_bytes - before : 0;
}

static void obs_metadata(const char *opts, size_t *grown, size_t *kept)
{
    set(opts);
    static void *b[65536];
    mh_stats_t st;
    mh_trim(0); /* what earlier cases left goes back first */
    mh_stats(&st);
    size_t base = st.metadata_bytes, n = 0;
    for (size_t total = 0; total < 32 * MiB && n < 65536; n++) {
        size_t size = 16 + (n % 64) * 32;
        b[n] = mh_malloc(size);
        total += size;
    }
    mh_stats(&st);
    *grown = st.metadata_bytes - base;
    for (size_t i = 0; i < n; i++)
        mh_free(b[i]);
    usleep(100000);
    for (int i = 0; i < 2000; i++)
        mh_free(mh_malloc(64));
    mh_stats(&st);
    *kept = st.metadata_bytes > base ? st.metadata_bytes - base : 0;
}

/* Miniheaps still mapped after 24 MiB of 100 KiB blocks came and went. */
static size_t obs_miniheaps_kept(const char *opts)
{
    set(opts);
    void *b[240];
    for (int i = 0; i < 240; i++)
        b[i] = mh_malloc(100 * KiB);
    for (int i = 0; i < 240; i++)
        mh_free(b[i]);
    usleep(50000);
    for (int i = 0; i < 2000; i++)
        mh_free(mh_malloc(64));
    mh_stats_t st;
    mh_stats(&st);
    return st.miniheaps;
}

static size_t obs_large_cached(const char *opts)
{
    set(opts);
    void *p = mh_malloc(MiB);
    mh_free(p);
    mh_stats_t st;
    mh_stats(&st);
    return st.cached_bytes;
}

/* Does realloc (same size) move the last block of a nearly empty slab? */
static int obs_floats(const char *opts)
{
    set(opts);
    char *p[128];
    for (int i = 0; i < 128; i++)
        p[i] = mh_malloc(1024);
    /* Two slabs of 64: the first keeps one block, the second has one free. */
    for (int i = 1; i < 64; i++)
        mh_free(p[i]);
    mh_free(p[100]);
    void *q = mh_realloc(p[0], 1024);
    int moved = q != p[0];
    mh_free(q);
    for (int i = 64; i < 128; i++)
        if (i != 100)
            mh_free(p[i]);
    return moved;
}

/* Bytes in caches after one of two blocks is freed. */
static size_t obs_cached_small(const char *opts)
{
    set(opts);
    void *a = mh_malloc(1000), *b = mh_malloc(1000);
    mh_free(a);
    mh_stats_t st;
    mh_stats(&st);
    mh_free(b);
    return st.cached_bytes;
}

/* Spans meshed after 2 MiB of 64-byte blocks, 31 in 32 freed (scattered,
 * so that spans differ), are trimmed; the survivors must keep their bytes. */
static uint64_t obs_meshes(const char *opts)
{
    set(opts);
    mh_stats_t st0;
    mh_stats(&st0);
    enum { N = 32768 };
    static unsigned char *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = mh_malloc(64);
        memset(p[i], i & 0xff, 64);
    }
    for (int i = 0; i < N; i++)
        if (mix64((uint64_t)i) % 32) {
            mh_free(p[i]);
            p[i] = NULL;
        }
    mh_trim(0);
    mh_stats_t st;
    mh_stats(&st);
    for (int i = 0; i < N; i++)
        if (p[i]) {
            CHECK(p[i][0] == (i & 0xff) && p[i][63] == (i & 0xff), "mesh: a survivor lost its bytes");
            mh_free(p[i]);
        }
    return st.meshes - st0.meshes;
}

/* arenas: does a second thread take its first block from the slab the
 * first thread's came from? Round-robin, two arenas give the two threads'
 * new caches two arenas, and so two slabs. (background=0: the purge thread
 * makes no cache in between.) */
static void *alloc64(void *arg)
{
    *(void **)arg = mh_malloc(64);
    return NULL;
}
static int obs_same_slab(const char *opts)
{
    set(opts);
    void *a = mh_malloc(64), *b = NULL;
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, alloc64, &b) == 0, "pthread_create failed");
    pthread_join(t, NULL);
    int same = b && ((uintptr_t)a >> 16) == ((uintptr_t)b >> 16); /* a 64-byte class's slab is one 64 KiB unit */
    mh_free(a);
    mh_free(b);
    return same;
}

/* Mappings in /proc/self/maps. */
static int count_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    int n = 0;
    char line[512];
    while (fgets(line, sizeof line, f))
        n++;
    fclose(f);
    return n;
}

/* Can this kernel put guards in the page tables (MADV_GUARD_INSTALL, 6.13)? */
static int kernel_has_light_guards(void)
{
    char *m = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return 0;
    int ok = madvise(m + 4096, 4096, 102) == 0;
    munmap(m, 2 * 4096);
    return ok;
}

/* How many mappings 200 guarded slabs (3,000 blocks of 4 KiB) add. */
static int obs_guard_mappings(const char *opts)
{
    set(opts);
    static void *p[3000];
    int before = count_maps();
    for (int i = 0; i < 3000; i++)
        p[i] = mh_malloc(4096);
    int after = count_maps();
    for (int i = 0; i < 3000; i++)
        mh_free(p[i]);
    return after - before;
}

/* Does writing to malloc(0)'s block fault? */
static void write_zero_block(void)
{
    volatile char *p = mh_malloc(0);
    p[0] = 1;
    mh_free((void *)p);
}
static int obs_zero_faults(const char *opts) { return write_faults(opts, write_zero_block); }

/* abort_on_error: does a double free end the process (SIGABRT)? */
static int obs_aborts(const char *opts)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        mh_reset();
        mh_set_options(opts);
        mh_set_error_handler(record, NULL);
        int fd = open("/dev/null", 0);
        dup2(fd, 2);
        void *p = mh_malloc(10);
        mh_free(p);
        mh_free(opaque_ptr(p));
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
}

static int obs_leak_exit(const char *opts);

/* ---- the table ------------------------------------------------------------- */
#define EXPECT_DIFF(name, off, on, fmt)                                                                      \
    do {                                                                                                     \
        CHECK((off) != (on), "%s: the same outcome with and without (" fmt ")", name, off);                 \
        printf("  %-16s off: " fmt ", on: " fmt "\n", name, off, on);                                        \
    } while (0)

static void run_all(void)
{
    int a, b;
    a = obs_overflow("mode=fast"), b = obs_overflow("mode=hardened");
    CHECK(!a && b, "mode: overflow reported fast %d hardened %d", a, b);
    printf("  %-16s overflow by 1 reported: fast %d, hardened %d\n", "mode", a, b);
    a = obs_overflow("mode=hardened:canary=0"), b = obs_overflow("mode=fast:canary=1");
    CHECK(!a && b, "canary: hardened canary=0 %d, fast canary=1 %d", a, b);
    printf("  %-16s overflow by 1 reported: hardened canary=0 %d, fast canary=1 %d\n", "canary", a, b);
    a = obs_underflow("mode=debug:underflow=0"), b = obs_underflow("mode=hardened:underflow=1");
    CHECK(!a && b, "underflow: debug underflow=0 %d, hardened underflow=1 %d", a, b);
    printf("  %-16s underflow by 1 reported: debug underflow=0 %d, hardened underflow=1 %d\n", "underflow", a, b);
    int p0 = obs_write_after_free("mode=fast:poison=0", 0), p1_0 = obs_write_after_free("mode=fast:poison=1", 0),
        p1_40 = obs_write_after_free("mode=fast:poison=1", 40), p2_40 = obs_write_after_free("mode=fast:poison=2", 40);
    CHECK(!p0 && p1_0 && !p1_40 && p2_40, "poison: 0@0 %d, 1@0 %d, 1@40 %d, 2@40 %d", p0, p1_0, p1_40, p2_40);
    printf("  %-16s write after free caught: poison=0 at 0: %d, poison=1 at 0: %d, at 40: %d, poison=2 at 40: %d\n",
           "poison", p0, p1_0, p1_40, p2_40);
    a = obs_fill("mode=fast:fill_new=0"), b = obs_fill("mode=fast:fill_new=1");
    CHECK(!a && b, "fill_new: 0xbe fill with 0: %d, with 1: %d", a, b);
    printf("  %-16s new block reads 0xbe: %d / %d\n", "fill_new", a, b);
    a = obs_reuse("mode=hardened:random=0:quarantine_mb=0"), b = obs_reuse("mode=hardened:random=0:quarantine_mb=1");
    CHECK(a && !b, "quarantine_mb: freed block reused with 0: %d, with 1: %d", a, b);
    printf("  %-16s freed block reused within 100 allocations: 0 MiB %d, 1 MiB %d\n", "quarantine_mb", a, b);
    a = obs_quarantine_share("mode=hardened:random=0:quarantine_mb=1", 0, 0);
    b = obs_quarantine_share("mode=hardened:random=0:quarantine_mb=1", 3, 150);
    int c = obs_quarantine_share("mode=hardened:random=0:quarantine_mb=1", 3, 1);
    CHECK(!a && b && !c, "quarantine_mb: a block out of quarantine after 400 KiB of frees of 1 MiB, alone: %d, "
          "with 3 other threads holding 300 KiB each: %d, with 3 holding one block each: %d", a, b, c);
    printf("  %-16s out of quarantine after 400 KiB of 1 MiB: alone %d, 3 other threads holding 300 KiB each %d, "
           "one block each %d\n", "quarantine_mb", a, b, c);
    /* 2048-byte bins: 16 blocks with 32 KiB (8 to 16 stay), 4 with 8 KiB
     * (2 to 4 stay). decay_ms keeps a give-back tick from emptying it. */
    long first_fast = obs_first_fill("mode=fast:decay_ms=600000");
    long first_hard = obs_first_fill("mode=hardened:decay_ms=600000");
    CHECK(first_fast == 3 * 1024 && first_hard == 3 * 1024,
          "a new thread's first malloc(1000) left %ld (fast) and %ld (hardened) bytes in its cache, not 3 KiB",
          first_fast, first_hard);
    int reused, released;
    obs_spare("mode=fast:decay_ms=50:background=0", &reused, &released);
    CHECK(reused && released,
          "an exited thread's cache: the next thread took its last freed block %d, and not after decay_ms %d",
          reused, released);
    printf("  %-16s the next thread takes an exited one's cache: %d, until decay_ms passed: %d\n", "tcache", reused,
           released);
    long held32 = obs_cache_held("mode=fast:decay_ms=600000:tcache_kb=32");
    long held8 = obs_cache_held("mode=fast:decay_ms=600000:tcache_kb=8");
    CHECK(held32 >= 8 * 2048 && held32 <= 32768 && held8 >= 2 * 2048 && held8 <= 8192,
          "tcache_kb: bytes a thread's cache holds after freeing 64 blocks of 2000 B: 32 KiB %ld, 8 KiB %ld",
          held32, held8);
    printf("  %-16s a thread's cache after it frees 64 blocks of 2000 B: 32 KiB %ld bytes, 8 KiB %ld\n", "tcache_kb",
           held32, held8);
    /* With random=1 a batch of the thread cache starts at a slot drawn from
     * the whole slab and goes on in order (for locality), so 64 blocks (one
     * batch) come in address order when the draw falls on the first slot of
     * a word: about 1 time in 64. Eight fresh runs: it must not happen in
     * more than half (a chance of about 1 in 20 million); with random=0 it
     * happens in every run. */
    a = 0, b = 0;
    for (int i = 0; i < 8; i++) {
        a += obs_sequential("mode=fast:random=0");
        b += obs_sequential("mode=fast:random=1");
    }
    CHECK(a == 8 && b <= 4, "random: sequential in 8 runs with 0: %d, with 1: %d", a, b);
    printf("  %-16s 64 blocks in address order, of 8 runs: random=0 %d, random=1 %d\n", "random", a, b);
    a = obs_sealed("mode=hardened:seal_large=0"), b = obs_sealed("mode=fast:seal_large=1");
    CHECK(!a && b, "seal_large: a freed 256 KiB block inaccessible in the cache with 0: %d, with 1: %d", a, b);
    printf("  %-16s a freed 256 KiB block is inaccessible while cached: 0 %d, 1 %d\n", "seal_large", a, b);
    a = obs_slab_guard("mode=fast:slab_guards=0"), b = obs_slab_guard("mode=fast:slab_guards=1");
    CHECK(!a && b, "slab_guards: guard page with 0: %d, with 1: %d", a, b);
    printf("  %-16s last page of a slab inaccessible: %d / %d\n", "slab_guards", a, b);
    /* Where the kernel can, a slab's guard is a mark in the page tables,
     * not two more mappings: fork() copies mappings one by one (a 400 MB
     * hardened heap forked in 27-32 ms with mprotect guards, 7-8 ms with
     * these) and vm.max_map_count bounds them. */
    if (kernel_has_light_guards()) {
        a = obs_guard_mappings("mode=fast:slab_guards=0"), b = obs_guard_mappings("mode=fast:slab_guards=1");
        CHECK(b < 20, "slab_guards: 200 guarded slabs added %d mappings (without guards %d)", b, a);
        printf("  %-16s mappings added by 200 slabs: without guards %d, with %d\n", "slab_guards", a, b);
    } else {
        printf("  %-16s this kernel has no MADV_GUARD_INSTALL: guards are mprotect'ed (not checked here)\n", "slab_guards");
    }
    a = obs_sampled("mode=fast:sample_rate=0"), b = obs_sampled("mode=fast:sample_rate=1");
    CHECK(!a && b, "sample_rate: block before a guard page with 0: %d, with 1: %d", a, b);
    printf("  %-16s 24-byte block ends at a guard page: sample_rate=0 %d, 1 %d\n", "sample_rate", a, b);
    a = obs_alloc_frames("mode=hardened:stacks=0"), b = obs_alloc_frames("mode=hardened:stacks=1");
    CHECK(a == -1 && b > 2, "stacks: allocation frames with 0: %d, with 1: %d", a, b);
    printf("  %-16s frames of the allocation stack in a report: stacks=0 %d (none), stacks=1 %d\n", "stacks", a, b);
    a = obs_alloc_frames("mode=debug:stack_depth=2"), b = obs_alloc_frames("mode=debug:stack_depth=16");
    CHECK(a >= 1 && a <= 2 && b > a, "stack_depth: frames with 2: %d, with 16: %d", a, b);
    printf("  %-16s frames: stack_depth=2 %d, 16 %d\n", "stack_depth", a, b);
    a = obs_leak_exit("mode=debug:abort_on_error=1:leak_report=0"),
    b = obs_leak_exit("mode=debug:abort_on_error=1:leak_report=1");
    CHECK(a == 0 && b == 23, "leak_report: exit status with 0: %d, with 1: %d", a, b);
    printf("  %-16s exit status of a leaking child: %d / %d\n", "leak_report", a, b);
    a = obs_sized_free_smaller("mode=hardened:mismatch=0"), b = obs_sized_free_smaller("mode=hardened:mismatch=1");
    CHECK(!a && b, "mismatch: free_sized(24 B, 16) reported with 0: %d, with 1: %d", a, b);
    printf("  %-16s free_sized(24-byte block, 16) reported: mismatch=0 %d, 1 %d\n", "mismatch", a, b);
    a = obs_check_every("mode=hardened:check_every=0"), b = obs_check_every("mode=hardened:check_every=1");
    CHECK(!a && b, "check_every: overflow of a live block found at the next malloc with 0: %d, with 1: %d", a, b);
    printf("  %-16s overflow of a live block found by the next malloc: %d / %d\n", "check_every", a, b);
    uint64_t pa = obs_purged("mode=fast:decay_ms=60000"), pb = obs_purged("mode=fast:decay_ms=0");
    CHECK(pa == 0 && pb >= 8 * MiB, "decay_ms: purged after 50 ms with 60000: %llu, with 0: %llu",
          (unsigned long long)pa, (unsigned long long)pb);
    printf("  %-16s bytes given back 50 ms after 16 MiB were freed: 60000 ms %llu, 0 ms %llu\n", "decay_ms",
           (unsigned long long)pa, (unsigned long long)pb);
    pa = obs_growth("mode=fast:decay_ms=60000"), pb = obs_growth("mode=fast:decay_ms=800");
    CHECK(pa == 0 && pb >= 16 * MiB, "decay_ms: given back while 24 MiB of another class were allocated 150 ms "
          "after a drop, with 60000: %llu, with 800: %llu", (unsigned long long)pa, (unsigned long long)pb);
    printf("  %-16s bytes given back by 24 MiB of growth 150 ms after a 23 MiB drop: 60000 ms %llu, 800 ms %llu\n",
           "decay_ms", (unsigned long long)pa, (unsigned long long)pb);
    size_t ra = obs_resident_reuse("mode=fast:tcache=0:random=0:decay_ms=60000");
    CHECK(ra <= 128 * KiB, "decay_ms: new slabs took fresh units while 1 MiB of free units was resident: grew %zu", ra);
    printf("  %-16s resident growth from 768 KiB of a new class over 1 MiB of resident free units: %zu KiB\n",
           "decay_ms", ra >> 10);
    size_t mga, mka, mgb, mkb;
    obs_metadata("mode=hardened:tcache=0:decay_ms=60000", &mga, &mka);
    obs_metadata("mode=hardened:tcache=0:decay_ms=0", &mgb, &mkb);
    CHECK(mga >= 256 * KiB && mka >= mga / 2 && mgb >= 256 * KiB && mkb <= mgb / 4,
          "decay_ms: metadata grown/kept 100 ms after its slabs went: 60000 ms %zu/%zu, 0 ms %zu/%zu", mga, mka, mgb, mkb);
    printf("  %-16s metadata grown, kept 100 ms after all was freed: 60000 ms %zu KiB, %zu KiB; 0 ms %zu KiB, %zu KiB\n",
           "decay_ms", mga >> 10, mka >> 10, mgb >> 10, mkb >> 10);
    size_t ma = obs_miniheaps_kept("mode=fast:tcache=0:decay_ms=0:miniheap_cache=0"),
           mb = obs_miniheaps_kept("mode=fast:tcache=0:decay_ms=0:miniheap_cache=8");
    CHECK(ma <= 3 && mb >= 5, "miniheap_cache: miniheaps kept with 0: %zu, with 8: %zu", ma, mb);
    printf("  %-16s miniheaps mapped after 24 MiB came and went: 0 -> %zu, 8 -> %zu\n", "miniheap_cache", ma, mb);
    size_t la = obs_large_cached("mode=fast:large_cache_mb=0:decay_ms=60000"),
           lb = obs_large_cached("mode=fast:large_cache_mb=64:decay_ms=60000");
    CHECK(la < MiB && lb >= MiB, "large_cache_mb: cached after a 1 MiB free with 0: %zu, with 64: %zu", la, lb);
    printf("  %-16s bytes cached after a 1 MiB block is freed: 0 MiB %zu, 64 MiB %zu\n", "large_cache_mb", la, lb);
    a = obs_floats("mode=fast:random=0:tcache=0:float_pct=0"), b = obs_floats("mode=fast:random=0:tcache=0:float_pct=25");
    CHECK(!a && b, "float_pct: realloc moved the survivor with 0: %d, with 25: %d", a, b);
    printf("  %-16s realloc moves the survivor of a nearly empty slab: 0 %d, 25 %d\n", "float_pct", a, b);
    size_t ca = obs_cached_small("mode=fast:tcache=0"), cb = obs_cached_small("mode=fast:tcache=1");
    CHECK(ca == 0 && cb >= 1000, "tcache: bytes cached after a free with 0: %zu, with 1: %zu", ca, cb);
    printf("  %-16s bytes in caches after a free: 0 -> %zu, 1 -> %zu\n", "tcache", ca, cb);
    a = obs_zero_faults("mode=hardened:zero_guard=0"), b = obs_zero_faults("mode=fast:zero_guard=1");
    CHECK(!a && b, "zero_guard: writing to malloc(0) reported with 0: %d, with 1: %d", a, b);
    printf("  %-16s a write to malloc(0)'s block is reported: 0 %d, 1 %d\n", "zero_guard", a, b);
    uint64_t ga = obs_meshes("mode=fast:mesh=0"), gb = obs_meshes("mode=fast:mesh=1");
    CHECK(ga == 0 && gb > 0, "mesh: spans meshed with 0: %llu, with 1: %llu", (unsigned long long)ga,
          (unsigned long long)gb);
    printf("  %-16s spans meshed after 31 in 32 blocks were freed: 0 -> %llu, 1 -> %llu\n", "mesh",
           (unsigned long long)ga, (unsigned long long)gb);
    ga = obs_meshes("mode=fast:mesh=0");
    CHECK(ga == 0, "mesh: meshing after mesh=0 again (mh_reset): %llu", (unsigned long long)ga);
    a = obs_same_slab("mode=fast:random=0:background=0:arenas=1");
    b = obs_same_slab("mode=fast:random=0:background=0:arenas=2");
    CHECK(a && !b, "arenas: a second thread's first block in the first thread's slab with 1: %d, with 2: %d", a, b);
    printf("  %-16s a second thread's first block shares the first's slab: 1 -> %d, 2 -> %d\n", "arenas", a, b);
    a = obs_aborts("abort_on_error=0"), b = obs_aborts("abort_on_error=1");
    CHECK(!a && b, "abort_on_error: a double free aborted with 0: %d, with 1: %d", a, b);
    printf("  %-16s a double free ends the process: 0 %d, 1 %d\n", "abort_on_error", a, b);
}

/* ---- leak_report: a child that leaks; its exit status ---- */
static __attribute__((noinline)) void leak_three(void)
{
    for (int i = 0; i < 3; i++) {
        void *p = mh_malloc(100 + (size_t)i);
        __asm__ volatile("" : : "r"(p) : "memory");
    }
}
/* No stale copy of a leaked pointer may stay on the dead part of the stack
 * (the scan is conservative): overwrite it. */
static __attribute__((noinline)) void clear_stack(void)
{
    volatile char buf[64 * 1024];
    memset((char *)buf, 0, sizeof buf);
    __asm__ volatile("" : : "r"(buf) : "memory");
}
static int obs_leak_exit(const char *opts)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        mh_reset();
        if (mh_set_options(opts) != 0)
            _exit(99);
        int fd = open("/dev/null", 1);
        dup2(fd, 2);
        leak_three();
        clear_stack();
        exit(0); /* the leak report runs at exit */
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    mh_test_check_allocator("test_options");
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        run_all();
        _exit(mh_test_failed() ? 1 : 0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the option cases failed (status %#x)", st);
    return mh_test_exit("test_options");
}
