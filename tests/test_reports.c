/* Reports under races, and reports that say exactly one thing (issue #10).
 *
 *   - free racing with realloc of the same block: exactly one of them wins;
 *     the other is reported as a double-free (the free) or an
 *     invalid-realloc (the realloc), never as metadata corruption, and the
 *     block is never released twice;
 *   - concurrent reports with a handler (abort_on_error=0): the text each
 *     handler receives is its own report's and stays intact while the
 *     handler runs;
 *   - an overflow of a large block found by realloc: one report, naming
 *     realloc (it was checked twice, the first time as malloc_usable_size);
 *   - a sized free larger than the block in fast mode: a size-mismatch
 *     report about the block (it said "in a miniheap but in no slab");
 *   - an overflow report says how far the write went ("up to 1 byte past
 *     its end", "up to 5 bytes ...").
 */
#include "mh_test.h"

#include <pthread.h>
#include <sys/wait.h>

#define ROUNDS 4000

static atomic_int nreports, ndouble, ninvalid_realloc, nother;
static char other_kind[64];

static void count_report(const mh_error_t *e, void *arg)
{
    (void)arg;
    atomic_fetch_add(&nreports, 1);
    if (!strcmp(e->kind, "double-free"))
        atomic_fetch_add(&ndouble, 1);
    else if (!strcmp(e->kind, "invalid-realloc"))
        atomic_fetch_add(&ninvalid_realloc, 1);
    else {
        snprintf(other_kind, sizeof other_kind, "%s", e->kind);
        atomic_fetch_add(&nother, 1);
    }
}

static pthread_barrier_t go;
static void *volatile shared;
static void *realloc_result;
static atomic_int stop;

static void *freer(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_barrier_wait(&go);
        if (atomic_load(&stop))
            return NULL;
        mh_free(shared);
        pthread_barrier_wait(&go);
    }
}

static void test_free_races_realloc(const char *mode, size_t from, size_t to, int rounds)
{
    atomic_store(&nreports, 0);
    atomic_store(&ndouble, 0);
    atomic_store(&ninvalid_realloc, 0);
    atomic_store(&nother, 0);
    atomic_store(&stop, 0);
    pthread_barrier_init(&go, NULL, 2);
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, freer, NULL) == 0, "pthread_create");
    int realloc_won = 0, bad_rounds = 0;
    for (int i = 0; i < rounds; i++) {
        void *p = mh_malloc(from);
        REQUIRE(p != NULL, "malloc failed");
        memset(p, 7, from);
        shared = p;
        int before = atomic_load(&nreports);
        pthread_barrier_wait(&go);
        realloc_result = mh_realloc(p, to);
        pthread_barrier_wait(&go);
        if (realloc_result) {
            realloc_won++;
            /* A double free when the free came after a realloc in place */
            mh_free(realloc_result);
        }
        if (atomic_load(&nreports) - before != 1)
            bad_rounds++;
    }
    atomic_store(&stop, 1);
    pthread_barrier_wait(&go);
    pthread_join(t, NULL);
    pthread_barrier_destroy(&go);
    CHECK(atomic_load(&nother) == 0, "[%s] realloc %zu -> %zu racing with free: %d reports of another kind (%s)", mode,
          from, to, atomic_load(&nother), other_kind);
    CHECK(bad_rounds == 0, "[%s] realloc %zu -> %zu racing with free: %d of %d rounds without exactly one report", mode,
          from, to, bad_rounds, rounds);
    CHECK(mh_check() == 0, "[%s] mh_check after the races", mode);
    printf("  [%s] realloc %zu -> %zu racing with free, %d rounds: realloc succeeded %d times, the free or the "
           "realloc reported as double-free %d, invalid-realloc %d times\n",
           mode, from, to, rounds, realloc_won, atomic_load(&ndouble), atomic_load(&ninvalid_realloc));
}

/* ---- concurrent reports: each handler sees its own text, intact ---- */
static atomic_int garbled, seen;

static void check_own_text(const mh_error_t *e, void *arg)
{
    (void)arg;
    char want[64];
    snprintf(want, sizeof want, "double-free on address %p", e->address);
    char copy[256];
    snprintf(copy, sizeof copy, "%s", e->message);
    if (!strstr(copy, want))
        atomic_fetch_add(&garbled, 1);
    usleep(50); /* while another thread reports */
    if (strncmp(copy, e->message, sizeof copy - 1) != 0)
        atomic_fetch_add(&garbled, 1);
    atomic_fetch_add(&seen, 1);
}

static void *double_freer(void *arg)
{
    size_t size = (size_t)(uintptr_t)arg;
    for (int i = 0; i < 300; i++) {
        void *p = mh_malloc(size);
        mh_free(p);
        mh_free(opaque_ptr(p));
    }
    return NULL;
}

