// operator new and delete in all their forms, on miniheap. Each records how
// the block was allocated (new, new[]) so a mismatched release (delete of a
// new[]'d block, delete[] of a new'd one; with mismatch=2 also free of a
// new'd block and delete of a malloc'd one, see kinds_clash) and a sized
// delete with the wrong size are reported: alloc-dealloc-mismatch and
// size-mismatch.
#include <cerrno>
#include <cstddef>
#include <dlfcn.h>
#include <new>

#include "track_entry.h"

// The library does not link the C++ runtime: a C program (most of what runs
// under LD_PRELOAD) would map libstdc++, libm and libgcc_s for nothing,
// 1.3 MB resident and 0.6-0.7 ms at every start. What operator new needs of
// the runtime, it needs only when an allocation fails: the new-handler and
// the means to throw and catch std::bad_alloc. Those symbols are weak. A C++
// program has its runtime loaded with it, and they bind to it; in a C
// program that loads C++ code later (dlopen), they stay null, and the
// failure path looks the two functions it calls up then.
asm(".weak __gxx_personality_v0");
asm(".weak __cxa_begin_catch");
asm(".weak __cxa_end_catch");
asm(".weak __cxa_allocate_exception");
asm(".weak __cxa_throw"); // (also below, but clang's implicit calls take no notice)
asm(".weak _ZSt15get_new_handlerv");
asm(".weak _ZNSt9bad_allocD1Ev");
asm(".weak _ZTISt9bad_alloc");
asm(".weak _ZTVSt9bad_alloc");
asm(".weak _ZSt9terminatev"); // (clang's __clang_call_terminate)

extern "C" {
void *mh_alloc_kind(std::size_t size, std::size_t align, int kind) __attribute__((visibility("hidden")));
void *mh_new(std::size_t size) __attribute__((visibility("hidden")));
void *mh_new_array(std::size_t size) __attribute__((visibility("hidden")));
void mh_delete(void *p) noexcept __attribute__((visibility("hidden")));
void mh_delete_sized(void *p, std::size_t size) noexcept __attribute__((visibility("hidden")));
void mh_delete_array(void *p) noexcept __attribute__((visibility("hidden")));
void mh_delete_array_sized(void *p, std::size_t size) noexcept __attribute__((visibility("hidden")));
void *mh_new_failed(std::size_t size, std::size_t align, int kind) __attribute__((visibility("hidden")));
void mh_free_kind(void *p, int kind, bool has_size, std::size_t size) noexcept __attribute__((visibility("hidden")));
void mh_fatal(const char *msg) __attribute__((visibility("hidden"), noreturn));
// Two of them under names whose address the compiler cannot assume
// non-null (the test of a bound runtime).
void weak_cxa_throw() __asm__("__cxa_throw") __attribute__((weak));
void weak_get_new_handler() __asm__("_ZSt15get_new_handlerv") __attribute__((weak));
}

namespace {
enum { KIND_NEW = 2, KIND_NEW_ARRAY = 3 };

// Bound at start-up: the program has a C++ runtime.
bool runtime_bound() { return &weak_cxa_throw != nullptr && &weak_get_new_handler != nullptr; }

// A runtime loaded after start-up, maybe into a local scope (dlopen without
// RTLD_GLOBAL): asked for by its name.
void *late_runtime(const char *name) {
    void *lib = dlopen("libstdc++.so.6", RTLD_LAZY | RTLD_NOLOAD);
    void *f = lib ? dlsym(lib, name) : nullptr;
    if (lib) dlclose(lib);
    return f ? f : dlsym(RTLD_DEFAULT, name);
}

std::new_handler current_handler() {
    if (runtime_bound()) return std::get_new_handler();
    auto get = reinterpret_cast<std::new_handler (*)()>(late_runtime("_ZSt15get_new_handlerv"));
    return get ? get() : nullptr;
}

[[noreturn]] void throw_bad_alloc() {
    if (runtime_bound()) throw std::bad_alloc();
    auto thrower = reinterpret_cast<void (*)()>(late_runtime("_ZSt17__throw_bad_allocv")); // libstdc++'s
    if (thrower) thrower();
    mh_fatal("operator new: out of memory, and no C++ runtime to throw std::bad_alloc with");
}

// The standard's loop, after a try that failed: call the new-handler until
// it gives up or memory comes.
void *retry_or_throw(std::size_t size, std::size_t align, int kind) {
    for (;;) {
        std::new_handler h = current_handler();
        if (!h) throw_bad_alloc();
        h();
        if (void *p = mh_alloc_kind(size, align, kind)) return p;
    }
}

void *alloc_or_throw(std::size_t size, std::size_t align, int kind) {
    if (void *p = mh_alloc_kind(size, align, kind)) return p;
    return retry_or_throw(size, align, kind);
}

// (Without a runtime bound at start-up the catch cannot work: there is no
// personality routine. A handler that throws then throws through the
// nothrow operator; only a C program that dlopen()ed C++ code, ran out of
// memory and installed such a handler meets that.)
void *alloc_nothrow(std::size_t size, std::size_t align, int kind) noexcept {
    try {
        return alloc_or_throw(size, align, kind);
    } catch (...) {
        return nullptr;
    }
}
}  // namespace

