/* What one append of a 250-byte batch costs the appending thread: pwrite against a copy into
 * a shared writable mapping, with the thread idle for a while between appends (as a broker at
 * 100 msg/s is). Not part of the build; see benches/README.md, "Appends through a mapping".
 *
 *   cc -O2 -o /tmp/append_cost benches/probes/append_cost.c
 *   /tmp/append_cost MODE COUNT GAP_US     # in a directory on the disk under test
 *
 * MODE 0: pwrite, the file grows with each write (Strata before a144bab)
 * MODE 1: pwrite into a file extended beforehand with fallocate
 * MODE 2: pwrite after fallocate(FALLOC_FL_KEEP_SIZE)
 * MODE 3: memcpy into a MAP_SHARED mapping of a file extended beforehand (Strata now)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static int by_value(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODE COUNT GAP_US\n", argv[0]);
        return 2;
    }
    int mode = atoi(argv[1]), count = atoi(argv[2]), gap_us = atoi(argv[3]);
    if (count < 1 || count > 100000 || mode < 0 || mode > 3) return 2;
    char path[] = "append_cost.XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) { perror("mkstemp"); return 1; }
    unlink(path);
    size_t size = 64 << 20;
    char batch[250], *map = NULL;
    memset(batch, 7, sizeof batch);
    if (mode == 1 || mode == 3) {
        if (fallocate(fd, 0, 0, size) != 0) { perror("fallocate"); return 1; }
    }
    if (mode == 2 && fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, size) != 0) { perror("fallocate"); return 1; }
    if (mode == 3) {
        map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED) { perror("mmap"); return 1; }
    }
    long *took = malloc(sizeof(long) * count);
    off_t position = 0;
    for (int i = 0; i < count && position + (off_t)sizeof batch <= (off_t)size; i++) {
        if (gap_us > 0) usleep(gap_us);
        long started = now_ns();
        if (mode == 3) memcpy(map + position, batch, sizeof batch);
        else if (pwrite(fd, batch, sizeof batch, position) != (ssize_t)sizeof batch) { perror("pwrite"); return 1; }
        took[i] = now_ns() - started;
        position += sizeof batch;
    }
    qsort(took, count, sizeof(long), by_value);
    printf("mode %d, %d appends, %d us apart: p50 %.1f us, p90 %.1f us\n", mode, count, gap_us,
           took[count / 2] / 1000.0, took[count * 9 / 10] / 1000.0);
    return 0;
}
