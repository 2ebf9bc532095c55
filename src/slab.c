/* Slabs: blocks of one size class in a run of units, tracked out of line
 * by a bitmap, free_map (free in the slab, under the class lock), and a
 * word per block whose top bit says the program owns it (atomic, so frees
 * need no lock; see INFO in internal.h).
 *
 * Fullest first: each class keeps its partly used slabs in buckets by
 * fullness, and blocks are taken from the fullest, so free space collects in
 * the emptiest slabs, whose pages are given back and which are returned to
 * their miniheap once empty. */
#include "internal.h"
#include "track.h"

class_bins_t mh_bins[MH_ARENAS * MH_MAX_CLASSES];
uint32_t mh_narenas = 1;

void bins_lock_all(void) {
    for (uint32_t a = 0; a < narenas(); a++)
        for (uint32_t c = 0; c < mh_nclasses; c++) mh_lock(bin_lock(bins_of(a, c)));
}
void bins_unlock_all(void) {
    for (uint32_t a = narenas(); a-- > 0;)
        for (uint32_t c = mh_nclasses; c-- > 0;) mh_unlock(bin_lock(bins_of(a, c)));
}

/* Empty slabs a class keeps before giving them back to their miniheap. */
#define KEEP_EMPTY 1

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
    uint32_t nb = slab_bucket_for(s);
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
    purge_pending();
    s->dirty_next = b->dirty;
    __atomic_store_n(&b->dirty, s, __ATOMIC_RELAXED); /* purge_bins reads it unlocked, as a hint */
}

_Atomic int32_t slab_guard_budget = 8192;

/* Make [p, p + size) inaccessible: in the page tables where the kernel can
 * (no mapping is split), else with mprotect while the mapping budget
 * lasts (each such guard splits a mapping in three). */
static bool guard_install(void *p, size_t size) {
    if (os_guards_light()) return os_guard_mark(p, size);
    if (atomic_fetch_sub(&slab_guard_budget, 1) > 0 && os_protect_none(p, size)) return true;
    atomic_fetch_add(&slab_guard_budget, 1);
    return false;
}
/* n guards are gone (taken off, or their miniheap unmapped): mprotect'ed
 * ones give their mappings back to the budget; marks never drew on it. */
void slab_guards_gone(uint32_t n) {
    if (!os_guards_light()) atomic_fetch_add(&slab_guard_budget, (int32_t)n);
}
static void guard_remove(void *p, size_t size) {
    if (os_guards_light()) os_guard_unmark(p, size);
    else os_commit(p, size);
    slab_guards_gone(1);
}

/* info: bytes per info word. */
static size_t desc_size(uint32_t nwords, uint32_t capacity, bool poison, size_t info, bool dbg) {
    size_t b = sizeof(slab_t) + (1 + (poison ? 1 : 0)) * (size_t)nwords * sizeof(uint64_t);
    b += (size_t)capacity * info;
    if (dbg) {
        b = (b + 7) & ~(size_t)7;
        b += (size_t)capacity * sizeof(block_dbg_t);
    }
    return b;
}

/* What desc_size gave for slab s. */
static size_t slab_desc_bytes(const slab_t *s) {
    return desc_size(s->nwords, mh_classes[s->cls].capacity, s->poisoned != NULL, s->info16 ? 2 : 4, s->dbg != NULL);
}

