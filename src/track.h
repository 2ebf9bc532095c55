/* The adapter between miniheap and the tools that watch memory: valgrind's
 * memcheck (client requests), AddressSanitizer (manual poisoning) and
 * MemorySanitizer. The rest of the allocator calls only the track_*
 * functions below, never a tool directly.
 *
 *  - valgrind: compiled in by default (MH_TRACK_VALGRIND=1; 0 compiles it
 *    out); costs one predictable branch on mh_track_valgrind when not running
 *    under valgrind.
 *  - ASan: when the allocator itself is built with -fsanitize=address.
 *  - MSan: when built with -fsanitize=memory.
 */
#ifndef MH_TRACK_H
#define MH_TRACK_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#ifndef MH_TRACK_VALGRIND
#define MH_TRACK_VALGRIND 1
#endif

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MH_TRACK_ASAN 1
#endif
#if __has_feature(memory_sanitizer)
#define MH_TRACK_MSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(MH_TRACK_ASAN)
#define MH_TRACK_ASAN 1
#endif

#if MH_TRACK_VALGRIND
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#endif
#ifdef MH_TRACK_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/lsan_interface.h>
#endif
#ifdef MH_TRACK_MSAN
#include <sanitizer/msan_interface.h>
#endif

/* Set once at start-up when running under valgrind. */
extern int mh_track_valgrind __attribute__((visibility("hidden")));

#include "track_entry.h"

static inline void track_init(void) {
#if MH_TRACK_VALGRIND
    mh_track_valgrind = RUNNING_ON_VALGRIND ? 1 : 0;
#endif
}

static inline bool track_active(void) {
#if MH_TRACK_VALGRIND
    if (__builtin_expect(mh_track_valgrind, 0)) return true;
#endif
#if defined(MH_TRACK_ASAN) || defined(MH_TRACK_MSAN)
    return true;
#else
    return false;
#endif
}

/* A block of `size` usable bytes at p was handed out; `rz` bytes on either
 * side are redzone (canaries). */
static inline void track_alloc(void *p, size_t size, size_t rz, bool zeroed) {
    (void)p; (void)size; (void)rz; (void)zeroed;
#if MH_TRACK_VALGRIND
    if (__builtin_expect(mh_track_valgrind, 0)) {
        if (mh_track_defer)
            mh_track_pending = (track_pending_t){p, size, rz, TRACK_ALLOC, zeroed};
        else
            VALGRIND_MALLOCLIKE_BLOCK(p, size, rz, zeroed);
    }
#endif
#ifdef MH_TRACK_ASAN
    ASAN_UNPOISON_MEMORY_REGION(p, size);
#endif
#ifdef MH_TRACK_MSAN
    if (zeroed) __msan_unpoison(p, size);
    else __msan_allocated_memory(p, size);
#endif
}

/* The block at p was freed: nothing may touch it until handed out again. */
static inline void track_free(void *p, size_t size, size_t rz) {
    (void)p; (void)size; (void)rz;
#if MH_TRACK_VALGRIND
    if (__builtin_expect(mh_track_valgrind, 0)) {
        if (mh_track_defer)
            mh_track_pending = (track_pending_t){p, 0, rz, TRACK_FREE, 0};
        else
            VALGRIND_FREELIKE_BLOCK(p, rz);
    }
#endif
#ifdef MH_TRACK_ASAN
    ASAN_POISON_MEMORY_REGION(p, size);
#endif
#ifdef MH_TRACK_MSAN
    __msan_poison(p, size);
#endif
}

/* The block at p changed size in place. */
static inline void track_resize(void *p, size_t old_size, size_t new_size, size_t rz) {
    (void)p; (void)old_size; (void)new_size; (void)rz;
#if MH_TRACK_VALGRIND
    if (__builtin_expect(mh_track_valgrind, 0)) VALGRIND_RESIZEINPLACE_BLOCK(p, old_size, new_size, rz);
#endif
#ifdef MH_TRACK_ASAN
    if (new_size < old_size) ASAN_POISON_MEMORY_REGION((char *)p + new_size, old_size - new_size);
    else ASAN_UNPOISON_MEMORY_REGION((char *)p + old_size, new_size - old_size);
#endif
#ifdef MH_TRACK_MSAN
    if (new_size > old_size) __msan_allocated_memory((char *)p + old_size, new_size - old_size);
#endif
}

/* Bytes the kernel wrote through syscall(2), which MSan does not see. */
static inline void track_kernel_wrote(void *p, size_t size) {
    (void)p; (void)size;
#ifdef MH_TRACK_MSAN
    __msan_unpoison(p, size);
#endif
}

/* Memory the program must not touch (free slab space, canaries). */
static inline void track_noaccess(void *p, size_t size) {
    (void)p; (void)size;
#if MH_TRACK_VALGRIND
    if (__builtin_expect(mh_track_valgrind, 0)) VALGRIND_MAKE_MEM_NOACCESS(p, size);
#endif
#ifdef MH_TRACK_ASAN
    ASAN_POISON_MEMORY_REGION(p, size);
#endif
}

