/* The leak report at exit (leak_report=1, debug mode's default): blocks that nothing points to any
 * more, grouped by allocation stack, like LeakSanitizer's summary.
 *
 * Reachability is computed the way LSan does it, conservatively: every
 * aligned word of the writable segments of every loaded object and of the
 * stack, registers and TLS of every thread is a root; a word that points
 * into a live block (start or interior) marks it, and marked blocks are
 * scanned in turn. What stays unmarked is reported. The other threads stop
 * while the heap is collected and scanned (see stop_others). */
#include "internal.h"
#include "track.h"

#include <dlfcn.h>
#include <link.h>

typedef struct span { uintptr_t lo, hi; uint32_t stack; uint8_t marked; } span_t;

typedef struct range { uintptr_t lo, hi; } range_t;

typedef struct leak_state {
    span_t *spans;          /* every live block, sorted by address */
    size_t n, cap;
    uintptr_t *work;        /* blocks to scan (indices into spans) */
    size_t nwork, capwork;
    range_t *segs;          /* the writable segments of the loaded objects */
    size_t nsegs, capsegs;
} leak_state_t;

static bool grow(void **arr, size_t *cap, size_t elem) {
    size_t ncap = *cap ? *cap * 2 : 4096;
    void *p = *arr ? os_remap(*arr, *cap * elem, ncap * elem, NULL) : os_map(ncap * elem);
    if (!p) return false;
    *arr = p;
    *cap = ncap;
    return true;
}

static void add_span(leak_state_t *st, uintptr_t lo, size_t size, uint32_t stack) {
    if (st->n == st->cap && !grow((void **)&st->spans, &st->cap, sizeof(span_t))) return;
    st->spans[st->n++] = (span_t){lo, lo + (size ? size : 1), stack, 0};
}

static void collect_slab(slab_t *s, void *arg) {
    leak_state_t *st = arg;
    uint8_t *ustart = slab_ustart(s);
    for (uint32_t w = 0; w < s->nwords; w++) {
        uint64_t live = slab_live_word(s, w);
        while (live) {
            uint32_t idx = w * 64 + (uint32_t)__builtin_ctzll(live);
            live &= live - 1;
            size_t size = slab_block_size(s, idx);
            add_span(st, (uintptr_t)(ustart + (size_t)idx * s->bsize), size,
                     s->dbg ? DBG_GET(&s->dbg[idx], alloc_stack) : 0);
        }
    }
}

static void collect_large(void *user, size_t size, uint32_t stack, void *arg) {
    add_span(arg, (uintptr_t)user, size, stack);
}

static void sort_spans(span_t *a, size_t n) { /* heap sort: no recursion, no allocation */
    for (size_t start = n / 2; start-- > 0;) {
        for (size_t root = start, child; (child = 2 * root + 1) < n; root = child) {
            if (child + 1 < n && a[child].lo < a[child + 1].lo) child++;
            if (a[root].lo >= a[child].lo) break;
            span_t t = a[root]; a[root] = a[child]; a[child] = t;
        }
    }
    for (size_t end = n; end-- > 1;) {
        span_t t = a[0]; a[0] = a[end]; a[end] = t;
        for (size_t root = 0, child; (child = 2 * root + 1) < end; root = child) {
            if (child + 1 < end && a[child].lo < a[child + 1].lo) child++;
            if (a[root].lo >= a[child].lo) break;
            t = a[root]; a[root] = a[child]; a[child] = t;
        }
    }
}

static void mark_word(leak_state_t *st, uintptr_t v) {
    if (!st->n || v < st->spans[0].lo || v >= st->spans[st->n - 1].hi) return;
    size_t lo = 0, hi = st->n;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (st->spans[mid].lo <= v) lo = mid; else hi = mid;
    }
    span_t *sp = &st->spans[lo];
    if (v >= sp->hi || sp->marked) return;
    sp->marked = 1;
    if (st->nwork == st->capwork && !grow((void **)&st->work, &st->capwork, sizeof(uintptr_t))) return;
    st->work[st->nwork++] = lo;
}

