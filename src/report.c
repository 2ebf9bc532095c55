/* Error reports, sanitizer style: a fixed vocabulary of kinds, the address
 * and the block, written with write(2), then abort() (or the handler, with
 * abort_on_error=0). Nothing here allocates. */
#include "internal.h"

#include <stdio.h>
#include <unistd.h>

static mh_error_handler_t handler;
static void *handler_arg;

/* Each thread writes its reports into a buffer of its own, mapped at its
 * first report, so the text a handler receives is not overwritten by
 * another thread's report once the lock is dropped. */
#define REPORT_BYTES 16384
static __thread char *t_text __attribute__((tls_model("initial-exec")));
static __thread uint8_t t_reporting __attribute__((tls_model("initial-exec")));
static char shared_text[REPORT_BYTES]; /* when a thread's buffer cannot be mapped: used under the lock */

void report_lock_all(void) { mh_lock(&mh_locks.report); }
void report_unlock_all(void) { mh_unlock(&mh_locks.report); }

/* A report from inside a report (a fault while walking its stack, an
 * allocation from the program's SIGABRT handler that finds the heap broken):
 * taking the lock again would deadlock, so say so in one raw write and end. */
static void nested_report(const char *kind) {
    char text[200];
    mh_buf_t b = {text, 0, sizeof text};
    buf_str(&b, "miniheap: ERROR: ");
    buf_str(&b, kind ? kind : "fault");
    buf_str(&b, " while reporting another error; exiting\n");
    os_write_stderr(text, b.len);
    os_exit(134);
}

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

const char *canary_detail(char *buf, size_t cap, const uint8_t *from, size_t len, size_t bad, bool front) {
    size_t last = canary_find_last_bad(from, len);
    mh_buf_t b = {buf, 0, cap};
    buf[0] = 0;
    if (front) {
        buf_str(&b, "the canary in front of the block was overwritten, from ");
        buf_dec(&b, len - bad);
        buf_str(&b, len - bad == 1 ? " byte" : " bytes");
        buf_str(&b, " before it");
        if (last != SIZE_MAX && last + 1 < len) {
            buf_str(&b, " to ");
            buf_dec(&b, len - last);
            buf_str(&b, " before it");
        }
        buf_str(&b, " (");
        buf_dec(&b, len);
        buf_str(&b, " canary bytes checked)");
    } else {
        size_t far = (last == SIZE_MAX ? bad : last) + 1;
        buf_str(&b, "the canary after the block was overwritten up to ");
        buf_dec(&b, far);
        buf_str(&b, far == 1 ? " byte past its end (" : " bytes past its end (");
        buf_dec(&b, len);
        buf_str(&b, " canary bytes checked");
        if (last + 1 == len) buf_str(&b, ": the write may have gone further");
        buf_str(&b, ")");
    }
    return buf;
}

/* The argument the program registered: a root of the leak scan (leak.c
 * does not scan our own data). */
void *report_handler_arg(void) { return handler_arg; }

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
    if (t_reporting) nested_report(f->kind);
    t_reporting = 1;
    if (!t_text) t_text = os_map(REPORT_BYTES);
    mh_lock(&mh_locks.report);
    char *text = t_text ? t_text : shared_text;
    mh_buf_t b = {text, 0, REPORT_BYTES};
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
    /* Every frame of the report symbolized together (one symbolizer run a
     * module), for the reports that end the program, or all of them with
     * symbolize=2: a handler that counts reports would pay a process each. */
    uintptr_t cur[32];
    uint32_t ncur = stack_walk_current(cur, 32, f->pc, f->fp);
    bool ends = f->fatal || mh_opt.abort_on_error || !handler;
    sym_reset();
    if (mh_opt.symbolize == 2 || (mh_opt.symbolize == 1 && ends)) {
        const uintptr_t *frames;
        for (uint32_t i = 0; i < ncur; i++) sym_add(cur[i]);
        for (uint32_t i = 0, n = stack_frames(f->alloc_stack, &frames); i < n; i++) sym_add(frames[i]);
        for (uint32_t i = 0, n = stack_frames(f->free_stack, &frames); i < n; i++) sym_add(frames[i]);
        sym_resolve();
    }
    stack_print_frames(&b, cur, ncur);
    if (f->alloc_stack) stack_section(&b, "allocated", f->alloc_tid, f->alloc_stack);
    if (f->free_stack) stack_section(&b, "freed", f->free_tid, f->free_stack);
    if (f->detail) {
        buf_str(&b, "  ");
        buf_str(&b, f->detail);
        buf_str(&b, "\n");
    }
    if (f->block && !mh_opt.stacks)
        buf_str(&b, "  (run with MINIHEAP_OPTIONS=mode=debug for allocation and free stacks)\n");
    buf_str(&b, "SUMMARY: miniheap: ");
    buf_str(&b, f->kind);
    buf_str(&b, "\n");
    mh_error_t err = {f->kind, f->addr, f->block, f->size, text};
    if (!mh_opt.abort_on_error && handler && !f->fatal) {
        mh_error_handler_t h = handler;
        if (text == shared_text) { /* the text is only ours under the lock */
            h(&err, handler_arg);
            mh_unlock(&mh_locks.report);
        } else {
            mh_unlock(&mh_locks.report);
            t_reporting = 0;
            h(&err, handler_arg);
        }
        t_reporting = 0;
        return;
    }
    os_write_stderr(text, b.len);
    /* Lock and flag stay taken: another report from this thread (the
     * program's SIGABRT handler) ends at once, other threads wait. */
    if (mh_opt.abort_on_error || f->fatal) os_abort();
    mh_unlock(&mh_locks.report);
    t_reporting = 0;
}

void mh_report(const char *kind, const void *addr, const void *block, size_t bsize,
               const char *where, const char *detail) {
    mh_fault_t f = {.kind = kind, .addr = addr, .block = block, .size = bsize, .where = where, .detail = detail};
    mh_report_fault(&f);
}

/* A report that is not about one block (the leak report at exit): the
 * handler hears of it, or the program ends with exit status `exitcode`
 * (LeakSanitizer's 23). We are in exit(), before stdio is flushed: flush it
 * first, so ending here loses none of the program's output. */
void mh_report_exit(const char *kind, const char *summary) {
    mh_error_t err = {kind, NULL, NULL, 0, summary};
    if (!mh_opt.abort_on_error) {
        if (handler) handler(&err, handler_arg);
        return;
    }
    fflush(NULL);
    _exit((int)mh_opt.exitcode);
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
