/* The operation-sequence engine: decodes an input into calls of the mh_* API
 * over a table of slots, keeps a shadow model and checks after every step.
 * With bugs on (fuzz_bugs), an operation may also commit a heap bug from the
 * table below and assert that exactly the right report comes out.
 *
 * Input: FZ_OPTION_BYTES option bytes, then operations, each an opcode byte
 * and its arguments (see the OP_ enum); a short input reads as zeros.
 */
#include "fz_seq.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#define NSLOTS 32
#define MAX_OPS 512
#define MAX_HUGE 2          /* huge (may-fail) blocks live at once */

enum how { H_MALLOC, H_CALLOC, H_REALLOC, H_POSIX_MEMALIGN, H_ALIGNED_ALLOC, H_MEMALIGN, H_VALLOC, H_PVALLOC };
static const char *const how_name[] = {"malloc", "calloc", "realloc", "posix_memalign",
                                       "aligned_alloc", "memalign", "valloc", "pvalloc"};

typedef struct slot {
    uint8_t *p;        /* NULL: empty */
    size_t req;        /* size requested */
    size_t usable;     /* mh_malloc_usable_size when allocated */
    size_t filled;     /* pattern covers the samples of [0, filled) */
    size_t align;      /* alignment the block has (>= 16) */
    size_t asked;      /* alignment passed to aligned_alloc (free_aligned_sized wants it back) */
    uint32_t seed;
    uint8_t how;
} slot_t;

typedef struct seq {
    slot_t s[NSLOTS];
    long live;
    size_t live_req;   /* requested bytes of live must-succeed blocks */
    unsigned huge;
    unsigned rr;       /* slot fully verified at the next step */
    uint32_t next_seed;
    bool bugs;
    bool stop;         /* a memory-corrupting bug was committed */
    fz_config_t cfg;
    unsigned op_index;
} seq_t;

/* ---- shadow bookkeeping ------------------------------------------------------ */
static bool is_huge(size_t n) { return n > FZ_MUST_SUCCEED; }

static void verify_slot(seq_t *q, int i, bool quick, const char *when) {
    slot_t *s = &q->s[i];
    if (!s->p) return;
    size_t bad = fz_verify(s->p, s->filled, s->filled, s->seed, quick);
    if (bad != SIZE_MAX)
        FZ_FAIL("op %u (%s): slot %d: %zu-byte block %p from %s lost its contents at offset %zu "
                "(0x%02x, expected 0x%02x)", q->op_index, when, i, s->req, (void *)s->p, how_name[s->how], bad,
                s->p[bad], fz_pat(s->seed, bad));
}

/* In a slab: at most 128 KiB, and not aligned beyond a 64 KiB unit (those
 * get a mapping of their own). */
static bool in_slab(const slot_t *s) { return s->usable <= FZ_SMALL_MAX && s->align <= 65536; }

static void forget(seq_t *q, int i) {
    slot_t *s = &q->s[i];
    if (!s->p) return;
    q->live--;
    if (is_huge(s->req)) q->huge--;
    else q->live_req -= s->req;
    memset(s, 0, sizeof *s);
}

/* Record a block just handed out: check and fill it. */
static void adopt(seq_t *q, int i, void *p, size_t req, size_t align, enum how how, bool zeroed, size_t asked) {
    FZ_ASSERT(q->s[i].p == NULL, "adopt into a full slot");
    uint8_t *b = p;
    size_t need_align = align > 16 ? align : 16;
    FZ_ASSERT(((uintptr_t)b & (need_align - 1)) == 0, "op %u: %s(%zu) = %p is not aligned to %zu", q->op_index,
              how_name[how], req, p, need_align);
    size_t u = mh_malloc_usable_size(p);
    FZ_ASSERT(u >= req, "op %u: %s(%zu) = %p: usable size %zu < request", q->op_index, how_name[how], req, p, u);
    if (how == H_PVALLOC) {
        size_t r = (req + 4095) & ~(size_t)4095;
        FZ_ASSERT(u >= (r ? r : 4096), "op %u: pvalloc(%zu): usable %zu < whole pages", q->op_index, req, u);
    }
    /* No two live blocks overlap (in what may legally be written). */
    for (int j = 0; j < NSLOTS; j++) {
        slot_t *o = &q->s[j];
        if (!o->p || j == i) continue;
        if (b < o->p + o->usable && o->p < b + u)
            FZ_FAIL("op %u: %s(%zu) = [%p, +%zu) overlaps live slot %d [%p, +%zu) from %s(%zu)", q->op_index,
                    how_name[how], req, p, u, j, (void *)o->p, o->usable, how_name[o->how], o->req);
    }
    if (zeroed) {
        size_t bad = fz_verify_zero(b, req);
        FZ_ASSERT(bad == SIZE_MAX, "op %u: calloc'd block %p of %zu bytes is not zero at offset %zu", q->op_index,
                  p, req, bad);
    }
    slot_t *s = &q->s[i];
    s->p = b;
    s->req = req;
    s->usable = u;
    s->filled = req;
    s->align = need_align;
    s->asked = asked;
    s->how = (uint8_t)how;
    s->seed = q->next_seed++ * 0x9e3779b1u;
    fz_fill(b, req, s->seed);
    q->live++;
    if (is_huge(req)) q->huge++;
    else q->live_req += req;
}

