/* Meshing (as in Mesh, PLDI 2019): two pages of one size class whose used
 * slots do not overlap come to share one physical page, and the other page
 * goes back to the system. No pointer moves.
 *
 * With mesh=1, miniheaps are views of one memfd at file offset == address
 * (os.c). A slab is meshed in spans: one page for blocks up to 1 KiB, and
 * for larger ones the shortest run of pages that holds whole blocks
 * (lcm(block size, 4096) bytes). Two spans have the same slot layout when
 * they start at the same offset within a block (their "phase": for
 * one-page spans, page p of a slab is at p * 4096 mod the block size).
 * Meshing source span B:j onto target span A:i of the same phase copies B's
 * used slots there into the same places of A:i, maps B:j onto A:i's file
 * pages and punches B:j's own. Small blocks straddle pages: a source's used
 * slots must lie inside its span (what is copied is whole blocks), a
 * target's need not. Meshing page by page, not in runs of up to 15 pages,
 * is what lets a sparse page of small blocks find a partner.
 *
 * Who owns a slot while B:j is meshed onto A:i ("slot r" counts from the
 * first slot that touches the span, the same in both): B keeps the blocks
 * it had inside the span (own: live, or in a cache); every other slot of B
 * touching B:j is "parked", out of B's free map, since its bytes there
 * would be A's; and A's slot r stays out of A's free map while B owns it.
 * When B frees an owned block, the slot goes to A. When B owns nothing in
 * B:j any more, B:j is mapped back onto its own (punched, so zero) pages and
 * its slots are free in B again, but for a straddling slot whose other span
 * is still meshed away. So a target never empties while a source still
 * uses it, and every slab goes back to its miniheap with no meshing left. A
 * target span may take several sources; a source span is never a target,
 * and a target span never a source.
 *
 * Writes while blocks are copied: B:p is read-only for that time, and a
 * thread that writes there faults and waits in the fault handler until the
 * remap is done (then its write lands in the shared page). The kernel cannot
 * wait: a system call that writes into B:p's blocks in that window (read(2)
 * into a heap buffer, say) fails with EFAULT. SECURITY.md lists this and the
 * other costs of meshing; it is off by default.
 *
 * fork: a child must not share its parent's file. Before fork the heap
 * becomes read-only (threads that write wait), the child copies the file
 * into one of its own and remaps every miniheap, and the parent waits for
 * the child before the heap is writable again. */
#include "internal.h"
#include "track.h"

int mh_meshing;

typedef struct mesh_span {
    slab_t *target;      /* set: this span is a source, backed by target's span tspan */
    uint16_t tspan;
    uint16_t refs;       /* a target: the source spans mapped onto this one */
    bool in_use;         /* the entry is some span's */
    uint64_t own[4];     /* a source: the slots (r) whose blocks it still owns */
    uint64_t held[4];    /* a target: the slots (r) its sources own (their own[], or-ed) */
} mesh_span_t;

/* A slab's meshing: entries only for the spans that are a source or a
 * target (a slab of 128 one-page spans seldom has more than a few), and a
 * 16-bit index per span. */
typedef struct slab_mesh {
    size_t bytes;        /* of this record */
    uint32_t active;     /* spans that are a source or a target */
    uint32_t nspans;
    mesh_span_t *ent;
    uint32_t nent;       /* entries ent has room for */
    uint16_t at[];       /* per span: its entry + 1 (0: none) */
} slab_mesh_t;

static _Atomic uint64_t n_meshes;      /* meshes made since start */
static _Atomic size_t meshed_bytes;    /* source bytes mapped onto other spans now */

/* Bytes of a span: a page for blocks up to a page, else lcm(block size,
 * 4096) (no block crosses its edges). */
static size_t span_bytes(uint32_t bsize) {
    if (bsize <= MH_PAGE) return MH_PAGE;
    uint32_t low = bsize & -bsize;
    return (size_t)(bsize / (low < MH_PAGE ? low : MH_PAGE)) << MH_PAGE_SHIFT;
}
/* Spans that can mesh: those whose every touching slot exists (the tail of
 * a slab is not one), in slabs whose blocks start at page offsets a block
 * size apart (a front redzone would shift them), of classes whose spans
 * touch two slots at least. At most 256 slots touch a span (16-byte blocks
 * on a page, or lcm / size <= 4096 / 16). */
static uint32_t span_count(const slab_t *s) {
    size_t sb = span_bytes(s->bsize);
    if (s->zero || s->front || (s->bsize >= MH_PAGE && sb / s->bsize < 2)) return 0;
    return (uint32_t)((size_t)s->capacity * s->bsize / sb);
}
static size_t span_off(const slab_t *s, uint32_t j) { return (size_t)j * span_bytes(s->bsize); }
static uint32_t span_first(const slab_t *s, uint32_t j) { return (uint32_t)(span_off(s, j) / s->bsize); }
static uint32_t span_slots(const slab_t *s, uint32_t j) {
    return (uint32_t)((span_off(s, j + 1) - 1) / s->bsize) - span_first(s, j) + 1;
}
static uint32_t span_phase(const slab_t *s, uint32_t j) { return (uint32_t)(span_off(s, j) % s->bsize); }
/* The spans slot x touches: j0 .. j1 (one or two, or more only past the
 * meshable spans). */
