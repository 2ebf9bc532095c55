/* miniheap: a hardened, debug-capable allocator that gives memory back.
 *
 * The prefixed API below can be used beside another malloc (the fuzzers and
 * embedders do). Linking or preloading libminiheap.so also exports the plain
 * malloc family, which forwards to these functions.
 */
#ifndef MINIHEAP_H
#define MINIHEAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define MH_API __attribute__((visibility("default")))
#else
#define MH_API
#endif

/* The malloc family, with glibc's semantics. Failures return NULL and set
 * errno to ENOMEM (EINVAL for a bad alignment in mh_posix_memalign, which
 * returns the error instead). */
MH_API void  *mh_malloc(size_t size);
MH_API void  *mh_calloc(size_t count, size_t size);
MH_API void  *mh_realloc(void *ptr, size_t size);
MH_API void  *mh_reallocarray(void *ptr, size_t count, size_t size);
MH_API void   mh_free(void *ptr);
MH_API void   mh_free_sized(void *ptr, size_t size);
MH_API void   mh_free_aligned_sized(void *ptr, size_t alignment, size_t size);
MH_API int    mh_posix_memalign(void **out, size_t alignment, size_t size);
MH_API void  *mh_aligned_alloc(size_t alignment, size_t size);
MH_API void  *mh_memalign(size_t alignment, size_t size);
MH_API void  *mh_valloc(size_t size);
MH_API void  *mh_pvalloc(size_t size);
MH_API size_t mh_malloc_usable_size(const void *ptr);

/* Give every free page and every empty miniheap back to the system now.
 * Returns 1 if any memory was released (as malloc_trim does). */
MH_API int mh_trim(size_t pad);

/* A consistent snapshot of the heap, computed by walking it. */
typedef struct mh_stats {
    size_t live_blocks;      /* blocks handed out and not freed */
    size_t live_bytes;       /* usable bytes of those blocks */
    size_t small_blocks;     /* of which in miniheap slabs */
    size_t large_blocks;     /* of which in their own mappings */
    size_t mapped_bytes;     /* address space mapped for blocks (miniheaps + large) */
    size_t resident_bytes;   /* of that, not known to be given back */
    size_t metadata_bytes;   /* the allocator's own metadata, in use or kept free, not given back */
    size_t miniheaps;        /* miniheaps mapped now */
    size_t slabs;            /* slabs in use */
    size_t cached_bytes;     /* held in caches for reuse (thread caches, empty slabs, large) */
    uint64_t total_allocs;   /* allocations since start (approximate across live threads) */
    uint64_t total_frees;
    uint64_t purged_bytes;   /* bytes given back with madvise since start */
    uint64_t unmapped_bytes; /* bytes given back with munmap since start */
    uint64_t meshes;         /* pages meshed onto others since start (mesh=1) */
    uint64_t meshed_bytes;   /* bytes of pages that share another's page now (saved) */
    uint64_t idle_drains;    /* thread caches emptied by the purge thread while their thread was idle */
} mh_stats_t;

MH_API void mh_stats(mh_stats_t *out);
/* Print the stats to stderr (what malloc_stats() prints). */
MH_API void mh_print_stats(void);

/* Walk the whole heap and verify every metadata invariant. Returns 0 when the
 * heap is consistent; otherwise reports the first problem (see
 * mh_set_error_handler) and returns -1. */
MH_API int mh_check(void);

/* Error reports. Each error has a kind from a fixed vocabulary
 * ("double-free", "invalid-free", ...). By default a report is written to
 * stderr and the program aborts; a handler set here is called instead when
 * the option abort_on_error=0 is in force (tests and fuzzers use this). */
typedef struct mh_error {
    const char *kind;      /* e.g. "double-free" */
    const void *address;   /* the address at fault */
    const void *block;     /* start of the block involved, or NULL */
    size_t block_size;     /* its size, or 0 */
    const char *message;   /* the whole report, NUL-terminated; this thread's own
                              buffer, valid until its next report */
} mh_error_t;
typedef void (*mh_error_handler_t)(const mh_error_t *err, void *arg);
MH_API void mh_set_error_handler(mh_error_handler_t handler, void *arg);

/* Options, with the syntax of MINIHEAP_OPTIONS ("key=value:key=value").
 * Returns 0 if all pairs were accepted, -1 if any was rejected (and
 * reported). The keys that shape blocks (mode, canary, underflow, poison,
 * mismatch, stacks, tcache, quarantine_mb, sample_rate, mesh) can only change
 * before the first allocation or after mh_reset(); a change to them while
 * blocks exist is rejected. The other keys apply at once. */
MH_API int mh_set_options(const char *options);

/* Free every block still live and return the allocator to its initial state
 * (for fuzzers and tests between runs; no other thread may be allocating). */
MH_API void mh_reset(void);

#ifdef __cplusplus
}
#endif
#endif