/* Would a request of n bytes be over the harness's memory bound? */
static bool over_budget(seq_t *q, size_t n, size_t freeing) {
    if (fz_expect_size(n) == FZ_FAILS) return false;
    /* A huge block that is filled when handed out would really take its
     * size in memory (up to 128 TiB): only sampled blocks stay cheap. */
    if (is_huge(n) && q->cfg.fills_new) return true;
    if (is_huge(n)) return q->huge >= MAX_HUGE;
    return q->live_req - freeing + n > FZ_LIVE_BUDGET;
}

/* A NULL result: allowed only if the request may fail, and then with ENOMEM. */
static void check_null(seq_t *q, const char *what, size_t n, enum fz_expect e, int err, int want_err) {
    FZ_ASSERT(e != FZ_OK, "op %u: %s(%zu) returned NULL (errno %d) for a request that must succeed", q->op_index,
              what, n, err);
    FZ_ASSERT(err == want_err, "op %u: %s(%zu) failed with errno %d, expected %d", q->op_index, what, n, err,
              want_err);
}

static void check_nonnull(seq_t *q, const char *what, size_t n, enum fz_expect e, void *p) {
    FZ_ASSERT(e != FZ_FAILS, "op %u: %s(%zu) = %p for a request that cannot be served", q->op_index, what, n, p);
}

/* Free a block the way C23 pairs them: free_sized for malloc, calloc and
 * realloc; free_aligned_sized for aligned_alloc; plain free for the others
 * (and for every block when variant is 0). */
static void free_paired(const slot_t *s, void *p, int variant) {
    if (variant % 3 == 0) { mh_free(p); return; }
    switch (s->how) {
    case H_MALLOC: case H_CALLOC: case H_REALLOC: mh_free_sized(p, s->req); break;
    case H_ALIGNED_ALLOC: mh_free_aligned_sized(p, s->asked, s->req); break;
    default: mh_free(p); break;
    }
}

static void release(seq_t *q, int i, int variant) {
    slot_t *s = &q->s[i];
    if (!s->p) {
        mh_free(NULL);
        return;
    }
    verify_slot(q, i, false, "before free");
    slot_t old = *s;
    forget(q, i);
    free_paired(&old, old.p, variant);
}

/* ---- allocation ops ------------------------------------------------------------ */
static void op_malloc(seq_t *q, int i, size_t n) {
    enum fz_expect e = fz_expect_size(n);
    if (q->s[i].p) release(q, i, 0);
    if (over_budget(q, n, 0)) return;
    errno = 0;
    void *p = mh_malloc(n);
    int err = errno;
    if (!p) { check_null(q, "malloc", n, e, err, ENOMEM); return; }
    check_nonnull(q, "malloc", n, e, p);
    adopt(q, i, p, n, 16, H_MALLOC, false, 0);
}

static void op_calloc(seq_t *q, int i, fz_reader_t *r) {
    uint8_t m = rd_u8(r);
    size_t n = fz_size(r), count, size;
    switch (m & 3) {
    case 0: count = 1; size = n; break;
    case 1: count = n; size = 1; break;
    case 2: count = 2 + (m >> 2) % 15; size = n; break;             /* may overflow */
    default: {
        static const size_t big[4] = {(size_t)1 << 32, (size_t)1 << 33, SIZE_MAX / 2 + 1, (size_t)1 << 24};
        count = big[(m >> 2) & 3];
        size = n;
    }
    }
    size_t total;
    bool ovf = __builtin_mul_overflow(count, size, &total);
    enum fz_expect e = ovf ? FZ_FAILS : fz_expect_size(total);
    if (q->s[i].p) release(q, i, 0);
    if (!ovf && over_budget(q, total, 0)) return;
    errno = 0;
    void *p = mh_calloc(count, size);
    int err = errno;
    if (!p) { check_null(q, "calloc", ovf ? SIZE_MAX : total, e, err, ENOMEM); return; }
    check_nonnull(q, "calloc", total, e, p);
    adopt(q, i, p, total, 16, H_CALLOC, true, 0);
}

