/* Options: one table, parsed from MINIHEAP_OPTIONS ("key=value:key=value")
 * at start-up without allocating. A bad pair is reported once on stderr and
 * otherwise ignored; the program still runs. Defaults can be fixed at build
 * time with -DMH_DEFAULT_<KEY>=value. */
#include "internal.h"

#ifndef MH_DEFAULT_DECAY_MS
#define MH_DEFAULT_DECAY_MS 500
#endif
#ifndef MH_DEFAULT_MINIHEAP_CACHE
#define MH_DEFAULT_MINIHEAP_CACHE 2
#endif
#ifndef MH_DEFAULT_LARGE_CACHE_MB
#define MH_DEFAULT_LARGE_CACHE_MB 64
#endif
#ifndef MH_DEFAULT_FLOAT_PCT
#define MH_DEFAULT_FLOAT_PCT 25
#endif
#ifndef MH_DEFAULT_TCACHE
#define MH_DEFAULT_TCACHE 1
#endif
#ifndef MH_DEFAULT_ABORT_ON_ERROR
#define MH_DEFAULT_ABORT_ON_ERROR 1
#endif

mh_options_t mh_opt = {
    .decay_ms = MH_DEFAULT_DECAY_MS,
    .miniheap_cache = MH_DEFAULT_MINIHEAP_CACHE,
    .large_cache_mb = MH_DEFAULT_LARGE_CACHE_MB,
    .float_pct = MH_DEFAULT_FLOAT_PCT,
    .tcache = MH_DEFAULT_TCACHE,
    .abort_on_error = MH_DEFAULT_ABORT_ON_ERROR,
};

typedef struct option_def {
    const char *name;
    uint32_t *value;
    uint32_t min, max;
    const char *help;
} option_def_t;

static const option_def_t options[] = {
    {"decay_ms", &mh_opt.decay_ms, 0, 600000, "ms free memory is kept before it is given back"},
    {"miniheap_cache", &mh_opt.miniheap_cache, 0, 1024, "empty miniheaps kept mapped"},
    {"large_cache_mb", &mh_opt.large_cache_mb, 0, 1 << 20, "MiB of freed large blocks kept for reuse"},
    {"float_pct", &mh_opt.float_pct, 0, 100, "realloc moves blocks out of slabs less full than this %"},
    {"tcache", &mh_opt.tcache, 0, 1, "per-thread caches"},
    {"abort_on_error", &mh_opt.abort_on_error, 0, 1, "abort after a report (0: call the handler)"},
};

static bool name_is(const char *s, size_t n, const char *name) {
    return strlen(name) == n && memcmp(s, name, n) == 0;
}

static void complain(const char *what, const char *s, size_t n) {
    char text[256];
    mh_buf_t b = {text, 0, sizeof text};
    buf_str(&b, "miniheap: warning: ");
    buf_str(&b, what);
    buf_str(&b, " in MINIHEAP_OPTIONS: '");
    for (size_t i = 0; i < n && b.len + 8 < b.cap; i++) b.p[b.len++] = s[i];
    buf_str(&b, "' (ignored)\n");
    os_write_stderr(text, b.len);
}

int mh_options_parse(const char *s, bool report) {
    int rc = 0;
    while (s && *s) {
        const char *end = s;
        while (*end && *end != ':' && *end != ',') end++;
        const char *eq = s;
        while (eq < end && *eq != '=') eq++;
        if (end > s) {
            const option_def_t *o = NULL;
            for (size_t i = 0; i < sizeof options / sizeof options[0]; i++)
                if (name_is(s, (size_t)(eq - s), options[i].name)) o = &options[i];
            uint64_t v = 0;
            bool ok = o && eq < end && eq + 1 < end;
            for (const char *d = eq + 1; ok && d < end; d++) {
                if (*d < '0' || *d > '9') ok = false;
                else v = v * 10 + (uint64_t)(*d - '0');
                if (v > 0xffffffffu) ok = false;
            }
            if (ok && (v < o->min || v > o->max)) ok = false;
            if (ok) *o->value = (uint32_t)v;
            else {
                rc = -1;
                if (report) complain(o ? "bad value" : "unknown option", s, (size_t)(end - s));
            }
        }
        s = *end ? end + 1 : end;
    }
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

void mh_options_init(void) { mh_options_parse(env_get("MINIHEAP_OPTIONS"), true); }

MH_API int mh_set_options(const char *s) {
    mh_ensure_init();
    return mh_options_parse(s, true);
}
