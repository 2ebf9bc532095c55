/* Allocator bug (fixed; kept as a regression test) found by fuzz_ops and fuzz_bugs (ASan CHECK failure in
 * memset, out-of-memory, AFL++ hangs): large_alloc reuses the cached mapping
 * closest in size and grows it with mremap to any size, then finish_alloc
 * zeroes the whole request for calloc because the block is not "fresh":
 * memset over the new size, although only the part that was resident before
 * can hold old data (the grown part is new, zero pages). calloc(1, 1 GiB)
 * after freeing a 300 KB block makes 1 GiB resident; calloc of tens of TiB
 * (which must fail or stay lazy) runs out of memory.
 * Exit 0 when fixed (calloc of 1 GiB leaves well under 256 MiB resident). */
#include <stdio.h>
#include <string.h>

#include "miniheap.h"

static long rss_mb(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
        fclose(f);
    }
    return res * 4096 / (1 << 20);
}

int main(void) {
    mh_set_options("mode=fast:large_cache_mb=64:decay_ms=10000");
    void *small = mh_malloc(300000);
    memset(small, 1, 300000);
    mh_free(small);                       /* into the large cache */
    long before = rss_mb();
    void *p = mh_calloc(1, (size_t)1 << 30);
    long after = rss_mb();
    printf("calloc(1 GiB) = %p: resident %ld MiB -> %ld MiB\n", p, before, after);
    mh_free(p);
    return after - before > 256;
}