static MH_TRACK_NO_SANITIZE void scan_range(leak_state_t *st, uintptr_t lo, uintptr_t hi) {
    lo = (lo + 7) & ~(uintptr_t)7;
    for (uintptr_t a = lo; a + 8 <= hi; a += 8) mark_word(st, *(const uintptr_t *)a);
}

static char self_marker; /* (in our own writable segment) */

/* The writable segments of every loaded object, noted before anything
 * stops: a stopped thread may hold the loader's lock. Not libminiheap.so's
 * own: the program keeps no pointer there (but the error handler's
 * argument, scanned on its own), so a block only our state points to is
 * the program's leak; and its 1.6 MB of tables, mostly never touched, took
 * a fifth of a short program's time in debug mode (each page read faulted
 * in to be scanned). Linked into the program, our state is in the
 * program's segments and is scanned with them. */
static int note_object(struct dl_phdr_info *info, size_t size, void *arg) {
    (void)size;
    leak_state_t *st = arg;
    uintptr_t ours = (uintptr_t)&self_marker;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_W)) continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        if (info->dlpi_name && info->dlpi_name[0] && ours >= lo && ours < hi) continue;
        if (st->nsegs == st->capsegs && !grow((void **)&st->segs, &st->capsegs, sizeof(range_t))) return 1;
        st->segs[st->nsegs++] = (range_t){lo, hi};
    }
    return 0;
}

/* ---- the other threads stop while the heap is collected and scanned ------
 * As LeakSanitizer stops them (with ptrace): a block a worker still holds
 * only in a register, on its stack or in its TLS at exit is not a leak, and
 * no block moves between roots under the scan. Each thread gets SIGURG,
 * which is ignored by default (one that arrives late harms nothing); its
 * handler notes where its stack and TLS are and waits. The kernel has saved
 * the thread's registers in the signal frame, above the handler's frame on
 * the same stack. A thread that blocks SIGURG is waited for STOP_WAIT_MS,
 * then left out. Threads started meanwhile are found in a second look. */
#define STOP_MAX 4096
#define STOP_WAIT_MS 200
#define STOP_ROUNDS 3
/* How far below its thread pointer a thread's static TLS may reach when it
 * is not on the thread's stack (the main thread's: ld.so allocates it). */
#define TLS_SPAN ((uintptr_t)1 << 20)

/* A stopped thread's slot: sp is stored last (0: not yet written). */
static struct { _Atomic uintptr_t sp; uintptr_t tp; } stopped[STOP_MAX];
static uint32_t signalled[STOP_MAX];
static _Atomic uint32_t stop_on, stop_arrived, stop_noted, stop_release, stop_left;

static void stop_handler(int sig) {
    (void)sig;
    if (!atomic_load(&stop_on)) return;
    volatile uintptr_t here = 0;
    uint32_t i = atomic_fetch_add(&stop_arrived, 1);
    if (i < STOP_MAX) {
        stopped[i].tp = (uintptr_t)pthread_self();
        atomic_store(&stopped[i].sp, (uintptr_t)&here);
    }
    atomic_fetch_add(&stop_noted, 1);
    while (!atomic_load(&stop_release)) os_futex_wait(&stop_release, 0, 100);
    atomic_fetch_add(&stop_left, 1);
}

/* Stop every other thread; how many slots of stopped[] to read. */
static size_t stop_others(struct sigaction *old) {
    static uint32_t tids[STOP_MAX];
    size_t nsig = 0;
    if (!os_install_signal(SIGURG, stop_handler, old)) return 0;
    atomic_store(&stop_on, 1);
    for (int round = 0; round < STOP_ROUNDS; round++) {
        size_t n = os_other_threads(tids, STOP_MAX), fresh = 0;
        for (size_t i = 0; i < n && nsig < STOP_MAX; i++) {
            size_t k = 0;
            while (k < nsig && signalled[k] != tids[i]) k++;
            if (k < nsig || !os_signal_thread(tids[i], SIGURG)) continue;
            signalled[nsig++] = tids[i];
            fresh++;
        }
        if (!fresh) break;
        uint64_t t0 = os_now_ms();
        while (atomic_load(&stop_noted) < nsig && os_now_ms() - t0 < STOP_WAIT_MS) os_yield();
    }
    uint32_t arrived = atomic_load(&stop_arrived);
    return arrived < STOP_MAX ? arrived : STOP_MAX;
}

