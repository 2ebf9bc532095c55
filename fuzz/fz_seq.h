/* The operation-sequence engine (fz_seq.c), shared by fuzz_ops and fuzz_bugs. */
#ifndef FZ_SEQ_H
#define FZ_SEQ_H
#include "fz.h"

/* Run one input. bugs: let OP_BUG commit a bug from the bug table (else it
 * only verifies a slot, so both harnesses read the same corpus). */
void fz_run_sequence(const uint8_t *data, size_t size, bool bugs);
/* Enable/disable bug-table entries: "all", "none", "name", "+name", "-name",
 * comma separated (prefixes match). fuzz_bugs reads $FUZZ_BUGS. */
void fz_bugs_configure(const char *spec);
#endif
