/* Shared helpers for the miniheap test programs.
 *
 * Every test program is built twice from the same source:
 *   - prefixed: uses the mh_* API and links build/libminiheap_prefixed.a;
 *   - plain (-DUSE_PLAIN): uses malloc, free, ... and is run under
 *     LD_PRELOAD=build/libminiheap.so by tests/run.sh.
 * The A_* macros below name the entry point under test in either build.
 *
 * Failures are counted; each is printed with file:line. A program exits
 * with mh_test_exit(), which prints a summary and returns 1 on failure.
 */
#ifndef MH_TEST_H
#define MH_TEST_H

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "miniheap.h"

#ifdef USE_PLAIN
#define A_NAME(n) n
#define MH_BUILD_NAME "plain"
/* Not declared by glibc 2.36 (C23 additions). Weak: they resolve to
 * libminiheap.so's definitions when it is preloaded, and stay NULL when the
 * test runs on an allocator that lacks them. */
extern void free_sized(void *ptr, size_t size) __attribute__((weak));
extern void free_aligned_sized(void *ptr, size_t alignment, size_t size) __attribute__((weak));
#else
#define A_NAME(n) mh_##n
#define MH_BUILD_NAME "prefixed"
#endif

#define A_MALLOC A_NAME(malloc)
#define A_FREE A_NAME(free)
#define A_CALLOC A_NAME(calloc)
#define A_REALLOC A_NAME(realloc)
#define A_REALLOCARRAY A_NAME(reallocarray)
#define A_POSIX_MEMALIGN A_NAME(posix_memalign)
#define A_ALIGNED_ALLOC A_NAME(aligned_alloc)
#define A_MEMALIGN A_NAME(memalign)
#define A_VALLOC A_NAME(valloc)
#define A_PVALLOC A_NAME(pvalloc)
#define A_USABLE A_NAME(malloc_usable_size)

static atomic_long mh_test_failures;
static atomic_long mh_test_checks;

__attribute__((format(printf, 3, 4))) static void
mh_test_fail(const char *file, int line, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    /* One write per failure so lines from several threads do not mix. */
    char line_buf[700];
    int n = snprintf(line_buf, sizeof line_buf, "FAIL %s:%d: %s\n", file, line, buf);
    if (n > 0) {
        size_t len = (size_t)n < sizeof line_buf ? (size_t)n : sizeof line_buf - 1;
        ssize_t w = write(STDOUT_FILENO, line_buf, len);
        (void)w;
    }
    atomic_fetch_add(&mh_test_failures, 1);
}

/* CHECK(cond, fmt, ...): count a check; on failure print the message. */
#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        atomic_fetch_add_explicit(&mh_test_checks, 1, memory_order_relaxed);   \
        if (!(cond))                                                           \
            mh_test_fail(__FILE__, __LINE__, __VA_ARGS__);                     \
    } while (0)

/* REQUIRE: like CHECK, but abandons the program (no point continuing).
 * cond is evaluated once. */
#define REQUIRE(cond, ...)                                                     \
    do {                                                                       \
        int mh_req_ok_ = !!(cond);                                             \
        CHECK(mh_req_ok_, __VA_ARGS__);                                        \
        if (!mh_req_ok_)                                                       \
            mh_test_abandon();                                                 \
    } while (0)

static inline long mh_test_failed(void) { return atomic_load(&mh_test_failures); }

static inline void mh_test_print_summary(const char *prog)
{
    printf("%s [%s]: %ld checks, %ld failures\n", prog, MH_BUILD_NAME,
           (long)atomic_load(&mh_test_checks), (long)atomic_load(&mh_test_failures));
    fflush(stdout);
}

static inline __attribute__((noreturn)) void mh_test_abandon(void)
{
    printf("abandoning the test after a fatal failure\n");
    fflush(stdout);
    _exit(1);
}

static inline int mh_test_exit(const char *prog)
{
    mh_test_print_summary(prog);
    return atomic_load(&mh_test_failures) ? 1 : 0;
}

/* Hide a value from the optimiser (stops constant folding of malloc(SIZE_MAX)
 * and -Walloc-size-larger-than). */
static inline size_t opaque(size_t x)
{
    __asm__ volatile("" : "+r"(x));
    return x;
}

static inline void *opaque_ptr(void *p)
{
    __asm__ volatile("" : "+r"(p));
    return p;
}

/* vm.overcommit_memory (0 if unknown). */
static inline int mh_test_overcommit_policy(void)
{
    FILE *f = fopen("/proc/sys/vm/overcommit_memory", "r");
    int v = 0;
    if (f) {
        if (fscanf(f, "%d", &v) != 1)
            v = 0;
        fclose(f);
    }
    return v;
}

