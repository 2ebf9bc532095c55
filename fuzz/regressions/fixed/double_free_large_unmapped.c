/* Allocator bug (fixed; kept as a regression test) found by fuzz_bugs: in hardened mode a double free of a
 * large block is reported as "double-free" while the freed mapping waits in
 * the large cache, but as "invalid-free" when the first free unmapped it at
 * once (decay_ms=0, large_cache_mb=0, or a block too big for the cache):
 * the allocator no longer knows the address. (The slab case and the cached
 * large case were fixed: fixed/double_free_reported_as_invalid_free.c.)
 * Exit 0 when fixed, 1 while the bug is there. */
#include <stdio.h>

#include "miniheap.h"

static const char *last;
static void handler(const mh_error_t *e, void *arg) { (void)arg; last = e->kind; }

int main(void) {
    mh_set_error_handler(handler, NULL);
    if (mh_set_options("mode=hardened:abort_on_error=0:quarantine_mb=0:decay_ms=0:large_cache_mb=0") != 0) return 0;
    void *p = mh_malloc(700000);
    mh_free(p);
    last = NULL;
    mh_free(p);
    printf("double free of an unmapped large block: reported as %s\n", last ? last : "(nothing)");
    return !(last && last[0] == 'd');
}
