/* Scenario D's latency measured by the smallest client that can: one publisher socket and one
 * subscriber socket in blocking mode, on one thread, no event loop. Each round sleeps GAP_US,
 * stamps the time, writes a QoS 1 PUBLISH of 100 bytes and blocks reading the subscriber
 * socket until the PUBLISH arrives; then both acknowledgements are exchanged. What this sees
 * is the broker, the kernel and the machine, so the difference from `strata bench` on the same
 * broker is what the load generator itself adds. Not part of the build; see
 * benches/README.md, "What the load generator adds to D".
 *
 *   cc -O2 -o /tmp/pingpong benches/probes/pingpong.c
 *   /tmp/pingpong PORT COUNT GAP_US
 *
 * MQTT 3.1.1 only, topic "probe/pingpong", clean sessions.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char TOPIC[] = "probe/pingpong";
enum { PAYLOAD = 100 };

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static int by_value(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

static void fail(const char *what) {
    perror(what);
    exit(1);
}

static void send_all(int fd, const unsigned char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n <= 0) fail("write");
        buf += n;
        len -= (size_t)n;
    }
}

static void read_exact(int fd, unsigned char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = read(fd, buf, len);
        if (n <= 0) fail("read");
        buf += n;
        len -= (size_t)n;
    }
}

/* Reads one whole packet into buf (remaining length under 128, as every packet here is);
 * returns its first byte. */
static unsigned char read_packet(int fd, unsigned char *buf, size_t cap) {
    read_exact(fd, buf, 2);
    if ((buf[1] & 0x80) || (size_t)buf[1] + 2 > cap) {
        fprintf(stderr, "packet longer than this probe reads\n");
        exit(1);
    }
    read_exact(fd, buf + 2, buf[1]);
    return buf[0];
}

static int connect_client(int port, const char *client_id) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) fail("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) fail("connect");
    unsigned char p[64];
    size_t id_len = strlen(client_id), n = 0;
    p[n++] = 0x10;
    p[n++] = (unsigned char)(10 + 2 + id_len);
    memcpy(p + n, "\0\4MQTT\4\2\0\74", 10); /* protocol 4, clean session, keep alive 60 s */
    n += 10;
    p[n++] = 0;
    p[n++] = (unsigned char)id_len;
    memcpy(p + n, client_id, id_len);
    n += id_len;
    send_all(fd, p, n);
    unsigned char ack[64];
    if (read_packet(fd, ack, sizeof ack) != 0x20 || ack[3] != 0) fail("CONNACK refused");
    return fd;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s PORT COUNT GAP_US\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]), count = atoi(argv[2]), gap_us = atoi(argv[3]);
    if (count <= 0 || count > 1000000 || gap_us < 0) return 2;
    char sub_id[32], pub_id[32];
    snprintf(sub_id, sizeof sub_id, "pingpong-s-%d", (int)getpid());
    snprintf(pub_id, sizeof pub_id, "pingpong-p-%d", (int)getpid());
    int sub = connect_client(port, sub_id), pub = connect_client(port, pub_id);

    unsigned char p[256];
    size_t topic_len = sizeof TOPIC - 1, n = 0;
    p[n++] = 0x82;
    p[n++] = (unsigned char)(2 + 2 + topic_len + 1);
    p[n++] = 0, p[n++] = 1;
    p[n++] = 0, p[n++] = (unsigned char)topic_len;
    memcpy(p + n, TOPIC, topic_len), n += topic_len;
    p[n++] = 1;
    send_all(sub, p, n);
    if (read_packet(sub, p, sizeof p) != 0x90) fail("SUBACK");

    long *latency = calloc((size_t)count, sizeof *latency);
    unsigned char in[256], puback[4] = {0x40, 2, 0, 0};
    for (int i = 0; i < count; i++) {
        struct timespec gap = {gap_us / 1000000, (long)(gap_us % 1000000) * 1000};
        nanosleep(&gap, NULL);
        unsigned short id = (unsigned short)(i % 65535 + 1);
        n = 0;
        p[n++] = 0x32;
        p[n++] = (unsigned char)(2 + topic_len + 2 + PAYLOAD);
        p[n++] = 0, p[n++] = (unsigned char)topic_len;
        memcpy(p + n, TOPIC, topic_len), n += topic_len;
        p[n++] = (unsigned char)(id >> 8), p[n++] = (unsigned char)id;
        memset(p + n, 'x', PAYLOAD), n += PAYLOAD;
        long sent = now_ns();
        send_all(pub, p, n);
        unsigned char kind;
        while ((kind = read_packet(sub, in, sizeof in) & 0xf0) != 0x30) {
        }
        latency[i] = now_ns() - sent;
        /* The delivery's packet id follows its topic. */
        size_t at = 2 + 2 + ((size_t)in[2] << 8 | in[3]);
        puback[2] = in[at], puback[3] = in[at + 1];
        send_all(sub, puback, sizeof puback);
        if ((read_packet(pub, in, sizeof in) & 0xf0) != 0x40) fail("PUBACK");
    }
    qsort(latency, (size_t)count, sizeof *latency, by_value);
    printf("pingpong: %d round trips, gap %d us: p50 %ld us  p99 %ld us  max %ld us\n", count, gap_us,
           latency[count / 2] / 1000, latency[(size_t)count * 99 / 100] / 1000, latency[count - 1] / 1000);
    return 0;
}
