/* Shared pieces of the miniheap fuzz harnesses (see fuzz/README.md).
 *
 * Everything here drives the prefixed API (mh_*), so the fuzzer's own
 * allocations (libFuzzer, ASan, libc) never go through miniheap.
 *
 *   fz_common.c   input reader, option decoding and probing, size decoding,
 *                 fill patterns, the error-report handler, failure reporting
 *   fz_seq.c      the operation-sequence engine with its shadow model and the
 *                 bug-injection table (used by fuzz_ops and fuzz_bugs)
 *   fuzz_threads.c  the multi-threaded harness
 *   afl_driver.c  main() for AFL++ persistent mode and for plain replay
 */
#ifndef FZ_H
#define FZ_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "miniheap.h"

/* ---- input reader: returns zeros once the input is used up ------------- */
typedef struct fz_reader {
    const uint8_t *p;
    size_t n;
} fz_reader_t;

static inline uint8_t rd_u8(fz_reader_t *r) {
    if (!r->n) return 0;
    r->n--;
    return *r->p++;
}
static inline uint16_t rd_u16(fz_reader_t *r) { uint16_t a = rd_u8(r); return (uint16_t)(a | (uint16_t)rd_u8(r) << 8); }
static inline uint32_t rd_u32(fz_reader_t *r) { uint32_t a = rd_u16(r); return a | (uint32_t)rd_u16(r) << 16; }
static inline uint64_t rd_u64(fz_reader_t *r) { uint64_t a = rd_u32(r); return a | (uint64_t)rd_u32(r) << 32; }
static inline bool rd_done(const fz_reader_t *r) { return r->n == 0; }

/* ---- failures ------------------------------------------------------------ */
/* Print "fuzz: FAILED: <what>" with the location and abort (a crash for both
 * engines). fuzz-planted greps for "fuzz: FAILED". */
void fz_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));
#define FZ_FAIL(...) fz_fail(__FILE__, __LINE__, __VA_ARGS__)
#define FZ_ASSERT(cond, ...) do { if (__builtin_expect(!(cond), 0)) FZ_FAIL(__VA_ARGS__); } while (0)

/* ---- allocator modes (issue 3) and option decoding ----------------------- */
enum fz_mode { FZ_MODE_NONE = 0, FZ_MODE_FAST, FZ_MODE_HARDENED, FZ_MODE_DEBUG, FZ_NMODES };
#define FZ_MODE_BIT(m) (1u << (m))
#define FZ_ALL_MODES ((1u << FZ_NMODES) - 1)

typedef struct fz_config {
    enum fz_mode mode;        /* FZ_MODE_NONE while the allocator has no mode key */
    uint32_t tcache;
    uint32_t quarantine_mb;   /* 0 unless the key exists */
    uint32_t sample_rate;     /* 0 unless the key exists */
    uint32_t decay_ms;
    bool fills_new;           /* debug mode, fill_new=1 or an ASan build: whole blocks get written */
    char text[256];           /* the string given to mh_set_options */
} fz_config_t;

/* One-time set-up: probes which option keys the allocator accepts, learns the
 * real size-class sizes, installs the report handler, mh_reset()s. */
void fz_init(void);
/* Consume FZ_OPTION_BYTES bytes and apply every known key (so no option
 * leaks from one input into the next). Call after mh_reset(). */
#define FZ_OPTION_BYTES 3
void fz_apply_options(fz_reader_t *r, fz_config_t *cfg);
/* background= for every input (the purge thread): 0 unless a harness sets it. */
extern int fz_background;
/* Whether the allocator accepted option key `key` at start. */
bool fz_key_supported(const char *key);

/* ---- sizes ---------------------------------------------------------------- */
#define FZ_SMALL_MAX ((size_t)128 << 10)       /* documented: larger is "large" */
#define FZ_MUST_FAIL ((size_t)1 << 47)         /* no mapping can be this large on x86-64 */
#define FZ_MUST_SUCCEED ((size_t)16 << 20)     /* anything up to this must be served */
#define FZ_LIVE_BUDGET ((size_t)96 << 20)      /* bound on requested bytes live at once */

