// vlm-data-bench: the data path's speed, side by side in one run.
//  1. Decoding: JPEG images/s of a plain libjpeg-turbo decode loop (full
//     size, what any loader must at least do), of our decode_image, and of the
//     loader's whole per-image path (DCT-scaled decode, resize, crop,
//     normalise), on one thread and on `--threads` threads.
//  2. Data wait: the bench config trained from WebDataset shards (converted
//     from Fashion-MNIST at start), with the default loader threads and with
//     batches built in the step: the share of step time spent waiting for data.
// Prints a table and, last, one JSON line.
//
//   build/bench/vlm-data-bench [--config configs/bench.pbtxt] [--images 256] [--side 256] [--out 64]
//                              [--threads 2] [--steps 10] [--warmup 2] [--rounds 3]

// clang-format off
#include <cstdio>
#include <jpeglib.h>
// clang-format on

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>

#include "comm/device.h"
#include "comm/process_groups.h"
#include "comm/threads.h"
#include "comm/topology.h"
#include "data/convert.h"
#include "data/image.h"
#include "data/preprocess.h"
#include "proto/config_loader.h"
#include "trainer/trainer.h"

#include "bench/bench_main.h"

namespace vlm {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Photo-like JPEGs: smooth gradients with texture, quality 90.
std::vector<std::string> make_jpegs(int count, int side) {
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) {
    Image image{side, side, 3, std::vector<uint8_t>(static_cast<size_t>(side) * side * 3)};
    for (int y = 0; y < side; ++y) {
      for (int x = 0; x < side; ++x) {
        for (int c = 0; c < 3; ++c) {
          image.pixels[(static_cast<size_t>(y) * side + x) * 3 + c] =
              static_cast<uint8_t>((x * (c + 1) + y * (3 - c) + i * 7 + ((x * 31 + y * 17 + i) % 23)) % 256);
        }
      }
    }
    out.push_back(encode_jpeg(image, 90));
  }
  return out;
}

// The baseline: libjpeg-turbo's own API, full-size RGB scanlines into one buffer.
void plain_decode(const std::string& jpeg, std::vector<uint8_t>& buffer) {
  jpeg_decompress_struct info;
  jpeg_error_mgr errors;
  info.err = jpeg_std_error(&errors);
  jpeg_create_decompress(&info);
  jpeg_mem_src(&info, reinterpret_cast<const unsigned char*>(jpeg.data()), jpeg.size());
  jpeg_read_header(&info, TRUE);
  info.out_color_space = JCS_RGB;
  jpeg_start_decompress(&info);
  buffer.resize(static_cast<size_t>(info.output_width) * info.output_height * 3);
  while (info.output_scanline < info.output_height) {
    JSAMPROW row = buffer.data() + static_cast<size_t>(info.output_scanline) * info.output_width * 3;
    jpeg_read_scanlines(&info, &row, 1);
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
}

// Images/s of `work(image index)` over `threads` threads for at least ~1 s.
double rate(int threads, int images, const std::function<void(int)>& work) {
  std::atomic<int64_t> done{0};
  const auto start = Clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      int64_t mine = 0;
      for (int round = 0; seconds_since(start) < 1.0 || round == 0; ++round) {
        for (int i = t; i < images; i += threads, ++mine) work(i);
      }
      done += mine;
    });
  }
  for (auto& p : pool) p.join();
  return static_cast<double>(done) / seconds_since(start);
}

struct WaitResult {
  int loader_threads = 0;
  double step_seconds = 0, data_seconds = 0;
  double share() const { return data_seconds / step_seconds; }
};

WaitResult train_on_shards(const TrainConfig& config, const Topology& topology, const ProcessGroups& groups, int warmup,
                           int steps) {
  EvalConfig no_eval;
  no_eval.set_enabled(false);
  const auto data = load_training_data(config.data(), no_eval);
  Trainer trainer(config, topology, groups, *data);
  for (int i = 0; i < warmup; ++i) trainer.train_step();
  WaitResult r;
  r.loader_threads = config.data().loader_threads();
  for (int i = 0; i < steps; ++i) {
    const StepStats s = trainer.train_step();
    r.step_seconds += s.seconds;
    r.data_seconds += s.data_seconds;
  }
  r.step_seconds /= steps;
  r.data_seconds /= steps;
  return r;
}

