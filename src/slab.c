/* Slabs: blocks of one size class in a run of units, tracked by two bitmaps
 * kept out of line: free_map (free in the slab, under the class lock) and
 * live (owned by the program, atomic, so frees need no lock).
 *
 * Fullest first: each class keeps its partly used slabs in buckets by
 * fullness, and blocks are taken from the fullest, so free space collects in
 * the emptiest slabs, whose pages are given back and which are returned to
 * their miniheap once empty. */
#include "internal.h"

class_bins_t mh_bins[MH_MAX_CLASSES];

/* Empty slabs a class keeps before giving them back to their miniheap. */
#define KEEP_EMPTY 1

static uint32_t bucket_for(const slab_t *s) {
    if (s->used == 0) return 0;
    if (s->used >= s->capacity) return MH_BUCKETS; /* full: on no list */
    return 1 + s->used * (MH_BUCKETS - 1) / s->capacity;
}

static void bin_unlink(class_bins_t *b, slab_t *s) {
    if (s->bucket >= MH_BUCKETS) return;
    if (s->prev) s->prev->next = s->next; else b->bucket[s->bucket] = s->next;
    if (s->next) s->next->prev = s->prev;
    if (!b->bucket[s->bucket]) b->nonempty &= ~(1u << s->bucket);
    if (s->bucket == 0) b->empty_slabs--;
    s->next = s->prev = NULL;
    s->bucket = MH_BUCKETS;
}

static void bin_link(class_bins_t *b, slab_t *s, uint32_t bucket) {
    s->bucket = (uint8_t)bucket;
    if (bucket >= MH_BUCKETS) return;
    s->prev = NULL;
    s->next = b->bucket[bucket];
    if (s->next) s->next->prev = s;
    b->bucket[bucket] = s;
    b->nonempty |= 1u << bucket;
    if (bucket == 0) b->empty_slabs++;
}

static void rebucket(class_bins_t *b, slab_t *s) {
    uint32_t nb = bucket_for(s);
    if (nb == s->bucket) return;
    bin_unlink(b, s);
    bin_link(b, s, nb);
}

/* The dirty list is doubly linked through dirty_next and the slab's `prev`
 * is taken by the bucket list, so removal walks; the list only holds slabs
 * that had frees since the last give-back, and removal happens only when a
 * slab empties, so keep it singly linked and unlink lazily: a slab released
 * while on the list is marked and skipped. */
static void dirty_add(class_bins_t *b, slab_t *s, uint64_t now) {
    if (s->on_dirty) return;
    s->on_dirty = 1;
    s->dirty_ms = now;
    s->dirty_next = b->dirty;
    b->dirty = s;
}

static slab_t *slab_new(uint32_t cls) {
    const size_class_t *c = &mh_classes[cls];
    uint32_t nwords = (c->capacity + 63) / 64;
    size_t bytes = sizeof(slab_t) + 2 * (size_t)nwords * sizeof(uint64_t);
    slab_t *s = meta_alloc(bytes);
    if (!s) return NULL;
    uint32_t first;
    uint64_t clean;
    miniheap_t *mh = miniheap_take_units(c->units, &first, &clean);
    if (!mh) {
        meta_free(s, bytes);
        return NULL;
    }
    s->mh = mh;
    s->start = mh->base + (size_t)first * MH_UNIT_SIZE;
    s->bsize = c->size;
    s->capacity = c->capacity;
    s->span = c->capacity * c->size;
    s->magic = ((uint64_t)1 << 40) / c->size + 1;
    s->cls = (uint16_t)cls;
    s->units = (uint8_t)c->units;
    s->first_unit = (uint8_t)first;
    s->nwords = (uint16_t)nwords;
    s->bucket = MH_BUCKETS;
    s->free_map = (uint64_t *)&s->live[nwords];
    for (uint32_t w = 0; w < nwords; w++) {
        uint32_t left = c->capacity - w * 64;
        s->free_map[w] = left >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << left) - 1);
    }
    for (uint32_t u = 0; u < c->units; u++) /* pages of clean units read as zero */
        if (clean & ((uint64_t)1 << (first + u)))
            s->purged[u / 4] |= (uint64_t)0xffff << ((u % 4) * 16);
    for (uint32_t u = 0; u < c->units; u++)
        __atomic_store_n(&mh->unit_slab[first + u], s, __ATOMIC_RELEASE);
    return s;
}

