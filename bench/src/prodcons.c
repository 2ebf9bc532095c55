/* prodcons: producer-consumer queues across threads.
 *
 * A three-stage pipeline: 2 producers allocate messages (16 B - 2 KiB) and
 * push them, 64 to a packet, on queue 1; 2 transformers pop a packet, copy
 * every message into a newly allocated message of another size, free the
 * original and push the copies on queue 2; 1 consumer pops, checks and frees
 * them. Packets are allocated by one thread and freed by another too.
 * Usage: prodcons [scale]
 */
#include "bench.h"
#include <pthread.h>

#define PER_PACKET 64
#define QCAP 32
#define PRODUCERS 2
#define TRANSFORMERS 2

typedef struct msg {
    uint32_t len;
    uint32_t tag;
    unsigned char data[];
} msg_t;

typedef struct packet {
    struct packet *next;
    msg_t *m[PER_PACKET];
} packet_t;

typedef struct queue {
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    packet_t *head, *tail;
    int count;
    int writers; /* threads still pushing */
} queue_t;

static queue_t q1, q2;
static size_t packets_per_producer;

static void q_init(queue_t *q, int writers)
{
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->not_empty, NULL);
    pthread_cond_init(&q->not_full, NULL);
    q->writers = writers;
}

static void q_push(queue_t *q, packet_t *p)
{
    pthread_mutex_lock(&q->mu);
    while (q->count >= QCAP)
        pthread_cond_wait(&q->not_full, &q->mu);
    p->next = NULL;
    if (q->tail)
        q->tail->next = p;
    else
        q->head = p;
    q->tail = p;
    q->count++;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->mu);
}

/* NULL when every writer has finished and the queue is empty */
static packet_t *q_pop(queue_t *q)
{
    pthread_mutex_lock(&q->mu);
    while (q->head == NULL && q->writers > 0)
        pthread_cond_wait(&q->not_empty, &q->mu);
    packet_t *p = q->head;
    if (p != NULL) {
        q->head = p->next;
        if (q->head == NULL)
            q->tail = NULL;
        q->count--;
        pthread_cond_signal(&q->not_full);
    }
    pthread_mutex_unlock(&q->mu);
    return p;
}

static void q_writer_done(queue_t *q)
{
    pthread_mutex_lock(&q->mu);
    q->writers--;
    pthread_cond_broadcast(&q->not_empty);
    pthread_mutex_unlock(&q->mu);
}

static msg_t *msg_new(rng_t *r, uint32_t tag)
{
    uint32_t len = (uint32_t)rng_logsize(r, 16, 2048);
    msg_t *m = xmalloc_or_die(sizeof *m + len);
    m->len = len;
    m->tag = tag;
    memset(m->data, (int)(tag & 0xff), len < 32 ? len : 32);
    m->data[len - 1] = (unsigned char)tag;
    return m;
}

static void *producer(void *arg)
{
    rng_t r;
    rng_init(&r, BENCH_SEED + (uintptr_t)arg);
    for (size_t i = 0; i < packets_per_producer; i++) {
        packet_t *p = xmalloc_or_die(sizeof *p);
        for (int k = 0; k < PER_PACKET; k++)
            p->m[k] = msg_new(&r, (uint32_t)(i * PER_PACKET + (size_t)k));
        q_push(&q1, p);
    }
    q_writer_done(&q1);
    return NULL;
}

static void *transformer(void *arg)
{
    rng_t r;
    rng_init(&r, BENCH_SEED + 100 + (uintptr_t)arg);
    packet_t *p;
    while ((p = q_pop(&q1)) != NULL) {
        for (int k = 0; k < PER_PACKET; k++) {
            msg_t *old = p->m[k];
            msg_t *m = msg_new(&r, old->tag);
            size_t n = old->len < m->len ? old->len : m->len;
            memcpy(m->data, old->data, n < 32 ? n : 32);
            free(old);
            p->m[k] = m;
        }
        q_push(&q2, p);
    }
    q_writer_done(&q2);
    return NULL;
}

static unsigned long long consumed;
static void *consumer(void *arg)
{
    (void)arg;
    packet_t *p;
    unsigned long long sum = 0;
    while ((p = q_pop(&q2)) != NULL) {
        for (int k = 0; k < PER_PACKET; k++) {
            msg_t *m = p->m[k];
            if (m->data[m->len - 1] != (unsigned char)m->tag) {
                fprintf(stderr, "prodcons: corrupted message\n");
                abort();
            }
            sum += m->len;
            free(m);
        }
        free(p);
    }
    consumed = sum;
    return NULL;
}

int main(int argc, char **argv)
{
    double scale = bench_scale(argc, argv);
    packets_per_producer = scaled(scale, 24000, 4);
    q_init(&q1, PRODUCERS);
    q_init(&q2, TRANSFORMERS);
    pthread_t th[PRODUCERS + TRANSFORMERS + 1];
    int n = 0;
    double t0 = now_s();
    for (uintptr_t i = 0; i < PRODUCERS; i++)
        if (pthread_create(&th[n++], NULL, producer, (void *)i) != 0)
            return 3;
    for (uintptr_t i = 0; i < TRANSFORMERS; i++)
        if (pthread_create(&th[n++], NULL, transformer, (void *)i) != 0)
            return 3;
    if (pthread_create(&th[n++], NULL, consumer, NULL) != 0)
        return 3;
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    double t1 = now_s();
    double ops = 4.0 * (double)packets_per_producer * PRODUCERS * PER_PACKET;
    printf("RESULT time_s=%.6f ops=%.0f ns_per_op=%.2f check=%llu\n", t1 - t0, ops,
           (t1 - t0) * 1e9 / ops, consumed);
    return 0;
}