static void slot_spans(const slab_t *s, uint32_t x, uint32_t *j0, uint32_t *j1) {
    size_t sb = span_bytes(s->bsize), lo = (size_t)x * s->bsize;
    *j0 = (uint32_t)(lo / sb);
    *j1 = (uint32_t)((lo + s->bsize - 1) / sb);
}
static bool bit4(const uint64_t v[4], uint32_t r) { return v[r >> 6] >> (r & 63) & 1; }
static void put4(uint64_t v[4], uint32_t r, bool on) {
    if (on) v[r >> 6] |= (uint64_t)1 << (r & 63);
    else v[r >> 6] &= ~((uint64_t)1 << (r & 63));
}
static bool map_bit(const uint64_t *map, uint32_t x) { return map[x >> 6] >> (x & 63) & 1; }
static void map_put(uint64_t *map, uint32_t x, bool on) {
    if (on) map[x >> 6] |= (uint64_t)1 << (x & 63);
    else map[x >> 6] &= ~((uint64_t)1 << (x & 63));
}
static bool any4(const uint64_t v[4]) { return (v[0] | v[1] | v[2] | v[3]) != 0; }
static uint32_t popcount4(const uint64_t v[4]) {
    return (uint32_t)(__builtin_popcountll(v[0]) + __builtin_popcountll(v[1]) +
                      __builtin_popcountll(v[2]) + __builtin_popcountll(v[3]));
}
static mesh_span_t *span_rec(const slab_t *s, uint32_t j) {
    const slab_mesh_t *m = s->mesh;
    return m && j < m->nspans && m->at[j] ? &m->ent[m->at[j] - 1] : NULL;
}
/* Span j is neither a source nor a target any more: its entry is free. */
static void span_drop(slab_t *s, uint32_t j) {
    slab_mesh_t *m = s->mesh;
    m->ent[m->at[j] - 1].in_use = false;
    m->at[j] = 0;
}
static void set_purged(slab_t *s, uint32_t j, bool on) {
    uint32_t p0 = (uint32_t)(span_off(s, j) >> MH_PAGE_SHIFT), np = (uint32_t)(span_bytes(s->bsize) >> MH_PAGE_SHIFT);
    for (uint32_t p = p0; p < p0 + np; p++) map_put(s->purged, p, on);
}

/* Slot x of s is parked: out of the free map because a span it touches is
 * meshed away and x is not a block s owns there. */
static bool parked(const slab_t *s, uint32_t x) {
    uint32_t j0, j1;
    if (!s->mesh) return false;
    slot_spans(s, x, &j0, &j1);
    for (uint32_t j = j0; j <= j1; j++) {
        const mesh_span_t *sp = span_rec(s, j);
        if (sp && sp->target && !bit4(sp->own, x - span_first(s, j))) return true;
    }
    return false;
}
/* Slot x of s is held: out of the free map because a span it touches is a
 * target and a source owns the slot there. */
static bool held(const slab_t *s, uint32_t x) {
    uint32_t j0, j1;
    if (!s->mesh) return false;
    slot_spans(s, x, &j0, &j1);
    for (uint32_t j = j0; j <= j1; j++) {
        const mesh_span_t *sp = span_rec(s, j);
        if (sp && sp->refs && bit4(sp->held, x - span_first(s, j))) return true;
    }
    return false;
}

/* The slots of span j that s uses there (live, in a cache, or held for a
 * source of j; a slot parked for another span is free here), by r;
 * *foreign: one of them is held. */
static void span_used(const slab_t *s, uint32_t j, uint64_t out[4], bool *foreign) {
    uint32_t first = span_first(s, j), n = span_slots(s, j);
    const mesh_span_t *sp = span_rec(s, j);
    memset(out, 0, 4 * sizeof(uint64_t));
    *foreign = false;
    for (uint32_t r = 0; r < n; r++) {
        uint32_t x = first + r;
        if (map_bit(s->free_map, x)) continue;
        if (!(sp && sp->refs && bit4(sp->held, r)) && parked(s, x)) continue;
        put4(out, r, true);
        if (held(s, x)) *foreign = true;
    }
}

/* ---- ownership: frees into a source span ----------------------------------- */

static void record_free(slab_t *s) {
    slab_mesh_t *m = s->mesh;
    if (m && m->active == 0) {
        if (m->ent) meta_free(m->ent, m->nent * sizeof(mesh_span_t));
        meta_free(m, m->bytes);
        s->mesh = NULL;
    }
}

