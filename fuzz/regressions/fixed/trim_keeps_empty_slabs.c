/* Allocator bug (fixed; kept as a regression test) found by fuzz_threads (and fuzz_ops with decay_ms=0/1):
 * mh_trim(0) must give every empty slab and miniheap back, but
 * slab_purge_class() returns early when the class has no dirty slab
 * (`if (!b->dirty) return;`), before the `force` branch that releases the
 * empty slabs of bucket 0. A slab that emptied and was then purged by a
 * normal decay tick stays on its class forever (until it is reused), and
 * so does its 4 MiB miniheap.
 * Exit 0 when fixed, 1 while the bug is there. */
#include <stdio.h>
#include <unistd.h>

#include "miniheap.h"

int main(void) {
    mh_set_options("tcache=0:decay_ms=0");
    void *a = mh_malloc(64);
    mh_free(a);                       /* its slab is empty, kept by the class, on the dirty list */
    usleep(600 * 1000);               /* past the first give-back tick (set from the default decay) */
    void *big = mh_malloc(1 << 20);   /* a normal tick: purges the dirty slab, takes it off the list */
    mh_free(big);
    mh_trim(0);                       /* must give everything back */
    mh_stats_t st;
    mh_stats(&st);
    printf("after mh_trim: %zu miniheaps, %zu slabs, %zu bytes mapped\n", st.miniheaps, st.slabs, st.mapped_bytes);
    return st.miniheaps != 0 || st.slabs != 0;
}