static slab_t *slab_new(uint32_t arena, uint32_t cls) {
    const size_class_t *c = &mh_classes[cls];
    uint32_t nwords = (c->capacity + 63) / 64;
    /* A slab of 0-byte blocks is never touched: no poison, no front redzone;
     * its info words hold size 0 (what malloc_usable_size says). */
    bool zero = cls == mh_zero_cls;
    bool poison = mh_cfg.poison_len != 0 && !zero, dbg = alloc_stacks();
    bool info16 = c->size <= INFO16_MAX_BLOCK; /* every size it holds fits in 13 bits */
    size_t bytes = desc_size(nwords, c->capacity, poison, info16 ? 2 : 4, dbg);
    slab_t *s = meta_alloc(bytes);
    if (!s) return NULL;
    uint32_t first;
    uint64_t clean;
    miniheap_t *mh = miniheap_take_units(c->units, &first, &clean);
    if (!mh) {
        meta_free(s, bytes);
        return NULL;
    }
    if (clean) purge_grew((size_t)__builtin_popcountll(clean) * MH_UNIT_SIZE);
    uint8_t *start = mh_base(mh) + (size_t)first * MH_UNIT_SIZE;
    size_t room = (size_t)c->units * MH_UNIT_SIZE;
    /* Hardened: the slab's last page becomes a guard (guard_install).
     * Guards stay in place when a slab is released (mh->guard_units), so a
     * new slab of the same shape over the same units costs no system call. */
    uint32_t last = first + c->units - 1;
    uint64_t mine = (((uint64_t)1 << c->units) - 1) << first, lastbit = (uint64_t)1 << last;
    bool want = mh_opt.slab_guards && room - MH_PAGE >= c->size && !zero;
    uint64_t stale = atomic_load(&mh->guard_units) & mine & ~(want ? lastbit : 0);
    while (stale) { /* guards left inside this slab's room by an earlier slab */
        uint32_t u = (uint32_t)__builtin_ctzll(stale);
        stale &= stale - 1;
        guard_remove(mh_base(mh) + (size_t)(u + 1) * MH_UNIT_SIZE - MH_PAGE, MH_PAGE);
        atomic_fetch_and(&mh->guard_units, ~((uint64_t)1 << u));
    }
    if (want) {
        if (atomic_load(&mh->guard_units) & lastbit) {
            s->guarded = 1;
        } else if (guard_install(start + room - MH_PAGE, MH_PAGE)) {
            atomic_fetch_or(&mh->guard_units, lastbit);
            s->guarded = 1;
        }
        if (s->guarded) room -= MH_PAGE;
    }
    if (zero && guard_install(start, room)) s->zero = 1; /* (else it just does not fault) */
    uint32_t capacity = (uint32_t)(room / c->size);
    if (capacity > c->capacity) capacity = c->capacity;
    s->mh = mh;
    s->front = zero ? 0 : (uint8_t)mh_cfg.front;
    s->canary = zero || mh_cfg.tail;
    s->canary_len = zero ? 0 : (uint16_t)mh_cfg.canary_len; /* nothing checked: nothing there */
    /* Fixed for the slab's life, like its canaries: a block freed before
     * an option change is checked as it was poisoned. */
    s->poison_len = (uint32_t)(c->size - s->front < mh_cfg.poison_len ? c->size - s->front : mh_cfg.poison_len);
    s->ustart_m = MANGLE(start + s->front);
    s->bsize = c->size;
    s->capacity = capacity;
    s->span = capacity * c->size;
    s->magic = ((uint64_t)1 << 40) / c->size + 1;
    s->cls = (uint16_t)cls;
    s->arena = (uint8_t)arena;
    s->units = (uint8_t)c->units;
    s->first_unit = (uint8_t)first;
    s->nwords = (uint16_t)nwords;
    s->bucket = MH_BUCKETS;
    /* Checked by the lean paths beside mh_cfg.lean, so a slab made under
     * other layout options (mh_set_options racing a first allocation)
     * still takes the general path. */
    s->lean = !s->front && !dbg && s->canary_len <= 8 && s->poison_len <= 32;
    uint8_t *tail = (uint8_t *)(s->free_map + nwords);
    if (poison) {
        s->poisoned = (uint64_t *)tail;
        tail += (size_t)nwords * sizeof(uint64_t);
    }
    s->info = tail;
    s->info16 = info16;
    tail += (size_t)c->capacity * (info16 ? 2 : 4);
    if (dbg) s->dbg = (block_dbg_t *)(((uintptr_t)tail + 7) & ~(uintptr_t)7);
    for (uint32_t w = 0; w < nwords; w++) {
        uint32_t left = capacity > w * 64 ? capacity - w * 64 : 0;
        s->free_map[w] = left >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << left) - 1);
    }
    for (uint32_t u = 0; u < c->units; u++) /* pages of clean units read as zero */
        if (clean & ((uint64_t)1 << (first + u)))
            s->purged[u / 4] |= (uint64_t)0xffff << ((u % 4) * 16);
    if (s->guarded) { /* never give back the guard page */
        uint32_t gp = (uint32_t)(c->units * MH_PAGES_PER_UNIT) - 1;
        s->purged[gp >> 6] |= (uint64_t)1 << (gp & 63);
    }
    track_noaccess(start, room);
    for (uint32_t u = 0; u < c->units; u++)
        __atomic_store_n(&mh->unit_slab[first + u], s, __ATOMIC_RELEASE);
    return s;
}