static void op_realloc(seq_t *q, int i, size_t n, bool array, uint8_t m) {
    slot_t *s = &q->s[i];
    size_t count = 1, size = n;
    if (array) {
        count = 1 + (m & 7);
        if (m & 8) count = (size_t)1 << 40;
        size = n;
        if (__builtin_mul_overflow(count, size, &n)) n = SIZE_MAX; /* overflow: must fail */
    }
    bool ovf = array && count > 1 && size && n / count != size;
    enum fz_expect e = ovf ? FZ_FAILS : fz_expect_size(n);
    if (!s->p) { /* realloc(NULL, n) is malloc(n) */
        if (over_budget(q, n, 0)) return;
        errno = 0;
        void *p = array ? mh_reallocarray(NULL, count, size) : mh_realloc(NULL, n);
        int err = errno;
        if (!p) { check_null(q, "realloc(NULL)", n, e, err, ENOMEM); return; }
        check_nonnull(q, "realloc(NULL)", n, e, p);
        adopt(q, i, p, n, 16, H_REALLOC, false, 0);
        return;
    }
    verify_slot(q, i, false, "before realloc");
    if (n == 0 && !ovf) { /* glibc: frees and returns NULL */
        void *p = s->p;
        forget(q, i);
        void *r = array ? mh_reallocarray(p, count, size) : mh_realloc(p, 0);
        FZ_ASSERT(r == NULL, "op %u: realloc(%p, 0) = %p, expected NULL (freed)", q->op_index, p, r);
        return;
    }
    if (fz_expect_size(n) != FZ_FAILS) { /* memory bound, counting the block given up */
        if (is_huge(n) ? q->huge - is_huge(s->req) >= MAX_HUGE || q->cfg.fills_new
                       : q->live_req - (is_huge(s->req) ? 0 : s->req) + n > FZ_LIVE_BUDGET)
            return;
    }
    slot_t old = *s;
    errno = 0;
    void *p = array ? mh_reallocarray(old.p, count, size) : mh_realloc(old.p, n);
    int err = errno;
    if (!p) {
        check_null(q, "realloc", n, e, err, ENOMEM);
        verify_slot(q, i, false, "after a failed realloc");
        size_t u = mh_malloc_usable_size(old.p);
        FZ_ASSERT(u >= old.req, "op %u: after a failed realloc the block %p has usable size %zu < %zu",
                  q->op_index, (void *)old.p, u, old.req);
        return;
    }
    check_nonnull(q, "realloc", n, e, p);
    /* The contents survive up to the smaller of the two requested sizes. */
    size_t keep = old.req < n ? old.req : n;
    size_t bad = fz_verify(p, old.filled, keep, old.seed, false);
    if (bad != SIZE_MAX)
        FZ_FAIL("op %u: realloc(%p [%zu bytes from %s], %zu) = %p lost the contents at offset %zu (0x%02x, "
                "expected 0x%02x)", q->op_index, (void *)old.p, old.req, how_name[old.how], n, p, bad,
                ((uint8_t *)p)[bad], fz_pat(old.seed, bad));
    forget(q, i);
    uint32_t seed = old.seed;
    adopt(q, i, p, n, 16, H_REALLOC, false, 0); /* refills the whole block */
    q->s[i].seed = seed;
    q->next_seed--;
    fz_fill(p, n, seed);
}

/* posix_memalign, aligned_alloc, memalign, valloc, pvalloc. */
static void op_aligned(seq_t *q, int i, int which, size_t align, size_t n) {
    if (q->s[i].p) release(q, i, 0);
    enum fz_expect e = fz_expect_size(n);
    size_t want = align; /* alignment the result must have */
    int bad_err = 0;     /* set when the call must fail with this error */
    bool pow2 = align && !(align & (align - 1));
    enum how how = H_POSIX_MEMALIGN;
    switch (which) {
    case 0:
        how = H_POSIX_MEMALIGN;
        if (align < sizeof(void *) || !pow2) bad_err = EINVAL;
        break;
    case 1:
        how = H_ALIGNED_ALLOC;
        if (!pow2) bad_err = EINVAL;
        break;
    case 2:
        how = H_MEMALIGN;
        if (!pow2 && align) {
            if (align > ((size_t)1 << 62)) bad_err = EINVAL;
            else { want = 1; while (want < align) want <<= 1; }
        }
        break;
    case 3:
        how = H_VALLOC;
        want = 4096;
        break;
    default:
        how = H_PVALLOC;
        want = 4096;
        if (n > SIZE_MAX - 4095) e = FZ_FAILS;
        break;
    }
    if (!bad_err && want >= FZ_MUST_FAIL) e = FZ_FAILS;
    else if (!bad_err && want > ((size_t)1 << 30) && e == FZ_OK) e = FZ_MAYFAIL;
    size_t charge = how == H_PVALLOC && n <= FZ_MUST_SUCCEED ? ((n + 4095) & ~(size_t)4095) : n;
    if (!bad_err && over_budget(q, charge, 0)) return;
    void *p = (void *)0x1;
    errno = 0;
    int rc = 0;
    switch (how) {
    case H_POSIX_MEMALIGN: {
        void *out = (void *)0x1;
        rc = mh_posix_memalign(&out, align, n);
        FZ_ASSERT(rc == 0 || rc == EINVAL || rc == ENOMEM, "posix_memalign returned %d", rc);
        FZ_ASSERT(rc == 0 || out == (void *)0x1, "op %u: failed posix_memalign wrote *out", q->op_index);
        p = rc ? NULL : out;
        break;
    }
    case H_ALIGNED_ALLOC: p = mh_aligned_alloc(align, n); rc = errno; break;
    case H_MEMALIGN: p = mh_memalign(align, n); rc = errno; break;
    case H_VALLOC: p = mh_valloc(n); rc = errno; break;
    default: p = mh_pvalloc(n); rc = errno; break;
    }
    char what[96];
    snprintf(what, sizeof what, "%s(align %zu)", how_name[how], align);
    if (bad_err) {
        FZ_ASSERT(p == NULL, "op %u: %s(%zu) = %p, expected EINVAL for the alignment", q->op_index, what, n, p);
        FZ_ASSERT(rc == bad_err, "op %u: %s(%zu) failed with %d, expected %d", q->op_index, what, n, rc, bad_err);
        return;
    }
    if (!p) { check_null(q, what, n, e, rc, ENOMEM); return; }
    check_nonnull(q, what, n, e, p);
    adopt(q, i, p, n, want ? want : 1, how, false, align);
}

