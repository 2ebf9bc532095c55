// A shared library with its own copy of operator new and delete, as a
// library that links the C++ runtime statically has (Rust's libLLVM.so, whose
// blocks rust-lld deletes). Linked with -Bsymbolic-functions, its own calls
// to new and delete bind to these, which call malloc and free: the blocks it
// makes look malloc'd to the allocator, and blocks it deletes are free()d.
// tests/bugs/bugs_cxx.cpp (case private_new) hands blocks across.
#include <cstdlib>
#include <new>

void *operator new(std::size_t n) {
    if (void *p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void operator delete(void *p) noexcept { std::free(p); }
void operator delete(void *p, std::size_t) noexcept { std::free(p); }

extern "C" {
__attribute__((visibility("default"))) long *pn_make(long v) { return new long(v); }
__attribute__((visibility("default"))) void pn_drop(long *p) { delete p; }
}
