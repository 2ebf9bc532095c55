// C++ code a C program loads with dlopen (tests/t_startup.sh): the library
// under test was loaded before any C++ runtime, so operator new finds this
// one only when an allocation fails. Checks that the new-handler is called
// until it removes itself, that std::bad_alloc is thrown then and caught
// here, and that new and delete work. Returns 0 when all hold.
#include <cstdio>
#include <new>

static int calls;

extern "C" int plugin_run(void) {
    std::set_new_handler([] {
        if (++calls == 2) std::set_new_handler(nullptr);
    });
    volatile std::size_t huge = static_cast<std::size_t>(1) << 62;
    bool caught = false;
    try {
        void *p = ::operator new(huge);
        ::operator delete(p);
    } catch (const std::bad_alloc &) {
        caught = true;
    }
    int *v = new int[1000];
    v[999] = 7;
    int ok = caught && calls == 2 && v[999] == 7;
    delete[] v;
    std::printf("plugin: bad_alloc %s, new-handler called %d times\n", caught ? "caught" : "not caught", calls);
    return ok ? 0 : 1;
}
