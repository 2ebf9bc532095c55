/* Multi-threaded harness: threads created per input share a table of slots,
 * so blocks are freed and reallocated by threads other than the one that
 * allocated them, and threads exit holding cached blocks. Two schedules,
 * chosen by the input:
 *
 *   lockstep  the main thread decodes every step and hands it to one worker
 *             at a time (spawn, exit and which thread runs next come from the
 *             input): deterministic, so crashes reproduce; heap checks run
 *             between steps while every worker is parked.
 *   free      waves of 2-4 threads run their decoded operations at once
 *             (per-slot locks keep the shadow coherent); mh_check() also runs
 *             concurrently. Not deterministic, but finds races.
 *
 * Input: FZ_OPTION_BYTES option bytes, a schedule byte, then steps.
 */
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>

#include "fz.h"

#define TSLOTS 24
#define MAX_ALIVE 4
#define MAX_LIFETIMES 8
#define MAX_STEPS 384
#define FREE_OPS 64
#define TMAX_SIZE ((size_t)1 << 20)

typedef struct tslot {
    pthread_mutex_t lock;
    uint8_t *p;
    size_t req, usable;
    uint32_t seed;
    bool sized_ok;     /* from malloc, calloc or realloc: free_sized may free it */
} tslot_t;

typedef struct top {
    uint8_t code, slot, extra;
    size_t size;
} top_t;

enum { T_MALLOC, T_CALLOC, T_MEMALIGN, T_REALLOC, T_FREE, T_FREE_SIZED, T_VERIFY, T_CHECK, T_TRIM, T_NOPS, T_EXIT = 255 };

typedef struct worker {
    pthread_t th;
    sem_t go;
    top_t cmd;
    top_t ops[FREE_OPS];
    unsigned nops;
    bool lockstep;
} worker_t;

static tslot_t slots[TSLOTS];
static fz_config_t cfg;
static sem_t step_done;
static _Atomic uint32_t seed_counter;

static void slot_verify(const tslot_t *s, int i, const char *when) {
    if (!s->p) return;
    size_t bad = fz_verify(s->p, s->req, s->req, s->seed, false);
    if (bad != SIZE_MAX)
        FZ_FAIL("threads: slot %d (%s): %zu-byte block %p lost its contents at offset %zu", i, when, s->req,
                (void *)s->p, bad);
}

static void slot_take(tslot_t *s, void *p, size_t req, size_t align, bool zero) {
    s->sized_ok = align <= 16;
    FZ_ASSERT(p, "threads: allocation of %zu bytes failed (errno %d)", req, errno);
    FZ_ASSERT(((uintptr_t)p & ((align > 16 ? align : 16) - 1)) == 0, "threads: %p not aligned to %zu", p, align);
    size_t u = mh_malloc_usable_size(p);
    FZ_ASSERT(u >= req, "threads: usable %zu < %zu", u, req);
    if (zero) FZ_ASSERT(fz_verify_zero(p, req) == SIZE_MAX, "threads: calloc'd block %p not zero", p);
    s->p = p;
    s->req = req;
    s->usable = u;
    s->seed = (seed_counter++) * 0x9e3779b1u + 7;
    fz_fill(p, req, s->seed);
}

static void slot_free(tslot_t *s, int i, bool sized) {
    if (!s->p) return;
    slot_verify(s, i, "before free");
    if (sized && s->sized_ok) mh_free_sized(s->p, s->req);
    else mh_free(s->p);
    s->p = NULL;
}

static void exec_op(const top_t *op) {
    if (op->code == T_CHECK) {
        int rc = mh_check();
        FZ_ASSERT(rc == 0, "threads: mh_check() = %d", rc);
        return;
    }
    if (op->code == T_TRIM) {
        int rc = mh_trim(0);
        FZ_ASSERT(rc == 0 || rc == 1, "threads: mh_trim = %d", rc);
        return;
    }
    int i = op->slot % TSLOTS;
    tslot_t *s = &slots[i];
    pthread_mutex_lock(&s->lock);
    switch (op->code) {
    case T_MALLOC:
        slot_free(s, i, false);
        slot_take(s, mh_malloc(op->size), op->size, 16, false);
        break;
    case T_CALLOC:
        slot_free(s, i, true);
        slot_take(s, mh_calloc(1 + op->extra % 3, op->size), (1 + op->extra % 3) * op->size, 16, true);
        break;
    case T_MEMALIGN: {
        size_t a = (size_t)1 << (op->extra % 17);
        slot_free(s, i, false);
        slot_take(s, mh_memalign(a, op->size), op->size, a, false);
        s->sized_ok = false;
        break;
    }
    case T_REALLOC: {
        if (!s->p) { slot_take(s, mh_realloc(NULL, op->size), op->size, 16, false); break; }
        slot_verify(s, i, "before realloc");
        if (op->size == 0) {
            FZ_ASSERT(mh_realloc(s->p, 0) == NULL, "threads: realloc(p, 0) != NULL");
            s->p = NULL;
            break;
        }
        void *q = mh_realloc(s->p, op->size);
        FZ_ASSERT(q, "threads: realloc to %zu failed", op->size);
        size_t keep = s->req < op->size ? s->req : op->size;
        size_t bad = fz_verify(q, s->req, keep, s->seed, false);
        FZ_ASSERT(bad == SIZE_MAX, "threads: realloc(%zu -> %zu) lost contents at %zu", s->req, op->size, bad);
        s->p = NULL;
        uint32_t seed = s->seed;
        slot_take(s, q, op->size, 16, false);
        s->seed = seed;
        fz_fill(q, op->size, seed);
        break;
    }
    case T_FREE: slot_free(s, i, false); break;
    case T_FREE_SIZED: slot_free(s, i, true); break;
    default: slot_verify(s, i, "verify"); break;
    }
    pthread_mutex_unlock(&s->lock);
}

