/* Where the allocator's randomness comes from (slot choice, sampling):
 * the kernel, or with the option seed=N a fixed sequence that starts again
 * whenever seed is set and at mh_reset(), so a fuzzing run or a failing
 * test takes the same choices every time. The secret keys for pointers and
 * canaries always come from the kernel. */
#include "internal.h"

static _Atomic uint64_t drawn; /* words drawn from the seeded sequence */
static uint64_t stream;         /* which sequence: 0, or one of a forked child's */
uint32_t mh_random_forks;

static uint64_t mix(uint64_t z) { /* splitmix64's finaliser */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void mh_random(void *buf, size_t n) {
    if (!mh_opt.seed) {
        os_random(buf, n);
        return;
    }
    uint8_t *out = buf;
    while (n) {
        uint64_t i = atomic_fetch_add_explicit(&drawn, 1, memory_order_relaxed);
        uint64_t w = mix(((uint64_t)mh_opt.seed << 32 ^ i) * 0x9e3779b97f4a7c15ull ^ stream);
        size_t k = n < sizeof w ? n : sizeof w;
        memcpy(out, &w, k);
        out += k;
        n -= k;
    }
}

void mh_random_restart(void) { atomic_store_explicit(&drawn, 0, memory_order_relaxed); }

/* With seed=N a child still repeats from run to run: its sequence depends
 * only on the parent's and on how far the parent had drawn. */
void mh_random_after_fork(void) {
    mh_random_forks++;
    stream = mix(stream ^ (atomic_load(&drawn) + 0x5851f42d4c957f2dull));
    atomic_store_explicit(&drawn, 0, memory_order_relaxed);
}
