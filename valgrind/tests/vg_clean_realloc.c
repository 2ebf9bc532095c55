/* Clean program: realloc growing in place, moving and shrinking, for small
 * blocks (in slabs), large blocks (own mappings) and across the two. The
 * contents must survive and stay defined (every byte is branched on); the
 * new tail of a grown block is written before it is read.
 *
 * Prints one line per step, "VG: realloc STEP OLD->NEW in-place|moved";
 * run-tests.sh checks that on miniheap the in-place paths were taken (memcheck
 * then sees VALGRIND_RESIZEINPLACE_BLOCK). */
#include "vg_test.h"

static void *step(const char *name, void *p, size_t old, size_t size, unsigned seed) {
    void *q = realloc(p, size);
    VG_CHECK(q != NULL);
    if (!q) return p;
    size_t keep = old < size ? old : size;
    VG_CHECK(vg_check_fill(q, keep, seed));
    vg_say("VG: realloc %s %zu->%zu %s", name, old, size, q == p ? "in-place" : "moved");
    vg_fill(q, size, seed + 1);
    VG_CHECK(vg_check_fill(q, size, seed + 1));
    return q;
}

int main(void) {
    vg_report_allocator("start");

    /* Small: 100 lives in the 112-byte class. */
    void *p = malloc(100);
    vg_fill(p, 100, 1);
    p = step("small-grow", p, 100, 110, 1);          /* same class: in place */
    p = step("small-shrink", p, 110, 70, 2);         /* more than half the class: in place */
    p = step("small-grow-move", p, 70, 1000, 3);     /* other class */
    p = step("small-shrink-move", p, 1000, 100, 4);  /* less than half: moves */
    p = step("small-same", p, 100, 100, 5);
    p = step("small-to-large", p, 100, 200000, 6);
    p = step("large-grow", p, 200000, 200100, 7);    /* same pages: in place */
    p = step("large-shrink", p, 200100, 199000, 8);  /* in place */
    p = step("large-grow-move", p, 199000, 1000000, 9);
    p = step("large-shrink-far", p, 1000000, 300000, 10); /* tail given back, in place */
    p = step("large-to-small", p, 300000, 1000, 11);
    p = step("small-to-tiny", p, 1000, 8, 12);
    free(p);

    /* reallocarray and realloc(NULL, n). */
    void *q = reallocarray(NULL, 10, 10);
    vg_fill(q, 100, 20);
    q = reallocarray(q, 20, 10);
    VG_CHECK(vg_check_fill(q, 100, 20));
    free(q);

    /* Many small steps growing one block through every small class. */
    unsigned char *g = NULL;
    size_t have = 0;
    for (size_t n = 8; n <= 140000; n = n * 5 / 4 + 8) {
        g = realloc(g, n);
        VG_CHECK(g != NULL);
        if (!g) break;
        VG_CHECK(vg_check_fill(g, have, 30));
        vg_fill(g, n, 30);
        have = n;
    }
    /* ... and back down. */
    for (size_t n = have; n >= 8; n = n * 3 / 4) {
        g = realloc(g, n);
        VG_CHECK(g != NULL);
        if (!g) break;
        VG_CHECK(vg_check_fill(g, n, 30));
    }
    free(g);

    vg_report_allocator("end");
    return vg_exit("vg_clean_realloc");
}
