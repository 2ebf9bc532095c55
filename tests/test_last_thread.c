/* A process ends when its last thread does, whatever threads of ours run.
 *
 * glibc exits the process when the last of its threads ends (main() having
 * called pthread_exit): with miniheap's purge or statistics thread still
 * running, such a program lived on after its work was done, and since our
 * threads block signals, SIGTERM could not end it either (python3's
 * test_threading, test_3_join_in_forked_from_thread, hung this way).
 *
 * Each case runs in a fresh process (this program executed again with
 * MINIHEAP_OPTIONS set). Its threads allocate until one of our threads runs
 * (seen in /proc/self/task, so the case tests what it says), then:
 *   worker-last: main() calls pthread_exit at once; the worker ends last;
 *   main-last:   the worker ends; main() waits for it to be gone, then calls
 *                pthread_exit;
 *   fork:        a worker forks; in the child, the forking thread starts a
 *                thread and calls pthread_exit; that thread ends last
 *                (not with background=0: the child of a fork starts no
 *                statistics thread);
 *   reset:       (prefixed build) main() allocates, so it has a cache, and
 *                calls mh_reset(), which drops it; then as worker-last.
 *                main() must still be counted as a running thread;
 *   join:        main() starts 8 threads that do not allocate and a worker;
 *                the worker ends (with tcache=0 it was the one thread
 *                counted, so ours ended with it), then main() lets the 8
 *                end, joins them and returns. Once its cache of thread
 *                stacks passes 40 MiB, glibc frees their TLS with free()
 *                while it holds its stack-cache lock, which pthread_create
 *                takes too: a thread of ours started from such a free never
 *                returned (bench prodcons with tcache=0 hung so).
 * The process (and in "fork" the child) must exit by itself with status 0
 * and run its atexit handler, within 20 s (it takes milliseconds; the bound
 * only turns a hang into a failure).
 */
#include "mh_test.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

/* How many threads of ours (named miniheap-*) the process runs. */
static int helper_threads(void) { return mh_test_threads_named("miniheap-"); }

/* Allocate and free (small blocks and a large one, so there is memory to
 * give back) until a thread of ours runs; exits the process with 3 when
 * none comes within 10 s. */
static void churn_until_helper(void)
{
    for (int round = 0; round < 1000; round++) {
        static __thread void *p[512];
        for (int i = 0; i < 512; i++) {
            p[i] = A_MALLOC(100 + (size_t)i * 8);
            if (!p[i])
                _exit(4);
            memset(p[i], 1, 100);
        }
        for (int i = 0; i < 512; i++)
            A_FREE(p[i]);
        void *big = A_MALLOC((size_t)4 << 20);
        if (!big)
            _exit(4);
        memset(big, 1, 4096);
        A_FREE(big);
        if (helper_threads() > 0)
            return;
        usleep(10000);
    }
    static const char msg[] = "no miniheap thread started\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(3);
}

static void said_bye(void)
{
    static const char msg[] = "atexit\n";
    ssize_t w = write(1, msg, sizeof msg - 1);
    (void)w;
}

static void *worker(void *arg)
{
    (void)arg;
    churn_until_helper();
    return NULL;
}

/* Waits up to `seconds` for pid; returns its wait status, or -1 when it
 * did not exit (then it is killed, with its process group when it leads
 * one: a forked child of its that hangs must not keep the output pipe). */
static int wait_bounded(pid_t pid, int seconds)
{
    int status;
    for (int i = 0; i < seconds * 100; i++) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0)
            return -2;
        usleep(10000);
    }
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

static void *fork_worker(void *arg)
{
    (void)arg;
    churn_until_helper();
    pid_t pid = fork();
    if (pid < 0)
        _exit(5);
    if (pid == 0) {
        /* The child: this thread is its only one. */
        pthread_t t;
        if (pthread_create(&t, NULL, worker, NULL) != 0)
            _exit(5);
        pthread_exit(NULL);
    }
    int status = wait_bounded(pid, 10);
    if (status == -1) {
        static const char msg[] = "the forked child did not exit after its last thread ended\n";
        ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
        _exit(6);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        _exit(7);
    return NULL;
}

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static int gate_open;

static void *wait_at_gate(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&gate_lock);
    while (!gate_open)
        pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
    return NULL;
}

