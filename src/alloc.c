/* The public entry points (thin), start-up, fork handling and the give-back
 * clock. */
#include "internal.h"

_Atomic int mh_ready;
static mh_lock_t init_lock = MH_LOCK_INIT;
static mh_lock_t tick_lock = MH_LOCK_INIT;
static _Atomic uint64_t next_tick_ms;

MH_INTERNAL void tcache_init(void);
MH_INTERNAL void large_init(void);
MH_INTERNAL void tcache_after_fork_child(void);

/* ---- fork: hold every lock across fork() so the child finds them free ---- */
static void fork_prepare(void) {
    mh_lock(&tick_lock);
    for (uint32_t c = 0; c < mh_nclasses; c++) mh_lock(&mh_bins[c].lock);
    mh_lock(&mh_heap_lock);
    large_lock_all();
    tcache_lock_all();
    meta_lock_all();
}
static void fork_parent(void) {
    meta_unlock_all();
    tcache_unlock_all();
    large_unlock_all();
    mh_unlock(&mh_heap_lock);
    for (uint32_t c = mh_nclasses; c-- > 0;) mh_unlock(&mh_bins[c].lock);
    mh_unlock(&tick_lock);
}
static void fork_child(void) {
    meta_unlock_all();
    tcache_after_fork_child();
    large_unlock_all();
    mh_unlock(&mh_heap_lock);
    for (uint32_t c = mh_nclasses; c-- > 0;) mh_unlock(&mh_bins[c].lock);
    mh_unlock(&tick_lock);
}

/* Start-up must work from the first allocation the dynamic loader or a
 * constructor makes: no libc malloc, no stdio, no dlsym here. */
void mh_init_slow(void) {
    mh_lock(&init_lock);
    if (!atomic_load_explicit(&mh_ready, memory_order_relaxed)) {
        mh_options_init();
        sizeclass_init();
        for (uint32_t c = 0; c < MH_MAX_CLASSES; c++) pthread_mutex_init(&mh_bins[c].lock, NULL);
        mh_radix = os_map_noreserve(MH_RADIX_ENTRIES * sizeof(*mh_radix));
        if (!mh_radix) mh_fatal("cannot map the miniheap radix table");
        large_init();
        tcache_init();
        atomic_store_explicit(&next_tick_ms, os_now_ms() + mh_opt.decay_ms, memory_order_relaxed);
        atomic_store_explicit(&mh_ready, 1, memory_order_release);
        /* May allocate (through us, now ready). */
        pthread_atfork(fork_prepare, fork_parent, fork_child);
    }
    mh_unlock(&init_lock);
}

/* The give-back clock. Called from slow paths and every MH_TICK_OPS
 * operations of a thread; no background thread. */
void mh_tick(bool force) {
    uint64_t now = os_now_ms();
    if (!force && now < atomic_load_explicit(&next_tick_ms, memory_order_relaxed)) return;
    if (force) mh_lock(&tick_lock);
    else if (!mh_trylock(&tick_lock)) return;
    uint32_t step = mh_opt.decay_ms / 4;
    atomic_store_explicit(&next_tick_ms, now + (step < 10 ? 10 : step), memory_order_relaxed);
    for (uint32_t c = 0; c < mh_nclasses; c++) slab_purge_class(c, now, force);
    miniheap_purge(now, force);
    large_purge(now, force);
    mh_unlock(&tick_lock);
}

/* ---- block state --------------------------------------------------------- */

/* p came from a slab, so skip slab_of's checks. */
static inline void mark_live(void *p) {
    uintptr_t a = (uintptr_t)p;
    slab_t *s = miniheap_of(p)->unit_slab[(a >> MH_UNIT_SHIFT) & (MH_UNITS - 1)];
    uint32_t idx = slab_index(s, a - (uintptr_t)s->start);
    atomic_fetch_or_explicit(&s->live[idx >> 6], (uint64_t)1 << (idx & 63), memory_order_relaxed);
}

static inline void count_op(tcache_t *t) {
    if (unlikely(--t->ops_left <= 0)) {
        t->ops_left = MH_TICK_OPS;
        mh_tick(false);
    }
}

/* Allocate one block of class cls: thread cache first. */
static inline void *small_alloc(uint32_t cls) {
    tcache_t *t = mh_tcache;
    void *p;
    if (likely(t)) {
        tbin_t *bin = &t->bins[cls];
        if (likely(bin->count)) {
            p = bin->slots[--bin->count];
        } else {
            mh_tick(false);
            p = tcache_refill(t, cls);
            if (unlikely(!p)) goto oom;
        }
        t->allocs++;
        count_op(t);
    } else {
        t = tcache_get_slow();
        if (t) return small_alloc(cls);
        if (slab_alloc_batch(cls, &p, 1) != 1) goto oom;
    }
    mark_live(p);
    return p;
oom:
    errno = ENOMEM;
    return NULL;
}