static void slab_release(slab_t *s) {
    uint64_t dirty = 0;
    for (uint32_t u = 0; u < s->units; u++) {
        uint64_t pages = (s->purged[u / 4] >> ((u % 4) * 16)) & 0xffff;
        if (pages != 0xffff) dirty |= (uint64_t)1 << (s->first_unit + u);
    }
    miniheap_release_units(s->mh, s->first_unit, s->units, dirty);
    meta_free(s, sizeof(slab_t) + 2 * (size_t)s->nwords * sizeof(uint64_t));
}

/* Take up to n free blocks out of s. */
static uint32_t slab_pop(slab_t *s, void **out, uint32_t n) {
    uint32_t avail = s->capacity - s->used, k = 0, w = s->hint;
    bool purged = (s->purged[0] | s->purged[1]) != 0;
    if (n > avail) n = avail;
    while (k < n) {
        uint64_t word = s->free_map[w];
        while (word && k < n) {
            uint32_t idx = w * 64 + (uint32_t)__builtin_ctzll(word);
            word &= word - 1;
            uint32_t off = idx * s->bsize;
            out[k++] = s->start + off;
            if (purged) bits_clear_range(s->purged, off >> MH_PAGE_SHIFT,
                                         (off + s->bsize - 1) >> MH_PAGE_SHIFT);
        }
        s->free_map[w] = word;
        if (!word && k < n) w = (w + 1 == s->nwords) ? 0 : w + 1;
    }
    s->used += k;
    s->hint = w;
    return k;
}

static slab_t *pick_slab(class_bins_t *b) {
    uint32_t partial = b->nonempty & ~1u;
    if (partial) return b->bucket[31 - __builtin_clz(partial)];
    return b->bucket[0];
}

uint32_t slab_alloc_batch(uint32_t cls, void **out, uint32_t n) {
    class_bins_t *b = &mh_bins[cls];
    uint32_t got = 0;
    mh_lock(&b->lock);
    while (got < n) {
        slab_t *s = pick_slab(b);
        if (!s) {
            s = slab_new(cls);
            if (!s) break;
        }
        got += slab_pop(s, out + got, n - got);
        rebucket(b, s);
    }
    b->allocs += got;
    mh_unlock(&b->lock);
    return got;
}

/* Return a block to its slab; the caller holds the class lock. Returns the
 * slab if it must be given back to its miniheap. */
static slab_t *slab_put(class_bins_t *b, void *p, uint64_t now) {
    uint32_t idx;
    bool interior = false;
    slab_t *s = slab_of(p, &idx, &interior);
    if (unlikely(!s)) mh_fatal("metadata-corruption: a cached block has no slab");
    uint64_t bit = (uint64_t)1 << (idx & 63);
    if (unlikely(s->free_map[idx >> 6] & bit)) mh_fatal("metadata-corruption: block freed into its slab twice");
    s->free_map[idx >> 6] |= bit;
    s->used--;
    if (idx / 64 < s->hint) s->hint = idx / 64;
    dirty_add(b, s, now);
    if (s->used == 0 && b->empty_slabs >= KEEP_EMPTY) {
        bin_unlink(b, s);
        return s;
    }
    rebucket(b, s);
    return NULL;
}

static void release_list(class_bins_t *b, slab_t **rel, uint32_t nrel) {
    /* Drop released slabs from the dirty list before their descriptors go. */
    if (!nrel) return;
    for (slab_t **pp = &b->dirty; *pp;) {
        if ((*pp)->on_dirty == 2) { *pp = (*pp)->dirty_next; continue; }
        pp = &(*pp)->dirty_next;
    }
    for (uint32_t i = 0; i < nrel; i++) slab_release(rel[i]);
}

void slab_free_batch(uint32_t cls, void **ptrs, uint32_t n) {
    class_bins_t *b = &mh_bins[cls];
    slab_t *rel[64];
    uint32_t nrel = 0;
    uint64_t now = os_now_ms();
    mh_lock(&b->lock);
    for (uint32_t i = 0; i < n; i++) {
        slab_t *s = slab_put(b, ptrs[i], now);
        if (s) {
            s->on_dirty = 2; /* marked for release */
            rel[nrel++] = s;
            if (nrel == 64) { release_list(b, rel, nrel); nrel = 0; }
        }
    }
    b->frees += n;
    release_list(b, rel, nrel);
    mh_unlock(&b->lock);
}

