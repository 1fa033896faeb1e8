/* memory_budget MODEL WIDTH HEIGHT BUDGET_MIB RLIMIT_AS_MIB
 *
 * Translates a WIDTHxHEIGHT RGB image with `p2p_options.memory_budget_mb = BUDGET_MIB` (0: the
 * default budget) in a process whose address space is limited to RLIMIT_AS_MIB: an image too
 * large for the budget must come back as a status, not an abort. Then translates a 256x256
 * image under the same limit, to show the library is still usable. Prints
 * `large STATUS_NAME MESSAGE` and `small STATUS_NAME`; exits 0 when both calls returned. */
#include "pix2pix.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static p2p_status translate(p2p_model *m, uint32_t w, uint32_t h) {
    size_t n = (size_t)w * h * 3;
    unsigned char *px = malloc(n);
    if (!px) {
        fprintf(stderr, "cannot allocate the %ux%u test image\n", w, h);
        exit(3);
    }
    for (size_t i = 0; i < n; i++) px[i] = (unsigned char)(i * 7 + i / 1024);
    p2p_image in = {w, h, w * 3, 3, px};
    p2p_image out = {0, 0, 0, 0, NULL};
    p2p_status s = p2p_translate(m, &in, &out);
    if (s == P2P_OK) p2p_image_free(&out);
    free(px);
    return s;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s MODEL WIDTH HEIGHT BUDGET_MIB RLIMIT_AS_MIB\n", argv[0]);
        return 2;
    }
    uint32_t w = (uint32_t)atoi(argv[2]), h = (uint32_t)atoi(argv[3]);
    struct rlimit lim;
    lim.rlim_cur = lim.rlim_max = (rlim_t)strtoull(argv[5], NULL, 10) << 20;
    if (setrlimit(RLIMIT_AS, &lim) != 0) {
        perror("setrlimit");
        return 2;
    }
    p2p_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.memory_budget_mb = strtoull(argv[4], NULL, 10);
    p2p_model *m = NULL;
    p2p_status s = p2p_model_open(argv[1], &o, &m);
    if (s != P2P_OK) {
        fprintf(stderr, "open: %s: %s\n", p2p_status_name(s), p2p_last_error());
        return 1;
    }
    s = translate(m, w, h);
    printf("large %s %s\n", p2p_status_name(s), s == P2P_OK ? "" : p2p_last_error());
    s = translate(m, 256, 256);
    printf("small %s %s\n", p2p_status_name(s), s == P2P_OK ? "" : p2p_last_error());
    p2p_model_free(m);
    return 0;
}
