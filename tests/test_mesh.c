/* Meshing (mesh=1, issue #12): blocks keep every byte while their pages are
 * meshed, freed, reused, resized, written by other threads during the copy,
 * and across fork; the heap gets below the page floor; detection still works.
 *
 * The program runs itself once per mode (fast, hardened, debug without the
 * front redzone) with MINIHEAP_OPTIONS set, since miniheaps are file-backed
 * for mesh=1 only when it is set before the first one. Each child:
 *   1. idle give-back: fills classes of several sizes, frees all but 1 in
 *      24 blocks, then sleeps: the purge thread meshes with no allocator
 *      call; the heap's resident memory must fall below the page floor (the
 *      pages the survivors touch), and every survivor keep its bytes;
 *   2. reuse: survivors rewritten, half of them freed (their slots go to the
 *      targets), new blocks allocated into those slots, some resized; all
 *      checked, mh_check() clean, and when all is freed nothing stays meshed;
 *   3. threads: writers rewrite their survivors without pause while the main
 *      thread frees and allocates around them and forces mesh passes; no
 *      write may be lost or land in another block;
 *   4. fork: with a writer running, the child sees the parent's blocks and
 *      its writes never reach the parent (the child has a heap of its own);
 *   5. reports: a double free of a meshed block and an overflow of one are
 *      reported as such;
 *   6. fork with the forking thread's signal stack on the heap: the child
 *      writes to the heap before miniheap's fork handler has given it a
 *      heap of its own (glibc does, to reset the locks of FILEs; here a
 *      fork handler registered first); the write faults while the heap is
 *      read-only, and the fault must not be delivered on the signal stack
 *      (the kernel would kill the child; gdb's children died so);
 *   7. spikes one after another reuse the address space (test_spikes).
 */
#include "mh_test.h"

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif

#include <pthread.h>
#include <stdbool.h>
#include <sys/wait.h>

static const size_t sizes[] = {16, 48, 64, 100, 240, 500, 1000, 1500, 2000, 3000};
#define NSIZES (sizeof sizes / sizeof sizes[0])
#define PER_SIZE_BYTES (3u << 20)
#define MAXB 400000

typedef struct blk {
    uint8_t *p;
    uint32_t size, gen;
} blk_t;
static blk_t blocks[MAXB];
static size_t nblocks;

static uint64_t seed_of(size_t i, uint32_t gen) { return mix64(((uint64_t)i << 20) ^ gen ^ 0xabcdef); }
static void fill(size_t i) { pat_fill_seed(blocks[i].p, blocks[i].size, seed_of(i, blocks[i].gen)); }
static bool intact(size_t i)
{
    return pat_check_seed(blocks[i].p, blocks[i].size, seed_of(i, blocks[i].gen)) == (size_t)-1;
}

static long heap_kb(void)
{
    char buf[4096];
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    if (!f)
        return -1;
    long anon = 0, shmem = 0, v;
    while (fgets(buf, sizeof buf, f)) {
        if (sscanf(buf, "Pss_Anon: %ld", &v) == 1)
            anon = v;
        if (sscanf(buf, "Pss_Shmem: %ld", &v) == 1)
            shmem = v;
    }
    fclose(f);
    return anon + shmem;
}

/* 4 KiB pages the live blocks touch. */
static size_t floor_pages(void)
{
    static uintptr_t pages[MAXB * 2];
    size_t n = 0;
    for (size_t i = 0; i < nblocks; i++) {
        if (!blocks[i].p)
            continue;
        uintptr_t a = (uintptr_t)blocks[i].p;
        for (uintptr_t q = a >> 12; q <= (a + blocks[i].size - 1) >> 12 && n < MAXB * 2; q++)
            pages[n++] = q;
    }
    /* insertion into a sorted set would be slow; sort then count */
    for (size_t gap = n / 2; gap > 0; gap /= 2) /* shell sort */
        for (size_t i = gap; i < n; i++)
            for (size_t j = i; j >= gap && pages[j - gap] > pages[j]; j -= gap) {
                uintptr_t t = pages[j];
                pages[j] = pages[j - gap];
                pages[j - gap] = t;
            }
    size_t d = 0;
    for (size_t i = 0; i < n; i++)
        d += i == 0 || pages[i] != pages[i - 1];
    return d;
}

