/* Meshing (as in Mesh, PLDI 2019): two pages of one size class whose used
 * bytes do not overlap come to share one physical page, and the other page
 * goes back to the system. No pointer moves.
 *
 * With mesh=1, miniheaps are views of one memfd at file offset == address
 * (os.c), and slabs of blocks smaller than a page are meshed page by page.
 * A page's use is a map of its 256 16-byte granules (block sizes are
 * multiples of 16). Meshing source page B:j onto target page A:i, whose
 * granule maps are disjoint, copies the parts of B's used blocks that lie
 * in B:j to the same offsets of A:i, maps B:j onto A:i's file page and
 * punches B:j's own. The two slabs' blocks need not line up: blocks cross
 * page edges, and page j of a slab starts j * 4096 mod the block size into
 * a block.
 *
 * Who owns what while B:j is meshed onto A:i: B owns the blocks it used on
 * B:j (live, or in a cache; own: by slot, counted from the first slot that
 * touches the page); every other slot of B touching B:j is "parked", out of
 * B's free map, since its bytes there would be A's. A:i "holds" the
 * granules its sources own (held), and every slot of A whose bytes on A:i
 * meet a held granule is out of A's free map. When B frees an owned block,
 * its granules are released, and each slot of A they freed goes back to A
 * (unless another source holds a part of it, or a meshed-away page of A
 * parks it). When B owns nothing on B:j any more, B:j is mapped back onto
 * its own (punched, so zero) page and its slots are free in B again, but
 * for one that another page parks or holds. So a target never empties
 * while a source still uses it, and every slab goes back to its miniheap
 * with no meshing left. A target page may take several sources (their
 * granules are disjoint); a source page is never a target, and a target
 * page never a source.
 *
 * Writes while blocks are copied: B:j is read-only for that time, and a
 * thread that writes there faults and waits in the fault handler until the
 * remap is done (then its write lands in the shared page). The kernel cannot
 * wait: a system call that writes into B:j's blocks in that window (read(2)
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

typedef struct mesh_page {
    slab_t *target;      /* set: this page is a source, backed by target's page tpage */
    uint16_t tpage;
    uint16_t refs;       /* a target: the source pages mapped onto this one */
    bool in_use;         /* the entry is some page's */
    uint64_t own[4];     /* a source: the slots (r) whose blocks it still owns */
    uint64_t held[4];    /* a target: the granules its sources own */
} mesh_page_t;

/* A slab's meshing: entries only for the pages that are a source or a
 * target (a slab of 128 pages seldom has more than a few), and a 16-bit
 * index per page. */
typedef struct slab_mesh {
    size_t bytes;        /* of this record */
    uint32_t active;     /* pages that are a source or a target */
    uint32_t npages;
    mesh_page_t *ent;
    uint32_t nent;       /* entries ent has room for */
    uint16_t at[];       /* per page: its entry + 1 (0: none) */
} slab_mesh_t;

static _Atomic uint64_t n_meshes;      /* meshes made since start */
static _Atomic size_t meshed_bytes;    /* source bytes mapped onto other pages now */

/* Pages that can mesh: those whose every touching slot exists (the tail of
 * a slab is not one), in slabs of blocks under a page that start at page
 * offsets a block size apart (a front redzone would shift them). At most
 * 256 slots touch a page (16-byte blocks). */
