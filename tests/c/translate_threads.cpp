// translate_threads MODEL IN.raw WIDTH HEIGHT CHANNELS OUT.raw [THREADS [ROUNDS]]
//
// The C API from C++: one model shared by THREADS threads that each translate the same image
// ROUNDS times at once; every result must equal the single-threaded one, which is written to
// OUT.raw (packed). Also checks that each thread's p2p_last_error is its own.
#include "pix2pix.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

struct ModelFree {
    void operator()(p2p_model *m) const noexcept { p2p_model_free(m); }
};
using Model = std::unique_ptr<p2p_model, ModelFree>;

void check(p2p_status s, const char *what) {
    if (s != P2P_OK) throw std::runtime_error(std::string(what) + ": " + p2p_status_name(s) + ": " + p2p_last_error());
}

Model open(const char *path) {
    p2p_options opts{};
    opts.struct_size = sizeof opts;
    p2p_model *m = nullptr;
    check(p2p_model_open(path, &opts, &m), "p2p_model_open");
    return Model(m);
}

std::vector<uint8_t> translate(const p2p_model *m, const std::vector<uint8_t> &px, uint32_t w, uint32_t h, uint32_t c) {
    p2p_image in{w, h, w * c, c, const_cast<uint8_t *>(px.data())};
    p2p_image out{};
    check(p2p_translate(m, &in, &out), "p2p_translate");
    std::vector<uint8_t> v(out.data, out.data + size_t(out.stride) * out.height);
    p2p_image_free(&out);
    return v;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 7) {
        std::cerr << "usage: " << argv[0] << " MODEL IN.raw WIDTH HEIGHT CHANNELS OUT.raw [THREADS [ROUNDS]]\n";
        return 2;
    }
    try {
        uint32_t w = std::stoul(argv[3]), h = std::stoul(argv[4]), c = std::stoul(argv[5]);
        unsigned threads = argc > 7 ? std::stoul(argv[7]) : 4, rounds = argc > 8 ? std::stoul(argv[8]) : 2;
        std::ifstream f(argv[2], std::ios::binary);
        std::vector<uint8_t> px((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        if (px.size() != size_t(w) * h * c) throw std::runtime_error("input size does not match WIDTH x HEIGHT x CHANNELS");

        Model model = open(argv[1]);
        const std::vector<uint8_t> single = translate(model.get(), px, w, h, c);

        std::vector<std::vector<uint8_t>> results(threads * rounds);
        std::vector<std::string> errors(threads);
        std::vector<std::thread> pool;
        for (unsigned t = 0; t < threads; t++) {
            pool.emplace_back([&, t] {
                try {
                    // A failure on this thread leaves its own message, whatever the others do.
                    p2p_image bad{0, h, w * c, c, const_cast<uint8_t *>(px.data())};
                    p2p_image out{};
                    if (p2p_translate(model.get(), &bad, &out) != P2P_ERR_INVALID_ARGUMENT ||
                        std::strstr(p2p_last_error(), "size") == nullptr)
                        throw std::runtime_error("zero width not refused on a worker thread");
                    for (unsigned r = 0; r < rounds; r++) results[t * rounds + r] = translate(model.get(), px, w, h, c);
                } catch (const std::exception &e) {
                    errors[t] = e.what();
                }
            });
        }
        for (auto &th : pool) th.join();

        int bad = 0;
        for (unsigned t = 0; t < threads; t++)
            if (!errors[t].empty()) {
                std::cerr << "thread " << t << ": " << errors[t] << "\n";
                bad++;
            }
        for (size_t i = 0; i < results.size(); i++)
            if (errors[i / rounds].empty() && results[i] != single) {
                std::cerr << "thread " << i / rounds << " round " << i % rounds << ": output differs from one thread's\n";
                bad++;
            }
        if (bad) return 1;

        std::ofstream o(argv[6], std::ios::binary);
        o.write(reinterpret_cast<const char *>(single.data()), std::streamsize(single.size()));
        std::cout << threads << " threads x " << rounds << " rounds: identical to one thread (" << single.size() << " bytes)\n";
        return 0;
    } catch (const std::exception &e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
}
