/* Allocator bug (fixed; kept as a regression test) found by fuzz_bugs (an
 * extended libFuzzer campaign): in hardened mode a double free of a large
 * block whose freed mapping had waited in the large cache and was then
 * given back (mh_trim here; a decay pass or a full cache did the same) was
 * reported as "invalid-free": the cache's evictions did not keep the
 * address as freed, as an unmapping at the free itself does
 * (fixed/double_free_large_unmapped.c). Exit 0 when fixed, 1 while the bug
 * is there. */
#include <stdio.h>

#include "miniheap.h"

static const char *last;
static void handler(const mh_error_t *e, void *arg) { (void)arg; last = e->kind; }

int main(void) {
    mh_set_error_handler(handler, NULL);
    if (mh_set_options("mode=hardened:abort_on_error=0:quarantine_mb=0:decay_ms=1000:large_cache_mb=64:background=0") != 0)
        return 0;
    void *p = mh_malloc(131073);
    mh_free(p); /* into the large cache */
    mh_trim(0); /* the cache is given back */
    last = NULL;
    mh_free(p);
    printf("double free of a large block given back from the cache: reported as %s\n", last ? last : "(nothing)");
    return !(last && last[0] == 'd');
}
