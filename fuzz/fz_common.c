/* Common pieces of the fuzz harnesses: see fz.h. */
#include "fz.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

/* ---- failures ------------------------------------------------------------ */
void fz_fail(const char *file, int line, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "fuzz: FAILED: %s (%s:%d)\n", buf, file, line);
    fflush(stderr);
    /* AFL++ drops the target's stderr: FUZZ_FAIL_LOG keeps the message. */
    const char *log = getenv("FUZZ_FAIL_LOG");
    FILE *f = log ? fopen(log, "a") : NULL;
    if (f) {
        fprintf(f, "fuzz: FAILED: %s (%s:%d)\n", buf, file, line);
        fclose(f);
    }
    abort();
}

/* ---- options --------------------------------------------------------------- */
/* Keys of issue 3 that may not exist yet: probed once at start. The first
 * three decide what the mode claims to catch; the others only add checks
 * to whatever the mode set (so a mode's claims stay true). */
static const char *const probe_keys[] = {"mode=hardened", "quarantine_mb=0", "sample_rate=0", "random=1",
                                         "slab_guards=1", "poison=2", "fill_new=1", "check_every=0", "seed=1",
                                         "mesh=0"};
#define NPROBE (sizeof probe_keys / sizeof probe_keys[0])
static bool key_ok[NPROBE];

bool fz_key_supported(const char *key) {
    size_t n = strlen(key);
    for (size_t i = 0; i < NPROBE; i++)
        if (strncmp(probe_keys[i], key, n) == 0 && probe_keys[i][n] == '=') return key_ok[i];
    return true; /* the core keys always exist */
}

static void appendf(fz_config_t *c, const char *fmt, ...) {
    size_t len = strlen(c->text);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->text + len, sizeof c->text - len, fmt, ap);
    va_end(ap);
}

void fz_apply_options(fz_reader_t *r, fz_config_t *cfg) {
    static const uint32_t decay[4] = {0, 1, 50, 500};
    static const uint32_t fl[4] = {0, 25, 50, 100};
    static const uint32_t lc[4] = {0, 1, 4, 64};
    static const uint32_t qmb[4] = {0, 1, 4, 32};
    static const uint32_t rate[4] = {0, 1, 7, 100};
    static const char *const modes[4] = {"", "fast", "hardened", "debug"};
    uint8_t a = rd_u8(r), b = rd_u8(r), x = rd_u8(r);
    memset(cfg, 0, sizeof *cfg);
    /* The mode first: a preset may set the other keys. */
    if (key_ok[0]) {
        cfg->mode = (enum fz_mode)(1 + ((b >> 2) & 3) % 3);
        appendf(cfg, "mode=%s:", modes[cfg->mode]);
        /* The fourth value of the mode bits: fast mode with meshing. */
        if (key_ok[9] && ((b >> 2) & 3) == 3) appendf(cfg, "mesh=1:");
    }
    cfg->tcache = !(a & 1); /* on by default, as in production */
    cfg->decay_ms = decay[(a >> 1) & 3];
    appendf(cfg, "abort_on_error=0:tcache=%u:decay_ms=%u:float_pct=%u:miniheap_cache=%u:large_cache_mb=%u",
            cfg->tcache, cfg->decay_ms, fl[(a >> 3) & 3], (a >> 5) & 7, lc[b & 3]);
    /* The purge thread gives memory back on its own clock: on where runs
     * race anyway (fuzz_threads), off where an input must replay exactly. */
    appendf(cfg, ":background=%d", fz_background);
    if (key_ok[1]) {
        cfg->quarantine_mb = qmb[(b >> 4) & 3];
        appendf(cfg, ":quarantine_mb=%u", cfg->quarantine_mb);
    }
    if (key_ok[2]) {
        cfg->sample_rate = rate[(b >> 6) & 3];
        appendf(cfg, ":sample_rate=%u", cfg->sample_rate);
    }
    /* Extra checks, each on a bit of the third byte. */
    if (key_ok[3] && (x & 1)) appendf(cfg, ":random=1");
    if (key_ok[4] && (x & 2)) appendf(cfg, ":slab_guards=1");
    if (key_ok[5] && (x & 4)) appendf(cfg, ":poison=2");
    if (key_ok[6] && (x & 8)) appendf(cfg, ":fill_new=1");
    cfg->fills_new = cfg->mode == FZ_MODE_DEBUG || (key_ok[6] && (x & 8)) || fz_asan_build;
    if (key_ok[7] && (x & 0x30)) appendf(cfg, ":check_every=%u", (x & 0x30) == 0x10 ? 1u : (x & 0x30) == 0x20 ? 7u : 64u);
    /* Randomised slot choice and sampling from a fixed sequence, restarted
     * by every input: a crash replays the same way. */
    if (key_ok[8]) appendf(cfg, ":seed=%u", 1u + (x >> 6));
    int rc = mh_set_options(cfg->text);
    FZ_ASSERT(rc == 0, "mh_set_options(\"%s\") = %d", cfg->text, rc);
}