static size_t live_bytes(void)
{
    size_t b = 0;
    for (size_t i = 0; i < nblocks; i++)
        if (blocks[i].p)
            b += blocks[i].size;
    return b;
}

static size_t check_all(const char *when)
{
    size_t bad = 0;
    for (size_t i = 0; i < nblocks; i++)
        if (blocks[i].p && !intact(i)) {
            if (bad < 5)
                CHECK(0, "%s: block %zu (%u bytes at %p, gen %u) lost its bytes", when, i, blocks[i].size,
                      (void *)blocks[i].p, blocks[i].gen);
            bad++;
        }
    CHECK(bad == 0, "%s: %zu blocks damaged", when, bad);
    return bad;
}

static void fill_classes(rng_t *r, int keep_one_in)
{
    size_t start = nblocks;
    for (size_t s = 0; s < NSIZES; s++)
        for (size_t got = 0; got < PER_SIZE_BYTES && nblocks < MAXB; got += sizes[s]) {
            blk_t *b = &blocks[nblocks];
            b->size = (uint32_t)sizes[s];
            b->gen = 0;
            b->p = mh_malloc(b->size);
            REQUIRE(b->p, "malloc(%u) failed", b->size);
            fill(nblocks++);
        }
    for (size_t i = start; i < nblocks; i++)
        if (rng_next(r) % (uint64_t)keep_one_in) {
            mh_free(blocks[i].p);
            blocks[i].p = NULL;
        }
}

static mh_stats_t stats(void)
{
    mh_stats_t st;
    mh_stats(&st);
    return st;
}

/* ---- 1. idle give-back below the page floor ---- */
static void test_idle(const char *mode)
{
    rng_t r;
    rng_seed(&r, 1);
    long base = heap_kb();
    fill_classes(&r, 24);
    /* No allocator call from here: the purge thread settles and meshes. */
    /* Until meshing has started and then made no mesh for 5 decay periods
     * (at most 20 s: a slow machine only takes longer). */
    mh_stats_t st = stats();
    uint64_t last = 0;
    for (int i = 0, still = 0; i < 200 && still < 5; i++) {
        usleep(100000);
        st = stats();
        still = st.meshes > 0 && st.meshes == last ? still + 1 : 0;
        last = st.meshes;
    }
    long heap = heap_kb() - base;
    size_t floor_kb = floor_pages() * 4, live_kb = live_bytes() / 1024;
    printf("  idle: live %zu KiB, page floor %zu KiB, heap %ld KiB, %llu meshes, %llu KiB meshed\n", live_kb, floor_kb,
           heap, (unsigned long long)st.meshes, (unsigned long long)st.meshed_bytes / 1024);
    CHECK(st.meshes > 0, "the purge thread meshed nothing while the program slept");
    /* (Debug mode's per-block records and quarantine weigh more than what
     * meshing wins in this small heap.) */
    if (strcmp(mode, "debug") != 0 && !UNDER_TSAN) /* (TSan's shadow memory is resident too) */
        CHECK(heap > 0 && (size_t)heap < floor_kb, "resident heap %ld KiB is not below the page floor %zu KiB", heap,
              floor_kb);
    check_all("after idle meshing");
    CHECK(mh_check() == 0, "mh_check after meshing");
}

