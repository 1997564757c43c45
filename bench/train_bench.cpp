// vlm-train-bench: single-process training throughput and MFU for a config
// (default configs/bench.pbtxt), plus shared vs unshared attention side by
// side. MFU = model FLOP/s (model/flops.h) / peak FP32 GEMM FLOP/s measured
// by this same run on this machine. Prints a table and one JSON line; exits
// non-zero when a loss is not finite.
//
//   build/bench/vlm-train-bench [--config configs/bench.pbtxt] [--steps 20] [--warmup 3]

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <thread>

#include "comm/process_groups.h"
#include "comm/threads.h"
#include "comm/topology.h"
#include "model/flops.h"
#include "model/parameters.h"
#include "proto/config_loader.h"
#include "trainer/trainer.h"

#include "bench/bench_main.h"

namespace vlm {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Best FP32 GEMM rate over a few square sizes: the machine's practical peak.
double peak_gemm_flops() {
  double best = 0;
  for (int64_t n : {512, 1024, 2048}) {
    torch::Tensor a = torch::randn({n, n}), b = torch::randn({n, n}), c = torch::empty({n, n});
    for (int i = 0; i < 2; ++i) torch::mm_out(c, a, b);  // warm-up
    const int iterations = n <= 512 ? 40 : n <= 1024 ? 10 : 3;
    const auto start = Clock::now();
    for (int i = 0; i < iterations; ++i) torch::mm_out(c, a, b);
    best = std::max(best, 2.0 * n * n * n * iterations / seconds_since(start));
  }
  return best;
}

struct RunResult {
  int64_t parameters = 0;
  int64_t image_kv_bytes = 0;  // per image
  double step_seconds = 0;     // mean over timed steps
  double samples_per_second = 0;
  double train_flops_per_sample = 0;
  bool finite = true;
};

RunResult run(const TrainConfig& config, const Topology& topology, const ProcessGroups& groups,
              const TrainingData& data, int warmup, int steps) {
  Trainer trainer(config, topology, groups, data);
  RunResult r;
  r.parameters = unique_parameter_count(*trainer.stage());
  r.train_flops_per_sample = flops_per_sample(trainer.stage()->spec()).train();
  {
    torch::NoGradGuard no_grad;
    VlmModel model = trainer.whole_model();
    const auto& s = model->spec();
    r.image_kv_bytes = image_kv_bytes(model->start_decoding(torch::zeros({1, 1, s.image_height, s.image_width})).image_kv);
  }
  for (int i = 0; i < warmup; ++i) r.finite &= std::isfinite(trainer.train_step().loss);
  const auto start = Clock::now();
  for (int i = 0; i < steps; ++i) r.finite &= std::isfinite(trainer.train_step().loss);
  const double elapsed = seconds_since(start);
  r.step_seconds = elapsed / steps;
  r.samples_per_second = static_cast<double>(config.loop().global_batch_size()) * steps / elapsed;
  return r;
}

TrainConfig unshared(TrainConfig c) {
  c.mutable_model()->mutable_vision()->set_self_attn_share_group(1);
  c.mutable_model()->mutable_text()->set_self_attn_share_group(1);
  c.mutable_model()->mutable_text()->set_cross_kv_share_group(1);
  return c;
}

int bench(int argc, char** argv) {
  auto flags = parse_bench_flags(argc, argv, {{"config", std::string(VLM_SOURCE_DIR) + "/configs/bench.pbtxt"},
                                                {"steps", "20"}, {"warmup", "3"}});
  const std::string config_path = flags["config"];
  const int steps = std::stoi(flags["steps"]), warmup = std::stoi(flags["warmup"]);
  const TrainConfig config = load_config(config_path, {"loop.steps=" + std::to_string(warmup + steps)});
  const Topology topology = make_topology(detect_process(), 1, 0);
  const int threads = static_cast<int>(std::thread::hardware_concurrency());
  apply_thread_count(threads);
  ProcessGroups groups(topology);
  const auto data = load_training_data(config.data());

  // The machine is shared and noisy: the peak is probed before, between and
  // after the runs and the best probe is used, so MFU is never flattered by
  // one slow probe.
  std::vector<double> probes{peak_gemm_flops()};
  const RunResult shared = run(config, topology, groups, *data, warmup, steps);
  probes.push_back(peak_gemm_flops());
  const RunResult plain = run(unshared(config), topology, groups, *data, warmup, steps);
  probes.push_back(peak_gemm_flops());
  const double peak = *std::max_element(probes.begin(), probes.end());
  const double mfu = shared.samples_per_second * shared.train_flops_per_sample / peak;
  const double mfu_plain = plain.samples_per_second * plain.train_flops_per_sample / peak;

  std::printf("config %s, %d threads, %d timed steps after %d warm-up, batch %d\n", config_path.c_str(), threads,
              steps, warmup, config.loop().global_batch_size());
  std::printf("peak FP32 GEMM (best of %zu probes) %.1f GFLOP/s (probes:", probes.size(), peak / 1e9);
  for (double p : probes) std::printf(" %.1f", p / 1e9);
  std::printf(")\n");
  std::printf("%-10s %12s %14s %10s %10s %14s %7s\n", "attention", "parameters", "image-KV B/img", "step ms",
              "samples/s", "model GFLOP/s", "MFU");
  for (const auto& [name, r, m] : {std::tuple{"shared", shared, mfu}, std::tuple{"unshared", plain, mfu_plain}}) {
    std::printf("%-10s %12lld %14lld %10.1f %10.1f %14.1f %6.1f%%\n", name, static_cast<long long>(r.parameters),
                static_cast<long long>(r.image_kv_bytes), r.step_seconds * 1e3, r.samples_per_second,
                r.samples_per_second * r.train_flops_per_sample / 1e9, 100 * m);
  }
  std::printf("shared/unshared: parameters %.3f, image-KV bytes %.3f, step time %.3f\n",
              static_cast<double>(shared.parameters) / plain.parameters,
              static_cast<double>(shared.image_kv_bytes) / plain.image_kv_bytes, shared.step_seconds / plain.step_seconds);
  std::printf("{\"bench\":\"train\",\"threads\":%d,\"peak_gemm_gflops\":%.2f,\"shared\":{\"parameters\":%lld,"
              "\"image_kv_bytes\":%lld,\"step_seconds\":%.5f,\"samples_per_second\":%.2f,\"mfu\":%.4f},"
              "\"unshared\":{\"parameters\":%lld,\"image_kv_bytes\":%lld,\"step_seconds\":%.5f,"
              "\"samples_per_second\":%.2f,\"mfu\":%.4f},\"correct\":%s}\n",
              threads, peak / 1e9, static_cast<long long>(shared.parameters),
              static_cast<long long>(shared.image_kv_bytes), shared.step_seconds, shared.samples_per_second, mfu,
              static_cast<long long>(plain.parameters), static_cast<long long>(plain.image_kv_bytes), plain.step_seconds,
              plain.samples_per_second, mfu_plain, shared.finite && plain.finite ? "true" : "false");
  return shared.finite && plain.finite ? 0 : 1;
}

}  // namespace
}  // namespace vlm

int main(int argc, char** argv) { return vlm::bench_main("vlm-train-bench", argc, argv, vlm::bench); }
