// vlm-train-bench: single-process training throughput and MFU for a config
// (default configs/bench.pbtxt), shared vs unshared attention side by side,
// at each precision asked for. MFU = model FLOP/s (model/flops.h) / the peak
// GEMM FLOP/s in that precision on that device, measured by this same run.
// Prints a table and, last, one JSON line; exits non-zero when a loss is not finite.
//
//   build/bench/vlm-train-bench [--config configs/bench.pbtxt] [--steps 20] [--warmup 3]
//                               [--device cpu|cuda] [--precision fp32,bf16] [--set a=1,b=2]

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <sstream>
#include <thread>

#include "comm/device.h"
#include "comm/process_groups.h"
#include "comm/threads.h"
#include "comm/topology.h"
#include "model/cpu_sgemm.h"
#include "model/flops.h"
#include "model/parameters.h"
#include "proto/config_loader.h"
#include "trainer/trainer.h"

#include "bench/bench_main.h"

namespace vlm {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Waits for the GPU's queued work (timings of asynchronous kernels).
void finish(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

// Best GEMM rate in `dtype` over a few square sizes: the practical peak. In
// fp32 on a CPU, the better of LibTorch's mm and the direct kernel the model's
// layers call (Note [CPU sgemm]), so that MFU is never against the slower one.
double peak_gemm_flops(const torch::Device& device, torch::ScalarType dtype) {
  double best = 0;
  const auto options = torch::TensorOptions(device).dtype(dtype);
  std::vector<std::function<void(const torch::Tensor&, const torch::Tensor&, torch::Tensor&)>> kernels = {
      [](const torch::Tensor& a, const torch::Tensor& b, torch::Tensor& c) { torch::mm_out(c, a, b); }};
  if (device.is_cpu() && dtype == torch::kFloat && cpu_sgemm_available()) {
    kernels.push_back([](const torch::Tensor& a, const torch::Tensor& b, torch::Tensor& c) {
      const int64_t n = a.size(0);
      cpu_sgemm({false, false, n, n, n, a.data_ptr<float>(), n, b.data_ptr<float>(), n, c.data_ptr<float>(), n});
    });
  }
  for (int64_t n : device.is_cuda() ? std::vector<int64_t>{4096, 8192} : std::vector<int64_t>{512, 1024, 2048}) {
    torch::Tensor a = torch::randn({n, n}, options), b = torch::randn({n, n}, options), c = torch::empty({n, n}, options);
    for (const auto& multiply : kernels) {
      for (int i = 0; i < 2; ++i) multiply(a, b, c);  // warm-up
      const int iterations = device.is_cuda() ? 20 : n <= 512 ? 40 : n <= 1024 ? 10 : 3;
      finish(device);
      const auto start = Clock::now();
      for (int i = 0; i < iterations; ++i) multiply(a, b, c);
      finish(device);
      best = std::max(best, 2.0 * n * n * n * iterations / seconds_since(start));
    }
  }
  return best;
}

struct RunResult {
  int64_t parameters = 0;
  int64_t image_kv_bytes = 0;  // per image
  double step_seconds = 0;     // mean over timed steps
  double samples_per_second = 0;
  double train_flops_per_sample = 0;
  double mfu = 0;
  bool finite = true;
};

RunResult run(const TrainConfig& config, const Topology& topology, const ProcessGroups& groups,
              const TrainingData& data, int warmup, int steps) {
  Trainer trainer(config, topology, groups, data);
  RunResult r;
  r.parameters = unique_parameter_count(*trainer.stage());
  {
    torch::NoGradGuard no_grad;
    VlmModel model = trainer.whole_model();
    const auto& s = model->spec();
    r.image_kv_bytes = image_kv_bytes(
        model->start_decoding(torch::zeros({1, s.image_channels, s.image_height, s.image_width}, groups.device())).image_kv);
  }
  for (int i = 0; i < warmup; ++i) r.finite &= std::isfinite(trainer.train_step().loss);
  finish(groups.device());
  const auto start = Clock::now();
  double flops = 0, samples = 0;  // the trainer counts each batch at its width (model/flops.h)
  for (int i = 0; i < steps; ++i) {
    const StepStats stats = trainer.train_step();
    r.finite &= std::isfinite(stats.loss);
    flops += stats.model_flops;
    samples += static_cast<double>(stats.rank_samples);
  }
  finish(groups.device());
  r.train_flops_per_sample = flops / samples;
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

// Shared and unshared attention at one precision, against that precision's peak.
struct PrecisionResult {
  std::string precision;
  std::vector<double> probes;  // peak GEMM FLOP/s, before, between and after the runs
  double peak = 0;
  RunResult shared, plain;
};

std::string json(const RunResult& r) {
  char text[256];
  std::snprintf(text, sizeof text,
                "{\"parameters\":%lld,\"image_kv_bytes\":%lld,\"step_seconds\":%.5f,\"samples_per_second\":%.2f,\"mfu\":%.4f}",
                static_cast<long long>(r.parameters), static_cast<long long>(r.image_kv_bytes), r.step_seconds,
                r.samples_per_second, r.mfu);
  return text;
}

int bench(int argc, char** argv) {
  auto flags = parse_bench_flags(argc, argv, {{"config", std::string(VLM_SOURCE_DIR) + "/configs/bench.pbtxt"},
                                                {"steps", "20"}, {"warmup", "3"}, {"device", "cpu"},
                                                {"precision", "fp32"}, {"set", ""}});
  const std::string config_path = flags["config"];
  const int steps = std::stoi(flags["steps"]), warmup = std::stoi(flags["warmup"]);
  if (flags["device"] != "cpu" && flags["device"] != "cuda") throw std::invalid_argument("--device: cpu or cuda");
  const Topology topology = make_topology(detect_process(), 1, 0);
  const torch::Device device =
      use_device(flags["device"] == "cuda" ? DeviceRequest::kCuda : DeviceRequest::kCpu, topology.process);
  const int threads = static_cast<int>(std::thread::hardware_concurrency());
  apply_thread_count(threads);
  ProcessGroups groups(topology, {BackendKind::kAuto, device});

  std::vector<PrecisionResult> results;
  std::stringstream precisions(flags["precision"]);
  for (std::string precision; std::getline(precisions, precision, ',');) {
    const std::vector<std::string> fixed = {"loop.steps=" + std::to_string(warmup + steps),
                                            precision_override(precision)};
    const TrainConfig config = load_config(config_path, config_overrides(flags["set"], fixed));
    const auto data = load_training_data(config.data());
    const torch::ScalarType dtype = precision == "bf16" ? torch::kBFloat16 : torch::kFloat;
    // The machine is shared and noisy: the peak is probed before, between and
    // after the runs and the best probe is used, so MFU is never flattered by
    // one slow probe.
    PrecisionResult r;
    r.precision = precision;
    r.probes.push_back(peak_gemm_flops(device, dtype));
    r.shared = run(config, topology, groups, *data, warmup, steps);
    r.probes.push_back(peak_gemm_flops(device, dtype));
    r.plain = run(unshared(config), topology, groups, *data, warmup, steps);
    r.probes.push_back(peak_gemm_flops(device, dtype));
    r.peak = *std::max_element(r.probes.begin(), r.probes.end());
    for (RunResult* run : {&r.shared, &r.plain}) run->mfu = run->samples_per_second * run->train_flops_per_sample / r.peak;
    results.push_back(r);
  }

  std::printf("config %s, device %s, %d threads, %d timed steps after %d warm-up, batch %d\n", config_path.c_str(),
              device.str().c_str(), threads, steps, warmup,
              load_config(config_path, config_overrides(flags["set"])).loop().global_batch_size());
  bool finite = true;
  std::string runs;
  for (const PrecisionResult& r : results) {
    std::printf("%s: peak GEMM (best of %zu probes) %.1f GFLOP/s (probes:", r.precision.c_str(), r.probes.size(), r.peak / 1e9);
    for (double p : r.probes) std::printf(" %.1f", p / 1e9);
    std::printf(")\n");
    std::printf("  %-10s %12s %14s %10s %10s %14s %7s\n", "attention", "parameters", "image-KV B/img", "step ms",
                "samples/s", "model GFLOP/s", "MFU");
    for (const auto& [name, run] : {std::pair{"shared", r.shared}, std::pair{"unshared", r.plain}}) {
      std::printf("  %-10s %12lld %14lld %10.1f %10.1f %14.1f %6.1f%%\n", name, static_cast<long long>(run.parameters),
                  static_cast<long long>(run.image_kv_bytes), run.step_seconds * 1e3, run.samples_per_second,
                  run.samples_per_second * run.train_flops_per_sample / 1e9, 100 * run.mfu);
    }
    std::printf("  shared/unshared: parameters %.3f, image-KV bytes %.3f, step time %.3f\n",
                static_cast<double>(r.shared.parameters) / r.plain.parameters,
                static_cast<double>(r.shared.image_kv_bytes) / r.plain.image_kv_bytes,
                r.shared.step_seconds / r.plain.step_seconds);
    finite &= r.shared.finite && r.plain.finite;
    char head[128];
    std::snprintf(head, sizeof head, "{\"precision\":\"%s\",\"peak_gemm_gflops\":%.2f,", r.precision.c_str(), r.peak / 1e9);
    runs += (runs.empty() ? "" : ",") + std::string(head) + "\"shared\":" + json(r.shared) + ",\"unshared\":" + json(r.plain) + "}";
  }
  if (results.size() == 2) {
    std::printf("%s/%s samples/s (shared): %.3f\n", results[1].precision.c_str(), results[0].precision.c_str(),
                results[1].shared.samples_per_second / results[0].shared.samples_per_second);
  }
  std::printf("{\"bench\":\"train\",\"device\":\"%s\",\"threads\":%d,\"runs\":[%s],\"correct\":%s}\n",
              device.str().c_str(), threads, runs.c_str(), finite ? "true" : "false");
  return finite ? 0 : 1;
}

}  // namespace
}  // namespace vlm

int main(int argc, char** argv) { return vlm::bench_main("vlm-train-bench", argc, argv, vlm::bench); }