static void resume_others(const struct sigaction *old) {
    if (!atomic_load(&stop_on)) return; /* (no handler was installed) */
    atomic_store(&stop_release, 1);
    os_futex_wake(&stop_release);
    uint64_t t0 = os_now_ms();
    while (atomic_load(&stop_left) < atomic_load(&stop_noted) && os_now_ms() - t0 < STOP_WAIT_MS) os_yield();
    atomic_store(&stop_on, 0);
    os_restore_signal(SIGURG, old);
}

/* Where the exiting thread's stack is the program's: above our own frames
 * (leak_destructor's caller on), whose dead slots may hold stale copies of
 * block pointers from the heap walks before the scan (mh_check). */
static uintptr_t exit_sp;

/* The roots: every thread's (the stopped ones' and this one's) and the
 * loaded objects' writable segments. A thread's stack is scanned from its
 * stack pointer to the end of the mapping (with glibc, a thread's static
 * TLS and descriptor are at the top of its stack's mapping), and the TLS
 * below its thread pointer when that is elsewhere (the main thread's). */
static MH_NOINLINE void scan_roots(leak_state_t *st, size_t nslots) {
    /* Stack pointer and thread pointer of each thread, in pairs. */
    static uintptr_t addrs[2 * (STOP_MAX + 1)], lo[2 * (STOP_MAX + 1)], hi[2 * (STOP_MAX + 1)];
    size_t n = 0;
    for (size_t i = 0; i < nslots; i++) {
        uintptr_t sp = atomic_load(&stopped[i].sp); /* (0: one that arrived as the wait timed out) */
        if (!sp) continue;
        addrs[n++] = sp;
        addrs[n++] = stopped[i].tp;
    }
    addrs[n++] = exit_sp;
    addrs[n++] = (uintptr_t)pthread_self();
    os_readable_mappings(addrs, n, lo, hi);
    for (size_t i = 0; i < n; i += 2) {
        uintptr_t sp = addrs[i], tp = addrs[i + 1], mlo = lo[i + 1], mhi = hi[i + 1];
        if (hi[i]) scan_range(st, sp, hi[i]);
        if (!mhi || (tp >= sp && tp < hi[i])) continue;
        scan_range(st, tp - mlo > TLS_SPAN ? tp - TLS_SPAN : mlo, mhi - tp > TLS_SPAN ? tp + TLS_SPAN : mhi);
    }
    for (size_t i = 0; i < st->nsegs; i++) scan_range(st, st->segs[i].lo, st->segs[i].hi);
    mark_word(st, (uintptr_t)report_handler_arg()); /* (held for the program in our data) */
}

typedef struct group { uint32_t stack; size_t blocks, bytes; int rule; } group_t;

/* ---- which leaks are reported ------------------------------------------------
 * As LeakSanitizer does: a suppressions file (option suppressions=) of
 * "leak:<pattern>" lines; a leak is suppressed when any frame of its
 * allocation stack has a function name or a module path that matches.
 * A pattern is a substring, with '*' for anything and '^' / '$' anchoring it
 * at the start or end.
 *
 * And one rule of our own, on unless leak_system=1: a leak allocated wholly
 * by system code (every frame in /usr, /lib, /bin or /sbin, not /usr/local)
 * or by a language runtime (python, perl, ruby: system_path) is not the
 * program's to fix. Interpreters and shells do not free everything at exit,
 * by design (CPython, perl, bash), and with LD_PRELOAD every process a
 * program starts runs on miniheap too. A frame in no module at exit says
 * nothing either way: code unloaded by dlclose (ld's LTO plugin: every gcc
 * link exited 23 in debug mode), or a word a frame-pointer walk took from
 * code built without them (gdb). Only a frame in a module outside those
 * paths makes a leak the program's. */
#define MAX_RULES 256
#define RULE_SYSTEM (-2)
#define RULE_NONE (-1)
static char rules_text[65536];
static const char *rules[MAX_RULES];
static size_t rule_hits[MAX_RULES], rule_bytes[MAX_RULES], n_rules;
static size_t system_hits, system_bytes;
static char self_exe[512];

