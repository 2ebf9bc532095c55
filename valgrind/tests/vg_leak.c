/* Leaks, for memcheck's leak check.
 *
 *   vg_leak          leaks 100 + 200 + 300 bytes: expected exactly
 *                    "definitely lost: 600 bytes in 3 blocks" and nothing
 *                    indirectly/possibly lost or still reachable.
 *                    On miniheap the 100-byte block is the first block of a
 *                    slab (64 KiB-aligned) and the 300-byte block the first
 *                    block of a miniheap (4 MiB-aligned): their addresses are
 *                    exactly what the allocator's metadata records (slab
 *                    start, miniheap base), so a metadata pointer left
 *                    visible to memcheck would turn them "still reachable".
 *   vg_leak large    leaks one 300000-byte block (its own mapping, recorded
 *                    in the large-block table): "definitely lost: 300,000
 *                    bytes in 1 blocks".
 *   vg_leak site     leaks ten 100-byte blocks from one call site (the first
 *                    through a cache refill, the next from the cache): one
 *                    loss record, "1,000 bytes in 10 blocks".
 *
 * Prints "VG: leak slab-first=yes|no miniheap-first=yes|no". */
#include "vg_test.h"

#define SLAB_ALIGN ((uintptr_t)64 << 10)
#define MINIHEAP_ALIGN ((uintptr_t)4 << 20)
#define MAXTRY 40000

static void *tries[MAXTRY];

/* Allocate blocks of `size` until one is aligned to `align` (on miniheap),
 * free all the others, return the aligned one (written, so defined). With
 * align 0 (not on miniheap) the first block is taken. */
static VG_NOINLINE int leak_aligned(size_t size, uintptr_t align, unsigned seed) {
    size_t n = 0, found = MAXTRY;
    int aligned = 0;
    while (n < MAXTRY) {
        void *p = malloc(size);
        if (!p) break;
        tries[n] = p;
        if (!align || ((uintptr_t)p & (align - 1)) == 0) {
            found = n++;
            aligned = align != 0;
            break;
        }
        n++;
    }
    if (found == MAXTRY) {
        if (!n) return 0;
        found = n - 1; /* none aligned: leak the last one anyway */
    }
    vg_fill(tries[found], size, seed);
    for (size_t i = 0; i < n; i++)
        if (i != found) free(tries[i]);
    memset(tries, 0, sizeof tries);
    return aligned;
}

static VG_NOINLINE void leak_plain(size_t size, unsigned seed) {
    void *p = malloc(size);
    vg_fill(p, size, seed);
}

static VG_NOINLINE void make_noise(void) {
    /* Some live-and-freed traffic in the same classes, so the leaked blocks
     * are not the only ones the allocator has seen. */
    void *a[16];
    for (int i = 0; i < 16; i++) a[i] = malloc(100 + (size_t)i * 50);
    for (int i = 0; i < 16; i++) free(a[i]);
}

static VG_NOINLINE void leak_ten(void) {
    for (int i = 0; i < 10; i++) vg_fill(malloc(100), 100, (unsigned)i);
}

int main(int argc, char **argv) {
    int mh = vg_report_allocator("start");
    if (argc > 1 && strcmp(argv[1], "site") == 0) {
        leak_ten();
    } else if (argc > 1 && strcmp(argv[1], "large") == 0) {
        leak_plain(300000, 5);
        make_noise();
    } else {
        int slab_first = 0, mh_first = 0;
        /* 100 bytes: the first block of a slab. */
        if (leak_aligned(100, mh ? SLAB_ALIGN : 0, 1)) slab_first = 1;
        make_noise();
        leak_plain(200, 2);
        /* 300 bytes: the first block of a miniheap. */
        if (leak_aligned(300, mh ? MINIHEAP_ALIGN : 0, 3)) mh_first = 1;
        vg_say("VG: leak slab-first=%s miniheap-first=%s", slab_first ? "yes" : "no",
               mh_first ? "yes" : "no");
    }
    vg_report_allocator("end");
    vg_clobber_stack();
    return vg_exit("vg_leak");
}