/* ---- 2. reuse ---- */
static void test_reuse(void)
{
    rng_t r;
    rng_seed(&r, 2);
    mh_trim(0);
    CHECK(stats().meshed_bytes > 0, "nothing is meshed before the reuse test");
    for (size_t i = 0; i < nblocks; i++) /* writes through shared pages */
        if (blocks[i].p) {
            blocks[i].gen++;
            fill(i);
        }
    check_all("after rewriting");
    for (size_t i = 0; i < nblocks; i++) /* half go: their slots become the targets' */
        if (blocks[i].p && rng_next(&r) % 2) {
            mh_free(blocks[i].p);
            blocks[i].p = NULL;
        }
    check_all("after freeing half");
    for (size_t i = 0; i < nblocks; i++) /* new blocks, into those slots too */
        if (!blocks[i].p && rng_next(&r) % 4 == 0) {
            blocks[i].gen += 7;
            blocks[i].p = mh_malloc(blocks[i].size);
            REQUIRE(blocks[i].p, "malloc failed");
            fill(i);
        }
    check_all("after reallocating");
    size_t resized = 0;
    for (size_t i = 0; i < nblocks; i++) /* realloc keeps the bytes */
        if (blocks[i].p && rng_next(&r) % 8 == 0) {
            size_t keep = blocks[i].size;
            uint64_t h = seed_of(i, blocks[i].gen);
            size_t n = rng_next(&r) % 2 ? keep / 2 + 1 : keep * 2;
            uint8_t *q = mh_realloc(blocks[i].p, n);
            REQUIRE(q, "realloc failed");
            CHECK(pat_check_lim(q, keep, h, n) == (size_t)-1, "realloc %zu -> %zu lost bytes", keep, n);
            blocks[i].p = q;
            blocks[i].size = (uint32_t)n;
            fill(i);
            resized++;
        }
    mh_trim(0);
    check_all("after resizing and meshing again");
    CHECK(mh_check() == 0, "mh_check after reuse");
    printf("  reuse: %zu resized, %llu meshes so far\n", resized, (unsigned long long)stats().meshes);
    for (size_t i = 0; i < nblocks; i++)
        if (blocks[i].p) {
            mh_free(blocks[i].p);
            blocks[i].p = NULL;
        }
    mh_trim(0);
    mh_stats_t st = stats();
    CHECK(st.meshed_bytes == 0, "%llu bytes still meshed with every block freed", (unsigned long long)st.meshed_bytes);
    CHECK(mh_check() == 0, "mh_check after freeing all");
    nblocks = 0;
}

/* ---- 3. threads writing while pages are meshed ---- */
#define WRITERS 2
static atomic_int stop_writers;
static atomic_long writes_done;
typedef struct wslice { size_t first, last; } wslice_t;

static void *writer(void *arg)
{
    wslice_t *w = arg;
    while (!atomic_load(&stop_writers)) {
        for (size_t i = w->first; i < w->last; i++) {
            if (!blocks[i].p)
                continue;
            if (!intact(i)) {
                CHECK(0, "writer: block %zu changed under its owner", i);
                atomic_store(&stop_writers, 1);
                return NULL;
            }
            blocks[i].gen++;
            fill(i);
            atomic_fetch_add(&writes_done, 1);
        }
    }
    return NULL;
}

