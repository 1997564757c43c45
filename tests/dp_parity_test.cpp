// Exact data-parallel semantics (run under mpirun with 1, 2 and 3 ranks): the
// trainer on N ranks with batch b trains the same model as the plain
// reference loop (tests/reference_training.h) on batch N x b, with shared
// attention weights on, with and without gradient accumulation, with and
// without overlapping the reduction with backward. Every rank also runs the
// reference itself.

#include <gtest/gtest.h>

#include <memory>

#include "comm/mpi_backend.h"
#include "comm/process_groups.h"
#include "comm/topology.h"
#include "model/parameters.h"
#include "proto/config_loader.h"
#include "tests/mpi_test_support.h"
#include "tests/reference_training.h"
#include "trainer/trainer.h"

namespace vlm {
namespace {

// Note [Parity and Adam's eps]: Adam's update g / (|g| + eps) normalises
// each element, so an element whose gradient is tiny against its
// neighbours' (3e-8 against 3e-4 happens in a LayerNorm bias) carries its
// summation-order noise, large relative to itself, into a full-size update:
// the parameters then differ far more than the gradients do. With eps = 1e-3,
// above every gradient here, the update is close to linear in g and the
// parameters differ as little as the gradients (1e-8 tried: passes or fails
// with the rounding of unrelated changes; 1e-6: worse).

// The parameters' relative bound: a gradient summed over shares of the batch
// and then over the shares rounds differently from one summed over the whole
// batch. With oneDNN's sgemm (Note [CPU sgemm]) the replicas' test with
// dropout reached 1.04e-5 after the first step (an attention output bias),
// where OpenBLAS had stayed below 1e-5.
constexpr double kParameterBound = 3e-5;

TrainConfig parity_config(int world, int micro_batches, bool overlap = true, std::vector<std::string> more = {}) {
  // Small buckets: several of them, so the reducer's ordering is exercised.
  more.insert(more.end(), {"loop.global_batch_size=" + std::to_string(12 * world),
                           "loop.micro_batches=" + std::to_string(micro_batches), "loop.steps=5",
                           "comm.first_bucket_bytes=4096", "comm.bucket_cap_bytes=32768", "optim.eps=1e-3",
                           std::string("comm.overlap=") + (overlap ? "true" : "false")});
  return load_config(std::string(VLM_SOURCE_DIR) + "/configs/tiny_test.pbtxt", more);
}

void expect_parity(int micro_batches, bool overlap = true, std::vector<std::string> more = {}) {
  const Topology topology = make_topology(detect_process(), 1, 0);
  const TrainConfig config = parity_config(topology.world_size(), micro_batches, overlap, more);
  ProcessGroups groups(topology);
  Trainer parallel(config, topology, groups, tiny_data());
  ReferenceTraining reference(config, tiny_data());
  const auto reference_parameters = reference.parameters_by_name();
  ASSERT_EQ(parallel.stage()->global_parameters().size(), reference_parameters.size());
  for (int step = 0; step < config.loop().steps(); ++step) {
    const double a = parallel.train_step().loss, b = reference.step();
    EXPECT_LE(std::abs(a - b), 1e-5 * std::abs(b)) << "step " << step << ": " << a << " vs " << b;
    double worst = 0;
    std::string worst_name;
    for (const auto& p : parallel.stage()->global_parameters()) {
      const double error = relative_error(p.tensor, reference_parameters.at(p.name));
      if (error > worst) worst = error, worst_name = p.name;
    }
    EXPECT_LE(worst, kParameterBound) << "step " << step << ": " << worst_name << " differs by " << worst << " (relative)";
  }
}

TEST(DataParallelParity, MatchesOneProcessOnTheGlobalBatch) { expect_parity(1); }

TEST(DataParallelParity, MatchesOneProcessWithGradientAccumulation) { expect_parity(3); }

TEST(DataParallelParity, MatchesOneProcessWithoutOverlap) { expect_parity(1, /*overlap=*/false); }

TEST(DataParallelParity, MatchesOneProcessWithRelativePositionBias) {
  expect_parity(1, true, {"model.vision.relative_position_bias=true"});
}

// The masks follow the samples (Note [Keyed dropout]); the recomputed blocks
// give the gradients of the stored ones.
TEST(DataParallelParity, MatchesOneProcessWithConvStemDropoutAndActivationCheckpointing) {
  expect_parity(3, true,
                {"model.vision.conv_stem.channels=4", "model.dropout.attention=0.2", "model.dropout.head=0.25",
                 "model.dropout.token=0.3", "model.activation_checkpointing=true"});
}

TEST(DataParallelParity, MatchesOneProcessWithSaliencyGatingAndTokenPruning) {
  expect_parity(1, true,
                {"model.saliency.enabled=true", "model.saliency.gate_vision=true",
                 "model.vision.token_pruning.keep_ratio=0.5", "model.vision.relative_position_bias=true",
                 "model.activation_checkpointing=true"});
}

int world_size() {
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

// Building a trainer of `config` on this job's ranks throws invalid_argument containing `message`.
void expect_refused(const TrainConfig& config, const std::string& message) {
  const Topology topology = make_topology(detect_process(), 1, 0);
  ProcessGroups groups(topology);
  try {
    Trainer trainer(config, topology, groups, tiny_data());
    ADD_FAILURE() << "the trainer was built; expected: " << message;
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
  }
}

// Note [Replicas in one process]: K replicas in one process train like K
// ranks, so like the reference on the whole batch.
TEST(ReplicasInOneProcess, MatchOneProcessOnTheGlobalBatch) {
  if (world_size() > 1) GTEST_SKIP() << "replicas are for a job of one process";
  expect_parity(1, true, {"parallel.replicas_per_process=2"});
  expect_parity(1, true, {"parallel.replicas_per_process=3"});
}

TEST(ReplicasInOneProcess, MatchOneProcessWithGradientAccumulationAndDropout) {
  if (world_size() > 1) GTEST_SKIP() << "replicas are for a job of one process";
  expect_parity(3, true, {"parallel.replicas_per_process=2"});
  expect_parity(3, true,
                {"parallel.replicas_per_process=2", "model.vision.conv_stem.channels=4", "model.dropout.attention=0.2",
                 "model.dropout.head=0.25", "model.dropout.token=0.3"});
}

// Activation checkpointing runs autograd inside each replica's backward.
TEST(ReplicasInOneProcess, MatchOneProcessWithCheckpointingSaliencyAndPruning) {
  if (world_size() > 1) GTEST_SKIP() << "replicas are for a job of one process";
  expect_parity(1, true,
                {"parallel.replicas_per_process=2", "model.saliency.enabled=true", "model.saliency.gate_vision=true",
                 "model.vision.token_pruning.keep_ratio=0.5", "model.activation_checkpointing=true"});
}

TEST(ReplicasInOneProcess, NeedABatchThatDividesAmongThem) {
  if (world_size() > 1) GTEST_SKIP() << "replicas are for a job of one process";
  expect_refused(parity_config(1, 1, true, {"parallel.replicas_per_process=5"}),  // batch 12
                 "must be divisible by parallel.replicas_per_process(5)");
}

// The replicas' gradients are added in replica order: the same every time.
TEST(ReplicasInOneProcess, TrainTheSameBitForBit) {
  if (world_size() > 1) GTEST_SKIP() << "replicas are for a job of one process";
  const Topology topology = make_topology(detect_process(), 1, 0);
  ProcessGroups groups(topology);
  const TrainConfig config = parity_config(1, 1, true, {"parallel.replicas_per_process=3"});
  Trainer first(config, topology, groups, tiny_data()), second(config, topology, groups, tiny_data());
  for (int step = 0; step < 3; ++step) {
    EXPECT_EQ(first.train_step().loss, second.train_step().loss) << "step " << step;
  }
  const auto& a = first.stage()->global_parameters();
  const auto& b = second.stage()->global_parameters();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i].tensor, b[i].tensor)) << a[i].name;
}

