// Pipeline parallelism (run under mpirun): pp=2, pp=3 and dp=2 x pp=2 equal the
// plain one-process reference loop (tests/reference_training.h) on the same
// global batch and micro-batching, for GPipe and 1F1B, with attention weights
// shared across stages; the copies of a shared weight stay bit-identical on
// every stage after every step.

#include <gtest/gtest.h>
#include <mpi.h>

#include <filesystem>
#include <set>
#include <sstream>

#include "comm/process_groups.h"
#include "comm/topology.h"
#include "model/parameters.h"
#include "proto/config_loader.h"
#include "checkpoint/format.h"
#include "tests/mpi_test_support.h"
#include "tests/reference_training.h"
#include "trainer/trainer.h"

namespace vlm {
namespace {

int stages_from_environment() {
  const char* text = std::getenv("VLM_TEST_PIPELINE_STAGES");
  return text == nullptr ? 2 : std::atoi(text);
}

// tiny_test: blocks V0 V1 | U0 M0 M1. The two vision blocks share one attention
// set, U0 and M0 another, M0 and M1 one image K/V: the cuts below split groups.
TrainConfig pipeline_config(int stages, int dp, const std::string& schedule, const std::vector<std::string>& more = {}) {
  std::vector<std::string> sets = more;
  sets.insert(sets.end(), {"parallel.pipeline_stages=" + std::to_string(stages), "parallel.schedule=" + schedule,
                                   "loop.micro_batches=4", "loop.global_batch_size=" + std::to_string(16 * dp),
                                   "loop.steps=5", "comm.first_bucket_bytes=4096", "comm.bucket_cap_bytes=32768",
                                   "optim.eps=1e-3"});  // Note [Parity and Adam's eps] (tests/dp_parity_test.cpp)
  if (stages == 2) sets.push_back("parallel.stage_starts=1");
  if (stages == 3) sets.push_back("parallel.stage_starts=[1, 4]");
  return load_config(std::string(VLM_SOURCE_DIR) + "/configs/tiny_test.pbtxt", sets);
}

uint64_t fingerprint(const torch::Tensor& t) {  // FNV-1a over the bytes
  const torch::Tensor c = t.contiguous();
  const auto* p = static_cast<const uint8_t*>(c.data_ptr());
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < c.nbytes(); ++i) h = (h ^ p[i]) * 1099511628211ULL;
  return h;
}

// Every rank's "name=fingerprint" lines, gathered to every rank.
std::vector<std::string> all_fingerprints(const std::string& mine) {
  int size = 0, length = static_cast<int>(mine.size());
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  std::vector<int> lengths(size), offsets(size, 0);
  MPI_Allgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, MPI_COMM_WORLD);
  for (int r = 1; r < size; ++r) offsets[r] = offsets[r - 1] + lengths[r - 1];
  std::string all(offsets.back() + lengths.back(), ' ');
  MPI_Allgatherv(mine.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(), MPI_CHAR, MPI_COMM_WORLD);
  std::vector<std::string> lines;
  std::stringstream in(all);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

void expect_parity(const std::string& schedule, bool keep_groups_together = false, int zero_stage = 0,
                   const std::vector<std::string>& model_sets = {}) {
  const int stages = stages_from_environment();
  const Topology topology = make_topology(detect_process(), stages, 0);
  TrainConfig config = pipeline_config(stages, topology.data_parallel, schedule, model_sets);
  config.mutable_optim()->set_zero_stage(zero_stage);
  if (keep_groups_together) {
    config.mutable_parallel()->clear_stage_starts();
    config.mutable_parallel()->set_keep_sharing_groups_together(true);
  }
  ProcessGroups groups(topology);
  Trainer pipeline(config, topology, groups, tiny_data());
  ReferenceTraining reference(config, tiny_data());
  const std::map<std::string, torch::Tensor> reference_parameters = reference.parameters_by_name();
  if (keep_groups_together) {
    EXPECT_TRUE(pipeline.tied_parameter_names().empty()) << "the partition split a sharing group";
  } else {
    ASSERT_FALSE(pipeline.tied_parameter_names().empty()) << "the cuts must split a sharing group";
  }

  for (int step = 0; step < config.loop().steps(); ++step) {
    const double a = pipeline.train_step().loss, b = reference.step();
    EXPECT_LE(std::abs(a - b), 1e-5 * std::abs(b)) << "step " << step << ": " << a << " vs " << b;
    for (const auto& p : pipeline.stage()->global_parameters()) {
      EXPECT_LE(relative_error(p.tensor, reference_parameters.at(p.name)), 1e-5)
          << "step " << step << ", stage " << topology.stage() << ": " << p.name;
    }
    // Copies of a weight shared across stages: bit-identical everywhere.
    std::string mine;
    for (const auto& name : pipeline.tied_parameter_names()) {
      for (const auto& p : pipeline.stage()->global_parameters()) {
        if (p.name == name) mine += name + "=" + std::to_string(fingerprint(p.tensor)) + "\n";
      }
    }
    std::map<std::string, std::set<std::string>> seen;
    for (const std::string& line : all_fingerprints(mine)) {
      const size_t eq = line.find('=');
      seen[line.substr(0, eq)].insert(line.substr(eq + 1));
    }
    for (const auto& [name, prints] : seen) EXPECT_EQ(prints.size(), 1u) << "copies of " << name << " differ at step " << step;
  }
  // The whole model, assembled on every rank for evaluation: each tensor
  // bit-identical to the stages' own, and so close to the reference.
  std::string mine;
  for (const auto& p : pipeline.stage()->global_parameters()) mine += p.name + "=" + std::to_string(fingerprint(p.tensor)) + "\n";
  std::map<std::string, std::string> held;
  for (const std::string& line : all_fingerprints(mine)) held[line.substr(0, line.find('='))] = line.substr(line.find('=') + 1);
  const VlmModel whole = pipeline.whole_model();
  size_t compared = 0;
  for (const auto& p : unique_parameters(*whole)) {
    EXPECT_EQ(std::to_string(fingerprint(p.tensor)), held.at(p.name)) << "assembled " << p.name;
    EXPECT_LE(relative_error(p.tensor, reference_parameters.at(p.name)), 1e-5) << "assembled " << p.name;
    ++compared;
  }
  EXPECT_EQ(compared, reference_parameters.size());
}

TEST(PipelineCheckpoint, ResumeIsBitExactAndLoadsWithoutPipeline) {
  const int stages = stages_from_environment();
  const Topology topology = make_topology(detect_process(), stages, 0);
  ProcessGroups groups(topology);
  TrainConfig config = pipeline_config(stages, topology.data_parallel, "ONE_F_ONE_B");
  config.mutable_loop()->set_steps(6);
  const SharedDirectory scratch("pipeline_resume");
  const std::string& root = scratch.path();
  Trainer straight(config, topology, groups, tiny_data());
  std::vector<double> losses;
  for (int i = 0; i < 6; ++i) losses.push_back(straight.train_step().loss);

  Trainer first(config, topology, groups, tiny_data());
  for (int i = 0; i < 3; ++i) first.train_step();
  first.save_checkpoint(root, 2);
  TrainConfig other_seed = config;
  other_seed.mutable_loop()->set_seed(999);
  Trainer resumed(other_seed, topology, groups, tiny_data());
  resumed.load_checkpoint(resolve_checkpoint(root, "latest"));
  for (int i = 3; i < 6; ++i) EXPECT_EQ(resumed.train_step().loss, losses[i]) << "step " << i;
  const auto& mine = resumed.stage()->global_parameters();
  const auto& reference = straight.stage()->global_parameters();
  for (size_t i = 0; i < mine.size(); ++i) {
    EXPECT_TRUE(torch::equal(mine[i].tensor, reference[i].tensor)) << mine[i].name << " differs after resume";
  }

  // The same checkpoint continued with the blocks cut elsewhere.
  TrainConfig moved = config;
  moved.mutable_parallel()->clear_stage_starts();
  if (stages == 2) moved.mutable_parallel()->add_stage_starts(3);
  if (stages == 3) moved.mutable_parallel()->add_stage_starts(2), moved.mutable_parallel()->add_stage_starts(3);
  Trainer repartitioned(moved, topology, groups, tiny_data());
  ASSERT_NE(repartitioned.stage_starts(), first.stage_starts());
  repartitioned.load_checkpoint(resolve_checkpoint(root, "latest"));
  EXPECT_NEAR(repartitioned.train_step().loss, losses[3], 1e-5 * std::abs(losses[3]));

  // And by one process without pipelining.
  TrainConfig single = config;
  single.mutable_parallel()->set_pipeline_stages(1);
  single.mutable_parallel()->clear_stage_starts();
  const Topology alone_topology = make_topology(ProcessInfo{0, 1, 0, 1}, 1, 1);
  ProcessGroups alone_groups(alone_topology, {}, MPI_COMM_SELF);
  Trainer alone(single, alone_topology, alone_groups, tiny_data());
  alone.load_checkpoint(resolve_checkpoint(root, "latest"));
  EXPECT_EQ(alone.steps_done(), 3);
  EXPECT_NEAR(alone.train_step().loss, losses[3], 1e-5 * std::abs(losses[3]));
}

TEST(PipelineParity, OneFOneBMatchesOneProcess) { expect_parity("ONE_F_ONE_B"); }
TEST(PipelineParity, GPipeMatchesOneProcess) { expect_parity("GPIPE"); }
// With dp > 1 (the 4-rank case), each stage's optimizer state is sharded
// over its replicas, and weights tied across stages stay bit-identical.
TEST(PipelineParity, ZeroOneMatchesOneProcess) { expect_parity("ONE_F_ONE_B", false, 1); }
// The cut after V0 splits the vision sharing group: its bias table is tied across stages.
TEST(PipelineParity, RelativePositionBiasMatchesOneProcess) {
  expect_parity("ONE_F_ONE_B", false, 0, {"model.vision.relative_position_bias=true"});
}
TEST(PipelineParity, ConvStemDropoutAndActivationCheckpointingMatchOneProcess) {
  expect_parity("ONE_F_ONE_B", false, 0,
                {"model.vision.conv_stem.channels=4", "model.dropout.attention=0.2", "model.dropout.head=0.25",
                 "model.dropout.token=0.3", "model.activation_checkpointing=true"});
}
// Pruned after block 0, the end of stage 0: the kept tokens' positions and gates cross the boundary.
TEST(PipelineParity, SaliencyGatingAndTokenPruningMatchOneProcess) {
  expect_parity("ONE_F_ONE_B", false, 0,
                {"model.saliency.enabled=true", "model.saliency.gate_vision=true",
                 "model.vision.token_pruning.keep_ratio=0.5", "model.vision.relative_position_bias=true"});
}
TEST(PipelineParity, PartitionKeepingSharingGroupsTogether) {
  if (stages_from_environment() > 2) GTEST_SKIP() << "tiny_test has only one cut between sharing groups (after the vision blocks)";
  expect_parity("ONE_F_ONE_B", true);
}

}  // namespace
}  // namespace vlm
