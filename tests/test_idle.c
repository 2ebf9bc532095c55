/* An idle program gives memory back (issue #12).
 *
 * In each mode: allocate about 200 MB of 16 B - 4 KiB blocks, keep 1 in 50,
 * free the rest, then make no allocator call at all and watch the resident
 * size for 2 x decay_ms. Then malloc_trim(0) gives back all it can: the
 * floor. With the purge thread (the default) the resident size must have
 * come within 2 MiB (the thread's cache), what the mode keeps on purpose
 * (debug's quarantines) and 5 % of the drop of that floor, within
 * 2 x decay_ms. With background=0 (the control) nothing can give it back
 * before the trim, since no allocator call runs the give-back clock, and it
 * must stay high. Plain build only
 * (run under LD_PRELOAD); each mode and the control in a fresh process.
 *
 * The program has 256 KiB of __thread data, which glibc places on the stack
 * of every thread: the purge thread's 128 KiB stack was too small for it,
 * pthread_create failed, and such a program never gave memory back.
 */
#include "mh_test.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define MiB ((size_t)1 << 20)
#define DECAY_MS 1000

static __thread volatile char tls_data[256 << 10];

static size_t rss_now(void)
{
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0)
        close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    unsigned long size = 0, rss = 0;
    char *p = buf;
    size = strtoul(p, &p, 10);
    rss = strtoul(p, &p, 10);
    (void)size;
    return (size_t)rss * 4096;
}

static double ms_since(struct timespec t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0.tv_sec) * 1e3 + (double)(t.tv_nsec - t0.tv_nsec) / 1e6;
}

/* One run; returns 0 when it behaved as `background` says. `kept`: what
 * the mode holds back on purpose (debug's quarantines). */
static int run(int background, size_t kept)
{
    enum { N = 96000 }; /* blocks of 16 B - 4 KiB: about 200 MB */
    static char out[512];
    void **blocks = mmap(NULL, (size_t)N * sizeof(void *), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(blocks != MAP_FAILED, "mmap");
    tls_data[sizeof tls_data - 1] = 1;
    size_t base = rss_now(), live = 0, total = 0;
    rng_t r;
    rng_seed(&r, 42);
    size_t nb = N;
    for (size_t i = 0; i < nb; i++) {
        size_t n = rng_range(&r, 16, 4096);
        blocks[i] = A_MALLOC(n);
        REQUIRE(blocks[i] != NULL, "malloc");
        memset(blocks[i], 1, n);
        total += n;
        if (i % 50 == 0)
            live += n;
    }
    for (size_t i = 0; i < nb; i++)
        if (i % 50 != 0)
            A_FREE(blocks[i]);
    size_t dropped = rss_now();
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* No allocator call from here on: only reads of /proc/self/statm. */
    static size_t rss[1000];
    static double at[1000];
    int ns = 0;
    while (ns < 1000 && (ns == 0 || at[ns - 1] < 2 * DECAY_MS)) {
        at[ns] = ms_since(t0);
        rss[ns++] = rss_now();
        usleep(10000);
    }
    /* What a forced give-back reaches: the floor the thread should get near
     * on its own (trim also empties this thread's cache and quarantine: the
     * allowance for those is 2 MiB of cache plus what the mode keeps). */
    malloc_trim(0);
    size_t trimmed = rss_now();
    size_t limit = trimmed + 2 * MiB + kept + (dropped - base) / 20;
    double fell_at = -1;
    for (int i = 0; i < ns && fell_at < 0; i++)
        if (rss[i] <= limit)
            fell_at = at[i];
    size_t now = rss[ns - 1];
    int n = snprintf(out, sizeof out,
                     "  background=%d: %zu MB allocated, %zu MB live; resident (above the start) %zu MB after the drop, "
                     "%zu MB %d ms later, %zu MB after malloc_trim; limit %zu MB%s",
                     background, total / MiB, live / MiB, (dropped - base) / MiB, (now - base) / MiB, 2 * DECAY_MS,
                     (trimmed - base) / MiB, (limit - base) / MiB, fell_at >= 0 ? "" : ", never under it\n");
    if (write(1, out, (size_t)n) < 0) {}
    if (fell_at >= 0) {
        n = snprintf(out, sizeof out, ", under it %.0f ms after the drop\n", fell_at);
        if (write(1, out, (size_t)n) < 0) {}
    }
    if (background)
        return fell_at >= 0 && fell_at <= 2 * DECAY_MS ? 0 : 1;
    /* The control: nothing may have given the memory back before the trim. */
    return now > base + (dropped - base) / 2 ? 0 : 1;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    mh_test_check_allocator("test_idle");
#ifndef USE_PLAIN
    printf("test_idle: the plain build only (options come from the environment)\n");
    return 0;
#endif
    if (argc == 3)
        return run(atoi(argv[1]), (size_t)atol(argv[2]) * MiB);
    static const char *const modes[] = {"fast", "hardened", "debug"};
    for (int m = 0; m < 3; m++)
        for (int bg = 1; bg >= 0; bg--) {
            char opts[128];
            snprintf(opts, sizeof opts, "mode=%s:decay_ms=%d:background=%d:leak_report=0", modes[m], DECAY_MS, bg);
            fflush(stdout);
            pid_t pid = fork();
            REQUIRE(pid >= 0, "fork");
            if (pid == 0) {
                setenv("MINIHEAP_OPTIONS", opts, 1);
                /* debug: 16 MiB of small blocks and 16 MiB of sampled ones in quarantine */
                char arg[4], kept[8];
                snprintf(arg, sizeof arg, "%d", bg);
                snprintf(kept, sizeof kept, "%d", m == 2 ? 32 : 0);
                execl("/proc/self/exe", argv[0], arg, kept, (char *)NULL);
                _exit(127);
            }
            int st = 0;
            waitpid(pid, &st, 0);
            CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "[%s] %s: the resident size %s (status %#x)", modes[m],
                  bg ? "with the purge thread" : "background=0 (control)",
                  bg ? "did not fall within 2 x decay_ms" : "fell without the thread", st);
        }
    return mh_test_exit("test_idle");
}