int bench(int argc, char** argv) {
  auto flags = parse_bench_flags(argc, argv, {{"config", std::string(VLM_SOURCE_DIR) + "/configs/bench.pbtxt"},
                                                {"images", "256"}, {"side", "256"}, {"out", "64"}, {"threads", "2"},
                                                {"steps", "10"}, {"warmup", "2"}, {"rounds", "3"}});
  const int images = std::stoi(flags["images"]), side = std::stoi(flags["side"]), out = std::stoi(flags["out"]);
  const int threads = std::stoi(flags["threads"]), steps = std::stoi(flags["steps"]), warmup = std::stoi(flags["warmup"]);
  const int rounds = std::stoi(flags["rounds"]);

  // 1. Decoding.
  const std::vector<std::string> jpegs = make_jpegs(images, side);
  thread_local std::vector<uint8_t> buffer;
  const auto plain = [&](int i) { plain_decode(jpegs[i], buffer); };
  const auto ours = [&](int i) { decode_image(jpegs[i]); };
  const ImageFormat format = photo_format(out, out, 3);
  const auto loader_path = [&](int i) {
    thread_local std::vector<float> pixels(static_cast<size_t>(3) * out * out);
    preprocess(decode_image(jpegs[i], {3, out, out}), format, {}, 0, true, pixels.data());
  };
  struct Row {
    const char* name;
    double one, many;
  };
  std::vector<Row> rows;
  for (const auto& [name, work] : {std::pair<const char*, std::function<void(int)>>{"libjpeg-turbo loop (full size)", plain},
                                  {"decode_image (full size)", ours},
                                  {"loader path (to 3x64x64)", loader_path}}) {
    rows.push_back({name, rate(1, images, work), rate(threads, images, work)});
  }
  std::printf("decoding %d JPEGs of %dx%d RGB (quality 90); loader output %dx%d\n", images, side, side, out, out);
  std::printf("  %-32s %14s %14s %10s %d thr %12s\n", "", "images/s 1 thr", "per thread", "images/s", threads,
              "1 thr vs plain");
  for (const Row& r : rows) {
    std::printf("  %-32s %14.0f %14.0f %16.0f %11.2fx\n", r.name, r.one, r.many / threads, r.many, r.one / rows[0].one);
  }

  // 2. Data wait while training on shards.
  const std::string shards = std::filesystem::temp_directory_path() / ("vlm-data-bench-" + std::to_string(::getpid()));
  TrainConfig base = load_config(flags["config"]);
  FashionSource source;
  source.dir = base.data().fashion_mnist_dir();
  source.task = base.data().task() == DataConfig::SINGLE ? "single" : base.data().task() == DataConfig::PAIR ? "pair" : "mixed";
  source.samples = 8192;
  source.seed = base.data().seed();
  ConvertOptions convert;
  convert.out_dir = shards;
  convert.prefix = "bench";
  convert.samples_per_shard = 2048;
  const std::string pattern = convert_fashion_mnist(source, convert);
  const Topology topology = make_topology(detect_process(), 1, 0);
  const torch::Device device = use_device(DeviceRequest::kCpu, topology.process);
  apply_thread_count(static_cast<int>(std::thread::hardware_concurrency()));
  ProcessGroups groups(topology, {BackendKind::kAuto, device});
  const int64_t width = source.task == "single" ? 28 : 56;
  // Alternating rounds (the machine is noisy); each setting's fastest round is reported.
  std::vector<WaitResult> waits(2);
  for (int round = 0; round < rounds; ++round) {
    for (int setting = 0; setting < 2; ++setting) {
      std::vector<std::string> sets{"loop.steps=" + std::to_string(warmup + steps), "data.train_shards=" + pattern,
                                    "data.image_height=28", "data.image_width=" + std::to_string(width),
                                    "data.image_channels=1"};
      if (setting == 1) sets.push_back("data.loader_threads=0");
      const WaitResult w = train_on_shards(load_config(flags["config"], sets), topology, groups, warmup, steps);
      if (round == 0 || w.step_seconds < waits[setting].step_seconds) waits[setting] = w;
    }
  }
  std::filesystem::remove_all(shards);
  std::printf("training %s from shards (%s), %d timed steps after %d warm-up, fastest of %d alternating rounds\n",
              flags["config"].c_str(), pattern.c_str(), steps, warmup, rounds);
  for (const WaitResult& w : waits) {
    std::printf("  loader_threads %d%s: step %.1f ms, data wait %.2f ms = %.2f%% of the step\n", w.loader_threads,
                w.loader_threads == base.data().loader_threads() ? " (default)" : "", w.step_seconds * 1e3,
                w.data_seconds * 1e3, 100 * w.share());
  }
  std::printf("{\"bench\":\"data\",\"threads\":%d,\"plain_images_per_second\":%.1f,\"decode_ratio\":%.3f,"
              "\"loader_path_ratio\":%.3f,\"loader_path_per_thread\":%.1f,\"wait_share_default\":%.4f,"
              "\"wait_share_inline\":%.4f}\n",
              threads, rows[0].one, rows[1].one / rows[0].one, rows[2].one / rows[0].one, rows[2].many / threads,
              waits[0].share(), waits[1].share());
  return 0;
}

}  // namespace
}  // namespace vlm

int main(int argc, char** argv) { return vlm::bench_main("vlm-data-bench", argc, argv, vlm::bench); }