static MH_COLD void bad_pointer(const char *kind, const void *p, const char *where) {
    mh_report(kind, p, NULL, 0, where, "the address was not handed out by miniheap, or not at a block's start");
}

/* Release a live small block (live bit already cleared). */
static inline void small_release(slab_t *s, void *p) {
    tcache_t *t = mh_tcache;
    if (likely(t)) {
        tbin_t *bin = &t->bins[s->cls];
        if (unlikely(bin->count == bin->cap)) {
            mh_tick(false);
            tcache_flush_bin(t, s->cls, bin->cap / 2);
        }
        bin->slots[bin->count++] = p;
        t->frees++;
        count_op(t);
        return;
    }
    t = tcache_get_slow();
    if (t) { small_release(s, p); return; }
    slab_free_batch(s->cls, &p, 1);
}

/* Clear the live bit; false (and a report) when the block was not live. */
static inline bool claim_free(slab_t *s, uint32_t idx, void *p, const char *where) {
    uint64_t bit = (uint64_t)1 << (idx & 63);
    uint64_t old = atomic_fetch_and_explicit(&s->live[idx >> 6], ~bit, memory_order_relaxed);
    if (likely(old & bit)) return true;
    mh_report("double-free", p, p, s->bsize, where, "the block is not allocated (freed already?)");
    return false;
}

/* Resolve p for free-like calls. Returns the slab (small), or NULL after
 * handling a large block or reporting a bad pointer. */
static inline slab_t *resolve_for_free(void *p, uint32_t *idx, const char *where, size_t sized) {
    bool interior = false;
    slab_t *s = slab_of(p, idx, &interior);
    if (likely(s)) return s;
    if (interior || !large_free(p, sized)) bad_pointer("invalid-free", p, where);
    return NULL;
}

/* ---- the prefixed API ---------------------------------------------------- */

MH_API void *mh_malloc(size_t size) {
    if (likely(size <= MH_SMALL_MAX)) {
        if (unlikely(!mh_tcache)) mh_ensure_init(); /* the class table needs it */
        return small_alloc(size_to_class(size));
    }
    mh_ensure_init();
    mh_tick(false);
    return large_alloc(size, 0, false);
}

MH_API void mh_free(void *p) {
    if (!p) return;
    mh_ensure_init(); /* the radix table must exist to tell a foreign pointer */
    uint32_t idx;
    slab_t *s = resolve_for_free(p, &idx, "free", 0);
    if (s && claim_free(s, idx, p, "free")) small_release(s, p);
}

MH_API void *mh_calloc(size_t count, size_t size) {
    size_t total;
    if (unlikely(__builtin_mul_overflow(count, size, &total))) {
        errno = ENOMEM;
        return NULL;
    }
    if (likely(total <= MH_SMALL_MAX)) {
        if (unlikely(!mh_tcache)) mh_ensure_init();
        void *p = small_alloc(size_to_class(total));
        if (p) memset(p, 0, total);
        return p;
    }
    mh_ensure_init();
    mh_tick(false);
    return large_alloc(total, 0, true);
}

static void *aligned_alloc_impl(size_t align, size_t size) {
    if (align <= MH_MIN_ALIGN) return mh_malloc(size);
    if (size <= MH_SMALL_MAX) {
        mh_ensure_init();
        int cls = sizeclass_for_aligned(size, align);
        if (cls >= 0) return small_alloc((uint32_t)cls);
    }
    mh_ensure_init();
    mh_tick(false);
    return large_alloc(size ? size : 1, align, false);
}

MH_API int mh_posix_memalign(void **out, size_t align, size_t size) {
    if (align < sizeof(void *) || (align & (align - 1))) return EINVAL;
    int saved = errno;
    void *p = aligned_alloc_impl(align, size);
    if (!p) { errno = saved; return ENOMEM; }
    *out = p;
    return 0;
}

MH_API void *mh_aligned_alloc(size_t align, size_t size) {
    if (align == 0 || (align & (align - 1))) { errno = EINVAL; return NULL; }
    return aligned_alloc_impl(align, size);
}

MH_API void *mh_memalign(size_t align, size_t size) {
    /* glibc: a non-power-of-two alignment is rounded up to one. */
    if (align & (align - 1)) {
        if (align > ((size_t)1 << 62)) { errno = EINVAL; return NULL; }
        size_t a = 1;
        while (a < align) a <<= 1;
        align = a;
    }
    return aligned_alloc_impl(align, size);
}

