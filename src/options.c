/* Options: one table, parsed from MINIHEAP_OPTIONS ("key=value:key=value")
 * at start-up without allocating. A bad pair is reported once on stderr and
 * otherwise ignored; the program still runs. Defaults can be fixed at build
 * time with -DMH_DEFAULT_<KEY>=value. */
#include "internal.h"
#include "track.h"

#ifndef MH_DEFAULT_MODE
#define MH_DEFAULT_MODE MODE_HARDENED
#endif

mh_options_t mh_opt;
mh_config_t mh_cfg;

typedef struct option_def {
    const char *name;
    uint32_t *value;
    uint32_t min, max;
    uint32_t preset[3];  /* fast, hardened, debug */
    const char *help;
    bool layout;         /* shapes blocks and metadata: fixed while blocks exist */
} option_def_t;

/* Set when the first block is handed out, cleared by mh_reset(): from then
 * on the layout options (canaries, redzones, poison, per-block records,
 * caches, sampling) cannot change, since blocks already handed out and the
 * thread caches of every thread were made with the old ones. */
_Atomic int mh_layout_fixed;

#define O(field) &mh_opt.field
/* One table: the presets of every mode and the limits of every key. */
static const option_def_t options[] = {
    {"mode", O(mode), 0, 2, {0, 1, 2}, "fast | hardened | debug", true},
    {"canary", O(canary), 0, 1, {0, 1, 1}, "canary right after the requested size", true},
    {"underflow", O(underflow), 0, 1, {0, 0, 1}, "canary in front of each block", true},
    {"poison", O(poison), 0, 2, {0, 1, 2}, "poison freed blocks: 0 no, 1 first 32 bytes, 2 whole", true},
    {"fill_new", O(fill_new), 0, 1, {0, 0, 1}, "fill new blocks with 0xbe", false},
    {"quarantine_mb", O(quarantine_mb), 0, 65536, {0, 0, 16}, "MiB of freed blocks held back (one budget for the process)", true},
    {"random", O(random), 0, 1, {0, 1, 1}, "randomised slot choice", false},
    {"slab_guards", O(slab_guards), 0, 1, {0, 1, 1}, "guard page at the end of each slab", false},
    {"seal_large", O(seal_large), 0, 1, {0, 1, 1}, "freed large blocks inaccessible while cached for reuse", false},
    {"sample_rate", O(sample_rate), 0, 1u << 30, {0, 0, 2048}, "1 in N blocks between guard pages", true},
    {"stacks", O(stacks), 0, 1, {0, 0, 1}, "record allocation and free stacks (allocation stacks also while leak_report=1)", true},
    {"stack_depth", O(stack_depth), 1, 32, {16, 16, 16}, "frames kept per stack", false},
    {"leak_report", O(leak_report), 0, 1, {0, 0, 1}, "report unreachable blocks at exit", false},
    {"leak_system", O(leak_system), 0, 1, {0, 0, 0}, "also report leaks allocated wholly by system code or a language runtime", false},
    {"exitcode", O(exitcode), 0, 255, {23, 23, 23}, "exit status after a leak report (LeakSanitizer's 23)", false},
    {"check_every", O(check_every), 0, 1u << 30, {0, 0, 0}, "mh_check() every N operations", false},
    {"check_exit", O(check_exit), 0, 1, {0, 0, 1}, "mh_check() at exit: canaries of blocks never freed", false},
    {"zero_guard", O(zero_guard), 0, 1, {0, 1, 1}, "malloc(0) returns a block that faults on any access", true},
    {"mismatch", O(mismatch), 0, 2, {0, 1, 1}, "check new/new[] pairs and sized frees (2: malloc against new too)", true},
    {"decay_ms", O(decay_ms), 0, 600000, {500, 500, 500}, "ms free memory is kept before it is given back", false},
    {"miniheap_cache", O(miniheap_cache), 0, 1024, {2, 2, 2}, "empty miniheaps kept mapped", false},
    {"large_cache_mb", O(large_cache_mb), 0, 1 << 20, {64, 64, 64}, "MiB of freed large blocks kept for reuse", false},
    {"float_pct", O(float_pct), 0, 100, {25, 25, 25}, "realloc moves blocks out of slabs less full than this %", false},
    {"tcache", O(tcache), 0, 1, {1, 1, 1}, "per-thread caches", true},
    {"tcache_kb", O(tcache_kb), 1, 1024, {32, 32, 32}, "KiB of blocks a thread cache holds per size class", true},
    {"arenas", O(arenas), 0, MH_ARENAS, {0, 0, 0}, "arenas of slabs, each with its own locks (0: one per two CPUs)", true},
    {"background", O(background), 0, 1, {1, 1, 1}, "a thread gives memory back while the program sleeps", false},
    {"mesh", O(mesh), 0, 1, {0, 0, 0}, "sparse pages of a size class share physical pages (Mesh)", true},
    {"abort_on_error", O(abort_on_error), 0, 1, {1, 1, 1}, "abort after a report (0: call the handler)", false},
    {"seed", O(seed), 0, 0xffffffffu, {0, 0, 0}, "0: random choices from the kernel; N: a fixed sequence", false},
    {"symbolize", O(symbolize), 0, 2, {1, 1, 1}, "file:line in reports: 1 those that end the program, 2 all", false},
    {"stats_at_exit", O(stats_at_exit), 0, 1, {0, 0, 0}, "print statistics at exit", false},
    {"stats_json", O(stats_json), 0, 1, {0, 0, 0}, "statistics as JSON lines", false},
    {"stats_fd", O(stats_fd), 0, 1u << 20, {2, 2, 2}, "statistics to this file descriptor", false},
    {"stats_signal", O(stats_signal), 0, 64, {0, 0, 0}, "print statistics on this signal (0: none)", false},
    {"stats_interval_ms", O(stats_interval_ms), 0, 3600000, {0, 0, 0}, "print statistics every N ms (0: never)", false},
};
#define NOPTIONS (sizeof options / sizeof options[0])

