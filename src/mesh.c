/* Meshing (as in Mesh, PLDI 2019): two spans of one size class whose used
 * slots do not overlap come to share one physical span, and the pages of
 * the other go back to the system. No pointer moves.
 *
 * With mesh=1, miniheaps are views of one memfd at file offset == address
 * (os.c). A span is the shortest run of whole pages that holds whole blocks:
 * lcm(block size, 4096) bytes, K blocks (K is a power of two). Meshing
 * source span B:j onto target span A:i copies B's used blocks into the same
 * slots of A:i, maps B:j's pages onto A:i's file pages and punches B:j's own.
 *
 * Who owns a slot while B:j is meshed onto A:i: slot k of both is one
 * physical slot. B keeps the blocks it had there (own: live, or in a cache),
 * all of B:j's slots stay out of B's free map, and A's slot k stays out of
 * A's free map while B owns it. When B frees a block of B:j, the slot goes
 * to A. When B owns nothing in B:j any more, B:j is mapped back onto its own
 * (punched, so zero) pages and its slots are free in B again. So a target
 * never empties while a source still uses it, and every slab goes back to
 * its miniheap with no meshing left. A target may take several sources; a
 * source is never a target, and a target never a source.
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

typedef struct mesh_span {
    slab_t *target;      /* set: this span is a source, its pages are target's span tspan */
    uint16_t tspan;
    uint16_t refs;       /* a target: the sources mapped onto this span */
    uint64_t own[4];     /* a source: the slots (of K) whose blocks it still owns */
} mesh_span_t;

typedef struct slab_mesh {
    size_t bytes;
    uint32_t active;     /* spans that are a source or a target */
    uint32_t nspans;
    mesh_span_t span[];
} slab_mesh_t;

static _Atomic uint64_t n_meshes;      /* meshes made since start */
static _Atomic size_t meshed_bytes;    /* source bytes mapped onto other spans now */

/* K = 4096 / gcd(block size, 4096): at most 256, as block sizes are
 * multiples of 16. */
static uint32_t span_slots(uint32_t bsize) { return 4096u >> __builtin_ctz(bsize | 4096u); }
static uint32_t span_count(const slab_t *s) {
    uint32_t k = span_slots(s->bsize);
    if (k < 2 || s->zero || s->front) return 0; /* a front redzone shifts blocks off page boundaries */
    return s->capacity / k;
}

/* Bits [first, first + k) of map, k a power of two <= 256, first a multiple of k. */
static void bits_get(const uint64_t *map, uint32_t first, uint32_t k, uint64_t out[4]) {
    memset(out, 0, 4 * sizeof(uint64_t));
    if (k >= 64) {
        memcpy(out, &map[first >> 6], (k >> 6) * sizeof(uint64_t));
    } else {
        out[0] = (map[first >> 6] >> (first & 63)) & (((uint64_t)1 << k) - 1);
    }
}
static void bits_set_span(uint64_t *map, uint32_t first, uint32_t k, const uint64_t in[4], bool set) {
    if (k >= 64) {
        for (uint32_t w = 0; w < (k >> 6); w++)
            map[(first >> 6) + w] = set ? map[(first >> 6) + w] | in[w] : map[(first >> 6) + w] & ~in[w];
    } else {
        uint64_t m = in[0] << (first & 63);
        map[first >> 6] = set ? map[first >> 6] | m : map[first >> 6] & ~m;
    }
}
static uint32_t popcount4(const uint64_t v[4]) {
    return (uint32_t)(__builtin_popcountll(v[0]) + __builtin_popcountll(v[1]) +
                      __builtin_popcountll(v[2]) + __builtin_popcountll(v[3]));
}
static uint64_t full_mask(uint32_t k, uint32_t w) {
    if (k >= 64) return w < (k >> 6) ? ~(uint64_t)0 : 0;
    return w == 0 ? (((uint64_t)1 << k) - 1) : 0;
}

/* ---- ownership: frees into a source span ---------------------------------- */

