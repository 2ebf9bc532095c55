/* The metadata allocator: descriptors, bitmaps and thread caches live in
 * their own mappings, fenced by guard pages, never beside user blocks, so a
 * heap overflow cannot reach them.
 *
 * Chunks of 1 MiB, aligned, so an object's page descriptor is found from
 * its address: page 0 and the last page are guards, the next pages hold
 * the descriptors, the rest objects. Power-of-two sizes: up to 2 KiB,
 * several objects share a page of their size (a bitmap in its descriptor
 * says which are free); from 4 KiB, an object is a run of whole pages. The
 * state lives in the descriptors, never in the objects, so a page or run
 * that is wholly free can be given back (after decay_ms, in the give-back
 * pass) and still be found again: after a spike, the descriptors of the
 * thousands of slabs it made would otherwise stay resident for good. */
#include "internal.h"

#define META_CHUNK      ((size_t)1 << 20)
#define META_PAGES      (META_CHUNK / MH_PAGE)                        /* 256 */
#define META_MIN_SHIFT  6                                             /* 64 B */
#define META_SMALL      6                                             /* buckets 64 B .. 2 KiB */
#define META_NBUCKETS   12                                            /* .. 128 KiB */

enum { PAGE_UNUSED, PAGE_SMALL, PAGE_RUN, PAGE_FREE };

typedef struct meta_page {
    struct meta_page *next, *prev;   /* a partial list, or a free list (dirty or clean) */
    uint64_t free_bits;              /* small: the objects of the page that are free */
    uint64_t freed_ms;               /* free: when it became free */
    uint8_t kind;                    /* PAGE_*; a run's state is in its first page's */
    uint8_t bucket;
} meta_page_t;

#define META_DESC_PAGES ((META_PAGES * sizeof(meta_page_t) + MH_PAGE - 1) / MH_PAGE)
#define META_FIRST      (1 + META_DESC_PAGES)
#define META_END        (META_PAGES - 1)

typedef struct page_list { meta_page_t *head, *tail; } page_list_t;

static page_list_t partial[META_SMALL];        /* small pages with free and used objects */
static page_list_t free_dirty[META_NBUCKETS];  /* free pages (index 0) and runs, oldest first */
static page_list_t free_clean[META_NBUCKETS];  /* ... given back */
static uint8_t *chunk;                         /* the chunk pages are carved from */
static uint32_t chunk_next;                    /* its first page never handed out */
static size_t resident;                        /* pages handed out or kept free, not given back */

static unsigned bucket_of(size_t size) {
    unsigned b = 0;
    while (((size_t)1 << (b + META_MIN_SHIFT)) < size) b++;
    return b;
}
static meta_page_t *descs(uint8_t *base) { return (meta_page_t *)(void *)(base + MH_PAGE); }
static uint8_t *base_of(const void *p) { return (uint8_t *)((uintptr_t)p & ~(uintptr_t)(META_CHUNK - 1)); }
static meta_page_t *desc_of(const void *p) {
    uint8_t *base = base_of(p);
    return &descs(base)[((uintptr_t)p - (uintptr_t)base) >> MH_PAGE_SHIFT];
}
static uint8_t *page_addr(meta_page_t *d) {
    uint8_t *base = base_of(d);
    return base + (size_t)(d - descs(base)) * MH_PAGE;
}
static uint32_t run_pages(unsigned b) { return (uint32_t)(((size_t)1 << (b + META_MIN_SHIFT)) >> MH_PAGE_SHIFT); }
/* Bytes of what free list k holds: single pages (0) or runs of bucket k. */
static size_t free_bytes(unsigned k) { return (size_t)(k ? run_pages(k) : 1) * MH_PAGE; }
static uint64_t small_all(unsigned b) {
    uint32_t n = (uint32_t)(MH_PAGE >> (b + META_MIN_SHIFT));
    return n == 64 ? ~(uint64_t)0 : ((uint64_t)1 << n) - 1;
}

static void list_push(page_list_t *l, meta_page_t *d) {
    d->next = NULL;
    d->prev = l->tail;
    if (l->tail) l->tail->next = d; else l->head = d;
    l->tail = d;
}
static void list_remove(page_list_t *l, meta_page_t *d) {
    if (d->prev) d->prev->next = d->next; else l->head = d->next;
    if (d->next) d->next->prev = d->prev; else l->tail = d->prev;
    d->next = d->prev = NULL;
}

/* A chunk with its guard pages; the rest of the old one becomes free
 * (never touched: clean) single pages. */
static bool new_chunk(void) {
    uint8_t *base = os_map_aligned(META_CHUNK, META_CHUNK);
    if (!base) return false;
    os_protect_none(base, MH_PAGE);
    os_protect_none(base + (size_t)META_END * MH_PAGE, MH_PAGE);
    for (uint32_t i = chunk_next; chunk && i < META_END; i++) {
        meta_page_t *d = &descs(chunk)[i];
        d->kind = PAGE_FREE;
        list_push(&free_clean[0], d);
    }
    chunk = base;
    chunk_next = META_FIRST;
    resident += META_DESC_PAGES * MH_PAGE;
    return true;
}

