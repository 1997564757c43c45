// Checkpoints (run under mpirun -np 2): bit-exact resume, damaged input gives
// its message, a different DP size loads, the KV-cache layout matches the model.

#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

#include "comm/process_groups.h"
#include "comm/topology.h"
#include "model/parameters.h"
#include "proto/config_loader.h"
#include "checkpoint/reader.h"
#include "checkpoint/restore.h"
#include "checkpoint/saver.h"
#include "model/kv_cache_layout.h"
#include "tests/mpi_test_support.h"
#include "trainer/setup.h"
#include "trainer/trainer.h"

namespace vlm {
namespace {

namespace fs = std::filesystem;

const TensorRecord* find_record(const Manifest& manifest, const std::string& name) {
  for (const auto& r : manifest.tensors()) {
    if (r.name() == name) return &r;
  }
  ADD_FAILURE() << "no record for " << name;
  static const TensorRecord none;
  return &none;
}

TrainConfig config_with(int world, std::vector<std::string> more = {}) {
  more.push_back("loop.global_batch_size=" + std::to_string(16 * 2));  // the same for 1 and 2 ranks
  more.push_back("loop.steps=6");
  return load_config(std::string(VLM_SOURCE_DIR) + "/configs/tiny_test.pbtxt", more);
}

class Checkpoint : public ::testing::Test {
 protected:
  Topology topology_ = make_topology(detect_process(), 1, 0);
  ProcessGroups groups_{topology_};