static uint32_t page_count(const slab_t *s) {
    if (s->zero || s->front || s->bsize >= MH_PAGE) return 0;
    return (uint32_t)(((size_t)s->capacity * s->bsize) >> MH_PAGE_SHIFT);
}
static size_t page_off(uint32_t j) { return (size_t)j << MH_PAGE_SHIFT; }
static uint32_t page_first(const slab_t *s, uint32_t j) { return (uint32_t)(page_off(j) / s->bsize); }
static uint32_t page_slots(const slab_t *s, uint32_t j) {
    return (uint32_t)((page_off(j + 1) - 1) / s->bsize) - page_first(s, j) + 1;
}
/* The pages slot x touches: j0 .. j1 (one or two). */
static void slot_pages(const slab_t *s, uint32_t x, uint32_t *j0, uint32_t *j1) {
    size_t lo = (size_t)x * s->bsize;
    *j0 = (uint32_t)(lo >> MH_PAGE_SHIFT);
    *j1 = (uint32_t)((lo + s->bsize - 1) >> MH_PAGE_SHIFT);
}
static bool map_bit(const uint64_t *map, uint32_t x) { return map[x >> 6] >> (x & 63) & 1; }
static void map_put(uint64_t *map, uint32_t x, bool on) {
    if (on) map[x >> 6] |= (uint64_t)1 << (x & 63);
    else map[x >> 6] &= ~((uint64_t)1 << (x & 63));
}
static bool any4(const uint64_t v[4]) { return (v[0] | v[1] | v[2] | v[3]) != 0; }
static bool meet4(const uint64_t a[4], const uint64_t b[4]) {
    return ((a[0] & b[0]) | (a[1] & b[1]) | (a[2] & b[2]) | (a[3] & b[3])) != 0;
}
static uint32_t popcount4(const uint64_t v[4]) {
    return (uint32_t)(__builtin_popcountll(v[0]) + __builtin_popcountll(v[1]) +
                      __builtin_popcountll(v[2]) + __builtin_popcountll(v[3]));
}
/* The bytes of page j that slot x covers, [*lo, *hi) from the page's
 * start, and the granules they are. */
static void slot_extent(const slab_t *s, uint32_t x, uint32_t j, size_t *lo, size_t *hi) {
    size_t a = (size_t)x * s->bsize, b = a + s->bsize;
    *lo = (a < page_off(j) ? page_off(j) : a) - page_off(j);
    *hi = (b > page_off(j + 1) ? page_off(j + 1) : b) - page_off(j);
}
static void slot_granules(const slab_t *s, uint32_t x, uint32_t j, uint64_t g[4]) {
    size_t lo, hi;
    slot_extent(s, x, j, &lo, &hi);
    for (uint32_t w = 0; w < 4; w++) { /* granules [lo/16, hi/16) that fall in word w */
        uint32_t base = w * 64, a = (uint32_t)(lo >> 4), b = (uint32_t)(hi >> 4);
        a = a > base ? a - base : 0;
        b = b > base ? (b - base < 64 ? b - base : 64) : 0;
        g[w] = a >= b ? 0 : (b - a == 64 ? ~(uint64_t)0 : (((uint64_t)1 << (b - a)) - 1) << a);
    }
}
static mesh_page_t *page_rec(const slab_t *s, uint32_t j) {
    const slab_mesh_t *m = s->mesh;
    return m && j < m->npages && m->at[j] ? &m->ent[m->at[j] - 1] : NULL;
}
/* Page j is neither a source nor a target any more: its entry is free. */
static void page_drop(slab_t *s, uint32_t j) {
    slab_mesh_t *m = s->mesh;
    m->ent[m->at[j] - 1].in_use = false;
    m->at[j] = 0;
}

/* Slot x of s is kept out of the free map by meshing: parked (a page it
 * touches is meshed away and x is not a block s owns there) or held (its
 * bytes on a target page meet granules a source owns there). */
static bool kept_out(const slab_t *s, uint32_t x) {
    uint32_t j0, j1;
    if (!s->mesh) return false;
    slot_pages(s, x, &j0, &j1);
    for (uint32_t j = j0; j <= j1; j++) {
        const mesh_page_t *sp = page_rec(s, j);
        uint64_t g[4];
        if (!sp) continue;
        if (sp->target && !map_bit(sp->own, x - page_first(s, j))) return true;
        if (!sp->refs) continue;
        slot_granules(s, x, j, g);
        if (meet4(g, sp->held)) return true;
    }
    return false;
}

/* Page j's use: the slots s uses (live, or in a cache; not parked or held
 * for another page) by r in own, and their granules and those held for
 * sources in gran. */
static void page_used(const slab_t *s, uint32_t j, uint64_t own[4], uint64_t gran[4]) {
    uint32_t first = page_first(s, j), n = page_slots(s, j);
    const mesh_page_t *sp = page_rec(s, j);
    memset(own, 0, 4 * sizeof(uint64_t));
    memcpy(gran, sp && sp->refs ? sp->held : (const uint64_t[4]){0, 0, 0, 0}, 4 * sizeof(uint64_t));
    for (uint32_t r = 0; r < n; r++) {
        uint32_t x = first + r;
        if (map_bit(s->free_map, x) || kept_out(s, x)) continue;
        uint64_t g[4];
        map_put(own, r, true);
        slot_granules(s, x, j, g);
        for (uint32_t w = 0; w < 4; w++) gran[w] |= g[w];
    }
}