bool mesh_redirect(slab_t *s, uint32_t idx, slab_t **target, uint32_t *tidx) {
    uint32_t k = span_slots(s->bsize), j = idx / k, i = idx % k;
    slab_mesh_t *m = s->mesh;
    if (j >= m->nspans || !m->span[j].target) return false;
    mesh_span_t *sp = &m->span[j];
    if (!(sp->own[i >> 6] >> (i & 63) & 1)) mh_fatal("metadata-corruption: a block of a meshed span went back twice");
    *target = sp->target;
    *tidx = sp->tspan * k + i;
    return true;
}

static void record_free(slab_t *s) {
    if (s->mesh && s->mesh->active == 0) {
        meta_free(s->mesh, s->mesh->bytes);
        s->mesh = NULL;
    }
}

/* B:j owns nothing any more: its own pages (punched, zero) come back. */
static void unmesh(slab_t *s, uint32_t j) {
    uint32_t k = span_slots(s->bsize);
    size_t bytes = (size_t)k * s->bsize;
    uint8_t *at = slab_start(s) + (size_t)j * bytes;
    mesh_span_t *sp = &s->mesh->span[j];
    if (!os_segment_alias(at, at, bytes)) mh_fatal("cannot map a meshed span back onto its own pages");
    atomic_fetch_add(&slab_guard_budget, 2);
    uint64_t all[4];
    for (uint32_t w = 0; w < 4; w++) all[w] = full_mask(k, w);
    bits_set_span(s->free_map, j * k, k, all, true);
    if (s->poisoned) bits_set_span(s->poisoned, j * k, k, all, false);
    __atomic_store_n(&s->used, s->used - k, __ATOMIC_RELAXED);
    if (j * k / 64 < s->hint) s->hint = j * k / 64;
    uint32_t p0 = (uint32_t)((size_t)j * bytes >> MH_PAGE_SHIFT), np = (uint32_t)(bytes >> MH_PAGE_SHIFT);
    for (uint32_t p = p0; p < p0 + np; p++) s->purged[p >> 6] |= (uint64_t)1 << (p & 63);
    slab_t *t = sp->target;
    mesh_span_t *tp = &t->mesh->span[sp->tspan];
    if (--tp->refs == 0) t->mesh->active--;
    sp->target = NULL;
    s->mesh->active--;
    atomic_fetch_sub(&meshed_bytes, bytes);
    record_free(t);
    if (t != s) record_free(s);
}

bool mesh_source_freed(slab_t *s, uint32_t idx) {
    uint32_t k = span_slots(s->bsize), j = idx / k, i = idx % k;
    mesh_span_t *sp = &s->mesh->span[j];
    sp->own[i >> 6] &= ~((uint64_t)1 << (i & 63));
    if (sp->own[0] | sp->own[1] | sp->own[2] | sp->own[3]) return false;
    unmesh(s, j);
    return true;
}

void mesh_slab_forget(slab_t *s) {
    if (!s->mesh) return;
    for (uint32_t j = 0; j < s->mesh->nspans; j++) /* the aliases go with the heap */
        if (s->mesh->span[j].target) atomic_fetch_add(&slab_guard_budget, 2);
    meta_free(s->mesh, s->mesh->bytes);
    s->mesh = NULL;
    atomic_store(&meshed_bytes, 0);
}

void mesh_slab_release(slab_t *s) {
    if (!s->mesh) return;
    if (s->mesh->active) mh_fatal("metadata-corruption: a slab given back while still meshed");
    record_free(s);
}

/* ---- the write barrier ------------------------------------------------------ */

static _Atomic uintptr_t win_lo, win_hi;
static _Atomic uint32_t win_seq;      /* odd while a span is being copied */
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

static bool ensure_record(slab_t *s) {
    if (s->mesh) return true;
    uint32_t n = span_count(s);
    size_t bytes = sizeof(slab_mesh_t) + (size_t)n * sizeof(mesh_span_t);
    slab_mesh_t *m = meta_alloc(bytes);
    if (!m) return false;
    m->bytes = bytes;
    m->nspans = n;
    s->mesh = m;
    return true;
}

/* The pages of A's span i that the blocks of occ were copied into hold
 * data now: no longer purged. */
