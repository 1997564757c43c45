// vlm-pipeline-bench: measured pipeline bubble vs the theory (p-1)/(m+p-1),
// and peak activation memory per stage, for GPipe and 1F1B in the same run.
// Each step starts after a barrier; the makespan is the latest stage's last
// backward; a stage's bubble is 1 - (its forward + backward time) / makespan.
// Micro-batches of 16 samples. `--activation-checkpointing off,on` measures
// each case with blocks stored and with blocks recomputed in the backward
// pass (model.activation_checkpointing): memory against step time. Prints a
// table and JSON lines.
//
//   mpirun -np P build/bench/vlm-pipeline-bench [--config configs/pipeline_bench.pbtxt] [--micro-batches 4,8,16]
//                                               [--activation-checkpointing off|on|off,on]

#include <cstdio>
#include <sstream>
#include <thread>

#include "comm/mpi_check.h"
#include "comm/process_groups.h"
#include "comm/threads.h"
#include "comm/topology.h"
#include "proto/config_loader.h"
#include "trainer/trainer.h"

#include "bench/bench_main.h"

namespace vlm {
namespace {

constexpr int kMicroBatchSamples = 16;
constexpr int kWarmupSteps = 1;
constexpr int kTimedSteps = 3;

int bench(int argc, char** argv) {
  auto flags = parse_bench_flags(
      argc, argv, {{"config", std::string(VLM_SOURCE_DIR) + "/configs/pipeline_bench.pbtxt"}, {"micro-batches", "4,8,16"},
                  {"activation-checkpointing", "off"}});
  const std::string config_path = flags["config"];
  std::vector<int> micro_batches;
  std::stringstream list(flags["micro-batches"]);
  for (std::string m; std::getline(list, m, ',');) micro_batches.push_back(std::stoi(m));
  std::vector<bool> recompute;
  std::stringstream modes(flags["activation-checkpointing"]);
  for (std::string mode; std::getline(modes, mode, ',');) {
    if (mode != "on" && mode != "off") throw std::invalid_argument("--activation-checkpointing takes off, on or off,on, not '" + mode + "'");
    recompute.push_back(mode == "on");
  }
  const ProcessInfo process = detect_process();
  const Topology topology = make_topology(process, process.world_size, 1);
  apply_thread_count(1);
  ProcessGroups groups(topology);
  const int p = topology.pipeline_stages;
  if (topology.is_root()) {
    std::printf("%s, %d stages (1 thread each, %u cores%s), micro-batches of %d, %d timed steps\n", config_path.c_str(), p,
                std::thread::hardware_concurrency(), p > static_cast<int>(std::thread::hardware_concurrency()) ? ", OVERSUBSCRIBED" : "",
                kMicroBatchSamples, kTimedSteps);
    std::printf("%-12s %4s %5s %9s %9s %7s %14s %24s %9s\n", "schedule", "m", "ckpt", "bubble", "theory", "diff",
                "peak in flight", "peak activation MiB/stage", "step ms");
  }
  for (int m : micro_batches) {
    for (const char* schedule : {"GPIPE", "ONE_F_ONE_B"}) {
      for (const bool checkpointing : recompute) {
        const TrainConfig config = load_config(
            config_path, {"parallel.pipeline_stages=" + std::to_string(p), std::string("parallel.schedule=") + schedule,
                          "loop.micro_batches=" + std::to_string(m),
                          "loop.global_batch_size=" + std::to_string(kMicroBatchSamples * m),
                          "loop.steps=" + std::to_string(kWarmupSteps + kTimedSteps),
                          // Batches built in the step: prefetching threads' allocations would blur the heap measurement.
                          "data.loader_threads=0",
                          std::string("model.activation_checkpointing=") + (checkpointing ? "true" : "false")});
        const auto data = load_training_data(config.data());
        Trainer trainer(config, topology, groups, *data);
        for (int i = 0; i < kWarmupSteps; ++i) trainer.train_step();
        double bubble = 0, step_seconds = 0;
        int peak_in_flight = 0;
        double peak_bytes = 0;
        for (int i = 0; i < kTimedSteps; ++i) {
          VLM_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
          const StepStats s = trainer.train_step();
          double makespan = s.pipeline_seconds;
          VLM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &makespan, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
          double mine = 1.0 - s.busy_seconds / makespan;
          VLM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &mine, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
          bubble += mine / p / kTimedSteps;
          step_seconds += makespan / kTimedSteps;
          peak_in_flight = std::max(peak_in_flight, trainer.peak_in_flight());
          peak_bytes = std::max(peak_bytes, static_cast<double>(trainer.peak_activation_bytes()));
        }
        // Stage 0 holds the most micro-batches in 1F1B; report the largest over stages.
        VLM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &peak_in_flight, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
        VLM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &peak_bytes, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
        const double theory = (p - 1.0) / (m + p - 1.0);
        if (topology.is_root()) {
          std::printf("%-12s %4d %5s %9.3f %9.3f %+7.3f %14d %24.1f %9.1f\n", schedule, m, checkpointing ? "on" : "off",
                      bubble, theory, bubble - theory, peak_in_flight, peak_bytes / (1 << 20), step_seconds * 1e3);
          std::printf("{\"bench\":\"pipeline\",\"stages\":%d,\"schedule\":\"%s\",\"micro_batches\":%d,"
                      "\"activation_checkpointing\":%s,\"bubble\":%.4f,\"theory\":%.4f,\"peak_in_flight\":%d,"
                      "\"peak_activation_bytes\":%.0f,\"step_seconds\":%.4f}\n",
                      p, schedule, m, checkpointing ? "true" : "false", bubble, theory, peak_in_flight, peak_bytes,
                      step_seconds);
          std::fflush(stdout);
        }
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace vlm

int main(int argc, char** argv) { return vlm::bench_main("vlm-pipeline-bench", argc, argv, vlm::bench); }