static void decode_op(fz_reader_t *r, top_t *op) {
    op->code = rd_u8(r) % T_NOPS;
    op->slot = rd_u8(r);
    op->extra = rd_u8(r);
    if (op->code <= T_REALLOC) {
        size_t n = fz_size_ok(r, TMAX_SIZE);
        op->size = op->code == T_CALLOC ? n / 3 : n;
    }
}

static void *worker_main(void *arg) {
    worker_t *w = arg;
    if (w->lockstep) {
        for (;;) {
            while (sem_wait(&w->go) != 0) {}
            if (w->cmd.code == T_EXIT) break;
            exec_op(&w->cmd);
            sem_post(&step_done);
        }
    } else {
        for (unsigned k = 0; k < w->nops; k++) exec_op(&w->ops[k]);
    }
    return NULL; /* the thread cache is flushed on the way out */
}

static long count_live(void) {
    long n = 0;
    for (int i = 0; i < TSLOTS; i++) n += slots[i].p != NULL;
    return n;
}

static void quiescent_checks(bool full) {
    for (int i = 0; i < TSLOTS; i++) {
        tslot_t *s = &slots[i];
        if (!s->p) continue;
        if (full) slot_verify(s, i, "between steps");
        else FZ_ASSERT(fz_verify(s->p, s->req, s->req, s->seed, true) == SIZE_MAX,
                       "threads: slot %d lost its contents", i);
    }
    fz_check_heap(count_live());
}

static void spawn(worker_t *w, bool lockstep) {
    w->lockstep = lockstep;
    sem_init(&w->go, 0, 0);
    int rc = pthread_create(&w->th, NULL, worker_main, w);
    FZ_ASSERT(rc == 0, "pthread_create: %d", rc);
}

static void finish(worker_t *w) {
    if (w->lockstep) {
        w->cmd.code = T_EXIT;
        sem_post(&w->go);
    }
    pthread_join(w->th, NULL);
    sem_destroy(&w->go);
}

static void run_lockstep(fz_reader_t *r) {
    static worker_t pool[MAX_ALIVE];
    worker_t *alive_w[MAX_ALIVE]; /* workers keep their address while they live */
    bool used[MAX_ALIVE] = {false};
    unsigned alive = 0, lifetimes = 0, steps = 0;
    while (!rd_done(r) && steps++ < MAX_STEPS) {
        uint8_t b = rd_u8(r);
        switch (b & 7) {
        case 0: /* a new thread */
            if (alive < MAX_ALIVE && lifetimes < MAX_LIFETIMES) {
                unsigned k = 0;
                while (used[k]) k++;
                used[k] = true;
                spawn(&pool[k], true);
                alive_w[alive++] = &pool[k];
                lifetimes++;
            }
            continue;
        case 1: /* a thread exits (flushing its cache) */
            if (alive) {
                unsigned k = (b >> 3) % alive;
                finish(alive_w[k]);
                used[alive_w[k] - pool] = false;
                alive_w[k] = alive_w[--alive];
                quiescent_checks(false);
            }
            continue;
        default: {
            top_t op;
            decode_op(r, &op);
            if (!alive) {
                exec_op(&op); /* the main thread takes part too */
            } else {
                worker_t *w = alive_w[(b >> 3) % alive];
                w->cmd = op;
                sem_post(&w->go);
                while (sem_wait(&step_done) != 0) {}
            }
            quiescent_checks(false);
        }
        }
    }
    while (alive) finish(alive_w[--alive]);
}

static void run_free(fz_reader_t *r) {
    static worker_t ws[MAX_ALIVE];
    for (int wave = 0; wave < 3 && !rd_done(r); wave++) {
        unsigned n = 2 + rd_u8(r) % (MAX_ALIVE - 1);
        for (unsigned t = 0; t < n; t++) {
            ws[t].nops = rd_u8(r) % (FREE_OPS + 1);
            for (unsigned k = 0; k < ws[t].nops; k++) decode_op(r, &ws[t].ops[k]);
        }
        for (unsigned t = 0; t < n; t++) spawn(&ws[t], false);
        for (unsigned t = 0; t < n; t++) finish(&ws[t]);
        quiescent_checks(true);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fz_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int once;
    if (!once) {
        once = 1;
        fz_init();
        fz_background = 1;
        sem_init(&step_done, 0, 0);
        for (int i = 0; i < TSLOTS; i++) pthread_mutex_init(&slots[i].lock, NULL);
    }
    fz_reader_t r = {data, size};
    fz_apply_options(&r, &cfg);
    if (rd_u8(&r) & 1) run_free(&r);
    else run_lockstep(&r);
    quiescent_checks(true);
    for (int i = 0; i < TSLOTS; i++) slot_free(&slots[i], i, i & 1); /* mostly cross-thread frees */
    fz_check_heap(0);
    (void)mh_trim(0);
    if (!cfg.quarantine_mb) fz_check_empty_after_trim();
    mh_reset();
    return 0;
}
