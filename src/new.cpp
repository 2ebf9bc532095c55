// operator new and delete in all their forms, on miniheap. Each records how
// the block was allocated (new, new[]) so a mismatched release (free of a
// new'd block, delete of a new[]'d one, delete of a malloc'd one) and a sized
// delete with the wrong size are reported: alloc-dealloc-mismatch and
// size-mismatch.
#include <cerrno>
#include <cstddef>
#include <new>

#include "track_entry.h"

extern "C" {
void *mh_alloc_kind(std::size_t size, std::size_t align, int kind) __attribute__((visibility("hidden")));
void mh_free_kind(void *p, int kind, bool has_size, std::size_t size) __attribute__((visibility("hidden")));
}

namespace {
enum { KIND_NEW = 2, KIND_NEW_ARRAY = 3 };

// The standard's loop: call the new-handler until it gives up or memory comes.
void *alloc_or_throw(std::size_t size, std::size_t align, int kind) {
    for (;;) {
        void *p = mh_alloc_kind(size, align, kind);
        if (p) return p;
        std::new_handler h = std::get_new_handler();
        if (!h) throw std::bad_alloc();
        h();
    }
}

void *alloc_nothrow(std::size_t size, std::size_t align, int kind) noexcept {
    try {
        return alloc_or_throw(size, align, kind);
    } catch (...) {
        return nullptr;
    }
}
}  // namespace

// The first try is made with the client request in the operator's own frame
// (track_entry.h); the new-handler loop, which may throw, only if it fails.
#define NEW_BODY(size, align, kind, fallback)                       \
    void *p;                                                        \
    MH_TRACK_ENTRY(p = mh_alloc_kind(size, align, kind));           \
    return p ? p : fallback(size, align, kind)
#define DELETE_BODY(p, kind, has_size, size) MH_TRACK_ENTRY(mh_free_kind(p, kind, has_size, size))

#define EXPORT __attribute__((visibility("default")))
using std::align_val_t;
using std::nothrow_t;
using std::size_t;

EXPORT void *operator new(size_t n) { NEW_BODY(n, 0, KIND_NEW, alloc_or_throw); }
EXPORT void *operator new[](size_t n) { NEW_BODY(n, 0, KIND_NEW_ARRAY, alloc_or_throw); }
EXPORT void *operator new(size_t n, const nothrow_t &) noexcept { NEW_BODY(n, 0, KIND_NEW, alloc_nothrow); }
EXPORT void *operator new[](size_t n, const nothrow_t &) noexcept { NEW_BODY(n, 0, KIND_NEW_ARRAY, alloc_nothrow); }
EXPORT void *operator new(size_t n, align_val_t a) { NEW_BODY(n, size_t(a), KIND_NEW, alloc_or_throw); }
EXPORT void *operator new[](size_t n, align_val_t a) { NEW_BODY(n, size_t(a), KIND_NEW_ARRAY, alloc_or_throw); }
EXPORT void *operator new(size_t n, align_val_t a, const nothrow_t &) noexcept {
    NEW_BODY(n, size_t(a), KIND_NEW, alloc_nothrow);
}
EXPORT void *operator new[](size_t n, align_val_t a, const nothrow_t &) noexcept {
    NEW_BODY(n, size_t(a), KIND_NEW_ARRAY, alloc_nothrow);
}

EXPORT void operator delete(void *p) noexcept { DELETE_BODY(p, KIND_NEW, false, 0); }
EXPORT void operator delete[](void *p) noexcept { DELETE_BODY(p, KIND_NEW_ARRAY, false, 0); }
EXPORT void operator delete(void *p, const nothrow_t &) noexcept { DELETE_BODY(p, KIND_NEW, false, 0); }
EXPORT void operator delete[](void *p, const nothrow_t &) noexcept { DELETE_BODY(p, KIND_NEW_ARRAY, false, 0); }
EXPORT void operator delete(void *p, size_t n) noexcept { DELETE_BODY(p, KIND_NEW, true, n); }
EXPORT void operator delete[](void *p, size_t n) noexcept { DELETE_BODY(p, KIND_NEW_ARRAY, true, n); }
EXPORT void operator delete(void *p, align_val_t) noexcept { DELETE_BODY(p, KIND_NEW, false, 0); }
EXPORT void operator delete[](void *p, align_val_t) noexcept { DELETE_BODY(p, KIND_NEW_ARRAY, false, 0); }
EXPORT void operator delete(void *p, align_val_t, const nothrow_t &) noexcept { DELETE_BODY(p, KIND_NEW, false, 0); }
EXPORT void operator delete[](void *p, align_val_t, const nothrow_t &) noexcept {
    DELETE_BODY(p, KIND_NEW_ARRAY, false, 0);
}
EXPORT void operator delete(void *p, size_t n, align_val_t) noexcept { DELETE_BODY(p, KIND_NEW, true, n); }
EXPORT void operator delete[](void *p, size_t n, align_val_t) noexcept { DELETE_BODY(p, KIND_NEW_ARRAY, true, n); }
