/* Open allocator bug found by fuzz_threads (free-running schedule): a heap
 * check in one thread reports a false heap-buffer-overflow ("1 byte past an
 * 11-byte block ... a canary after the block was overwritten") on a slab
 * block that its owner grows in place with realloc and then writes. The
 * check reads the old size, the owner's realloc publishes the new size and
 * canary, the owner legally writes its new bytes over the old canary, and
 * the check then reads that spot as the old canary. The check must confirm
 * a bad canary against the block's current size before reporting.
 * Exit 0 when no false report comes within 2 seconds, 1 otherwise. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "miniheap.h"

static _Atomic int stop, reports;
static void handler(const mh_error_t *e, void *arg) {
    (void)arg;
    if (!reports++) printf("false report: %s", e->message);
}

static void *owner(void *arg) {
    (void)arg;
    char *p = mh_malloc(11);
    while (!stop) {
        char *q = mh_realloc(p, 24); /* in place: same 32-byte class */
        if (q) { p = q; memset(p, 'a', 24); }
        q = mh_realloc(p, 11);
        if (q) { p = q; memset(p, 'b', 11); }
    }
    mh_free(p);
    return NULL;
}

static void *check(void *arg) {
    (void)arg;
    while (!stop) mh_check();
    return NULL;
}

int main(void) {
    mh_set_error_handler(handler, NULL);
    if (mh_set_options("mode=hardened:abort_on_error=0:float_pct=0") != 0) return 0;
    pthread_t a, c;
    pthread_create(&a, NULL, owner, NULL);
    pthread_create(&c, NULL, check, NULL);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        struct timespec d = {0, 10 * 1000 * 1000};
        nanosleep(&d, NULL);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while (!reports && t.tv_sec - t0.tv_sec < 2);
    stop = 1;
    pthread_join(a, NULL);
    pthread_join(c, NULL);
    printf("%d false report(s)\n", (int)reports);
    return reports != 0;
}