static void test_threads(void)
{
    rng_t r;
    rng_seed(&r, 3);
    fill_classes(&r, 32);
    size_t owned = nblocks;
    pthread_t th[WRITERS];
    wslice_t sl[WRITERS];
    atomic_store(&stop_writers, 0);
    for (int t = 0; t < WRITERS; t++) {
        sl[t] = (wslice_t){owned * (size_t)t / WRITERS, owned * (size_t)(t + 1) / WRITERS};
        REQUIRE(pthread_create(&th[t], NULL, writer, &sl[t]) == 0, "pthread_create");
    }
    uint64_t m0 = stats().meshes;
    /* Around them: fill and drop more blocks of the same classes, so new
     * sparse pages keep coming, and mesh them now. */
    void **churn = calloc(200000, sizeof(void *));
    REQUIRE(churn, "calloc");
    for (int round = 0; round < 12 && !atomic_load(&stop_writers); round++) {
        size_t n = 0;
        for (size_t s = 0; s < NSIZES; s++)
            for (size_t got = 0; got < PER_SIZE_BYTES / 3 && n < 200000; got += sizes[s]) {
                churn[n] = mh_malloc(sizes[s]);
                REQUIRE(churn[n], "malloc");
                memset(churn[n], (int)round, sizes[s]);
                n++;
            }
        for (size_t i = 0; i < n; i++)
            if (rng_next(&r) % 16) {
                mh_free(churn[i]);
                churn[i] = NULL;
            }
        mh_trim(0);
        for (size_t i = 0; i < n; i++) {
            if (!churn[i])
                continue;
            const uint8_t *b = churn[i];
            CHECK(b[0] == (uint8_t)round && b[8] == (uint8_t)round, "a churn block changed");
            mh_free(churn[i]);
        }
    }
    atomic_store(&stop_writers, 1);
    for (int t = 0; t < WRITERS; t++)
        pthread_join(th[t], NULL);
    free(churn);
    uint64_t made = stats().meshes - m0;
    printf("  threads: %ld block rewrites while %llu meshes were made\n", atomic_load(&writes_done),
           (unsigned long long)made);
    CHECK(made > 50, "only %llu meshes while the writers ran", (unsigned long long)made);
    CHECK(atomic_load(&writes_done) > 0, "the writers wrote nothing");
    check_all("after the writers");
    CHECK(mh_check() == 0, "mh_check after the writers");
}

/* ---- 4. fork ---- */
static void test_fork(void)
{
    mh_trim(0);
    CHECK(stats().meshed_bytes > 0, "nothing meshed before fork");
    /* blocks[0 .. owned/2) keep still; a writer rewrites the rest */
    size_t half = nblocks / 2;
    pthread_t th;
    wslice_t sl = {half, nblocks};
    atomic_store(&stop_writers, 0);
    REQUIRE(pthread_create(&th, NULL, writer, &sl) == 0, "pthread_create");
    for (int k = 0; k < 8; k++) {
        pid_t pid = fork();
        REQUIRE(pid >= 0, "fork");
        if (pid == 0) {
            size_t bad = 0;
            for (size_t i = 0; i < half; i++)
                if (blocks[i].p && !intact(i))
                    bad++;
            for (size_t i = 0; i < half; i++) /* the child's writes stay the child's */
                if (blocks[i].p)
                    memset(blocks[i].p, 0x5a, blocks[i].size);
            void *q = mh_malloc(100);
            mh_free(q);
            mh_trim(0);
            _exit(bad == 0 && mh_check() == 0 ? 0 : 1);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "fork %d: the child saw damaged blocks (status %#x)", k,
              status);
    }
    atomic_store(&stop_writers, 1);
    pthread_join(th, NULL);
    check_all("in the parent after the children wrote");
    CHECK(mh_check() == 0, "mh_check after fork");
}

/* ---- 6. fork with a signal stack on the heap ---- */
static char *volatile early_write; /* written by the child's first fork handler */
static void child_writes_early(void)
{
    if (early_write)
        early_write[0] = 'c';
}

static void test_fork_sigstack(void)
{
    size_t size = 64 * 1024; /* a slab block: in a miniheap */
    stack_t ss = {.ss_sp = mh_malloc(size), .ss_size = size}, old;
    REQUIRE(ss.ss_sp && sigaltstack(&ss, &old) == 0, "sigaltstack on a heap block");
    char *mark = mh_malloc(64);
    REQUIRE(mark, "mh_malloc");
    mark[0] = 'p';
    early_write = mark;
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0)
        _exit(mark[0] == 'c' && mh_check() == 0 ? 0 : 1);
    early_write = NULL;
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "fork with the signal stack on the heap: child status %#x (signal %d)", status,
          WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    CHECK(mark[0] == 'p', "the child's early write reached the parent");
    stack_t now;
    CHECK(sigaltstack(NULL, &now) == 0 && now.ss_sp == ss.ss_sp && !(now.ss_flags & SS_DISABLE),
          "the signal stack is not back after fork");
    REQUIRE(sigaltstack(&old, NULL) == 0, "sigaltstack back");
    mh_free(mark);
    mh_free(ss.ss_sp);
}

