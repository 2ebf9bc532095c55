/* Out of memory never aborts and never lies (issue #10).
 *
 *   - Requests no memory could back (1 TiB, 64 TiB) fail with NULL and
 *     ENOMEM from every entry point, in every mode, and a failed realloc
 *     leaves its block intact. The kernel decides what "could be backed"
 *     means, as it does for glibc's mmap: with vm.overcommit_memory=1 it
 *     promises everything, and these cases are skipped.
 *   - Under an address-space limit (RLIMIT_AS, what `ulimit -v` sets),
 *     allocating until failure ends in NULL + ENOMEM, never in an abort,
 *     and the allocator works again once blocks are freed, the address
 *     space its caches hold included (large_cache_mb=1024 here).
 *
 * A watchdog thread ends the test if the process ever becomes resident
 * beyond 768 MiB: an allocator that touched the pages of a huge request
 * (debug mode fills new blocks) fails here instead of taking the machine
 * down. Each mode runs in a child process of its own.
 */
#include "mh_test.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <fcntl.h>

#define MiB ((size_t)1 << 20)
#define RSS_LIMIT (768 * MiB)

static const char *const modes[] = {"fast", "hardened", "debug"};

static void *watchdog(void *arg)
{
    (void)arg;
    for (;;) {
        size_t rss = mh_test_resident_bytes();
        if (rss > RSS_LIMIT) {
            char msg[160];
            int n = snprintf(msg, sizeof msg, "FAIL watchdog: %zu MiB resident (limit %zu MiB): a huge request was touched\n",
                             rss / MiB, RSS_LIMIT / MiB);
            if (write(1, msg, (size_t)n) < 0) {}
            _exit(3);
        }
        usleep(1000);
    }
    return NULL;
}

/* Every entry point asked for n bytes must fail with NULL and ENOMEM. */
static void expect_enomem(size_t n, const char *mode)
{
    void *p, *out = NULL;
#define EXPECT(call, what)                                                                                    \
    do {                                                                                                      \
        errno = 0;                                                                                            \
        p = (call);                                                                                           \
        CHECK(p == NULL && errno == ENOMEM, "[%s] %s(%#zx) = %p, errno %d: want NULL and ENOMEM", mode, what, \
              n, p, errno);                                                                                   \
        if (p)                                                                                                \
            A_FREE(p);                                                                                        \
    } while (0)
    EXPECT(A_MALLOC(opaque(n)), "malloc");
    EXPECT(A_CALLOC(1, opaque(n)), "calloc");
    EXPECT(A_CALLOC(opaque(n) / 16, 16), "calloc(n/16, 16)");
    EXPECT(A_REALLOC(NULL, opaque(n)), "realloc(NULL)");
    EXPECT(A_ALIGNED_ALLOC(64, opaque(n)), "aligned_alloc(64)");
    EXPECT(A_MEMALIGN((size_t)2 << 20, opaque(n)), "memalign(2 MiB)");
    EXPECT(A_VALLOC(opaque(n)), "valloc");
    EXPECT(A_PVALLOC(opaque(n)), "pvalloc");
#undef EXPECT
    int rc = A_POSIX_MEMALIGN(&out, 4096, opaque(n));
    CHECK(rc == ENOMEM && out == NULL, "[%s] posix_memalign(4096, %#zx) = %d: want ENOMEM", mode, n, rc);
    if (rc == 0)
        A_FREE(out);

    /* realloc of a small and a large block: NULL, ENOMEM, the block intact. */
    size_t sizes[] = {100, 5000, 3 * MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint8_t *b = A_MALLOC(sizes[i]);
        REQUIRE(b != NULL, "[%s] malloc(%zu) failed", mode, sizes[i]);
        pat_fill(b, sizes[i]);
        errno = 0;
        void *q = A_REALLOC(b, opaque(n));
        CHECK(q == NULL && errno == ENOMEM, "[%s] realloc(%zu-byte block, %#zx) = %p, errno %d: want NULL and ENOMEM",
              mode, sizes[i], n, q, errno);
        if (q) {
            A_FREE(q);
            continue;
        }
        CHECK(pat_check(b, sizes[i]) == (size_t)-1, "[%s] the %zu-byte block changed after a failed realloc", mode,
              sizes[i]);
        A_FREE(b);
    }
}

static void test_huge_requests(const char *mode)
{
    if (mh_test_overcommit_policy() == 1) {
        printf("  [%s] SKIP huge requests: vm.overcommit_memory=1 promises any size (glibc's malloc succeeds too)\n",
               mode);
        return;
    }
    size_t sizes[] = {(size_t)1 << 40, (size_t)1 << 46, ((size_t)1 << 47) - 4096};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        expect_enomem(sizes[i], mode);
}

/* The list of blocks exhaust() holds, mapped before the limit is set: the
 * test's own mmap must not compete with what the allocator keeps. */