static void mark_resident(slab_t *a, uint32_t i, const uint64_t occ[4]) {
    uint32_t q0 = (uint32_t)((size_t)i * span_slots(a->bsize) * a->bsize >> MH_PAGE_SHIFT);
    for (uint32_t w = 0; w < 4; w++)
        for (uint64_t bits = occ[w]; bits; bits &= bits - 1) {
            size_t off = (size_t)(w * 64 + (uint32_t)__builtin_ctzll(bits)) * a->bsize;
            bits_clear_range(a->purged, q0 + (uint32_t)(off >> MH_PAGE_SHIFT),
                             q0 + (uint32_t)((off + a->bsize - 1) >> MH_PAGE_SHIFT));
        }
}

/* Mesh B:j (its used slots occ, count n) onto A:i. Class lock held. */
static bool mesh_pair(slab_t *a, uint32_t i, slab_t *b, uint32_t j, const uint64_t occ[4], uint32_t n) {
    uint32_t k = span_slots(a->bsize);
    size_t bytes = (size_t)k * a->bsize;
    uint8_t *src = slab_start(b) + (size_t)j * bytes, *dst = slab_start(a) + (size_t)i * bytes;
    if (!ensure_record(a) || !ensure_record(b)) {
        record_free(a);
        record_free(b);
        return false;
    }
    /* Each alias may split a mapping in three: the same budget as guards. */
    if (atomic_fetch_sub(&slab_guard_budget, 2) <= 2) {
        atomic_fetch_add(&slab_guard_budget, 2);
        record_free(a);
        record_free(b);
        return false;
    }
    atomic_store(&win_lo, (uintptr_t)src);
    atomic_store(&win_hi, (uintptr_t)src + bytes);
    atomic_fetch_add(&win_seq, 1);
    bool ok = os_protect_read(src, bytes), copied = false;
    if (ok) {
        for (uint32_t w = 0; w < 4; w++)
            for (uint64_t bits = occ[w]; bits; bits &= bits - 1) {
                size_t off = (size_t)(w * 64 + (uint32_t)__builtin_ctzll(bits)) * a->bsize;
                copy_block(dst + off, src + off, a->bsize);
            }
        copied = true;
        ok = os_segment_alias(src, dst, bytes);
    }
    /* The data is still in B's own pages: map them back writable (a failed
     * mprotect may have changed part of the span). */
    if (!ok && !os_segment_alias(src, src, bytes)) mh_fatal("meshing: cannot map a span back after a failed remap");
    atomic_fetch_add(&win_seq, 1);
    os_futex_wake(&win_seq);
    if (!ok) {
        /* A's free slots of occ hold B's bytes now, not poison, and their
         * pages are resident. */
        if (copied) {
            if (a->poisoned) bits_set_span(a->poisoned, i * k, k, occ, false);
            mark_resident(a, i, occ);
        }
        atomic_fetch_add(&slab_guard_budget, 2);
        record_free(a);
        record_free(b);
        return false;
    }
    os_segment_punch(src, bytes);

    /* B: the whole span is out of its free map; it owns occ. */
    uint64_t fb[4];
    bits_get(b->free_map, j * k, k, fb);
    bits_set_span(b->free_map, j * k, k, fb, false);
    __atomic_store_n(&b->used, b->used + popcount4(fb), __ATOMIC_RELAXED);
    if (b->poisoned) { /* what was poisoned there is the target's memory now */
        uint64_t all[4];
        for (uint32_t w = 0; w < 4; w++) all[w] = full_mask(k, w);
        bits_set_span(b->poisoned, j * k, k, all, false);
    }
    uint32_t p0 = (uint32_t)((size_t)j * bytes >> MH_PAGE_SHIFT), np = (uint32_t)(bytes >> MH_PAGE_SHIFT);
    for (uint32_t p = p0; p < p0 + np; p++) b->purged[p >> 6] |= (uint64_t)1 << (p & 63); /* not B's memory */
    mesh_span_t *sp = &b->mesh->span[j];
    sp->target = a;
    sp->tspan = (uint16_t)i;
    memcpy(sp->own, occ, sizeof sp->own);
    b->mesh->active++;
    /* A: those slots are B's while B owns them. */
    bits_set_span(a->free_map, i * k, k, occ, false);
    if (a->poisoned) bits_set_span(a->poisoned, i * k, k, occ, false);
    __atomic_store_n(&a->used, a->used + n, __ATOMIC_RELAXED);
    mark_resident(a, i, occ);
    if (a->mesh->span[i].refs++ == 0) a->mesh->active++;
    atomic_fetch_add(&n_meshes, 1);
    atomic_fetch_add(&meshed_bytes, bytes);
    return true;
}