/* ---- 5. reports on meshed blocks ---- */
static char last_kind[64];
static void on_error(const mh_error_t *e, void *arg)
{
    (void)arg;
    snprintf(last_kind, sizeof last_kind, "%s", e->kind);
}

static void test_reports(const char *mode)
{
    mh_set_error_handler(on_error, NULL);
    mh_set_options("abort_on_error=0");
    mh_trim(0);
    /* a survivor of a meshed-away page: one whose slab lends its page */
    size_t victim = SIZE_MAX, over = SIZE_MAX;
    for (size_t i = 0; i < nblocks && (victim == SIZE_MAX || over == SIZE_MAX); i++) {
        if (!blocks[i].p || blocks[i].size % 16 == 0)
            continue;
        if (victim == SIZE_MAX)
            victim = i;
        else
            over = i;
    }
    REQUIRE(victim != SIZE_MAX && over != SIZE_MAX, "no survivors to test with");
    mh_free(blocks[victim].p);
    last_kind[0] = 0;
    mh_free(blocks[victim].p);
    CHECK(strcmp(last_kind, "double-free") == 0, "double free of a meshed heap's block: got '%s'", last_kind);
    blocks[victim].p = NULL;
    if (strcmp(mode, "fast") != 0) {
        blocks[over].p[blocks[over].size] ^= 0x55; /* one byte past the end: the canary */
        last_kind[0] = 0;
        mh_free(blocks[over].p);
        CHECK(strcmp(last_kind, "heap-buffer-overflow") == 0, "overflow of a meshed heap's block: got '%s'",
              last_kind);
        blocks[over].p = NULL;
    }
    check_all("after the reports");
    mh_set_options("abort_on_error=1");
}

/* 7. spikes: the heap is a file here, and a miniheap given back is reused
 * only if its file pages were freed (os_segment_free); either way the
 * spikes must not walk down the address space (see test_api). */
static void test_spikes(void)
{
    const size_t spike = (size_t)16 << 20;
    size_t drift = mh_test_spike_drift(mh_malloc, mh_free, mh_trim, spike, 8);
    CHECK(drift < 2 * spike, "8 spikes of 16 MiB, each given back, went down %.1f MiB in the address space",
          (double)drift / (1 << 20));
}

static int child(const char *mode)
{
    /* Before miniheap's own fork handlers (registered at its start): this
     * child handler runs first. */
    pthread_atfork(NULL, NULL, child_writes_early);
    printf("mode %s\n", mode);
    fflush(stdout);
    test_idle(mode);
    test_reuse();
    test_threads();
    test_fork();
    test_fork_sigstack();
    test_reports(mode);
    test_spikes();
    return mh_test_exit("test_mesh");
}

int main(int argc, char **argv)
{
    const char *mode = getenv("MH_MESH_MODE");
    if (mode)
        return child(mode);
    mh_test_check_allocator("test_mesh");
    static const char *const modes[][2] = {
        {"fast", "mode=fast:mesh=1:decay_ms=100:seed=7"},
        {"hardened", "mode=hardened:mesh=1:decay_ms=100:seed=7"},
        {"debug", "mode=debug:underflow=0:quarantine_mb=1:sample_rate=0:leak_report=0:mesh=1:decay_ms=100:seed=7"},
    };
    for (size_t m = 0; m < 3; m++) {
        fflush(stdout);
        pid_t pid = fork();
        REQUIRE(pid >= 0, "fork");
        if (pid == 0) {
            setenv("MH_MESH_MODE", modes[m][0], 1);
            setenv("MINIHEAP_OPTIONS", modes[m][1], 1);
            execv("/proc/self/exe", argv);
            _exit(127);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "mode %s: status %#x", modes[m][0], status);
    }
    (void)argc;
    return mh_test_exit("test_mesh");
}