/* The process's resident size in bytes (0 if unknown), from
 * /proc/self/statm. Makes no allocation: test_idle reads it while the
 * program must make no allocator call. */
static inline size_t mh_test_resident_bytes(void)
{
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0)
        close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    char *p = buf;
    (void)strtoul(p, &p, 10); /* the size */
    unsigned long rss = strtoul(p, &p, 10);
    return (size_t)rss * (size_t)sysconf(_SC_PAGESIZE);
}

static inline double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* xorshift64* with a fixed seed per stream: deterministic workloads. */
typedef struct { uint64_t s; } rng_t;
static inline void rng_seed(rng_t *r, uint64_t seed)
{
    r->s = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
    if (!r->s)
        r->s = 1;
}
static inline uint64_t rng_next(rng_t *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}
/* uniform in [lo, hi] */
static inline size_t rng_range(rng_t *r, size_t lo, size_t hi)
{
    return lo + (size_t)(rng_next(r) % (uint64_t)(hi - lo + 1));
}

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* Pattern fill derived from (pointer, size). Blocks up to 8 KiB are filled
 * completely; bigger ones on the first and last 4 KiB and one byte every
 * 512 bytes in between (keeps 300 KiB blocks cheap). */
static inline uint8_t pat_byte(uint64_t h, size_t i)
{
    return (uint8_t)((h >> ((i & 7) * 8)) + (uint8_t)(i >> 3) * 31u);
}
static inline uint64_t pat_seed(const void *p, size_t size)
{
    return mix64((uint64_t)(uintptr_t)p ^ ((uint64_t)size << 1) ^ 0x5bd1e995ull);
}
static inline void pat_fill_seed(void *p, size_t size, uint64_t h)
{
    uint8_t *b = p;
    if (size <= 8192) {
        for (size_t i = 0; i < size; i++)
            b[i] = pat_byte(h, i);
        return;
    }
    for (size_t i = 0; i < 4096; i++)
        b[i] = pat_byte(h, i);
    for (size_t i = 4096; i < size - 4096; i += 512)
        b[i] = pat_byte(h, i);
    for (size_t i = size - 4096; i < size; i++)
        b[i] = pat_byte(h, i);
}
/* Check the pattern written by pat_fill_seed(p, size, h), looking only at
 * bytes below lim (what survives a realloc to a smaller size). Returns the
 * offset of the first bad byte, or (size_t)-1 if all good. */
static inline size_t pat_check_lim(const void *p, size_t size, uint64_t h, size_t lim)
{
    const uint8_t *b = p;
    if (lim > size)
        lim = size;
    if (size <= 8192) {
        for (size_t i = 0; i < lim; i++)
            if (b[i] != pat_byte(h, i))
                return i;
        return (size_t)-1;
    }
    for (size_t i = 0; i < 4096 && i < lim; i++)
        if (b[i] != pat_byte(h, i))
            return i;
    for (size_t i = 4096; i < size - 4096 && i < lim; i += 512)
        if (b[i] != pat_byte(h, i))
            return i;
    for (size_t i = size - 4096; i < lim; i++)
        if (b[i] != pat_byte(h, i))
            return i;
    return (size_t)-1;
}
static inline size_t pat_check_seed(const void *p, size_t size, uint64_t h)
{
    return pat_check_lim(p, size, h, size);
}
static inline void pat_fill(void *p, size_t size) { pat_fill_seed(p, size, pat_seed(p, size)); }
static inline size_t pat_check(const void *p, size_t size)
{
    return pat_check_seed(p, size, pat_seed(p, size));
}

/* Is the process really running on miniheap? Always true for the prefixed
 * build (it calls mh_* directly). For the plain build: libminiheap.so exports
 * mh_stats, so it is visible in the global scope when preloaded. */
static inline int mh_under_miniheap(void)
{
#ifdef USE_PLAIN
    return dlsym(RTLD_DEFAULT, "mh_stats") != NULL;
#else
    return 1;
#endif
}

/* run.sh sets MH_EXPECT_MINIHEAP=1 when it preloads libminiheap.so: then a
 * plain test that finds itself on another allocator must fail, not pass. */
static inline void mh_test_check_allocator(const char *prog)
{
#ifdef USE_PLAIN
    const char *e = getenv("MH_EXPECT_MINIHEAP");
    int under = mh_under_miniheap();
    printf("%s [plain]: allocator under test: %s\n", prog, under ? "miniheap (preloaded)" : "system malloc");
    if (e && *e == '1')
        REQUIRE(under, "MH_EXPECT_MINIHEAP=1 but mh_stats is not visible: libminiheap.so is not preloaded");
#else
    printf("%s [prefixed]: allocator under test: miniheap (mh_* API, static)\n", prog);
#endif
    fflush(stdout);
}

/* Optional mh_* hooks for the plain build (resolved through the preloaded
 * library when present). */
