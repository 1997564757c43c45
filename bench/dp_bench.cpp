// vlm-dp-bench: where a data-parallel training step's time goes. Runs the
// config twice in one job, gradient reduction overlapped with backward and
// not, and reports per-step means of forward, backward, total gradient
// communication, exposed communication (the wait after backward) and the
// optimizer, plus samples/s. Run with any number of ranks; with one rank it
// gives the one-process baseline (bench/dp_throughput.sh compares them).
//
//   mpirun -np 2 build/bench/vlm-dp-bench [--config configs/bench.pbtxt] [--steps 8] [--warmup 2]
//                                         [--precision fp32|bf16] [--overlap both|on] [--set a=1,b=2]
//                                         [--profile trace.json]   (then: python3 bench/op_profile.py trace.json)

#include <cmath>
#include <cstdio>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include <torch/csrc/autograd/profiler_legacy.h>

#include "comm/process_groups.h"
#include "comm/threads.h"
#include "comm/topology.h"
#include "model/parameters.h"
#include "proto/config_loader.h"
#include "trainer/trainer.h"

#include "bench/bench_main.h"

namespace vlm {
namespace {

struct Breakdown {
  double step = 0, forward = 0, backward = 0, communication = 0, exposed = 0, optimizer = 0, data = 0;
  double samples_per_second = 0;
  int buckets = 0;
  int64_t parameters = 0;  // unique: a shared projection counts once
  int64_t optimizer_state_bytes = 0;  // on rank 0 (its shard under ZeRO-1)
  bool finite = true;
};

Breakdown measure(const TrainConfig& config, const Topology& topology, const ProcessGroups& groups,
                  const TrainingData& data, int warmup, int steps, const std::string& profile) {
  Trainer trainer(config, topology, groups, data);
  for (int i = 0; i < warmup; ++i) trainer.train_step();
  // LibTorch's operator profiler over the timed steps (rank 0): a Chrome trace
  // that bench/op_profile.py sums by operator. It slows the steps it records.
  std::optional<torch::autograd::profiler::RecordProfile> recording;
  if (!profile.empty() && topology.is_root()) recording.emplace(profile);
  Breakdown b;
  b.parameters = unique_parameter_count(*trainer.stage());
  b.optimizer_state_bytes = trainer.optimizer_state_bytes();
  for (int i = 0; i < steps; ++i) {
    const StepStats s = trainer.train_step();
    b.finite &= std::isfinite(s.loss);
    b.step += s.seconds / steps;
    b.forward += s.forward_seconds / steps;
    b.backward += s.backward_seconds / steps;
    b.communication += s.reduction.communication_seconds / steps;
    b.exposed += s.reduction.exposed_seconds / steps;
    b.optimizer += s.optimizer_seconds / steps;
    b.data += s.data_seconds / steps;
    b.buckets = s.reduction.buckets;
  }
  b.samples_per_second = config.loop().global_batch_size() / b.step;
  return b;
}

int bench(int argc, char** argv) {
  auto flags = parse_bench_flags(argc, argv, {{"config", std::string(VLM_SOURCE_DIR) + "/configs/bench.pbtxt"},
                                                {"steps", "8"}, {"warmup", "2"}, {"precision", "fp32"},
                                                {"overlap", "both"}, {"set", ""}, {"profile", ""}});
  const std::string config_path = flags["config"];
  const std::string precision = precision_override(flags["precision"]);
  if (flags["overlap"] != "both" && flags["overlap"] != "on") throw std::invalid_argument("--overlap: both or on");
  const int steps = std::stoi(flags["steps"]), warmup = std::stoi(flags["warmup"]);
  const Topology topology = make_topology(detect_process(), 1, 0);
  const int threads = threads_per_rank(0, topology.process.cpus, topology.process.cpu_sharers);
  apply_thread_count(threads);
  ProcessGroups groups(topology);
  const std::string steps_total = "loop.steps=" + std::to_string(warmup + steps);
  const auto config = [&](const std::string& overlap) {
    const std::vector<std::string> fixed = {steps_total, precision, "comm.overlap=" + overlap};
    return load_config(config_path, config_overrides(flags["set"], fixed));
  };
  const TrainConfig on = config("true");
  const auto data = load_training_data(on.data());
  const auto run = [&](const TrainConfig& c, const std::string& profile) {
    return measure(c, topology, groups, *data, warmup, steps, profile);
  };
  std::vector<std::pair<const char*, Breakdown>> rows = {{"on", run(on, flags["profile"])}};  // the run profiled
  if (flags["overlap"] == "both") rows.emplace_back("off", run(config("false"), ""));

  if (topology.is_root()) {
    std::printf("%s, %s, %d ranks x %d threads, global batch %d, %d timed steps after %d warm-up (rank 0, ms/step)\n",
                config_path.c_str(), flags["precision"].c_str(), topology.world_size(), threads,
                on.loop().global_batch_size(), steps, warmup);
    std::printf("%-8s %9s %9s %9s %9s %9s %9s %9s %8s %10s\n", "overlap", "step", "data", "forward", "backward",
                "comm", "exposed", "optim", "exp/comm", "samples/s");
    for (const auto& [name, b] : rows) {
      std::printf("%-8s %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %8.3f %10.2f\n", name, b.step * 1e3, b.data * 1e3,
                  b.forward * 1e3, b.backward * 1e3, b.communication * 1e3, b.exposed * 1e3, b.optimizer * 1e3,
                  b.communication > 0 ? b.exposed / b.communication : 0.0, b.samples_per_second);
      std::printf("{\"bench\":\"dp_step\",\"ranks\":%d,\"threads\":%d,\"overlap\":%s,\"step_s\":%.5f,\"forward_s\":%.5f,"
                  "\"backward_s\":%.5f,\"comm_s\":%.5f,\"exposed_s\":%.5f,\"optimizer_s\":%.5f,\"buckets\":%d,"
                  "\"samples_per_second\":%.3f,\"precision\":\"%s\",\"parameters\":%lld,\"zero_stage\":%d,"
                  "\"optimizer_state_bytes\":%lld,\"correct\":%s}\n",
                  topology.world_size(), threads, std::string(name) == "on" ? "true" : "false", b.step, b.forward,
                  b.backward, b.communication, b.exposed, b.optimizer, b.buckets, b.samples_per_second,
                  flags["precision"].c_str(), static_cast<long long>(b.parameters), on.optim().zero_stage(),
                  static_cast<long long>(b.optimizer_state_bytes), b.finite ? "true" : "false");
    }
  }
  bool finite = true;
  for (const auto& row : rows) finite &= row.second.finite;
  return finite ? 0 : 1;
}

}  // namespace
}  // namespace vlm

int main(int argc, char** argv) { return vlm::bench_main("vlm-dp-bench", argc, argv, vlm::bench); }
