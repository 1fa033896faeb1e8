/* abuse MODEL MISSING TRUNCATED TEXT TRUNCATED_PTH EMPTY DIR
 *
 * Misuse of the C API: every call must return the expected status with a message, never crash,
 * and never write outside the buffers it was given (guard bytes all around). Also runs the happy
 * path once (open, info, translate 128x128 in three ways) so that valgrind sees it. Exits 0 when
 * every expectation holds; prints one line per case. */
#include "pix2pix.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GUARD 64
#define FILL 0xCD
#define W 128
#define H 128

static int failures = 0;

#define EXPECT(cond)                                                                             \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                      \
            failures++;                                                                          \
        }                                                                                        \
    } while (0)

/* Checks a call's status; failures must come with a message (containing `needle` if given). */
static void expect_status(int line, const char *what, p2p_status got, p2p_status want, const char *needle) {
    const char *msg = p2p_last_error();
    printf("%-58s -> %-26s %s\n", what, p2p_status_name(got), got == P2P_OK ? "" : msg);
    if (got != want) {
        fprintf(stderr, "FAIL line %d: %s: got %s (%d), want %s (%d): %s\n", line, what, p2p_status_name(got), got,
                p2p_status_name(want), want, msg);
        failures++;
    } else if (want != P2P_OK && (msg == NULL || msg[0] == '\0')) {
        fprintf(stderr, "FAIL line %d: %s: no error message\n", line, what);
        failures++;
    } else if (want != P2P_OK && needle && !strstr(msg, needle)) {
        fprintf(stderr, "FAIL line %d: %s: message \"%s\" does not mention \"%s\"\n", line, what, msg, needle);
        failures++;
    }
}
#define STATUS(call, want, needle) expect_status(__LINE__, #call, (call), (want), (needle))

/* Any failure (the exact code depends on parts still being written), with a message. */
static void expect_failure(int line, const char *what, p2p_status got) {
    const char *msg = p2p_last_error();
    printf("%-58s -> %-26s %s\n", what, p2p_status_name(got), msg);
    if (got == P2P_OK || msg == NULL || msg[0] == '\0') {
        fprintf(stderr, "FAIL line %d: %s: expected a failure with a message, got %s\n", line, what, p2p_status_name(got));
        failures++;
    }
}
#define FAILS(call) expect_failure(__LINE__, #call, (call))

/* A buffer of n bytes with GUARD bytes either side, all FILL. Returns the base; use base+GUARD. */
static unsigned char *guarded(size_t n) {
    unsigned char *base = malloc(n + 2 * GUARD);
    if (!base) {
        fprintf(stderr, "out of memory\n");
        exit(3);
    }
    memset(base, FILL, n + 2 * GUARD);
    return base;
}

static int all(const unsigned char *p, size_t n, unsigned char v) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != v) return 0;
    return 1;
}