typedef int (*mh_check_fn)(void);
typedef void (*mh_stats_fn)(mh_stats_t *);
static inline mh_check_fn mh_find_check(void)
{
#ifdef USE_PLAIN
    mh_check_fn f;
    void *s = dlsym(RTLD_DEFAULT, "mh_check");
    memcpy(&f, &s, sizeof f);
    return f;
#else
    return mh_check;
#endif
}
static inline mh_stats_fn mh_find_stats(void)
{
#ifdef USE_PLAIN
    mh_stats_fn f;
    void *s = dlsym(RTLD_DEFAULT, "mh_stats");
    memcpy(&f, &s, sizeof f);
    return f;
#else
    return mh_stats;
#endif
}

/* A field of /proc/self/smaps_rollup ("Pss", "Rss", ...) in bytes, or -1.
 * Reads with open/read into a stack buffer: no allocation. */
#include <fcntl.h>
static inline long long mh_read_rollup(const char *key)
{
    char buf[4096];
    int fd = open("/proc/self/smaps_rollup", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len >= sizeof buf - 1)
            break;
    }
    close(fd);
    buf[len] = 0;
    size_t klen = strlen(key);
    for (char *line = buf; line && *line;) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':')
            return strtoll(line + klen + 1, NULL, 10) * 1024;
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return -1;
}

#include <dirent.h>
/* How many of this process's threads have a name that starts with prefix
 * ("miniheap-": ours), from /proc/self/task; -1 if it cannot be read. */
static inline int mh_test_threads_named(const char *prefix)
{
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[96], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            continue;
        ssize_t r = read(fd, comm, sizeof comm - 1);
        close(fd);
        if (r > 0 && strncmp(comm, prefix, strlen(prefix)) == 0)
            n++;
    }
    closedir(d);
    return n;
}

#include <sys/wait.h>
/* Wait for a child whose output went to the temporary file fd (path); read
 * that output into out (NUL-terminated), remove the file, and return the
 * child's wait status. */
static inline int mh_test_child_output(pid_t pid, int fd, const char *path, char *out, size_t cap)
{
    int st = 0;
    waitpid(pid, &st, 0);
    memset(out, 0, cap);
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, out, cap - 1);
    (void)n;
    close(fd);
    unlink(path);
    return st;
}

#ifndef USE_PLAIN
#include <signal.h>
/* `rounds` spikes of `spike` bytes of 256-byte blocks, each freed and then
 * given back by trim(0): how far (bytes) the lowest block of any spike went
 * below the first spike's. A heap whose miniheaps walk down the address
 * space leaves new pages of its radix tables behind at each spike. */
static inline size_t mh_test_spike_drift(void *(*alloc)(size_t), void (*dealloc)(void *), int (*trim)(size_t),
                                         size_t spike, int rounds)
{
    const size_t bsize = 256, n = spike / bsize;
    void **blk = calloc(n, sizeof *blk); /* system malloc: not part of the heap under test */
    if (!blk) return SIZE_MAX;
    uintptr_t first = 0, lowest = UINTPTR_MAX;
    for (int r = 0; r < rounds; r++) {
        uintptr_t low = UINTPTR_MAX;
        for (size_t i = 0; i < n; i++) {
            blk[i] = alloc(bsize);
            if (!blk[i]) { lowest = 0; break; }
            if ((uintptr_t)blk[i] < low) low = (uintptr_t)blk[i];
        }
        for (size_t i = 0; i < n; i++) dealloc(blk[i]); /* (NULL after a failure) */
        trim(0);
        if (r == 0) first = low;
        if (low < lowest) lowest = low;
    }
    free(blk);
    return lowest > first ? 0 : first - lowest;
}

/* Run fn(mode) for mode = fast, hardened, debug, each in a child process
 * of its own (a fresh heap; a crash or a hang is that mode's failure, and
 * alarm_s > 0 ends a hung child), and count a child that fails. */
static inline void mh_test_each_mode(int (*fn)(const char *mode), unsigned alarm_s)
{
    static const char *const modes[] = {"fast", "hardened", "debug"};
    for (size_t m = 0; m < 3; m++) {
        fflush(stdout);
        pid_t pid = fork();
        REQUIRE(pid >= 0, "fork failed");
        if (pid == 0) {
            if (alarm_s)
                alarm(alarm_s);
            _exit(fn(modes[m]));
        }
        int st = 0;
        waitpid(pid, &st, 0);
        if (WIFSIGNALED(st))
            CHECK(0, "[%s] killed by signal %d (%s)", modes[m], WTERMSIG(st), strsignal(WTERMSIG(st)));
        else
            CHECK(WEXITSTATUS(st) == 0, "[%s] failed (exit %d)", modes[m], WEXITSTATUS(st));
    }
}
#endif

#endif
