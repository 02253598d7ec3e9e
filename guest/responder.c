/*
 * responder.c - the srmig guest's workload responders, one static binary, one thread.
 *
 *   UDP  7    echo: every datagram is sent back unchanged to its sender (the 1 ms probe).
 *   TCP  80   HTTP/1.0: reads one request head, answers 200 with the lab's body, closes.
 *   TCP  5001 sink: reads and discards until the peer closes (bulk, VM receiving).
 *   TCP  5002 source: writes zeros until the peer closes (bulk, VM sending).
 *   TCP  9    boot id and counters: writes "boot_id=<uuid> uptime=<seconds> echo_rx=N
 *             echo_tx=N echo_tx_retried=N echo_tx_failed=N udp_rcvbuf_errors=N
 *             udp_sndbuf_errors=N udp_in_errors=N tcp_ofo_queued=N tcp_ofo_drops=N
 *             tcp_backlog_drops=N tcp_rcvq_drops=N tcp_dsack_sent=N backlog_drops=N\n" and
 *             closes (the udp_* and tcp_* figures are the guest kernel's, from /proc/net/snmp
 *             and /proc/net/netstat TcpExt: segments queued out of order, dropped out of
 *             order, dropped at a full socket backlog or receive queue, duplicates answered
 *             with a D-SACK; backlog_drops the per-CPU input backlog's drops from
 *             /proc/net/softnet_stat; -1 if unreadable).
 *
 * The echo never drops a reply because its own send queue is momentarily full (a guest that
 * just resumed from a migration receives the held frames in one burst): it waits for room
 * (up to 200 ms per reply) and counts what it retried or still failed. Socket buffers of the
 * UDP echo are 4 MiB (SO_RCVBUFFORCE / SO_SNDBUFFORCE) for the same reason.
 *
 * All sockets are IPv6 with IPV6_V6ONLY off (IPv4-mapped peers work too), non-blocking,
 * driven by one epoll loop, so a slow or dead peer never blocks the others. Every
 * connection has an idle timeout so a peer that vanished (e.g. across a failed migration)
 * does not hold a slot forever.
 *
 * Build: gcc -static -O2 -Wall -Wextra -o responder responder.c
 * Usage: responder [-q]     (-q: no log lines on stderr)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Must match crates/lab/src/workload/http.rs (the client checks the body). */
static const char HTTP_BODY[] = "srmig lab says hello\n";

#define MAX_CONNS 1024
#define REQ_MAX 8192
#define IDLE_TIMEOUT_S 30

enum kind { K_UDP_ECHO, K_LISTEN_HTTP, K_LISTEN_SINK, K_LISTEN_SOURCE, K_LISTEN_BOOTID, K_CONN };
enum role { R_HTTP, R_SINK, R_SOURCE, R_BOOTID };

struct conn {
    int fd;             /* -1 when the slot is free */
    enum role role;
    char *buf;          /* request bytes (HTTP) or response bytes (HTTP, boot id) */
    size_t len;         /* bytes in buf */
    size_t off;         /* bytes of the response already written */
    int writing;        /* response being written */
    time_t last;        /* last activity, for the idle timeout */
};

/* epoll data: low 32 bits = kind, high 32 bits = connection slot */
#define TAG(kind, slot) (((uint64_t)(slot) << 32) | (uint64_t)(kind))

static struct conn conns[MAX_CONNS];
static int quiet;
static int ep;
static char zeros[65536];

