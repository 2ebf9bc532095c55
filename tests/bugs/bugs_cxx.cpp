// C++ allocation pairs, one bug per run (see tests/bugs/bugs.c for the C
// cases); run under LD_PRELOAD=libminiheap.so by tests/t_bugs.sh.
//
//   bugs_cxx mismatch new_free | newarr_delete | malloc_delete | new_deletearr |
//                     sized_delete | sized_deletearr | newarr_free_large |
//                     malloc_delete_large
//   bugs_cxx private_new   blocks of a library with its own operator new
//                     (libprivate_new.so, beside this program) deleted here,
//                     and blocks new'd here deleted there: correct code
//   bugs_cxx clean    new and delete in all their forms, used correctly
//   bugs_cxx clean_threads   containers and new/delete in std::threads
//
// A bug that is not caught lets the program exit 0 without output; problems
// of the program itself go to stderr with the prefix "bugs_cxx: " (exit 2).
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <map>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

// Hide where a pointer came from, so the compiler neither warns about the
// mismatch (-Wmismatched-new-delete) nor elides the allocation.
template <typename T>
inline T *launder(T *p) {
    __asm__ volatile("" : "+r"(p));
    return p;
}

[[noreturn]] void die(const char *what) {
    std::fprintf(stderr, "bugs_cxx: %s\n", what);
    std::exit(2);
}

int mismatch(const std::string &how) {
    if (how == "new_free") {
        int *p = launder(new int(42));
        std::free(p);
    } else if (how == "newarr_delete") {
        char *p = launder(new char[24]);
        std::memset(p, 1, 24);
        delete p;
    } else if (how == "malloc_delete") {
        char *p = launder(static_cast<char *>(std::malloc(24)));
        if (!p) die("malloc failed");
        delete p;
    } else if (how == "new_deletearr") {
        long *p = launder(new long(7));
        delete[] p;
    } else if (how == "sized_delete") {
        void *p = launder(::operator new(24));
        ::operator delete(p, 16);
    } else if (how == "sized_deletearr") {
        void *p = launder(::operator new[](24));
        ::operator delete[](p, 16);
    } else if (how == "newarr_free_large") {
        char *p = launder(new char[300 * 1024]);
        std::free(p);
    } else if (how == "malloc_delete_large") {
        char *p = launder(static_cast<char *>(std::malloc(300 * 1024)));
        if (!p) die("malloc failed");
        delete p;
    } else {
        die("unknown mismatch case");
    }
    __asm__ volatile("" ::: "memory");
    return 0;
}

// A library with its own copy of the C++ runtime (libprivate_new.so) makes
// blocks with a new that calls malloc; this program deletes them with its
// delete (the allocator's), and hands it blocks of its new to delete with
// its own (free). Correct code: each side pairs new with delete.
int private_new() {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 64);
    if (n <= 0) die("readlink /proc/self/exe failed");
    exe[n] = '\0';
    std::strcpy(std::strrchr(exe, '/') + 1, "libprivate_new.so");
    void *lib = dlopen(exe, RTLD_NOW);
    if (!lib) die(dlerror());
    auto make = reinterpret_cast<long *(*)(long)>(dlsym(lib, "pn_make"));
    auto drop = reinterpret_cast<void (*)(long *)>(dlsym(lib, "pn_drop"));
    if (!make || !drop) die("libprivate_new.so lacks pn_make or pn_drop");
    for (long i = 0; i < 100; i++) {
        long *p = launder(make(i));
        if (*p != i) die("pn_make returned a wrong value");
        delete p;
        drop(launder(new long(i)));
    }
    return 0;
}

// ---- clean ------------------------------------------------------------------
int failures;
void check(bool ok, const char *what) {
    if (!ok) {
        std::fprintf(stderr, "bugs_cxx: clean: check failed: %s\n", what);
        failures++;
    }
}

struct Tracked {
    static std::atomic<int> live;
    std::string name;
    Tracked() : Tracked(0) {}
    explicit Tracked(int i) : name(std::to_string(i) + std::string(40, 'x')) { live++; }
    ~Tracked() { live--; }
};
std::atomic<int> Tracked::live;

struct alignas(64) Line {
    unsigned char b[64];
};
struct alignas(4096) Page {
    unsigned char b[4096];
};

template <typename T>
bool aligned(const T *p) {
    return (reinterpret_cast<std::uintptr_t>(p) & (alignof(T) - 1)) == 0;
}

void churn(int seed) {
    std::map<int, std::string> m;
    std::vector<std::unique_ptr<Tracked>> v;
    for (int i = 0; i < 1500; i++) {
        int k = (i * 7919 + seed) % 500;
        m[k] = std::string(static_cast<size_t>(k % 300), 'a');
        if (i % 3 == 0) v.push_back(std::make_unique<Tracked>(i));
        if (v.size() > 50) v.erase(v.begin(), v.begin() + 25);
        if (i % 5 == 0) m.erase((k + 1) % 500);
    }
}

