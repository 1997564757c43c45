// Exact data-parallel semantics (run under mpirun with 2 and 3 ranks): N ranks
// with batch b train the same model as one process with batch N x b, with
// shared attention weights on, with and without gradient accumulation. Every
// rank also runs the one-process reference itself, on MPI_COMM_SELF.

#include <gtest/gtest.h>

#include "comm/process_groups.h"
#include "comm/topology.h"
#include "model/parameters.h"
#include "proto/config_loader.h"
#include "tests/mpi_test_support.h"
#include "trainer/trainer.h"

namespace vlm {
namespace {

TrainConfig parity_config(int world, int micro_batches) {
  // Small buckets: several of them, so the reducer's ordering is exercised.
  return load_config(std::string(VLM_SOURCE_DIR) + "/configs/tiny_test.pbtxt",
                     {"loop.global_batch_size=" + std::to_string(12 * world),
                      "loop.micro_batches=" + std::to_string(micro_batches), "loop.steps=5",
                      "comm.first_bucket_bytes=4096", "comm.bucket_cap_bytes=32768"});
}

// ||a - b|| / ||b||, the relative error of one tensor.
double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).norm().item<double>() / std::max(b.norm().item<double>(), 1e-30);
}

void expect_parity(int micro_batches) {
  const Topology topology = make_topology(detect_process(), 1, 0);
  const TrainConfig config = parity_config(topology.world_size(), micro_batches);
  ProcessGroups groups(topology);
  Trainer parallel(config, topology, groups.data_parallel(), tiny_data());
  const Topology alone = make_topology(ProcessInfo{0, 1, 0, 1}, 1, 1);
  Trainer reference(config, alone, MPI_COMM_SELF, tiny_data());

  const auto parallel_parameters = unique_parameters(*parallel.model());
  const auto reference_parameters = unique_parameters(*reference.model());
  ASSERT_EQ(parallel_parameters.size(), reference_parameters.size());
  for (int step = 0; step < config.loop().steps(); ++step) {
    const StepStats a = parallel.train_step(), b = reference.train_step();
    EXPECT_LE(std::abs(a.loss - b.loss), 1e-5 * std::abs(b.loss)) << "step " << step << ": " << a.loss << " vs " << b.loss;
    double worst = 0;
    std::string worst_name;
    for (size_t i = 0; i < parallel_parameters.size(); ++i) {
      const double error = relative_error(parallel_parameters[i].tensor, reference_parameters[i].tensor);
      if (error > worst) worst = error, worst_name = parallel_parameters[i].name;
    }
    EXPECT_LE(worst, 1e-5) << "step " << step << ": " << worst_name << " differs by " << worst << " (relative)";
  }
}

TEST(DataParallelParity, MatchesOneProcessOnTheGlobalBatch) { expect_parity(1); }

TEST(DataParallelParity, MatchesOneProcessWithGradientAccumulation) { expect_parity(3); }

TEST(GradientReduction, BucketsCoverEachUniqueParameterOnce) {
  const Topology topology = make_topology(detect_process(), 1, 0);
  ProcessGroups groups(topology);
  const TrainConfig config = parity_config(topology.world_size(), 1);
  Trainer trainer(config, topology, groups.data_parallel(), tiny_data());
  const std::vector<int64_t> buckets = trainer.bucket_bytes();
  int64_t total = 0;
  for (int64_t b : buckets) total += b;
  // A shared weight is one tensor: it is reduced once, not once per layer.
  EXPECT_EQ(total, 4 * unique_parameter_count(*trainer.model()));
  EXPECT_GT(buckets.size(), 2u);
  EXPECT_GE(buckets.front(), 4096);   // the first bucket closes at first_bucket_bytes ...
  EXPECT_LT(buckets.front(), 32768);  // ... well below the cap of the others
}

TEST(GradientReduction, OverlapCompletesBucketsBeforeBackwardEnds) {
  const Topology topology = make_topology(detect_process(), 1, 0);
  ASSERT_GE(topology.world_size(), 2);
  ProcessGroups groups(topology);
  Trainer trainer(parity_config(topology.world_size(), 1), topology, groups.data_parallel(), tiny_data());
  int most = 0;
  for (int step = 0; step < 5; ++step) {
    const ReductionStats r = trainer.train_step().reduction;
    most = std::max(most, r.buckets_done_before_backward_end);
    EXPECT_GT(r.communication_seconds, 0.0);
  }
  EXPECT_GE(most, 1) << "no bucket's allreduce finished while backward was still running";
}

}  // namespace
}  // namespace vlm
