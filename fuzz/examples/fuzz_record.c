/* The fuzz target of the examples (docs/FUZZING-YOUR-CODE.md): the
 * libFuzzer interface, built for libFuzzer with clang -fsanitize=fuzzer and
 * for AFL++ with afl-clang-fast -fsanitize=fuzzer (AFL++'s driver, in
 * persistent mode). The target needs nothing of miniheap: the allocator is
 * preloaded (AFL_PRELOAD, LD_PRELOAD) or linked in (libminiheap.a). */
#include "record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    record_free(record_parse(data, size));
    return 0;
}