int clean() {
    // scalars, arrays with and without destructors, zero-length arrays
    for (int i = 0; i < 200; i++) {
        auto *t = new Tracked(i);
        delete t;
        auto *a = new Tracked[static_cast<size_t>(i % 7) + 1];
        delete[] a;
        auto *c = new char[static_cast<size_t>(i) * 37];
        std::memset(c, i, static_cast<size_t>(i) * 37);
        delete[] c;
        auto *z = new int[0];
        delete[] z;
    }
    check(Tracked::live == 0, "every Tracked destroyed");
    // over-aligned types (operator new with align_val_t), scalar and array
    for (int i = 0; i < 50; i++) {
        auto *l = new Line();
        check(aligned(l), "alignas(64) new");
        delete l;
        auto *la = new Line[static_cast<size_t>(i) + 1];
        check(aligned(la), "alignas(64) new[]");
        delete[] la;
        auto *pg = new Page();
        check(aligned(pg), "alignas(4096) new");
        delete pg;
    }
    // nothrow forms
    for (int i = 0; i < 50; i++) {
        auto *p = new (std::nothrow) Tracked(i);
        check(p != nullptr, "nothrow new");
        delete p;
        auto *a = new (std::nothrow) char[1000];
        check(a != nullptr, "nothrow new[]");
        delete[] a;
        auto *l = new (std::nothrow) Line[3];
        check(l != nullptr && aligned(l), "nothrow aligned new[]");
        delete[] l;
    }
    // explicit operator calls with the right sizes and alignments
    for (std::size_t n : {1ul, 24ul, 100ul, 5000ul, 200000ul}) {
        void *p = ::operator new(n);
        std::memset(p, 1, n);
        ::operator delete(p, n);
        void *a = ::operator new[](n);
        std::memset(a, 2, n);
        ::operator delete[](a, n);
        void *al = ::operator new(n, std::align_val_t(256));
        check((reinterpret_cast<std::uintptr_t>(al) & 255) == 0, "operator new(n, align)");
        std::memset(al, 3, n);
        ::operator delete(al, n, std::align_val_t(256));
        void *aa = ::operator new[](n, std::align_val_t(128));
        ::operator delete[](aa, std::align_val_t(128));
        void *nt = ::operator new(n, std::nothrow);
        ::operator delete(nt, std::nothrow);
    }
    // huge: bad_alloc, not a report
    bool threw = false;
    try {
        void *p = ::operator new(static_cast<std::size_t>(1) << 62);
        ::operator delete(p);
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    check(threw, "operator new(2^62) throws bad_alloc");
    volatile std::size_t huge = static_cast<std::size_t>(1) << 62;
    check(::operator new[](huge, std::nothrow) == nullptr, "nothrow operator new[](2^62) is null");
    // the new-handler: called on each failure until it removes itself
    // (the library binds weakly to this program's C++ runtime)
    static int handler_calls;
    handler_calls = 0;
    std::set_new_handler([] {
        if (++handler_calls == 3) std::set_new_handler(nullptr);
    });
    threw = false;
    try {
        void *p = ::operator new(huge, std::align_val_t(64));
        ::operator delete(p, std::align_val_t(64));
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    check(threw && handler_calls == 3, "operator new calls the new-handler until it is removed, then throws");
    // the same through the plain forms (their first try is alloc.c's mh_new)
    for (int array = 0; array < 2; array++) {
        handler_calls = 0;
        std::set_new_handler([] {
            if (++handler_calls == 3) std::set_new_handler(nullptr);
        });
        threw = false;
        try {
            void *p = array ? ::operator new[](huge) : ::operator new(huge);
            ::operator delete(p);
        } catch (const std::bad_alloc &) {
            threw = true;
        }
        check(threw && handler_calls == 3, "plain operator new / new[]: the new-handler until it is removed, then bad_alloc");
    }
    // a handler that frees a block and removes itself: one retry, then bad_alloc
    static void *reserve;
    reserve = ::operator new(4096);
    handler_calls = 0;
    std::set_new_handler([] {
        handler_calls++;
        ::operator delete(reserve);
        reserve = nullptr;
        std::set_new_handler(nullptr);
    });
    threw = false;
    try {
        ::operator delete(::operator new(huge));
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    check(threw && handler_calls == 1 && reserve == nullptr, "a handler that removes itself after freeing: bad_alloc after one call");
    // a handler that throws: the nothrow form returns null
    handler_calls = 0;
    std::set_new_handler([] {
        handler_calls++;
        throw std::bad_alloc();
    });
    check(::operator new(huge, std::nothrow) == nullptr && handler_calls == 1,
          "nothrow operator new: a handler's bad_alloc becomes null");
    std::set_new_handler(nullptr);
    // exceptions (allocated by the runtime), containers, threads
    for (int i = 0; i < 100; i++) {
        try {
            throw std::runtime_error(std::string(static_cast<size_t>(i) * 10, 'e'));
        } catch (const std::exception &e) {
            check(std::strlen(e.what()) == static_cast<size_t>(i) * 10, "exception message");
        }
    }
    churn(99);
    check(Tracked::live == 0, "every Tracked destroyed after the churn");
    return failures ? 1 : 0;
}

int clean_threads() {
    std::vector<std::thread> threads;
    for (int i = 0; i < 3; i++) threads.emplace_back(churn, i);
    churn(99);
    for (auto &t : threads) t.join();
    check(Tracked::live == 0, "every Tracked destroyed after the threads");
    return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char **argv) {
    std::string c = argc > 1 ? argv[1] : "";
    if (c == "mismatch" && argc == 3) return mismatch(argv[2]);
    if (c == "private_new" && argc == 2) return private_new();
    if (c == "clean" && argc == 2) return clean();
    if (c == "clean_threads" && argc == 2) return clean_threads();
    std::fprintf(stderr, "bugs_cxx: unknown case (see the comment at the top of tests/bugs/bugs_cxx.cpp)\n");
    return 2;
}
