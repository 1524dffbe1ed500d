/* The burst workload for bench/burst: allocates memory at a fixed rate up to a peak, every
 * page filled with incompressible bytes (xorshift64), holds it, then frees it.
 *
 *   burst-alloc MODE RATE_MIB_S PEAK_MIB HOLD_S [CALM_S]
 *
 * MODE: steady (RATE MiB/s up to PEAK), step (PEAK at once, as a model load), twophase (rise,
 * free, wait CALM_S, rise again). Prints one line per event on stdout:
 *   ram_rate <phase> <MiB/s over the first 256 MiB>
 *   peak <phase> <seconds from start> swap_total_kib=<n> swap_used_kib=<n>
 *   freed <phase> <seconds>
 * and exits 0. Killed by the OOM killer, it prints nothing more (the kernel log says). */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1UL << 20)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void swap_kib(long *total, long *used) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    long free_kib = 0;
    *total = 0;
    while (f && fgets(line, sizeof line, f)) {
        sscanf(line, "SwapTotal: %ld", total);
        sscanf(line, "SwapFree: %ld", &free_kib);
    }
    if (f) fclose(f);
    *used = *total - free_kib;
}

static uint64_t state = 0x9e3779b97f4a7c15ULL;

static void fill(uint64_t *p) {
    for (size_t i = 0; i < CHUNK / 8; i++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        p[i] = state;
    }
}

/* One rise: PEAK MiB at RATE MiB/s (0: as fast as it goes), then hold, then free. */
static void rise(int phase, double rate, long peak, double hold, double t0) {
    void **chunks = calloc(peak, sizeof *chunks);
    double start = now();
    for (long i = 0; i < peak; i++) {
        if (rate > 0) {
            double due = start + i / rate;
            double wait = due - now();
            if (wait > 0) usleep((useconds_t)(wait * 1e6));
        }
        chunks[i] = mmap(NULL, CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (chunks[i] == MAP_FAILED) {
            printf("mmap-failed %d %.2f at_mib=%ld\n", phase, now() - t0, i);
            exit(2);
        }
        fill(chunks[i]);
        if (i == 255) { /* the rate reached while RAM still holds it all (TCG may fall short of RATE) */
            printf("ram_rate %d %.0f\n", phase, 256 / (now() - start));
            fflush(stdout);
        }
    }
    long total, used;
    swap_kib(&total, &used);
    printf("peak %d %.2f swap_total_kib=%ld swap_used_kib=%ld\n", phase, now() - start, total, used);
    fflush(stdout);
    usleep((useconds_t)(hold * 1e6));
    for (long i = 0; i < peak; i++) munmap(chunks[i], CHUNK);
    free(chunks);
    printf("freed %d %.2f\n", phase, now() - t0);
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s steady|step|twophase RATE_MIB_S PEAK_MIB HOLD_S [CALM_S]\n", argv[0]);
        return 64;
    }
    const char *mode = argv[1];
    double rate = atof(argv[2]);
    long peak = atol(argv[3]);
    double hold = atof(argv[4]);
    double calm = argc > 5 ? atof(argv[5]) : 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    double t0 = now();
    if (!strcmp(mode, "step")) {
        rise(1, 0, peak, hold, t0);
    } else if (!strcmp(mode, "steady")) {
        rise(1, rate, peak, hold, t0);
    } else if (!strcmp(mode, "twophase")) {
        rise(1, rate, peak, hold, t0);
        usleep((useconds_t)(calm * 1e6));
        rise(2, rate, peak, hold, t0);
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 64;
    }
    return 0;
}
