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
            live += (size_t)__builtin_popcountll(slab_live_word(s, w));
        st->small_blocks += live;
        if (s->canary) { /* the requested sizes: what malloc_usable_size says */
            for (uint32_t w = 0; w < s->nwords; w++) {
                uint64_t bits = slab_live_word(s, w);
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
    mh_lock(&mh_locks.heap);
    miniheap_foreach(walk_miniheap, &w);
    mh_unlock(&mh_locks.heap);
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
    st->metadata_bytes = meta_resident_bytes();
    st->purged_bytes = atomic_load(&os_purged_total);
    st->unmapped_bytes = atomic_load(&os_unmapped_total);
    size_t mb;
    mesh_stats(&st->meshes, &mb);
    st->meshed_bytes = mb;
    st->idle_drains = tcache_idle_drains();
}

/* ---- statistics out of the process -------------------------------------------
 * Without touching the program: stats_at_exit=1 prints them at exit;
 * stats_signal=N prints them whenever the process gets signal N (opt-in);
 * stats_interval_ms=N every N ms. Text (what malloc_stats() prints) or, with
 * stats_json=1, one JSON object per line (docs/STATS.md has the schema), to
 * stderr, to stats_fd=N or to stats_file=PATH (%p: the process id).
 * A signal handler may not take the allocator's locks (the thread it
 * interrupted may hold one): it writes a byte to a pipe, and a thread of
 * ours, started only when a signal or an interval is asked for, does the
 * walk. */

static const struct { const char *name; size_t off; } fields[] = {
#define F(n) {#n, offsetof(mh_stats_t, n)}
    F(live_blocks), F(live_bytes), F(small_blocks), F(large_blocks), F(mapped_bytes), F(resident_bytes),
    F(metadata_bytes), F(miniheaps), F(slabs), F(cached_bytes), F(total_allocs), F(total_frees),
    F(purged_bytes), F(unmapped_bytes), F(meshes), F(meshed_bytes), F(idle_drains),
#undef F
};

static uint64_t field(const mh_stats_t *st, size_t i) {
    const char *base = (const char *)st;
    return i < 10 ? (uint64_t)*(const size_t *)(base + fields[i].off) : *(const uint64_t *)(base + fields[i].off);
}

static uint64_t start_ms;

static void format_stats(mh_buf_t *b, const mh_stats_t *st, bool json, const char *event) {
    static const char *const mode_names[] = {"fast", "hardened", "debug"};
    if (json) {
        buf_str(b, "{\"miniheap_stats\":1,\"event\":\"");
        buf_str(b, event);
        buf_str(b, "\",\"pid\":");
        buf_dec(b, os_getpid());
        buf_str(b, ",\"time_ms\":");
        buf_dec(b, os_now_ms() - start_ms);
        buf_str(b, ",\"mode\":\"");
        buf_str(b, mode_names[mh_opt.mode < 3 ? mh_opt.mode : 1]);
        buf_str(b, "\"");
        for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
            buf_str(b, ",\"");
            buf_str(b, fields[i].name);
            buf_str(b, "\":");
            buf_dec(b, field(st, i));
        }
        buf_str(b, "}\n");
        return;
    }
    struct { const char *name; uint64_t v; } rows[] = {
        {"live blocks", st->live_blocks},       {"live bytes", st->live_bytes},
        {"  in slabs", st->small_blocks},       {"  large", st->large_blocks},
        {"mapped bytes", st->mapped_bytes},     {"resident bytes (est.)", st->resident_bytes},
        {"metadata bytes", st->metadata_bytes}, {"cached bytes", st->cached_bytes},
        {"miniheaps", st->miniheaps},           {"slabs", st->slabs},
        {"allocations", st->total_allocs},      {"frees", st->total_frees},
        {"purged bytes", st->purged_bytes},     {"unmapped bytes", st->unmapped_bytes},
        {"meshes", st->meshes},                 {"meshed bytes", st->meshed_bytes},
        {"idle caches emptied", st->idle_drains},
    };
    buf_str(b, "miniheap stats:\n");
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        buf_str(b, "  ");
        buf_str(b, rows[i].name);
        buf_str(b, ": ");
        buf_dec(b, rows[i].v);
        buf_str(b, "\n");
    }
}

MH_API void mh_print_stats(void) {
    mh_stats_t st;
    mh_stats(&st);
    char text[1024];
    mh_buf_t b = {text, 0, sizeof text};
    format_stats(&b, &st, false, "call");
    os_write_stderr(text, b.len);
}

static int out_fd = -1;          /* where stats go: stats_fd, stats_file, or stderr */
static mh_lock_t out_lock = MH_LOCK_INIT;