/* n pages from the chunk, never used (zero). */
static meta_page_t *carve(uint32_t n) {
    if (!chunk || chunk_next + n > META_END) {
        if (!new_chunk()) return NULL;
    }
    meta_page_t *d = &descs(chunk)[chunk_next];
    chunk_next += n;
    resident += (size_t)n * MH_PAGE;
    return d;
}

/* A free page or run of bucket slot k (0: single pages), the most recently
 * freed first (warm); *zero: it reads as zero. */
static meta_page_t *take_free(unsigned k, bool *zero) {
    meta_page_t *d = free_dirty[k].tail;
    if (d) {
        list_remove(&free_dirty[k], d);
        *zero = false;
        return d;
    }
    d = free_clean[k].head;
    if (d) {
        list_remove(&free_clean[k], d);
        *zero = true;
        resident += free_bytes(k);
    }
    return d;
}

void *meta_alloc(size_t size) { return meta_alloc_part(size, SIZE_MAX); }

void *meta_alloc_part(size_t size, size_t zeroed) {
    if (size > ((size_t)1 << (META_NBUCKETS - 1 + META_MIN_SHIFT))) return NULL;
    unsigned b = bucket_of(size);
    size_t bsize = (size_t)1 << (b + META_MIN_SHIFT);
    bool zero = true;
    void *p = NULL;
    mh_lock(&mh_locks.meta);
    if (b < META_SMALL) {
        meta_page_t *d = partial[b].head;
        if (!d) {
            d = take_free(0, &zero);
            if (!d) d = carve(1);
            if (!d) goto out;
            d->kind = PAGE_SMALL;
            d->bucket = (uint8_t)b;
            d->free_bits = small_all(b);
            list_push(&partial[b], d);
        }
        uint32_t i = (uint32_t)__builtin_ctzll(d->free_bits);
        d->free_bits &= d->free_bits - 1;
        if (!d->free_bits) list_remove(&partial[b], d); /* full: off the list */
        p = page_addr(d) + (size_t)i * bsize;
        zero = false; /* (a page may hold what its last objects left) */
    } else {
        meta_page_t *d = take_free(b, &zero);
        if (!d) d = carve(run_pages(b));
        if (!d) goto out;
        d->kind = PAGE_RUN;
        d->bucket = (uint8_t)b;
        p = page_addr(d);
    }
out:
    mh_unlock(&mh_locks.meta);
    if (p && !zero) memset(p, 0, zeroed < bsize ? zeroed : bsize);
    return p;
}

static void make_free(meta_page_t *d, unsigned k) {
    d->kind = PAGE_FREE;
    d->freed_ms = os_now_ms();
    list_push(&free_dirty[k], d);
}

void meta_free(void *p, size_t size) {
    if (!p) return;
    unsigned b = bucket_of(size);
    meta_page_t *d = desc_of(p);
    mh_lock(&mh_locks.meta);
    if (d->bucket != b || (d->kind != PAGE_SMALL && d->kind != PAGE_RUN))
        mh_fatal("metadata-corruption: metadata freed with a wrong size");
    if (b < META_SMALL) {
        uint64_t bit = (uint64_t)1 << (((uintptr_t)p & (MH_PAGE - 1)) >> (b + META_MIN_SHIFT));
        if (d->free_bits & bit) mh_fatal("metadata-corruption: metadata freed twice");
        bool was_full = d->free_bits == 0; /* (a page is on its partial list unless full) */
        d->free_bits |= bit;
        if (d->free_bits == small_all(b)) {
            if (!was_full) list_remove(&partial[b], d);
            make_free(d, 0);
        } else if (was_full) {
            list_push(&partial[b], d);
        }
    } else {
        make_free(d, b);
    }
    mh_unlock(&mh_locks.meta);
    /* No purge_pending(): metadata is freed when a slab, miniheap, large
     * block or thread cache goes, and that pokes the give-back already. */
}

/* Give back the pages and runs free for decay_ms (all with force); returns
 * when the next falls due (UINT64_MAX: none). Oldest first on each list. */
uint64_t meta_purge(uint64_t now, uint64_t decay, bool force) {
    uint64_t due = UINT64_MAX;
    mh_lock(&mh_locks.meta);
    for (unsigned k = 0; k < META_NBUCKETS; k++) {
        if (k && k < META_SMALL) continue;
        meta_page_t *d;
        while ((d = free_dirty[k].head)) {
            if (!purge_ripe(now, d->freed_ms, decay, force, &due)) break;
            list_remove(&free_dirty[k], d);
            os_purge(page_addr(d), free_bytes(k));
            resident -= free_bytes(k);
            list_push(&free_clean[k], d);
        }
    }
    mh_unlock(&mh_locks.meta);
    return due;
}

size_t meta_resident_bytes(void) {
    mh_lock(&mh_locks.meta);
    size_t m = resident;
    mh_unlock(&mh_locks.meta);
    return m;
}

void meta_lock_all(void) { mh_lock(&mh_locks.meta); }
void meta_unlock_all(void) { mh_unlock(&mh_locks.meta); }