/* ---- finding pairs ---------------------------------------------------------------- */

typedef struct cand {
    slab_t *s;
    uint32_t span, count;
    uint32_t role;          /* 0: either, 1: a target (no more a source), 2: meshed away */
    bool may_source;        /* not a target already */
    uint64_t occ[4];
} cand_t;

/* Passes run one at a time (under mh_tick_lock), so one table serves. */
#define MAX_CANDS 512
static cand_t cands[MAX_CANDS];
static uint16_t order[MAX_CANDS];

/* Pages of s's span j that hold data now, and pages of it that the blocks
 * of occ would make resident if copied in. */
static uint32_t resident_pages(const slab_t *s, uint32_t j, size_t bytes) {
    uint32_t p0 = (uint32_t)((size_t)j * bytes >> MH_PAGE_SHIFT), np = (uint32_t)(bytes >> MH_PAGE_SHIFT), r = 0;
    for (uint32_t p = p0; p < p0 + np; p++) r += !(s->purged[p >> 6] >> (p & 63) & 1);
    return r;
}
static uint32_t pages_to_fill(const slab_t *s, uint32_t i, size_t bytes, const uint64_t occ[4]) {
    uint32_t p0 = (uint32_t)((size_t)i * bytes >> MH_PAGE_SHIFT), n = 0;
    uint64_t seen[2] = {0, 0};
    for (uint32_t w = 0; w < 4; w++)
        for (uint64_t bits = occ[w]; bits; bits &= bits - 1) {
            size_t off = (size_t)(w * 64 + (uint32_t)__builtin_ctzll(bits)) * s->bsize;
            for (uint32_t p = p0 + (uint32_t)(off >> MH_PAGE_SHIFT); p <= p0 + (uint32_t)((off + s->bsize - 1) >> MH_PAGE_SHIFT); p++) {
                if ((seen[p >> 6] >> (p & 63)) & 1) continue;
                seen[p >> 6] |= (uint64_t)1 << (p & 63);
                n += (s->purged[p >> 6] >> (p & 63)) & 1;
            }
        }
    return n;
}

static uint32_t collect(class_bins_t *b, uint32_t k) {
    uint32_t n = 0;
    for (uint32_t q = 1; q < MH_BUCKETS && n < MAX_CANDS; q++) {
        for (slab_t *s = b->bucket[q]; s && n < MAX_CANDS; s = s->next) {
            /* Only settled slabs: one freed into since the last give-back
             * pass may be emptying still. */
            if (s->on_dirty) continue;
            uint32_t ns = span_count(s);
            for (uint32_t j = 0; j < ns && n < MAX_CANDS; j++) {
                const mesh_span_t *sp = s->mesh ? &s->mesh->span[j] : NULL;
                if (sp && sp->target) continue; /* meshed away already */
                uint64_t fb[4];
                bits_get(s->free_map, j * k, k, fb);
                cand_t *c = &cands[n];
                for (uint32_t w = 0; w < 4; w++) c->occ[w] = ~fb[w] & full_mask(k, w);
                c->count = popcount4(c->occ);
                if (c->count == 0 || c->count == k) continue;
                c->s = s;
                c->span = j;
                c->role = 0;
                /* Sources: at most half full (what moves is copied); any
                 * partly used span may take one. */
                c->may_source = !(sp && sp->refs) && c->count <= k / 2;
                n++;
            }
        }
    }
    return n;
}

/* One look at a class's partly used slabs: pair sparse spans whose used
 * slots do not overlap, the sparsest onto the fullest that takes it. */
