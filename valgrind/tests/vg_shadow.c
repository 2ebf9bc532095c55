/* ASan builds: a block given back gives back the shadow memory its
 * poisoning and unpoisoning touched (1 byte per 8). Without that, shadow
 * pages stayed resident for every address range a mapping ever used, and a
 * long fuzzing run grew by 0.7 MB per input until it hit its RSS limit.
 *
 * Eight 256 MiB blocks (32 MiB of shadow each) are allocated, touched and
 * freed (bigger than the large cache: unmapped at once); then the process
 * must be back within 16 MiB of where it started. Expected: "VG: vg_shadow:
 * done", no FAIL. Built prefixed, for the ASan run only. */
#include "vg_test.h"

static long rss_kib(void) {
    char buf[128] = {0};
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    long size = 0, resident = 0;
    if (n == 0 || sscanf(buf, "%ld %ld", &size, &resident) != 2) return -1;
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

int main(void) {
    vg_report_allocator("start");
    mh_set_options("large_cache_mb=0:quarantine_mb=0"); /* nothing kept: all unmapped */
    long before = rss_kib();
    for (int i = 0; i < 8; i++) {
        size_t n = (size_t)256 << 20;
        char *p = malloc(n);
        VG_CHECK(p != NULL);
        if (!p) break;
        p[0] = 1;
        p[n - 1] = 2;
        free(p);
    }
    malloc_trim(0);
    long after = rss_kib();
    vg_say("VG: resident %ld KiB before, %ld KiB after", before, after);
    VG_CHECK(before > 0 && after - before < 16 * 1024);
    vg_report_allocator("end");
    return vg_exit("vg_shadow");
}
