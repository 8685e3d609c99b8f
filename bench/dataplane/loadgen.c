/*
 * Open-loop HTTP/1.1 load generator for bench/dataplane (wrk2's method).
 *
 * Request i is *scheduled* at t0 + i/rate, evenly spaced. It is sent on the
 * first idle keep-alive connection at or after that moment, and its latency
 * is timed from the scheduled moment, not from the actual send: when the
 * system under test falls behind, requests queue here and the queueing counts
 * (no coordinated omission). Single thread, epoll, no pipelining.
 *
 * The generator reports its own send lag: for each request, the time from
 * max(scheduled moment, moment its connection became free) to the write()
 * call returning. That is the error the generator itself adds; run.py shows
 * it beside the latencies it measured.
 *
 * usage: loadgen HOST PORT RATE COUNT CONNS REQUEST_FILE
 * prints one JSON object (microseconds) on stdout.
 * Bounded: at most COUNT requests, and it stops COUNT/RATE + 10 s after start.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 65536
#define GRACE_NS 10000000000LL
#define SPIN_NS 50000LL

typedef struct {
    int fd;
    int busy;
    int64_t sched;     /* scheduled moment of the request in flight */
    int64_t freed;     /* when this connection last became idle */
    size_t len;
    char buf[BUF];
} conn_t;

static struct sockaddr_in addr;
static char *req;
static size_t req_len;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int open_conn(int ep, conn_t *c) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("connect");
        if (fd >= 0) close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    c->fd = fd;
    c->busy = 0;
    c->len = 0;
    c->freed = now_ns();
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

/* 0: incomplete; 1: complete (status in *status); -1: unparseable. */
static int parse(conn_t *c, int *status) {
    c->buf[c->len] = 0;
    char *end = strstr(c->buf, "\r\n\r\n");
    if (!end) return 0;
    if (strncmp(c->buf, "HTTP/1.", 7) != 0) return -1;
    *status = atoi(c->buf + 9);
    size_t head = (size_t)(end - c->buf) + 4;
    for (char *p = c->buf; p && p < end; p = strstr(p, "\r\n")) {
        p += 2;
        if (strncasecmp(p, "content-length:", 15) == 0)
            return c->len >= head + (size_t)atol(p + 15) ? 1 : 0;
        if (strncasecmp(p, "transfer-encoding:", 18) == 0)
            return c->len >= 5 && memcmp(c->buf + c->len - 5, "0\r\n\r\n", 5) == 0;
    }
    return 1; /* no body */
}

static void pct(const char *name, int64_t *v, long n, int last) {
    if (n == 0) {
        printf("\"%s\": null%s", name, last ? "" : ", ");
        return;
    }
    qsort(v, (size_t)n, sizeof *v, cmp64);
    double q[] = {0.5, 0.9, 0.99, 0.999};
    const char *k[] = {"p50", "p90", "p99", "p999"};
    printf("\"%s\": {", name);
    for (int i = 0; i < 4; i++) {
        long idx = (long)(q[i] * (double)n);
        if (idx >= n) idx = n - 1;
        printf("\"%s\": %.1f, ", k[i], (double)v[idx] / 1000.0);
    }
    printf("\"max\": %.1f}%s", (double)v[n - 1] / 1000.0, last ? "" : ", ");
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s HOST PORT RATE COUNT CONNS REQUEST_FILE\n", argv[0]);
        return 2;
    }
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &addr.sin_addr);
    double rate = atof(argv[3]);
    long total = atol(argv[4]);
    int nconn = atoi(argv[5]);
    if (rate <= 0 || total <= 0 || nconn <= 0 || nconn > 1024) return 2;
    FILE *f = fopen(argv[6], "rb");
    if (!f) { perror("request file"); return 2; }
    req = malloc(BUF);
    req_len = fread(req, 1, BUF, f);
    fclose(f);

    int ep = epoll_create1(0);
    conn_t *conns = calloc((size_t)nconn, sizeof *conns);
    conn_t **idle = calloc((size_t)nconn, sizeof *idle);
    int nidle = 0;
    for (int i = 0; i < nconn; i++) {
        if (open_conn(ep, &conns[i]) < 0) return 1;
        idle[nidle++] = &conns[i];
    }
    int64_t *lat = calloc((size_t)total, sizeof *lat);
    int64_t *lag = calloc((size_t)total, sizeof *lag);
    long sent = 0, done = 0, errors = 0, reconnects = 0, bad = 0;
    double interval = 1e9 / rate;
    int64_t t0 = now_ns() + 1000000;
    int64_t deadline = t0 + (int64_t)((double)total * interval) + GRACE_NS;
    struct epoll_event evs[64];

    while (done + errors < total) {
        int64_t now = now_ns();
        if (now > deadline) break;
        while (sent < total && nidle > 0) {
            int64_t sched = t0 + (int64_t)((double)sent * interval);
            if (sched > now) break;
            conn_t *c = idle[--nidle];
            ssize_t w = write(c->fd, req, req_len);
            int64_t after = now_ns();
            if (w != (ssize_t)req_len) { /* a closed keep-alive connection */
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                reconnects++;
                if (open_conn(ep, c) < 0) return 1;
                idle[nidle++] = c;
                now = after;
                continue;
            }
            c->busy = 1;
            c->sched = sched;
            c->len = 0;
            lag[sent] = after - (c->freed > sched ? c->freed : sched);
            sent++;
            now = after;
        }
        /* Sleep (nanosecond timeout) until SPIN_NS before the next send, then
         * poll without sleeping: a wakeup is late by some microseconds, so the
         * last stretch is spun. Waiting only for responses, sleep: readiness
         * wakes us. run.py starts us SCHED_FIFO, so those wakeups preempt any
         * other tenant's process on our core, and sleeping keeps us far below
         * the kernel's real-time throttling (95% of a CPU). */
        int64_t wait = 100000000;
        if (sent < total && nidle > 0) {
            int64_t sched = t0 + (int64_t)((double)sent * interval);
            wait = sched - now_ns() - SPIN_NS;
            if (wait < 0) wait = 0;
        }
        struct timespec ts = {.tv_sec = wait / 1000000000LL, .tv_nsec = wait % 1000000000LL};
        int n = epoll_pwait2(ep, evs, 64, &ts, NULL);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            ssize_t r = read(c->fd, c->buf + c->len, BUF - 1 - c->len);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                if (c->busy) errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                reconnects++;
                if (open_conn(ep, c) < 0) return 1;
                idle[nidle++] = c;
                continue;
            }
            c->len += (size_t)r;
            int status = 0;
            int p = parse(c, &status);
            if (p == 0) continue;
            int64_t t = now_ns();
            if (p < 0 || status != 200) bad++;
            lat[done++] = t - c->sched;
            c->busy = 0;
            c->len = 0;
            c->freed = t;
            idle[nidle++] = c;
        }
    }
    int64_t t_end = now_ns();
    printf("{\"rate\": %.1f, \"count\": %ld, \"sent\": %ld, \"completed\": %ld, "
           "\"errors\": %ld, \"non_200\": %ld, \"unfinished\": %ld, \"reconnects\": %ld, "
           "\"elapsed_s\": %.3f, ",
           rate, total, sent, done, errors, bad, total - done - errors, reconnects,
           (double)(t_end - t0) / 1e9);
    pct("latency_us", lat, done, 0);
    pct("send_lag_us", lag, sent, 1);
    printf("}\n");
    return 0;
}