/* B:j owns nothing any more: its own pages (punched, zero) come back, and
 * its slots are free in B but for those parked or held for another span. */
static void unmesh(slab_t *s, uint32_t j) {
    size_t bytes = span_bytes(s->bsize);
    uint8_t *at = slab_start(s) + span_off(s, j);
    mesh_span_t *sp = span_rec(s, j);
    if (!os_segment_alias(at, at, bytes)) mh_fatal("cannot map a meshed span back onto its own pages");
    atomic_fetch_add(&slab_guard_budget, 2);
    slab_t *t = sp->target;
    uint32_t ti = sp->tspan;
    mesh_span_t *tp = span_rec(t, ti);
    sp->target = NULL;
    span_drop(s, j);
    s->mesh->active--;
    uint32_t first = span_first(s, j), n = span_slots(s, j), back = 0;
    for (uint32_t r = 0; r < n; r++) {
        uint32_t x = first + r;
        if (map_bit(s->free_map, x) || parked(s, x) || held(s, x)) continue;
        map_put(s->free_map, x, true);
        if (s->poisoned) map_put(s->poisoned, x, false);
        back++;
    }
    __atomic_store_n(&s->used, s->used - back, __ATOMIC_RELAXED);
    if (first / 64 < s->hint) s->hint = first / 64;
    set_purged(s, j, true);
    if (--tp->refs == 0) {
        span_drop(t, ti);
        t->mesh->active--;
    }
    atomic_fetch_sub(&meshed_bytes, bytes);
    record_free(t);
    if (t != s) record_free(s);
}

bool mesh_owned(const slab_t *s, uint32_t idx) {
    uint32_t j0, j1;
    slot_spans(s, idx, &j0, &j1);
    for (uint32_t j = j0; j <= j1; j++) {
        const mesh_span_t *sp = span_rec(s, j);
        if (sp && sp->target && bit4(sp->own, idx - span_first(s, j))) return true;
    }
    return false;
}

/* B frees block idx that it owns in meshed-away spans: each target's slot
 * goes back to the target (unless the target parks or holds it for
 * another span), and a span that owns nothing more is B's again; till
 * then B's slot stays parked. A block across a span's edge leaves mixed
 * bytes in the target's slot: that one goes back unpoisoned. Class lock
 * held. */
bool mesh_free_owned(class_bins_t *b, slab_t *s, uint32_t idx, uintptr_t tagged, uint64_t now) {
    uint32_t j0, j1, emptied[2], ne = 0;
    slot_spans(s, idx, &j0, &j1);
    for (uint32_t j = j0; j <= j1; j++) {
        mesh_span_t *sp = span_rec(s, j);
        uint32_t r = idx - span_first(s, j);
        if (!sp || !sp->target || !bit4(sp->own, r)) continue;
        put4(sp->own, r, false);
        slab_t *t = sp->target;
        mesh_span_t *tp = span_rec(t, sp->tspan);
        if (!bit4(tp->held, r)) mh_fatal("metadata-corruption: a meshed slot is not held by its target");
        put4(tp->held, r, false);
        uint32_t y = span_first(t, sp->tspan) + r;
        if (!parked(t, y) && !held(t, y)) slab_slot_return(b, t, y, j0 == j1 ? tagged : tagged & ~TAG_POISONED, now);
        if (!any4(sp->own)) emptied[ne++] = j;
    }
    for (uint32_t i = 0; i < ne; i++) unmesh(s, emptied[i]);
    return ne != 0;
}

void mesh_slab_forget(slab_t *s) {
    if (!s->mesh) return;
    for (uint32_t j = 0; j < s->mesh->nspans; j++) { /* the aliases go with the heap */
        const mesh_span_t *sp = span_rec(s, j);
        if (sp && sp->target) atomic_fetch_add(&slab_guard_budget, 2);
    }
    s->mesh->active = 0;
    record_free(s);
    atomic_store(&meshed_bytes, 0);
}

void mesh_slab_release(slab_t *s) {
    if (!s->mesh) return;
    if (s->mesh->active) mh_fatal("metadata-corruption: a slab given back while still meshed");
    record_free(s);
}

/* ---- the write barrier ------------------------------------------------------ */

static _Atomic uintptr_t win_lo, win_hi;
static _Atomic uint32_t win_seq;      /* odd while a page is being copied */
static _Atomic uint32_t fork_seq;     /* odd from fork_prepare until the child has its copy */
/* Atomic: a thread that saw fork_seq odd may read them late, while the next
 * fork's prepare writes them (the same values in the parent; TSan saw it). */
static _Atomic int fork_pid = -1;
static _Atomic uint32_t fork_tid;
static int fork_pipe[2] = {-1, -1};
static bool child_copied;
static void child_copy(void);

/* The thread's last fault that found no window: a fault can arrive after
 * the window it hit was closed; it is retried, a bounded number of times. */
