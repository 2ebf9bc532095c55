/* A C program that loads C++ code later (tests/t_startup.sh): dlopen()s
 * the plugin given as argv[1], without RTLD_GLOBAL, and runs it. */
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) {
        fprintf(stderr, "dlopen_cxx: %s\n", dlerror());
        return 2;
    }
    int (*run)(void) = (int (*)(void))dlsym(h, "plugin_run");
    return run ? run() : 2;
}
