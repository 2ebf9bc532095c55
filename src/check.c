/* mh_check: walk the whole heap under its locks and verify the metadata
 * invariants, stated as checks:
 *   - the radix table maps each miniheap's base to its descriptor;
 *   - a unit is free exactly when no slab points at it, and used_units counts the others;
 *   - every unit of a slab points at the slab, and the slab at its miniheap;
 *   - used == capacity - (free bits), no free bit past capacity;
 *   - a live block is never free in its slab;
 *   - a slab sits in the fullness bucket its count says. */
#include "internal.h"

typedef struct check_ctx { const char *problem; const void *where; } check_ctx_t;

static void fail(check_ctx_t *c, const char *problem, const void *where) {
    if (!c->problem) { c->problem = problem; c->where = where; }
}

static void check_slab(check_ctx_t *c, miniheap_t *mh, slab_t *s) {
    if (s->mh != mh) { fail(c, "slab does not point back at its miniheap", s->start); return; }
    const size_class_t *cl = &mh_classes[s->cls];
    if (s->bsize != cl->size || s->capacity != cl->capacity || s->units != cl->units)
        fail(c, "slab geometry differs from its size class", s->start);
    if (s->start != mh->base + (size_t)s->first_unit * MH_UNIT_SIZE)
        fail(c, "slab start is not at its first unit", s->start);
    for (uint32_t u = 0; u < s->units; u++)
        if (mh->unit_slab[s->first_unit + u] != s) fail(c, "a unit of a slab points elsewhere", s->start);
    uint32_t nfree = 0;
    for (uint32_t w = 0; w < s->nwords; w++) {
        uint64_t fm = s->free_map[w];
        uint64_t lv = atomic_load_explicit(&s->live[w], memory_order_relaxed);
        uint32_t left = s->capacity - w * 64;
        uint64_t valid = left >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << left) - 1);
        if ((fm | lv) & ~valid) fail(c, "bitmap bit set past the slab's capacity", s->start);
        if (fm & lv) fail(c, "a live block is marked free in its slab", s->start + (size_t)(w * 64 + (uint32_t)__builtin_ctzll(fm & lv)) * s->bsize);
        nfree += (uint32_t)__builtin_popcountll(fm & valid);
    }
    if (s->used != s->capacity - nfree) fail(c, "slab use count disagrees with its bitmap", s->start);
    uint32_t want = s->used == 0 ? 0 : s->used >= s->capacity ? MH_BUCKETS
                  : 1 + s->used * (MH_BUCKETS - 1) / s->capacity;
    if (s->bucket != want) fail(c, "slab is in the wrong fullness bucket", s->start);
}

static void check_miniheap(miniheap_t *mh, void *arg) {
    check_ctx_t *c = arg;
    if (miniheap_of(mh->base) != mh) fail(c, "radix table does not map a miniheap", mh->base);
    uint32_t used = 0;
    for (uint32_t u = 0; u < MH_USABLE_UNITS; u++) {
        slab_t *s = mh->unit_slab[u];
        bool free_bit = (mh->free_units >> u) & 1;
        if (free_bit != (s == NULL)) fail(c, "unit free bit disagrees with its slab pointer", mh->base + (size_t)u * MH_UNIT_SIZE);
        if (!s) continue;
        used++;
        if (s->first_unit == u) check_slab(c, mh, s);
    }
    if (mh->unit_slab[MH_UNITS - 1]) fail(c, "guard unit holds a slab", mh->base);
    if (used != mh->used_units) fail(c, "miniheap used-unit count disagrees with its units", mh->base);
}

MH_API int mh_check(void) {
    mh_ensure_init();
    check_ctx_t c = {NULL, NULL};
    for (uint32_t k = 0; k < mh_nclasses; k++) mh_lock(&mh_bins[k].lock);
    mh_lock(&mh_heap_lock);
    miniheap_foreach(check_miniheap, &c);
    mh_unlock(&mh_heap_lock);
    for (uint32_t k = 0; k < mh_nclasses; k++) {
        class_bins_t *b = &mh_bins[k];
        for (uint32_t q = 0; q < MH_BUCKETS; q++) {
            if (((b->nonempty >> q) & 1) != (b->bucket[q] != NULL)) fail(&c, "class bucket mask disagrees with its lists", NULL);
            for (slab_t *s = b->bucket[q]; s; s = s->next)
                if (s->cls != k || s->bucket != q) fail(&c, "slab listed in the wrong class or bucket", s->start);
        }
    }
    for (uint32_t k = mh_nclasses; k-- > 0;) mh_unlock(&mh_bins[k].lock);
    if (!c.problem) return 0;
    mh_report("metadata-corruption", c.where, NULL, 0, "mh_check", c.problem);
    return -1;
}
