/* Linked with libminiheap.a: writes one byte past a 24-byte block and frees
 * it. Hardened mode reports it; mode=fast does not. tests/t_startup.sh runs
 * it set-user-ID with MINIHEAP_OPTIONS=mode=fast, which a privileged
 * program must ignore. Prints whether it ran privileged (AT_SECURE). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/auxv.h>
#include <unistd.h>

int main(void) {
    printf("secure=%lu\n", getauxval(AT_SECURE));
    fflush(stdout);
    volatile char *p = malloc(24);
    p[24] = 'X';
    free((void *)p);
    return 0;
}