static __thread uintptr_t t_last_fault __attribute__((tls_model("initial-exec")));
static __thread uint32_t t_fault_tries __attribute__((tls_model("initial-exec")));

bool mesh_fault(uintptr_t addr) {
    if (!__atomic_load_n(&mh_meshing, __ATOMIC_RELAXED) || !miniheap_of((void *)addr)) return false;
    uint32_t fs = atomic_load(&fork_seq);
    if (fs & 1) {
        if (atomic_load_explicit(&fork_pid, memory_order_relaxed) != os_getpid()) { /* a child that wrote before its fork handler ran */
            child_copy();
            return true;
        }
        if (atomic_load_explicit(&fork_tid, memory_order_relaxed) == os_thread_id()) { /* the forking thread, before fork: its write is before the copy */
            os_commit((void *)(addr & ~(uintptr_t)(MH_PAGE - 1)), MH_PAGE);
            return true;
        }
        while (atomic_load(&fork_seq) == fs) os_futex_wait(&fork_seq, fs, 100);
        t_fault_tries = 0;
        return true;
    }
    uint32_t ws = atomic_load(&win_seq);
    if ((ws & 1) && addr >= atomic_load(&win_lo) && addr < atomic_load(&win_hi)) {
        while (atomic_load(&win_seq) == ws) os_futex_wait(&win_seq, ws, 100);
        t_fault_tries = 0;
        return true;
    }
    if (addr != t_last_fault) {
        t_last_fault = addr;
        t_fault_tries = 0;
    }
    return ++t_fault_tries <= 64;
}

/* ---- meshing a pair ------------------------------------------------------------ */

/* Copy a block another thread owns: its writes are held off by the page
 * protection, which ThreadSanitizer cannot see, so this copy is not
 * instrumented (word by word, volatile, so it stays a loop and not a call
 * to an instrumented memcpy). Block sizes are multiples of 16. */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MH_NO_TSAN __attribute__((no_sanitize("thread")))
#endif
#endif
#ifndef MH_NO_TSAN
#define MH_NO_TSAN
#endif
MH_NO_TSAN static void copy_block(uint8_t *dst, const uint8_t *src, size_t n) {
    volatile uint64_t *d = (volatile uint64_t *)(void *)dst;
    const volatile uint64_t *s = (const volatile uint64_t *)(const void *)src;
    for (size_t i = 0; i < n / 8; i++) d[i] = s[i];
}

/* The entry of s's span j, made if need be (false: no metadata). Entries
 * may move when one is made: pointers to them are taken after. */
static bool span_take(slab_t *s, uint32_t j) {
    slab_mesh_t *m = s->mesh;
    if (!m) {
        uint32_t n = span_count(s);
        size_t bytes = sizeof(slab_mesh_t) + (size_t)n * sizeof(uint16_t);
        if (!(m = meta_alloc(bytes))) return false;
        m->bytes = bytes;
        m->nspans = n;
        s->mesh = m;
    }
    if (m->at[j]) return true;
    uint32_t e = 0;
    while (e < m->nent && m->ent[e].in_use) e++;
    if (e == m->nent) {
        uint32_t n = m->nent ? 2 * m->nent : 4;
        mesh_span_t *ent = meta_alloc(n * sizeof(mesh_span_t));
        if (!ent) return false;
        if (m->ent) {
            memcpy(ent, m->ent, m->nent * sizeof(mesh_span_t));
            meta_free(m->ent, m->nent * sizeof(mesh_span_t));
        }
        m->ent = ent;
        m->nent = n;
    }
    memset(&m->ent[e], 0, sizeof m->ent[e]);
    m->ent[e].in_use = true;
    m->at[j] = (uint16_t)(e + 1);
    return true;
}
/* An entry span_take made and mesh_pair did not use. */
static void span_untake(slab_t *s, uint32_t j) {
    const mesh_span_t *sp = span_rec(s, j);
    if (sp && !sp->target && !sp->refs) span_drop(s, j);
    record_free(s);
}

/* Pages of s's span j that hold data now, and pages of it that the blocks
 * of occ would make resident if copied in. */
static uint32_t resident_pages(const slab_t *s, uint32_t j) {
    uint32_t p0 = (uint32_t)(span_off(s, j) >> MH_PAGE_SHIFT), np = (uint32_t)(span_bytes(s->bsize) >> MH_PAGE_SHIFT), r = 0;
    for (uint32_t p = p0; p < p0 + np; p++) r += !map_bit(s->purged, p);
    return r;
}
/* The pages of span j that the blocks of occ touch. */
static void each_occ_page(const slab_t *s, uint32_t j, const uint64_t occ[4], uint64_t pages[2]) {
    uint32_t first = span_first(s, j);
    size_t lo = span_off(s, j), hi = span_off(s, j + 1);
    pages[0] = pages[1] = 0;
    for (uint32_t w = 0; w < 4; w++)
        for (uint64_t bits = occ[w]; bits; bits &= bits - 1) {
            size_t off = (size_t)(first + w * 64 + (uint32_t)__builtin_ctzll(bits)) * s->bsize, end = off + s->bsize;
            if (off < lo) off = lo;
            if (end > hi) end = hi;
            for (size_t p = off >> MH_PAGE_SHIFT; p <= (end - 1) >> MH_PAGE_SHIFT; p++)
                pages[p >> 6] |= (uint64_t)1 << (p & 63);
        }
}
static uint32_t pages_to_fill(const slab_t *s, uint32_t j, const uint64_t occ[4]) {
    uint64_t pages[2];
    each_occ_page(s, j, occ, pages);
    return (uint32_t)(__builtin_popcountll(pages[0] & s->purged[0]) + __builtin_popcountll(pages[1] & s->purged[1]));
}

