/* Error reports, sanitizer style: a fixed vocabulary of kinds, the address
 * and the block, written with write(2), then abort() (or the handler, with
 * abort_on_error=0). Nothing here allocates. */
#include "internal.h"

#include <stdio.h>
#include <unistd.h>

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

/* "1 byte past a 24-byte block at 0x...", "8 bytes before ...", "3 bytes inside ..." */
static void describe_position(mh_buf_t *b, const mh_fault_t *f) {
    uintptr_t a = (uintptr_t)f->addr, blk = (uintptr_t)f->block;
    buf_str(b, " (");
    if (a >= blk + f->size) {
        buf_dec(b, a - (blk + f->size) + 1);
        buf_str(b, a - (blk + f->size) == 0 ? " byte past" : " bytes past");
    } else if (a < blk) {
        buf_dec(b, blk - a);
        buf_str(b, blk - a == 1 ? " byte before" : " bytes before");
    } else if (a == blk) {
        buf_str(b, "start of");
    } else {
        buf_dec(b, a - blk);
        buf_str(b, " bytes inside");
    }
    buf_str(b, " a ");
    buf_dec(b, f->size);
    buf_str(b, "-byte block at ");
    buf_hex(b, blk);
    buf_str(b, ")");
}

static void stack_section(mh_buf_t *b, const char *title, uint32_t tid, uint32_t stack) {
    buf_str(b, "  ");
    buf_str(b, title);
    if (tid) {
        buf_str(b, " by thread ");
        buf_dec(b, tid);
    }
    buf_str(b, ":\n");
    stack_print(b, stack);
}

void mh_report_fault(const mh_fault_t *f) {
    static char text[8192];
    mh_lock(&report_lock);
    mh_buf_t b = {text, 0, sizeof text};
    buf_str(&b, "miniheap: ERROR: ");
    buf_str(&b, f->kind);
    buf_str(&b, " on address ");
    buf_hex(&b, (uintptr_t)f->addr);
    if (f->block) describe_position(&b, f);
    if (f->where) {
        buf_str(&b, "\n  detected at ");
        buf_str(&b, f->where);
        buf_str(&b, "() by thread ");
    } else {
        buf_str(&b, "\n  detected on a memory access by thread ");
    }
    buf_dec(&b, mh_thread_number());
    buf_str(&b, ":\n");
    stack_print_current(&b);
    if (f->alloc_stack) stack_section(&b, "allocated", f->alloc_tid, f->alloc_stack);
    if (f->free_stack) stack_section(&b, "freed", f->free_tid, f->free_stack);
    if (f->detail) {
        buf_str(&b, "  ");
        buf_str(&b, f->detail);
        buf_str(&b, "\n");
    }
    if (f->block && !f->alloc_stack && !mh_opt.stacks)
        buf_str(&b, "  (run with MINIHEAP_OPTIONS=mode=debug for allocation and free stacks)\n");
    buf_str(&b, "SUMMARY: miniheap: ");
    buf_str(&b, f->kind);
    buf_str(&b, "\n");
    mh_error_t err = {f->kind, f->addr, f->block, f->size, text};
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

void mh_report(const char *kind, const void *addr, const void *block, size_t bsize,
               const char *where, const char *detail) {
    mh_fault_t f = {kind, addr, block, bsize, where, detail, 0, 0, 0, 0};
    mh_report_fault(&f);
}

/* A report that is not about one block (the leak report at exit): the
 * handler hears of it, or the program ends with LeakSanitizer's exit status
 * 23. We are in exit(), before stdio is flushed: flush it first, so ending
 * here loses none of the program's output. */
void mh_report_exit(const char *kind, const char *summary) {
    mh_error_t err = {kind, NULL, NULL, 0, summary};
    if (!mh_opt.abort_on_error) {
        if (handler) handler(&err, handler_arg);
        return;
    }
    fflush(NULL);
    _exit(23);
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
