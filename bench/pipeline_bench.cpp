// vlm-pipeline-bench: measured pipeline bubble vs the theory (p-1)/(m+p-1),
// and peak activation memory per stage, for GPipe and 1F1B in the same run.
// Each step starts after a barrier; the makespan is the latest stage's last
// backward; a stage's bubble is 1 - (its forward + backward time) / makespan.
// Micro-batches of 16 samples. Prints a table and JSON lines.
//
//   mpirun -np P build/bench/vlm-pipeline-bench [--config configs/pipeline_bench.pbtxt] [--micro-batches 4,8,16]

#include <glog/logging.h>

#include <cstdio>
#include <sstream>
#include <thread>

#include "comm/mpi_check.h"
#include "comm/mpi_runtime.h"
#include "comm/process_groups.h"
#include "comm/threads.h"
#include "comm/topology.h"
#include "proto/config_loader.h"
#include "trainer/pipeline_trainer.h"

namespace vlm {
namespace {

constexpr int kMicroBatchSamples = 16;
constexpr int kWarmupSteps = 1;
constexpr int kTimedSteps = 3;

int bench(int argc, char** argv) {
  std::string config_path = std::string(VLM_SOURCE_DIR) + "/configs/pipeline_bench.pbtxt";
  std::vector<int> micro_batches = {4, 8, 16};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--config") {
      config_path = argv[i + 1];
    } else if (flag == "--micro-batches") {
      micro_batches.clear();
      std::stringstream list(argv[i + 1]);
      for (std::string m; std::getline(list, m, ',');) micro_batches.push_back(std::stoi(m));
    } else {
      throw std::invalid_argument("unknown flag " + flag + "; use --config, --micro-batches");
    }
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
    std::printf("%-12s %4s %9s %9s %7s %14s %24s\n", "schedule", "m", "bubble", "theory", "diff", "peak in flight",
                "peak activation MiB/stage");
  }
  for (int m : micro_batches) {
    for (const char* schedule : {"GPIPE", "ONE_F_ONE_B"}) {
      const TrainConfig config = load_config(
          config_path, {"parallel.pipeline_stages=" + std::to_string(p), std::string("parallel.schedule=") + schedule,
                        "loop.micro_batches=" + std::to_string(m),
                        "loop.global_batch_size=" + std::to_string(kMicroBatchSamples * m),
                        "loop.steps=" + std::to_string(kWarmupSteps + kTimedSteps)});
      const auto data = load_training_data(config.data());
      PipelineTrainer trainer(config, topology, groups, *data);
      for (int i = 0; i < kWarmupSteps; ++i) trainer.train_step();
      double bubble = 0;
      int peak_in_flight = 0;
      double peak_bytes = 0;
      for (int i = 0; i < kTimedSteps; ++i) {
        VLM_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
        const StepStats s = trainer.train_step();
        double makespan = s.pipeline_seconds;
        VLM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &makespan, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
        double mine = 1.0 - s.pipeline_busy_seconds / makespan;
        VLM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &mine, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
        bubble += mine / p / kTimedSteps;
        peak_in_flight = std::max(peak_in_flight, trainer.peak_in_flight());
        peak_bytes = std::max(peak_bytes, static_cast<double>(trainer.peak_activation_bytes()));
      }
      // Stage 0 holds the most micro-batches in 1F1B; report the largest over stages.
      VLM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &peak_in_flight, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
      VLM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &peak_bytes, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
      const double theory = (p - 1.0) / (m + p - 1.0);
      if (topology.is_root()) {
        std::printf("%-12s %4d %9.3f %9.3f %+7.3f %14d %24.1f\n", schedule, m, bubble, theory, bubble - theory,
                    peak_in_flight, peak_bytes / (1 << 20));
        std::printf("{\"bench\":\"pipeline\",\"stages\":%d,\"schedule\":\"%s\",\"micro_batches\":%d,\"bubble\":%.4f,"
                    "\"theory\":%.4f,\"peak_in_flight\":%d,\"peak_activation_bytes\":%.0f}\n",
                    p, schedule, m, bubble, theory, peak_in_flight, peak_bytes);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace vlm

int main(int argc, char** argv) {
  google::InitGoogleLogging(argv[0]);
  vlm::MpiRuntime mpi(&argc, &argv);
  try {
    return vlm::bench(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vlm-pipeline-bench: error on %s: %s\n", vlm::process_label().c_str(), e.what());
    vlm::MpiRuntime::abort_job(1);
  }
}