/* Mesh B:j (the slots used in it, occ) onto A:i. Class lock held. */
static bool mesh_pair(slab_t *a, uint32_t i, slab_t *b, uint32_t j, const uint64_t occ[4]) {
    size_t bytes = span_bytes(b->bsize), soff = span_off(b, j), doff = span_off(a, i);
    uint8_t *src = slab_start(b) + soff, *dst = slab_start(a) + doff;
    uint32_t bfirst = span_first(b, j), afirst = span_first(a, i), slots = span_slots(b, j);
    bool ok = span_take(a, i) && span_take(b, j);
    /* Each alias may split a mapping in three: the same budget as guards. */
    if (ok && atomic_fetch_sub(&slab_guard_budget, 2) <= 2) {
        atomic_fetch_add(&slab_guard_budget, 2);
        ok = false;
    }
    if (!ok) {
        span_untake(a, i);
        span_untake(b, j);
        return false;
    }
    atomic_store(&win_lo, (uintptr_t)src);
    atomic_store(&win_hi, (uintptr_t)src + bytes);
    atomic_fetch_add(&win_seq, 1);
    bool copied = false;
    ok = os_protect_read(src, bytes);
    if (ok) {
        for (uint32_t w = 0; w < 4; w++)
            for (uint64_t bits = occ[w]; bits; bits &= bits - 1) {
                /* The part of the block inside the span (offsets from it). */
                size_t at = (size_t)(bfirst + w * 64 + (uint32_t)__builtin_ctzll(bits)) * b->bsize;
                size_t lo = at < soff ? 0 : at - soff, hi = at + b->bsize - soff > bytes ? bytes : at + b->bsize - soff;
                copy_block(dst + lo, src + lo, hi - lo);
            }
        copied = true;
        ok = os_segment_alias(src, dst, bytes);
    }
    /* The data is still in B's own pages: map them back writable (a failed
     * mprotect may have changed part of the span). */
    if (!ok && !os_segment_alias(src, src, bytes)) mh_fatal("meshing: cannot map a span back after a failed remap");
    atomic_fetch_add(&win_seq, 1);
    os_futex_wake(&win_seq);
    uint64_t filled[2];
    each_occ_page(a, i, occ, filled);
    if (!ok) {
        /* A's free slots of occ hold B's bytes now, not poison, and their
         * pages are resident. */
        if (copied) {
            for (uint32_t r = 0; a->poisoned && r < slots; r++)
                if (bit4(occ, r)) map_put(a->poisoned, afirst + r, false);
            a->purged[0] &= ~filled[0];
            a->purged[1] &= ~filled[1];
        }
        atomic_fetch_add(&slab_guard_budget, 2);
        span_untake(a, i);
        span_untake(b, j);
        return false;
    }
    os_segment_punch(src, bytes);

    /* B: the span's free slots are parked; it owns occ. What was poisoned
     * there is the target's memory now. */
    uint32_t parked_now = 0;
    for (uint32_t r = 0; r < slots; r++) {
        uint32_t x = bfirst + r;
        if (b->poisoned) map_put(b->poisoned, x, false);
        if (!map_bit(b->free_map, x)) continue;
        map_put(b->free_map, x, false);
        parked_now++;
    }
    __atomic_store_n(&b->used, b->used + parked_now, __ATOMIC_RELAXED);
    set_purged(b, j, true); /* not B's memory */
    mesh_span_t *sp = span_rec(b, j);
    sp->target = a;
    sp->tspan = (uint16_t)i;
    memcpy(sp->own, occ, sizeof sp->own);
    b->mesh->active++;
    /* A: those slots are held for B while B owns them (a slot A parks is
     * out of its free map already). */
    uint32_t taken = 0;
    for (uint32_t r = 0; r < slots; r++) {
        uint32_t y = afirst + r;
        if (!bit4(occ, r)) continue;
        if (a->poisoned) map_put(a->poisoned, y, false);
        if (!map_bit(a->free_map, y)) continue;
        map_put(a->free_map, y, false);
        taken++;
    }
    __atomic_store_n(&a->used, a->used + taken, __ATOMIC_RELAXED);
    mesh_span_t *tp = span_rec(a, i);
    for (uint32_t w = 0; w < 4; w++) tp->held[w] |= occ[w];
    a->purged[0] &= ~filled[0];
    a->purged[1] &= ~filled[1];
    if (tp->refs++ == 0) a->mesh->active++;
    atomic_fetch_add(&n_meshes, 1);
    atomic_fetch_add(&meshed_bytes, bytes);
    return true;
}