#define LIST_MAX ((size_t)8 << 20)
static void **blocks;

/* Allocate blocks of `size` until the allocator says no (at most `max`),
 * then free them all. Returns how many it got. */
static size_t exhaust(size_t size, size_t max, const char *mode)
{
    REQUIRE(max <= LIST_MAX, "block list too short");
    size_t n = 0;
    for (; n < max; n++) {
        errno = 0;
        blocks[n] = A_MALLOC(size);
        if (!blocks[n])
            break;
        ((volatile char *)blocks[n])[0] = 1;
    }
    CHECK(n < max, "[%s] %zu blocks of %zu bytes under a %s limit: never failed", mode, n, size, "RLIMIT_AS");
    if (n < max)
        CHECK(errno == ENOMEM, "[%s] malloc(%zu) failed with errno %d, want ENOMEM", mode, size, errno);
    for (size_t i = 0; i < n; i++)
        A_FREE(blocks[i]);
    return n;
}

/* A 2 MiB block of 0x5a, to grow with realloc. */
static void *block_to_grow(void)
{
    void *p = A_MALLOC(2 * MiB);
    REQUIRE(p != NULL, "malloc(2 MiB) failed");
    memset(p, 0x5a, 2 * MiB);
    return p;
}

/* The process's address-space size (VmSize). */
static size_t vm_size(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (f) {
        if (fscanf(f, "%lu", &pages) != 1)
            pages = 0;
        fclose(f);
    }
    return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}

static void test_address_limit(const char *mode)
{
    /* Room for a few hundred MiB more than the process maps now. */
    struct rlimit old, lim;
    getrlimit(RLIMIT_AS, &old);
    blocks = mmap(NULL, LIST_MAX * sizeof(void *), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                  -1, 0);
    REQUIRE(blocks != MAP_FAILED, "mmap for the block list failed");
    size_t now = vm_size();
    lim.rlim_max = old.rlim_max; /* (only the soft limit: see test_room_given_back) */
    lim.rlim_cur = now + 256 * MiB;
    REQUIRE(setrlimit(RLIMIT_AS, &lim) == 0, "setrlimit(RLIMIT_AS) failed");
    size_t big = exhaust(MiB, 4096, mode);
    /* The freed blocks may sit in the large cache (large_cache_mb=1024 here):
     * a request that needs their address space gets it back from there. */
    void *huge = A_MALLOC(192 * MiB);
    CHECK(huge != NULL, "[%s] malloc(192 MiB) failed after %zu blocks of 1 MiB were freed (errno %d): the cache kept "
                        "their address space", mode, big, errno);
    A_FREE(huge);
    /* The same for a realloc that grows a large block: its new pages need
     * the address space the freed blocks' mappings hold. (96 MiB: growing
     * into a guarded reservation of the new size has the kernel count the
     * new size twice; 192 MiB below has to do without.) */
    void *grow = block_to_grow();
    size_t again = exhaust(MiB, 4096, mode);
    void *grown = A_REALLOC(grow, 96 * MiB);
    CHECK(grown != NULL, "[%s] realloc(2 MiB block, 96 MiB) failed after %zu blocks of 1 MiB were freed (errno %d): "
                         "the cache kept their address space", mode, again, errno);
    if (grown) {
        CHECK(((unsigned char *)grown)[2 * MiB - 1] == 0x5a, "[%s] realloc lost the block's contents", mode);
        grow = grown;
    }
    A_FREE(grow);
    /* Growing to 192 MiB of the 256: the move into a reservation does not
     * fit beside the reservation, a move placed by the kernel does (glibc
     * grows to 240 MiB here). */
    grow = block_to_grow();
    grown = A_REALLOC(grow, 192 * MiB);
    CHECK(grown != NULL, "[%s] realloc(2 MiB block, 192 MiB) failed under RLIMIT_AS = VmSize + 256 MiB (errno %d)",
          mode, errno);
    if (grown) {
        CHECK(((unsigned char *)grown)[2 * MiB - 1] == 0x5a && ((unsigned char *)grown)[0] == 0x5a,
              "[%s] realloc to 192 MiB lost the block's contents", mode);
        memset((unsigned char *)grown + 2 * MiB, 1, MiB); /* the new pages are there */
        grown = A_REALLOC(grown, 4 * MiB); /* and it shrinks again */
        CHECK(grown != NULL && ((unsigned char *)grown)[2 * MiB] == 1, "[%s] shrinking the grown block failed", mode);
        grow = grown;
    }
    A_FREE(grow);
    size_t mid = exhaust(200000, 8192, mode);
    size_t small = exhaust(100, (size_t)8 << 20, mode);
    printf("  [%s] under RLIMIT_AS = VmSize + 256 MiB: %zu blocks of 1 MiB, %zu of 200000 B, %zu of 100 B, then ENOMEM\n",
           mode, big, mid, small);
    CHECK(big > 16 && mid > 16 && small > 1000, "[%s] too few blocks before failing (%zu, %zu, %zu)", mode, big, mid,
          small);
    /* Everything freed: the allocator works again. */
    void *p = A_MALLOC(MiB);
    CHECK(p != NULL, "[%s] malloc(1 MiB) failed after everything was freed", mode);
    A_FREE(p);
    p = A_MALLOC(100);
    CHECK(p != NULL, "[%s] malloc(100) failed after everything was freed", mode);
    A_FREE(p);
    setrlimit(RLIMIT_AS, &old);
    munmap(blocks, LIST_MAX * sizeof(void *));
}

