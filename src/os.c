/* The OS layer: every system call miniheap makes is in this file.
 * Calls that may fail harmlessly keep errno as the program left it. */
#include "internal.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

_Atomic size_t os_purged_total, os_unmapped_total;

#ifndef MAP_NORESERVE
#define MAP_NORESERVE 0
#endif

static void *map_raw(void *hint, size_t size, int prot, int extra) {
    int saved = errno;
    void *p = mmap(hint, size, prot, MAP_PRIVATE | MAP_ANONYMOUS | extra, -1, 0);
    if (p == MAP_FAILED) {
        errno = saved;
        return NULL;
    }
    errno = saved;
    return p;
}

void *os_map(size_t size) { return map_raw(NULL, size, PROT_READ | PROT_WRITE, 0); }
void *os_reserve(size_t size) { return map_raw(NULL, size, PROT_NONE, MAP_NORESERVE); }
void *os_map_noreserve(size_t size) {
    return map_raw(NULL, size, PROT_READ | PROT_WRITE, MAP_NORESERVE);
}

void os_unmap(void *p, size_t size) {
    if (!p || !size) return;
    int saved = errno;
    munmap(p, size);
    errno = saved;
}

/* Map size bytes aligned to align: try the exact size first (the kernel
 * often hands out aligned addresses when asked near one), else over-map and
 * trim both ends. */
static void *map_aligned_at(void *hint, size_t size, size_t align, int prot) {
    if (hint) {
        void *p = map_raw(hint, size, prot, 0);
        if (!p) return NULL;
        if (((uintptr_t)p & (align - 1)) == 0) return p;
        os_unmap(p, size);
    }
    if (size + align < size) return NULL;
    uint8_t *raw = map_raw(NULL, size + align, prot, 0);
    if (!raw) return NULL;
    uintptr_t aligned = ((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1);
    size_t front = aligned - (uintptr_t)raw, back = align - front;
    if (front) os_unmap(raw, front);
    if (back) os_unmap((uint8_t *)aligned + size, back);
    return (void *)aligned;
}

void *os_map_aligned(size_t size, size_t align) {
    if (align <= MH_PAGE) return os_map(size);
    return map_aligned_at(NULL, size, align, PROT_READ | PROT_WRITE);
}

bool os_commit(void *p, size_t size) {
    int saved = errno;
    bool ok = mprotect(p, size, PROT_READ | PROT_WRITE) == 0;
    errno = saved;
    return ok;
}

bool os_protect_none(void *p, size_t size) {
    int saved = errno;
    bool ok = mprotect(p, size, PROT_NONE) == 0;
    errno = saved;
    return ok;
}

void os_purge(void *p, size_t size) {
    if (!size) return;
    int saved = errno;
    if (madvise(p, size, MADV_DONTNEED) == 0) atomic_fetch_add(&os_purged_total, size);
    errno = saved;
}

bool os_discard(void *p, size_t size) {
    int saved = errno;
    bool ok = madvise(p, size, MADV_DONTNEED) == 0;
    errno = saved;
    return ok;
}

void *os_remap(void *old, size_t old_size, size_t new_size, void *fixed) {
    int saved = errno;
    void *p = fixed ? mremap(old, old_size, new_size, MREMAP_MAYMOVE | MREMAP_FIXED, fixed)
                    : mremap(old, old_size, new_size, MREMAP_MAYMOVE);
    errno = saved;
    return p == MAP_FAILED ? NULL : p;
}

void os_random(void *buf, size_t n) {
    int saved = errno;
    uint8_t *b = buf;
    while (n) {
        ssize_t r = getrandom(b, n, GRND_NONBLOCK);
        if (r <= 0) break;
        b += r;
        n -= (size_t)r;
    }
    if (n) { /* no entropy yet (early boot): mix the clock and addresses */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uintptr_t)buf ^
                     (uintptr_t)&ts;
        while (n--) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            *b++ = (uint8_t)x;
        }
    }
    errno = saved;
}

uint64_t os_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void os_write_stderr(const char *s, size_t n) {
    int saved = errno;
    while (n) {
        ssize_t w = write(2, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        s += w;
        n -= (size_t)w;
    }
    errno = saved;
}

void os_abort(void) {
    /* abort() may flush stdio, which may allocate; raise SIGABRT directly. */
    signal(SIGABRT, SIG_DFL);
    raise(SIGABRT);
    _exit(134);
}

uint32_t os_cpu_count(void) {
    cpu_set_t set;
    int saved = errno;
    int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    errno = saved;
    return n > 0 ? (uint32_t)n : 1;
}

long os_read_number(const char *path, long fallback) {
    int saved = errno;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { errno = saved; return fallback; }
    char buf[32];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    errno = saved;
    if (n <= 0) return fallback;
    long v = 0;
    for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; i++) v = v * 10 + (buf[i] - '0');
    return v ? v : fallback;
}

static struct sigaction old_segv, old_bus;

bool os_install_fault_handler(void (*fn)(int, void *, void *)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = (void (*)(int, siginfo_t *, void *))(void *)fn;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    int saved = errno;
    bool ok = sigaction(SIGSEGV, &sa, &old_segv) == 0 && sigaction(SIGBUS, &sa, &old_bus) == 0;
    errno = saved;
    return ok;
}

/* Put back whatever handled the signal before us; returning from our
 * handler then re-runs the access, which faults into it. */
void os_restore_fault_handler(int sig) {
    sigaction(sig, sig == SIGBUS ? &old_bus : &old_segv, NULL);
}

/* ---- miniheap backing ----------------------------------------------------- */

static _Atomic uintptr_t seg_hint;

void *os_segment_alloc(void *hint) {
    (void)hint;
    uintptr_t h = atomic_load_explicit(&seg_hint, memory_order_relaxed);
    void *p = map_aligned_at((void *)h, MH_SEG_SIZE, MH_SEG_SIZE, PROT_READ | PROT_WRITE);
    if (!p) return NULL;
    /* Next time ask just below this one: the kernel fills downwards, and
     * neighbouring miniheaps keep the radix table's touched pages few. */
    atomic_store_explicit(&seg_hint, (uintptr_t)p - MH_SEG_SIZE, memory_order_relaxed);
    /* The last unit is a guard: a linear overflow out of the last slab faults
     * instead of running into the next miniheap. */
    os_protect_none((uint8_t *)p + (size_t)MH_USABLE_UNITS * MH_UNIT_SIZE,
                    (size_t)(MH_UNITS - MH_USABLE_UNITS) * MH_UNIT_SIZE);
    return p;
}

void os_segment_free(void *seg) {
    os_unmap(seg, MH_SEG_SIZE);
    atomic_fetch_add(&os_unmapped_total, MH_SEG_SIZE);
}

void os_segment_purge(void *p, size_t size) { os_purge(p, size); }
