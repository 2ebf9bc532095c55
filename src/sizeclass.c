/* Size classes: 16-byte steps up to 128 B, then four per doubling up to
 * MH_SMALL_MAX (eight between 512 B and 16 KiB). Each class's slab spans the fewest 64 KiB units that waste
 * less than 1/16 of the slab, and the class size is then raised to the
 * largest 16-byte multiple that still fits the same number of blocks, so
 * slabs have (almost) no tail.
 * Powers of two stay exact, so a block of a
 * power-of-two class is aligned to its size (memalign uses that). */
#include "internal.h"

size_class_t mh_classes[MH_MAX_CLASSES];
uint32_t mh_nclasses;
uint32_t mh_zero_cls;
uint8_t mh_class_index[(MH_SMALL_MAX >> 4) + 1];

static void pick_slab(uint32_t want, uint32_t *size, uint32_t *units, uint32_t *cap) {
    uint32_t best_u = 1, best_waste = UINT32_MAX;
    for (uint32_t u = 1; u <= MH_MAX_SLAB_UNITS; u++) {
        uint32_t bytes = u * (uint32_t)MH_UNIT_SIZE, n = bytes / want;
        if (n < 4 && u < MH_MAX_SLAB_UNITS) continue; /* at least four blocks a slab */
        if (n == 0) continue;
        uint32_t waste = bytes - n * want;
        if (waste * 16 <= bytes) { best_u = u; break; }
        if (waste * 1000 / bytes < best_waste) { best_waste = waste * 1000 / bytes; best_u = u; }
    }
    uint32_t bytes = best_u * (uint32_t)MH_UNIT_SIZE, n = bytes / want;
    uint32_t grown = (bytes / n) & ~15u;
    /* Keep powers of two exact (alignment) and never pass the next class. */
    if ((want & (want - 1)) == 0) grown = want;
    *size = grown < want ? want : grown;
    *units = best_u;
    *cap = n;
}

void sizeclass_init(void) {
    uint32_t sizes[MH_MAX_CLASSES], n = 0;
    for (uint32_t s = 16; s <= 128; s += 16) sizes[n++] = s;
    /* Eight classes per doubling from 512 B to 16 KiB, where most of a
     * typical heap's bytes are (and rounding up costs whole pages), four
     * elsewhere. */
    for (uint32_t p = 128; p < MH_SMALL_MAX; p *= 2) {
        uint32_t steps = p >= 512 && p < 16384 ? 8 : 4;
        for (uint32_t k = steps + 1; k <= 2 * steps; k++) sizes[n++] = p * k / steps;
    }
    uint32_t prev = 0;
    mh_nclasses = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t size, units, cap;
        pick_slab(sizes[i], &size, &units, &cap);
        /* Raising a class must not swallow the next one. */
        if (i + 1 < n && size >= sizes[i + 1]) size = sizes[i];
        if (size <= prev) continue;
        if (size != sizes[i]) cap = units * (uint32_t)MH_UNIT_SIZE / size;
#if defined(MH_PLANT_BUG) && MH_PLANT_BUG == 2 /* planted for fuzz/ (make fuzz-planted): one block too many */
        if (cap <= 8) cap++;
#endif
        size_class_t *c = &mh_classes[mh_nclasses++];
        c->size = size;
        c->units = units;
        c->capacity = cap;
        c->bucket_mul = ((uint32_t)(MH_BUCKETS - 1) << 16) / cap;
        prev = size;
        /* slab_index() divides by multiplying with a 40-bit reciprocal: it
         * must be exact for every offset of the slab (its error grows with
         * the offset, so the last byte is the one to check). */
        uint64_t magic = ((uint64_t)1 << 40) / size + 1, last = (uint64_t)cap * size - 1;
        if ((last * magic) >> 40 != cap - 1 || ((last - size + 1) * magic) >> 40 != cap - 1)
            mh_fatal("size class table is inconsistent (slab_index)");
    }
    /* The class of 0-byte blocks (zero_guard): 16-byte slots in slabs that
     * are never accessible, so any read or write through malloc(0)'s pointer
     * faults. Last, and reached only by its index, never by a size. */
    size_class_t *z = &mh_classes[mh_nclasses];
    *z = (size_class_t){.size = MH_MIN_ALIGN, .units = 1, .capacity = (uint32_t)(MH_UNIT_SIZE / MH_MIN_ALIGN)};
    z->bucket_mul = ((uint32_t)(MH_BUCKETS - 1) << 16) / z->capacity;
    mh_zero_cls = mh_nclasses++;
    uint32_t cls = 0;
    for (size_t i = 0; i <= (MH_SMALL_MAX >> 4); i++) {
        size_t sz = i << 4;
        while (mh_classes[cls].size < sz) cls++;
        mh_class_index[i] = (uint8_t)cls;
#if defined(MH_PLANT_BUG) && MH_PLANT_BUG == 1 /* planted for fuzz/ (make fuzz-planted): off-by-one */
        if (cls == 20 && sz == mh_classes[cls].size) mh_class_index[i] = (uint8_t)(cls - 1);
#endif
    }
}

int sizeclass_for_aligned(size_t size, size_t align) {
    if (align > MH_UNIT_SIZE) return -1;
    for (uint32_t c = size_to_class(size ? size : 1); c < mh_zero_cls; c++) {
        if ((mh_classes[c].size & (align - 1)) == 0) return (int)c;
    }
    return -1;
}