/* ---- bug injection ----------------------------------------------------------------- */
typedef struct bug_ctx {
    void *bad;          /* the pointer the report must name (exact_addr) */
    bool stays_live;    /* the slot's block is still live afterwards */
    bool freed_slot;    /* the slot was freed as part of the bug */
    bool maybe_freed;   /* size-mismatch: whether the block was freed is the allocator's choice */
} bug_ctx_t;

/* What block a bug needs (bits). */
enum { NEED_ANY = 0, NEED_SMALL = 1, NEED_LARGE = 2, NEED_UNSAMPLED = 4 /* only when sample_rate=0 */ };
typedef unsigned need_t;

typedef struct bug {
    const char *name;
    const char *kind;    /* the report kind that must come out */
    bool enabled;        /* compile-time default; FUZZ_BUGS=+name,-name at run time */
    uint32_t modes;      /* modes that claim to catch it (FZ_MODE_NONE: no mode key yet) */
    need_t need;
    bool write;          /* corrupts memory: the sequence ends after it */
    bool exact_addr;     /* the report's address must be the bad pointer */
    /* Commit the bug on slot i; false when it does not apply (nothing done). */
    bool (*commit)(seq_t *q, int i, uint8_t v, bug_ctx_t *c);
    const char *alias;   /* while open allocator bug `known` (enum fz_known) is tolerated, */
    int known;           /* this kind is accepted too (FUZZ_STRICT=1: no more) */
} bug_t;

static uint8_t foreign_static[64];

static void *foreign_pointer(uint8_t v, void *stack) {
    static void *page, *reserved;
    static void *libc_block;
    if (!page) page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!reserved) reserved = mmap(NULL, 1 << 16, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (!libc_block) libc_block = malloc(64);
    switch (v % 8) {
    case 0: return stack;
    case 1: return foreign_static + 16;
    case 2: return libc_block;
    case 3: return page;
    case 4: return (void *)(uintptr_t)0x10000;
    /* Mapped by nobody else, so never miniheap's. (It was 0x7e0000000000,
     * "nowhere, probably": a block the harness aligned to 2^40 sat there.) */
    case 5: return (uint8_t *)reserved + 4096 * (1 + v % 8);
    case 6: return (void *)(uintptr_t)0xffff800000001000ull; /* kernel half */
    default: return (void *)(uintptr_t)(0x1000 + 16 * v);
    }
}

/* An offset inside the block, not its start; 0 when it has no inside. */
static size_t interior_offset(const slot_t *s, uint8_t v) {
    size_t lim = s->usable < 65536 ? s->usable : 65536;
    return lim < 2 ? 0 : 1 + ((size_t)v * 37) % (lim - 1);
}

/* A free-like call on p (for a block like s): free, or its sized pairing. */
static void free_variant(const slot_t *s, void *p, uint8_t v) { free_paired(s, p, v % 2); }

static bool bug_double_free(seq_t *q, int i, uint8_t v, bug_ctx_t *c) {
    slot_t *s = &q->s[i];
    slot_t old = *s;
    release(q, i, v / 3);
    c->freed_slot = true;
    fz_expect_reports(true);
    c->bad = old.p;
    free_variant(&old, old.p, v); /* at once: no allocation may reuse the slot first */
    return true;
}

static bool bug_free_interior(seq_t *q, int i, uint8_t v, bug_ctx_t *c) {
    slot_t *s = &q->s[i];
    if (!interior_offset(s, v)) return false;
    c->bad = s->p + interior_offset(s, v);
    c->stays_live = true;
    fz_expect_reports(true);
    free_variant(s, c->bad, v >> 5);
    return true;
}

static bool bug_free_foreign(seq_t *q, int i, uint8_t v, bug_ctx_t *c) {
    int on_stack[4] = {0};
    (void)q;
    (void)i;
    c->bad = foreign_pointer(v, on_stack + 2);
    c->stays_live = true;
    fz_expect_reports(true);
    free_variant(&q->s[i], c->bad, v >> 5);
    return true;
}

