/* Large blocks (above MH_SMALL_MAX) and sampled blocks: one mapping each,
 * fenced by a guard page on either side, found through a hash of their
 * addresses (so a pointer that was never handed out is recognised).
 *
 * Freed mappings are kept for decay_ms, up to what brings the footprint
 * back to its high-water mark (at most twice what is live) or
 * large_cache_mb, whichever is more, so a program that frees and allocates
 * big buffers in turn does not fault every page in again. With a quarantine
 * (and always for sampled blocks) a freed block is made inaccessible
 * instead and kept a while, so a stale access faults and fault.c can say
 * which block it was. */
#include "internal.h"
#include "track.h"

typedef struct large {
    struct large *next;      /* hash chain, cache list or quarantine list */
    struct large *lnext, *lprev; /* all live blocks (walks need not scan the table) */
    uintptr_t map_m;         /* whole mapping, guards included (mangled) */
    size_t map_size;
    uintptr_t user_m;        /* mangled */
    size_t usable;           /* user .. end of the data pages */
    size_t room;             /* PROT_NONE between the data and the back guard, where
                              * the block grows in place (by realloc, or when the
                              * mapping is reused from the cache); counted in map_size */
    size_t req;              /* requested size */
    uint64_t freed_ms;
    uint8_t kind, guarded, sampled;
    uint8_t busy;            /* claimed: a free or realloc of it is under way (large_claim) */
    uint8_t tail_canary;     /* the slack after req carries a canary (as allocated) */
    uint8_t sealed;          /* freed, its whole mapping PROT_NONE (as the mode was then) */
    uint16_t front_len;      /* canary bytes before a sampled block (as allocated) */
    uint32_t alloc_stack, free_stack, alloc_tid, free_tid;
} large_t;

#define HASH_BITS 16
#define HASH_SIZE ((size_t)1 << HASH_BITS)
/* Beyond this many live large blocks, stop adding guard pages: each guarded
 * block costs three kernel mappings (four when a move gave it its room:
 * that room was writable once, and does not merge with the guard), and
 * vm.max_map_count is 65530. */
#define GUARDED_MAX 8192
/* The most room reserved after a block: PROT_NONE, never resident, but
 * address space (RLIMIT_AS) and, when a move made it writable first, commit
 * charge (vm.overcommit_memory=2); given back by mh_release_unused. */
#define ROOM_MAX ((size_t)16 << 20)
/* A block up to this size that must move to grow is copied into a cached
 * mapping that fits, when there is one, instead of having its pages moved
 * by mremap: the cached pages are resident, and copying 1 MiB costs about
 * what one mremap does with its TLB flush. On a guest whose MMU is
 * paravirtualised, every page mremap moved traps to the hypervisor when it
 * is next touched: 256 KiB moved then touched took 258 us here, copied
 * into resident pages 5.4 us. */
#define COPY_MAX ((size_t)1 << 20)
#define QUARANTINE_MAX_BLOCKS 256
/* The cache is scanned under the lock at every large allocation: bounded in
 * count as well as in bytes (one-page sampled blocks would otherwise pile
 * up by the thousand within decay_ms). */
#define CACHE_MAX_BLOCKS 256

static large_t *table[HASH_SIZE];
static large_t *cache;
static large_t *live_list;
static large_t *quar_head, *quar_tail;
static size_t n_live, live_bytes, live_mapped, cached_bytes, n_cached, quar_bytes, n_quar;
/* The most the live blocks' mappings took since memory was last given back:
 * the cache may hold what brings the footprint back up to it (see
 * cache_max), so it never raises the peak by more than large_cache_mb. */
static size_t live_hwm;
/* The mapping freed last. Hardened mode never reuses it at once: it stays
 * inaccessible, so a write through a stale pointer right after its free,
 * and the same size allocated again, faults instead of landing in the new
 * block. */
static large_t *cache_newest;

static inline uint8_t *l_user(const large_t *l) { return UNMANGLE(l->user_m); }
static inline uint8_t *l_map(const large_t *l) { return UNMANGLE(l->map_m); }
/* What malloc_usable_size says: the requested size when canaries guard the
 * rest (a sampled malloc(0) has size 0), else everything up to the guard. */
static inline size_t l_size(const large_t *l) { return l->tail_canary ? l->req : l->usable; }


