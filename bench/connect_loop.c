// connect() timing for the egress benchmark: UDP connect runs the connect4 hook without
// a handshake, so the hook's cost is a visible share of the call.
//   connect_loop time N PORT      -> prints "p50_ns mean_ns" of N connect() calls to 127.0.0.1:PORT
//   connect_loop deny RATE SECS   -> denied sendto()s to 10.255.255.1:9 at RATE per second; prints count
//   connect_loop packets N PORT   -> "p50_ns mean_ns" of N send()+recv() of a 64-byte datagram over 127.0.0.1:PORT
//                                    (both sockets in the caller's cgroup: the egress and ingress packet checks run)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    struct sockaddr_in addr = {.sin_family = AF_INET};
    if (argv[1][0] == 't') {
        int n = atoi(argv[2]);
        addr.sin_port = htons(atoi(argv[3]));
        inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
        long long *lat = malloc(sizeof(long long) * n), total = 0;
        for (int i = 0; i < n; i++) {
            int s = socket(AF_INET, SOCK_DGRAM, 0);
            long long t0 = now_ns();
            int rc = connect(s, (struct sockaddr *)&addr, sizeof addr);
            lat[i] = now_ns() - t0;
            close(s);
            if (rc != 0) { perror("connect"); return 1; }
            total += lat[i];
        }
        qsort(lat, n, sizeof(long long), cmp);
        printf("%lld %.1f\n", lat[n / 2], (double)total / n);
        return 0;
    }
    if (argv[1][0] == 'p') {
        int n = atoi(argv[2]);
        addr.sin_port = htons(atoi(argv[3]));
        inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
        int rx = socket(AF_INET, SOCK_DGRAM, 0), tx = socket(AF_INET, SOCK_DGRAM, 0);
        if (bind(rx, (struct sockaddr *)&addr, sizeof addr) || connect(tx, (struct sockaddr *)&addr, sizeof addr)) {
            perror("bind/connect");
            return 1;
        }
        char buf[64] = {0};
        long long *lat = malloc(sizeof(long long) * n), total = 0;
        for (int i = 0; i < n; i++) {
            long long t0 = now_ns();
            if (send(tx, buf, sizeof buf, 0) != sizeof buf || recv(rx, buf, sizeof buf, 0) != sizeof buf) {
                perror("send/recv");
                return 1;
            }
            lat[i] = now_ns() - t0;
            total += lat[i];
        }
        qsort(lat, n, sizeof(long long), cmp);
        printf("%lld %.1f\n", lat[n / 2], (double)total / n);
        return 0;
    }
    double rate = atof(argv[2]);
    double secs = atof(argv[3]);
    addr.sin_port = htons(9);
    inet_pton(AF_INET, "10.255.255.1", &addr.sin_addr);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    long long start = now_ns(), total = (long long)(rate * secs), sent = 0;
    for (long long i = 0; i < total; i++) {
        long long due = start + (long long)(i * 1e9 / rate);
        while (now_ns() < due) ;
        sendto(s, "x", 1, 0, (struct sockaddr *)&addr, sizeof addr);  // EPERM expected
        sent++;
    }
    printf("%lld %.3f\n", sent, (now_ns() - start) / 1e9);
    return 0;
}