TEST(ReplicasInOneProcess, AreRefusedWithSeveralRanks) {
  if (world_size() < 2) GTEST_SKIP() << "needs 2 ranks";
  expect_refused(parity_config(world_size(), 1, true, {"parallel.replicas_per_process=2"}),
                 "parallel.replicas_per_process(2) needs a job of one process");
}

TEST(GradientReduction, BucketsCoverEachUniqueParameterOnce) {
  const Topology topology = make_topology(detect_process(), 1, 0);
  ProcessGroups groups(topology);
  const TrainConfig config = parity_config(topology.world_size(), 1);
  Trainer trainer(config, topology, groups, tiny_data());
  const std::vector<int64_t> buckets = trainer.bucket_bytes();
  int64_t total = 0;
  for (int64_t b : buckets) total += b;
  // A shared weight is one tensor: it is reduced once, not once per layer.
  EXPECT_EQ(total, 4 * unique_parameter_count(*trainer.stage()));
  EXPECT_GT(buckets.size(), 2u);
  EXPECT_GE(buckets.front(), 4096);   // the first bucket closes at first_bucket_bytes ...
  EXPECT_LT(buckets.front(), 32768);  // ... well below the cap of the others
}

TEST(GradientReduction, OverlapCompletesBucketsBeforeBackwardEnds) {
  const Topology topology = make_topology(detect_process(), 1, 0);
  if (topology.world_size() < 2) GTEST_SKIP() << "needs 2 ranks: nothing to reduce alone";
  ProcessGroups groups(topology);
  // A backward long enough for a bucket's allreduce to finish inside it even
  // when other tests share the cores (CI runs two at once).
  TrainConfig config = parity_config(topology.world_size(), 1);
  config.mutable_loop()->set_global_batch_size(48 * topology.world_size());
  Trainer trainer(config, topology, groups, tiny_data());
  int most = 0;
  for (int step = 0; step < 5; ++step) {
    const ReductionStats r = trainer.train_step().reduction;
    most = std::max(most, r.buckets_done_before_backward_end);
    EXPECT_GT(r.communication_seconds, 0.0);
  }
  EXPECT_GE(most, 1) << "no bucket's allreduce finished while backward was still running";
}