static size_t hash_of(const void *p) {
    return (size_t)((((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ull) >> (64 - HASH_BITS));
}

/* The last large blocks given back to the kernel at their free, so that a
 * second free of one is still reported as a double free. */
#define GONE_SLOTS 64
typedef struct gone { uintptr_t user_m; size_t size; uint32_t alloc_stack, free_stack, alloc_tid, free_tid; } gone_t;
static gone_t gone[GONE_SLOTS];
static uint32_t gone_next;

static void forget_gone(uintptr_t user_m) {
    for (uint32_t i = 0; i < GONE_SLOTS; i++)
        if (gone[i].user_m == user_m) gone[i].user_m = 0;
}

static void hash_insert(large_t *l) {
    forget_gone(l->user_m);
    size_t h = hash_of(l_user(l));
    l->next = table[h];
    table[h] = l;
    l->lprev = NULL;
    l->lnext = live_list;
    if (live_list) live_list->lprev = l;
    live_list = l;
    n_live++;
    live_bytes += l->usable;
    live_mapped += l->map_size - l->room;
    if (live_mapped > live_hwm) live_hwm = live_mapped;
}

/* Take l out of the table and the live list (found by identity: a block
 * being resized may already have its new address). */
static void hash_unlink(large_t *l, const void *key) {
    for (large_t **pp = &table[hash_of(key)]; *pp; pp = &(*pp)->next) {
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    }
    if (l->lprev) l->lprev->lnext = l->lnext; else live_list = l->lnext;
    if (l->lnext) l->lnext->lprev = l->lprev;
    n_live--;
    live_bytes -= l->usable;
    live_mapped -= l->map_size - l->room;
}

static large_t *hash_find(const void *p) {
    for (large_t *l = table[hash_of(p)]; l; l = l->next)
        if (l_user(l) == p) return l;
    return NULL;
}


static void remember_gone(const large_t *l) {
    gone_t *g = &gone[gone_next++ % GONE_SLOTS];
    *g = (gone_t){l->user_m, l_size(l), l->alloc_stack, l->free_stack, l->alloc_tid, l->free_tid};
}

static void unmap_block(large_t *l) {
    track_region_remove(l_map(l), l->map_size);
    track_unmap(l_map(l), l->map_size);
    os_unmap(l_map(l), l->map_size);
    atomic_fetch_add(&os_unmapped_total, l->map_size);
    meta_free(l, sizeof *l);
}

/* A freed block leaves the cache or the quarantine for unmapping (mh_locks.large
 * held): its address stays known as freed, so a second free of it is still
 * a double free (it said invalid-free once a decay pass, mh_trim or a full
 * cache had unmapped it: fuzz_bugs). */
static void evict_push(large_t *l, large_t **evict) {
    remember_gone(l);
    l->next = *evict;
    *evict = l;
}

static void unmap_list(large_t *l) {
    while (l) {
        large_t *n = l->next;
        unmap_block(l);
        l = n;
    }
}

/* Canaries: after the request when the mode has them (mh_cfg.tail), and
 * always in the few bytes a sampled block leaves before its guard page
 * (16-byte alignment keeps it from ending at the page end); with underflow=1
 * a sampled block, which starts mid-page, also has one in front. Which
 * canaries a block has is fixed when it is allocated (options may change). */
static void canaries_choose(large_t *l) {
    size_t room = (uintptr_t)l_user(l) & (MH_PAGE - 1);
    l->tail_canary = mh_cfg.tail || l->sampled;
    l->front_len = (uint16_t)(!l->sampled || !mh_cfg.front ? 0 : room < mh_cfg.canary_len ? room : mh_cfg.canary_len);
}
static inline size_t tail_canary_len(const large_t *l) {
    size_t slack = l->usable - l->req;
    return !l->tail_canary ? 0 : slack < MH_PAGE ? slack : MH_PAGE;
}
static inline size_t front_canary_len(const large_t *l) { return l->front_len; }

static void canaries_fill(const large_t *l) {
    size_t t = tail_canary_len(l), f = front_canary_len(l);
    uint8_t *user = l_user(l);
    if (t) canary_fill(user + l->req, t);
    if (f) canary_fill(user - f, f);
    if (f) track_noaccess(user - f, f);
}

static size_t canary_bad(uint8_t *p, size_t len) {
    if (!len) return SIZE_MAX;
    track_peek(p, len);
    size_t bad = canary_find_bad(p, len);
    track_unpeek(p, len);
    return bad;
}

/* Fill in the fault of the first overwritten canary byte; false if none.
 * The detail is written into detail[200]. */
static bool canary_fault(const large_t *l, mh_fault_t *f, char *detail) {
    uint8_t *user = l_user(l);
    size_t t = tail_canary_len(l), fl = front_canary_len(l), bad;
    if ((bad = canary_bad(user - fl, fl)) != SIZE_MAX) {
        f->kind = "heap-buffer-underflow";
        f->addr = user - fl + bad;
        track_peek(user - fl, fl);
        f->detail = canary_detail(detail, 200, user - fl, fl, bad, true);
        track_unpeek(user - fl, fl);
        return true;
    }
    if ((bad = canary_bad(user + l->req, t)) != SIZE_MAX) {
        f->kind = "heap-buffer-overflow";
        f->addr = user + l->req + bad;
        track_peek(user + l->req, t);
        f->detail = canary_detail(detail, 200, user + l->req, t, bad, false);
        track_unpeek(user + l->req, t);
        return true;
    }
    return false;
}

/* Room (PROT_NONE address space after the data, where the block grows in
 * place) is reserved for every new block, and kept while the block is
 * cached, only where address space costs nothing: no RLIMIT_AS, and no
 * strict overcommit, under which the room a move made writable stays
 * charged. Asked again at each new mapping (a program may set a limit
 * later; beside the mmap the question costs nothing), and the answer kept
 * for the frees and reuses, which make no system call for it. */
static _Atomic int room_ok;
/* Asks (the overcommit policy once) and records the answer. */
static bool room_allowed_now(void) {
    static _Atomic int strict; /* 0 not known yet, 1 no, 2 yes */
    int k = atomic_load_explicit(&strict, memory_order_relaxed);
    if (!k) {
        k = os_overcommit_strict() ? 2 : 1;
        atomic_store_explicit(&strict, k, memory_order_relaxed);
    }
    bool ok = k == 1 && !os_address_space_limited();
    atomic_store_explicit(&room_ok, ok, memory_order_relaxed);
    return ok;
}
/* The answer of the last new mapping. */
static bool room_allowed(void) { return atomic_load_explicit(&room_ok, memory_order_relaxed); }

/* As much again as the data, up to ROOM_MAX. */
static size_t room_for(size_t pages) { return (pages < ROOM_MAX ? pages : ROOM_MAX) & ~(MH_PAGE - 1); }

/* Map `pages` bytes of data aligned to `align`, with guard pages, and room
 * as large again after a guarded page-aligned block: reused from the cache
 * for a larger request, it grows in place. Moving it with mremap instead
 * (bench large: 680 MB moved, 3.6-5.4 s) made every moved page trap to the
 * hypervisor at its next touch on this guest; with room, 190 MB moved and
 * 2.4 s (glibc 2.3 s). */
static bool map_block(large_t *l, size_t pages, size_t align, bool guard) {
    size_t g = guard ? MH_PAGE : 0;
    size_t slack = align > MH_PAGE ? align : 0;
    size_t room = guard && !slack && room_allowed_now() ? room_for(pages) : 0;
    size_t total = pages + 2 * g + slack + room;
    if (total < pages) return false;
    uint8_t *raw = guard || slack ? os_reserve(total) : os_map(total);
    if (!raw) return false;
    uint8_t *data = (uint8_t *)(((uintptr_t)raw + g + align - 1) & ~(uintptr_t)(align - 1));
    uint8_t *map = data - g, *end = data + pages + room + g;
    if (map > raw) os_unmap(raw, (size_t)(map - raw));
    if (raw + total > end) os_unmap(end, (size_t)(raw + total - end));
    if ((guard || slack) && !os_commit(data, pages)) {
        os_unmap(map, (size_t)(end - map));
        return false;
    }
    l->map_m = MANGLE(map);
    l->map_size = (size_t)(end - map);
    l->user_m = MANGLE(data);
    l->usable = pages;
    l->guarded = guard;
    l->room = room;
    track_region_add(map, l->map_size);
    purge_grew(pages);
    return true;
}

/* `dirty`: how many bytes from the start may hold old data (0 for a fresh
 * mapping; a reused one grown with mremap is fresh, so zero, past it). */
static void *finish_alloc(large_t *l, size_t size, int kind, bool zero, size_t dirty) {
    uint8_t *user = l_user(l);
    l->req = size;
    l->kind = (uint8_t)kind;
    l->free_stack = l->free_tid = 0;
    if (alloc_stacks()) {
        l->alloc_stack = stack_capture();
        l->alloc_tid = mh_thread_number();
    } else {
        l->alloc_stack = l->alloc_tid = 0; /* (a reused mapping's are its last block's) */
    }
    if (dirty) track_open(user, l->usable); /* a cached block: inaccessible since its free */
    if (zero && dirty) memset(user, 0, size < dirty ? size : dirty);
    else if (!zero && mh_opt.fill_new) memset(user, FILL_NEW, size < FILL_MAX ? size : FILL_MAX);
    canaries_choose(l);
    canaries_fill(l);
    /* The tools see what malloc_usable_size promises: the request when a
     * canary follows it, else every data page. */
    size_t open = l_size(l);
    if (l->usable > open) track_noaccess(user + open, l->usable - open);
    track_alloc(user, open, 0, zero);
    return user;
}

/* Give an owned (unlisted) block `pages` of data: grow into its room when
 * that is enough (one mprotect, no move), else by moving its pages with
 * mremap into a fresh guarded reservation (no copy, resident pages stay)
 * with `room` more after the data, inaccessible (guard page, data, room,
 * guard page); shrink by unmapping the tail, room included (its pages go
 * back), when it is more than `keep` bytes too long. */
static size_t pages_after_resize(const large_t *l, size_t pages, size_t keep) {
    return pages > l->usable || l->usable - pages > keep ? pages : l->usable;
}

/* Move the data pages [user, +usable) into a fresh reservation (guard,
 * pages + room, guard), grown to pages + room. With room, the move grows
 * the mapping by it (made inaccessible after): data and room are one
 * kernel mapping (vma), so the pages that later become data merge with it,
 * and the next move (mremap takes a single vma) can take them all. A room
 * mapped on its own did not merge: mremap failed with EFAULT. NULL when
 * the reservation or the move fails. */
static uint8_t *move_reserved(uint8_t *user, size_t usable, size_t pages, size_t ng, size_t room) {
    uint8_t *dst = os_reserve(pages + 2 * ng + room);
    if (!dst) return NULL;
    uint8_t *moved = os_remap(user, usable, pages + room, dst + ng);
    /* (A failed move leaves the reservation in place: seen on Linux 6.18
     * for ENOMEM, an address-space limit, and EFAULT, a split mapping. A
     * kernel that unmapped the target before failing would leave a window
     * in which another thread could map there before this unmap.) */
    if (!moved) os_unmap(dst, pages + 2 * ng + room);
    return moved;
}

static bool resize_pages(large_t *l, size_t pages, bool guard, size_t keep, size_t room) {
    uint8_t *user = l_user(l), *map = l_map(l);
    size_t g = l->guarded ? MH_PAGE : 0;
    if (pages_after_resize(l, pages, keep) == l->usable) return true; /* a little too big: keep it */
    if (pages > l->usable && pages - l->usable <= l->room) {
        /* A quarter more than before at least, up to `keep` (more would
         * be cut again by the next resize) and as much of the room as
         * there is: a buffer grown a few bytes at a time then takes one
         * mprotect per step, not per page. */
        size_t step = (l->usable / 4 < keep ? l->usable / 4 : keep) & ~(MH_PAGE - 1), d = pages - l->usable;
        if (step > l->room) step = l->room;
        if (step > d) d = step;
        if (!os_commit(user + l->usable, d)) return false;
        pages = l->usable + d;
        l->room -= d;
        purge_grew(d);
    } else if (pages > l->usable) {
        size_t ng = guard ? MH_PAGE : 0;
        /* Into a guarded reservation, with room, then without. The kernel
         * counts it beside the old pages until the move (the reservation,
         * or the move into it, fails), so under an address-space limit
         * this fails where the move alone fits (RLIMIT_AS = VmSize + 256
         * MiB: glibc grew a 2 MiB block to 240 MiB, this failed from 150
         * MiB on). Then the kernel places the pages itself, and the block
         * goes without guard pages. No room without guards: past
         * GUARDED_MAX the kernel's mappings are counted. */
        if (!ng || room > MH_MAX_REQUEST - pages) room = 0;
        /* Forget the old range before the pages leave it: once they do,
         * another thread may map it, and its shadow must be clean by then
         * (found by fuzz_threads: a new sampled block's canary write hit
         * the poison this cached block had left). */
        track_region_remove(map, l->map_size);
        track_unmap(map, l->map_size);
        uint8_t *moved = move_reserved(user, l->usable, pages, ng, room);
        if (!moved && room) moved = move_reserved(user, l->usable, pages, ng, room = 0);
        if (moved && room && !os_protect_none(moved + pages, room)) {
            pages += room; /* (out of kernel mappings: the room is data) */
            room = 0;
        }
        if (!moved) {
            ng = room = 0;
            moved = os_remap(user, l->usable, pages, NULL);
        }
        if (!moved) {
            track_region_add(map, l->map_size);
            return false;
        }
        /* The old pages moved; drop the old guards only (never the moved
         * range, which another thread may map again meanwhile). */
        if (user > map) os_unmap(map, (size_t)(user - map));
        uint8_t *old_end = user + l->usable, *map_end = map + l->map_size;
        if (map_end > old_end && moved != user) os_unmap(old_end, (size_t)(map_end - old_end));
        l->map_m = MANGLE(moved - ng);
        l->map_size = pages + 2 * ng + room;
        l->room = room;
        l->user_m = MANGLE(moved);
        l->guarded = ng != 0;
        track_region_add(moved - ng, l->map_size);
        purge_grew(pages - l->usable);
    } else {
        uint8_t *end = user + pages, *map_end = map + l->map_size;
        if (g) os_protect_none(end, g); /* the new guard */
        track_unmap(end + g, (size_t)(map_end - end - g));
        os_unmap(end + g, (size_t)(map_end - end - g));
        atomic_fetch_add(&os_unmapped_total, (size_t)(map_end - end - g));
        track_region_remove(map, l->map_size);
        l->map_size = (size_t)(end + g - map);
        l->room = 0;
        track_region_add(map, l->map_size);
    }
    l->usable = pages;
    return true;
}

/* The data pages of a mapping (a sampled block uses only their end). */
static inline size_t data_pages(const large_t *l) { return l->map_size - l->room - (l->guarded ? 2 * MH_PAGE : 0); }

/* A reused mapping keeps up to this much beyond the request as slack: its
 * pages are resident already, and the next request may be larger (glibc
 * keeps its heap top for the same reason). A longer tail is split off and
 * cached on its own: splitting every tail cut the cache into pieces too
 * small for the next request (bench bigreuse, 5-25 MiB blocks written at
 * every 4th page, faulted 134k pages instead of 4k). */
static inline size_t reuse_keep(size_t pages) { return 7 * pages + ((size_t)1 << 20); }

/* How much a cached mapping of u bytes costs a request of `pages`: what
 * faults in if it is smaller (grown), a quarter of what it keeps resident
 * beyond the request if it is larger. */
static inline size_t cost(size_t u, size_t pages) { return u < pages ? pages - u : (u - pages) / 4; }

/* Take *pp out of the cache (mh_locks.large held). */
static large_t *cache_unlink(large_t **pp) {
    large_t *l = *pp;
    *pp = l->next;
    cached_bytes -= data_pages(l);
    n_cached--;
    if (l == cache_newest) cache_newest = NULL;
    return l;
}

/* What the cache may hold (mh_locks.large held; `pending`: bytes of a mapping
 * on its way from the cache to the program): large_cache_mb, or more while
 * the live blocks take less than they did at their high-water mark, so a
 * program that frees and allocates big buffers in turn reuses their pages
 * without ever holding more than it did at its peak; but never more than
 * twice what the live blocks take. A program that frees everything keeps
 * at most large_cache_mb, and one that frees most keeps little more than it
 * uses (its own mmap under an address-space limit must not fail for our
 * cache: with 100 MiB live and 400 MiB freed, a bound of four times the
 * live bytes failed a 350 MiB mmap under a 700 MiB limit). On
 * bench/src/large.c, 1x faulted 161k pages in 0.28 s, 2x 146k in 0.26 s,
 * 4x 117k in 0.21 s (glibc 175k in 0.30 s). */
static size_t cache_max_with(size_t pending) {
    size_t floor = (size_t)OPT(large_cache_mb) << 20;
    if (!floor) return 0; /* large_cache_mb=0: no cache */
    size_t held = live_mapped + quar_bytes + pending; /* (the quarantine's mappings are held too) */
    size_t room = live_hwm > held ? live_hwm - held : 0;
    if (room > 2 * live_mapped) room = 2 * live_mapped;
    return room > floor ? room : floor;
}
static size_t cache_max(void) { return cache_max_with(0); }

static void cache_insert(large_t *l, uint64_t now, bool behind, size_t max, large_t **evict);
static void cache_trim(size_t max, large_t **evict);

/* Cut an owned cached mapping (whole data pages, guards as cached) to
 * `pages` of data when it has more than reuse_keep() beyond; the rest goes
 * back to the cache as a mapping of its own, with the age it had. Two pages
 * become the guards between the two (a cached mapping in hardened mode is
 * inaccessible already). */
static void split_tail(large_t *l, size_t pages) {
    size_t g = l->guarded ? MH_PAGE : 0;
    if (l->usable - pages <= reuse_keep(pages) + 2 * g) return;
    uint8_t *map = l_map(l), *cut = l_user(l) + pages, *map_end = map + l->map_size;
    large_t *r = meta_alloc(sizeof *r);
    if (!r) return;
    if (g && !l->sealed && !os_protect_none(cut, 2 * g)) {
        meta_free(r, sizeof *r);
        return;
    }
    *r = (large_t){.map_m = MANGLE(cut + g), .map_size = (size_t)(map_end - cut - g), .user_m = MANGLE(cut + 2 * g),
                   .guarded = l->guarded, .sealed = l->sealed};
    r->room = l->room; /* the room after the data is the tail's now */
    l->room = 0;
    r->usable = data_pages(r);
    track_region_remove(map, l->map_size);
    l->map_size = (size_t)(cut + g - map);
    l->usable = pages;
    track_region_add(map, l->map_size);
    track_region_add(cut + g, r->map_size);
    large_t *evict = NULL;
    mh_lock(&mh_locks.large);
    cache_insert(r, l->freed_ms, true, cache_max_with(l->map_size), &evict);
    mh_unlock(&mh_locks.large);
    unmap_list(evict);
}

/* Size, canary and stacks first, then the table: a heap check (or a forked
 * child) never finds a listed block whose canary is not written yet. */
static void *publish(large_t *l, size_t size, int kind, bool zero, size_t dirty) {
    void *p = finish_alloc(l, size, kind, zero, dirty);
    mh_lock(&mh_locks.large);
    hash_insert(l);
    mh_unlock(&mh_locks.large);
    return p;
}

/* A sampled block ends 16-byte aligned right at its guard page, so an
 * overflow reaches the guard at once; the few bytes of slack left carry the
 * canary. */
static void place_sampled(large_t *l, size_t need, size_t pages) {
    size_t used = (need + 15) & ~(size_t)15;
    l->user_m = MANGLE(l_map(l) + MH_PAGE + pages - used);
    l->usable = used;
    l->sampled = 1;
}

void *large_alloc(size_t size, size_t align, bool zero, int kind, bool sampled) {
    if (size > MH_MAX_REQUEST) { errno = ENOMEM; return NULL; }
    size_t need = size + mh_cfg.tail;
    size_t pages = ((need ? need : 1) + MH_PAGE - 1) & ~(MH_PAGE - 1); /* size 0: one page */
    if (align < MH_PAGE) align = MH_PAGE;
    large_t *l = NULL;
    mh_lock(&mh_locks.large);
    bool guard = sampled || n_live < GUARDED_MAX;
    if (align == MH_PAGE) {
        /* Reuse a cached mapping, resized: its resident pages save faults.
         * The one of least cost(): a smaller one is grown (only the new
         * pages fault), a larger one keeps some slack and has the rest split
         * off. Taking the smallest that fits instead kept more slack: bench
         * large peaked at 338 MB against 317 MB (glibc 322 MB), and realloc
         * at 72 MB against 69 MB. A sampled block takes only a guarded one
         * of its exact size: no mmap, munmap or split. In hardened mode
         * never the one freed last (cache_newest). */
        large_t **best = NULL;
        size_t best_u = 0;
        for (large_t **pp = &cache; *pp; pp = &(*pp)->next) {
            size_t u = data_pages(*pp);
            if (mh_cfg.hard && *pp == cache_newest) continue;
            if (sampled) {
                if (u != pages || !(*pp)->guarded) continue;
            } else if (best && cost(u, pages) >= cost(best_u, pages)) {
                continue;
            }
            best = pp;
            best_u = u;
            if (u == pages) break;
        }
        if (best) l = cache_unlink(best);
    }
    mh_unlock(&mh_locks.large);
    if (l) {
        size_t g = l->guarded ? MH_PAGE : 0;
        /* Whole data pages again (it may have been a sampled block). */
        l->user_m = MANGLE(l_map(l) + g);
        l->usable = data_pages(l);
        l->sampled = 0;
        if (l->usable > pages) split_tail(l, pages);
        size_t dirty = l->usable;
        /* What could not be split off stays as slack: its pages are
         * resident already, and the next request may be larger. */
        if ((l->sealed && !os_commit(l_map(l) + g, l->map_size - 2 * g - l->room)) ||
            !resize_pages(l, pages, guard, reuse_keep(pages), room_allowed() ? room_for(pages) : 0)) {
            unmap_block(l); /* could not reuse it: map anew */
        } else {
            l->sealed = 0;
            if (sampled) {
                /* The whole page, inaccessible to the tools since its free:
                 * a sampled block's front canary lies before the block. */
                track_open(l_user(l), l->usable);
                place_sampled(l, need, pages);
            }
            return publish(l, size, kind, zero, dirty);
        }
    }
    l = meta_alloc(sizeof *l);
    if (!l) { errno = ENOMEM; return NULL; }
    if (!map_block(l, pages, align, guard)) {
        meta_free(l, sizeof *l);
        errno = ENOMEM;
        return NULL;
    }
    if (sampled) place_sampled(l, need, pages);
    return publish(l, size, kind, zero, 0); /* fresh pages are zero */
}

static large_t *quarantine_take_oldest(void) {
    large_t *l = quar_head;
    quar_head = l->next;
    if (!quar_head) quar_tail = NULL;
    quar_bytes -= l->usable;
    n_quar--;
    return l;
}

/* Checks on free of a large block; false when the free must not go on. */
static bool check_on_free(large_t *l, bool has_size, size_t sized, int kind, const char *where) {
    uint8_t *user = l_user(l);
    mh_fault_t f = {.addr = user, .block = user, .size = l->req, .where = where, .alloc_stack = l->alloc_stack,
                    .alloc_tid = l->alloc_tid};
    if (mh_opt.mismatch && kinds_clash(l->kind, kind)) {
        f.kind = "alloc-dealloc-mismatch";
        f.detail = kind == KIND_MALLOC ? (l->kind == KIND_NEW ? "allocated with operator new, freed with free"
                                                              : "allocated with operator new[], freed with free")
                 : kind == KIND_NEW ? (l->kind == KIND_MALLOC ? "allocated with malloc, freed with operator delete"
                                                              : "allocated with operator new[], freed with operator delete")
                 : (l->kind == KIND_MALLOC ? "allocated with malloc, freed with operator delete[]"
                                           : "allocated with operator new, freed with operator delete[]");
        mh_report_fault(&f);
        return false;
    }
    if (has_size && (mh_opt.mismatch ? sized != l->req && sized != l_size(l) : sized > l_size(l))) {
        f.kind = "size-mismatch";
        f.detail = "the size given to the sized free differs from the size allocated";
        mh_report_fault(&f);
        return false;
    }
    char detail[200];
    if (canary_fault(l, &f, detail)) {
        mh_report_fault(&f);
        return false;
    }
    return true;
}

/* Claiming a live block makes this thread its only user until it releases
 * (frees) or unclaims it: a free or realloc of it by another thread in the
 * meantime finds it busy and is reported, as a second claim of a slab
 * block's live bit is. */
large_t *large_claim(const void *p, bool *busy) {
    *busy = false;
    mh_lock(&mh_locks.large);
    large_t *l = hash_find(p);
    if (l && __atomic_load_n(&l->busy, __ATOMIC_ACQUIRE)) {
        *busy = true;
        l = NULL;
    }
    if (l) __atomic_store_n(&l->busy, 1, __ATOMIC_RELAXED);
    mh_unlock(&mh_locks.large);
    return l;
}

void large_unclaim(large_t *l) { __atomic_store_n(&l->busy, 0, __ATOMIC_RELEASE); }

size_t large_size(const large_t *l) { return l_size(l); }

/* Checks before a claimed block is freed or resized; false (after a report)
 * when the operation must not go on: the block stays claimed. */
bool large_check_claimed(large_t *l, bool has_size, size_t sized, int kind, const char *where) {
    if (!mh_cfg.hard && !has_size) return true;
    return check_on_free(l, has_size, sized, kind, where);
}

/* Into the cache (mh_locks.large held), which is kept newest first: a block
 * just freed at the head, a remainder split off an older mapping (`split`)
 * where its age puts it. Over max bytes, the oldest leave for *evict. */
static void cache_insert(large_t *l, uint64_t now, bool split, size_t max, large_t **evict) {
    l->freed_ms = now;
    large_t **at = &cache;
    while (split && *at && (*at)->freed_ms > now) at = &(*at)->next;
    l->next = *at;
    *at = l;
    if (!split) cache_newest = l;
    purge_pending();
    cached_bytes += data_pages(l);
    n_cached++;
    cache_trim(max, evict);
}

/* Over max bytes or CACHE_MAX_BLOCKS (mh_locks.large held), the oldest cached
 * mappings leave for *evict: the newest that fit stay, found in one walk
 * (it runs at every large free). */
static void cache_trim(size_t max, large_t **evict) {
    if (cached_bytes <= max && n_cached <= CACHE_MAX_BLOCKS) return;
    size_t bytes = 0, n = 0;
    large_t **pp = &cache;
    while (*pp && bytes + data_pages(*pp) <= max && n < CACHE_MAX_BLOCKS) {
        bytes += data_pages(*pp);
        n++;
        pp = &(*pp)->next;
    }
    while (*pp) evict_push(cache_unlink(pp), evict);
}

/* A freed block gives up its room where address space or commit charge is
 * limited (room_allowed), and every live block does when an allocation fails
 * (large_drop_rooms): the mapping is then guards and data only, the room's
 * first page the back guard. (Its live_mapped share, map_size - room,
 * stays the same.) */
static void drop_room(large_t *l, bool force) {
    if (!l->room || (!force && room_allowed())) return;
    uint8_t *map = l_map(l), *end = l_user(l) + l->usable + (l->guarded ? MH_PAGE : 0);
    track_region_remove(map, l->map_size);
    os_unmap(end, l->room);
    atomic_fetch_add(&os_unmapped_total, l->room);
    l->map_size -= l->room;
    l->room = 0;
    track_region_add(map, l->map_size);
}

/* Free a claimed, checked block: quarantine, cache or unmap. */
void large_release(large_t *l) {
    uint64_t now = os_now_ms();
    large_t *evict = NULL;
    drop_room(l, false);
    if (mh_opt.stacks) {
        l->free_stack = stack_capture();
        l->free_tid = mh_thread_number();
    }
    track_free(l_user(l), l_size(l), 0);
    /* Quarantined, or cached in hardened mode: inaccessible from now on, so
     * a stale access faults right there. Sealed before the lock, as the
     * block is still claimed (heap checks skip it): the mprotect and its
     * TLB shootdown held up every other thread's large blocks (debug
     * mstress, 8 threads: 5,000 context switches against 800). */
    bool seal = l->sampled || mh_cfg.quarantine || (OPT(seal_large) && OPT(decay_ms) > 0 && OPT(large_cache_mb) > 0);
    if (seal) os_protect_none(l_map(l), l->map_size);
    mh_lock(&mh_locks.large);
    hash_unlink(l, l_user(l));
    __atomic_store_n(&l->busy, 0, __ATOMIC_RELAXED);
    size_t max = cache_max();
    if (l->sampled || mh_cfg.quarantine) {
        l->sealed = 1;
        l->next = NULL;
        if (quar_tail) quar_tail->next = l; else quar_head = l;
        quar_tail = l;
        quar_bytes += l->usable;
        n_quar++;
        size_t qmax = mh_cfg.quarantine ? mh_cfg.quarantine : ((size_t)4 << 20);
        while (n_quar > 1 && (quar_bytes > qmax || n_quar > QUARANTINE_MAX_BLOCKS)) {
            /* Out of quarantine into the cache, still inaccessible: the
             * next block of its size reuses the mapping (no mmap, munmap or
             * page faults again), or the purge gives it back. */
            large_t *old = quarantine_take_oldest();
            if (data_pages(old) <= max && OPT(decay_ms) > 0) cache_insert(old, now, false, max, &evict);
            else evict_push(old, &evict);
        }
        l = NULL;
    } else if (l->usable <= max && OPT(decay_ms) > 0) {
        /* seal_large (hardened): a cached block is inaccessible until
         * reused, so a stale access faults and is reported instead of
         * reading recycled data. */
        l->sealed = seal;
        cache_insert(l, now, false, max, &evict);
        l = NULL;
    }
    if (l) remember_gone(l);
    cache_trim(max, &evict); /* less is live: the cache may hold less */
    mh_unlock(&mh_locks.large);
    if (l) unmap_block(l);
    unmap_list(evict);
}

int large_free(void *p, bool has_size, size_t sized, int kind, const char *where) {
    bool busy;
    large_t *l = large_claim(p, &busy);
    if (!l) return busy ? LARGE_BUSY : LARGE_NOT_OURS;
    if (!large_check_claimed(l, has_size, sized, kind, where)) {
        large_unclaim(l); /* leave it allocated: the report may not abort */
        return LARGE_DONE;
    }
    large_release(l);
    return LARGE_DONE;
}

/* The usable size of a live large block; with check_where, its canaries are
 * checked too (the owner may not free it concurrently). */
bool large_usable(const void *p, size_t *size, const char *check_where) {
    bool busy;
    large_t *l = check_where && mh_cfg.hard ? large_claim(p, &busy) : NULL;
    if (l) {
        *size = l_size(l);
        check_on_free(l, false, 0, 0, check_where);
        large_unclaim(l);
        return true;
    }
    mh_lock(&mh_locks.large);
    l = hash_find(p);
    if (l) *size = l_size(l);
    mh_unlock(&mh_locks.large);
    return l != NULL;
}

/* A report about large block l (its stacks included). */
static void large_fault(mh_fault_t *f, const large_t *l, const char *kind, const void *addr, const char *detail) {
    *f = (mh_fault_t){.kind = kind, .addr = addr, .block = l_user(l), .size = l_size(l), .detail = detail,
                      .alloc_stack = l->alloc_stack, .free_stack = l->free_stack, .alloc_tid = l->alloc_tid,
                      .free_tid = l->free_tid};
}

/* p is not a live large block: was it one, freed and still cached or in
 * quarantine? Fills a double-free report if so. */
bool large_was_freed(const void *p, mh_fault_t *f) {
    bool found = false;
    mh_lock(&mh_locks.large);
    for (uint32_t i = 0; i < GONE_SLOTS && !found; i++) {
        const gone_t *g = &gone[i];
        if (!g->user_m || UNMANGLE(g->user_m) != p) continue;
        *f = (mh_fault_t){.kind = "double-free", .addr = p, .block = p, .size = g->size,
                          .detail = "the block was already freed (and unmapped)", .alloc_stack = g->alloc_stack,
                          .free_stack = g->free_stack, .alloc_tid = g->alloc_tid, .free_tid = g->free_tid};
        found = true;
    }
    large_t *lists[2] = {cache, quar_head};
    for (int i = 0; i < 2 && !found; i++) {
        for (large_t *l = lists[i]; l; l = l->next) {
            if (l_user(l) != p) continue;
            large_fault(f, l, "double-free", p, "the block was already freed");
            found = true;
            break;
        }
    }
    mh_unlock(&mh_locks.large);
    return found;
}

/* Does the cache hold a mapping that large_alloc would give a request of
 * `pages` without growing it, and open (not sealed: opening one changes
 * its protection, and its pages trap again when touched, as moved ones
 * do; the copy won nothing in hardened mode and kept 8 % more resident)? */
static bool cache_fits(size_t pages) {
    bool fits = false;
    mh_lock(&mh_locks.large);
    for (large_t *c = cache; c && !fits; c = c->next) {
        size_t u = data_pages(c);
        fits = u >= pages && u - pages <= reuse_keep(pages) && !c->sealed && !(mh_cfg.hard && c == cache_newest);
    }
    mh_unlock(&mh_locks.large);
    return fits;
}

/* Resize a claimed (and checked) block in place when it fits, else move
 * its pages with mremap (no copy) into a fresh guarded reservation; the
 * block stays claimed. *status: LARGE_DONE (the new address is returned),
 * LARGE_COPY (a sampled block, tools that cannot follow moved pages, or a
 * small enough block that the cache has resident pages for: the caller
 * allocates, copies and releases), LARGE_FAILED (ENOMEM, or a
 * mapping the program split: see realloc_large). The work
 * is done on a copy of the descriptor, published under the lock, so a
 * concurrent lookup of the old address finds the block, busy, throughout. */
void *large_resize(large_t *l, size_t size, int *status) {
    *status = LARGE_COPY;
    size_t need = size + mh_cfg.tail;
    size_t pages = (need + MH_PAGE - 1) & ~(MH_PAGE - 1);
    if (l->sampled || (pages > l->usable && track_active())) return NULL;
    *status = LARGE_FAILED;
    if (size > MH_MAX_REQUEST || need < size) {
        errno = ENOMEM;
        return NULL;
    }
    /* The copy under the lock: l's live-list links change when a
     * neighbour on the list is freed (a race ThreadSanitizer found). */
    mh_lock(&mh_locks.large);
    bool guard = n_live < GUARDED_MAX;
    large_t n = *l;
    mh_unlock(&mh_locks.large);
    /* It would move: copied into resident pages instead, if the cache has
     * some that fit (COPY_MAX). */
    if (pages > n.usable + n.room && n.usable <= COPY_MAX && cache_fits(pages)) {
        *status = LARGE_COPY;
        return NULL;
    }
    size_t old_size = l_size(l);
    /* Before a shrink unmaps the tail; to what malloc_usable_size will say. */
    const size_t keep = (size_t)64 << 10;
    size_t new_open = mh_cfg.tail ? size : pages_after_resize(&n, pages, keep);
    track_resize(l_user(l), old_size, new_open, 0);
    /* Room for half as much again (up to ROOM_MAX) after a block that
     * moves to grow: a buffer grown by small steps (a string realloc'ed at
     * every append) then moves O(log n) times, not at every page. */
    size_t room = room_for(pages / 2);
    if (!resize_pages(&n, pages, guard, keep, room)) {
        track_resize(l_user(l), new_open, old_size, 0);
        errno = ENOMEM;
        return NULL;
    }
    uint8_t *user = l_user(&n);
    if (mh_opt.fill_new && size > n.req && n.req < FILL_MAX)
        memset(user + n.req, FILL_NEW, (size < FILL_MAX ? size : FILL_MAX) - n.req);
    n.req = size;
    n.tail_canary = mh_cfg.tail != 0; /* resized: the canary of the options now */
    size_t slack = n.usable - size;
    if (n.tail_canary && slack) {
        track_open(user + size, slack < MH_PAGE ? slack : MH_PAGE);
        canary_fill(user + size, slack < MH_PAGE ? slack : MH_PAGE);
        track_noaccess(user + size, slack);
    }
    uint32_t moved_stack = user != l_user(l) && mh_opt.stacks ? stack_capture() : 0;
    mh_lock(&mh_locks.large);
    void *old_key = l_user(l);
    hash_unlink(l, old_key);
    if (user != old_key) { /* the old address was freed by this realloc: a later free of it is a double free */
        l->free_stack = moved_stack;
        l->free_tid = moved_stack ? mh_thread_number() : 0;
        remember_gone(l);
    }
    n.next = NULL;
    *l = n;
    hash_insert(l);
    mh_unlock(&mh_locks.large);
    *status = LARGE_DONE;
    return user;
}

uint64_t large_purge(uint64_t now, uint64_t decay, bool force) {
    large_t *evict = NULL;
    uint64_t due = UINT64_MAX;
    mh_lock(&mh_locks.large);
    for (large_t **pp = &cache; *pp;) {
        large_t *l = *pp;
        if (purge_ripe(now, l->freed_ms, decay, force, &due)) evict_push(cache_unlink(pp), &evict);
        else pp = &l->next;
    }
    /* Memory went back: the footprint to stay under is what is held now. */
    if (evict) live_hwm = live_mapped + cached_bytes;
    mh_unlock(&mh_locks.large);
    unmap_list(evict);
    return due;
}

/* An allocation failed: the quarantine's mappings go back too (it keeps
 * at least the block freed last, however large: a 96 MiB block held there
 * failed a 192 MiB realloc under an address-space limit in debug mode).
 * The last few stay known as freed (a second free is still reported). */
/* Out of address space or commit: the rooms of live blocks go (not of a
 * block being freed or resized: its owner works on it unlocked). */
void large_drop_rooms(void) {
    mh_lock(&mh_locks.large);
    for (large_t *l = live_list; l; l = l->lnext)
        if (l->room && !__atomic_load_n(&l->busy, __ATOMIC_ACQUIRE)) drop_room(l, true);
    mh_unlock(&mh_locks.large);
}

void large_release_quarantine(void) {
    large_t *evict = NULL;
    mh_lock(&mh_locks.large);
    while (quar_head) {
        evict_push(quarantine_take_oldest(), &evict);
    }
    mh_unlock(&mh_locks.large);
    unmap_list(evict);
}

void large_stats(size_t *blocks, size_t *bytes, size_t *mapped, size_t *cached) {
    mh_lock(&mh_locks.large);
    *blocks = n_live;
    size_t b = 0; /* what malloc_usable_size says of each */
    for (large_t *l = live_list; l; l = l->lnext) b += l_size(l);
    *bytes = b;
    *mapped = live_mapped;
    *cached = cached_bytes;
    mh_unlock(&mh_locks.large);
}

/* Canaries of every live large block (mh_check). */
int large_check(void) {
    mh_lock(&mh_locks.large);
    for (large_t *l = live_list; l; l = l->lnext) {
        if (__atomic_load_n(&l->busy, __ATOMIC_ACQUIRE)) continue; /* being freed or resized: its owner checks it */
        uint8_t *user = l_user(l);
        mh_fault_t f = {.block = user, .size = l->req, .where = "mh_check", .alloc_stack = l->alloc_stack,
                        .alloc_tid = l->alloc_tid};
        char detail[200];
        if (!canary_fault(l, &f, detail)) continue;
        mh_unlock(&mh_locks.large);
        mh_report_fault(&f);
        return -1;
    }
    mh_unlock(&mh_locks.large);
    return 0;
}

void large_foreach_live(large_visit_fn fn, void *arg) {
    for (large_t *l = live_list; l; l = l->lnext) {
        /* Not one a free or realloc has claimed: on its way out, and maybe
         * sealed already (large_release seals before it takes the lock). */
        if (__atomic_load_n(&l->busy, __ATOMIC_ACQUIRE)) continue;
        fn(l_user(l), l_size(l), l->alloc_stack, arg);
    }
}

/* For the fault handler: is addr in a guard page of a live large block, or
 * inside a quarantined one? Runs in a signal handler: takes the lock only if
 * it is free. */
bool large_explain(uintptr_t addr, mh_fault_t *f) {
    bool locked = mh_trylock(&mh_locks.large);
    bool found = false;
    for (large_t *l = cache; l && !found; l = l->next) {
        uintptr_t map = (uintptr_t)l_map(l);
        if (addr >= map && addr < map + l->map_size) {
            large_fault(f, l, "use-after-free", (void *)addr, "the block was freed (its mapping is kept for reuse)");
            found = true;
        }
    }
    for (large_t *l = quar_head; l && !found; l = l->next) {
        uintptr_t map = (uintptr_t)l_map(l);
        if (addr >= map && addr < map + l->map_size) {
            large_fault(f, l, "use-after-free", (void *)addr, "the block was freed and is in quarantine");
            found = true;
        }
    }
    {
        for (large_t *l = live_list; l && !found; l = l->lnext) {
            uintptr_t map = (uintptr_t)l_map(l), user = (uintptr_t)l_user(l);
            if (addr < map || addr >= map + l->map_size) continue;
            bool before = addr < user;
            large_fault(f, l, before ? "heap-buffer-underflow" : "heap-buffer-overflow", (void *)addr,
                        "the access hit a guard page");
            f->free_stack = f->free_tid = 0;
            found = true;
        }
    }
    if (locked) mh_unlock(&mh_locks.large);
    return found;
}

void large_reset_all(void) {
    mh_lock(&mh_locks.large);
    while (live_list) {
        large_t *l = live_list;
        live_list = l->lnext;
        table[hash_of(l_user(l))] = NULL; /* every chain empties with its blocks */
        n_live--;
        unmap_block(l);
    }
    while (cache) {
        large_t *l = cache;
        cache = l->next;
        unmap_block(l);
    }
    cache_newest = NULL;
    while (quar_head) unmap_block(quarantine_take_oldest());
    n_live = live_bytes = live_mapped = cached_bytes = n_cached = quar_bytes = n_quar = live_hwm = 0;
    memset(gone, 0, sizeof gone);
    mh_unlock(&mh_locks.large);
}

void large_lock_all(void) { mh_lock(&mh_locks.large); }
void large_unlock_all(void) { mh_unlock(&mh_locks.large); }
