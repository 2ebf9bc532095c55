/* A plugin that leaks from a thread of its own, for tests/t_leaks.sh: once
 * leaky has dlclose'd it, the leak's allocation frames are code that is no
 * longer mapped, under the C library's thread start (as with ld and gcc's
 * LTO plugin, which leaks and is unloaded before ld exits). Built with frame
 * pointers, so the walk has the plugin's frame. */
#include <pthread.h>
#include <stdlib.h>

__attribute__((noinline)) static void *plugin_leak(void *arg) {
    (void)arg;
    void *p = malloc(77);
    __asm__ volatile("" : : "r"(p) : "memory");
    return NULL;
}

int plugin_run(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, plugin_leak, NULL) != 0) return -1;
    return pthread_join(t, NULL);
}