/* ---- ownership: frees into a source page ----------------------------------- */

static void record_free(slab_t *s) {
    slab_mesh_t *m = s->mesh;
    if (m && m->active == 0) {
        if (m->ent) meta_free(m->ent, m->nent * sizeof(mesh_page_t));
        meta_free(m, m->bytes);
        s->mesh = NULL;
    }
}

/* B:j owns nothing any more: its own page (punched, zero) comes back, and
 * its slots are free in B but for those parked or held for another page. */
static void unmesh(slab_t *s, uint32_t j) {
    uint8_t *at = slab_start(s) + page_off(j);
    mesh_page_t *sp = page_rec(s, j);
    if (!os_segment_alias(at, at, MH_PAGE)) mh_fatal("cannot map a meshed page back onto its own");
    atomic_fetch_add(&slab_guard_budget, 2);
    slab_t *t = sp->target;
    uint32_t ti = sp->tpage;
    mesh_page_t *tp = page_rec(t, ti);
    sp->target = NULL;
    page_drop(s, j);
    s->mesh->active--;
    uint32_t first = page_first(s, j), n = page_slots(s, j), back = 0;
    for (uint32_t r = 0; r < n; r++) {
        uint32_t x = first + r;
        if (map_bit(s->free_map, x) || kept_out(s, x)) continue;
        map_put(s->free_map, x, true);
        if (s->poisoned) map_put(s->poisoned, x, false);
        back++;
    }
    __atomic_store_n(&s->used, s->used - back, __ATOMIC_RELAXED);
    if (first / 64 < s->hint) s->hint = first / 64;
    map_put(s->purged, j, true);
    if (--tp->refs == 0) {
        page_drop(t, ti);
        t->mesh->active--;
    }
    atomic_fetch_sub(&meshed_bytes, MH_PAGE);
    record_free(t);
    if (t != s) record_free(s);
}

/* Block idx of B goes back. If B owns it on meshed-away pages: on each
 * target, the block's granules are released and the target's slots they
 * free go back to it (one that lines up with the block exactly keeps the
 * poison tag: its bytes are the poisoned block's); a page that owns nothing
 * more is B's again (*back), and till then B's slot stays parked. Returns
 * false, doing nothing, when B owns no such block. Class lock held. */
bool mesh_free_block(class_bins_t *b, slab_t *s, uint32_t idx, uintptr_t tagged, uint64_t now, bool *back) {
    uint32_t j0, j1, emptied[2], ne = 0;
    bool owned = false;
    slot_pages(s, idx, &j0, &j1);
    for (uint32_t j = j0; j <= j1; j++) {
        mesh_page_t *sp = page_rec(s, j);
        uint32_t r = idx - page_first(s, j);
        if (!sp || !sp->target || !map_bit(sp->own, r)) continue;
        owned = true;
        map_put(sp->own, r, false);
        slab_t *t = sp->target;
        uint32_t ti = sp->tpage;
        mesh_page_t *tp = page_rec(t, ti);
        uint64_t g[4];
        size_t lo, hi;
        slot_granules(s, idx, j, g);
        slot_extent(s, idx, j, &lo, &hi);
        for (uint32_t w = 0; w < 4; w++) {
            if ((tp->held[w] & g[w]) != g[w]) mh_fatal("metadata-corruption: a meshed block is not held by its target");
            tp->held[w] &= ~g[w];
        }
        /* The target's slots over those bytes of its page. */
        size_t tlo = page_off(ti) + lo, thi = page_off(ti) + hi;
        for (uint32_t y = (uint32_t)(tlo / t->bsize); y <= (thi - 1) / t->bsize; y++) {
            if (map_bit(t->free_map, y) || kept_out(t, y)) continue;
            bool same = j0 == j1 && (size_t)y * t->bsize == tlo;
            slab_slot_return(b, t, y, same ? tagged : tagged & ~TAG_POISONED, now);
        }
        if (!any4(sp->own)) emptied[ne++] = j;
    }
    for (uint32_t i = 0; i < ne; i++) unmesh(s, emptied[i]);
    *back = ne != 0;
    return owned;
}