/* A large block that moved to grow keeps address space reserved after it
 * (its room, up to 16 MiB), to grow again without moving. An allocation
 * that needs that address space gets it: 2 MiB of limit left and 8 MiB of
 * emptied miniheaps at most cannot make 14 MiB, the room can. */
static void test_room_given_back(const char *mode)
{
    /* (Only the soft limit: lowering the hard one cannot be undone without
     * CAP_SYS_RESOURCE.) */
    struct rlimit old, lim;
    getrlimit(RLIMIT_AS, &old);
    lim.rlim_max = old.rlim_max;
    /* First what the caches hold goes (a request that cannot fit). */
    lim.rlim_cur = vm_size() + 64 * MiB;
    REQUIRE(setrlimit(RLIMIT_AS, &lim) == 0, "setrlimit(RLIMIT_AS) failed");
    void *none = A_MALLOC(1024 * MiB);
    CHECK(none == NULL, "[%s] malloc(1 GiB) succeeded under RLIMIT_AS = VmSize + 64 MiB", mode);
    A_FREE(none);
    setrlimit(RLIMIT_AS, &old);
    unsigned char *g = A_REALLOC(block_to_grow(), 32 * MiB);
    REQUIRE(g != NULL, "[%s] realloc(2 MiB block, 32 MiB) failed", mode);
    lim.rlim_cur = vm_size() + 2 * MiB;
    REQUIRE(setrlimit(RLIMIT_AS, &lim) == 0, "setrlimit(RLIMIT_AS) failed");
    void *p = A_MALLOC(14 * MiB);
    CHECK(p != NULL, "[%s] malloc(14 MiB) failed beside a grown block's room (errno %d)", mode, errno);
    CHECK(g[2 * MiB - 1] == 0x5a, "[%s] the grown block lost its contents", mode);
    A_FREE(p);
    setrlimit(RLIMIT_AS, &old);
    /* And the block grows still, by moving. */
    g = A_REALLOC(g, 40 * MiB);
    CHECK(g != NULL && g[0] == 0x5a, "[%s] the block whose room went could not grow", mode);
    A_FREE(g);
}

static int run_mode(const char *mode)
{
#ifndef USE_PLAIN
    char opts[128];
    snprintf(opts, sizeof opts, "mode=%s:leak_report=0:large_cache_mb=1024", mode);
    mh_reset();
    REQUIRE(mh_set_options(opts) == 0, "mh_set_options(\"%s\") rejected", opts);
#endif
    test_huge_requests(mode);
    test_address_limit(mode);
    if (mh_under_miniheap())
        test_room_given_back(mode);
    return mh_test_failed() ? 1 : 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    mh_test_check_allocator("test_oom");
    pthread_t w;
    REQUIRE(pthread_create(&w, NULL, watchdog, NULL) == 0, "cannot start the watchdog");
    if (argc == 2) /* one mode, in this process */
        return run_mode(argv[1]);
    int bad = 0;
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        fflush(stdout);
        pid_t pid = fork();
        REQUIRE(pid >= 0, "fork failed");
        if (pid == 0) {
#ifdef USE_PLAIN
            /* The mode comes from the environment: start again with it. */
            char opts[128];
            snprintf(opts, sizeof opts, "mode=%s:leak_report=0:large_cache_mb=1024", modes[m]);
            setenv("MINIHEAP_OPTIONS", opts, 1);
            execl("/proc/self/exe", argv[0], modes[m], (char *)NULL);
            _exit(127);
#else
            _exit(run_mode(modes[m]));
#endif
        }
        int st = 0;
        waitpid(pid, &st, 0);
        if (WIFSIGNALED(st)) {
            CHECK(0, "[%s] killed by signal %d (%s)", modes[m], WTERMSIG(st), strsignal(WTERMSIG(st)));
            bad = 1;
        } else if (WEXITSTATUS(st) != 0) {
            CHECK(0, "[%s] failed (exit %d)", modes[m], WEXITSTATUS(st));
            bad = 1;
        } else {
            printf("  [%s] ok\n", modes[m]);
        }
    }
    (void)bad;
    return mh_test_exit("test_oom");
}