static bool bug_realloc_bad(seq_t *q, int i, uint8_t v, bug_ctx_t *c) {
    int on_stack[4] = {0};
    slot_t *s = &q->s[i];
    size_t n = 1 + (size_t)v * 1021; /* never 0: realloc(p, 0) is a free */
    switch (v % 3) {
    case 0: { /* freed just before */
        void *p = s->p;
        release(q, i, v);
        c->freed_slot = true;
        c->bad = p;
        break;
    }
    case 1:
        if (!interior_offset(s, v)) return false;
        c->bad = s->p + interior_offset(s, v);
        c->stays_live = true;
        break;
    default: c->bad = foreign_pointer(v / 3, on_stack + 1); c->stays_live = true; break;
    }
    fz_expect_reports(true);
    void *r = mh_realloc(c->bad, n);
    FZ_ASSERT(r == NULL, "realloc of a bad pointer %p returned %p", c->bad, r);
    return true;
}

static bool bug_usable_bad(seq_t *q, int i, uint8_t v, bug_ctx_t *c) {
    int on_stack[4] = {0};
    slot_t *s = &q->s[i];
    switch (v % 3) {
    case 0: { void *p = s->p; release(q, i, v); c->freed_slot = true; c->bad = p; break; }
    case 1:
        if (!interior_offset(s, v)) return false;
        c->bad = s->p + interior_offset(s, v);
        c->stays_live = true;
        break;
    default: c->bad = foreign_pointer(v / 3, on_stack + 1); c->stays_live = true; break;
    }
    fz_expect_reports(true);
    size_t u = mh_malloc_usable_size(c->bad);
    FZ_ASSERT(u == 0, "malloc_usable_size of a bad pointer %p returned %zu", c->bad, u);
    return true;
}

static bool bug_size_over(seq_t *q, int i, uint8_t v, bug_ctx_t *c) {
    slot_t *s = &q->s[i];
    if (s->how != H_MALLOC && s->how != H_CALLOC && s->how != H_REALLOC && s->how != H_ALIGNED_ALLOC) return false;
    c->bad = s->p;
    c->maybe_freed = true;
    fz_expect_reports(true);
    size_t wrong = s->usable + 1 + (size_t)v * (s->usable > FZ_SMALL_MAX ? 4096 : 1);
    if (s->how == H_ALIGNED_ALLOC) mh_free_aligned_sized(s->p, s->asked, wrong);
    else mh_free_sized(s->p, wrong);
    return true;
}

static bool bug_size_under(seq_t *q, int i, uint8_t v, bug_ctx_t *c) {
    slot_t *s = &q->s[i];
    if (s->req < 2 || (s->how != H_MALLOC && s->how != H_CALLOC && s->how != H_REALLOC)) return false;
    c->bad = s->p;
    c->maybe_freed = true;
    fz_expect_reports(true);
    mh_free_sized(s->p, (size_t)v % s->req);
    return true;
}

/* What makes the allocator look at a corrupted block. */
static void trigger(seq_t *q, int i, uint8_t v) {
    slot_t *s = &q->s[i];
    switch (v % 4) {
    case 0: if (s->p) mh_free(s->p); break;
    case 1: if (s->p) (void)mh_realloc(s->p, s->req + 1); break;
    case 2: if (s->p) (void)mh_malloc_usable_size(s->p); break;
    default: break;
    }
    (void)mh_check();
}

/* Flip bytes so the value differs from whatever guard was there. The raw
 * writes are not instrumented: a bug the harness commits on purpose must be
 * caught by miniheap, not by ASan. */
__attribute__((no_sanitize("address", "undefined"))) static void flip(uint8_t *p, size_t n) {
    for (size_t k = 0; k < n; k++) ((volatile uint8_t *)p)[k] ^= 0xa5;
}

static bool bug_overflow(seq_t *q, int i, uint8_t v, bug_ctx_t *c) {
    slot_t *s = &q->s[i];
    size_t k = 1 + v % 8;
    uint8_t *at = s->p + s->usable; /* past what may legally be written */
    if (!fz_accessible(at, k)) return false; /* a guard page: would fault, i.e. caught */
    c->bad = at;
    flip(at, k);
    fz_expect_reports(true);
    trigger(q, i, v >> 3);
    return true;
}

static bool bug_underflow(seq_t *q, int i, uint8_t v, bug_ctx_t *c) {
    slot_t *s = &q->s[i];
    size_t k = 1 + v % 8;
    if (!fz_accessible(s->p - k, k)) return false;
    c->bad = s->p - k;
    flip(s->p - k, k);
    fz_expect_reports(true);
    trigger(q, i, v >> 3);
    return true;
}