void mesh_bins(class_bins_t *b) {
    if (!__atomic_load_n(&mh_meshing, __ATOMIC_RELAXED)) return;
    slab_t *any = b->bucket[1] ? b->bucket[1] : b->bucket[2];
    for (uint32_t q = 1; !any && q < MH_BUCKETS; q++) any = b->bucket[q];
    if (!any || !span_count(any)) return;
    uint32_t k = span_slots(any->bsize);
    size_t bytes = (size_t)k * any->bsize;
    uint32_t n = collect(b, k);
    if (n < 2) return;
    /* Fullest first (a counting sort: counts are at most 256). */
    uint32_t m = 0;
    for (uint32_t c = k; c > 0 && m < n; c--)
        for (uint32_t x = 0; x < n; x++)
            if (cands[x].count == c) order[m++] = (uint16_t)x;
    for (uint32_t si = n; si-- > 0;) {
        cand_t *src = &cands[order[si]];
        if (src->role || !src->may_source) continue;
        if (resident_pages(src->s, src->span, bytes) == 0) continue;
        /* The fullest first, a bounded number of tries (as Mesh's probes). */
        for (uint32_t ti = 0, tries = 0; ti < n && tries < 64; ti++) {
            cand_t *dst = &cands[order[ti]];
            if (dst == src || dst->role == 2 || dst->count + src->count > k) continue;
            tries++;
            if ((dst->occ[0] & src->occ[0]) | (dst->occ[1] & src->occ[1]) |
                (dst->occ[2] & src->occ[2]) | (dst->occ[3] & src->occ[3]))
                continue;
            /* Worth it only if it frees more pages than it fills. */
            if (pages_to_fill(dst->s, dst->span, bytes, src->occ) >= resident_pages(src->s, src->span, bytes)) continue;
            if (!mesh_pair(dst->s, dst->span, src->s, src->span, src->occ, src->count)) return;
            for (uint32_t w = 0; w < 4; w++) dst->occ[w] |= src->occ[w];
            dst->count += src->count;
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
        uint32_t k = span_slots(s->bsize);
        size_t bytes = (size_t)k * s->bsize;
        for (uint32_t j = 0; j < s->mesh->nspans; j++) {
            const mesh_span_t *sp = &s->mesh->span[j];
            if (sp->target && !os_segment_alias(slab_start(s) + j * bytes, slab_start(sp->target) + sp->tspan * bytes, bytes))
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
    uint32_t k = span_slots(s->bsize), active = 0;
    if (m->nspans != span_count(s)) return "a slab's mesh record has the wrong number of spans";
    for (uint32_t j = 0; j < m->nspans; j++) {
        const mesh_span_t *sp = &m->span[j];
        if (sp->target && sp->refs) return "a meshed span is both a source and a target";
        if (sp->target || sp->refs) active++;
        if (!sp->target) continue;
        uint64_t fb[4], tf[4];
        bits_get(s->free_map, j * k, k, fb);
        if (fb[0] | fb[1] | fb[2] | fb[3]) return "a slot of a meshed-away span is free in its slab";
        for (uint32_t x = 0; x < k; x++) { /* its live blocks are blocks it owns */
            uint32_t idx = j * k + x;
            if (slab_live(s, idx) && !(sp->own[x >> 6] >> (x & 63) & 1)) return "a live block of a meshed span is not owned by it";
        }
        const slab_t *t = sp->target;
        if (!t->mesh || sp->tspan >= t->mesh->nspans || !t->mesh->span[sp->tspan].refs || t->mesh->span[sp->tspan].target)
            return "a meshed span's target does not know it";
        bits_get(t->free_map, sp->tspan * k, k, tf);
        if ((tf[0] & sp->own[0]) | (tf[1] & sp->own[1]) | (tf[2] & sp->own[2]) | (tf[3] & sp->own[3]))
            return "a slot a meshed span owns is free in its target";
        if (t->bsize != s->bsize || t->arena != s->arena) return "a span meshed across classes or arenas";
    }
    if (active != m->active) return "a slab's count of meshed spans is wrong";
    return NULL;
}
