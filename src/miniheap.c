/* Miniheaps: create, find (fullest first), give back.
 *
 * Miniheaps are kept in lists by the number of units their slabs use, and a
 * new slab goes to the fullest miniheap that has room, so free units gather
 * in the emptiest miniheaps until those are wholly free. Free units are given
 * back (madvise) once they have stayed free for decay_ms; an empty miniheap
 * is unmapped after the same delay, except for a few kept for reuse. */
#include "internal.h"
#include "track.h"

void *_Atomic mh_radix[MH_ROOT_ENTRIES];
void *_Atomic mh_unit_radix[MH_ROOT_ENTRIES];

static miniheap_t *by_used[MH_USABLE_UNITS + 1]; /* index: used units */
static uint64_t nonempty;                         /* bit i: by_used[i] has miniheaps */
static miniheap_t *dirty_list;
static miniheap_t *spare_descs;                   /* descriptors are reused only as descriptors */
static uint32_t n_miniheaps, n_empty;

static const uint64_t usable_mask = ((uint64_t)1 << MH_USABLE_UNITS) - 1;

static void list_remove(miniheap_t *mh) {
    if (!mh->listed) return;
    miniheap_t **head = &by_used[mh->used_units];
    if (mh->prev) mh->prev->next = mh->next; else *head = mh->next;
    if (mh->next) mh->next->prev = mh->prev;
    if (!*head) nonempty &= ~((uint64_t)1 << mh->used_units);
    mh->next = mh->prev = NULL;
    mh->listed = 0;
    if (mh->used_units == 0) n_empty--;
}

static void list_insert(miniheap_t *mh) {
    miniheap_t **head = &by_used[mh->used_units];
    mh->prev = NULL;
    mh->next = *head;
    if (*head) (*head)->prev = mh;
    *head = mh;
    nonempty |= (uint64_t)1 << mh->used_units;
    mh->listed = 1;
    if (mh->used_units == 0) n_empty++;
}

static void mark_dirty(miniheap_t *mh, uint64_t now) {
    if (!mh->on_dirty) {
        mh->on_dirty = 1;
        mh->dirty_ms = now;
        purge_pending();
        mh->dirty_next = dirty_list;
        dirty_list = mh;
    }
}

/* First unit of a run of `units` free units, or -1. */
static int find_run(uint64_t free_units, uint32_t units) {
    uint64_t m = free_units & usable_mask;
    for (uint32_t k = 1; k < units; k++) m &= free_units >> k;
    return m ? __builtin_ctzll(m) : -1;
}

/* A run of free units of mh, resident ones (not given back yet) first:
 * their pages cost no fault, and taking fresh ones while they wait to be
 * given back would only raise the footprint. */
static int find_run_resident(const miniheap_t *mh, uint32_t units) {
    int r = find_run(mh->free_units & mh->dirty_units, units);
    return r >= 0 ? r : find_run(mh->free_units, units);
}

/* A leaf of either radix table, mapped on first use (under mh_locks.heap)
 * and published with release. Leaves stay mapped: there are few, and a
 * lookup racing with a give-back must never read an unmapped leaf. */
static void *leaf_get(void *_Atomic *root_entry, size_t bytes) {
    void *leaf = atomic_load_explicit(root_entry, memory_order_relaxed);
    if (!leaf && (leaf = os_map_noreserve(bytes)) != NULL) atomic_store_explicit(root_entry, leaf, memory_order_release);
    return leaf;
}

/* The radix slot of a miniheap at base, and (*units) its entries in the
 * unit table. */