static void logf_(const char *fmt, ...)
{
    if (quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("responder: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static unsigned long echo_rx, echo_tx, echo_tx_retried, echo_tx_failed;

/* The guest kernel's counter `name` of section `section` ("Udp:", "TcpExt:") in `path`
 * (/proc/net/snmp or /proc/net/netstat: a header line, then a line of values). */
static long proc_counter(const char *path, const char *section, const char *name)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    static char head[8192], vals[8192];
    size_t skip = strlen(section);
    long result = -1;
    while (fgets(head, sizeof head, f)) {
        if (strncmp(head, section, skip) != 0)
            continue;
        if (!fgets(vals, sizeof vals, f))
            break;
        char *hs, *vs;
        char *h = strtok_r(head + skip, " \n", &hs);
        char *v = strtok_r(vals + skip, " \n", &vs);
        while (h && v) {
            if (strcmp(h, name) == 0) {
                result = strtol(v, NULL, 10);
                break;
            }
            h = strtok_r(NULL, " \n", &hs);
            v = strtok_r(NULL, " \n", &vs);
        }
        break;
    }
    fclose(f);
    return result;
}

static long udp_counter(const char *name)
{
    return proc_counter("/proc/net/snmp", "Udp:", name);
}

static long tcpext_counter(const char *name)
{
    return proc_counter("/proc/net/netstat", "TcpExt:", name);
}

/* Frames the per-CPU input backlogs dropped (second column of /proc/net/softnet_stat, hex). */
static long backlog_drops(void)
{
    FILE *f = fopen("/proc/net/softnet_stat", "r");
    if (!f)
        return -1;
    unsigned long processed, dropped;
    long sum = 0;
    while (fscanf(f, "%lx %lx%*[^\n]", &processed, &dropped) == 2)
        sum += (long)dropped;
    fclose(f);
    return sum;
}

static int bind6(int type, int port)
{
    int fd = socket(AF_INET6, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (type == SOCK_DGRAM) {
        int big = 4 << 20;
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big) < 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
        if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big) < 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    }
    int zero = 0, one = 1;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_port = htons((uint16_t)port);
    a.sin6_addr = in6addr_any;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || (type == SOCK_STREAM && listen(fd, 512) < 0)) {
        close(fd);
        return -1;
    }
    return fd;
}

static int watch(int fd, uint32_t events, uint64_t tag, int op)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.u64 = tag;
    return epoll_ctl(ep, op, fd, &ev);
}

static void conn_close(int slot)
{
    struct conn *c = &conns[slot];
    if (c->fd < 0)
        return;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->buf);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

/* Reads a small text file (e.g. /proc/...), strips the trailing newline. */
static void read_line(const char *path, char *out, size_t cap)
{
    out[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, out, cap - 1);
    close(fd);
    if (n <= 0) {
        out[0] = '\0';
        return;
    }
    out[n] = '\0';
    char *nl = strchr(out, '\n');
    if (nl)
        *nl = '\0';
}

static int start_response(int slot, const char *data, size_t len)
{
    struct conn *c = &conns[slot];
    free(c->buf);
    c->buf = malloc(len);
    if (!c->buf)
        return -1;
    memcpy(c->buf, data, len);
    c->len = len;
    c->off = 0;
    c->writing = 1;
    return watch(c->fd, EPOLLOUT, TAG(K_CONN, slot), EPOLL_CTL_MOD);
}

/* Writes what the socket takes; closes the connection once the response is out. */
static void flush_response(int slot)
{
    struct conn *c = &conns[slot];
    while (c->off < c->len) {
        ssize_t n = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            conn_close(slot);
            return;
        }
        c->off += (size_t)n;
    }
    /* HTTP/1.0 and the boot id answer end with the connection. */
    shutdown(c->fd, SHUT_WR);
    conn_close(slot);
}