static bool bug_uaf(seq_t *q, int i, uint8_t v, bug_ctx_t *c) {
    slot_t *s = &q->s[i];
    if (s->req == 0) return false;
    uint8_t *p = s->p;
    /* Within the first 32 bytes: what hardened mode poisons (debug: all). */
    size_t off = ((size_t)v * 131) % (s->req < 32 ? s->req : 32);
    /* No giving back from the free to the check: a page of the block's slab
     * purged in between reads as zero, its poison gone, and the write is
     * not seen. With decay_ms 0..500 that depended on whether a pass fell
     * due right then (the fuzzer found it: a 6167-byte block, once in some
     * 10^5 inputs). 600000 is the option's maximum: 3600000 was refused,
     * so nothing was held and the bug came back (an extended campaign). An
     * allocator that cannot hold it gets no such bug. */
    if (mh_set_options("decay_ms=600000") != 0) return false;
    mh_stats_t before, after;
    mh_stats(&before);
    release(q, i, 0);
    mh_stats(&after);
    c->freed_slot = true;
    if (!fz_accessible(p + off, 1)) {
        /* made inaccessible: a write would fault */
    } else if (after.slabs < before.slabs) {
        /* Its slab went back to the miniheap with it (no cache, no
         * quarantine, its last block): no freed block holds the poison. */
    } else {
        c->bad = p + off;
        flip(p + off, 1);
        fz_expect_reports(true);
        (void)mh_check();
    }
    char opt[32];
    snprintf(opt, sizeof opt, "decay_ms=%u", q->cfg.decay_ms);
    FZ_ASSERT(mh_set_options(opt) == 0, "mh_set_options(\"%s\") failed", opt);
    return true;
}

/* Defaults: every entry the allocator catches in the modes listed. An entry
 * that it does not catch yet starts at 0 here (one-line change to turn on);
 * -DFZ_BUG_<NAME>=0|1 or FUZZ_BUGS=+name,-name override. Modes say where
 * each must be caught (FZ_MODE_NONE = an allocator without the mode key). */
#ifndef FZ_BUG_DOUBLE_FREE_LARGE
#define FZ_BUG_DOUBLE_FREE_LARGE 1   /* mode=fast forgets freed large blocks: invalid-free */
#endif
#ifndef FZ_BUG_SIZE_MISMATCH_LARGE
#define FZ_BUG_SIZE_MISMATCH_LARGE 1
#endif
#ifndef FZ_BUG_SIZE_MISMATCH_UNDER
#define FZ_BUG_SIZE_MISMATCH_UNDER 1
#endif
#ifndef FZ_BUG_OVERFLOW
#define FZ_BUG_OVERFLOW 1            /* canaries (issue 3) */
#endif
#ifndef FZ_BUG_UNDERFLOW
#define FZ_BUG_UNDERFLOW 1           /* front canaries, debug mode; not before sampled blocks */
#endif
#ifndef FZ_BUG_USE_AFTER_FREE
#define FZ_BUG_USE_AFTER_FREE 1      /* poisoning (hardened: the first 32 bytes), checked by mh_check */
#endif

#define ALL FZ_ALL_MODES
#define HARDENED_UP (FZ_MODE_BIT(FZ_MODE_HARDENED) | FZ_MODE_BIT(FZ_MODE_DEBUG))
#define DEBUG_ONLY FZ_MODE_BIT(FZ_MODE_DEBUG)
#define NOT_FAST (FZ_MODE_BIT(FZ_MODE_NONE) | HARDENED_UP) /* mode=fast: mismatch=0 */

static bug_t bug_table[] = {
    /* name                    kind                   enabled                      modes        need        write  exact  commit, [alias, known bug] */
    {"double-free",            "double-free",         1,                           ALL,         NEED_SMALL, false, true,  bug_double_free, NULL, -1},
    {"double-free-large",      "double-free",         FZ_BUG_DOUBLE_FREE_LARGE,    HARDENED_UP,         NEED_LARGE, false, true,  bug_double_free, NULL, -1},
    {"invalid-free-interior",  "invalid-free",        1,                           ALL,         NEED_ANY,   false, true,  bug_free_interior, NULL, -1},
    {"invalid-free-foreign",   "invalid-free",        1,                           ALL,         NEED_ANY,   false, true,  bug_free_foreign, NULL, -1},
    {"invalid-realloc",        "invalid-realloc",     1,                           ALL,         NEED_ANY,   false, true,  bug_realloc_bad, NULL, -1},
    {"invalid-usable-size",    "invalid-usable-size", 1,                           ALL,         NEED_ANY,   false, true,  bug_usable_bad, NULL, -1},
    {"size-mismatch",          "size-mismatch",       1,                           NOT_FAST,         NEED_SMALL, false, true,  bug_size_over, NULL, -1},
    {"size-mismatch-large",    "size-mismatch",       FZ_BUG_SIZE_MISMATCH_LARGE,  NOT_FAST,         NEED_LARGE, false, true,  bug_size_over, NULL, -1},
    {"size-mismatch-under",    "size-mismatch",       FZ_BUG_SIZE_MISMATCH_UNDER,  NOT_FAST,         NEED_ANY,   false, true,  bug_size_under, NULL, -1},
    {"heap-buffer-overflow",   "heap-buffer-overflow",FZ_BUG_OVERFLOW,             HARDENED_UP, NEED_ANY,   true,  false, bug_overflow, NULL, -1},
    {"heap-buffer-underflow",  "heap-buffer-underflow",FZ_BUG_UNDERFLOW,           DEBUG_ONLY,  NEED_UNSAMPLED, true, false, bug_underflow, NULL, -1},
    {"use-after-free",         "use-after-free",      FZ_BUG_USE_AFTER_FREE,       HARDENED_UP, NEED_SMALL, true,  false, bug_uaf, NULL, -1},
};
#define NBUGS (sizeof bug_table / sizeof bug_table[0])

