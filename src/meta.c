/* The metadata allocator: descriptors, bitmaps and thread caches live in
 * their own mappings, fenced by guard pages, never beside user blocks, so a
 * heap overflow cannot reach them. Power-of-two size buckets, free lists
 * threaded through the freed objects (which are metadata themselves). */
#include "internal.h"

#define META_CHUNK   ((size_t)1 << 20)
#define META_MIN_SHIFT 6                      /* 64 B */
#define META_MAX_SHIFT 17                     /* 128 KiB */
#define META_NBUCKETS (META_MAX_SHIFT - META_MIN_SHIFT + 1)

typedef struct meta_free { struct meta_free *next; } meta_free_t;

static mh_lock_t meta_lock_ = MH_LOCK_INIT;
static meta_free_t *free_list[META_NBUCKETS];
static uint8_t *chunk_cur, *chunk_end;
static size_t mapped;

static unsigned bucket_of(size_t size) {
    unsigned b = 0;
    size_t s = (size_t)1 << META_MIN_SHIFT;
    while (s < size) { s <<= 1; b++; }
    return b;
}

/* A chunk with a guard page on either side. */
static bool new_chunk(void) {
    size_t total = META_CHUNK + 2 * MH_PAGE;
    uint8_t *raw = os_reserve(total);
    if (!raw) return false;
    if (!os_commit(raw + MH_PAGE, META_CHUNK)) {
        os_unmap(raw, total);
        return false;
    }
    chunk_cur = raw + MH_PAGE;
    chunk_end = chunk_cur + META_CHUNK;
    mapped += total;
    return true;
}

void *meta_alloc(size_t size) {
    if (size > ((size_t)1 << META_MAX_SHIFT)) return NULL;
    unsigned b = bucket_of(size);
    size_t bsize = (size_t)1 << (b + META_MIN_SHIFT);
    void *p = NULL;
    mh_lock(&meta_lock_);
    if (free_list[b]) {
        meta_free_t *f = free_list[b];
        free_list[b] = f->next;
        p = f;
        mh_unlock(&meta_lock_);
        memset(p, 0, bsize);
        return p;
    }
    if ((size_t)(chunk_end - chunk_cur) < bsize) {
        /* Hand the tail of the old chunk to the free lists, then start anew. */
        while (chunk_cur && chunk_end - chunk_cur >= (1 << META_MIN_SHIFT)) {
            unsigned tb = bucket_of((size_t)1 << META_MIN_SHIFT);
            for (unsigned k = META_NBUCKETS; k-- > 0;) {
                if ((size_t)(chunk_end - chunk_cur) >= ((size_t)1 << (k + META_MIN_SHIFT))) { tb = k; break; }
            }
            meta_free_t *f = (meta_free_t *)chunk_cur;
            f->next = free_list[tb];
            free_list[tb] = f;
            chunk_cur += (size_t)1 << (tb + META_MIN_SHIFT);
        }
        if (!new_chunk()) {
            mh_unlock(&meta_lock_);
            return NULL;
        }
    }
    p = chunk_cur;
    chunk_cur += bsize;
    mh_unlock(&meta_lock_);
    return p; /* fresh chunk memory is zero */
}

void meta_free(void *p, size_t size) {
    if (!p) return;
    unsigned b = bucket_of(size);
    mh_lock(&meta_lock_);
    meta_free_t *f = p;
    f->next = free_list[b];
    free_list[b] = f;
    mh_unlock(&meta_lock_);
}

size_t meta_mapped_bytes(void) {
    mh_lock(&meta_lock_);
    size_t m = mapped;
    mh_unlock(&meta_lock_);
    return m;
}

void meta_lock_all(void) { mh_lock(&meta_lock_); }
void meta_unlock_all(void) { mh_unlock(&meta_lock_); }