/* Options whose value is a string (a path). It ends at the next ':' or ','
 * (as in ASan's options); an empty value clears it. Copied, so the string
 * given to mh_set_options may go away. */
typedef struct string_option { const char *name; char *buf; size_t cap; const char *help; } string_option_t;
static const string_option_t string_options[] = {
    {"suppressions", mh_opt.suppressions, sizeof mh_opt.suppressions, "file of leak:<pattern> lines (leak report)"},
    {"symbolizer", mh_opt.symbolizer, sizeof mh_opt.symbolizer, "the symbolizer to run (llvm-symbolizer, addr2line)"},
    {"stats_file", mh_opt.stats_file, sizeof mh_opt.stats_file, "statistics to this file (%p: the process id)"},
};
#define NSTRING_OPTIONS (sizeof string_options / sizeof string_options[0])

/* A preset sets every key, except abort_on_error once running (a program
 * that chose it keeps it) and, while blocks exist, the layout keys. */
static void apply_preset(uint32_t mode) {
    bool fixed = atomic_load(&mh_layout_fixed);
    for (size_t i = 0; i < NOPTIONS; i++) {
        if (options[i].value == &mh_opt.abort_on_error && mh_ready) continue;
        if (options[i].layout && fixed) continue;
        __atomic_store_n(options[i].value, options[i].preset[mode], __ATOMIC_RELAXED);
    }
}

void mh_config_update(void) {
    mh_cfg.front = mh_opt.underflow ? MH_MIN_ALIGN : 0;
    mh_cfg.tail = mh_opt.canary ? 1 : 0;
    mh_cfg.poison_len = mh_opt.poison == 2 ? ~0u : mh_opt.poison == 1 ? 32 : 0;
    mh_cfg.canary_len = mh_opt.mode == MODE_DEBUG ? CANARY_DEBUG : CANARY_HARDENED;
    mh_cfg.quarantine = (size_t)mh_opt.quarantine_mb << 20;
    /* Per-block records, so fixed with the layout, though leak_report
     * itself may change at any time: a report switched on later finds no
     * stacks for the blocks made before, and one switched off leaves no
     * slab half recorded. */
    if (!atomic_load(&mh_layout_fixed)) mh_cfg.alloc_stacks = mh_opt.stacks || mh_opt.leak_report;
    mh_cfg.hard = mh_opt.canary || mh_opt.mismatch || mh_cfg.front || mh_cfg.poison_len || mh_opt.fill_new ||
                  mh_cfg.quarantine || mh_cfg.alloc_stacks || mh_opt.sample_rate || mh_opt.check_every;
    /* Tail canaries of up to 8 bytes, 32 bytes of poison, kinds, and
     * nothing else: no front redzone, quarantine, records, fill, sampling,
     * heap checks or tool to tell (valgrind's detection calls this again). */
    mh_cfg.lean = mh_cfg.hard && !mh_cfg.front && !mh_cfg.quarantine && !mh_cfg.alloc_stacks && !mh_opt.fill_new &&
                  !mh_opt.sample_rate && !mh_opt.check_every && mh_cfg.canary_len <= 8 && mh_cfg.poison_len <= 32 &&
                  !track_active();
}

static bool name_is(const char *s, size_t n, const char *name) {
    return strlen(name) == n && memcmp(s, name, n) == 0;
}