/* Wildcard match of p (length pn) against all of s: '*' is any run. */
static bool glob(const char *p, size_t pn, const char *s) {
    const char *star = NULL, *retry = NULL;
    size_t i = 0;
    while (*s) {
        if (i < pn && p[i] == '*') {
            star = p + ++i;
            retry = s;
        } else if (i < pn && p[i] == *s) {
            i++;
            s++;
        } else if (star) {
            i = (size_t)(star - p);
            s = ++retry;
        } else {
            return false;
        }
    }
    while (i < pn && p[i] == '*') i++;
    return i == pn;
}

static bool template_match(const char *tpl, const char *s) {
    if (!s || !*s) return false;
    char pat[512];
    size_t n = 0, tl = strlen(tpl);
    bool start = tl && tpl[0] == '^', end = tl > (size_t)start && tpl[tl - 1] == '$';
    if (!start) pat[n++] = '*';
    for (size_t i = start; i < tl - end && n + 2 < sizeof pat; i++) pat[n++] = tpl[i];
    if (!end) pat[n++] = '*';
    return glob(pat, n, s);
}

static void load_rules(void) {
    n_rules = 0;
    if (!mh_opt.suppressions[0]) return;
    long len = os_read_file(mh_opt.suppressions, rules_text, sizeof rules_text);
    if (len < 0) {
        char msg[400];
        mh_buf_t b = {msg, 0, sizeof msg};
        buf_str(&b, "miniheap: warning: cannot read the suppressions file '");
        buf_str(&b, mh_opt.suppressions);
        buf_str(&b, "'\n");
        os_write_stderr(msg, b.len);
        return;
    }
    for (char *line = rules_text; *line && n_rules < MAX_RULES;) {
        char *nl = line;
        while (*nl && *nl != '\n') nl++;
        char *next = *nl ? nl + 1 : nl;
        *nl = 0;
        while (*line == ' ' || *line == '\t') line++;
        char *e = nl;
        while (e > line && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) *--e = 0;
        if (strncmp(line, "leak:", 5) == 0 && line[5]) rules[n_rules++] = line + 5;
        line = next;
    }
}

/* System code, or a language runtime's own code wherever it is installed
 * (pyenv, a venv, conda, /usr/local): the interpreter binary or library and
 * CPython's standard extension modules (lib-dynload). A program's own
 * extension modules are none of these. */
static bool system_path(const char *path) {
    static const char *const prefixes[] = {"/usr/lib/", "/usr/lib64/", "/usr/libexec/", "/usr/bin/", "/usr/sbin/",
                                           "/lib/", "/lib64/", "/bin/", "/sbin/", "/usr/share/"};
    static const char *const runtimes[] = {"libpython", "python", "libperl", "perl", "libruby", "ruby"};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
        if (strncmp(path, prefixes[i], strlen(prefixes[i])) == 0) return true;
    if (strstr(path, "/lib-dynload/")) return true;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    for (size_t i = 0; i < sizeof runtimes / sizeof runtimes[0]; i++)
        if (strncmp(base, runtimes[i], strlen(runtimes[i])) == 0) return true;
    return false;
}

/* Which rule suppresses the leaks allocated at `stack` (RULE_NONE: none). */
static int suppressed_by(uint32_t stack) {
    const uintptr_t *frames;
    uint32_t depth = stack_frames(stack, &frames);
    if (!depth) return RULE_NONE; /* no stack recorded (stacks=0): nothing to match */
    bool all_system = true;
    for (uint32_t i = 0; i < depth; i++) {
        Dl_info info;
        const char *fn = NULL, *mod = NULL;
        /* The symbolizer's name when there is one (static functions too). */
        char symfn[128];
        const char *sym = sym_lookup(frames[i]);
        if (sym) {
            size_t k = 0;
            while (sym[k] && sym[k] != ' ' && k + 1 < sizeof symfn) { symfn[k] = sym[k]; k++; }
            symfn[k] = 0;
        }
        if (dladdr((void *)(frames[i] - 1), &info)) {
            fn = sym ? symfn : info.dli_sname;
            mod = info.dli_fname;
            /* The executable's own entry names it as it was started
             * ("python3"): use its real path. */
            if (mod && !strchr(mod, '/') && self_exe[0]) mod = self_exe;
        }
        for (size_t r = 0; r < n_rules; r++)
            if (template_match(rules[r], fn) || template_match(rules[r], mod)) return (int)r;
        if (mod && !system_path(mod)) all_system = false;
    }
    return all_system && !mh_opt.leak_system ? RULE_SYSTEM : RULE_NONE;
}

