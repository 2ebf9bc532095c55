/* One heap bug per run: `vg_bugs SCENARIO`. Each scenario prints
 * "VG: scenario NAME", reports the allocator, then commits exactly one bug
 * (memcheck must report exactly one error for the memory-access ones).
 *
 *   uaf_small               read 50 bytes into a freed 100-byte block
 *   uaf_large               read 1000 bytes into a freed 300000-byte block
 *   uaf_after_churn         free a 100-byte block, allocate 200 more of that
 *                           size (kept live), then read the freed one: only
 *                           a quarantine keeps it from being handed out again
 *   overflow_fill           write 1 byte past a 64-byte block (fills its class)
 *   overflow_partial        write 1 byte past a 50-byte block (class of 64)
 *   overflow_large          write 1 byte past a 300000-byte block (page tail)
 *   underflow               read 1 byte before a 64-byte block
 *   realloc_shrink_inplace  100 -> 70 bytes (stays put on miniheap), read [70]
 *   realloc_shrink_move     100 -> 40 bytes (moves on miniheap), read [40]
 *   realloc_shrink_large    300000 -> 200000 bytes, read [200000]
 *   uninit_small            branch on a byte of a new 64-byte block
 *   uninit_large            branch on a byte of a new 300000-byte block
 *   uninit_realloc          grow 100 -> 110 in place, branch on byte 105
 *   double_free             free a 100-byte block twice
 *   double_free_large       free a 300000-byte block twice
 *   invalid_free_interior   free 16 bytes into a live block
 *   invalid_free_stack      free the address of a local variable
 *   realloc_freed           realloc a freed block
 */
#include "vg_test.h"

static volatile unsigned char sink;

/* Hide a pointer's origin from the compiler so it neither warns about the
 * deliberate bug nor optimises it away. */
static VG_NOINLINE void *launder(void *p) {
    __asm__ volatile("" : "+r"(p));
    return p;
}

static VG_NOINLINE void read_at(void *p, ptrdiff_t off) {
    volatile unsigned char *c = launder(p);
    sink = c[off];
}

static VG_NOINLINE void write_at(void *p, ptrdiff_t off) {
    volatile unsigned char *c = launder(p);
    c[off] = 0x5a;
}

static VG_NOINLINE void branch_on(void *p, ptrdiff_t off) {
    volatile unsigned char *c = launder(p);
    if (c[off] == 42) vg_say("VG: the byte is 42");
    else vg_say("VG: the byte is not 42");
}

static void *filled(size_t n) {
    void *p = malloc(n);
    if (!p) {
        vg_say("VG: FAIL malloc(%zu) returned NULL", n);
        exit(2);
    }
    vg_fill(p, n, (unsigned)n);
    return p;
}

static void uaf_small(void) {
    void *p = filled(100);
    free(p);
    read_at(p, 50);
}

static void uaf_large(void) {
    void *p = filled(300000);
    free(p);
    read_at(p, 1000);
}

static void uaf_after_churn(void) {
    void *p = filled(100);
    free(p);
    void *keep[200];
    for (int i = 0; i < 200; i++) keep[i] = filled(100);
    read_at(p, 50);
    for (int i = 0; i < 200; i++) free(keep[i]);
}

static void overflow_fill(void) {
    void *p = filled(64);
    write_at(p, 64);
    free(p);
}

static void overflow_partial(void) {
    void *p = filled(50);
    write_at(p, 50);
    free(p);
}

static void overflow_large(void) {
    void *p = filled(300000);
    write_at(p, 300000);
    free(p);
}

static void underflow(void) {
    void *p = filled(64);
    read_at(p, -1);
    free(p);
}

static void realloc_shrink_inplace(void) {
    void *p = filled(100);
    void *q = realloc(p, 70);
    vg_say("VG: realloc 100->70 %s", q == p ? "in-place" : "moved");
    read_at(q, 70);
    free(q);
}

static void realloc_shrink_move(void) {
    void *p = filled(100);
    void *q = realloc(p, 40);
    vg_say("VG: realloc 100->40 %s", q == p ? "in-place" : "moved");
    read_at(q, 40);
    free(q);
}

static void realloc_shrink_large(void) {
    void *p = filled(300000);
    void *q = realloc(p, 200000);
    vg_say("VG: realloc 300000->200000 %s", q == p ? "in-place" : "moved");
    read_at(q, 200000);
    free(q);
}

static void uninit_small(void) {
    void *p = malloc(64);
    branch_on(p, 10);
    free(p);
}

static void uninit_large(void) {
    void *p = malloc(300000);
    branch_on(p, 100000);
    free(p);
}

static void uninit_realloc(void) {
    void *p = filled(100);
    void *q = realloc(p, 110);
    vg_say("VG: realloc 100->110 %s", q == p ? "in-place" : "moved");
    branch_on(q, 105);
    free(q);
}

static void double_free(void) {
    void *p = filled(100);
    free(p);
    free(launder(p));
}

static void double_free_large(void) {
    void *p = filled(300000);
    free(p);
    free(launder(p));
}

static void invalid_free_interior(void) {
    char *p = filled(100);
    free(launder(p + 16));
    free(p);
}

static void invalid_free_stack(void) {
    char local[64];
    memset(local, 1, sizeof local);
    free(launder(local));
    sink = local[0];
}

static void realloc_freed(void) {
    void *p = filled(100);
    free(p);
    void *q = realloc(launder(p), 200);
    vg_say("VG: realloc of a freed block returned %s", q ? "a block" : "NULL");
}

static const struct {
    const char *name;
    void (*fn)(void);
} scenarios[] = {
#define S(n) {#n, n}
    S(uaf_small), S(uaf_large), S(uaf_after_churn), S(overflow_fill), S(overflow_partial), S(overflow_large),
    S(underflow), S(realloc_shrink_inplace), S(realloc_shrink_move), S(realloc_shrink_large),
    S(uninit_small), S(uninit_large), S(uninit_realloc), S(double_free), S(double_free_large),
    S(invalid_free_interior), S(invalid_free_stack), S(realloc_freed),
#undef S
};

int main(int argc, char **argv) {
    size_t n = sizeof scenarios / sizeof scenarios[0];
    if (argc != 2) {
        vg_say("usage: vg_bugs SCENARIO; scenarios:");
        for (size_t i = 0; i < n; i++) vg_say("  %s", scenarios[i].name);
        return 2;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(argv[1], scenarios[i].name) == 0) {
            vg_say("VG: scenario %s", scenarios[i].name);
            vg_report_allocator("start");
            scenarios[i].fn();
            vg_say("VG: scenario %s: returned", scenarios[i].name);
            return 0;
        }
    }
    vg_say("vg_bugs: unknown scenario '%s'", argv[1]);
    return 2;
}
