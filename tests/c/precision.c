/* precision MODEL
 *
 * Opens MODEL ("-": the shipped default model) twice, with `p2p_options.precision` f32 and bf16, translates the same 256x256 and
 * 300x200 RGB images with both and prints, per size, `size WxH max_diff D mean_diff M` (output
 * levels), then `precision_f32 P` and `precision_bf16 P`: the `p2p_model_info.precision` each
 * model reports. Also checks a bad precision code is refused with its name. Exits 0 when every
 * call succeeded. */
#include "pix2pix.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static p2p_model *open_with(const char *path, uint32_t precision) {
    p2p_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.precision = precision;
    p2p_model *m = NULL;
    p2p_status s = p2p_model_open(strcmp(path, "-") == 0 ? NULL : path, &o, &m);
    if (s != P2P_OK) {
        fprintf(stderr, "open (precision %u): %s: %s\n", precision, p2p_status_name(s),
                p2p_last_error());
        exit(1);
    }
    return m;
}

static unsigned char *translate(p2p_model *m, unsigned char *px, uint32_t w, uint32_t h) {
    p2p_image in = {w, h, w * 3, 3, px};
    unsigned char *buf = malloc((size_t)w * h * 3);
    p2p_image out = {w, h, w * 3, 3, buf};
    p2p_status s = p2p_translate(m, &in, &out);
    if (s != P2P_OK) {
        fprintf(stderr, "translate: %s: %s\n", p2p_status_name(s), p2p_last_error());
        exit(1);
    }
    return buf;
}

static uint32_t precision_of(p2p_model *m) {
    p2p_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    if (p2p_model_get_info(m, &info) != P2P_OK) {
        fprintf(stderr, "info: %s\n", p2p_last_error());
        exit(1);
    }
    return info.precision;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL\n", argv[0]);
        return 2;
    }
    p2p_model *f32 = open_with(argv[1], P2P_PRECISION_F32);
    p2p_model *bf16 = open_with(argv[1], P2P_PRECISION_BF16);
    uint32_t sizes[2][2] = {{256, 256}, {300, 200}};
    for (int t = 0; t < 2; t++) {
        uint32_t w = sizes[t][0], h = sizes[t][1];
        size_t n = (size_t)w * h * 3;
        unsigned char *px = malloc(n);
        /* A smooth pattern with edges, as label maps and photos have. */
        for (uint32_t y = 0; y < h; y++)
            for (uint32_t x = 0; x < w; x++)
                for (int c = 0; c < 3; c++)
                    px[((size_t)y * w + x) * 3 + c] =
                        (unsigned char)(((x / 24 + y / 16) % 3) * 80 + (x + 2 * y + 40 * c) % 64);
        unsigned char *a = translate(f32, px, w, h);
        unsigned char *b = translate(bf16, px, w, h);
        int max = 0;
        double sum = 0;
        for (size_t i = 0; i < n; i++) {
            int d = abs((int)a[i] - (int)b[i]);
            if (d > max) max = d;
            sum += d;
        }
        printf("size %ux%u max_diff %d mean_diff %.4f\n", w, h, max, sum / (double)n);
        free(a);
        free(b);
        free(px);
    }
    printf("precision_f32 %u\nprecision_bf16 %u\n", precision_of(f32), precision_of(bf16));
    p2p_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.precision = 9;
    p2p_model *bad = NULL;
    p2p_status s = p2p_model_open(NULL, &o, &bad);
    printf("bad %s %s\n", p2p_status_name(s), p2p_last_error());
    p2p_model_free(f32);
    p2p_model_free(bf16);
    return bad == NULL ? 0 : 1;
}