static void slab_release(slab_t *s) {
    uint64_t dirty = 0;
    uint8_t *start = slab_start(s);
    for (uint32_t u = 0; u < s->units; u++) {
        uint64_t pages = (s->purged[u / 4] >> ((u % 4) * 16)) & 0xffff;
        if (pages != 0xffff) dirty |= (uint64_t)1 << (s->first_unit + u);
    }
    if (s->zero) guard_remove(start, (size_t)s->units * MH_UNIT_SIZE); /* its units go back accessible */
    mesh_slab_release(s);
    /* (on the dirty list, or marked for release from it: its free pages
     * wait from when they became free, not afresh) */
    miniheap_release_units(s->mh, s->first_unit, s->units, dirty, s->on_dirty ? s->dirty_ms : UINT64_MAX);
    meta_free(s, slab_desc_bytes(s));
}

static uint64_t rng_next(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* The k-th set bit of x (k < popcount(x)). */
static uint32_t nth_set_bit(uint64_t x, uint32_t k) {
    while (k--) x &= x - 1;
    return (uint32_t)__builtin_ctzll(x);
}

/* Take up to n free blocks out of s, as tagged user pointers. With
 * mh_opt.random a batch starts at a free slot of the slab drawn uniformly,
 * so which slot comes next cannot be predicted; the rest of the batch
 * follows it in order, so blocks allocated together stay close together
 * (a slot drawn anew for every block scattered them: bench/real/pywork.py
 * took 0.48 s instead of 0.39 s in hardened mode). Drawing the start among
 * the free slots, not a start bit then the next free one, keeps two
 * sequences (a forked child's and its parent's) from coinciding: a start bit
 * that fell into a run of taken slots gave both the same batch (19 in 2,000
 * forks took the same 64 slots). */
static uint32_t slab_pop(slab_t *s, tslot_t *out, uint32_t n, uint64_t *rng) {
    uint32_t avail = s->capacity - s->used, k = 0, w = s->hint;
    bool purged = (s->purged[0] | s->purged[1]) != 0;
    uint8_t *ustart = slab_ustart(s);
    uint32_t rot = 0;
    if (rng && avail) {
        /* The start: the k-th free slot of the slab, k uniform. */
        uint32_t k0 = (uint32_t)(rng_next(rng) % avail);
        for (w = 0; w + 1 < s->nwords; w++) {
            uint32_t c = (uint32_t)__builtin_popcountll(s->free_map[w]);
            if (k0 < c) break;
            k0 -= c;
        }
        rot = nth_set_bit(s->free_map[w], k0);
    }
    if (n > avail) n = avail;
    while (k < n) {
        uint64_t word = s->free_map[w];
        while (word && k < n) {
            /* Rotating puts the start bit first; ctz then takes the next set one. */
            uint64_t rw = rot ? (word >> rot) | (word << (64 - rot)) : word;
            uint32_t bit = ((uint32_t)__builtin_ctzll(rw) + rot) & 63;
            word &= ~((uint64_t)1 << bit);
            uint32_t idx = w * 64 + bit;
            uint32_t off = idx * s->bsize;
            uintptr_t tag = 0;
            if (s->poisoned && (s->poisoned[w] >> bit & 1)) {
                s->poisoned[w] &= ~((uint64_t)1 << bit);
                tag = TAG_POISONED;
            }
            out[k++] = (tslot_t){(void *)((uintptr_t)(ustart + off) | tag), s};
            if (purged) bits_clear_range(s->purged, (off) >> MH_PAGE_SHIFT,
                                         (off + s->bsize - 1) >> MH_PAGE_SHIFT);
        }
        s->free_map[w] = word;
        if (!word && k < n) w = (w + 1 == s->nwords) ? 0 : w + 1;
    }
    __atomic_store_n(&s->used, s->used + k, __ATOMIC_RELAXED); /* sparse() reads it unlocked */
    if (!rng) s->hint = w;
    return k;
}

static slab_t *pick_slab(class_bins_t *b) {
    uint32_t partial = b->nonempty & ~1u;
    if (partial) return b->bucket[31 - __builtin_clz(partial)];
    return b->bucket[0];
}

uint32_t slab_alloc_batch(uint32_t arena, uint32_t cls, tslot_t *out, uint32_t n) {
    class_bins_t *b = bins_of(arena, cls);
    uint32_t got = 0;
    mh_lock(bin_lock(b));
    uint64_t *rng = NULL;
    if (mh_opt.random) {
        if (!b->rng || b->rng_forks != mh_random_forks) { /* (a child's own: not its parent's sequence) */
            mh_random(&b->rng, sizeof b->rng);
            b->rng_forks = mh_random_forks;
        }
        b->rng |= 1;
        rng = &b->rng;
    }
    while (got < n) {
        slab_t *s = pick_slab(b);
        if (!s) {
            s = slab_new(arena, cls);
            if (!s) break;
        }
        got += slab_pop(s, out + got, n - got, rng);
        rebucket(b, s);
    }
    b->allocs += got;
    mh_unlock(bin_lock(b));
    return got;
}

void slab_rebucket(class_bins_t *b, slab_t *s) { rebucket(b, s); }
void slab_dirty(class_bins_t *b, slab_t *s, uint64_t now) { dirty_add(b, s, now); }

/* Slot idx of s is free again (class lock held). */
void slab_slot_return(class_bins_t *b, slab_t *s, uint32_t idx, uintptr_t tagged, uint64_t now) {
    uint64_t bit = (uint64_t)1 << (idx & 63);
    if (unlikely(s->free_map[idx >> 6] & bit)) mh_fatal("metadata-corruption: block freed into its slab twice");
    s->free_map[idx >> 6] |= bit;
    if (s->poisoned && (tagged & TAG_POISONED)) s->poisoned[idx >> 6] |= bit;
    __atomic_store_n(&s->used, s->used - 1, __ATOMIC_RELAXED); /* sparse() reads it unlocked */
    if (idx / 64 < s->hint) s->hint = idx / 64;
    dirty_add(b, s, now);
    rebucket(b, s);
}

/* Return a block to its slab; the caller holds the class lock. Returns a
 * slab to give back to its miniheap, or NULL. */
static slab_t *slab_put(class_bins_t *b, slab_t *s, uint32_t idx, void *tagged, uint64_t now) {
    bool back;
    if (unlikely(s->mesh) && mesh_free_block(b, s, idx, (uintptr_t)tagged, now, &back)) {
        /* A block s owns on a meshed-away page: its slots went to the targets. */
        if (back) {
            dirty_add(b, s, now);
            rebucket(b, s);
        }
    } else {
        slab_slot_return(b, s, idx, (uintptr_t)tagged, now);
    }
    if (b->empty_slabs > KEEP_EMPTY) {
        /* The slab emptied earliest goes; the one just emptied stays (it is
         * at the head of bucket 0), so an immediate double free still finds
         * its block in a slab and is reported as exactly that. */
        slab_t *old = b->bucket[0]->next;
        bin_unlink(b, old);
        return old;
    }
    return NULL;
}

static void release_list(class_bins_t *b, slab_t **rel, uint32_t nrel) {
    /* Drop released slabs from the dirty list before their descriptors go. */
    if (!nrel) return;
    for (slab_t **pp = &b->dirty; *pp;) {
        if ((*pp)->on_dirty == 2) { __atomic_store_n(pp, (*pp)->dirty_next, __ATOMIC_RELAXED); continue; }
        pp = &(*pp)->dirty_next;
    }
    for (uint32_t i = 0; i < nrel; i++) slab_release(rel[i]);
}

/* The blocks may belong to slabs of different arenas (a thread frees what
 * others allocated): hold one arena's lock at a time. `since`: when they
 * went unused (a cache emptied for being idle held them that long), the
 * clock their pages' give-back runs on (a time a little ahead, an owner's
 * tick racing the purge thread, only delays it by as much). */
void slab_free_batch_since(uint32_t cls, void **ptrs, uint32_t n, uint64_t since) {
    class_bins_t *b = NULL;
    slab_t *rel[64];
    uint32_t nrel = 0;
    uint64_t now = since;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t idx;
        bool interior = false;
        slab_t *owner = slab_of(untag(ptrs[i]), &idx, &interior);
        if (unlikely(!owner)) mh_fatal("metadata-corruption: a cached block has no slab");
        class_bins_t *ob = bins_of(owner->arena, cls);
        if (ob != b) {
            if (b) {
                release_list(b, rel, nrel);
                nrel = 0;
                mh_unlock(bin_lock(b));
            }
            b = ob;
            mh_lock(bin_lock(b));
        }
        slab_t *s = slab_put(b, owner, idx, ptrs[i], now);
        b->frees++;
        if (s) {
            s->on_dirty = 2; /* marked for release */
            rel[nrel++] = s;
            if (nrel == 64) { release_list(b, rel, nrel); nrel = 0; }
        }
    }
    if (b) {
        release_list(b, rel, nrel);
        mh_unlock(bin_lock(b));
    }
}

