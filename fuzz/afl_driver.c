/* main() for the harnesses outside libFuzzer.
 *
 * Built with afl-clang-fast: AFL++ persistent mode with shared-memory test
 * cases (__AFL_FUZZ_TESTCASE_BUF, __AFL_LOOP), deferred fork server after
 * the one-time set-up. With file arguments (any build): runs each file once
 * and exits, so `build/fuzz/afl/fuzz_ops crash-file` reproduces a crash AFL++
 * saved, and the same source built with plain clang makes the replayers.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifdef __AFL_FUZZ_TESTCASE_LEN
__AFL_FUZZ_INIT();
#endif

static int run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); return 1; }
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    if (!buf) return 1;
    /* An exact-size copy, as libFuzzer gives, so reads past the end show. */
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, buf, len);
    free(buf);
    LLVMFuzzerTestOneInput(copy, len);
    free(copy);
    return 0;
}

int main(int argc, char **argv) {
    LLVMFuzzerInitialize(&argc, &argv);
    if (argc > 1) {
        int rc = 0;
        for (int i = 1; i < argc; i++) {
            fprintf(stderr, "Running: %s\n", argv[i]);
            rc |= run_file(argv[i]);
        }
        return rc;
    }
#ifdef __AFL_FUZZ_TESTCASE_LEN
    __AFL_INIT();
    const uint8_t *buf = __AFL_FUZZ_TESTCASE_BUF;
    while (__AFL_LOOP(10000)) {
        size_t len = (size_t)__AFL_FUZZ_TESTCASE_LEN;
        LLVMFuzzerTestOneInput(buf, len);
    }
    return 0;
#else
    return run_file("/dev/stdin");
#endif
}
