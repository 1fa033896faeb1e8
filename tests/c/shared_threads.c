/* shared_threads MODEL WIDTH HEIGHT
 *
 * Threads are shared by the library, not multiplied per model. Starts four caller threads,
 * then opens, per caller, one model with default options and one with threads = the number of
 * CPUs this process may use; translates a different image per caller with each, first
 * serially, then from the four callers at once, sampling the process's thread count
 * (/proc/self/status) after every translation. Then the same with models opened with
 * threads = 1. Checks the concurrent results equal the serial ones byte for byte and prints
 * "cpus C baseline B shared S capped K": B threads before any translation (main + callers),
 * S the most seen in the first phase, K in the second. */
#define _GNU_SOURCE
#include "pix2pix.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CALLERS 4
#define ROUNDS 2

#define EXPECT(cond)                                                                             \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "%s:%d: expectation failed: %s (%s)\n", __FILE__, __LINE__, #cond,   \
                    p2p_last_error());                                                           \
            exit(1);                                                                             \
        }                                                                                        \
    } while (0)

static int thread_count(void) {
    FILE *f = fopen("/proc/self/status", "r");
    EXPECT(f != NULL);
    char line[256];
    int n = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "Threads:", 8) == 0) n = atoi(line + 8);
    fclose(f);
    return n;
}

static uint32_t W, H;
static p2p_model *models[CALLERS][2];
static unsigned char *images[CALLERS], *serial[CALLERS][2];
static pthread_barrier_t start, go;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int most;

static void translate(p2p_model *m, const unsigned char *px, unsigned char *to) {
    p2p_image in = {W, H, W * 3, 3, (uint8_t *)px};
    p2p_image out = {W, H, W * 3, 3, to};
    EXPECT(p2p_translate(m, &in, &out) == P2P_OK);
}

static void *caller(void *arg) {
    size_t k = (size_t)arg;
    unsigned char *got = malloc((size_t)W * H * 3);
    EXPECT(got != NULL);
    pthread_barrier_wait(&start); /* started: counted in the baseline */
    for (int phase = 0; phase < 2; phase++) {
        pthread_barrier_wait(&go); /* models open and serial results ready */
        for (int r = 0; r < ROUNDS; r++)
            for (int j = 0; j < 2; j++) {
                translate(models[k][j], images[k], got);
                EXPECT(memcmp(got, serial[k][j], (size_t)W * H * 3) == 0);
                int n = thread_count();
                pthread_mutex_lock(&lock);
                if (n > most) most = n;
                pthread_mutex_unlock(&lock);
            }
        pthread_barrier_wait(&go); /* phase done */
    }
    free(got);
    return NULL;
}

static void open_models(uint32_t threads_a, uint32_t threads_b, const char *path) {
    for (size_t k = 0; k < CALLERS; k++) {
        uint32_t t[2] = {threads_a, threads_b};
        for (int j = 0; j < 2; j++) {
            p2p_options o;
            memset(&o, 0, sizeof o);
            o.struct_size = sizeof o;
            o.threads = t[j];
            EXPECT(p2p_model_open(path, &o, &models[k][j]) == P2P_OK);
            translate(models[k][j], images[k], serial[k][j]);
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL WIDTH HEIGHT\n", argv[0]);
        return 2;
    }
    W = (uint32_t)atoi(argv[2]);
    H = (uint32_t)atoi(argv[3]);
    cpu_set_t set;
    EXPECT(sched_getaffinity(0, sizeof set, &set) == 0);
    int cpus = CPU_COUNT(&set);
    size_t size = (size_t)W * H * 3;
    for (size_t k = 0; k < CALLERS; k++) {
        images[k] = malloc(size);
        serial[k][0] = malloc(size);
        serial[k][1] = malloc(size);
        EXPECT(images[k] && serial[k][0] && serial[k][1]);
        for (size_t i = 0; i < size; i++) images[k][i] = (unsigned char)((i * (k + 3) + i / 97) % 251);
    }
    pthread_barrier_init(&start, NULL, CALLERS + 1);
    pthread_barrier_init(&go, NULL, CALLERS + 1);
    pthread_t t[CALLERS];
    for (size_t k = 0; k < CALLERS; k++) EXPECT(pthread_create(&t[k], NULL, caller, (void *)k) == 0);
    pthread_barrier_wait(&start);
    int baseline = thread_count();

    /* Phase 1: default options, and threads = the CPU count. */
    open_models(0, (uint32_t)cpus, argv[1]);
    pthread_barrier_wait(&go);
    pthread_barrier_wait(&go);
    int shared = most;
    for (size_t k = 0; k < CALLERS; k++)
        for (int j = 0; j < 2; j++) p2p_model_free(models[k][j]);

    /* Phase 2: threads = 1 (capped translations). */
    most = 0;
    open_models(1, 1, argv[1]);
    pthread_barrier_wait(&go);
    pthread_barrier_wait(&go);
    int capped = most;
    for (size_t k = 0; k < CALLERS; k++) {
        EXPECT(pthread_join(t[k], NULL) == 0);
        for (int j = 0; j < 2; j++) p2p_model_free(models[k][j]);
        free(images[k]);
        free(serial[k][0]);
        free(serial[k][1]);
    }
    printf("cpus %d baseline %d shared %d capped %d\n", cpus, baseline, shared, capped);
    return 0;
}
