/* Operation-sequence harness: random malloc/calloc/realloc/free/aligned
 * sequences over the mh_* API, with a shadow model checked after every
 * step; any allocator report is a failure. See fz_seq.c. */
#include "fz_seq.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fz_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_init();
    fz_run_sequence(data, size, false);
    return 0;
}