static void test_concurrent_reports(const char *mode)
{
    mh_set_error_handler(check_own_text, NULL);
    atomic_store(&garbled, 0);
    atomic_store(&seen, 0);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        REQUIRE(pthread_create(&t[i], NULL, double_freer, (void *)(uintptr_t)(32 + 48 * i)) == 0, "pthread_create");
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK(atomic_load(&seen) == 1200, "[%s] %d of 1200 double frees reported", mode, atomic_load(&seen));
    CHECK(atomic_load(&garbled) == 0, "[%s] %d report texts were another report's or changed in the handler", mode,
          atomic_load(&garbled));
    printf("  [%s] 4 threads x 300 double frees: %d reports, %d garbled\n", mode, atomic_load(&seen),
           atomic_load(&garbled));
    mh_set_error_handler(count_report, NULL);
}

/* ---- one report, from the right place ---- */
static atomic_int n_where;
static char first_message[2048];

static void record(const mh_error_t *e, void *arg)
{
    (void)arg;
    if (atomic_fetch_add(&n_where, 1) == 0)
        snprintf(first_message, sizeof first_message, "%s", e->message);
}

static void test_large_realloc_reports_once(void)
{
    mh_set_error_handler(record, NULL);
    atomic_store(&n_where, 0);
    char *p = mh_malloc(300000);
    REQUIRE(p != NULL, "malloc failed");
    p[300000] = 'X'; /* into the canary */
    void *q = mh_realloc(p, 600000);
    CHECK(atomic_load(&n_where) == 1, "realloc of an overflowed large block: %d reports, want 1",
          atomic_load(&n_where));
    CHECK(strstr(first_message, "heap-buffer-overflow") && strstr(first_message, "detected at realloc()"),
          "the report does not say heap-buffer-overflow detected at realloc():\n%s", first_message);
    (void)q; /* left allocated by the report, or moved: either way not freed again here */
    mh_set_error_handler(count_report, NULL);
}

/* A canary report says how far the write went, in the right number. */
static void test_how_far(const char *mode, size_t k, const char *want)
{
    mh_set_error_handler(record, NULL);
    atomic_store(&n_where, 0);
    first_message[0] = 0;
    unsigned char *p = mh_malloc(24);
    REQUIRE(p != NULL, "malloc failed");
    memset(p + 24, 'X', k);
    mh_free(p);
    CHECK(atomic_load(&n_where) == 1 && strstr(first_message, "heap-buffer-overflow") && strstr(first_message, want),
          "[%s] %zu bytes written past a 24-byte block: the report does not say '%s':\n%s", mode, k, want,
          first_message);
    mh_set_error_handler(count_report, NULL);
}

static void test_sized_free_fast(void)
{
    mh_set_error_handler(record, NULL);
    atomic_store(&n_where, 0);
    void *p = mh_malloc(24);
    mh_free_sized(p, 4096);
    CHECK(atomic_load(&n_where) == 1, "free_sized(24-byte block, 4096) in fast mode: %d reports", atomic_load(&n_where));
    CHECK(strstr(first_message, "size-mismatch") && !strstr(first_message, "in no slab") &&
              strstr(first_message, "-byte block at"),
          "free_sized too large in fast mode: the report does not name the block:\n%s", first_message);
    mh_free(p); /* still allocated after the report */
    CHECK(atomic_load(&n_where) == 1, "freeing the block after the report gave another");
    mh_set_error_handler(count_report, NULL);
}

static int run_mode(const char *mode)
{
    char opts[128];
    mh_reset();
    snprintf(opts, sizeof opts, "mode=%s:abort_on_error=0:leak_report=0", mode);
    REQUIRE(mh_set_options(opts) == 0, "mh_set_options(\"%s\") rejected", opts);
    mh_set_error_handler(count_report, NULL);
    test_free_races_realloc(mode, 100, 100, ROUNDS);        /* in place */
    test_free_races_realloc(mode, 100, 3000, ROUNDS);       /* moves */
    test_free_races_realloc(mode, 100, 40, ROUNDS);         /* shrinks (may float) */
    test_free_races_realloc(mode, 300000, 300000, 1000);    /* large, in place */
    test_free_races_realloc(mode, 300000, 900000, 1000);    /* large, mremap */
    test_free_races_realloc(mode, 300000, 1000, 1000);      /* large into a slab */
    test_concurrent_reports(mode);
    if (!strcmp(mode, "hardened"))
        test_large_realloc_reports_once();
    if (strcmp(mode, "fast")) {
        test_how_far(mode, 1, "overwritten up to 1 byte past its end (8 canary bytes checked)");
        test_how_far(mode, 5, "overwritten up to 5 bytes past its end (8 canary bytes checked)");
    }
    if (!strcmp(mode, "fast"))
        test_sized_free_fast();
    return mh_test_failed() ? 1 : 0;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    mh_test_check_allocator("test_reports");
    mh_test_each_mode(run_mode, 120);
    return mh_test_exit("test_reports");
}
