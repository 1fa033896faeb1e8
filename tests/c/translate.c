/* translate MODEL IN.raw WIDTH HEIGHT CHANNELS OUT.raw
 *
 * Translates a packed 8-bit image twice through the C API: once into a library-allocated image,
 * once into a caller buffer with padded rows and guard bytes around it. Checks both agree, the
 * padding and guards are untouched, then writes the packed result to OUT.raw. */
#include "pix2pix.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GUARD 64
#define FILL 0xCD

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

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static int all(const unsigned char *p, size_t n, unsigned char v) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != v) return 0;
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s MODEL IN.raw WIDTH HEIGHT CHANNELS OUT.raw\n", argv[0]);
        return 2;
    }
    uint32_t w = (uint32_t)atoi(argv[3]), h = (uint32_t)atoi(argv[4]), c = (uint32_t)atoi(argv[5]);
    EXPECT(p2p_abi_version() == P2P_ABI_VERSION);
    printf("libpix2pix %s, C API %u\n", p2p_version(), p2p_abi_version());

    p2p_options opts;
    memset(&opts, 0, sizeof opts);
    opts.struct_size = sizeof opts;
    p2p_model *m = NULL;
    CHECK(p2p_model_open(argv[1], &opts, &m));
    EXPECT(m != NULL);

    p2p_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    CHECK(p2p_model_get_info(m, &info));
    printf("%s ngf %u norm %s stride %u native %u params %llu from %s\n", info.net_g, info.ngf, info.norm,
           info.stride, info.native_size, (unsigned long long)info.parameters, info.source);

    size_t len = 0;
    unsigned char *packed = read_file(argv[2], &len);
    EXPECT(packed != NULL);
    EXPECT(len == (size_t)w * h * c);

    /* The input with padded rows (padding bytes must not matter). */
    uint32_t in_stride = w * c + 7;
    unsigned char *in_buf = malloc((size_t)in_stride * h);
    EXPECT(in_buf != NULL);
    memset(in_buf, 0xAB, (size_t)in_stride * h);
    for (uint32_t y = 0; y < h; y++) memcpy(in_buf + (size_t)y * in_stride, packed + (size_t)y * w * c, (size_t)w * c);
    p2p_image in = {w, h, in_stride, c, in_buf};

    /* 1. Library-allocated output. */
    p2p_image out1 = {0, 0, 0, 0, NULL};
    CHECK(p2p_translate(m, &in, &out1));
    uint32_t oc = c == 4 ? 4 : 3;
    EXPECT(out1.data != NULL && out1.width == w && out1.height == h && out1.channels == oc && out1.stride == w * oc);

    /* 2. Caller buffer: padded rows, one spare row, guard bytes before and after. */
    uint32_t ostride = w * oc + 5, rows = h + 1;
    size_t total = (size_t)ostride * rows;
    unsigned char *base = malloc(total + 2 * GUARD);
    EXPECT(base != NULL);
    memset(base, FILL, total + 2 * GUARD);
    p2p_image out2 = {0, rows, ostride, 0, base + GUARD};
    CHECK(p2p_translate(m, &in, &out2));
    EXPECT(out2.width == w && out2.height == h && out2.channels == oc && out2.stride == ostride && out2.data == base + GUARD);
    EXPECT(all(base, GUARD, FILL));
    EXPECT(all(base + GUARD + total, GUARD, FILL));
    for (uint32_t y = 0; y < h; y++) {
        const unsigned char *row = out2.data + (size_t)y * ostride;
        EXPECT(memcmp(row, out1.data + (size_t)y * out1.stride, (size_t)w * oc) == 0);
        EXPECT(all(row + (size_t)w * oc, ostride - w * oc, FILL));
    }
    EXPECT(all(out2.data + (size_t)h * ostride, ostride, FILL));
    if (c == 4)
        for (size_t i = 0; i < (size_t)w * h; i++) EXPECT(out1.data[i * 4 + 3] == packed[i * 4 + 3]);

    FILE *f = fopen(argv[6], "wb");
    EXPECT(f != NULL);
    EXPECT(fwrite(out1.data, 1, (size_t)out1.stride * out1.height, f) == (size_t)out1.stride * out1.height);
    fclose(f);

    p2p_image_free(&out1);
    EXPECT(out1.data == NULL && out1.width == 0);
    p2p_model_free(m);
    free(base);
    free(in_buf);
    free(packed);
    printf("ok\n");
    return 0;
}
