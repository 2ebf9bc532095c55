/* Clean program: NTHREADS threads allocate, fill and free blocks of fixed
 * pseudo-random sizes, and pass some to the next thread, which checks and
 * frees them (cross-thread frees; thread caches flushed at thread exit).
 * Small on purpose: valgrind runs the threads one at a time. */
#include "vg_test.h"

#define NTHREADS 4
#define OPS 1500
#define SLOTS 32
#define BOX 64

typedef struct {
    pthread_mutex_t lock;
    void *items[BOX];
    size_t sizes[BOX];
    unsigned n;
} mailbox_t;

static mailbox_t boxes[NTHREADS];
static int failures[NTHREADS];

static uint32_t next_rand(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

static size_t pick_size(uint32_t *s) {
    uint32_t r = next_rand(s);
    if (r % 200 == 0) return 140000 + r % 100000; /* a large block now and then */
    if (r % 10 == 0) return 1 + r % 8000;
    return 1 + r % 300;
}

static void drain(int me) {
    mailbox_t *b = &boxes[me];
    pthread_mutex_lock(&b->lock);
    for (unsigned i = 0; i < b->n; i++) {
        if (!vg_check_fill(b->items[i], b->sizes[i], (unsigned)b->sizes[i])) failures[me]++;
        free(b->items[i]);
    }
    b->n = 0;
    pthread_mutex_unlock(&b->lock);
}

static void *worker(void *arg) {
    int me = (int)(intptr_t)arg;
    uint32_t seed = 12345u + (uint32_t)me * 7919u;
    void *slot[SLOTS] = {0};
    size_t ssize[SLOTS] = {0};
    for (int op = 0; op < OPS; op++) {
        unsigned k = next_rand(&seed) % SLOTS;
        if (slot[k]) {
            if (!vg_check_fill(slot[k], ssize[k], (unsigned)ssize[k])) failures[me]++;
            mailbox_t *b = &boxes[(me + 1) % NTHREADS];
            pthread_mutex_lock(&b->lock);
            if (b->n < BOX && next_rand(&seed) % 3 == 0) {
                b->items[b->n] = slot[k];
                b->sizes[b->n++] = ssize[k];
                slot[k] = NULL;
            }
            pthread_mutex_unlock(&b->lock);
            if (slot[k]) free(slot[k]);
            slot[k] = NULL;
        } else {
            size_t n = pick_size(&seed);
            slot[k] = next_rand(&seed) % 4 ? malloc(n) : calloc(1, n);
            if (!slot[k]) { failures[me]++; continue; }
            ssize[k] = n;
            vg_fill(slot[k], n, (unsigned)n);
        }
        if (op % 64 == 0) drain(me);
    }
    for (unsigned k = 0; k < SLOTS; k++) free(slot[k]);
    return NULL;
}

int main(void) {
    vg_report_allocator("start");
    pthread_t t[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) pthread_mutex_init(&boxes[i].lock, NULL);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < NTHREADS; i++)
            VG_CHECK(pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i) == 0);
        for (int i = 0; i < NTHREADS; i++) pthread_join(t[i], NULL);
        for (int i = 0; i < NTHREADS; i++) drain(i);
    }
    for (int i = 0; i < NTHREADS; i++) VG_CHECK(failures[i] == 0);
    vg_report_allocator("end");
    return vg_exit("vg_clean_threads");
}