/* The allocator itself is about to read or write memory it keeps
 * inaccessible (poison and canary checks); close with track_noaccess. */
static inline void track_open(void *p, size_t size) {
    (void)p; (void)size;
#if MH_TRACK_VALGRIND
    if (__builtin_expect(mh_track_valgrind, 0)) VALGRIND_MAKE_MEM_DEFINED(p, size);
#endif
#ifdef MH_TRACK_ASAN
    ASAN_UNPOISON_MEMORY_REGION(p, size);
#endif
#ifdef MH_TRACK_MSAN
    __msan_unpoison(p, size);
#endif
}

#ifdef MH_TRACK_ASAN
/* ASan's unpoisoning writes zeros into the shadow, which keeps those shadow
 * pages resident; as mappings come and go at new addresses the shadow grew
 * without bound (0.7 MB per fuzz input). The whole shadow pages of a range
 * are given back instead: they read as zero, which is "unpoisoned". */
static inline void track_asan_forget(void *p, size_t size) {
    size_t scale, offset;
    __asan_get_shadow_mapping(&scale, &offset);
    uintptr_t a = (uintptr_t)p, b = a + size;
    uintptr_t sa = ((a >> scale) + offset + 4095) & ~(uintptr_t)4095, sb = ((b >> scale) + offset) & ~(uintptr_t)4095;
    if (sb <= sa) {
        ASAN_UNPOISON_MEMORY_REGION(p, size);
        return;
    }
    uintptr_t ma = (sa - offset) << scale, mb = (sb - offset) << scale; /* the memory those pages cover */
    ASAN_UNPOISON_MEMORY_REGION(p, ma - a);
    if (!os_discard((void *)sa, sb - sa)) ASAN_UNPOISON_MEMORY_REGION((void *)ma, mb - ma);
    ASAN_UNPOISON_MEMORY_REGION((void *)mb, b - mb);
}
#endif

/* Around the allocator's reads of bytes the program may not touch
 * (canaries, poison) to check them, which a heap check may do while the
 * block's owner or another check works on it. Under ASan the shadow is left
 * alone (the reading functions are not instrumented, MH_CHECK_READ): opening
 * and closing it raced, one thread re-poisoning bytes another was using.
 * memcheck and MSan need the bytes opened. */
static inline void track_peek(void *p, size_t size) {
    (void)p; (void)size;
#if MH_TRACK_VALGRIND
    if (__builtin_expect(mh_track_valgrind, 0)) VALGRIND_MAKE_MEM_DEFINED(p, size);
#endif
#ifdef MH_TRACK_MSAN
    __msan_unpoison(p, size);
#endif
}
static inline void track_unpeek(void *p, size_t size) {
    (void)p; (void)size;
#if MH_TRACK_VALGRIND
    if (__builtin_expect(mh_track_valgrind, 0)) VALGRIND_MAKE_MEM_NOACCESS(p, size);
#endif
}

/* Memory about to be unmapped or given back: forget all state on it. */
static inline void track_unmap(void *p, size_t size) {
    (void)p; (void)size;
#if MH_TRACK_VALGRIND
    if (__builtin_expect(mh_track_valgrind, 0)) VALGRIND_MAKE_MEM_NOACCESS(p, size);
#endif
#ifdef MH_TRACK_ASAN
    track_asan_forget(p, size);
#endif
}

/* For code that reads memory it does not own as plain words (the leak
 * report's scan of stacks, globals and blocks): the sanitizers must neither
 * check those reads (stack and global redzones, poisoned blocks) nor treat
 * the words as uninitialised. */
#if defined(MH_TRACK_ASAN) && defined(MH_TRACK_MSAN)
#define MH_TRACK_NO_SANITIZE __attribute__((no_sanitize_address, no_sanitize("memory")))
#elif defined(MH_TRACK_ASAN)
#define MH_TRACK_NO_SANITIZE __attribute__((no_sanitize_address))
#elif defined(MH_TRACK_MSAN)
#define MH_TRACK_NO_SANITIZE __attribute__((no_sanitize("memory")))
#else
#define MH_TRACK_NO_SANITIZE
#endif

/* A miniheap was mapped / is about to be unmapped: LSan scans live blocks in
 * it for pointers (as roots) so objects referenced only from miniheap
 * blocks are not reported as leaks. */
static inline void track_region_add(void *p, size_t size) {
    (void)p; (void)size;
#ifdef MH_TRACK_ASAN
    __lsan_register_root_region(p, size);
#endif
}
static inline void track_region_remove(void *p, size_t size) {
    (void)p; (void)size;
#ifdef MH_TRACK_ASAN
    __lsan_unregister_root_region(p, size);
#endif
}

#endif
