/* Large blocks (above MH_SMALL_MAX): one mapping each, fenced by a guard page
 * on either side, found through a hash of their addresses (so a pointer
 * that was never handed out is recognised). Freed mappings are kept for
 * decay_ms, up to large_cache_mb, so a program that frees and allocates big
 * buffers in turn does not fault every page in again each time. */
#include "internal.h"

typedef struct large {
    struct large *next;      /* hash chain, or cache list */
    uint8_t *map;            /* whole mapping, guards included */
    size_t map_size;
    uint8_t *user;
    size_t usable;           /* page multiple */
    uint64_t freed_ms;
    bool guarded;
} large_t;

#define HASH_BITS 16
#define HASH_SIZE ((size_t)1 << HASH_BITS)
/* Beyond this many live large blocks, stop adding guard pages: each guarded
 * block costs three kernel mappings, and vm.max_map_count is 65530. */
#define GUARDED_MAX 8192

static mh_lock_t large_lock = MH_LOCK_INIT;
static large_t **table;
static large_t *cache;
static size_t n_live, live_bytes, live_mapped, cached_bytes, n_cached;

MH_INTERNAL void large_init(void);
void large_init(void) {
    table = os_map_noreserve(HASH_SIZE * sizeof(large_t *));
    if (!table) mh_fatal("cannot map the large-block table");
}

static size_t hash_of(const void *p) {
    return (size_t)((((uintptr_t)p >> MH_PAGE_SHIFT) * 0x9E3779B97F4A7C15ull) >> (64 - HASH_BITS));
}

static void hash_insert(large_t *l) {
    size_t h = hash_of(l->user);
    l->next = table[h];
    table[h] = l;
    n_live++;
    live_bytes += l->usable;
    live_mapped += l->map_size;
}

static large_t *hash_remove(const void *p) {
    for (large_t **pp = &table[hash_of(p)]; *pp; pp = &(*pp)->next) {
        if ((*pp)->user == p) {
            large_t *l = *pp;
            *pp = l->next;
            n_live--;
            live_bytes -= l->usable;
            live_mapped -= l->map_size;
            return l;
        }
    }
    return NULL;
}

static large_t *hash_find(const void *p) {
    for (large_t *l = table[hash_of(p)]; l; l = l->next)
        if (l->user == p) return l;
    return NULL;
}

static void unmap_block(large_t *l) {
    os_unmap(l->map, l->map_size);
    atomic_fetch_add(&os_unmapped_total, l->map_size);
    meta_free(l, sizeof *l);
}

/* Map a block of `usable` bytes aligned to `align` with guard pages. */
static bool map_block(large_t *l, size_t usable, size_t align, bool guard) {
    size_t g = guard ? MH_PAGE : 0;
    size_t slack = align > MH_PAGE ? align : 0;
    size_t total = usable + 2 * g + slack;
    if (total < usable) return false;
    uint8_t *raw = guard || slack ? os_reserve(total) : os_map(total);
    if (!raw) return false;
    uint8_t *user = (uint8_t *)(((uintptr_t)raw + g + align - 1) & ~(uintptr_t)(align - 1));
    uint8_t *map = user - g, *end = user + usable + g;
    if (map > raw) os_unmap(raw, (size_t)(map - raw));
    if (raw + total > end) os_unmap(end, (size_t)(raw + total - end));
    if ((guard || slack) && !os_commit(user, usable)) {
        os_unmap(map, (size_t)(end - map));
        return false;
    }
    l->map = map;
    l->map_size = (size_t)(end - map);
    l->user = user;
    l->usable = usable;
    l->guarded = guard;
    return true;
}

void *large_alloc(size_t size, size_t align, bool zero) {
    if (size > MH_MAX_REQUEST) { errno = ENOMEM; return NULL; }
    size_t usable = (size + MH_PAGE - 1) & ~(MH_PAGE - 1);
    if (align < MH_PAGE) align = MH_PAGE;
    large_t *l = NULL;
    mh_lock(&large_lock);
    /* Best fit from the cache, within half again the size asked. */
    large_t **best = NULL;
    for (large_t **pp = &cache; *pp; pp = &(*pp)->next) {
        large_t *c = *pp;
        if (c->usable >= usable && c->usable - usable <= usable / 2 &&
            ((uintptr_t)c->user & (align - 1)) == 0 && (!best || c->usable < (*best)->usable))
            best = pp;
    }
    if (best) {
        l = *best;
        *best = l->next;
        cached_bytes -= l->usable;
        n_cached--;
        hash_insert(l);
    }
    bool guard = n_live < GUARDED_MAX;
    mh_unlock(&large_lock);
    if (l) {
        if (zero) memset(l->user, 0, size);
        return l->user;
    }
    l = meta_alloc(sizeof *l);
    if (!l) { errno = ENOMEM; return NULL; }
    if (!map_block(l, usable, align, guard)) {
        meta_free(l, sizeof *l);
        errno = ENOMEM;
        return NULL;
    }
    mh_lock(&large_lock);
    hash_insert(l);
    mh_unlock(&large_lock);
    return l->user; /* fresh pages are zero */
}