/* ---- sizes --------------------------------------------------------------------- */
size_t fz_class_sizes[80];
unsigned fz_nclass_sizes;

static void add_class_size(size_t n) {
    for (unsigned i = 0; i < fz_nclass_sizes; i++)
        if (fz_class_sizes[i] == n) return;
    if (fz_nclass_sizes < sizeof fz_class_sizes / sizeof fz_class_sizes[0]) fz_class_sizes[fz_nclass_sizes++] = n;
}

/* The documented classes (16..128 step 16, then 4 per doubling up to 128
 * KiB), and the sizes the allocator really serves for them (it may round a
 * class up): both are boundaries worth hitting. */
static void learn_classes(void) {
    size_t nominal[80];
    unsigned n = 0;
    for (size_t s = 16; s <= 128; s += 16) nominal[n++] = s;
    for (size_t p = 128; p < FZ_SMALL_MAX; p *= 2)
        for (size_t k = 5; k <= 8; k++) nominal[n++] = p * k / 4;
    for (unsigned i = 0; i < n; i++) {
        add_class_size(nominal[i]);
        void *q = mh_malloc(nominal[i]);
        if (q) {
            add_class_size(mh_malloc_usable_size(q));
            mh_free(q);
        }
    }
}

size_t fz_size(fz_reader_t *r) {
    static const size_t huge[8] = {
        (size_t)1 << 30, (size_t)3 << 30, (size_t)1 << 34, (size_t)1 << 40,
        (size_t)1 << 46, ((size_t)1 << 47) - ((size_t)1 << 30), ((size_t)1 << 47) - ((size_t)1 << 30) + 1,
        ((size_t)1 << 47) - 1};
    static const size_t failing[8] = {
        SIZE_MAX, SIZE_MAX - 15, (size_t)1 << 62, (size_t)PTRDIFF_MAX,
        (size_t)PTRDIFF_MAX + 1, (size_t)1 << 47, ((size_t)1 << 47) + 1, SIZE_MAX - 4095};
    uint8_t sel = rd_u8(r);
    switch (sel & 15) {
    case 0: case 1: case 2: /* tiny */
        return rd_u8(r) % 49;
    case 3: case 4: case 5: { /* a class boundary, +-1 or 2 */
        uint8_t a = rd_u8(r);
        size_t c = fz_class_sizes[a % fz_nclass_sizes];
        int d = (int)(rd_u8(r) % 5) - 2; /* -2..+2 */
        return (size_t)((ptrdiff_t)c + d);
    }
    case 6: case 7: /* medium */
        return 129 + rd_u16(r) % (16384 - 128);
    case 8: /* up to the small/large border and a bit over */
        return rd_u32(r) % (FZ_SMALL_MAX + 16384);
    case 9: case 10: { /* large, often at page boundaries */
        uint32_t v = rd_u32(r);
        size_t n = FZ_SMALL_MAX + 1 + v % ((size_t)4 << 20);
        if (v & 0x80000000u) n = (n & ~(size_t)4095) + (size_t)((int)(v >> 24 & 3) - 1);
        return n;
    }
    case 11: /* large border exactly */
        return FZ_SMALL_MAX + (rd_u8(r) % 3) - 1;
    case 12: /* huge: may fail */
        return huge[rd_u8(r) & 7];
    case 13: /* must fail */
        return failing[rd_u8(r) & 7];
    default: /* raw */
        return rd_u16(r);
    }
}

size_t fz_size_ok(fz_reader_t *r, size_t max) {
    size_t n = fz_size(r);
    return n <= max ? n : n % (max + 1);
}