static void accept_all(int lfd, enum role role)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                logf_("accept: %s", strerror(errno));
            return;
        }
        int slot = -1;
        for (int i = 0; i < MAX_CONNS; i++)
            if (conns[i].fd < 0) {
                slot = i;
                break;
            }
        if (slot < 0) {
            logf_("too many connections, refusing one");
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = &conns[slot];
        memset(c, 0, sizeof *c);
        c->fd = fd;
        c->role = role;
        c->last = time(NULL);
        if (role == R_BOOTID) {
            char id[64], up[64], line[1024];
            read_line("/proc/sys/kernel/random/boot_id", id, sizeof id);
            read_line("/proc/uptime", up, sizeof up);
            char *sp = strchr(up, ' ');
            if (sp)
                *sp = '\0';
            int n = snprintf(line, sizeof line,
                             "boot_id=%s uptime=%s echo_rx=%lu echo_tx=%lu echo_tx_retried=%lu "
                             "echo_tx_failed=%lu udp_rcvbuf_errors=%ld udp_sndbuf_errors=%ld "
                             "udp_in_errors=%ld tcp_ofo_queued=%ld tcp_ofo_drops=%ld "
                             "tcp_backlog_drops=%ld tcp_rcvq_drops=%ld tcp_dsack_sent=%ld "
                             "backlog_drops=%ld\n",
                             id, up, echo_rx, echo_tx, echo_tx_retried, echo_tx_failed,
                             udp_counter("RcvbufErrors"), udp_counter("SndbufErrors"),
                             udp_counter("InErrors"), tcpext_counter("TCPOFOQueue"),
                             tcpext_counter("TCPOFODrop"), tcpext_counter("TCPBacklogDrop"),
                             tcpext_counter("TCPRcvQDrop"),
                             tcpext_counter("TCPDSACKOldSent") +
                                 tcpext_counter("TCPDSACKOfoSent"),
                             backlog_drops());
            if (n < 0 || (size_t)n >= sizeof line)
                n = (int)strlen(line);
            if (watch(fd, EPOLLOUT, TAG(K_CONN, slot), EPOLL_CTL_ADD) < 0 ||
                start_response(slot, line, (size_t)n) < 0)
                conn_close(slot);
            continue;
        }
        uint32_t events = role == R_SOURCE ? (EPOLLIN | EPOLLOUT) : EPOLLIN;
        if (watch(fd, events, TAG(K_CONN, slot), EPOLL_CTL_ADD) < 0)
            conn_close(slot);
    }
}

static void http_readable(int slot)
{
    struct conn *c = &conns[slot];
    if (!c->buf) {
        c->buf = malloc(REQ_MAX);
        if (!c->buf) {
            conn_close(slot);
            return;
        }
    }
    for (;;) {
        if (c->len >= REQ_MAX) {
            conn_close(slot); /* request head too large */
            return;
        }
        ssize_t n = recv(c->fd, c->buf + c->len, REQ_MAX - c->len, 0);
        if (n == 0) {
            conn_close(slot);
            return;
        }
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR)
                conn_close(slot);
            return;
        }
        c->len += (size_t)n;
        if (memmem(c->buf, c->len, "\r\n\r\n", 4) || memmem(c->buf, c->len, "\n\n", 2))
            break;
    }
    char resp[256];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s",
                     sizeof HTTP_BODY - 1, HTTP_BODY);
    if (start_response(slot, resp, (size_t)n) < 0)
        conn_close(slot);
    else
        flush_response(slot);
}

static void conn_event(int slot, uint32_t events)
{
    struct conn *c = &conns[slot];
    if (c->fd < 0)
        return;
    c->last = time(NULL);
    if (c->writing) {
        if (events & (EPOLLERR | EPOLLHUP))
            conn_close(slot);
        else
            flush_response(slot);
        return;
    }
    char buf[65536];
    switch (c->role) {
    case R_HTTP:
        http_readable(slot);
        return;
    case R_SINK:
        for (;;) {
            ssize_t n = recv(c->fd, buf, sizeof buf, 0);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                conn_close(slot);
                return;
            }
            if (n < 0)
                return;
        }
    case R_SOURCE:
        if (events & EPOLLIN) {
            ssize_t n = recv(c->fd, buf, sizeof buf, 0);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                conn_close(slot);
                return;
            }
        }
        if (events & (EPOLLERR | EPOLLHUP)) {
            conn_close(slot);
            return;
        }
        while (events & EPOLLOUT) {
            ssize_t n = send(c->fd, zeros, sizeof zeros, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno != EAGAIN && errno != EINTR)
                    conn_close(slot);
                return;
            }
        }
        return;
    case R_BOOTID:
        return;
    }
}