static int stats_destination(void) {
    if (out_fd >= 0) return out_fd;
    if (mh_opt.stats_file[0]) {
        char path[300];
        mh_buf_t b = {path, 0, sizeof path};
        for (const char *c = mh_opt.stats_file; *c; c++) {
            if (c[0] == '%' && c[1] == 'p') {
                buf_dec(&b, os_getpid());
                c++;
            } else if (b.len + 1 < b.cap) {
                b.p[b.len++] = *c;
                b.p[b.len] = 0;
            }
        }
        out_fd = os_open_append(path);
        if (out_fd < 0) {
            char msg[400];
            mh_buf_t m = {msg, 0, sizeof msg};
            buf_str(&m, "miniheap: warning: cannot open stats_file '");
            buf_str(&m, path);
            buf_str(&m, "'; statistics go to stderr\n");
            os_write_stderr(msg, m.len);
            out_fd = 2;
        }
    } else {
        out_fd = (int)mh_opt.stats_fd;
    }
    return out_fd;
}

static void stats_emit(const char *event) {
    mh_stats_t st;
    mh_stats(&st);
    char text[2048];
    mh_buf_t b = {text, 0, sizeof text};
    format_stats(&b, &st, mh_opt.stats_json, event);
    mh_lock(&out_lock);
    os_write_fd(stats_destination(), text, b.len);
    mh_unlock(&out_lock);
}

/* Before the leak report (destructor 101), which may end the process. */
__attribute__((destructor(102))) static void stats_at_exit(void) {
    if (!atomic_load(&mh_ready) || !mh_opt.stats_at_exit) return;
    sigset_t saved;
    os_signals_block(&saved);
    stats_emit("exit");
    os_signals_restore(&saved);
}

static int wake_pipe[2] = {-1, -1};
static _Atomic int thread_wanted, thread_allowed;
/* The thread, while it runs (between a start and stats_end; a forked child
 * has none). Only one thread at a time starts or ends it: the one that won
 * thread_wanted, then the program's last. */
static _Atomic int thread_running;
static pthread_t stats_thread;


static void on_stats_signal(int sig) {
    (void)sig;
    char c = 's';
    os_write_fd(wake_pipe[1], &c, 1); /* async-signal-safe; the thread does the walk */
}

/* A forked child has no statistics thread, and must not wake its parent's:
 * it reports at exit only. */
void stats_after_fork_child(void) {
    atomic_store(&thread_wanted, 0);
    atomic_store(&thread_running, 0);
    /* A stats_file named after the pid is the parent's: open the child's own. */
    if (out_fd > 2 && mh_opt.stats_file[0]) os_close(out_fd);
    if (mh_opt.stats_file[0]) out_fd = -1;
    if (wake_pipe[0] < 0) return;
    os_close(wake_pipe[0]);
    os_close(wake_pipe[1]);
    wake_pipe[0] = wake_pipe[1] = -1;
}

static void *stats_main(void *arg) {
    (void)arg;
    thread_mark_helper();
    for (;;) {
        char c;
        int r = os_wait_readable(wake_pipe[0], mh_opt.stats_interval_ms ? (int)mh_opt.stats_interval_ms : -1);
        if (r > 0 && os_read_fd(wake_pipe[0], &c, 1) == 1) {
            if (c == 'q') break; /* stats_end */
            stats_emit("signal");
        } else if (r == 0) {
            stats_emit("interval");
        }
    }
    return NULL;
}

/* The program's last counted thread is exiting (tcache.c, helpers_stop):
 * the thread ends and is joined; a thread still running starts it again
 * at its next allocation slow path. */
void stats_end(void) {
    if (!atomic_load(&thread_running)) return;
    char c = 'q';
    os_write_fd(wake_pipe[1], &c, 1);
    os_thread_join(stats_thread, 2000);
    atomic_store(&thread_running, 0);
    atomic_store(&thread_wanted, 1);
}


/* From start-up (mh_init_slow): the pipe and the signal handler now; the
 * thread at load (override.c) or at the first allocation slow path after
 * our constructor ran (libc must have finished its own start-up, and the
 * allocator may start inside the dynamic loader). Only when a signal or an
 * interval is asked for. */
void stats_init(void) {
    start_ms = os_now_ms();
    if (!mh_opt.stats_signal && !mh_opt.stats_interval_ms) return;
    if (!os_pipe(wake_pipe)) return;
    if (mh_opt.stats_signal && !os_install_signal(mh_opt.stats_signal, on_stats_signal, NULL)) {
        static const char msg[] = "miniheap: warning: cannot handle the stats_signal; statistics on a signal are off\n";
        os_write_stderr(msg, sizeof msg - 1);
    }
    atomic_store(&thread_wanted, 1);
}

void stats_start_if_wanted(void) {
    if (!atomic_load_explicit(&thread_wanted, memory_order_relaxed) || !atomic_load(&thread_allowed)) return;
    if (!thread_count_self()) return;
    int expect = 1;
    if (!atomic_compare_exchange_strong(&thread_wanted, &expect, 0)) return;
    if (!os_thread_start(stats_main, "miniheap-stats", &stats_thread)) {
        static const char msg[] = "miniheap: warning: cannot start the statistics thread\n";
        os_write_stderr(msg, sizeof msg - 1);
        return;
    }
    atomic_store(&thread_running, 1);
}

__attribute__((constructor)) static void stats_allow(void) {
    atomic_store(&thread_allowed, 1);
    if (atomic_load(&mh_ready)) stats_start_if_wanted();
}