void slab_free_batch(uint32_t cls, void **ptrs, uint32_t n) { slab_free_batch_since(cls, ptrs, n, os_now_ms()); }

/* A forked child's orphaned caches (tcache.c) may list a block the snapshot
 * caught in passing: true only for the start of a slot of class cls that is
 * neither live nor free in its slab, that is, held by a cache. */
bool slab_block_cached(void *p, uint32_t cls) {
    uint32_t idx;
    bool interior = false;
    slab_t *s = slab_of(p, &idx, &interior);
    if (!s || interior || s->cls != cls) return false;
    uint64_t bit = (uint64_t)1 << (idx & 63);
    class_bins_t *b = bins_of(s->arena, cls);
    mh_lock(bin_lock(b));
    bool cached = !slab_live(s, idx) &&
                  !(s->free_map[idx >> 6] & bit);
    mh_unlock(bin_lock(b));
    return cached;
}

/* Give back the pages of s that hold no block in use (queued on batch). */
static void purge_pages(slab_t *s, os_purge_batch_t *batch) {
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
            uint8_t *at = slab_start(s) + ((size_t)first << MH_PAGE_SHIFT);
            size_t len = (size_t)run << MH_PAGE_SHIFT;
            track_unmap(at, len);
            os_segment_purge(batch, at, len);
            track_noaccess(at, len);
            for (uint32_t q = first; q < p; q++) s->purged[q >> 6] |= (uint64_t)1 << (q & 63);
            if (s->poisoned) { /* the blocks there now read as zero */
                uint32_t off0 = first << MH_PAGE_SHIFT, off1 = (p << MH_PAGE_SHIFT) - 1;
                if (off0 < s->span) {
                    if (off1 >= s->span) off1 = s->span - 1;
                    uint32_t b0 = slab_index(s, off0), b1 = slab_index(s, off1);
                    for (uint32_t i = b0; i <= b1; i++) s->poisoned[i >> 6] &= ~((uint64_t)1 << (i & 63));
                }
            }
            run = 0;
        }
    }
}