static void report(leak_state_t *st) {
    size_t total = 0, nblocks = 0;
    /* The dynamic loader's own blocks (a thread's DTV, say) are referenced
     * from places the scan does not see, such as glibc's cache of the stacks
     * of exited threads: count them as reachable, as LSan does. */
    for (size_t i = 0; i < st->n; i++)
        if (!st->spans[i].marked && stack_top_in_module(st->spans[i].stack, "/ld-linux")) st->spans[i].marked = 1;
    size_t unreached = 0;
    for (size_t i = 0; i < st->n; i++)
        if (!st->spans[i].marked) unreached++;
    if (!unreached) return;
    /* Group by allocation stack, then drop the suppressed groups. */
    size_t ngroups = 0;
    group_t *groups = os_map(unreached * sizeof(group_t));
    if (!groups) return;
    os_self_exe(self_exe, sizeof self_exe);
    load_rules();
    for (size_t i = 0; i < st->n; i++) {
        span_t *sp = &st->spans[i];
        if (sp->marked) continue;
        size_t g = 0;
        while (g < ngroups && groups[g].stack != sp->stack) g++;
        if (g == ngroups) groups[ngroups++] = (group_t){sp->stack, 0, 0, RULE_NONE};
        groups[g].blocks++;
        groups[g].bytes += sp->hi - sp->lo;
    }
    /* Every group's frames symbolized together (suppressions match the
     * symbolizer's names, static functions included), then matched. */
    sym_reset();
    if (mh_opt.symbolize) {
        for (size_t g = 0; g < ngroups; g++) {
            const uintptr_t *frames;
            for (uint32_t i = 0, n = stack_frames(groups[g].stack, &frames); i < n; i++) sym_add(frames[i]);
        }
        sym_resolve();
    }
    for (size_t g = 0; g < ngroups; g++) groups[g].rule = suppressed_by(groups[g].stack);
    size_t kept = 0;
    for (size_t g = 0; g < ngroups; g++) {
        if (groups[g].rule == RULE_NONE) {
            groups[kept++] = groups[g];
            total += groups[g].bytes;
            nblocks += groups[g].blocks;
        } else if (groups[g].rule == RULE_SYSTEM) {
            system_hits += groups[g].blocks;
            system_bytes += groups[g].bytes;
        } else {
            rule_hits[groups[g].rule] += groups[g].blocks;
            rule_bytes[groups[g].rule] += groups[g].bytes;
        }
    }
    ngroups = kept;
    if (!nblocks) { /* every leak suppressed: a clean exit, silently */
        os_unmap(groups, unreached * sizeof(group_t));
        return;
    }
    static char text[8192];
    mh_buf_t b = {text, 0, sizeof text};
    buf_str(&b, "miniheap: ERROR: memory-leak: ");
    buf_dec(&b, total);
    buf_str(&b, " bytes in ");
    buf_dec(&b, nblocks);
    buf_str(&b, nblocks == 1 ? " block\n" : " blocks\n");
    os_write_stderr(text, b.len);
    for (size_t shown = 0; shown < ngroups && shown < 32; shown++) { /* largest first */
        size_t best = shown;
        for (size_t g = shown + 1; g < ngroups; g++)
            if (groups[g].bytes > groups[best].bytes) best = g;
        group_t t = groups[shown]; groups[shown] = groups[best]; groups[best] = t;
    }
    for (size_t shown = 0; shown < ngroups && shown < 32; shown++) {
        b.len = 0;
        buf_str(&b, "\n  ");
        buf_dec(&b, groups[shown].bytes);
        buf_str(&b, " bytes in ");
        buf_dec(&b, groups[shown].blocks);
        buf_str(&b, groups[shown].blocks == 1 ? " block allocated at:\n" : " blocks allocated at:\n");
        stack_print(&b, groups[shown].stack);
        os_write_stderr(text, b.len);
    }
    /* What the suppressions took, as LeakSanitizer lists it. */
    bool any = system_hits != 0;
    for (size_t r = 0; r < n_rules; r++) any |= rule_hits[r] != 0;
    if (any) {
        b.len = 0;
        buf_str(&b, "\nSuppressed (blocks, bytes, rule):\n");
        for (size_t r = 0; r < n_rules; r++) {
            if (!rule_hits[r]) continue;
            buf_str(&b, "  ");
            buf_dec(&b, rule_hits[r]);
            buf_str(&b, " ");
            buf_dec(&b, rule_bytes[r]);
            buf_str(&b, " leak:");
            buf_str(&b, rules[r]);
            buf_str(&b, "\n");
        }
        if (system_hits) {
            buf_str(&b, "  ");
            buf_dec(&b, system_hits);
            buf_str(&b, " ");
            buf_dec(&b, system_bytes);
            buf_str(&b, " allocated by system code or a language runtime only (leak_system=1 reports them)\n");
        }
        os_write_stderr(text, b.len);
    }
    b.len = 0;
    buf_str(&b, "\nSUMMARY: miniheap: memory-leak: ");
    buf_dec(&b, total);
    buf_str(&b, " bytes leaked in ");
    buf_dec(&b, nblocks);
    buf_str(&b, nblocks == 1 ? " allocation.\n" : " allocations.\n");
    os_write_stderr(text, b.len);
    os_unmap(groups, unreached * sizeof(group_t));
    mh_report_exit("memory-leak", text);
}

