/* Clean program: every entry point of the malloc family, small and large
 * blocks, every byte of every block written and read back (up to
 * malloc_usable_size, as programs may), calloc'd memory branched on, every
 * block freed. Expected: no memcheck/sanitizer error, "All heap blocks were
 * freed". */
#include "vg_test.h"

static const size_t sizes[] = {0, 1, 15, 16, 50, 64, 100, 1000, 4096, 65536, 131072, 131073, 300000,
                               2u << 20};
#define NSIZES (sizeof sizes / sizeof sizes[0])

/* Write every usable byte, read them back; a branch on each byte makes
 * memcheck check definedness. */
static void use(void *p, size_t asked, unsigned seed) {
    VG_CHECK(p != NULL);
    if (!p) return;
    size_t u = malloc_usable_size(p);
    VG_CHECK(u >= asked);
    vg_fill(p, u, seed);
    VG_CHECK(vg_check_fill(p, u, seed));
}

static void check_zero(const void *p, size_t n) {
    const unsigned char *c = p;
    size_t nz = 0;
    for (size_t i = 0; i < n; i++)
        if (c[i]) nz++;
    VG_CHECK(nz == 0);
}

int main(void) {
    vg_report_allocator("start");
    void *keep[64];
    size_t nkeep = 0;

    free(NULL);

    for (size_t i = 0; i < NSIZES; i++) {
        void *p = malloc(sizes[i]);
        use(p, sizes[i], (unsigned)i);
        keep[nkeep++] = p;

        void *z = calloc(1, sizes[i]);
        VG_CHECK(z != NULL);
        check_zero(z, sizes[i]);
        use(z, sizes[i], (unsigned)i + 1);
        keep[nkeep++] = z;
    }
    void *z = calloc(7, 33);
    check_zero(z, 231);
    free(z);

    /* Aligned entry points. */
    static const size_t aligns[] = {8, 16, 32, 64, 256, 4096, 65536, 1u << 20};
    for (size_t i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
        void *p = NULL;
        VG_CHECK(posix_memalign(&p, aligns[i], 100 + i * 1000) == 0);
        VG_CHECK(((uintptr_t)p & (aligns[i] - 1)) == 0);
        use(p, 100 + i * 1000, 3);
        free(p);
    }
    void *a = aligned_alloc(64, 128);
    VG_CHECK(((uintptr_t)a & 63) == 0);
    use(a, 128, 4);
    free(a);
    a = aligned_alloc(4096, 200000);
    VG_CHECK(((uintptr_t)a & 4095) == 0);
    use(a, 200000, 5);
    free(a);
    a = memalign(32, 100);
    VG_CHECK(((uintptr_t)a & 31) == 0);
    use(a, 100, 6);
    free(a);
    a = valloc(100);
    VG_CHECK(((uintptr_t)a & 4095) == 0);
    use(a, 100, 7);
    free(a);
    if (vg_on_miniheap()) { /* valgrind 3.19's own malloc aborts on pvalloc */
        a = pvalloc(100);
        VG_CHECK(((uintptr_t)a & 4095) == 0);
        use(a, 4096, 8);
        free(a);
    }

    /* realloc family (the realloc program covers the paths in detail). */
    void *r = realloc(NULL, 40);
    use(r, 40, 9);
    r = realloc(r, 4000);
    VG_CHECK(vg_check_fill(r, 40, 9));
    use(r, 4000, 10);
    r = reallocarray(r, 100, 3);
    VG_CHECK(vg_check_fill(r, 300, 10));
    use(r, 300, 11);
    void *r0 = realloc(r, 0); /* glibc: frees and returns NULL */
    if (r0) free(r0);

    /* Sized frees (C23), when the allocator has them. */
    if (VG_HAVE_FREE_SIZED) {
        void *p = malloc(100);
        use(p, 100, 12);
        VG_FREE_SIZED(p, 100);
        p = malloc(300000);
        use(p, 300000, 13);
        VG_FREE_SIZED(p, 300000);
    }
    if (VG_HAVE_FREE_ALIGNED_SIZED) {
        void *p = aligned_alloc(256, 512);
        use(p, 512, 14);
        VG_FREE_ALIGNED_SIZED(p, 256, 512);
    }

#ifndef VG_PREFIXED
    /* libc functions that allocate through malloc. */
    char *s = strdup("miniheap under valgrind");
    VG_CHECK(s && strcmp(s, "miniheap under valgrind") == 0);
    free(s);
    char *t = NULL;
    VG_CHECK(asprintf(&t, "%s-%d", "block", 42) > 0);
    VG_CHECK(t && strcmp(t, "block-42") == 0);
    free(t);
#endif

    vg_report_allocator("blocks live");
    for (size_t i = 0; i < nkeep; i++) free(keep[i]);
    malloc_trim(0);
    vg_report_allocator("end");
    return vg_exit("vg_clean_api");
}