static uint64_t purge_bins(class_bins_t *b, uint64_t now, uint64_t decay, bool force) {
    /* A hint, checked again under the lock; a forced trim always looks, for
     * empty slabs that were purged already. */
    if (!force && !__atomic_load_n(&b->dirty, __ATOMIC_RELAXED)) return UINT64_MAX;
    uint64_t due = UINT64_MAX;
    uint32_t settled = 0;
    os_purge_batch_t batch;
    batch.n = 0;
    mh_lock(bin_lock(b));
    for (slab_t **pp = &b->dirty; *pp;) {
        slab_t *s = *pp;
        if (purge_ripe(now, s->dirty_ms, decay, force, &due)) {
            settled++;
            if (s->used < s->capacity) purge_pages(s, &batch);
            s->on_dirty = 0;
            __atomic_store_n(pp, s->dirty_next, __ATOMIC_RELAXED);
        } else {
            pp = &s->dirty_next;
        }
    }
    os_purge_flush(&batch); /* (under the lock: no block is placed in those pages before) */
    /* Slabs that had no free for decay_ms: spans to mesh, maybe. */
    if (settled || force) mesh_bins(b);
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
    mh_unlock(bin_lock(b));
    return due;
}

uint64_t slab_purge_class(uint32_t cls, uint64_t now, uint64_t decay, bool force) {
    uint64_t due = UINT64_MAX;
    for (uint32_t a = 0; a < narenas(); a++) {
        uint64_t d = purge_bins(bins_of(a, cls), now, decay, force);
        if (d < due) due = d;
    }
    return due;
}