static int join_many(void)
{
    enum { WAITERS = 8 }; /* 8 stacks of 8 MiB: past glibc's 40 MiB stack cache */
    pthread_t waiter[WAITERS], t;
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0 || pthread_attr_setstacksize(&attr, (size_t)8 << 20) != 0)
        return 5;
    for (int i = 0; i < WAITERS; i++)
        if (pthread_create(&waiter[i], &attr, wait_at_gate, NULL) != 0)
            return 5;
    if (pthread_create(&t, NULL, worker, NULL) != 0)
        return 5;
    pthread_join(t, NULL);
    pthread_mutex_lock(&gate_lock);
    gate_open = 1;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
    for (int i = 0; i < WAITERS; i++)
        pthread_join(waiter[i], NULL);
    return 0;
}

static int child(const char *scenario)
{
    atexit(said_bye);
    pthread_t t;
    if (strcmp(scenario, "join") == 0)
        return join_many();
    if (strcmp(scenario, "main-last") == 0) {
        if (pthread_create(&t, NULL, worker, NULL) != 0)
            return 5;
        pthread_join(t, NULL);
    } else if (strcmp(scenario, "fork") == 0) {
        if (pthread_create(&t, NULL, fork_worker, NULL) != 0)
            return 5;
    } else {
#ifndef USE_PLAIN
        if (strcmp(scenario, "reset") == 0) {
            A_FREE(A_MALLOC(100));
            mh_reset();
        }
#endif
        if (pthread_create(&t, NULL, worker, NULL) != 0)
            return 5;
    }
    pthread_exit(NULL);
}

static void run_case(const char *self, const char *options, const char *scenario)
{
    int out[2];
    REQUIRE(pipe(out) == 0, "pipe");
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        setpgid(0, 0);
        dup2(out[1], 1);
        close(out[0]);
        close(out[1]);
        setenv("MINIHEAP_OPTIONS", options, 1);
        execl(self, self, "child", scenario, (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    int status = wait_bounded(pid, 20);
    char buf[256] = "";
    ssize_t n = read(out[0], buf, sizeof buf - 1);
    close(out[0]);
    buf[n > 0 ? n : 0] = 0;
    CHECK(status != -1, "options '%s', %s: the process did not exit within 20 s (it hung)",
          options, scenario);
    if (status == -1)
        return;
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "options '%s', %s: wait status 0x%x (3: no thread of ours ran)",
          options, scenario, status);
    /* In "fork", the forked child's handler runs too (first). */
    CHECK(strstr(buf, "atexit") != NULL, "options '%s', %s: the atexit handler did not run (output '%s')", options,
          scenario, buf);
    printf("  options '%s', %s: exited with status %d\n", options, scenario,
           WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "child") == 0)
        return child(argv[2]);
    static const char *const options[] = {"", "mode=fast", "mode=debug", "tcache=0",
                                          "stats_interval_ms=20:stats_file=/dev/null",
                                          "background=0:stats_interval_ms=20:stats_file=/dev/null"};
    static const char *const scenarios[] = {"worker-last", "main-last", "fork", "reset", "join"};
    for (size_t o = 0; o < sizeof options / sizeof *options; o++)
        for (size_t s = 0; s < sizeof scenarios / sizeof *scenarios; s++) {
            /* A forked child starts no statistics thread (it reports at exit). */
            if (strstr(options[o], "background=0") && strcmp(scenarios[s], "fork") == 0)
                continue;
#ifdef USE_PLAIN
            if (strcmp(scenarios[s], "reset") == 0) /* mh_reset belongs to the prefixed API */
                continue;
#endif
            run_case("/proc/self/exe", options[o], scenarios[s]);
        }
    return mh_test_exit("test_last_thread");
}