/* ---- finding pairs ---------------------------------------------------------------- */

typedef struct cand {
    slab_t *s;
    uint16_t span, count;
    uint8_t role;           /* 0: either, 1: a target (no more a source), 2: meshed away */
    bool may_source;
    uint64_t occ[4];
} cand_t;

/* Passes run one at a time (under mh_tick_lock), so one table serves. */
#define MAX_CANDS 4096
static cand_t cands[MAX_CANDS];
static uint32_t order[MAX_CANDS];

static uint32_t collect(class_bins_t *b) {
    uint32_t n = 0;
    for (uint32_t q = 1; q < MH_BUCKETS && n < MAX_CANDS; q++) {
        for (slab_t *s = b->bucket[q]; s && n < MAX_CANDS; s = s->next) {
            /* Only settled slabs: one freed into since the last give-back
             * pass may be emptying still. */
            if (s->on_dirty) continue;
            uint32_t ns = span_count(s);
            for (uint32_t j = 0; j < ns && n < MAX_CANDS; j++) {
                const mesh_span_t *sp = span_rec(s, j);
                if (sp && sp->target) continue; /* meshed away already */
                cand_t *c = &cands[n];
                bool foreign;
                span_used(s, j, c->occ, &foreign);
                c->count = (uint16_t)popcount4(c->occ);
                uint32_t slots = span_slots(s, j);
                if (c->count == 0 || c->count == slots) continue;
                c->s = s;
                c->span = (uint16_t)j;
                c->role = 0;
                /* Sources: at most half full (what moves is copied), no
                 * target already, no slot held for another span, and some
                 * page to give back. */
                c->may_source = !(sp && sp->refs) && !foreign && c->count <= slots / 2 && resident_pages(s, j) > 0;
                n++;
            }
        }
    }
    return n;
}

/* In-place heap sort of n keys. */
static void sift(uint32_t *k, uint32_t r, uint32_t n) {
    for (uint32_t c; (c = 2 * r + 1) < n; r = c) {
        if (c + 1 < n && k[c + 1] > k[c]) c++;
        if (k[r] >= k[c]) break;
        uint32_t t = k[r];
        k[r] = k[c];
        k[c] = t;
    }
}
static void sort_keys(uint32_t *k, uint32_t n) {
    for (uint32_t i = n / 2; i-- > 0;) sift(k, i, n);
    for (uint32_t end = n; end-- > 1;) {
        uint32_t t = k[0];
        k[0] = k[end];
        k[end] = t;
        sift(k, 0, end);
    }
}

/* One look at a class's partly used slabs: pair sparse spans whose used
 * slots do not overlap, the sparsest onto the fullest of its phase that
 * takes it. */
void mesh_bins(class_bins_t *b) {
    if (!__atomic_load_n(&mh_meshing, __ATOMIC_RELAXED)) return;
    slab_t *any = NULL;
    for (uint32_t q = 1; !any && q < MH_BUCKETS; q++) any = b->bucket[q];
    if (!any || !span_count(any)) return;
    uint32_t n = collect(b);
    if (n < 2) return;
    /* By phase (in 16-byte steps: < 256, as only one-page spans have one),
     * then fullest first; the low 12 bits are the candidate. */
    for (uint32_t x = 0; x < n; x++)
        order[x] = (span_phase(cands[x].s, cands[x].span) >> 4) << 21 | (uint32_t)(256 - cands[x].count) << 12 | x;
    sort_keys(order, n);
    for (uint32_t g = 0, end; g < n; g = end) {
        for (end = g; end < n && order[end] >> 21 == order[g] >> 21;) end++;
        for (uint32_t si = end; si-- > g;) {
            cand_t *src = &cands[order[si] & 4095];
            if (src->role || !src->may_source) continue;
            uint32_t slots = span_slots(src->s, src->span);
            /* The fullest first, a bounded number of tries (as Mesh's probes). */
            for (uint32_t ti = g, tries = 0; ti < end && tries < 64; ti++) {
                cand_t *dst = &cands[order[ti] & 4095];
                if (dst == src || dst->role == 2 || dst->count + src->count > slots) continue;
                tries++;
                if ((dst->occ[0] & src->occ[0]) | (dst->occ[1] & src->occ[1]) |
                    (dst->occ[2] & src->occ[2]) | (dst->occ[3] & src->occ[3]))
                    continue;
                /* Worth it only if it frees more pages than it fills. */
                if (pages_to_fill(dst->s, dst->span, src->occ) >= resident_pages(src->s, src->span)) continue;
                if (!mesh_pair(dst->s, dst->span, src->s, src->span, src->occ)) return;
                for (uint32_t w = 0; w < 4; w++) dst->occ[w] |= src->occ[w];
                dst->count = (uint16_t)(dst->count + src->count);
                dst->role = 1;
                src->role = 2;
                slab_rebucket(b, dst->s);
                slab_rebucket(b, src->s);
                break;
            }
        }
    }
}