void fz_bugs_configure(const char *spec) {
    /* "all", "none", "name", "+name", "-name", comma separated; a name
     * matches every entry it is a prefix of. */
    while (spec && *spec) {
        const char *end = strchr(spec, ',');
        size_t n = end ? (size_t)(end - spec) : strlen(spec);
        bool on = true;
        const char *w = spec;
        if (*w == '+' || *w == '-') { on = *w == '+'; w++; n--; }
        bool any = false;
        for (size_t b = 0; b < NBUGS; b++) {
            bool all = (n == 3 && !strncmp(w, "all", 3)), none = (n == 4 && !strncmp(w, "none", 4));
            if (all || none || (n && !strncmp(bug_table[b].name, w, n))) {
                bug_table[b].enabled = none ? false : on;
                any = true;
            }
        }
        if (!any) fprintf(stderr, "fuzz: FUZZ_BUGS: no bug named '%.*s'\n", (int)n, w);
        spec = end ? end + 1 : NULL;
    }
    if (fz_verbose)
        for (size_t b = 0; b < NBUGS; b++)
            fprintf(stderr, "fuzz: bug %-24s %s\n", bug_table[b].name, bug_table[b].enabled ? "on" : "off");
}

static void op_bug(seq_t *q, int i, uint8_t id, uint8_t v, fz_reader_t *r) {
    const bug_t *b = &bug_table[id % NBUGS];
    if (!b->enabled || !(b->modes & FZ_MODE_BIT(q->cfg.mode))) return;
    if (!q->s[i].p) op_malloc(q, i, fz_size_ok(r, (size_t)4 << 20));
    else (void)fz_size(r);
    slot_t *s = &q->s[i];
    if (!s->p) return;
    bool small = in_slab(s);
    if (((b->need & NEED_SMALL) && !small) || ((b->need & NEED_LARGE) && small)) return;
    if ((b->need & NEED_UNSAMPLED) && q->cfg.sample_rate) return;
    long live_before = q->live;
    const slot_t before = *s;
    bug_ctx_t c = {0};
    if (!b->commit(q, i, v, &c)) { fz_expect_reports(false); return; }
    const fz_report_t *rep;
    unsigned n = fz_reports(&rep);
    fz_expect_reports(false);
    if (b->write && !c.bad) { q->stop = true; return; } /* the write would have faulted */
    FZ_ASSERT(n >= 1, "op %u: bug %s on a %zu-byte block from %s (variant %u) was not reported", q->op_index,
              b->name, before.req, how_name[before.how], v);
    bool kind_ok = strcmp(rep[0].kind, b->kind) == 0 ||
                   (b->alias && strcmp(rep[0].kind, b->alias) == 0 && fz_tolerate((enum fz_known)b->known));
    FZ_ASSERT(kind_ok, "op %u: bug %s reported as %s, expected %s:\n%s", q->op_index, b->name, rep[0].kind, b->kind,
              rep[0].message);
    FZ_ASSERT(!b->exact_addr || rep[0].address == c.bad, "op %u: bug %s: report names address %p, expected %p:\n%s",
              q->op_index, b->name, rep[0].address, c.bad, rep[0].message);
    FZ_ASSERT(b->write || n == 1, "op %u: bug %s reported %u times", q->op_index, b->name, n);
    FZ_ASSERT(rep[0].message[0], "op %u: report without a message", q->op_index);
    if (fz_verbose >= 2)
        fprintf(stderr, "fuzz: op %u: bug %s committed on a %zu-byte block from %s, reported as %s\n", q->op_index,
                b->name, before.req, how_name[before.how], rep[0].kind);
    if (b->write) { q->stop = true; return; }
    /* Rejected bugs leave the heap as it was: the checks go on. */
    if (c.maybe_freed) {
        mh_stats_t st;
        mh_stats(&st);
        if ((long)st.live_blocks == live_before - 1) forget(q, i);
        else FZ_ASSERT((long)st.live_blocks == live_before, "op %u: after %s: %zu live blocks, shadow %ld",
                       q->op_index, b->name, st.live_blocks, live_before);
    }
}

/* ---- the sequence ------------------------------------------------------------------ */
enum {
    OP_MALLOC, OP_MALLOC2, OP_CALLOC, OP_REALLOC, OP_REALLOC2, OP_REALLOCARRAY, OP_FREE, OP_FREE_SIZED,
    OP_FREE_ALIGNED_SIZED, OP_POSIX_MEMALIGN, OP_ALIGNED_ALLOC, OP_MEMALIGN, OP_PAGE_ALLOC, OP_USABLE,
    OP_TRIM, OP_WRITE_USABLE, OP_VERIFY, OP_FREE_ALL, OP_BUG, OP_MALLOC_SAME, OP_BURST_MALLOC, OP_BURST_FREE,
    NOPS
};

