/* Allocator bug (fixed; kept as a regression test) found by fuzz_ops: with canaries (mode=debug),
 * mh_realloc(p, SIZE_MAX) of a slab block computes need = size + s->canary,
 * which wraps to a small number, so the block "fits" in place: realloc
 * returns p for a SIZE_MAX request, records SIZE_MAX as its size and writes
 * the canary at p + SIZE_MAX = p - 1 (into the previous block, or, with
 * slab_guards, onto a guard page: a spurious heap-buffer-overflow). It must
 * return NULL with ENOMEM. Exit 0 when fixed. The block is freed at the end:
 * debug mode reports leaks at exit, and whether a stale copy of the pointer
 * on the stack keeps it "reachable" is luck (it made this test flaky). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>

#include "miniheap.h"

int main(void) {
    if (mh_set_options("mode=debug:slab_guards=0") != 0) return 0;
    void *p = mh_malloc(13);
    errno = 0;
    void *q = mh_realloc(p, SIZE_MAX);
    int failed = q != NULL || errno != ENOMEM;
    printf("realloc(13-byte block %p, SIZE_MAX) = %p, errno %d\n", p, q, errno);
    mh_free(q ? q : p);
    return failed;
}
