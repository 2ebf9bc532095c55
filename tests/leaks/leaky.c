/* Leaks from three places, for tests/t_leaks.sh: leak_a loses 3 blocks
 * (100 + 200 + 300 bytes), leak_b 2 blocks (1000 bytes each), the static
 * function leak_c one of 50 bytes (only a symbolizer can name it). Built with
 * -rdynamic and frame pointers, so the report (and the suppressions) see
 * the function names. The dead part of the stack is cleared before exit:
 * the leak scan is conservative, and a stale copy of a pointer there would
 * keep a block reachable by luck.
 *
 *   leaky           the three leaks
 *   leaky clean     no leak at all
 *   leaky plugin SO dlopen SO (tests/leaks/plugin.c), whose thread leaks
 *                   77 bytes, then dlclose it: no other leak */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((noinline)) void leak_a(void) {
    for (int i = 1; i <= 3; i++) {
        void *p = malloc((size_t)i * 100);
        __asm__ volatile("" : : "r"(p) : "memory");
    }
}

__attribute__((noinline)) void leak_b(void) {
    for (int i = 0; i < 2; i++) {
        void *p = malloc(1000);
        __asm__ volatile("" : : "r"(p) : "memory");
    }
}

__attribute__((noinline)) static void leak_c(void) {
    void *p = malloc(50);
    __asm__ volatile("" : : "r"(p) : "memory");
}

__attribute__((noinline)) static void clear_stack(void) {
    volatile char buf[64 * 1024];
    memset((char *)buf, 0, sizeof buf);
    __asm__ volatile("" : : "r"(buf) : "memory");
}

int main(int argc, char **argv) {
    if (argc > 2 && strcmp(argv[1], "plugin") == 0) {
        void *h = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
        int (*run)(void) = h ? (int (*)(void))dlsym(h, "plugin_run") : NULL;
        if (!run || run() != 0) {
            fprintf(stderr, "leaky: cannot run %s: %s\n", argv[2], dlerror());
            return 2;
        }
        dlclose(h);
        return 0;
    }
    if (argc > 1) { /* no leak at all */
        free(malloc(10));
        return 0;
    }
    leak_a();
    leak_b();
    leak_c();
    clear_stack();
    return 0;
}