enum fz_expect { FZ_OK = 0, FZ_MAYFAIL, FZ_FAILS };
/* Decode a size from any range: tiny, each class boundary (+-1), medium,
 * large, huge (may fail) and failing ones. */
size_t fz_size(fz_reader_t *r);
/* A size that must be served (no huge/failing), bounded by `max`. */
size_t fz_size_ok(fz_reader_t *r, size_t max);
static inline enum fz_expect fz_expect_size(size_t n) {
    return n >= FZ_MUST_FAIL ? FZ_FAILS : n <= FZ_MUST_SUCCEED ? FZ_OK : FZ_MAYFAIL;
}
size_t fz_align(fz_reader_t *r);                /* any value, valid or not */
extern size_t fz_class_sizes[80];               /* real class sizes, learnt at start */
extern unsigned fz_nclass_sizes;

/* ---- fill patterns ---------------------------------------------------------- */
/* Blocks up to FZ_FULL are filled and checked whole; bigger ones on a sample
 * (head, tail and a chunk of every stride) so multi-MiB and huge blocks cost
 * little and touch few pages. */
#define FZ_FULL 4096
void fz_fill(uint8_t *p, size_t n, uint32_t seed);
/* Check the samples of [0, n) that lie below clip (after a realloc only the
 * prefix survives); returns the first bad offset or SIZE_MAX. quick: only
 * the first and last 16 bytes below clip. */
size_t fz_verify(const uint8_t *p, size_t n, size_t clip, uint32_t seed, bool quick);
/* Check that [0, n) reads as zero (sampled above 64 KiB). */
size_t fz_verify_zero(const uint8_t *p, size_t n);
static inline uint8_t fz_pat(uint32_t seed, size_t i) {
    return (uint8_t)(seed + i * 0x9d + (i >> 8) * 0x3b + (i >> 16) * 0x17);
}

/* ---- known open allocator bugs --------------------------------------------- */
/* While an allocator bug found by these harnesses is open, the harness works
 * around it (so smoke runs keep finding new things) unless FUZZ_STRICT=1,
 * which turns every workaround off. Reproducers: fuzz/regressions/open/.
 * When a bug is fixed, delete its workaround (grep the enum name). */
enum fz_known {
    /* none open now */
    FZ_NKNOWN
};
bool fz_tolerate(enum fz_known k);

/* Whether the allocator's ASan hooks (src/track.h) poison memory in this
 * run, and whether this is an ASan build at all. ASan builds fuzz no huge
 * (may-fail) blocks: poisoning them writes size/8 bytes of shadow, and the
 * allocator grows large blocks by copying under ASan. AFL++ builds do. */
extern bool fz_asan_poisoning;
extern const bool fz_asan_build;

/* FUZZ_VERBOSE: 1 prints the set-up, 2 also every bug committed. */
extern int fz_verbose;

/* ---- reports ----------------------------------------------------------------- */
/* By default any report is a failure (a false alarm). fz_expect_report() arms
 * the handler for one bug: reports are then recorded for fz_reports(). */
#define FZ_MAX_REPORTS 8
typedef struct fz_report {
    const char *kind;
    const void *address, *block;
    size_t block_size;
    char message[512];
} fz_report_t;
void fz_expect_reports(bool on);
unsigned fz_reports(const fz_report_t **out);

/* Is [p, p+n) readable? (Guard pages, unmapped memory.) Never faults. */
bool fz_accessible(const void *p, size_t n);

/* Heap-wide checks: mh_check() == 0 and, when live >= 0, mh_stats live_blocks
 * equals it. */
void fz_check_heap(long live);
/* After everything is freed and mh_trim(0) ran in the only thread that has a
 * cache: nothing may stay mapped. */
void fz_check_empty_after_trim(void);

#endif
