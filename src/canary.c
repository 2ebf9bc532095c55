/* Canaries and poison patterns.
 *
 * A canary byte depends on a per-process secret and its own address, so an
 * overflow cannot forge it without knowing both, and it always has its high
 * bit set, so the most common overflow of all (a string's terminating NUL,
 * or any ASCII byte) never matches it by chance. */
#include "internal.h"

static inline uint64_t canary_word(uintptr_t aligned) {
    uint64_t w = mh_secret ^ ((uint64_t)aligned * 0x9E3779B97F4A7C15ull);
    return w | 0x8080808080808080ull;
}

static inline uint8_t canary_byte(uintptr_t a) {
    return (uint8_t)(canary_word(a & ~(uintptr_t)7) >> ((a & 7) * 8));
}

void canary_fill(uint8_t *from, size_t len) {
    uint8_t *end = from + len;
    while (from < end && ((uintptr_t)from & 7)) { *from = canary_byte((uintptr_t)from); from++; }
    for (; from + 8 <= end; from += 8) {
        uint64_t w = canary_word((uintptr_t)from);
        memcpy(from, &w, 8);
    }
    while (from < end) { *from = canary_byte((uintptr_t)from); from++; }
}

size_t canary_find_bad(const uint8_t *from, size_t len) {
    const uint8_t *p = from, *end = from + len;
    while (p < end && ((uintptr_t)p & 7)) {
        if (*p != canary_byte((uintptr_t)p)) return (size_t)(p - from);
        p++;
    }
    for (; p + 8 <= end; p += 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        if (w != canary_word((uintptr_t)p)) break;
    }
    for (; p < end; p++)
        if (*p != canary_byte((uintptr_t)p)) return (size_t)(p - from);
    return SIZE_MAX;
}

size_t poison_find_bad(const uint8_t *from, size_t len) {
    const uint64_t pat = 0x0101010101010101ull * POISON_FREE;
    const uint8_t *p = from, *end = from + len;
    for (; p + 8 <= end; p += 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        if (w != pat) break;
    }
    for (; p < end; p++)
        if (*p != POISON_FREE) return (size_t)(p - from);
    return SIZE_MAX;
}