/* Give back the pages of s that hold no block in use. */
static void purge_pages(slab_t *s) {
    uint32_t npages = (uint32_t)s->units * MH_PAGES_PER_UNIT, run = 0;
    for (uint32_t p = 0; p <= npages; p++) {
        bool take = false;
        if (p < npages && !(s->purged[p >> 6] & ((uint64_t)1 << (p & 63)))) {
            uint32_t off = p << MH_PAGE_SHIFT;
            if (off >= s->span) {
                take = true;
            } else {
                uint32_t end = off + (uint32_t)MH_PAGE - 1;
                if (end >= s->span) end = s->span - 1;
                take = bits_all_set(s->free_map, slab_index(s, off), slab_index(s, end));
            }
        }
        if (take) { run++; continue; }
        if (run) {
            uint32_t first = p - run;
            os_segment_purge(s->start + ((size_t)first << MH_PAGE_SHIFT), (size_t)run << MH_PAGE_SHIFT);
            for (uint32_t q = first; q < p; q++) s->purged[q >> 6] |= (uint64_t)1 << (q & 63);
            run = 0;
        }
    }
}

void slab_purge_class(uint32_t cls, uint64_t now, bool force) {
    class_bins_t *b = &mh_bins[cls];
    if (!b->dirty) return;
    mh_lock(&b->lock);
    for (slab_t **pp = &b->dirty; *pp;) {
        slab_t *s = *pp;
        if (force || now - s->dirty_ms >= mh_opt.decay_ms) {
            if (s->used < s->capacity) purge_pages(s);
            s->on_dirty = 0;
            *pp = s->dirty_next;
        } else {
            pp = &s->dirty_next;
        }
    }
    /* On a forced trim, empty slabs go back to their miniheap too. */
    if (force) {
        slab_t *rel[64];
        uint32_t nrel = 0;
        while (b->bucket[0] && nrel < 64) {
            slab_t *s = b->bucket[0];
            bin_unlink(b, s);
            rel[nrel++] = s;
        }
        for (uint32_t i = 0; i < nrel; i++) slab_release(rel[i]);
    }
    mh_unlock(&b->lock);
}

/* realloc's floating: move p (live, of slab s) into a fuller slab of the same
 * class if s is sparse. Returns the new block (live, contents copied) or NULL
 * when p should stay. */
void *slab_float(void *p, slab_t *s, size_t size) {
    class_bins_t *b = &mh_bins[s->cls];
    void *q = NULL;
    mh_lock(&b->lock);
    if ((uint64_t)s->used * 100 < (uint64_t)mh_opt.float_pct * s->capacity) {
        slab_t *t = NULL;
        for (uint32_t k = MH_BUCKETS - 1; k >= 1 && k >= s->bucket && !t; k--) {
            uint32_t scanned = 0;
            for (slab_t *x = b->bucket[k]; x && scanned < 8; x = x->next, scanned++)
                if (x != s && x->used > s->used) { t = x; break; }
        }
        if (t && slab_pop(t, &q, 1) == 1) {
            rebucket(b, t);
            b->allocs++;
        }
    }
    mh_unlock(&b->lock);
    if (!q) return NULL;
    memcpy(q, p, size < s->bsize ? size : s->bsize);
    return q;
}

/* mh_reset: forget every slab (the miniheaps are unmapped next). */
static void drop_slabs(miniheap_t *mh, void *arg) {
    (void)arg;
    for (uint32_t u = 0; u < MH_UNITS; u++) {
        slab_t *s = mh->unit_slab[u];
        if (s && s->first_unit == u) meta_free(s, sizeof(slab_t) + 2 * (size_t)s->nwords * sizeof(uint64_t));
        mh->unit_slab[u] = NULL;
    }
}

void slab_reset_all(void) {
    for (uint32_t c = 0; c < mh_nclasses; c++) mh_lock(&mh_bins[c].lock);
    mh_lock(&mh_heap_lock);
    miniheap_foreach(drop_slabs, NULL);
    mh_unlock(&mh_heap_lock);
    for (uint32_t c = 0; c < mh_nclasses; c++) {
        class_bins_t *b = &mh_bins[c];
        memset(b->bucket, 0, sizeof b->bucket);
        b->nonempty = 0;
        b->empty_slabs = 0;
        b->dirty = NULL;
        mh_unlock(&b->lock);
    }
}