static int guards_ok(const unsigned char *base, size_t n) {
    return all(base, GUARD, FILL) && all(base + GUARD + n, GUARD, FILL);
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s MODEL MISSING TRUNCATED TEXT TRUNCATED_PTH EMPTY DIR\n", argv[0]);
        return 2;
    }
    const char *model_path = argv[1];
    static int sentinel;
    p2p_model *m = NULL, *bad = NULL;

    /* ---- opening ---- */
    bad = (p2p_model *)&sentinel;
    STATUS(p2p_model_open(model_path, NULL, NULL), P2P_ERR_NULL, "out");
    STATUS(p2p_model_open(argv[2], NULL, &bad), P2P_ERR_IO, argv[2]);
    EXPECT(bad == NULL);
    STATUS(p2p_model_open(argv[3], NULL, &bad), P2P_ERR_CHECKPOINT, argv[3]);
    STATUS(p2p_model_open(argv[4], NULL, &bad), P2P_ERR_CHECKPOINT, argv[4]);
    STATUS(p2p_model_open(argv[5], NULL, &bad), P2P_ERR_CHECKPOINT, argv[5]);
    STATUS(p2p_model_open(argv[6], NULL, &bad), P2P_ERR_CHECKPOINT, argv[6]);
    STATUS(p2p_model_open(argv[7], NULL, &bad), P2P_ERR_IO, argv[7]);
    EXPECT(bad == NULL);
    {
        /* The shipped default model: absent in this build (UNSUPPORTED), or it opens. */
        p2p_status s = p2p_model_open(NULL, NULL, &bad);
        printf("%-58s -> %-26s %s\n", "p2p_model_open(NULL, NULL, &bad)", p2p_status_name(s), s ? p2p_last_error() : "");
        EXPECT(s == P2P_OK || s == P2P_ERR_UNSUPPORTED);
        p2p_model_free(bad);
        bad = NULL;
    }

    p2p_options o;
    memset(&o, 0, sizeof o);
    STATUS(p2p_model_open(model_path, &o, &bad), P2P_ERR_INVALID_ARGUMENT, "struct_size");
    o.struct_size = 4;
    STATUS(p2p_model_open(model_path, &o, &bad), P2P_ERR_INVALID_ARGUMENT, "struct_size");
    o.struct_size = sizeof o;
    o.size_policy = 42;
    STATUS(p2p_model_open(model_path, &o, &bad), P2P_ERR_INVALID_ARGUMENT, "size_policy");
    o.size_policy = 0;
    o.norm_stats = 9;
    STATUS(p2p_model_open(model_path, &o, &bad), P2P_ERR_INVALID_ARGUMENT, "norm_stats");
    o.norm_stats = 0;
    o.threads = 100000;
    STATUS(p2p_model_open(model_path, &o, &bad), P2P_ERR_INVALID_ARGUMENT, "threads");
    o.threads = 0;
    o.flags = 0x80;
    STATUS(p2p_model_open(model_path, &o, &bad), P2P_ERR_INVALID_ARGUMENT, "flags");
    EXPECT(bad == NULL);
    /* An older caller whose struct ends before `flags`: what lies beyond is not read. */
    o.struct_size = offsetof(p2p_options, flags);
    STATUS(p2p_model_open(model_path, &o, &bad), P2P_OK, NULL);
    EXPECT(bad != NULL);
    p2p_model_free(bad);
    bad = NULL;

    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.size_policy = P2P_SIZE_POLICY_PAD;
    o.norm_stats = P2P_NORM_STATS_BATCH;
    STATUS(p2p_model_open(model_path, &o, &m), P2P_OK, NULL);
    if (!m) {
        fprintf(stderr, "cannot continue without a model\n");
        return 1;
    }

    /* ---- info ---- */
    p2p_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    STATUS(p2p_model_get_info(NULL, &info), P2P_ERR_NULL, "model");
    STATUS(p2p_model_get_info(m, NULL), P2P_ERR_NULL, "out");
    info.struct_size = 0;
    STATUS(p2p_model_get_info(m, &info), P2P_ERR_INVALID_ARGUMENT, "struct_size");
    {
        /* An older caller that knows only net_g: nothing past it is written. */
        unsigned char raw[sizeof(p2p_model_info)];
        memset(raw, 0x5A, sizeof raw);
        size_t known = offsetof(p2p_model_info, net_g) + sizeof(const char *);
        p2p_model_info *partial = (p2p_model_info *)(void *)raw;
        partial->struct_size = known;
        STATUS(p2p_model_get_info(m, partial), P2P_OK, NULL);
        EXPECT(partial->net_g != NULL && strcmp(partial->net_g, "unet_128") == 0);
        EXPECT(all(raw + known, sizeof raw - known, 0x5A));
    }
    info.struct_size = sizeof info;
    STATUS(p2p_model_get_info(m, &info), P2P_OK, NULL);
    EXPECT(strcmp(info.net_g, "unet_128") == 0 && strcmp(info.norm, "instance") == 0 && info.ngf == 8);
    EXPECT(info.stride == 128 && info.native_size == 128 && info.in_channels == 3 && info.out_channels == 3);
    EXPECT(info.parameters > 0 && info.size_policy == P2P_SIZE_POLICY_PAD && info.norm_stats == P2P_NORM_STATS_BATCH);

    /* ---- translate: arguments ---- */
    unsigned char *pixels = malloc((size_t)W * H * 4);
    EXPECT(pixels != NULL);
    for (size_t i = 0; i < (size_t)W * H * 4; i++) pixels[i] = (unsigned char)((i * 2654435761u) >> 13);
    p2p_image in = {W, H, W * 3, 3, pixels};
    p2p_image out = {0, 0, 0, 0, NULL};

    STATUS(p2p_translate(NULL, &in, &out), P2P_ERR_NULL, "model");
    STATUS(p2p_translate(m, NULL, &out), P2P_ERR_NULL, "in");
    STATUS(p2p_translate(m, &in, NULL), P2P_ERR_NULL, "out");
    in.data = NULL;
    STATUS(p2p_translate(m, &in, &out), P2P_ERR_NULL, "in->data");
    in.data = pixels;
    in.width = 0;
    STATUS(p2p_translate(m, &in, &out), P2P_ERR_INVALID_ARGUMENT, "size");
    in.width = W;
    in.height = 0;
    STATUS(p2p_translate(m, &in, &out), P2P_ERR_INVALID_ARGUMENT, "size");
    in.height = H;
    in.stride = W * 3 - 1;
    STATUS(p2p_translate(m, &in, &out), P2P_ERR_INVALID_ARGUMENT, "stride");
    in.stride = W * 3;
    in.channels = 0;
    STATUS(p2p_translate(m, &in, &out), P2P_ERR_INVALID_ARGUMENT, "channels");
    in.channels = 5;
    STATUS(p2p_translate(m, &in, &out), P2P_ERR_INVALID_ARGUMENT, "channels");
    in.channels = 3;
    {
        /* p2p_translate_ex: struct_size, formats and sample-sized rows are checked first. */
        p2p_image_ex ex = {sizeof(p2p_image_ex), P2P_FORMAT_U16, W, H, 3, (size_t)W * 3, pixels};
        p2p_image_ex exo;
        memset(&exo, 0, sizeof exo);
        exo.struct_size = sizeof exo;
        STATUS(p2p_translate_ex(m, NULL, &exo), P2P_ERR_NULL, "in");
        STATUS(p2p_translate_ex(m, &ex, NULL), P2P_ERR_NULL, "out");
        STATUS(p2p_translate_ex(m, &ex, &exo), P2P_ERR_INVALID_ARGUMENT, "stride");
        ex.format = 7;
        STATUS(p2p_translate_ex(m, &ex, &exo), P2P_ERR_INVALID_ARGUMENT, "format");
        ex.format = P2P_FORMAT_SAME;
        STATUS(p2p_translate_ex(m, &ex, &exo), P2P_ERR_INVALID_ARGUMENT, "format");
        ex.format = P2P_FORMAT_U8;
        exo.format = 9;
        STATUS(p2p_translate_ex(m, &ex, &exo), P2P_ERR_INVALID_ARGUMENT, "format");
        exo.format = P2P_FORMAT_SAME;
        ex.struct_size = sizeof(size_t);
        STATUS(p2p_translate_ex(m, &ex, &exo), P2P_ERR_INVALID_ARGUMENT, "struct_size");
        ex.struct_size = sizeof ex;
        EXPECT(exo.data == NULL);
        p2p_image_ex_free(NULL);
    }
    {
        /* Absurd sizes, pointing at a small buffer: refused before anything is read or allocated. */
        p2p_image huge = {100000, 100000, 300000, 3, pixels};
        STATUS(p2p_translate(m, &huge, &out), P2P_ERR_INVALID_ARGUMENT, "limit");
        p2p_image wide = {0xFFFFFFFFu, 1, 0xFFFFFFFFu, 4, pixels};
        STATUS(p2p_translate(m, &wide, &out), P2P_ERR_INVALID_ARGUMENT, "limit");
        p2p_image tall = {1, 1u << 27, 0xFFFFFFFFu, 1, pixels};
        FAILS(p2p_translate(m, &tall, &out));
        p2p_image huge_rgba = {100000, 100000, 400000, 4, pixels};
        unsigned char *base = guarded(16);
        p2p_image small = {0, 1, 16, 0, base + GUARD};
        STATUS(p2p_translate(m, &huge_rgba, &small), P2P_ERR_INVALID_ARGUMENT, "limit");
        EXPECT(all(base, 16 + 2 * GUARD, FILL));
        free(base);
    }
    EXPECT(out.data == NULL && out.width == 0 && out.height == 0);

    /* ---- translate: caller buffers that are too small ---- */
    {
        size_t n = (size_t)W * 3 * H;
        unsigned char *base = guarded(n);
        p2p_image o1 = {0, H, W * 3 - 1, 0, base + GUARD};
        STATUS(p2p_translate(m, &in, &o1), P2P_ERR_BUFFER_TOO_SMALL, "stride");
        EXPECT(o1.width == 0 && o1.height == H && o1.stride == W * 3 - 1 && o1.data == base + GUARD);
        p2p_image o2 = {0, H - 1, W * 3, 0, base + GUARD};
        STATUS(p2p_translate(m, &in, &o2), P2P_ERR_BUFFER_TOO_SMALL, "height");
        /* RGBA in: the output has 4 channels and no longer fits W*3 rows. */
        p2p_image rgba = {W, H, W * 4, 4, pixels};
        p2p_image o3 = {0, H, W * 3, 0, base + GUARD};
        STATUS(p2p_translate(m, &rgba, &o3), P2P_ERR_BUFFER_TOO_SMALL, "4 channels");
        EXPECT(all(base, n + 2 * GUARD, FILL));

        /* Exactly large enough. */
        p2p_image o4 = {0, H, W * 3, 0, base + GUARD};
        STATUS(p2p_translate(m, &in, &o4), P2P_OK, NULL);
        EXPECT(o4.width == W && o4.height == H && o4.channels == 3 && o4.stride == W * 3);
        EXPECT(guards_ok(base, n));

        /* Library-allocated, for comparison. */
        STATUS(p2p_translate(m, &in, &out), P2P_OK, NULL);
        EXPECT(out.data != NULL && out.stride == W * 3 && memcmp(out.data, base + GUARD, n) == 0);

        /* In place: the output overwrites the input buffer. */
        unsigned char *inplace = guarded(n);
        memcpy(inplace + GUARD, pixels, n);
        p2p_image io = {W, H, W * 3, 3, inplace + GUARD};
        STATUS(p2p_translate(m, &io, &io), P2P_OK, NULL);
        EXPECT(io.channels == 3 && memcmp(inplace + GUARD, out.data, n) == 0 && guards_ok(inplace, n));
        free(inplace);

        p2p_image_free(&out);
        EXPECT(out.data == NULL);
        free(base);
    }

    /* ---- translate: RGBA keeps its alpha, gray becomes RGB ---- */
    {
        p2p_image rgba = {W, H, W * 4, 4, pixels};
        STATUS(p2p_translate(m, &rgba, &out), P2P_OK, NULL);
        EXPECT(out.channels == 4 && out.stride == W * 4);
        int alpha_ok = 1;
        for (size_t i = 0; i < (size_t)W * H; i++) alpha_ok &= out.data[i * 4 + 3] == pixels[i * 4 + 3];
        EXPECT(alpha_ok);
        p2p_image_free(&out);
        p2p_image gray = {W - 3, H - 5, W, 1, pixels};
        STATUS(p2p_translate(m, &gray, &out), P2P_OK, NULL);
        EXPECT(out.channels == 3 && out.width == W - 3 && out.height == H - 5);
        p2p_image_free(&out);
    }

    /* ---- training and evaluation arguments ---- */
    STATUS(p2p_train(NULL, NULL, NULL), P2P_ERR_NULL, "config_toml");
    STATUS(p2p_train("\xff\xfe", NULL, NULL), P2P_ERR_INVALID_ARGUMENT, "UTF-8");
    STATUS(p2p_train_ex("", 0x10, NULL, NULL), P2P_ERR_INVALID_ARGUMENT, "flags");
    FAILS(p2p_train("this is [not toml", NULL, NULL));
    p2p_metrics metrics;
    STATUS(p2p_evaluate(NULL, "data", 0, 0, NULL, &metrics), P2P_ERR_NULL, "model");
    STATUS(p2p_evaluate(m, NULL, 0, 0, NULL, &metrics), P2P_ERR_NULL, "data_dir");
    STATUS(p2p_evaluate(m, "data", 0, 0, NULL, NULL), P2P_ERR_NULL, "out");
    STATUS(p2p_evaluate(m, "data", 7, 0, NULL, &metrics), P2P_ERR_INVALID_ARGUMENT, "direction");
    FAILS(p2p_evaluate(m, argv[2], P2P_DIRECTION_B_TO_A, 0, NULL, &metrics));

    /* ---- odds and ends ---- */
    EXPECT(strcmp(p2p_status_name(12345), "unknown") == 0);
    EXPECT(strcmp(p2p_status_name(P2P_ERR_BUFFER_TOO_SMALL), "P2P_ERR_BUFFER_TOO_SMALL") == 0);
    EXPECT(p2p_last_error() != NULL);
    p2p_image zero = {0, 0, 0, 0, NULL};
    p2p_image_free(&zero);
    p2p_image_free(NULL);
    p2p_model_free(NULL);

    p2p_model_free(m);
    free(pixels);
    if (failures) {
        fprintf(stderr, "%d expectation(s) failed\n", failures);
        return 1;
    }
    printf("all abuse cases behaved\n");
    return 0;
}
