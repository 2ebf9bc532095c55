/* Statistics, computed by walking the heap (so the hot paths count nothing
 * beyond a per-thread operation counter). */
#include "internal.h"

MH_INTERNAL uint32_t miniheap_count(void);

typedef struct walk { mh_stats_t *st; } walk_t;

static void walk_miniheap(miniheap_t *mh, void *arg) {
    mh_stats_t *st = ((walk_t *)arg)->st;
    st->miniheaps++;
    st->mapped_bytes += MH_SEG_SIZE;
    st->resident_bytes += (size_t)__builtin_popcountll(mh->dirty_units & mh->free_units) * MH_UNIT_SIZE;
    for (uint32_t u = 0; u < MH_USABLE_UNITS; u++) {
        slab_t *s = mh->unit_slab[u];
        if (!s || s->first_unit != u) continue;
        st->slabs++;
        size_t live = 0;
        for (uint32_t w = 0; w < s->nwords; w++)
            live += (size_t)__builtin_popcountll(atomic_load_explicit(&s->live[w], memory_order_relaxed));
        st->small_blocks += live;
        if (s->canary) { /* the requested sizes: what malloc_usable_size says */
            for (uint32_t w = 0; w < s->nwords; w++) {
                uint64_t bits = atomic_load_explicit(&s->live[w], memory_order_relaxed);
                while (bits) {
                    uint32_t idx = w * 64 + (uint32_t)__builtin_ctzll(bits);
                    bits &= bits - 1;
                    st->live_bytes += block_info(s, idx) & INFO_SIZE_MASK;
                }
            }
        } else {
            st->live_bytes += live * (s->bsize - s->front);
        }
        uint32_t pages = (uint32_t)s->units * MH_PAGES_PER_UNIT;
        uint32_t purged = (uint32_t)(__builtin_popcountll(s->purged[0]) + __builtin_popcountll(s->purged[1]));
        st->resident_bytes += (size_t)(pages - purged) * MH_PAGE;
        if (s->used == 0) st->cached_bytes += s->span;
    }
}

MH_API void mh_stats(mh_stats_t *st) {
    mh_ensure_init();
    memset(st, 0, sizeof *st);
    walk_t w = {st};
    bins_lock_all();
    mh_lock(&mh_heap_lock);
    miniheap_foreach(walk_miniheap, &w);
    mh_unlock(&mh_heap_lock);
    bins_unlock_all();
    size_t lblocks, lbytes, lmapped, lcached, tcached;
    large_stats(&lblocks, &lbytes, &lmapped, &lcached);
    st->large_blocks = lblocks;
    st->live_blocks = st->small_blocks + lblocks;
    st->live_bytes += lbytes;
    st->mapped_bytes += lmapped + lcached;
    st->resident_bytes += lbytes + lcached;
    tcache_stats(&tcached, &st->total_allocs, &st->total_frees);
    st->cached_bytes += lcached + tcached;
    st->metadata_bytes = meta_mapped_bytes();
    st->purged_bytes = atomic_load(&os_purged_total);
    st->unmapped_bytes = atomic_load(&os_unmapped_total);
}

MH_API void mh_print_stats(void) {
    mh_stats_t st;
    mh_stats(&st);
    char text[1024];
    mh_buf_t b = {text, 0, sizeof text};
    struct { const char *name; uint64_t v; } rows[] = {
        {"live blocks", st.live_blocks},       {"live bytes", st.live_bytes},
        {"  in slabs", st.small_blocks},       {"  large", st.large_blocks},
        {"mapped bytes", st.mapped_bytes},     {"resident bytes (est.)", st.resident_bytes},
        {"metadata bytes", st.metadata_bytes}, {"cached bytes", st.cached_bytes},
        {"miniheaps", st.miniheaps},           {"slabs", st.slabs},
        {"allocations", st.total_allocs},      {"frees", st.total_frees},
        {"purged bytes", st.purged_bytes},     {"unmapped bytes", st.unmapped_bytes},
    };
    buf_str(&b, "miniheap stats:\n");
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        buf_str(&b, "  ");
        buf_str(&b, rows[i].name);
        buf_str(&b, ": ");
        buf_dec(&b, rows[i].v);
        buf_str(&b, "\n");
    }
    os_write_stderr(text, b.len);
}
