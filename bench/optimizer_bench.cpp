// vlm-optimizer-bench: the trainer's AdamW (trainer/optimizer.h) in its two
// forms, device (masked by a device flag: a GPU's, no host sync) and host (the
// CPU's), against torch::optim::AdamW on the unique parameters of a config's
// model, with the same gradients, alternating rounds in one run on this
// process's CPU threads. The device form also scales the gradients (clipping
// is inside it); the others do not. Prints a table and, last, one JSON line.
//
//   build/bench/vlm-optimizer-bench [--config configs/bench.pbtxt] [--steps 20] [--rounds 5]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include "comm/threads.h"
#include "model/parameters.h"
#include "model/vlm.h"
#include "proto/config_loader.h"
#include "trainer/setup.h"
#include "trainer/torch_adamw.h"
#include "trainer/training_data.h"

#include "bench/bench_main.h"

namespace vlm {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

int bench(int argc, char** argv) {
  auto flags = parse_bench_flags(argc, argv,
                                 {{"config", std::string(VLM_SOURCE_DIR) + "/configs/bench.pbtxt"}, {"steps", "20"}, {"rounds", "5"}});
  const int steps = std::stoi(flags["steps"]), rounds = std::stoi(flags["rounds"]);
  apply_thread_count(static_cast<int>(std::thread::hardware_concurrency()));
  const TrainConfig config = load_config(flags["config"], {});
  const auto data = load_training_data(config.data());
  torch::manual_seed(1);
  VlmModel ours_model(model_spec_for(config, *data)), torch_model(model_spec_for(config, *data));
  const auto ours_parameters = unique_parameters(*ours_model), torch_parameters = unique_parameters(*torch_model);
  int64_t count = 0;
  for (size_t i = 0; i < ours_parameters.size(); ++i) {
    torch_parameters[i].tensor.detach().copy_(ours_parameters[i].tensor.detach());
    const torch::Tensor g = torch::randn_like(ours_parameters[i].tensor) * 1e-2;
    ours_parameters[i].tensor.mutable_grad() = g.clone();
    torch_parameters[i].tensor.mutable_grad() = g.clone();
    count += g.numel();
  }
  AdamW ours(ours_parameters, config.optim());
  const auto theirs = torch_adamw(torch_parameters, config.optim());
  const torch::Tensor apply = torch::scalar_tensor(true), scale = torch::scalar_tensor(0.5f);
  const double lr = config.optim().lr();
  double best_ours = 1e30, best_host = 1e30, best_torch = 1e30;
  for (int round = 0; round < rounds; ++round) {  // alternating: the machine's noise hits both alike
    auto t = Clock::now();
    for (int s = 0; s < steps; ++s) ours.step_on_device(lr, apply, scale), ours.count_applied();
    best_ours = std::min(best_ours, seconds_since(t) / steps);
    t = Clock::now();
    for (int s = 0; s < steps; ++s) ours.step_on_host(lr, true, 1.0), ours.count_applied();
    best_host = std::min(best_host, seconds_since(t) / steps);
    t = Clock::now();
    for (int s = 0; s < steps; ++s) theirs->step();
    best_torch = std::min(best_torch, seconds_since(t) / steps);
  }
  double max_difference = 0;  // the gradients were halved for ours (clipping): only a sanity bound
  for (size_t i = 0; i < ours_parameters.size(); ++i) {
    max_difference = std::max(max_difference,
                              (ours_parameters[i].tensor - torch_parameters[i].tensor).abs().max().item<double>());
  }
  std::printf("%lld parameters, %d rounds of %d steps, best round per step:\n", static_cast<long long>(count), rounds, steps);
  std::printf("  vlm AdamW, device form (masked)               %8.3f ms\n", best_ours * 1e3);
  std::printf("  vlm AdamW, host form (the CPU's)             %8.3f ms\n", best_host * 1e3);
  std::printf("  torch::optim::AdamW                           %8.3f ms\n", best_torch * 1e3);
  std::printf("{\"bench\":\"optimizer\",\"parameters\":%lld,\"device_form_ms\":%.4f,\"host_form_ms\":%.4f,"
              "\"torch_ms\":%.4f,\"device_form_ratio\":%.3f,\"host_form_ratio\":%.3f}\n",
              static_cast<long long>(count), best_ours * 1e3, best_host * 1e3, best_torch * 1e3, best_ours / best_torch,
              best_host / best_torch);
  return max_difference < 1.0 ? 0 : 1;
}

}  // namespace
}  // namespace vlm

int main(int argc, char** argv) { return vlm::bench_main("vlm-optimizer-bench", argc, argv, vlm::bench); }