size_t fz_align(fz_reader_t *r) {
    uint8_t a = rd_u8(r);
    switch (a >> 6) {
    case 0: case 1: return (size_t)1 << (a % 21);               /* 1 .. 1 MiB */
    case 2: return (size_t)1 << (a % 64);                       /* up to 2^63 */
    default: {                                                  /* not a power of two, or 0 */
        static const size_t odd[8] = {0, 3, 24, 48, 4097, 100000, ((size_t)1 << 62) + 1, SIZE_MAX};
        return odd[a & 7];
    }
    }
}

/* ---- fill patterns ------------------------------------------------------------- */
/* One chunk per page up to 256 KiB; then at most ~64 chunks, so a multi-MiB
 * or huge block costs a few dozen page faults, not thousands. */
static size_t stride_for(size_t to) {
    if (to <= ((size_t)256 << 10)) return 4096;
    return ((to >> 6) + 4095) & ~(size_t)4095;
}

#define EDGE 256
#define CHUNK 32

/* Run BODY on each sampled interval [A, B) of [0, n): all of it up to
 * FZ_FULL, else the head, the tail and a chunk at every stride. */
#define FOR_SAMPLES(n, A, B, BODY)                                                          \
    do {                                                                                    \
        size_t t_ = (n);                                                                    \
        if (t_ <= FZ_FULL) {                                                                \
            size_t A = 0, B = t_;                                                           \
            BODY;                                                                           \
        } else {                                                                            \
            size_t st_ = stride_for(t_);                                                    \
            { size_t A = 0, B = EDGE; BODY; }                                               \
            for (size_t o_ = st_; o_ + CHUNK <= t_ - EDGE; o_ += st_) {                    \
                size_t A = o_, B = o_ + CHUNK; BODY;                                        \
            }                                                                               \
            { size_t A = t_ - EDGE, B = t_; BODY; }                                         \
        }                                                                                   \
    } while (0)

void fz_fill(uint8_t *p, size_t n, uint32_t seed) {
    if (!n) return;
    FOR_SAMPLES(n, a, b, { for (size_t i = a; i < b; i++) p[i] = fz_pat(seed, i); });
}

size_t fz_verify(const uint8_t *p, size_t n, size_t clip, uint32_t seed, bool quick) {
    if (!n || !clip) return SIZE_MAX;
    if (clip > n) clip = n;
    if (quick) {
        size_t h = clip < 16 ? clip : 16;
        for (size_t i = 0; i < h; i++) if (p[i] != fz_pat(seed, i)) return i;
        for (size_t i = clip - h; i < clip; i++) if (p[i] != fz_pat(seed, i)) return i;
        return SIZE_MAX;
    }
    FOR_SAMPLES(n, a, b, {
        if (b > clip) b = clip;
        for (size_t i = a; i < b; i++) if (p[i] != fz_pat(seed, i)) return i;
    });
    return SIZE_MAX;
}

size_t fz_verify_zero(const uint8_t *p, size_t n) {
    if (n <= ((size_t)64 << 10)) {
        for (size_t i = 0; i < n; i++) if (p[i]) return i;
        return SIZE_MAX;
    }
    FOR_SAMPLES(n, a, b, { for (size_t i = a; i < b; i++) if (p[i]) return i; });
    return SIZE_MAX;
}

/* ---- reports ------------------------------------------------------------------------ */
static _Atomic int expecting;
static fz_report_t reports[FZ_MAX_REPORTS];
static _Atomic unsigned nreports;

static void on_report(const mh_error_t *e, void *arg) {
    (void)arg;
    if (!expecting)
        FZ_FAIL("false alarm: unexpected report of kind %s:\n%s", e->kind ? e->kind : "(null)",
                e->message ? e->message : "(no message)");
    unsigned i = nreports++;
    if (i >= FZ_MAX_REPORTS) return;
    fz_report_t *r = &reports[i];
    r->kind = e->kind;
    r->address = e->address;
    r->block = e->block;
    r->block_size = e->block_size;
    snprintf(r->message, sizeof r->message, "%s", e->message ? e->message : "");
}

void fz_expect_reports(bool on) {
    nreports = 0;
    expecting = on;
}

unsigned fz_reports(const fz_report_t **out) {
    *out = reports;
    return nreports;
}