/* ---- fork ------------------------------------------------------------------------- */

/* Visit the accessible page runs of a miniheap: everything but the guard
 * unit, slab guard pages and the slabs of 0-byte blocks. */
static void each_rw_run(miniheap_t *mh, void (*fn)(uint8_t *, size_t)) {
    uint8_t *base = mh_base(mh), *run = NULL;
    uint64_t guards = atomic_load(&mh->guard_units);
    for (uint32_t p = 0; p <= MH_USABLE_UNITS * MH_PAGES_PER_UNIT; p++) {
        uint32_t u = p / MH_PAGES_PER_UNIT;
        bool rw = p < MH_USABLE_UNITS * MH_PAGES_PER_UNIT;
        if (rw) {
            slab_t *s = mh->unit_slab[u];
            if (s && s->zero) rw = false;
            if ((guards >> u & 1) && p % MH_PAGES_PER_UNIT == MH_PAGES_PER_UNIT - 1) rw = false;
        }
        uint8_t *at = base + (size_t)p * MH_PAGE;
        if (rw && !run) run = at;
        if (!rw && run) {
            fn(run, (size_t)(at - run));
            run = NULL;
        }
    }
}
/* A run left writable would let the child copy a torn heap. */
static void run_read_only(uint8_t *p, size_t n) {
    if (!os_protect_read(p, n)) mh_fatal("fork: cannot make the heap read-only while the child copies it");
}
static void run_writable(uint8_t *p, size_t n) { os_commit(p, n); }
static void mh_read_only(miniheap_t *mh, void *arg) { (void)arg; each_rw_run(mh, run_read_only); }
static void mh_writable(miniheap_t *mh, void *arg) { (void)arg; each_rw_run(mh, run_writable); }

void mesh_fork_prepare(void) {
    if (!__atomic_load_n(&mh_meshing, __ATOMIC_RELAXED)) return;
    if (!os_pipe(fork_pipe)) fork_pipe[0] = fork_pipe[1] = -1;
    atomic_store_explicit(&fork_pid, os_getpid(), memory_order_relaxed);
    atomic_store_explicit(&fork_tid, os_thread_id(), memory_order_relaxed);
    child_copied = false;
    atomic_fetch_add(&fork_seq, 1);
    miniheap_foreach(mh_read_only, NULL);
}

void mesh_fork_parent(void) {
    if (!__atomic_load_n(&mh_meshing, __ATOMIC_RELAXED)) return;
    if (fork_pipe[1] >= 0) {
        os_close(fork_pipe[1]);
        char c;
        os_read_fd(fork_pipe[0], &c, 1); /* the child has its copy (or is gone, or fork failed) */
        os_close(fork_pipe[0]);
    }
    fork_pipe[0] = fork_pipe[1] = -1;
    miniheap_foreach(mh_writable, NULL);
    atomic_fetch_add(&fork_seq, 1);
    os_futex_wake(&fork_seq);
}

static int child_fd;
static void copy_mh(miniheap_t *mh, void *arg) {
    (void)arg;
    if (!os_backing_copy(child_fd, mh_base(mh), MH_SEG_SIZE)) mh_fatal("fork: cannot copy the heap for the child");
}
static void run_none(uint8_t *p, size_t n) { os_protect_none(p, n); }
static void remap_mh(miniheap_t *mh, void *arg) {
    (void)arg;
    uint8_t *base = mh_base(mh);
    if (!os_backing_fork_remap(child_fd, base)) mh_fatal("fork: cannot map the child's copy of the heap");
    /* Back to the guard pages it had. */
    uint64_t guards = atomic_load(&mh->guard_units);
    for (uint32_t u = 0; u < MH_USABLE_UNITS; u++) {
        slab_t *s = mh->unit_slab[u];
        if (s && s->zero && s->first_unit == u) run_none(base + (size_t)u * MH_UNIT_SIZE, (size_t)s->units * MH_UNIT_SIZE);
        if (guards >> u & 1) run_none(base + (size_t)(u + 1) * MH_UNIT_SIZE - MH_PAGE, MH_PAGE);
    }
    run_none(base + (size_t)MH_USABLE_UNITS * MH_UNIT_SIZE, (size_t)(MH_UNITS - MH_USABLE_UNITS) * MH_UNIT_SIZE);
    /* Sources are views of their targets again. */
    for (uint32_t u = 0; u < MH_USABLE_UNITS; u++) {
        slab_t *s = mh->unit_slab[u];
        if (!s || s->first_unit != u || !s->mesh) continue;
        for (uint32_t j = 0; j < s->mesh->nspans; j++) {
            const mesh_span_t *sp = span_rec(s, j);
            if (sp && sp->target && !os_segment_alias(slab_start(s) + span_off(s, j), slab_start(sp->target) + span_off(sp->target, sp->tspan),
                                                span_bytes(s->bsize)))
                mh_fatal("fork: cannot map a meshed span in the child");
        }
    }
}