// After the first try of mh_new or mh_new_array failed (alloc.c): may throw.
void *mh_new_failed(std::size_t size, std::size_t align, int kind) { return retry_or_throw(size, align, kind); }

// The first try is made with the client request in the operator's own frame
// (track_entry.h); the new-handler loop, which may throw, only if it fails.
#define NEW_BODY(size, align, kind, fallback)                       \
    void *p;                                                        \
    MH_TRACK_ENTRY(p = mh_alloc_kind(size, align, kind));           \
    return p ? p : fallback(size, align, kind)
// Under valgrind, the operators below jump to these, which make the client
// request in their own frame: memcheck's stack for the block starts there,
// then the program (the operator's jump left no frame of its own).
__attribute__((noinline)) void *tracked_operator_new(size_t size, int kind) {
    NEW_BODY(size, 0, kind, alloc_or_throw);
}
__attribute__((noinline)) void tracked_operator_delete(void *p, int kind, bool has_size, size_t size) noexcept {
    MH_TRACK_ENTRY(mh_free_kind(p, kind, has_size, size));
}
// The throwing forms without alignment and the plain and sized deletes: a
// jump to alloc.c's entry for exactly that form (mh_new: all of the first
// try; mh_delete_sized: free with the kind and size known), so a C++
// program's allocation costs what malloc's does. The other deletes jump to
// mh_free_kind. Under valgrind, all go to tracked_operator_*.
#define IF_TRACKED_NEW(size, kind) \
    if (__builtin_expect(mh_track_valgrind, 0)) return tracked_operator_new(size, kind)
#define IF_TRACKED_DELETE(p, kind, has_size, size) \
    if (__builtin_expect(mh_track_valgrind, 0)) return tracked_operator_delete(p, kind, has_size, size)
#define NEW_PLAIN(size, kind, entry) \
    IF_TRACKED_NEW(size, kind);      \
    return entry(size)
#define DELETE_FAST(p, kind, has_size, size, call) \
    IF_TRACKED_DELETE(p, kind, has_size, size);    \
    return call
#define DELETE_BODY(p, kind, has_size, size) DELETE_FAST(p, kind, has_size, size, mh_free_kind(p, kind, has_size, size))

#define EXPORT __attribute__((visibility("default")))
using std::align_val_t;
using std::nothrow_t;
using std::size_t;

EXPORT void *operator new(size_t n) { NEW_PLAIN(n, KIND_NEW, mh_new); }
EXPORT void *operator new[](size_t n) { NEW_PLAIN(n, KIND_NEW_ARRAY, mh_new_array); }
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

EXPORT void operator delete(void *p) noexcept { DELETE_FAST(p, KIND_NEW, false, 0, mh_delete(p)); }
EXPORT void operator delete[](void *p) noexcept { DELETE_FAST(p, KIND_NEW_ARRAY, false, 0, mh_delete_array(p)); }
EXPORT void operator delete(void *p, const nothrow_t &) noexcept { DELETE_BODY(p, KIND_NEW, false, 0); }
EXPORT void operator delete[](void *p, const nothrow_t &) noexcept { DELETE_BODY(p, KIND_NEW_ARRAY, false, 0); }
EXPORT void operator delete(void *p, size_t n) noexcept { DELETE_FAST(p, KIND_NEW, true, n, mh_delete_sized(p, n)); }
EXPORT void operator delete[](void *p, size_t n) noexcept { DELETE_FAST(p, KIND_NEW_ARRAY, true, n, mh_delete_array_sized(p, n)); }
EXPORT void operator delete(void *p, align_val_t) noexcept { DELETE_BODY(p, KIND_NEW, false, 0); }
EXPORT void operator delete[](void *p, align_val_t) noexcept { DELETE_BODY(p, KIND_NEW_ARRAY, false, 0); }
EXPORT void operator delete(void *p, align_val_t, const nothrow_t &) noexcept { DELETE_BODY(p, KIND_NEW, false, 0); }
EXPORT void operator delete[](void *p, align_val_t, const nothrow_t &) noexcept {
    DELETE_BODY(p, KIND_NEW_ARRAY, false, 0);
}
EXPORT void operator delete(void *p, size_t n, align_val_t) noexcept { DELETE_BODY(p, KIND_NEW, true, n); }
EXPORT void operator delete[](void *p, size_t n, align_val_t) noexcept { DELETE_BODY(p, KIND_NEW_ARRAY, true, n); }
