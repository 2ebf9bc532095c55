/* Give-back in a process under a seccomp filter (the purge's batching).
 *
 * The purge hands many page runs to the kernel in one process_madvise call
 * when it can. A sandbox's seccomp filter may kill the process for a system
 * call it does not list (sshd's does), so miniheap must not make that call
 * under a filter. A forked child installs a filter that kills the process on
 * process_madvise and allows everything else, spikes to 60 MB of small
 * blocks, frees 49 in 50, trims and sleeps past decay_ms, and checks its
 * blocks; the parent asserts it exited 0 and gave the memory back. A second
 * child installs the filter only after one such cycle has given memory back
 * (with the batching, where the kernel has it), as a program that sandboxes
 * itself late does, and must survive its second cycle. An unfiltered child
 * must give back as much. Plain names; run under LD_PRELOAD.
 */
#include "mh_test.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif

#define N 30000

static int install_filter(void)
{
    struct sock_filter prog[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_process_madvise, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog fprog = {sizeof prog / sizeof prog[0], prog};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -1;
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog);
}

static char *p[N];

/* Spike, free 49 in 50, trim, sleep past decay_ms, check the survivors
 * (and free them). 0 when they survived; the kB grown and given back. */
static int cycle(long *grew, long *gave)
{
    size_t before = (mh_test_resident_bytes() >> 10);
    for (int i = 0; i < N; i++) {
        size_t n = 16 + (size_t)(i * 2654435761u) % 4000;
        p[i] = malloc(n);
        if (!p[i])
            return 4;
        memset(p[i], (i & 0x7f) | 1, n);
    }
    size_t peak = (mh_test_resident_bytes() >> 10);
    for (int i = 0; i < N; i++)
        if (i % 50) {
            free(p[i]);
            p[i] = NULL;
        }
    malloc_trim(0);
    usleep(1500 * 1000); /* past decay_ms: the purge thread's passes too */
    *gave = (long)peak - (long)(mh_test_resident_bytes() >> 10);
    *grew = (long)peak - (long)before;
    for (int i = 0; i < N; i += 50) {
        if (p[i][0] != ((i & 0x7f) | 1))
            return 5;
        free(p[i]);
    }
    return 0;
}

enum { UNFILTERED, FILTERED, FILTERED_LATE };

/* The child: exit status 0 when its blocks survived; the resident size it
 * grew and gave back (kB) through the pipe. */
static int child(int mode, int wfd)
{
    long msg[2] = {0, 0};
    if (mode == FILTERED_LATE) {
        int rc = cycle(&msg[0], &msg[1]);
        if (rc)
            return rc;
    }
    if (mode != UNFILTERED && install_filter() != 0) {
        perror("seccomp");
        return 3;
    }
    int rc = cycle(&msg[0], &msg[1]);
    if (rc)
        return rc;
    if (write(wfd, msg, sizeof msg) != (ssize_t)sizeof msg)
        return 6;
    return 0;
}

int main(void)
{
    mh_test_check_allocator("test_seccomp");
    static const char *const what_mode[] = {
        [UNFILTERED] = "unfiltered",
        [FILTERED] = "under a filter that kills on process_madvise",
        [FILTERED_LATE] = "under that filter, installed after a first give-back",
    };
    for (int mode = UNFILTERED; mode <= FILTERED_LATE; mode++) {
        int fds[2];
        CHECK(pipe(fds) == 0, "pipe");
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            close(fds[0]);
            _exit(child(mode, fds[1]));
        }
        close(fds[1]);
        long msg[2] = {0, 0};
        ssize_t got = read(fds[0], msg, sizeof msg);
        close(fds[0]);
        int st = 0;
        waitpid(pid, &st, 0);
        const char *what = what_mode[mode];
        if (WIFSIGNALED(st)) {
            CHECK(0, "%s: the child was killed by signal %d", what, WTERMSIG(st));
            continue;
        }
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: the child exited %d", what, WEXITSTATUS(st));
        CHECK(got == (ssize_t)sizeof msg, "%s: no figures from the child", what);
        printf("  %s: grew %ld MB, gave back %ld MB\n", what, msg[0] >> 10, msg[1] >> 10);
        CHECK(msg[1] * 10 >= msg[0] * 8, "%s: gave back %ld of %ld kB (want 80 %%)", what, msg[1], msg[0]);
    }
    return mh_test_exit("test_seccomp");
}
