/* The code under test of the fuzzing examples (docs/FUZZING-YOUR-CODE.md).
 *
 * The input is a record: a type byte, then its payload. A name record ('N')
 * copies its payload, at most 16 bytes, into a 16-byte block and ends it
 * with a NUL. The planted bug: for a name of 16 bytes or more (an input of
 * 'N' and at least 16 more bytes) the NUL lands one byte past the block.
 * On glibc the program runs on silently; on miniheap (hardened or debug
 * mode) record_free() stops it with
 *
 *   miniheap: ERROR: heap-buffer-overflow on address ... (1 byte past a 16-byte block at ...)
 */
#include "record.h"

#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 16

struct record *record_parse(const uint8_t *data, size_t size) {
    if (size == 0) return NULL;
    struct record *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->type = (char)data[0];
    switch (data[0]) {
    case 'N': {
        size_t n = size - 1;
        if (n > NAME_MAX_LEN) n = NAME_MAX_LEN;
        r->name = malloc(NAME_MAX_LEN); /* BUG: no room for the NUL */
        if (!r->name) break;
        memcpy(r->name, data + 1, n);
        r->name[n] = '\0'; /* one byte past the block when n == 16 */
        break;
    }
    case 'I': {
        size_t n = size - 1 < 8 ? size - 1 : 8;
        for (size_t i = 0; i < n; i++) r->number |= (uint64_t)data[1 + i] << (8 * i);
        break;
    }
    default:
        r->type = 'B';
        r->number = size;
        r->blob = malloc(size);
        if (r->blob) memcpy(r->blob, data, size);
        break;
    }
    return r;
}

void record_free(struct record *r) {
    if (!r) return;
    free(r->name);
    free(r->blob);
    free(r);
}