static void free_all(seq_t *q) {
    for (int i = 0; i < NSLOTS; i++)
        if (q->s[i].p) release(q, i, (int)i);
}

static void step_checks(seq_t *q) {
    for (int i = 0; i < NSLOTS; i++) verify_slot(q, i, true, "after the step");
    verify_slot(q, (int)(q->rr++ % NSLOTS), false, "after the step");
    fz_check_heap(q->live);
}

void fz_run_sequence(const uint8_t *data, size_t size, bool bugs) {
    static seq_t q;
    memset(&q, 0, sizeof q);
    q.bugs = bugs;
    q.next_seed = 1;
    fz_reader_t r = {data, size};
    fz_apply_options(&r, &q.cfg);
    while (!rd_done(&r) && !q.stop && q.op_index < MAX_OPS) {
        uint8_t op = rd_u8(&r) % NOPS;
        int i = rd_u8(&r) % NSLOTS;
        switch (op) {
        case OP_MALLOC: case OP_MALLOC2: op_malloc(&q, i, fz_size(&r)); break;
        case OP_CALLOC: op_calloc(&q, i, &r); break;
        case OP_REALLOC: case OP_REALLOC2: op_realloc(&q, i, fz_size(&r), false, 0); break;
        case OP_REALLOCARRAY: { uint8_t m = rd_u8(&r); op_realloc(&q, i, fz_size(&r), true, m); break; }
        case OP_FREE: release(&q, i, 0); break;
        case OP_FREE_SIZED: release(&q, i, 1); break;
        case OP_FREE_ALIGNED_SIZED: release(&q, i, 2); break;
        case OP_POSIX_MEMALIGN: case OP_ALIGNED_ALLOC: case OP_MEMALIGN: {
            size_t a = fz_align(&r);
            op_aligned(&q, i, op - OP_POSIX_MEMALIGN, a, fz_size(&r));
            break;
        }
        case OP_PAGE_ALLOC: { uint8_t w = rd_u8(&r); op_aligned(&q, i, 3 + (w & 1), 4096, fz_size(&r)); break; }
        case OP_USABLE: {
            slot_t *s = &q.s[i];
            size_t u = mh_malloc_usable_size(s->p);
            FZ_ASSERT(u == (s->p ? s->usable : 0), "op %u: malloc_usable_size(%p) = %zu, was %zu", q.op_index,
                      (void *)s->p, u, s->usable);
            break;
        }
        case OP_TRIM: {
            int rc = mh_trim(rd_u8(&r));
            FZ_ASSERT(rc == 0 || rc == 1, "mh_trim returned %d", rc);
            for (int j = 0; j < NSLOTS; j++) verify_slot(&q, j, false, "after mh_trim");
            break;
        }
        case OP_WRITE_USABLE: { /* writing up to malloc_usable_size is never an error */
            slot_t *s = &q.s[i];
            if (s->p && s->usable <= ((size_t)8 << 20)) {
                verify_slot(&q, i, false, "before writing up to the usable size");
                s->filled = s->usable;
                fz_fill(s->p, s->usable, s->seed);
            }
            break;
        }
        case OP_VERIFY: verify_slot(&q, i, false, "verify"); break;
        case OP_FREE_ALL:
            free_all(&q);
            fz_check_heap(0);
            break;
        case OP_BUG: {
            uint8_t id = rd_u8(&r), v = rd_u8(&r);
            if (bugs) op_bug(&q, i, id, v, &r);
            else verify_slot(&q, i, false, "verify");
            break;
        }
        case OP_BURST_MALLOC: { /* 2-9 blocks of one size in a row: fills slabs */
            unsigned k = 2 + rd_u8(&r) % 8;
            size_t n = fz_size(&r);
            for (unsigned j = 0; j < k; j++) op_malloc(&q, (i + (int)j) % NSLOTS, n);
            break;
        }
        case OP_BURST_FREE: { /* free 2-9 slots in a row: empties slabs */
            uint8_t b = rd_u8(&r);
            for (unsigned j = 0; j < 2u + b % 8; j++) release(&q, (i + (int)j) % NSLOTS, b >> 3);
            break;
        }
        case OP_MALLOC_SAME: { /* the size of another slot: reuse of a just-freed class */
            slot_t *o = &q.s[rd_u8(&r) % NSLOTS];
            op_malloc(&q, i, o->p ? o->req : 64);
            break;
        }
        }
        q.op_index++;
        if (!q.stop) step_checks(&q);
    }
    if (!q.stop) {
        free_all(&q);
        fz_check_heap(0);
        (void)mh_trim(0);
        if (!q.cfg.quarantine_mb) fz_check_empty_after_trim();
    }
    mh_reset();
    mh_stats_t st;
    mh_stats(&st);
    FZ_ASSERT(st.live_blocks == 0 && st.mapped_bytes == 0, "after mh_reset: %zu live blocks, %zu bytes mapped",
              st.live_blocks, st.mapped_bytes);
}
