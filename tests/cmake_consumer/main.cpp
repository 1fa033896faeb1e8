// app [MODEL [OUT_DIR]]: an installed libpix2pix from C++, through a small RAII wrapper.
//
// Translates four different images serially, then the same four from four std::threads at once
// on one shared model; every threaded result must equal its serial one. Writes each input and
// result to OUT_DIR/in_<i>.raw and out_<i>.raw (packed RGB) for the test to check against the
// library's Rust API. MODEL omitted or empty: the shipped default model.
#include <pix2pix.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace pix2pix {

class Error : public std::runtime_error {
  public:
    Error(const char *what, p2p_status s)
        : std::runtime_error(std::string(what) + ": " + p2p_status_name(s) + ": " + p2p_last_error()) {}
};

struct Image {
    uint32_t width = 0, height = 0, channels = 0;
    std::vector<uint8_t> pixels;  // packed rows
};

// Owns one p2p_model: movable, not copyable; freed once, by whoever holds it last.
class Model {
  public:
    explicit Model(const std::string &path) {
        p2p_options opts{};
        opts.struct_size = sizeof opts;
        p2p_model *m = nullptr;
        p2p_status s = p2p_model_open(path.empty() ? nullptr : path.c_str(), &opts, &m);
        if (s != P2P_OK) throw Error("p2p_model_open", s);
        model_.reset(m);
    }

    // Safe from several threads at once (the header's threading rule).
    Image translate(const Image &in) const {
        p2p_image src{in.width, in.height, in.width * in.channels, in.channels, const_cast<uint8_t *>(in.pixels.data())};
        p2p_image raw{};
        p2p_status s = p2p_translate(model_.get(), &src, &raw);
        if (s != P2P_OK) throw Error("p2p_translate", s);
        // The library's buffer is released when this scope ends, whatever happens below.
        std::unique_ptr<p2p_image, void (*)(p2p_image *)> out(&raw, p2p_image_free);
        Image img{raw.width, raw.height, raw.channels, {}};
        img.pixels.reserve(size_t(raw.width) * raw.height * raw.channels);
        for (uint32_t y = 0; y < raw.height; y++) {
            const uint8_t *row = raw.data + size_t(y) * raw.stride;
            img.pixels.insert(img.pixels.end(), row, row + size_t(raw.width) * raw.channels);
        }
        return img;
    }

  private:
    struct Free {
        void operator()(p2p_model *m) const noexcept { p2p_model_free(m); }
    };
    std::unique_ptr<p2p_model, Free> model_;
};

}  // namespace pix2pix

namespace {

pix2pix::Image test_image(uint32_t w, uint32_t h, uint32_t seed) {
    pix2pix::Image img{w, h, 3, std::vector<uint8_t>(size_t(w) * h * 3)};
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++)
            for (uint32_t c = 0; c < 3; c++)
                img.pixels[(size_t(y) * w + x) * 3 + c] = uint8_t((x * 255 / w + y * (40 + 50 * seed) / h + c * 70 + seed * 31) % 256);
    return img;
}

void write(const std::string &path, const pix2pix::Image &img) {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char *>(img.pixels.data()), std::streamsize(img.pixels.size()));
    if (!f) throw std::runtime_error("cannot write " + path);
}

}  // namespace

int main(int argc, char **argv) {
    try {
        const std::string model_path = argc > 1 ? argv[1] : "";
        const std::string out_dir = argc > 2 ? argv[2] : ".";
        constexpr unsigned kThreads = 4;

        pix2pix::Model model(model_path);
        pix2pix::Model shared = std::move(model);  // moved-from `model` frees nothing

        std::vector<pix2pix::Image> inputs, serial;
        for (unsigned i = 0; i < kThreads; i++) {
            inputs.push_back(test_image(64 + 32 * i, 48 + 16 * i, i));
            serial.push_back(shared.translate(inputs[i]));
        }

        std::vector<pix2pix::Image> threaded(kThreads);
        std::vector<std::string> errors(kThreads);
        std::vector<std::thread> pool;
        for (unsigned i = 0; i < kThreads; i++)
            pool.emplace_back([&, i] {
                try {
                    threaded[i] = shared.translate(inputs[i]);
                } catch (const std::exception &e) {
                    errors[i] = e.what();
                }
            });
        for (auto &t : pool) t.join();

        for (unsigned i = 0; i < kThreads; i++) {
            if (!errors[i].empty()) throw std::runtime_error("thread " + std::to_string(i) + ": " + errors[i]);
            const auto &a = serial[i], &b = threaded[i];
            if (a.width != inputs[i].width || a.height != inputs[i].height || a.channels != 3)
                throw std::runtime_error("image " + std::to_string(i) + ": output is not the input's size");
            if (a.pixels != b.pixels)
                throw std::runtime_error("image " + std::to_string(i) + ": threaded result differs from the serial one");
            write(out_dir + "/in_" + std::to_string(i) + ".raw", inputs[i]);
            write(out_dir + "/out_" + std::to_string(i) + ".raw", a);
            std::cout << "image " << i << ": " << a.width << "x" << a.height << "\n";
        }
        std::cout << kThreads << " threads: every result equals the serial one\n";
        return 0;
    } catch (const std::exception &e) {
        std::cerr << "app: " << e.what() << "\n";
        return 1;
    }
}