void mesh_slab_forget(slab_t *s) {
    if (!s->mesh) return;
    for (uint32_t j = 0; j < s->mesh->npages; j++) { /* the aliases go with the heap */
        const mesh_page_t *sp = page_rec(s, j);
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
MH_NO_TSAN static void copy_block(uint8_t *dst, const uint8_t *src, size_t n) {
    volatile uint64_t *d = (volatile uint64_t *)(void *)dst;
    const volatile uint64_t *s = (const volatile uint64_t *)(const void *)src;
    for (size_t i = 0; i < n / 8; i++) d[i] = s[i];
}

/* The entry of s's page j, made if need be (false: no metadata). Entries
 * may move when one is made: pointers to them are taken after. */
static bool page_take(slab_t *s, uint32_t j) {
    slab_mesh_t *m = s->mesh;
    if (!m) {
        uint32_t n = page_count(s);
        size_t bytes = sizeof(slab_mesh_t) + (size_t)n * sizeof(uint16_t);
        if (!(m = meta_alloc(bytes))) return false;
        m->bytes = bytes;
        m->npages = n;
        s->mesh = m;
    }
    if (m->at[j]) return true;
    uint32_t e = 0;
    while (e < m->nent && m->ent[e].in_use) e++;
    if (e == m->nent) {
        uint32_t n = m->nent ? 2 * m->nent : 4;
        mesh_page_t *ent = meta_alloc(n * sizeof(mesh_page_t));
        if (!ent) return false;
        if (m->ent) {
            memcpy(ent, m->ent, m->nent * sizeof(mesh_page_t));
            meta_free(m->ent, m->nent * sizeof(mesh_page_t));
        }
        m->ent = ent;
        m->nent = n;
    }
    memset(&m->ent[e], 0, sizeof m->ent[e]);
    m->ent[e].in_use = true;
    m->at[j] = (uint16_t)(e + 1);
    return true;
}
/* An entry page_take made and mesh_pair did not use. */
static void page_untake(slab_t *s, uint32_t j) {
    const mesh_page_t *sp = page_rec(s, j);
    if (sp && !sp->target && !sp->refs) page_drop(s, j);
    record_free(s);
}

/* Mesh B:j (the slots it uses there, own, whose bytes there are gran) onto
 * A:i. Class lock held. */
static bool mesh_pair(slab_t *a, uint32_t i, slab_t *b, uint32_t j, const uint64_t own[4], const uint64_t gran[4]) {
    uint8_t *src = slab_start(b) + page_off(j), *dst = slab_start(a) + page_off(i);
    bool ok = page_take(a, i) && page_take(b, j);
    /* Each alias may split a mapping in three: the same budget as guards. */
    if (ok && atomic_fetch_sub(&slab_guard_budget, 2) <= 2) {
        atomic_fetch_add(&slab_guard_budget, 2);
        ok = false;
    }
    if (!ok) {
        page_untake(a, i);
        page_untake(b, j);
        return false;
    }
    atomic_store(&win_lo, (uintptr_t)src);
    atomic_store(&win_hi, (uintptr_t)src + MH_PAGE);
    atomic_fetch_add(&win_seq, 1);
    ok = os_protect_read(src, MH_PAGE);
    if (ok) {
        /* Runs of used granules, at the same offsets. */
        for (uint32_t k = 0; k < 256;) {
            if (!map_bit(gran, k)) { k++; continue; }
            uint32_t e = k;
            while (e < 256 && map_bit(gran, e)) e++;
            copy_block(dst + k * 16, src + k * 16, (size_t)(e - k) * 16);
            k = e;
        }
        ok = os_segment_alias(src, dst, MH_PAGE);
    }
    /* The data is still in B's own page: map it back writable (a failed
     * mprotect may have left it read-only). */
    if (!ok && !os_segment_alias(src, src, MH_PAGE)) mh_fatal("meshing: cannot map a page back after a failed remap");
    atomic_fetch_add(&win_seq, 1);
    os_futex_wake(&win_seq);
    uint32_t afirst = page_first(a, i), an = page_slots(a, i);
    if (!ok) {
        /* A's free slots there may hold B's bytes now, not poison. */
        for (uint32_t q = 0; a->poisoned && q < an; q++) {
            uint64_t g[4];
            slot_granules(a, afirst + q, i, g);
            if (meet4(g, gran)) map_put(a->poisoned, afirst + q, false);
        }
        atomic_fetch_add(&slab_guard_budget, 2);
        page_untake(a, i);
        page_untake(b, j);
        return false;
    }
    os_segment_punch(src, MH_PAGE);

    /* B: the page's free slots are parked; it owns own. What was poisoned
     * there is the target's memory now. */
    uint32_t bfirst = page_first(b, j), bn = page_slots(b, j), parked_now = 0;
    for (uint32_t r = 0; r < bn; r++) {
        uint32_t x = bfirst + r;
        if (b->poisoned) map_put(b->poisoned, x, false);
        if (!map_bit(b->free_map, x)) continue;
        map_put(b->free_map, x, false);
        parked_now++;
    }
    __atomic_store_n(&b->used, b->used + parked_now, __ATOMIC_RELAXED);
    map_put(b->purged, j, true); /* not B's memory */
    mesh_page_t *sp = page_rec(b, j);
    sp->target = a;
    sp->tpage = (uint16_t)i;
    memcpy(sp->own, own, sizeof sp->own);
    b->mesh->active++;
    /* A: it holds B's granules; its slots that meet them are out of its
     * free map (a slot A parks is out already). */
    mesh_page_t *tp = page_rec(a, i);
    for (uint32_t w = 0; w < 4; w++) tp->held[w] |= gran[w];
    uint32_t taken = 0;
    for (uint32_t q = 0; q < an; q++) {
        uint32_t y = afirst + q;
        uint64_t g[4];
        slot_granules(a, y, i, g);
        if (!meet4(g, gran)) continue;
        if (a->poisoned) map_put(a->poisoned, y, false);
        if (!map_bit(a->free_map, y)) continue;
        map_put(a->free_map, y, false);
        taken++;
    }
    __atomic_store_n(&a->used, a->used + taken, __ATOMIC_RELAXED);
    map_put(a->purged, i, false);
    if (tp->refs++ == 0) a->mesh->active++;
    atomic_fetch_add(&n_meshes, 1);
    atomic_fetch_add(&meshed_bytes, MH_PAGE);
    return true;
}

/* ---- finding pairs ---------------------------------------------------------------- */

typedef struct cand {
    slab_t *s;
    uint16_t page, count;   /* count: used granules */
    uint8_t role;           /* 0: either, 1: a target (no more a source), 2: meshed away */
    bool may_source;
    uint64_t own[4], gran[4];
} cand_t;

/* Passes run one at a time (under mh_locks.tick), so one table serves. */
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
            uint32_t ns = page_count(s);
            for (uint32_t j = 0; j < ns && n < MAX_CANDS; j++) {
                const mesh_page_t *sp = page_rec(s, j);
                if (sp && sp->target) continue; /* meshed away already */
                if (map_bit(s->purged, j)) continue; /* nothing there */
                cand_t *c = &cands[n];
                page_used(s, j, c->own, c->gran);
                c->count = (uint16_t)popcount4(c->gran);
                if (c->count == 0 || c->count == 256) continue;
                c->s = s;
                c->page = (uint16_t)j;
                c->role = 0;
                /* Sources: at most half used (what moves is copied), and
                 * no target already. */
                c->may_source = !(sp && sp->refs) && any4(c->own) && c->count <= 128;
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

/* One look at a class's partly used slabs: mesh sparse pages onto the
 * fullest pages whose used bytes they do not meet. */
void mesh_bins(class_bins_t *b) {
    if (!__atomic_load_n(&mh_meshing, __ATOMIC_RELAXED)) return;
    slab_t *any = NULL;
    for (uint32_t q = 1; !any && q < MH_BUCKETS; q++) any = b->bucket[q];
    if (!any || !page_count(any)) return;
    uint32_t n = collect(b);
    if (n < 2) return;
    /* Fullest first; the low 12 bits are the candidate. */
    for (uint32_t x = 0; x < n; x++) order[x] = (uint32_t)(256 - cands[x].count) << 12 | x;
    sort_keys(order, n);
    for (uint32_t si = n; si-- > 0;) {
        cand_t *src = &cands[order[si] & 4095];
        if (src->role || !src->may_source) continue;
        /* The fullest first, a bounded number of tries (as Mesh's probes). */
        for (uint32_t ti = 0, tries = 0; ti < n && tries < 64; ti++) {
            cand_t *dst = &cands[order[ti] & 4095];
            if (dst == src || dst->role == 2 || dst->count + src->count > 256) continue;
            tries++;
            if (meet4(dst->gran, src->gran)) continue;
            if (!mesh_pair(dst->s, dst->page, src->s, src->page, src->own, src->gran)) return;
            for (uint32_t w = 0; w < 4; w++) dst->gran[w] |= src->gran[w];
            dst->count = (uint16_t)(dst->count + src->count);
            dst->role = 1;
            src->role = 2;
            slab_rebucket(b, dst->s);
            slab_rebucket(b, src->s);
            break;
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

/* The forking thread's signal stack, when it is a block of the heap: off
 * from fork_prepare until the heap is writable again. In the child, glibc
 * writes to the heap (the locks of FILEs) before any fork handler runs;
 * the write faults, and the kernel cannot deliver the fault on a read-only
 * signal stack: it killed the child (gdb, which mallocs its signal stack,
 * could start no program with mesh=1). Other threads' signal stacks cannot
 * be switched from here (SECURITY.md). */
static stack_t fork_sigstack;
static bool fork_sigstack_off;

static void sigstack_off(void) {
    uintptr_t lo, hi;
    os_signal_stack(&lo, &hi);
    fork_sigstack_off = false;
    if (lo == hi || (!miniheap_of((void *)lo) && !miniheap_of((void *)(hi - 1)))) return;
    stack_t off = {.ss_flags = SS_DISABLE};
    /* (Fails while the thread runs on it: a fork from a signal handler.) */
    if (os_set_signal_stack(&off, &fork_sigstack) == 0) fork_sigstack_off = true;
}

static void sigstack_back(void) {
    if (!fork_sigstack_off) return;
    fork_sigstack.ss_flags = 0;
    os_set_signal_stack(&fork_sigstack, NULL);
    fork_sigstack_off = false;
}

void mesh_fork_prepare(void) {
    if (!__atomic_load_n(&mh_meshing, __ATOMIC_RELAXED)) return;
    sigstack_off();
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
    sigstack_back();
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
        for (uint32_t j = 0; j < s->mesh->npages; j++) {
            const mesh_page_t *sp = page_rec(s, j);
            if (sp && sp->target && !os_segment_alias(slab_start(s) + page_off(j), slab_start(sp->target) + page_off(sp->tpage), MH_PAGE))
                mh_fatal("fork: cannot map a meshed page in the child");
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
    sigstack_back();
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
    if (m->npages != page_count(s)) return "a slab's mesh record has the wrong number of pages";
    for (uint32_t j = 0; j < m->npages; j++) {
        const mesh_page_t *sp = page_rec(s, j);
        if (!sp) continue;
        uint32_t first = page_first(s, j), n = page_slots(s, j);
        if (sp->target && sp->refs) return "a meshed page is both a source and a target";
        if (!sp->target && !sp->refs) return "a slab's mesh record keeps an entry for an idle page";
        active++;
        for (uint32_t r = 0; sp->refs && r < n; r++) { /* no free slot meets a held granule */
            uint64_t g[4];
            slot_granules(s, first + r, j, g);
            if (meet4(g, sp->held) && map_bit(s->free_map, first + r)) return "a slot held for a meshed page is free in its target";
        }
        if (!sp->target) continue;
        const slab_t *t = sp->target;
        if (t->bsize != s->bsize || t->arena != s->arena) return "a page meshed across classes or arenas";
        const mesh_page_t *tp = page_rec(t, sp->tpage);
        if (!tp || !tp->refs || tp->target) return "a meshed page's target does not know it";
        for (uint32_t r = 0; r < n; r++) {
            uint32_t x = first + r;
            bool own = map_bit(sp->own, r);
            uint64_t g[4];
            slot_granules(s, x, j, g);
            if (map_bit(s->free_map, x)) return "a slot of a meshed-away page is free in its slab";
            if (!own && slab_live(s, x)) return "a live block of a meshed page is not owned by it";
            for (uint32_t w = 0; own && w < 4; w++)
                if ((tp->held[w] & g[w]) != g[w]) return "a block a meshed page owns is not held by its target";
        }
    }
    if (active != m->active) return "a slab's count of meshed pages is wrong";
    return NULL;
}