// ZeRO-1 (Note [ZeRO-1]) trains as plain DP does, side by side on the same
// ranks: only the gradient norm's summation order differs.
// Plain DP and ZeRO-1 trainers of one config, side by side on this job's ranks.
struct PlainAndSharded {
  explicit PlainAndSharded(int micro_batches) : config(parity_config(topology.world_size(), micro_batches)) {
    TrainConfig zero = config;
    zero.mutable_optim()->set_zero_stage(1);
    plain = std::make_unique<Trainer>(config, topology, groups, tiny_data());
    sharded = std::make_unique<Trainer>(zero, topology, groups, tiny_data());
  }
  Topology topology = make_topology(detect_process(), 1, 0);
  ProcessGroups groups{topology};
  TrainConfig config;
  std::unique_ptr<Trainer> plain, sharded;
};

TEST(ZeroOne, MatchesPlainDataParallel) {
  PlainAndSharded both(2);
  Trainer &plain = *both.plain, &sharded = *both.sharded;
  for (int step = 0; step < both.config.loop().steps(); ++step) {
    const double a = plain.train_step().loss, b = sharded.train_step().loss;
    EXPECT_LE(std::abs(a - b), 1e-6 * std::abs(a)) << "step " << step << ": " << a << " vs " << b;
    const auto& mine = sharded.stage()->global_parameters();
    const auto& theirs = plain.stage()->global_parameters();
    for (size_t i = 0; i < mine.size(); ++i) {
      EXPECT_LE(relative_error(mine[i].tensor, theirs[i].tensor), 1e-6) << "step " << step << ": " << mine[i].name;
    }
  }
}

// Every element's moments live on exactly one rank; no rank holds more than
// its even share and a padding element per bucket.
TEST(ZeroOne, EachRankHoldsItsShareOfTheOptimizerState) {
  PlainAndSharded both(1);
  Trainer &plain = *both.plain, &sharded = *both.sharded;
  const int64_t whole = plain.optimizer_state_bytes();
  EXPECT_EQ(whole, 2 * 4 * unique_parameter_count(*plain.stage()));
  const int64_t mine = sharded.optimizer_state_bytes();
  int64_t sum = 0, most = 0;
  MPI_Allreduce(&mine, &sum, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  MPI_Allreduce(&mine, &most, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
  EXPECT_EQ(sum, whole);
  const int64_t buckets = static_cast<int64_t>(sharded.bucket_bytes().size());
  EXPECT_LE(most, whole / both.topology.world_size() + 2 * 4 * buckets) << "of " << whole << " bytes on one rank";
}

// A parameter that gets no gradient in a step never fires its hook: finalize()
// must still reduce its bucket (zeros) instead of waiting for it, and the
// buckets after it, in strict order, as well.
TEST(GradientReduction, UnusedParameterKeepsAZeroGradientAndTheStepCompletes) {
  MpiBackend backend(MPI_COMM_WORLD, "world");
  const int rank = backend.rank(), size = backend.size();
  torch::Tensor used = torch::ones({8}).requires_grad_(), unused = torch::ones({5}).requires_grad_();
  ReducerOptions options;
  options.first_bucket_bytes = 16;  // `unused` (registered last, reduced first) fills the first bucket alone
  options.bucket_cap_bytes = 16;
  GradientReducer reducer({used, unused}, backend, options);
  ASSERT_EQ(reducer.bucket_bytes().size(), 2u);
  for (int round = 0; round < 3; ++round) {
    reducer.zero_grad();
    reducer.set_synchronize(true);
    (used * static_cast<float>(rank + 1 + round)).sum().backward();
    reducer.finalize();
    const float mean = (size + 1) / 2.0f + round;  // the mean over ranks of rank + 1 + round
    EXPECT_TRUE(torch::allclose(used.grad(), torch::full({8}, mean))) << round << ": " << used.grad();
    EXPECT_TRUE(unused.grad().eq(0).all().item<bool>()) << round << ": " << unused.grad();
  }
}

}  // namespace
}  // namespace vlm
