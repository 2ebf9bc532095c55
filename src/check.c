/* mh_check: walk the whole heap under its locks and verify the metadata
 * invariants, stated as checks:
 *   - the radix table maps each miniheap's base to its descriptor, and the
 *     unit table each of its units to the miniheap's own unit_slab entry;
 *   - a unit is free exactly when no slab points at it, and used_units counts the others;
 *   - every unit of a slab points at the slab, and the slab at its miniheap;
 *   - used == capacity - (free bits), no free bit past capacity;
 *   - a live block is never free in its slab;
 *   - a slab sits in the fullness bucket its count says. */
#include "internal.h"
#include "track.h"

typedef struct check_ctx {
    const char *problem;
    const void *where;
    mh_fault_t block_fault;   /* the first damaged block, reported with its own kind */
    char detail[200];         /* its detail line */
} check_ctx_t;

static void fail(check_ctx_t *c, const char *problem, const void *where) {
    if (!c->problem) { c->problem = problem; c->where = where; }
}

static void block_fault(check_ctx_t *c, slab_t *s, uint32_t idx, const char *kind, const void *addr,
                        const char *detail) {
    mh_fault_t *f = &c->block_fault;
    slab_block_fault(f, s, idx, slab_ustart(s) + (size_t)idx * s->bsize);
    f->kind = kind;
    f->addr = addr;
    f->where = "mh_check";
    f->detail = detail;
}

/* Canaries of live blocks, poison of free poisoned ones. */
static void check_blocks(check_ctx_t *c, slab_t *s) {
    uint8_t *ustart = slab_ustart(s);
    size_t room = s->bsize - s->front;
    for (uint32_t idx = 0; idx < s->capacity && !c->block_fault.kind; idx++) {
        uint8_t *p = ustart + (size_t)idx * s->bsize, *raw = p - s->front;
        uint64_t bit = (uint64_t)1 << (idx & 63);
        bool live = slab_live(s, idx);
        if (live && (s->front || s->canary)) {
            uint32_t seq = atomic_load_explicit(&s->resize_seq, memory_order_acquire);
            size_t n = s->canary ? (info_load(s, idx, __ATOMIC_ACQUIRE) & INFO_SIZE_MASK) : room;
            size_t slack = room - n;
            if (slack > s->canary_len) slack = s->canary_len;
            track_peek(raw, s->front);
            track_peek(p + n, room - n);
            size_t bad = s->front ? canary_find_bad(raw, s->front) : SIZE_MAX;
            size_t tbad = s->canary ? canary_find_bad(p + n, slack) : SIZE_MAX;
            /* The owner may be resizing a block of this slab in place right
             * now (and then writing over the old canary, legally): a bad
             * tail canary counts only if no resize ran meanwhile. */
            if (tbad != SIZE_MAX && ((seq & 1) || atomic_load_explicit(&s->resize_seq, memory_order_acquire) != seq ||
                                     !slab_live(s, idx)))
                tbad = SIZE_MAX;
            /* Nor may the slot have been freed and handed out again, with
             * another size, while we read (its new owner writes the size,
             * then the canary): the size must not have changed, and the
             * canary must still be bad on a second look. (Narrows the
             * window; fuzz_threads found it, regressions/README.md.) */
            if (tbad != SIZE_MAX && ((info_load(s, idx, __ATOMIC_ACQUIRE) & INFO_SIZE_MASK) != n ||
                                     canary_find_bad(p + n, slack) == SIZE_MAX))
                tbad = SIZE_MAX;
            if (track_active()) {
                track_unpeek(raw, s->front);
                track_unpeek(p + n, room - n);
            }
            if (bad != SIZE_MAX) {
                track_peek(raw, s->front);
                block_fault(c, s, idx, "heap-buffer-underflow", raw + bad,
                            canary_detail(c->detail, sizeof c->detail, raw, s->front, bad, true));
                track_unpeek(raw, s->front);
            } else if (tbad != SIZE_MAX) {
                track_peek(p + n, slack);
                block_fault(c, s, idx, "heap-buffer-overflow", p + n + tbad,
                            canary_detail(c->detail, sizeof c->detail, p + n, slack, tbad, false));
                track_unpeek(p + n, slack);
            }
        } else if (!live && s->poisoned && (s->poisoned[idx >> 6] & bit)) {
            size_t len = s->poison_len;
            track_peek(p, len);
            size_t bad = poison_find_bad(p, len);
            track_unpeek(p, len);
            if (bad != SIZE_MAX)
                block_fault(c, s, idx, "use-after-free", p + bad, "the freed block was written to after it was freed");
        }
    }
}

