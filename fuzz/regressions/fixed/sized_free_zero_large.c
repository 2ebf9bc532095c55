/* Allocator bug (fixed; kept as a regression test) found by fuzz_bugs: free_sized(p, 0) of a large (or
 * sampled) block is not checked: free_impl passes `has_size ? sized : 0` to
 * large_free, which takes 0 as "no size given". A slab block in the same
 * mode is checked exactly (size-mismatch). Exit 0 when fixed. */
#include <stdio.h>

#include "miniheap.h"

static const char *last;
static void handler(const mh_error_t *e, void *arg) { (void)arg; last = e->kind; }

int main(void) {
    mh_set_error_handler(handler, NULL);
    if (mh_set_options("mode=hardened:abort_on_error=0") != 0) return 0;
    void *small = mh_malloc(100), *large = mh_malloc(1 << 20);
    mh_free_sized(small, 0);
    printf("free_sized(100-byte block, 0): %s\n", last ? last : "no report");
    int bad = last == NULL;
    last = NULL;
    mh_free_sized(large, 0);
    printf("free_sized(1 MiB block, 0): %s\n", last ? last : "no report");
    return bad || last == NULL;
}