/* ---- memory probing --------------------------------------------------------------- */
bool fz_accessible(const void *p, size_t n) {
    /* process_vm_readv on ourselves reports EFAULT instead of faulting. */
    char buf[64];
    while (n) {
        size_t k = n < sizeof buf ? n : sizeof buf;
        struct iovec local = {buf, k}, remote = {(void *)p, k};
        long got = syscall(SYS_process_vm_readv, (long)getpid(), &local, 1L, &remote, 1L, 0L);
        if (got != (long)k) return false;
        p = (const char *)p + k;
        n -= k;
    }
    return true;
}

/* ---- ASan ---------------------------------------------------------------------------- */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FZ_ASAN 1
#endif
#endif
#ifdef FZ_ASAN
#include <sanitizer/asan_interface.h>
/* Defaults for every run of an ASan harness (ASAN_OPTIONS adds to them and
 * wins): the allocator's own poisoning (src/track.h) stays on. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "detect_leaks=0"; }
#endif
bool fz_asan_poisoning;
#ifdef FZ_ASAN
const bool fz_asan_build = true;
#else
const bool fz_asan_build = false;
#endif

static void detect_poisoning(void) {
#ifdef FZ_ASAN
    static char probe[64] __attribute__((aligned(64)));
    __asan_poison_memory_region(probe, sizeof probe);
    fz_asan_poisoning = __asan_address_is_poisoned(probe) != 0;
    __asan_unpoison_memory_region(probe, sizeof probe);
#endif
}

/* ---- known bugs ------------------------------------------------------------------------ */
static bool strict;

bool fz_tolerate(enum fz_known k) {
    (void)k;
    return !strict;
}

/* ---- heap checks ---------------------------------------------------------------------- */
void fz_check_heap(long live) {
    int rc = mh_check();
    FZ_ASSERT(rc == 0, "mh_check() = %d", rc);
    if (live >= 0) {
        mh_stats_t st;
        mh_stats(&st);
        FZ_ASSERT(st.live_blocks == (size_t)live, "mh_stats live_blocks = %zu, shadow has %ld",
                  st.live_blocks, live);
        FZ_ASSERT(st.small_blocks + st.large_blocks == st.live_blocks, "stats: %zu small + %zu large != %zu live",
                  st.small_blocks, st.large_blocks, st.live_blocks);
    }
}

void fz_check_empty_after_trim(void) {
    mh_stats_t st;
    mh_stats(&st);
    FZ_ASSERT(st.live_blocks == 0 && st.live_bytes == 0, "after freeing all: %zu live blocks, %zu bytes",
              st.live_blocks, st.live_bytes);
    FZ_ASSERT(st.miniheaps == 0 && st.slabs == 0 && st.mapped_bytes == 0,
              "after freeing all and mh_trim: %zu miniheaps, %zu slabs, %zu bytes still mapped",
              st.miniheaps, st.slabs, st.mapped_bytes);
}

/* ---- set-up ------------------------------------------------------------------------------ */
int fz_verbose;
int fz_background;

void fz_init(void) {
    static int done;
    if (done) return;
    done = 1;
    fz_verbose = getenv("FUZZ_VERBOSE") ? atoi(getenv("FUZZ_VERBOSE")) : 0;
    mh_set_error_handler(on_report, NULL);
    strict = getenv("FUZZ_STRICT") && atoi(getenv("FUZZ_STRICT")) > 0;
    detect_poisoning();
    /* Probe the keys of issue 3 one at a time; an unknown key makes
     * mh_set_options warn once on stderr and return -1. */
    for (size_t i = 0; i < NPROBE; i++) key_ok[i] = mh_set_options(probe_keys[i]) == 0;
    if (mh_set_options("abort_on_error=0") != 0) FZ_FAIL("abort_on_error=0 rejected");
    /* Learn the real class sizes where usable sizes show them (no canaries). */
    if (key_ok[0]) (void)mh_set_options("mode=fast");
    learn_classes();
    mh_reset();
    if (fz_verbose)
        for (size_t i = 0; i < NPROBE; i++) fprintf(stderr, "fuzz: option %s: %s\n", probe_keys[i], key_ok[i] ? "accepted" : "not known");
    if (fz_verbose)
        fprintf(stderr, "fuzz: %u class sizes; ASan poisoning by the allocator: %s\n", fz_nclass_sizes,
                fz_asan_poisoning ? "on" : "off");
}