static void complain(const char *source, const char *what, const char *s, size_t n, const char *why) {
    char text[320];
    mh_buf_t b = {text, 0, sizeof text};
    buf_str(&b, "miniheap: warning: ");
    buf_str(&b, what);
    buf_str(&b, " in ");
    buf_str(&b, source);
    buf_str(&b, ": '");
    for (size_t i = 0; i < n && b.len + 8 < b.cap; i++) b.p[b.len++] = s[i];
    buf_str(&b, "' (ignored");
    if (why) {
        buf_str(&b, ": ");
        buf_str(&b, why);
    }
    buf_str(&b, ")\n");
    os_write_stderr(text, b.len);
}

static bool parse_value(const option_def_t *o, const char *v, const char *end, uint32_t *out) {
    if (o->value == &mh_opt.mode) {
        static const char *names[] = {"fast", "hardened", "debug"};
        for (uint32_t m = 0; m < 3; m++)
            if (name_is(v, (size_t)(end - v), names[m])) { *out = m; return true; }
    }
    uint64_t x = 0;
    if (v >= end) return false;
    for (const char *d = v; d < end; d++) {
        if (*d < '0' || *d > '9') return false;
        x = x * 10 + (uint64_t)(*d - '0');
        if (x > 0xffffffffu) return false;
    }
    if (x < o->min || x > o->max) return false;
    *out = (uint32_t)x;
    return true;
}

/* Two passes: a mode sets its preset first, then every other key tunes it,
 * whatever the order they were written in. While blocks exist, a layout
 * key may only be given its current value. */
int mh_options_parse(const char *str, const char *report) {
    int rc = 0;
    bool fixed = atomic_load(&mh_layout_fixed);
    for (int pass = 0; pass < 2; pass++) {
        for (const char *s = str; s && *s;) {
            const char *end = s;
            while (*end && *end != ':' && *end != ',') end++;
            const char *eq = s;
            while (eq < end && *eq != '=') eq++;
            const string_option_t *so = NULL;
            for (size_t i = 0; i < NSTRING_OPTIONS && end > s; i++)
                if (name_is(s, (size_t)(eq - s), string_options[i].name)) so = &string_options[i];
            if (so) {
                size_t len = eq < end ? (size_t)(end - eq - 1) : 0;
                if (pass == 1 && (eq >= end || len >= so->cap)) {
                    rc = -1;
                    if (report) complain(report, eq >= end ? "bad value" : "value too long", s, (size_t)(end - s), NULL);
                } else if (pass == 1) {
                    memcpy(so->buf, eq + 1, len);
                    so->buf[len] = 0;
                }
            } else if (end > s) {
                const option_def_t *o = NULL;
                for (size_t i = 0; i < NOPTIONS; i++)
                    if (name_is(s, (size_t)(eq - s), options[i].name)) o = &options[i];
                bool is_mode = o && o->value == &mh_opt.mode;
                uint32_t v;
                if (o && eq < end && parse_value(o, eq + 1, end, &v)) {
                    if (o->layout && fixed && v != *o->value) {
                        if (pass == 1) {
                            rc = -1;
                            if (report)
                                complain(report, "layout option", s, (size_t)(end - s),
                                         "it cannot change once blocks are allocated; call mh_reset() first");
                        }
                    } else {
                        if (pass == 0 && is_mode) apply_preset(v);
                        if (pass == 1 && !is_mode) __atomic_store_n(o->value, v, __ATOMIC_RELAXED);
                        if (pass == 1 && o->value == &mh_opt.seed) mh_random_restart();
                    }
                } else if (pass == 1) {
                    rc = -1;
                    if (report) complain(report, o ? "bad value" : "unknown option", s, (size_t)(end - s), NULL);
                }
            }
            s = *end ? end + 1 : end;
        }
    }
    mh_config_update();
    return rc;
}

/* getenv without relying on libc having finished start-up. */
extern char **environ;
static const char *env_get(const char *name) {
    size_t n = strlen(name);
    for (char **e = environ; e && *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=') return *e + n + 1;
    return NULL;
}

/* A privileged program (set-user-ID, capabilities: AT_SECURE) ignores
 * MINIHEAP_OPTIONS: whoever started it must not be able to switch its
 * protections off (mode=fast), nor make it write reports or files. */
void mh_options_init(void) {
    apply_preset(MH_DEFAULT_MODE);
    const char *env = env_get("MINIHEAP_OPTIONS");
    if (env && os_secure()) {
        static const char msg[] = "miniheap: warning: MINIHEAP_OPTIONS ignored in a privileged (AT_SECURE) program\n";
        os_write_stderr(msg, sizeof msg - 1);
        env = NULL;
    }
    mh_options_parse(env, "MINIHEAP_OPTIONS");
}

MH_API int mh_set_options(const char *s) {
    mh_ensure_init();
    uint32_t decay = mh_opt.decay_ms, background = mh_opt.background;
    int rc = mh_options_parse(s, "mh_set_options()");
    if (mh_opt.decay_ms != decay || mh_opt.background != background) mh_tick_reschedule();
    return rc;
}
