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
 *                   77 bytes, then dlclose it: no other leak
 * Threads still running at exit (their stacks, registers and TLS are roots):
 *   leaky worker    a worker holds a block in a local and waits; main leaks
 *                   leak_b's 2000 bytes and returns
 *   leaky tls       a worker and main each hold a block in a __thread
 *                   variable; main leaks leak_b's and returns
 *   leaky exit      a worker holds a block in a __thread variable, leaks
 *                   leak_a's 600 bytes and calls exit() while main waits
 *   leaky blocked   as worker, but the worker blocks SIGURG, so it cannot
 *                   be stopped for the scan: its 4321 bytes are reported too
 *   leaky handler   registers an error handler (mh_set_error_handler, found
 *                   with dlsym) whose argument is a block it keeps no other
 *                   pointer to, and leaks leak_b's: the handler's block
 *                   is the program's still, not a leak
 *   leaky busy      main leaks leak_b's, then 4 threads go on allocating,
 *                   freeing and reallocating blocks of up to 400 bytes
 *                   that they keep in a local array until main returns:
 *                   nothing of theirs is a leak. (leak_b's blocks come
 *                   first and are of another size class, so no stale copy
 *                   of a churner's pointer on its stack can point into
 *                   them: the count does not depend on luck.) */
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

static __thread void *volatile tls_keep; /* (volatile: a store never read is not dropped) */
static volatile int ready;

/* Runs on a thread until the exit: every block it holds is in keep[]. */
__attribute__((noinline)) static void *churner(void *seed) {
    void *keep[64] = {0};
    unsigned r = (unsigned)(size_t)seed;
    for (;;) {
        r = r * 1103515245u + 12345u;
        unsigned k = (r >> 8) & 63;
        free(keep[k]);
        keep[k] = malloc((r >> 16) % 400 + 1);
        if (r % 7 == 0) {
            void *q = realloc(keep[k], (r >> 20) % 400 + 1);
            if (q) keep[k] = q;
        }
    }
    return NULL;
}

/* Runs on a thread: holds a block where only that thread sees it. */
__attribute__((noinline)) static void *worker(void *mode) {
    const char *m = mode;
    if (strcmp(m, "blocked") == 0) {
        sigset_t urg;
        sigemptyset(&urg);
        sigaddset(&urg, SIGURG);
        pthread_sigmask(SIG_BLOCK, &urg, NULL);
    }
    if (strcmp(m, "tls") == 0 || strcmp(m, "exit") == 0) {
        tls_keep = malloc(321);
    } else {
        char *mine = malloc(strcmp(m, "blocked") == 0 ? 4321 : 1234);
        __asm__ volatile("" : : "r"(mine) : "memory");
        ready = 1;
        for (;;) { /* the block lives in this frame (or a register) only */
            pause();
            __asm__ volatile("" : : "r"(mine) : "memory");
        }
    }
    if (strcmp(m, "exit") == 0) {
        leak_a();
        clear_stack();
        exit(0);
    }
    ready = 1;
    for (;;) pause();
}

static void on_error(const void *err, void *arg) { (void)err; (void)arg; }

static void *joinee(void *arg) {
    free(malloc(100));
    return arg;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "joined") == 0) { /* threads that ran and were joined */
        for (int i = 0; i < 4; i++) {
            pthread_t t;
            if (pthread_create(&t, NULL, joinee, NULL) != 0 || pthread_join(t, NULL) != 0) return 2;
        }
        leak_b();
        clear_stack();
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "handler") == 0) {
        void (*set)(void (*)(const void *, void *), void *) =
            (void (*)(void (*)(const void *, void *), void *))dlsym(RTLD_DEFAULT, "mh_set_error_handler");
        if (!set) return 2;
        set(on_error, malloc(555));
        leak_b();
        clear_stack();
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "busy") == 0) {
        leak_b();
        clear_stack();
        pthread_t t;
        for (size_t i = 1; i <= 4; i++)
            if (pthread_create(&t, NULL, churner, (void *)i) != 0) return 2;
        usleep(50000);
        return 0;
    }
    if (argc > 1 && (strcmp(argv[1], "worker") == 0 || strcmp(argv[1], "tls") == 0 ||
                     strcmp(argv[1], "exit") == 0 || strcmp(argv[1], "blocked") == 0)) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, argv[1]) != 0) return 2;
        if (strcmp(argv[1], "exit") == 0) for (;;) pause();
        while (!ready) usleep(1000);
        if (strcmp(argv[1], "tls") == 0) tls_keep = malloc(123);
        leak_b();
        clear_stack();
        return 0;
    }
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