/* realloc's floating: a free block of a fuller slab of s's class, for p (of
 * slab s) to move to if s is sparse; .tagged NULL when p should stay. The
 * caller prepares the block and copies. */
tslot_t slab_float(void *p, slab_t *s, size_t size, bool *alone) {
    class_bins_t *b = bins_of(s->arena, s->cls);
    tslot_t q = {NULL, NULL};
    mh_lock(bin_lock(b));
    /* No other slab of the class holds blocks (the full ones are on no
     * list, and would not do either): nothing to float to. (s itself may
     * have filled up since the caller's unlocked look: then on no list.) */
    *alone = s->bucket < MH_BUCKETS && (b->nonempty & ~1u) == (1u << s->bucket) && b->bucket[s->bucket] == s &&
             !s->next;
    if (!*alone && (uint64_t)s->used * 100 < (uint64_t)mh_opt.float_pct * s->capacity) {
        slab_t *t = NULL;
        for (uint32_t k = MH_BUCKETS - 1; k >= 1 && k >= s->bucket && !t; k--) {
            uint32_t scanned = 0;
            for (slab_t *x = b->bucket[k]; x && scanned < 8; x = x->next, scanned++)
                if (x != s && x->used > s->used) { t = x; break; }
        }
        if (t && slab_pop(t, &q, 1, NULL) == 1) {
            rebucket(b, t);
            b->allocs++;
        }
    }
    mh_unlock(bin_lock(b));
    return q; /* the caller prepares it */
}

/* mh_reset: forget every slab (the miniheaps are unmapped next). */
static void drop_slabs(miniheap_t *mh, void *arg) {
    (void)arg;
    for (uint32_t u = 0; u < MH_UNITS; u++) {
        slab_t *s = mh->unit_slab[u];
        if (s && s->first_unit == u) {
            mesh_slab_forget(s);
            meta_free(s, slab_desc_bytes(s));
        }
        __atomic_store_n(&mh->unit_slab[u], NULL, __ATOMIC_RELAXED);
    }
}

void slab_reset_all(void) {
    bins_lock_all();
    mh_lock(&mh_locks.heap);
    miniheap_foreach(drop_slabs, NULL);
    mh_unlock(&mh_locks.heap);
    for (uint32_t i = 0; i < MH_ARENAS * MH_MAX_CLASSES; i++) {
        class_bins_t *b = &mh_bins[i];
        memset(b->bucket, 0, sizeof b->bucket);
        b->nonempty = 0;
        b->empty_slabs = 0;
        __atomic_store_n(&b->dirty, NULL, __ATOMIC_RELAXED);
        b->rng = 0; /* drawn again: with seed=N a reset run repeats its choices */
    }
    bins_unlock_all();
}

/* Every slab (the caller holds every class lock and the miniheap lock). */
typedef struct foreach_arg { void (*fn)(slab_t *, void *); void *arg; } foreach_arg_t;
static void foreach_mh(miniheap_t *mh, void *a) {
    foreach_arg_t *fa = a;
    for (uint32_t u = 0; u < MH_USABLE_UNITS; u++) {
        slab_t *s = mh->unit_slab[u];
        if (s && s->first_unit == u) fa->fn(s, fa->arg);
    }
}
void slab_foreach(void (*fn)(slab_t *, void *), void *arg) {
    foreach_arg_t fa = {fn, arg};
    miniheap_foreach(foreach_mh, &fa);
}

/* The block's part of a report: its start, size and stacks. */
void slab_block_fault(mh_fault_t *f, slab_t *s, uint32_t idx, void *p) {
    memset(f, 0, sizeof *f);
    f->block = p;
    f->size = slab_block_size(s, idx);
    if (s->dbg) {
        f->alloc_stack = DBG_GET(&s->dbg[idx], alloc_stack);
        f->alloc_tid = DBG_GET(&s->dbg[idx], alloc_tid);
        f->free_stack = DBG_GET(&s->dbg[idx], free_stack);
        f->free_tid = DBG_GET(&s->dbg[idx], free_tid);
    }
}
