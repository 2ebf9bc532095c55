/* LeakSanitizer and miniheap blocks (ASan build only; calls both mallocs).
 *
 * An object from ASan's own malloc whose only reference is stored inside a
 * miniheap block is still reachable: miniheap registers its memory with LSan
 * as root regions. Poisoned (freed) miniheap memory is not a root.
 *
 *   vg_lsan root        reference kept in a live 64-byte mh block: no leak
 *   vg_lsan root_large  reference kept in a live 300000-byte mh block: no leak
 *   vg_lsan freed       reference left in a freed mh block: LSan reports
 *                       "Direct leak of 24 byte(s) in 1 object(s)"
 *
 * LSan itself does not know miniheap's blocks: a leaked mh_malloc block is
 * not reported (use valgrind for that). */
#include "vg_test.h"

#ifdef VG_PREFIXED
#error "vg_lsan is built without VG_PREFIXED: it calls both malloc and mh_malloc"
#endif

static void **holder;

static VG_NOINLINE void stash(size_t holder_size) {
    holder = mh_malloc(holder_size);
    void *obj = malloc(24);
    memset(obj, 7, 24);
    holder[1] = obj;
}

static VG_NOINLINE void drop_holder_pointer(void) {
    /* The holder is an mh block: LSan does not track it, so this global
     * pointer to it is irrelevant; the 24-byte object is referenced from
     * inside the holder only. Mangle our copy so it points nowhere. */
    holder = (void **)((uintptr_t)holder ^ 1);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "root";
    vg_report_allocator(mode);
    if (strcmp(mode, "root") == 0) {
        stash(64);
    } else if (strcmp(mode, "root_large") == 0) {
        stash(300000);
    } else if (strcmp(mode, "freed") == 0) {
        stash(64);
        mh_free(holder);
    } else {
        vg_say("usage: vg_lsan root|root_large|freed");
        return 2;
    }
    drop_holder_pointer();
    vg_clobber_stack();
    vg_say("VG: vg_lsan %s: done", mode);
    return 0;
}
