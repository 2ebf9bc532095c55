/* Bug-injection harness: the sequences of fuzz_ops, where OP_BUG commits a
 * heap bug from the table in fz_seq.c. Each committed bug must be reported
 * once with the right kind and address; no report may come at any other
 * time. FUZZ_BUGS=+name,-name,all,none adjusts the table at run time. */
#include <stdlib.h>

#include "fz_seq.h"

static void setup(void) {
    static int done;
    if (done) return;
    done = 1;
    fz_init();
    fz_bugs_configure(getenv("FUZZ_BUGS"));
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    fz_run_sequence(data, size, true);
    return 0;
}