  // 6 steps straight against 3 steps, a save, and a resume by a trainer of
  // another initialisation seed (everything must come from the checkpoint)
  // for 3 more: the same losses and parameters, bit for bit. `check_saved`
  // looks at the checkpoint first.
  void expect_bit_exact_resume(const std::string& name, const std::vector<std::string>& sets,
                               const std::function<void(const CheckpointReader&)>& check_saved = nullptr) {
    const SharedDirectory scratch(name);
    const std::string& root = scratch.path();
    const TrainConfig config = config_with(topology_.world_size(), sets);
    Trainer straight(config, topology_, groups_, tiny_data());
    std::vector<double> losses;
    for (int i = 0; i < 6; ++i) losses.push_back(straight.train_step().loss);

    Trainer first(config, topology_, groups_, tiny_data());
    for (int i = 0; i < 3; ++i) ASSERT_EQ(first.train_step().loss, losses[i]);
    first.save_checkpoint(root, 2);
    if (check_saved) check_saved(CheckpointReader(resolve_checkpoint(root, "latest")));
    std::vector<std::string> other_seed = sets;
    other_seed.push_back("loop.seed=999");
    Trainer resumed(config_with(topology_.world_size(), other_seed), topology_, groups_, tiny_data());
    resumed.load_checkpoint(resolve_checkpoint(root, "latest"));
    EXPECT_EQ(resumed.steps_done(), 3);
    for (int i = 3; i < 6; ++i) EXPECT_EQ(resumed.train_step().loss, losses[i]) << "step " << i;
    EXPECT_TRUE(parameter_bytes(*resumed.stage()) == parameter_bytes(*straight.stage())) << "parameters differ after resume";
  }
};

TEST_F(Checkpoint, ResumeIsBitExact) { expect_bit_exact_resume("resume", {}); }

// The stem's and saliency head's tensors are checkpointed; the dropout masks
// of steps 3-5 are the same after the resume; the manifest's KV-cache layout
// counts the image tokens left after pruning (32 x 0.5).
TEST_F(Checkpoint, ResumeWithTheAttentionToolboxIsBitExact) {
  expect_bit_exact_resume("resume-toolbox",
                          {"model.vision.conv_stem.channels=4", "model.dropout.attention=0.2", "model.dropout.head=0.25",
                           "model.dropout.token=0.3", "model.saliency.enabled=true",
                           "model.vision.token_pruning.keep_ratio=0.5"},
                          [](const CheckpointReader& saved) {
                            EXPECT_EQ(saved.manifest().kv_cache().image_tokens(), 16);
                            EXPECT_EQ(find_record(saved.manifest(), "conv_stem.input.weight")->name(), "conv_stem.input.weight");
                            EXPECT_EQ(find_record(saved.manifest(), "saliency.score.weight")->name(), "saliency.score.weight");
                          });
}

TEST_F(Checkpoint, AsyncSaveCapturesTheStepBoundaryWhileTrainingGoesOn) {
  const SharedDirectory scratch("async");
  const std::string& root = scratch.path();
  const TrainConfig config = config_with(topology_.world_size());
  Trainer straight(config, topology_, groups_, tiny_data());
  std::vector<double> losses;
  for (int i = 0; i < 6; ++i) losses.push_back(straight.train_step().loss);

  Trainer first(config, topology_, groups_, tiny_data());
  for (int i = 0; i < 3; ++i) first.train_step();
  first.save_checkpoint(root, 2, /*async=*/true);
  first.train_step();  // changes every parameter while the save may still be copying or writing
  first.train_step();
  first.wait_for_checkpoint();
  Trainer resumed(config_with(topology_.world_size(), {"loop.seed=999"}), topology_, groups_, tiny_data());
  resumed.load_checkpoint(resolve_checkpoint(root, "latest"));
  EXPECT_EQ(resumed.steps_done(), 3);
  for (int i = 3; i < 6; ++i) EXPECT_EQ(resumed.train_step().loss, losses[i]) << "step " << i;
}

// The asynchronous contract: once wait_until_copied() returns, the live
// tensors may change (the optimizer step) without reaching the checkpoint.
TEST_F(Checkpoint, AsyncSaveWritesTheTensorsAsTheyWereAtSave) {
  const SharedDirectory scratch("async_copy");
  const std::string& root = scratch.path();
  Trainer trainer(config_with(topology_.world_size()), topology_, groups_, tiny_data());
  trainer.train_step();  // creates the optimizer state
  // This replica's parameters at the save: every replica holds the same, so
  // on every rank the file must hold exactly these (rank 0 writes them).
  std::map<std::string, torch::Tensor> replica_at_save;
  for (const auto& p : trainer.stage()->global_parameters()) replica_at_save[p.name] = p.tensor.detach().clone();
  CheckpointSnapshot live = trainer.snapshot();
  if (!live.parameters.empty()) {
    // Large enough that writing it takes longer than changing it: were the
    // save to read the live tensors after wait_until_copied(), it would see NaN.
    live.parameters.push_back({"large", {}, torch::rand({8 << 20})});
  }
  std::vector<torch::Tensor> before;
  for (const auto& p : live.parameters) before.push_back(p.tensor.clone());
  for (const auto& o : live.optimizer) before.push_back(o.exp_avg.clone());
  {
    AsyncCheckpointer async(groups_.checkpoint(), kDefaultTimeout);
    async.save(live, root, 2);
    async.wait_until_copied();
    torch::NoGradGuard no_grad;
    for (const auto& p : live.parameters) p.tensor.fill_(std::nanf(""));  // what a later step would do, at worst
    for (const auto& o : live.optimizer) o.exp_avg.fill_(std::nanf(""));
    for (const auto& p : trainer.stage()->global_parameters()) p.tensor.detach().fill_(std::nanf(""));
    async.wait();
  }
  {
    const CheckpointReader reader(resolve_checkpoint(root, "latest"));
    for (const auto& [name, value] : replica_at_save) {
      torch::Tensor saved = torch::empty_like(value);
      EXPECT_NO_THROW(reader.read(*find_record(reader.manifest(), name), saved)) << name;
      EXPECT_TRUE(torch::equal(saved, value)) << "rank " << topology_.rank() << ": " << name
                                              << " in the file is not this replica's value at the save";
    }
  }
  auto expect_saved_as_before = [&] {
    const CheckpointReader reader(resolve_checkpoint(root, "latest"));
    size_t next = 0;
    for (const auto& p : live.parameters) {
      torch::Tensor saved = torch::empty_like(before[next]);
      reader.read(*find_record(reader.manifest(), p.name), saved);
      EXPECT_TRUE(torch::equal(saved, before[next++])) << p.name;
    }
    for (const auto& o : reader.manifest().optimizer()) {
      torch::Tensor saved = torch::empty_like(before[next]);
      reader.read(o.exp_avg(), saved);
      EXPECT_TRUE(torch::equal(saved, before[next++])) << o.parameter();
    }
    EXPECT_EQ(next, before.size());
  };
  // A damaged file fails the test with the reader's message.
  if (topology_.dp_rank() == 0) {
    EXPECT_NO_THROW(expect_saved_as_before());
    // The large tensor spans several read chunks, in an exported file too (offset by its header).
    const std::string exported = root + "/model.vlm";
    EXPECT_NO_THROW({
      export_model(resolve_checkpoint(root, "latest"), exported);
      const CheckpointReader reader(exported);
      torch::Tensor large = torch::empty_like(before[live.parameters.size() - 1]);
      reader.read(*find_record(reader.manifest(), "large"), large);
      EXPECT_TRUE(torch::equal(large, before[live.parameters.size() - 1]));
    });
  }
}

// A save that fails on one rank (here rank 0 cannot create the directory;
// the other ranks write no tensors) fails on every rank, never hangs them.
TEST_F(Checkpoint, AFailureOnOneRankFailsTheSaveOnEveryRank) {
  const SharedDirectory scratch("not_a_directory");
  const std::string& blocker = scratch.path();
  if (topology_.is_root()) std::ofstream(blocker) << "a file where a directory should be";
  MPI_Barrier(MPI_COMM_WORLD);
  Trainer trainer(config_with(topology_.world_size()), topology_, groups_, tiny_data());
  trainer.train_step();
  trainer.save_checkpoint(blocker + "/checkpoints", 2, /*async=*/true);
  trainer.train_step();  // the optimizer step's wait for the copy returns: the copy succeeded
  try {
    trainer.wait_for_checkpoint();
    ADD_FAILURE() << "the save should have failed";
  } catch (const std::exception& e) {
    const std::string message = e.what();
    if (topology_.is_root()) {
      EXPECT_NE(message.find("not_a_directory"), std::string::npos) << message;
    } else {
      EXPECT_NE(message.find("rank 0 failed to write its part of"), std::string::npos) << message;
    }
  }
}

TEST_F(Checkpoint, SharedTensorsAreStoredOnceAndVerify) {
  const SharedDirectory scratch("once");
  const std::string& root = scratch.path();
  Trainer trainer(config_with(topology_.world_size()), topology_, groups_, tiny_data());
  trainer.train_step();
  trainer.save_checkpoint(root, 2);
  const CheckpointReader reader(resolve_checkpoint(root, "latest"));
  int64_t stored = 0, aliases = 0;
  for (const auto& r : reader.manifest().tensors()) {
    stored += static_cast<int64_t>(r.length()) / 4;
    aliases += r.aliases_size();
  }
  EXPECT_EQ(stored, unique_parameter_count(*trainer.stage()));
  EXPECT_GT(aliases, 0) << "tiny_test shares attention weights";
  EXPECT_EQ(reader.verify_all(), 3 * 4 * unique_parameter_count(*trainer.stage()));  // parameters + two Adam moments
}

TEST_F(Checkpoint, DamagedInputIsAClearError) {
  const SharedDirectory scratch("damage");
  const std::string& root = scratch.path();
  const TrainConfig config = config_with(topology_.world_size());
  Trainer trainer(config, topology_, groups_, tiny_data());
  trainer.train_step();
  trainer.save_checkpoint(root, 2);
  const std::string good = resolve_checkpoint(root, "latest");
  auto damaged_copy = [&](const std::string& name) {
    const std::string copy = root + "/rank" + std::to_string(topology_.rank()) + "-" + name;
    fs::copy(good, copy, fs::copy_options::recursive);
    return copy;
  };
  auto error_of = [&](const std::string& directory, const TrainConfig& c) {
    Trainer victim(c, topology_, groups_, tiny_data());
    try {
      victim.load_checkpoint(directory);
    } catch (const CheckpointError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  const std::string missing = damaged_copy("missing");
  fs::remove(missing + "/shard-00000.bin");
  EXPECT_NE(error_of(missing, config).find("missing shard"), std::string::npos);

  const std::string truncated = damaged_copy("truncated");
  fs::resize_file(truncated + "/shard-00000.bin", fs::file_size(truncated + "/shard-00000.bin") / 2);
  EXPECT_NE(error_of(truncated, config).find("truncated"), std::string::npos);

  const std::string flipped = damaged_copy("flipped");
  {
    std::fstream f(flipped + "/shard-00000.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(1000);
    char byte = 0;
    f.read(&byte, 1);
    byte ^= 0x10;
    f.seekp(1000);
    f.write(&byte, 1);
  }
  EXPECT_NE(error_of(flipped, config).find("checksum mismatch"), std::string::npos);

  const std::string newer = damaged_copy("newer");
  {
    std::ofstream(newer + "/manifest.pb", std::ios::binary | std::ios::trunc)
        << encode_manifest(CheckpointReader(good).manifest(), kCheckpointFormatVersion + 1);
  }
  EXPECT_NE(error_of(newer, config).find("is newer than this vlmtrain reads"), std::string::npos);

  // A step directory without its manifest is a save that did not finish; another folder is no checkpoint at all.
  const std::string renamed = damaged_copy("unfinished");
  fs::remove(renamed + "/manifest.pb");
  EXPECT_NE(error_of(renamed, config).find("not a checkpoint (no manifest.pb, no latest)"), std::string::npos);
  const std::string unfinished = renamed + "-root/" + fs::path(good).filename().string();
  fs::create_directories(renamed + "-root");
  fs::rename(renamed, unfinished);
  EXPECT_NE(error_of(unfinished, config).find("not a complete checkpoint"), std::string::npos);

  const std::string other_model = error_of(good, config_with(topology_.world_size(), {"model.d_model=48", "model.heads=2"}));
  EXPECT_NE(other_model.find("d_model"), std::string::npos) << other_model;
  const std::string other_sharing =
      error_of(good, config_with(topology_.world_size(), {"model.text.self_attn_share_group=1"}));
  EXPECT_NE(other_sharing.find("self_attn_share_group"), std::string::npos) << other_sharing;
}

TEST_F(Checkpoint, LoadsIntoADifferentDataParallelSize) {
  const SharedDirectory scratch("reshard");
  const std::string& root = scratch.path();
  const TrainConfig config = config_with(topology_.world_size());
  Trainer two(config, topology_, groups_, tiny_data());
  for (int i = 0; i < 3; ++i) two.train_step();
  two.save_checkpoint(root, 2);
  // The same checkpoint, continued by this job (2 ranks) and by one process.
  const Topology alone = make_topology(ProcessInfo{0, 1, 0, 1}, 1, 1);
  ProcessGroups alone_groups(alone, {}, MPI_COMM_SELF);
  Trainer one(config, alone, alone_groups, tiny_data());
  one.load_checkpoint(resolve_checkpoint(root, "latest"));
  EXPECT_EQ(one.steps_done(), 3);
  const double continued_by_two = two.train_step().loss, continued_by_one = one.train_step().loss;
  EXPECT_NEAR(continued_by_one, continued_by_two, 1e-5 * std::abs(continued_by_two));
}

// ZeRO-1: each rank writes its shard of the optimizer state, and a resume
// on the same ranks continues bit for bit.
TEST_F(Checkpoint, ZeroOneResumeIsBitExact) {
  expect_bit_exact_resume("zero_resume", {"optim.zero_stage=1"}, [&](const CheckpointReader& reader) {
    std::set<std::string> shards;
    for (const auto& o : reader.manifest().optimizer()) shards.insert(o.exp_avg().shard());
    EXPECT_EQ(shards.size(), static_cast<size_t>(topology_.world_size())) << "each rank writes its optimizer shard";
    EXPECT_GT(reader.verify_all(), 0);
  });
}

// Sharded state loads into one process (whole state), and whole state into
// sharded ranks: both continue as the run that wrote it.
TEST_F(Checkpoint, ZeroOneStateLoadsIntoAnotherDataParallelSize) {
  const SharedDirectory scratch("zero_reshard");
  const std::string& root = scratch.path();
  const TrainConfig sharded = config_with(topology_.world_size(), {"optim.zero_stage=1"});
  Trainer two(sharded, topology_, groups_, tiny_data());
  for (int i = 0; i < 3; ++i) two.train_step();
  two.save_checkpoint(root, 2);
  const Topology alone = make_topology(ProcessInfo{0, 1, 0, 1}, 1, 1);
  ProcessGroups alone_groups(alone, {}, MPI_COMM_SELF);
  Trainer one(config_with(1), alone, alone_groups, tiny_data());
  one.load_checkpoint(resolve_checkpoint(root, "latest"));
  EXPECT_EQ(one.steps_done(), 3);
  const double by_two = two.train_step().loss, by_one = one.train_step().loss;
  EXPECT_NEAR(by_one, by_two, 1e-5 * std::abs(by_two));
  EXPECT_EQ(one.steps_done(), 4);

  // One process's whole state (rank 0's, saved alone), resumed sharded by this job.
  const std::string alone_root = root + "/alone-" + std::to_string(topology_.rank());
  one.save_checkpoint(alone_root, 2);
  Trainer again(sharded, topology_, groups_, tiny_data());
  again.load_checkpoint(resolve_checkpoint(alone_root, "latest"));
  const double continued = again.train_step().loss, reference = two.train_step().loss;
  EXPECT_NEAR(continued, reference, 1e-5 * std::abs(reference));
}

TEST_F(Checkpoint, ExportedModelLoadsForInference) {
  const SharedDirectory scratch("export");
  const std::string& root = scratch.path();
  const TrainConfig config = config_with(topology_.world_size());
  Trainer trainer(config, topology_, groups_, tiny_data());
  trainer.train_step();
  trainer.save_checkpoint(root, 2);
  const std::string file = root + "/model-rank" + std::to_string(topology_.rank()) + ".vlm";
  export_model(resolve_checkpoint(root, "latest"), file);
  // A fresh model of the same config (other seed), filled from the one file.
  torch::manual_seed(12345);
  VlmModel model(model_spec_for(config, tiny_data()));
  const CheckpointReader exported(file);
  EXPECT_EQ(exported.manifest().optimizer_size(), 0);
  EXPECT_EQ(exported.manifest().kv_cache().bytes_per_image(), kv_cache_layout(model->spec()).bytes_per_image());
  restore_checkpoint(exported, config, topology_.rank(), unique_parameters(*model), nullptr);
  EXPECT_TRUE(parameter_bytes(*model) == parameter_bytes(*trainer.whole_model()));
}

TEST(KvCacheLayout, MatchesTheModelsCache) {
  for (int64_t share : {1, 2, 0}) {
    ModelSpec spec;
    spec.image_width = 56;
    spec.multimodal_layers = 3;
    spec.cross_kv_share = share;
    VlmModel model(spec);
    torch::NoGradGuard no_grad;
    const DecodeState state = model->start_decoding(torch::zeros({1, 1, 28, 56}));
    const KvCacheLayout layout = kv_cache_layout(spec);
    EXPECT_EQ(layout.bytes_per_image(), image_kv_bytes(state.image_kv)) << share;
    int64_t per_token = 0;
    for (const auto& kv : state.self_kv) per_token += (kv.k.nbytes() + kv.v.nbytes()) / kv.k.size(2);
    EXPECT_EQ(layout.bytes_per_token(), per_token);
    EXPECT_EQ(layout.layers_size(), spec.text_layers());
  }
}

}  // namespace
}  // namespace vlm