static _Atomic(miniheap_t *) *radix_slot(const uint8_t *base, slab_t ***units) {
    uintptr_t a = (uintptr_t)base;
    unit_leaf_t *uleaf = leaf_get(&mh_unit_radix[a >> MH_LEAF_SHIFT], sizeof(unit_leaf_t));
    radix_leaf_t *leaf = leaf_get(&mh_radix[a >> MH_LEAF_SHIFT], sizeof(radix_leaf_t));
    if (!uleaf || !leaf) return NULL;
    if (units) *units = &(*uleaf)[((a >> MH_SEG_SHIFT) & (MH_LEAF_ENTRIES - 1)) * MH_UNITS];
    return &(*leaf)[(a >> MH_SEG_SHIFT) & (MH_LEAF_ENTRIES - 1)];
}

static miniheap_t *miniheap_create(void) {
    miniheap_t *mh = spare_descs;
    if (mh) {
        spare_descs = mh->next;
        memset(mh, 0, sizeof *mh);
    } else {
        mh = meta_alloc(sizeof *mh);
        if (!mh) return NULL;
    }
    if (n_miniheaps == 0) mesh_init(); /* the backing follows the option while no miniheap exists */
    uint8_t *base = os_segment_alloc();
    _Atomic(miniheap_t *) *slot = base ? radix_slot(base, &mh->unit_slab) : NULL;
    if (!slot) {
        if (base) os_segment_free(base);
        mh->next = spare_descs;
        spare_descs = mh;
        return NULL;
    }
    mh->base_m = MANGLE(base);
    track_region_add(base, MH_SEG_SIZE);
    mh->free_units = usable_mask;
    mh->dirty_units = 0;
    atomic_store_explicit(slot, mh, memory_order_release);
    n_miniheaps++;
    list_insert(mh);
    return mh;
}

static void miniheap_destroy(miniheap_t *mh) {
    /* Its units' entries outlive it: one left set would make a block mapped
     * here later (a large one) resolve to a slab gone long ago. */
    for (uint32_t u = 0; u < MH_UNITS; u++)
        if (mh->unit_slab[u]) mh_fatal("metadata-corruption: a miniheap unmapped with a slab in its unit table");
    list_remove(mh);
    slab_guards_gone((uint32_t)__builtin_popcountll(atomic_load(&mh->guard_units)));
    uint8_t *base = mh_base(mh);
    atomic_store_explicit(radix_slot(base, NULL), NULL, memory_order_release);
    track_region_remove(base, MH_SEG_SIZE);
    track_unmap(base, MH_SEG_SIZE);
    os_segment_free(base);
    n_miniheaps--;
    mh->base_m = 0;
    mh->next = spare_descs;
    spare_descs = mh;
}

miniheap_t *miniheap_take_units(uint32_t units, uint32_t *first_unit, uint64_t *clean_units) {
    mh_lock(&mh_locks.heap);
    miniheap_t *found = NULL;
    int first = -1;
    /* Fullest first: walk the lists from the most used down; empty ones last. */
    uint64_t cand = nonempty & ~(uint64_t)1;
    while (cand && !found) {
        uint32_t used = 63 - (uint32_t)__builtin_clzll(cand);
        cand &= ~((uint64_t)1 << used);
        if (used + units > MH_USABLE_UNITS) continue;
        for (miniheap_t *mh = by_used[used]; mh; mh = mh->next) {
            if ((first = find_run_resident(mh, units)) >= 0) { found = mh; break; }
        }
    }
    if (!found) found = by_used[0];
    if (!found) found = miniheap_create();
    if (!found) {
        mh_unlock(&mh_locks.heap);
        return NULL;
    }
    if (first < 0) first = find_run_resident(found, units);
    uint64_t mask = (((uint64_t)1 << units) - 1) << first;
    list_remove(found);
    found->free_units &= ~mask;
    *clean_units = ~found->dirty_units & mask; /* given back or never used: zero pages */
    found->dirty_units &= ~mask;
    found->used_units += units;
    list_insert(found);
    mh_unlock(&mh_locks.heap);
    *first_unit = (uint32_t)first;
    return found;
}

