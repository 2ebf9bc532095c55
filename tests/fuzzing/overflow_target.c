/* A libFuzzer target with a planted bug: an input that starts with "BUG"
 * writes one byte past a 16-byte block. Run with miniheap as its
 * allocator (preloaded or linked), the overflow is reported when the block
 * is freed, and libFuzzer must save the input as a crash file that
 * replays to the same report (tests/t_fuzz_crash_file.sh). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *p = malloc(16);
    if (!p) return 0;
    size_t n = size < 16 ? size : 16;
    memcpy(p, data, n);
    if (size >= 3 && data[0] == 'B' && data[1] == 'U' && data[2] == 'G')
        p[16] = 'X'; /* one byte past the block */
    free(p);
    return 0;
}