/* In the child, with every allocator lock held since fork_prepare. */
static void child_copy(void) {
    if (child_copied) return;
    child_copied = true;
    child_fd = os_backing_fork_begin();
    if (child_fd < 0) mh_fatal("fork: cannot make the child's copy of the heap (memfd_create)");
    miniheap_foreach(copy_mh, NULL);
    os_backing_fork_end(child_fd);
    miniheap_foreach(remap_mh, NULL);
}

void mesh_fork_child(void) {
    if (!__atomic_load_n(&mh_meshing, __ATOMIC_RELAXED)) return;
    child_copy();
    if (fork_pipe[0] >= 0) os_close(fork_pipe[0]);
    if (fork_pipe[1] >= 0) {
        os_write_fd(fork_pipe[1], "c", 1);
        os_close(fork_pipe[1]);
    }
    fork_pipe[0] = fork_pipe[1] = -1;
    atomic_store_explicit(&fork_pid, -1, memory_order_relaxed);
    atomic_fetch_add(&fork_seq, 1);
}

/* ---- set-up, statistics, checks ------------------------------------------------------ */

/* Miniheaps' backing follows the option whenever none exists (at start-up,
 * after mh_reset): called with the heap lock held before a miniheap is made. */
void mesh_init(void) {
    bool want = OPT(mesh) && !track_active();
    static bool warned;
    if (OPT(mesh) && !want && !mh_meshing) {
        static const char msg[] = "miniheap: warning: mesh=1 is off under valgrind and the sanitizers\n";
        if (!warned) os_write_stderr(msg, sizeof msg - 1);
        warned = true;
        __atomic_store_n(&mh_opt.mesh, 0, __ATOMIC_RELAXED);
    }
    if (want && !mh_meshing) {
        if (os_shared_backing_init()) {
            __atomic_store_n(&mh_meshing, 1, __ATOMIC_RELAXED);
        } else {
            static const char msg[] = "miniheap: warning: mesh=1 needs memfd_create and no file size limit; meshing is off\n";
            if (!warned) os_write_stderr(msg, sizeof msg - 1);
            warned = true;
            __atomic_store_n(&mh_opt.mesh, 0, __ATOMIC_RELAXED);
        }
    } else if (!want && mh_meshing) {
        os_shared_backing_close();
        __atomic_store_n(&mh_meshing, 0, __ATOMIC_RELAXED);
    }
}

void mesh_stats(uint64_t *meshes, size_t *bytes) {
    *meshes = atomic_load(&n_meshes);
    *bytes = atomic_load(&meshed_bytes);
}

const char *mesh_check_slab(const slab_t *s) {
    const slab_mesh_t *m = s->mesh;
    if (!m) return NULL;
    uint32_t active = 0;
    if (m->nspans != span_count(s)) return "a slab's mesh record has the wrong number of spans";
    for (uint32_t j = 0; j < m->nspans; j++) {
        const mesh_span_t *sp = span_rec(s, j);
        uint32_t first = span_first(s, j), n = span_slots(s, j);
        if (!sp) continue;
        if (sp->target && sp->refs) return "a meshed span is both a source and a target";
        if (!sp->target && !sp->refs) return "a slab's mesh record keeps an entry for an idle span";
        active++;
        for (uint32_t r = 0; sp->refs && r < n; r++)
            if (bit4(sp->held, r) && map_bit(s->free_map, first + r)) return "a slot held for a meshed span is free in its target";
        if (!sp->target) continue;
        const slab_t *t = sp->target;
        if (t->bsize != s->bsize || t->arena != s->arena) return "a span meshed across classes or arenas";
        const mesh_span_t *tp = span_rec(t, sp->tspan);
        if (!tp || !tp->refs || tp->target) return "a meshed span's target does not know it";
        if (span_phase(t, sp->tspan) != span_phase(s, j)) return "a span meshed onto one of another slot layout";
        for (uint32_t r = 0; r < n; r++) {
            uint32_t x = first + r;
            bool own = bit4(sp->own, r);
            if (map_bit(s->free_map, x)) return "a slot of a meshed-away span is free in its slab";
            if (!own && slab_live(s, x)) return "a live block of a meshed span is not owned by it";
            if (own && !bit4(tp->held, r)) return "a slot a meshed span owns is not held by its target";
        }
    }
    if (active != m->active) return "a slab's count of meshed spans is wrong";
    return NULL;
}
