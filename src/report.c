/* Error reports, sanitizer style: a fixed vocabulary of kinds, the address
 * and the block, written with write(2), then abort() (or the handler, with
 * abort_on_error=0). Nothing here allocates. */
#include "internal.h"

static mh_error_handler_t handler;
static void *handler_arg;
static mh_lock_t report_lock = MH_LOCK_INIT;

void buf_str(mh_buf_t *b, const char *s) {
    while (*s && b->len + 1 < b->cap) b->p[b->len++] = *s++;
    b->p[b->len] = 0;
}

void buf_dec(mh_buf_t *b, uint64_t v) {
    char tmp[24];
    int n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n && b->len + 1 < b->cap) b->p[b->len++] = tmp[--n];
    b->p[b->len] = 0;
}

void buf_hex(mh_buf_t *b, uintptr_t v) {
    char tmp[20];
    int n = 0;
    do { tmp[n++] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v);
    buf_str(b, "0x");
    while (n && b->len + 1 < b->cap) b->p[b->len++] = tmp[--n];
    b->p[b->len] = 0;
}

MH_API void mh_set_error_handler(mh_error_handler_t h, void *arg) {
    handler = h;
    handler_arg = arg;
}

void mh_report(const char *kind, const void *addr, const void *block, size_t bsize,
               const char *where, const char *detail) {
    static char text[1024];
    mh_lock(&report_lock);
    mh_buf_t b = {text, 0, sizeof text};
    buf_str(&b, "miniheap: ERROR: ");
    buf_str(&b, kind);
    buf_str(&b, " on address ");
    buf_hex(&b, (uintptr_t)addr);
    if (block) {
        buf_str(&b, " (");
        buf_dec(&b, bsize);
        buf_str(&b, "-byte block at ");
        buf_hex(&b, (uintptr_t)block);
        buf_str(&b, ")");
    }
    buf_str(&b, "\n  detected at ");
    buf_str(&b, where);
    buf_str(&b, "(): ");
    buf_str(&b, detail);
    buf_str(&b, "\n");
    mh_error_t err = {kind, addr, block, bsize, text};
    if (!mh_opt.abort_on_error && handler) {
        mh_error_handler_t h = handler;
        mh_unlock(&report_lock);
        h(&err, handler_arg);
        return;
    }
    os_write_stderr(text, b.len);
    if (mh_opt.abort_on_error) os_abort();
    mh_unlock(&report_lock);
}

void mh_fatal(const char *msg) {
    char text[256];
    mh_buf_t b = {text, 0, sizeof text};
    buf_str(&b, "miniheap: ERROR: ");
    buf_str(&b, msg);
    buf_str(&b, "\n");
    os_write_stderr(text, b.len);
    os_abort();
}
