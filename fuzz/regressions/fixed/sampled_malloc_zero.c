/* Allocator bug (fixed; kept as a regression test) found by fuzz_threads: with sample_rate set, a sampled
 * malloc(0) (alloc_generic passes size 0 to large_alloc(..., sampled=true),
 * where the non-sampled path passes `size ? size : 1`) maps a block of zero
 * pages and returns the address of its trailing guard page: the pointer is
 * not a block of miniheap, so malloc_usable_size reports invalid-usable-size
 * (and free reports invalid-free); writing to it would fault.
 * Exit 0 when fixed, 1 if the bug is back. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "miniheap.h"

static const char *last;
static void handler(const mh_error_t *e, void *arg) { (void)arg; last = e->kind; }

static void *run(void *arg) { /* a new thread: its sampling countdown starts afresh */
    int *bad = arg;
    for (int k = 0; k < 4; k++) {
        last = NULL;
        void *p = mh_malloc(0);
        size_t u = mh_malloc_usable_size(p);
        printf("malloc(0) = %p, usable %zu, report: %s\n", p, u, last ? last : "none");
        *bad |= last != NULL;
        last = NULL;
        mh_free(p);
        if (last) printf("  free: %s\n", last);
        *bad |= last != NULL;
    }
    return NULL;
}

int main(void) {
    mh_set_error_handler(handler, NULL);
    if (mh_set_options("mode=fast:abort_on_error=0:sample_rate=1") != 0) return 0; /* no sampling yet */
    int bad = 0;
    pthread_t t;
    pthread_create(&t, NULL, run, &bad);
    pthread_join(t, NULL);
    return bad;
}