static void leak_check_at_exit(void) {
    if (!atomic_load(&mh_ready) || !mh_opt.leak_report) return;
    leak_state_t st = {0};
    dl_iterate_phdr(note_object, &st);
    /* The heap's locks before the other threads stop (one of them may be
     * about to take one), in fork_prepare's order. */
    bins_lock_all();
    mh_lock(&mh_locks.heap);
    large_lock_all();
    struct sigaction old;
    size_t nstopped = stop_others(&old);
    slab_foreach(collect_slab, &st);
    large_foreach_live(collect_large, &st);
    if (st.n) {
        sort_spans(st.spans, st.n);
        scan_roots(&st, nstopped);
        while (st.nwork) {
            span_t *sp = &st.spans[st.work[--st.nwork]];
            scan_range(&st, sp->lo, sp->hi);
        }
    }
    resume_others(&old);
    large_unlock_all();
    mh_unlock(&mh_locks.heap);
    bins_unlock_all();
    if (st.n) report(&st);
    if (st.spans) os_unmap(st.spans, st.cap * sizeof(span_t));
    if (st.work) os_unmap(st.work, st.capwork * sizeof(uintptr_t));
    if (st.segs) os_unmap(st.segs, st.capsegs * sizeof(range_t));
}

/* Runs after main's atexit handlers and the program's destructors. The
 * exiting thread's quarantine is checked first: a write after free to a
 * block still waiting there would otherwise never be seen. With check_exit
 * (debug), every live block's canaries too: an overflow of a block that is
 * never freed is found here, and reported before any leak. */
__attribute__((destructor(101))) static void leak_destructor(void) {
    if (!atomic_load(&mh_ready)) return;
    exit_sp = (uintptr_t)__builtin_frame_address(0);
    sigset_t saved;
    os_signals_block(&saved); /* the program's handlers cannot allocate into a half-drained cache */
    /* First: no give-back pass may run while the heap is walked (the leak
     * scan stops other threads with a signal, which ours block). Without a
     * walk the thread is left to the process's end: joining it cost every
     * short-lived program 0.1 ms. */
    if (mh_opt.check_exit || mh_opt.leak_report || track_active()) purge_stop();
    tcache_t *t = mh_tcache;
    if (t && t->q.count) quarantine_drain(t);
    if (mh_opt.check_exit) mh_check();
    if (track_active()) tcache_scrub_for_tools();
    leak_check_at_exit();
    os_signals_restore(&saved);
}

void leak_init(void) {}