void miniheap_release_units(miniheap_t *mh, uint32_t first, uint32_t units, uint64_t dirty, uint64_t dirty_since) {
    uint64_t mask = (((uint64_t)1 << units) - 1) << first;
    uint64_t now = os_now_ms();
    mh_lock(&mh_locks.heap);
    for (uint32_t u = first; u < first + units; u++) __atomic_store_n(&mh->unit_slab[u], NULL, __ATOMIC_RELAXED);
    list_remove(mh);
    mh->free_units |= mask;
    mh->dirty_units |= dirty & mask;
    mh->used_units -= units;
    if (mh->used_units == 0) mh->empty_ms = now;
    list_insert(mh);
    if (mh->dirty_units) mark_dirty(mh, dirty_since < now ? dirty_since : now);
    if (mh->used_units == 0 && n_empty > OPT(miniheap_cache)) purge_pending(); /* to be unmapped */
    mh_unlock(&mh_locks.heap);
}

static void purge_units(miniheap_t *mh, os_purge_batch_t *batch) {
    uint64_t d = mh->dirty_units & mh->free_units;
    while (d) {
        uint32_t u = (uint32_t)__builtin_ctzll(d);
        uint32_t n = (uint32_t)__builtin_ctzll(~(d >> u));
        uint8_t *at = mh_base(mh) + (size_t)u * MH_UNIT_SIZE;
        track_unmap(at, (size_t)n * MH_UNIT_SIZE);
        os_segment_purge(batch, at, (size_t)n * MH_UNIT_SIZE);
        track_noaccess(at, (size_t)n * MH_UNIT_SIZE);
        d &= ~((((uint64_t)1 << n) - 1) << u);
    }
    mh->dirty_units = 0;
}

uint64_t miniheap_purge(uint64_t now, uint64_t decay, bool force) {
    uint64_t due = UINT64_MAX;
    os_purge_batch_t batch;
    batch.n = 0;
    mh_lock(&mh_locks.heap);
    miniheap_t **pp = &dirty_list;
    while (*pp) {
        miniheap_t *mh = *pp;
        if (purge_ripe(now, mh->dirty_ms, decay, force, &due)) {
            purge_units(mh, &batch);
            *pp = mh->dirty_next;
            mh->on_dirty = 0;
        } else {
            pp = &mh->dirty_next;
        }
    }
    os_purge_flush(&batch); /* (before any miniheap is unmapped, under the lock) */
    /* Unmap empty miniheaps that stayed empty for decay_ms, keeping a few
     * (the full decay_ms even while the heap grows: it would map them again). */
    uint32_t keep = force ? 0 : OPT(miniheap_cache);
    miniheap_t *mh = by_used[0];
    while (mh && n_empty > keep) {
        miniheap_t *next = mh->next;
        if (purge_ripe(now, mh->empty_ms, OPT(decay_ms), force, &due)) {
            if (mh->on_dirty) { /* take it off the dirty list first */
                for (miniheap_t **q = &dirty_list; *q; q = &(*q)->dirty_next)
                    if (*q == mh) { *q = mh->dirty_next; break; }
                mh->on_dirty = 0;
            }
            miniheap_destroy(mh);
        }
        mh = next;
    }
    mh_unlock(&mh_locks.heap);
    return due;
}

void miniheap_foreach(void (*fn)(miniheap_t *, void *), void *arg) {
    for (uint32_t i = 0; i <= MH_USABLE_UNITS; i++)
        for (miniheap_t *mh = by_used[i]; mh; mh = mh->next) fn(mh, arg);
}

void miniheap_reset_all(void) {
    mh_lock(&mh_locks.heap);
    for (uint32_t i = 0; i <= MH_USABLE_UNITS; i++) {
        while (by_used[i]) {
            miniheap_t *mh = by_used[i];
            mh->on_dirty = 0;
            miniheap_destroy(mh);
        }
    }
    dirty_list = NULL;
    mh_unlock(&mh_locks.heap);
}

MH_INTERNAL uint32_t miniheap_count(void);
uint32_t miniheap_count(void) { return n_miniheaps; }