bool large_free(void *p, size_t expect_size) {
    (void)expect_size;
    uint64_t now = os_now_ms();
    size_t max = (size_t)mh_opt.large_cache_mb << 20;
    large_t *evict = NULL;
    mh_lock(&large_lock);
    large_t *l = hash_remove(p);
    if (!l) {
        mh_unlock(&large_lock);
        return false;
    }
    if (l->usable <= max / 4 && mh_opt.decay_ms > 0) {
        l->freed_ms = now;
        l->next = cache;
        cache = l;
        cached_bytes += l->usable;
        n_cached++;
        /* Over the bound: drop the oldest (the list is newest first). */
        while (cached_bytes > max) {
            large_t **pp = &cache;
            while ((*pp)->next) pp = &(*pp)->next;
            large_t *old = *pp;
            *pp = NULL;
            cached_bytes -= old->usable;
            n_cached--;
            old->next = evict;
            evict = old;
        }
        l = NULL;
    }
    mh_unlock(&large_lock);
    if (l) unmap_block(l);
    while (evict) {
        large_t *n = evict->next;
        unmap_block(evict);
        evict = n;
    }
    return true;
}

size_t large_usable(const void *p) {
    mh_lock(&large_lock);
    large_t *l = hash_find(p);
    size_t u = l ? l->usable : 0;
    mh_unlock(&large_lock);
    return u;
}

/* Resize in place when it fits, else move the pages with mremap (no copy)
 * into a fresh guarded reservation. Returns NULL with *ours false when p is
 * not a large block, NULL with *ours true when out of memory. */
void *large_realloc(void *p, size_t size, bool *ours) {
    mh_lock(&large_lock);
    large_t *l = hash_find(p);
    *ours = l != NULL;
    if (!l) {
        mh_unlock(&large_lock);
        return NULL;
    }
    size_t usable = (size + MH_PAGE - 1) & ~(MH_PAGE - 1);
    if (usable <= l->usable) {
        if (usable < l->usable && l->usable - usable >= ((size_t)64 << 10)) {
            /* Shrinking by a lot: give the tail's pages back, keep the mapping. */
            os_purge(l->user + usable, l->usable - usable);
        }
        mh_unlock(&large_lock);
        return p;
    }
    hash_remove(p);
    bool guard = n_live < GUARDED_MAX;
    mh_unlock(&large_lock);
    if (size > MH_MAX_REQUEST) goto fail;
    size_t g = guard ? MH_PAGE : 0;
    uint8_t *dst = os_reserve(usable + 2 * g);
    if (!dst) goto fail;
    if (!os_remap(l->user, l->usable, usable, dst + g)) {
        os_unmap(dst, usable + 2 * g);
        goto fail;
    }
    /* The old pages moved; drop the old guards only (never the moved range,
     * which another thread may map again meanwhile). */
    if (l->user > l->map) os_unmap(l->map, (size_t)(l->user - l->map));
    uint8_t *old_end = l->user + l->usable, *map_end = l->map + l->map_size;
    if (map_end > old_end) os_unmap(old_end, (size_t)(map_end - old_end));
    l->map = dst;
    l->map_size = usable + 2 * g;
    l->user = dst + g;
    l->usable = usable;
    l->guarded = guard;
    mh_lock(&large_lock);
    hash_insert(l);
    mh_unlock(&large_lock);
    return l->user;
fail:
    mh_lock(&large_lock);
    hash_insert(l);
    mh_unlock(&large_lock);
    errno = ENOMEM;
    return NULL;
}

void large_purge(uint64_t now, bool force) {
    large_t *evict = NULL;
    mh_lock(&large_lock);
    for (large_t **pp = &cache; *pp;) {
        large_t *l = *pp;
        if (force || now - l->freed_ms >= mh_opt.decay_ms) {
            *pp = l->next;
            cached_bytes -= l->usable;
            n_cached--;
            l->next = evict;
            evict = l;
        } else {
            pp = &l->next;
        }
    }
    mh_unlock(&large_lock);
    while (evict) {
        large_t *n = evict->next;
        unmap_block(evict);
        evict = n;
    }
}

void large_stats(size_t *blocks, size_t *bytes, size_t *mapped, size_t *cached) {
    mh_lock(&large_lock);
    *blocks = n_live;
    *bytes = live_bytes;
    *mapped = live_mapped;
    *cached = cached_bytes;
    mh_unlock(&large_lock);
}

void large_reset_all(void) {
    mh_lock(&large_lock);
    for (size_t h = 0; h < HASH_SIZE; h++) {
        while (table[h]) {
            large_t *l = table[h];
            table[h] = l->next;
            unmap_block(l);
        }
    }
    while (cache) {
        large_t *l = cache;
        cache = l->next;
        unmap_block(l);
    }
    n_live = live_bytes = live_mapped = cached_bytes = n_cached = 0;
    mh_unlock(&large_lock);
}

void large_lock_all(void) { mh_lock(&large_lock); }
void large_unlock_all(void) { mh_unlock(&large_lock); }
