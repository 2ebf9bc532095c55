/* runpeak: run a command and write its own peak resident set to a file.
 *
 * bench/run used to take the peak from wait4() on the workload it forked.
 * But Linux keeps a process's ru_maxrss across exec, and the figure starts
 * at what the forking process had resident: every workload's peak was at
 * least the Python runner's (18.2 MB), which hid small heaps (xmalloc:
 * glibc 8.4 MB, miniheap 16.5 MB, both reported as 18.2). This small
 * program forks the command itself, so the command's figure starts from
 * this program's few pages.
 *
 * Usage: runpeak FILE COMMAND [ARG...]
 * Writes "maxrss_kb=N" to FILE (the times reach bench/run anyway: they
 * count in this program's own rusage, as its reaped child's), and exits as
 * the command did (killed by the same signal, or with its status). When
 * RUNPEAK_PRELOAD is set, the command gets it as LD_PRELOAD (so this
 * program does not run on the allocator under test).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: runpeak FILE COMMAND [ARG...]\n");
        return 2;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("runpeak: fork");
        return 2;
    }
    if (pid == 0) {
        const char *pre = getenv("RUNPEAK_PRELOAD");
        if (pre != NULL) {
            setenv("LD_PRELOAD", pre, 1);
            unsetenv("RUNPEAK_PRELOAD");
        }
        execvp(argv[2], argv + 2);
        fprintf(stderr, "runpeak: %s: cannot run it\n", argv[2]);
        _exit(127);
    }
    int status;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0) {
        if (errno != EINTR) {
            perror("runpeak: wait4");
            return 2;
        }
    }
    FILE *f = fopen(argv[1], "w");
    if (f == NULL) {
        perror("runpeak: the result file");
        return 2;
    }
    fprintf(f, "maxrss_kb=%ld\n", ru.ru_maxrss);
    fclose(f);
    if (WIFSIGNALED(status)) {
        signal(WTERMSIG(status), SIG_DFL);
        raise(WTERMSIG(status));
        return 128 + WTERMSIG(status);
    }
    return WEXITSTATUS(status);
}