static void udp_echo(int fd)
{
    char buf[65536];
    for (int i = 0; i < 256; i++) { /* bounded, so TCP work is not starved */
        struct sockaddr_in6 peer;
        socklen_t plen = sizeof peer;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &plen);
        if (n < 0)
            return;
        echo_rx++;
        for (int tries = 0;; tries++) {
            if (sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&peer, plen) >= 0) {
                echo_tx++;
                break;
            }
            if ((errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS && errno != EINTR) ||
                tries >= 20) {
                echo_tx_failed++;
                break;
            }
            /* The send queue (or the qdisc below it) is full: wait for room, 10 ms at most
             * per try. */
            echo_tx_retried++;
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            if (poll(&p, 1, 10) < 0 && errno != EINTR) {
                echo_tx_failed++;
                break;
            }
        }
    }
}

static void reap_idle(void)
{
    time_t now = time(NULL);
    for (int i = 0; i < MAX_CONNS; i++)
        if (conns[i].fd >= 0 && conns[i].role != R_SOURCE && conns[i].role != R_SINK &&
            now - conns[i].last > IDLE_TIMEOUT_S)
            conn_close(i);
}

int main(int argc, char **argv)
{
    quiet = argc > 1 && strcmp(argv[1], "-q") == 0;
    signal(SIGPIPE, SIG_IGN);
    for (int i = 0; i < MAX_CONNS; i++)
        conns[i].fd = -1;
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        perror("responder: epoll_create1");
        return 1;
    }
    static const struct {
        int type, port;
        enum kind kind;
    } socks[] = {
        {SOCK_DGRAM, 7, K_UDP_ECHO},        {SOCK_STREAM, 80, K_LISTEN_HTTP},
        {SOCK_STREAM, 5001, K_LISTEN_SINK}, {SOCK_STREAM, 5002, K_LISTEN_SOURCE},
        {SOCK_STREAM, 9, K_LISTEN_BOOTID},
    };
    int fds[sizeof socks / sizeof socks[0]];
    for (size_t i = 0; i < sizeof socks / sizeof socks[0]; i++) {
        fds[i] = bind6(socks[i].type, socks[i].port);
        if (fds[i] < 0 || watch(fds[i], EPOLLIN, TAG(socks[i].kind, 0), EPOLL_CTL_ADD) < 0) {
            fprintf(stderr, "responder: %s port %d: %s\n", socks[i].type == SOCK_DGRAM ? "udp" : "tcp",
                    socks[i].port, strerror(errno));
            return 1;
        }
    }
    logf_("listening: udp 7 echo, tcp 80 http, tcp 5001 sink, tcp 5002 source, tcp 9 boot id");
    time_t last_reap = time(NULL);
    for (;;) {
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, 1000);
        if (n < 0 && errno != EINTR) {
            perror("responder: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            enum kind kind = (enum kind)(tag & 0xffffffffu);
            int slot = (int)(tag >> 32);
            switch (kind) {
            case K_UDP_ECHO:
                udp_echo(fds[0]);
                break;
            case K_LISTEN_HTTP:
                accept_all(fds[1], R_HTTP);
                break;
            case K_LISTEN_SINK:
                accept_all(fds[2], R_SINK);
                break;
            case K_LISTEN_SOURCE:
                accept_all(fds[3], R_SOURCE);
                break;
            case K_LISTEN_BOOTID:
                accept_all(fds[4], R_BOOTID);
                break;
            case K_CONN:
                conn_event(slot, evs[i].events);
                break;
            }
        }
        if (time(NULL) != last_reap) {
            last_reap = time(NULL);
            reap_idle();
        }
    }
}
