/* The client requests of the exported malloc family (override.c, new.cpp),
 * made in the entry point's own frame. C and C++ (new.cpp includes it).
 *
 * memcheck records a block's stack where the client request is made. The
 * exported malloc family makes the requests for the blocks it hands out and
 * frees itself, after the allocator returns (MH_TRACK_ENTRY): memcheck's
 * stacks then start at malloc or free and go on in the program, as with its
 * own replacement of glibc's malloc, and one call site leaks as one record
 * whichever path the allocator took. While an entry point runs with
 * `mh_track_defer` set, track_alloc and track_free (track.h) leave their
 * request pending in `mh_track_pending`. */
#ifndef MH_TRACK_ENTRY_H
#define MH_TRACK_ENTRY_H

#include <stddef.h>
#include <stdint.h>

#ifndef MH_TRACK_VALGRIND
#define MH_TRACK_VALGRIND 1
#endif
#if MH_TRACK_VALGRIND
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif
typedef struct track_pending { void *p; size_t size, rz; uint8_t op, zeroed; } track_pending_t;
enum { TRACK_NONE, TRACK_ALLOC, TRACK_FREE };
extern int mh_track_valgrind __attribute__((visibility("hidden")));
extern __thread track_pending_t mh_track_pending __attribute__((visibility("hidden"), tls_model("initial-exec")));
extern __thread uint8_t mh_track_defer __attribute__((visibility("hidden"), tls_model("initial-exec")));
#ifdef __cplusplus
}
#endif

#if MH_TRACK_VALGRIND
#define MH_TRACK_FLUSH()                                                                                      \
    do {                                                                                                      \
        track_pending_t pend_ = mh_track_pending;                                                             \
        /* (the pointer too: memcheck's leak search reads this TLS, and the   \
         * last block allocated would stay "still reachable" through it) */  \
        mh_track_pending.op = TRACK_NONE;                                                                     \
        mh_track_pending.p = 0;                                                                               \
        if (pend_.op == TRACK_ALLOC) VALGRIND_MALLOCLIKE_BLOCK(pend_.p, pend_.size, pend_.rz, pend_.zeroed); \
        else if (pend_.op == TRACK_FREE) VALGRIND_FREELIKE_BLOCK(pend_.p, pend_.rz);                         \
    } while (0)
/* `stmt` (a call into the allocator that returns, never throws) with its
 * block's client request made here, in the caller's own frame: a macro, so
 * memcheck sees no inline frame of ours. */
#define MH_TRACK_ENTRY(stmt)                                \
    do {                                                    \
        if (__builtin_expect(mh_track_valgrind, 0)) {       \
            mh_track_defer = 1;                             \
            stmt;                                           \
            mh_track_defer = 0;                             \
            MH_TRACK_FLUSH();                               \
        } else {                                            \
            stmt;                                           \
        }                                                   \
    } while (0)
#else
#define MH_TRACK_ENTRY(stmt) do { stmt; } while (0)
#endif

#endif
