/* The code under test of the fuzzing examples: a parser of tiny records
 * (docs/FUZZING-YOUR-CODE.md). It has a planted heap bug. */
#ifndef RECORD_H
#define RECORD_H
#include <stddef.h>
#include <stdint.h>

struct record {
    char type;       /* 'N' name, 'I' number, 'B' anything else (a blob) */
    char *name;      /* 'N': the name, NUL-terminated */
    uint64_t number; /* 'I': the number; 'B': the blob's length */
    uint8_t *blob;   /* 'B': a copy of the input */
};

/* Parse one record; NULL for an empty input or when out of memory. */
struct record *record_parse(const uint8_t *data, size_t size);
void record_free(struct record *r);

#endif