MH_API void *mh_valloc(size_t size) { return aligned_alloc_impl(MH_PAGE, size); }

MH_API void *mh_pvalloc(size_t size) {
    size_t rounded = (size + MH_PAGE - 1) & ~(MH_PAGE - 1);
    if (rounded < size) { errno = ENOMEM; return NULL; }
    return aligned_alloc_impl(MH_PAGE, rounded ? rounded : MH_PAGE);
}

MH_API size_t mh_malloc_usable_size(const void *p) {
    if (!p) return 0;
    mh_ensure_init();
    uint32_t idx;
    bool interior = false;
    slab_t *s = slab_of(p, &idx, &interior);
    if (s) {
        if (atomic_load_explicit(&s->live[idx >> 6], memory_order_relaxed) & ((uint64_t)1 << (idx & 63)))
            return s->bsize;
    } else if (!interior) {
        size_t u = large_usable(p);
        if (u) return u;
    }
    mh_report("invalid-usable-size", p, NULL, 0, "malloc_usable_size",
              "the address is not a live block of miniheap");
    return 0;
}

MH_API void *mh_realloc(void *p, size_t size) {
    if (!p) return mh_malloc(size);
    if (size == 0) { /* glibc: realloc(p, 0) frees and returns NULL */
        mh_free(p);
        return NULL;
    }
    mh_ensure_init();
    uint32_t idx;
    bool interior = false;
    slab_t *s = slab_of(p, &idx, &interior);
    if (s) {
        uint64_t bit = (uint64_t)1 << (idx & 63);
        if (!(atomic_load_explicit(&s->live[idx >> 6], memory_order_relaxed) & bit)) {
            mh_report("invalid-realloc", p, p, s->bsize, "realloc", "the block is not allocated (freed already?)");
            return NULL;
        }
        if (size <= s->bsize && (size > s->bsize / 2 || s->bsize <= MH_MIN_ALIGN)) {
            /* Fits: stay, unless floating would move it to a fuller slab. */
            if (mh_opt.float_pct) {
                void *q = slab_float(p, s, size);
                if (q) {
                    mark_live(q);
                    atomic_fetch_and_explicit(&s->live[idx >> 6], ~bit, memory_order_relaxed);
                    slab_free_batch(s->cls, &p, 1);
                    return q;
                }
            }
            return p;
        }
        void *q = mh_malloc(size);
        if (!q) return NULL;
        memcpy(q, p, size < s->bsize ? size : s->bsize);
        mh_free(p);
        return q;
    }
    if (interior) {
        bad_pointer("invalid-realloc", p, "realloc");
        return NULL;
    }
    if (size <= MH_SMALL_MAX) { /* a large block shrinking into a slab */
        size_t old = large_usable(p);
        if (!old) {
            bad_pointer("invalid-realloc", p, "realloc");
            return NULL;
        }
        void *q = mh_malloc(size);
        if (!q) return NULL;
        memcpy(q, p, size < old ? size : old);
        mh_free(p);
        return q;
    }
    bool ours;
    void *q = large_realloc(p, size, &ours);
    if (!ours) bad_pointer("invalid-realloc", p, "realloc");
    return q;
}

MH_API void *mh_reallocarray(void *p, size_t count, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return mh_realloc(p, total);
}

MH_API void mh_free_sized(void *p, size_t size) {
    if (!p) return;
    mh_ensure_init();
    uint32_t idx;
    slab_t *s = resolve_for_free(p, &idx, "free_sized", size);
    if (!s) return;
    if (unlikely(size > s->bsize)) {
        mh_report("size-mismatch", p, p, s->bsize, "free_sized", "the size passed is larger than the block");
        return;
    }
    if (claim_free(s, idx, p, "free_sized")) small_release(s, p);
}

MH_API void mh_free_aligned_sized(void *p, size_t align, size_t size) {
    (void)align;
    mh_free_sized(p, size);
}

MH_API int mh_trim(size_t pad) {
    (void)pad;
    mh_ensure_init();
    uint64_t before = atomic_load(&os_purged_total) + atomic_load(&os_unmapped_total);
    tcache_t *t = mh_tcache;
    if (t) tcache_flush_all(t);
    mh_tick(true);
    return atomic_load(&os_purged_total) + atomic_load(&os_unmapped_total) != before;
}

MH_API void mh_reset(void) {
    mh_ensure_init();
    mh_lock(&tick_lock);
    tcache_reset_all();
    slab_reset_all();
    miniheap_reset_all();
    large_reset_all();
    mh_unlock(&tick_lock);
}
