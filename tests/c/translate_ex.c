/* translate_ex MODEL IN.raw WIDTH HEIGHT CHANNELS IN_FORMAT OUT_FORMAT OUT.raw
 *
 * Translates a packed image of samples IN_FORMAT (1 = u8, 2 = u16, 3 = f32, native byte order)
 * with p2p_translate_ex twice: into a library-allocated image (OUT_FORMAT, 0 = the input's), and
 * into a caller buffer with padded rows. Checks both agree and the padding is untouched, prints
 * "out WIDTH HEIGHT CHANNELS FORMAT", and writes the packed result to OUT.raw. With IN_FORMAT 1
 * and OUT_FORMAT 1 it also checks that p2p_translate gives the same bytes. */
#include "pix2pix.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static size_t sample_bytes(uint32_t format) {
    return format == P2P_FORMAT_U8 ? 1 : format == P2P_FORMAT_U16 ? 2 : 4;
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: %s MODEL IN.raw WIDTH HEIGHT CHANNELS IN_FORMAT OUT_FORMAT OUT.raw\n",
                argv[0]);
        return 2;
    }
    uint32_t w = (uint32_t)atoi(argv[3]), h = (uint32_t)atoi(argv[4]), c = (uint32_t)atoi(argv[5]);
    uint32_t in_format = (uint32_t)atoi(argv[6]), out_format = (uint32_t)atoi(argv[7]);
    EXPECT(p2p_abi_version() == P2P_ABI_VERSION);
    p2p_model *m = NULL;
    CHECK(p2p_model_open(argv[1], NULL, &m));
    p2p_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    CHECK(p2p_model_get_info(m, &info));
    printf("model %u -> %u channels\n", info.in_channels, info.out_channels);

    size_t len = 0, sb = sample_bytes(in_format);
    unsigned char *packed = read_file(argv[2], &len);
    EXPECT(packed != NULL);
    EXPECT(len == (size_t)w * h * c * sb);

    p2p_image_ex in;
    memset(&in, 0, sizeof in);
    in.struct_size = sizeof in;
    in.format = in_format;
    in.width = w;
    in.height = h;
    in.channels = c;
    in.stride = (size_t)w * c * sb;
    in.data = packed;

    /* 1. The library allocates. */
    p2p_image_ex out;
    memset(&out, 0, sizeof out);
    out.struct_size = sizeof out;
    out.format = out_format;
    CHECK(p2p_translate_ex(m, &in, &out));
    uint32_t fmt = out_format == P2P_FORMAT_SAME ? in_format : out_format;
    size_t ob = sample_bytes(fmt), row = (size_t)out.width * out.channels * ob;
    EXPECT(out.data != NULL && out.width == w && out.height == h && out.format == fmt);
    EXPECT(out.stride == row);
    printf("out %u %u %u %u\n", out.width, out.height, out.channels, out.format);

    /* 2. A caller buffer with 3 sample-sized padding units per row. */
    size_t stride = row + 3 * ob;
    unsigned char *buf = malloc(stride * h);
    EXPECT(buf != NULL);
    memset(buf, FILL, stride * h);
    p2p_image_ex mine;
    memset(&mine, 0, sizeof mine);
    mine.struct_size = sizeof mine;
    mine.format = fmt;
    mine.height = h;
    mine.stride = stride;
    mine.data = buf;
    CHECK(p2p_translate_ex(m, &in, &mine));
    EXPECT(mine.stride == stride && mine.channels == out.channels && mine.data == buf);
    for (uint32_t y = 0; y < h; y++) {
        EXPECT(memcmp(buf + y * stride, (unsigned char *)out.data + y * row, row) == 0);
        for (size_t i = row; i < stride; i++) EXPECT(buf[y * stride + i] == FILL);
    }

    /* 3. A too-small caller buffer is refused without a write. */
    memset(buf, FILL, stride * h);
    mine.stride = row - 1;
    EXPECT(p2p_translate_ex(m, &in, &mine) == P2P_ERR_BUFFER_TOO_SMALL);
    for (size_t i = 0; i < stride * h; i++) EXPECT(buf[i] == FILL);

    /* 4. The 8-bit function is the same path. */
    if (in_format == P2P_FORMAT_U8 && fmt == P2P_FORMAT_U8) {
        p2p_image in8 = {w, h, w * c, c, packed};
        p2p_image out8 = {0, 0, 0, 0, NULL};
        CHECK(p2p_translate(m, &in8, &out8));
        EXPECT(out8.channels == out.channels && out8.stride == row);
        EXPECT(memcmp(out8.data, out.data, row * h) == 0);
        p2p_image_free(&out8);
    }

    FILE *f = fopen(argv[8], "wb");
    EXPECT(f != NULL);
    EXPECT(fwrite(out.data, 1, row * h, f) == row * h);
    fclose(f);
    p2p_image_ex_free(&out);
    EXPECT(out.data == NULL && out.width == 0);
    p2p_image_ex_free(&out); /* NULL data: ignored */
    free(buf);
    free(packed);
    p2p_model_free(m);
    return 0;
}