static void check_slab(check_ctx_t *c, miniheap_t *mh, slab_t *s) {
    uint8_t *start = slab_start(s);
    if (s->mh != mh) { fail(c, "slab does not point back at its miniheap", start); return; }
    const size_class_t *cl = &mh_classes[s->cls];
    if (s->bsize != cl->size || s->capacity > cl->capacity || s->units != cl->units ||
        (!s->guarded && s->capacity != cl->capacity))
        fail(c, "slab geometry differs from its size class", start);
    if (start != mh_base(mh) + (size_t)s->first_unit * MH_UNIT_SIZE)
        fail(c, "slab start is not at its first unit", start);
    for (uint32_t u = 0; u < s->units; u++)
        if (mh->unit_slab[s->first_unit + u] != s) fail(c, "a unit of a slab points elsewhere", start);
    uint32_t nfree = 0;
    for (uint32_t w = 0; w < s->nwords; w++) {
        uint64_t fm = s->free_map[w];
        uint64_t lv = slab_live_word(s, w);
        uint32_t left = s->capacity - w * 64;
        uint64_t valid = left >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << left) - 1);
        if ((fm | lv) & ~valid) fail(c, "bitmap bit set past the slab's capacity", start);
        if (fm & lv) fail(c, "a live block is marked free in its slab", start + (size_t)(w * 64 + (uint32_t)__builtin_ctzll(fm & lv)) * s->bsize);
        nfree += (uint32_t)__builtin_popcountll(fm & valid);
    }
    if (s->used != s->capacity - nfree) fail(c, "slab use count disagrees with its bitmap", start);
    if (s->bucket != slab_bucket_for(s)) fail(c, "slab is in the wrong fullness bucket", start);
    const char *mesh_problem = mesh_check_slab(s);
    if (mesh_problem) fail(c, mesh_problem, start);
    if (!c->block_fault.kind) check_blocks(c, s);
}

static void check_miniheap(miniheap_t *mh, void *arg) {
    check_ctx_t *c = arg;
    if (miniheap_of(mh_base(mh)) != mh) fail(c, "radix table does not map a miniheap", mh_base(mh));
    uint32_t used = 0;
    for (uint32_t u = 0; u < MH_USABLE_UNITS; u++) {
        slab_t *s = mh->unit_slab[u];
        if (unit_slab_of(mh_base(mh) + (size_t)u * MH_UNIT_SIZE) != s)
            fail(c, "unit table does not map a unit to its slab", mh_base(mh) + (size_t)u * MH_UNIT_SIZE);
        bool free_bit = (mh->free_units >> u) & 1;
        if (free_bit != (s == NULL)) fail(c, "unit free bit disagrees with its slab pointer", mh_base(mh) + (size_t)u * MH_UNIT_SIZE);
        if (!s) continue;
        used++;
        if (s->first_unit == u) check_slab(c, mh, s);
    }
    if (mh->unit_slab[MH_UNITS - 1]) fail(c, "guard unit holds a slab", mh_base(mh));
    if (used != mh->used_units) fail(c, "miniheap used-unit count disagrees with its units", mh_base(mh));
}

MH_API int mh_check(void) {
    mh_ensure_init();
    check_ctx_t c;
    memset(&c, 0, sizeof c);
    bins_lock_all();
    mh_lock(&mh_locks.heap);
    miniheap_foreach(check_miniheap, &c);
    mh_unlock(&mh_locks.heap);
    for (uint32_t bi = 0; bi < narenas() * MH_MAX_CLASSES; bi++) {
        class_bins_t *b = &mh_bins[bi];
        uint32_t k = bi % MH_MAX_CLASSES;
        for (uint32_t q = 0; q < MH_BUCKETS; q++) {
            if (((b->nonempty >> q) & 1) != (b->bucket[q] != NULL)) fail(&c, "class bucket mask disagrees with its lists", NULL);
            for (slab_t *s = b->bucket[q]; s; s = s->next)
                if (s->cls != k || s->bucket != q || s->arena != bi / MH_MAX_CLASSES)
                    fail(&c, "slab listed in the wrong arena, class or bucket", slab_start(s));
        }
    }
    bins_unlock_all();
    if (c.problem) {
        mh_report("metadata-corruption", c.where, NULL, 0, "mh_check", c.problem);
        return -1;
    }
    if (c.block_fault.kind) {
        mh_report_fault(&c.block_fault);
        return -1;
    }
    /* This thread's cached and quarantined blocks (other threads own theirs). */
    op_enter(); /* (the purge thread must not empty it meanwhile) */
    tcache_t *t = mh_tcache;
    bool ok = true;
    if (t) {
        for (uint32_t k = 0; ok && k < mh_nclasses; k++)
            for (uint32_t i = 0; ok && i < t->bins[k].count; i++)
                ok = block_verify_poison(t->bins[k].slots[i].tagged, "mh_check");
        for (uint32_t i = 0; ok && i < t->q.count; i++)
            ok = block_verify_poison(t->q.slots[(t->q.head + i) % t->q.cap], "mh_check");
    }
    op_exit();
    if (!ok) return -1;
    return large_check();
}
