/* translate_batch MODEL IN.raw WIDTH HEIGHT N SHARED SINGLE.raw BATCH.raw
 *
 * IN.raw holds N packed RGB8 images of WIDTH x HEIGHT, one after another. Opens MODEL (with
 * P2P_OPT_SHARED_BATCH_STATS when SHARED is 1), translates each image alone with
 * p2p_translate_ex into SINGLE.raw, then all of them with one p2p_translate_batch into BATCH.raw
 * (even elements into library-allocated images, odd ones into caller buffers with padded rows,
 * whose padding must stay untouched). Then checks that a batch whose in[2] has another size
 * fails with P2P_ERR_INVALID_ARGUMENT naming in[2] and leaves every out[i] as it was. Prints
 * "maxdiff D": the largest difference between the batch and the single translations. */
#include "pix2pix.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FILL 0xCD
#define MAX_N 16

#define CHECK(call)                                                                              \
    do {                                                                                         \
        p2p_status s_ = (call);                                                                  \
        if (s_ != P2P_OK) {                                                                      \
            fprintf(stderr, "%s:%d: %s: %s: %s\n", __FILE__, __LINE__, #call, p2p_status_name(s_), \
                    p2p_last_error());                                                           \
            return 1;                                                                            \
        }                                                                                        \
    } while (0)

#define EXPECT(cond)                                                                             \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "%s:%d: expectation failed: %s\n", __FILE__, __LINE__, #cond);       \
            return 1;                                                                            \
        }                                                                                        \
    } while (0)

static int write_file(const char *path, const unsigned char *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    int ok = fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: %s MODEL IN.raw WIDTH HEIGHT N SHARED SINGLE.raw BATCH.raw\n",
                argv[0]);
        return 2;
    }
    uint32_t w = (uint32_t)atoi(argv[3]), h = (uint32_t)atoi(argv[4]);
    size_t n = (size_t)atoi(argv[5]);
    int shared = atoi(argv[6]);
    EXPECT(n >= 3 && n <= MAX_N);
    size_t row = (size_t)w * 3, size = row * h;

    unsigned char *in_px = malloc(n * size);
    EXPECT(in_px != NULL);
    FILE *f = fopen(argv[2], "rb");
    EXPECT(f != NULL);
    EXPECT(fread(in_px, 1, n * size, f) == n * size);
    fclose(f);

    p2p_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.flags = shared ? P2P_OPT_SHARED_BATCH_STATS : 0;
    p2p_model *m = NULL;
    CHECK(p2p_model_open(argv[1], &o, &m));

    p2p_image_ex in[MAX_N], out[MAX_N];
    memset(in, 0, sizeof in);
    memset(out, 0, sizeof out);
    for (size_t i = 0; i < n; i++) {
        in[i].struct_size = sizeof in[i];
        in[i].format = P2P_FORMAT_U8;
        in[i].width = w;
        in[i].height = h;
        in[i].channels = 3;
        in[i].stride = row;
        in[i].data = in_px + i * size;
        out[i].struct_size = sizeof out[i];
    }

    /* Each image alone. */
    unsigned char *single = malloc(n * size);
    EXPECT(single != NULL);
    for (size_t i = 0; i < n; i++) {
        p2p_image_ex one = out[i];
        CHECK(p2p_translate_ex(m, &in[i], &one));
        EXPECT(one.width == w && one.height == h && one.channels == 3 && one.stride == row);
        memcpy(single + i * size, one.data, size);
        p2p_image_ex_free(&one);
    }

    /* All at once: odd elements into caller buffers with 7 bytes of padding per row. */
    size_t padded_stride = row + 7;
    unsigned char *caller[MAX_N] = {0};
    for (size_t i = 1; i < n; i += 2) {
        caller[i] = malloc(padded_stride * h);
        EXPECT(caller[i] != NULL);
        memset(caller[i], FILL, padded_stride * h);
        out[i].data = caller[i];
        out[i].stride = padded_stride;
        out[i].height = h;
    }
    CHECK(p2p_translate_batch(m, n, in, out));
    unsigned char *batch = malloc(n * size);
    EXPECT(batch != NULL);
    int maxdiff = 0;
    for (size_t i = 0; i < n; i++) {
        EXPECT(out[i].width == w && out[i].height == h && out[i].channels == 3);
        EXPECT(out[i].format == P2P_FORMAT_U8);
        const unsigned char *px = out[i].data;
        for (uint32_t y = 0; y < h; y++) {
            memcpy(batch + i * size + y * row, px + y * out[i].stride, row);
            if (caller[i])
                for (size_t b = row; b < padded_stride; b++)
                    EXPECT(px[y * out[i].stride + b] == FILL);
        }
        if (caller[i]) {
            EXPECT(out[i].data == caller[i] && out[i].stride == padded_stride);
        } else {
            EXPECT(out[i].stride == row);
            p2p_image_ex_free(&out[i]);
        }
    }
    for (size_t k = 0; k < n * size; k++) {
        int d = abs((int)batch[k] - (int)single[k]);
        if (d > maxdiff) maxdiff = d;
    }
    printf("maxdiff %d\n", maxdiff);
    EXPECT(write_file(argv[7], single, n * size));
    EXPECT(write_file(argv[8], batch, n * size));

    /* A batch of mixed sizes: refused before anything is written. */
    for (size_t i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        out[i].struct_size = sizeof out[i];
    }
    in[2].width = w - 1;
    p2p_status s = p2p_translate_batch(m, n, in, out);
    EXPECT(s == P2P_ERR_INVALID_ARGUMENT);
    EXPECT(strstr(p2p_last_error(), "in[2]") != NULL);
    printf("mixed sizes: %s\n", p2p_last_error());
    for (size_t i = 0; i < n; i++) EXPECT(out[i].data == NULL && out[i].width == 0);
    in[2].width = w;

    /* n = 0 does nothing; NULL arrays with n > 0 are refused. */
    CHECK(p2p_translate_batch(m, 0, NULL, NULL));
    EXPECT(p2p_translate_batch(m, n, NULL, out) == P2P_ERR_NULL);

    for (size_t i = 0; i < n; i++) free(caller[i]);
    free(batch);
    free(single);
    free(in_px);
    p2p_model_free(m);
    return 0;
}
