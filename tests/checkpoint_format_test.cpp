// Checkpoint files without ranks: every single flipped bit of a manifest or
// `latest` is caught, a sample of shard bits too; format-2 checkpoints (a
// committed fixture) still load; durable writes leave nothing behind when they
// fail; the folder rules (one job, no mixed runs) and pruning by lineage.

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>

#include "checkpoint/directory.h"
#include "checkpoint/durable_file.h"
#include "checkpoint/format.h"
#include "checkpoint/reader.h"
#include "checkpoint/restore.h"
#include "checkpoint/safetensors.h"
#include "checkpoint/writer.h"
#include "inference/trained_model.h"
#include "model/parameters.h"
#include "model/vlm.h"
#include "proto/config_loader.h"
#include "trainer/optimizer.h"
#include "trainer/setup.h"
#include "trainer/training_data.h"

namespace vlm {
namespace {

namespace fs = std::filesystem;

const std::string kFixture = std::string(VLM_SOURCE_DIR) + "/tests/fixtures/checkpoint-v2";
const std::string kFixtureStep = kFixture + "/ckpt/step-00000002";

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// A fresh folder under the test's temporary directory, removed afterwards.
class Scratch {
 public:
  explicit Scratch(const std::string& name)
      : path_((fs::temp_directory_path() / ("vlm_" + name + "_" + std::to_string(getpid()))).string()) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~Scratch() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

Manifest fixture_manifest() { return CheckpointReader(kFixtureStep).manifest(); }

TEST(CheckpointFormat, ManifestAndLatestRoundTrip) {
  Manifest m = fixture_manifest();
  m.set_format_version(kCheckpointFormatVersion);
  m.set_lineage_id(0x1234abcd5678ULL);
  const Manifest back = decode_manifest(encode_manifest(m), "test");
  EXPECT_EQ(back.SerializeAsString(), m.SerializeAsString());
  EXPECT_EQ(decode_latest(encode_latest("step-00000042"), "test"), "step-00000042");
  EXPECT_EQ(decode_latest("step-00000042\n", "test"), "step-00000042");  // format 2
}

TEST(CheckpointFormat, EverySingleBitFlipOfAManifestIsDetected) {
  Manifest m = fixture_manifest();  // a real manifest: 56 tensors, optimizer state, config, KV layout
  m.set_format_version(kCheckpointFormatVersion);
  const std::string good = encode_manifest(m);
  int64_t detected = 0;
  for (size_t byte = 0; byte < good.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string damaged = good;
      damaged[byte] = static_cast<char>(damaged[byte] ^ (1 << bit));
      try {
        decode_manifest(damaged, "manifest.pb");
        ADD_FAILURE() << "bit " << bit << " of byte " << byte << " flipped, and the manifest still decodes";
      } catch (const CheckpointError&) {
        ++detected;
      }
    }
  }
  EXPECT_EQ(detected, static_cast<int64_t>(good.size()) * 8);
}

TEST(CheckpointFormat, EverySingleBitFlipOfLatestIsDetected) {
  const std::string good = encode_latest("step-00000005");
  for (size_t byte = 0; byte < good.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string damaged = good;
      damaged[byte] = static_cast<char>(damaged[byte] ^ (1 << bit));
      EXPECT_THROW(decode_latest(damaged, "latest"), CheckpointError) << "bit " << bit << " of byte " << byte << ": '"
                                                                      << damaged << "'";
    }
  }
}

TEST(CheckpointFormat, SampledShardBitFlipsAndStrayBytesAreDetected) {
  Scratch scratch("shard_flips");
  const std::string copy = scratch.path() + "/step-00000002";
  fs::copy(kFixtureStep, copy);
  const std::string shard = copy + "/shard-00000.bin";
  const std::string good = read_bytes(shard);
  EXPECT_GT(CheckpointReader(copy).verify_all(), 0);
  // Every 97th bit (a prime, so every bit position within a byte is hit), plus the first and last.
  std::vector<size_t> bits;
  for (size_t b = 0; b < good.size() * 8; b += 97) bits.push_back(b);
  bits.push_back(good.size() * 8 - 1);
  for (size_t b : bits) {
    std::string damaged = good;
    damaged[b / 8] = static_cast<char>(damaged[b / 8] ^ (1 << (b % 8)));
    write_bytes(shard, damaged);
    EXPECT_THROW(CheckpointReader(copy).verify_all(), CheckpointError) << "bit " << b;
  }
  write_bytes(shard, good + "x");  // a byte no record covers
  EXPECT_THROW(CheckpointReader(copy).verify_all(), CheckpointError);
  write_bytes(shard, good);
  EXPECT_NO_THROW(CheckpointReader(copy).verify_all());
}

TEST(CheckpointFormat, Version2FixtureStillLoads) {
  const CheckpointReader reader(kFixtureStep);
  EXPECT_EQ(reader.manifest().format_version(), 2);
  EXPECT_EQ(resolve_checkpoint(kFixture + "/ckpt", "latest"), kFixtureStep);  // a format-2 `latest`
  EXPECT_EQ(reader.verify_all(), 3 * 4 * 3879);                              // parameters and two Adam moments

  const TrainConfig config = load_config(kFixture + "/config.pbtxt");
  const auto data = load_training_data(config.data());
  torch::manual_seed(99);  // other initial values: everything must come from the file
  VlmModel model(model_spec_for(config, *data));
  std::vector<AdamState> adam = AdamW(unique_parameters(*model), config.optim()).state();
  EXPECT_EQ(restore_checkpoint(reader, config, 0, unique_parameters(*model), &adam), 2);
  for (const auto& p : unique_parameters(*model)) {
    for (const auto& r : reader.manifest().tensors()) {
      if (r.name() != p.name) continue;
      torch::Tensor stored = torch::empty_like(p.tensor);
      reader.read(r, stored);
      EXPECT_TRUE(torch::equal(stored, p.tensor.detach())) << p.name;
    }
  }
  for (const AdamState& a : adam) {  // torch's AdamW wrote it: step 2, moments of two updates
    EXPECT_EQ(a.step, 2) << a.parameter;
    EXPECT_GT(a.exp_avg_sq.sum().item<double>(), 0) << a.parameter;
  }
}

// A stored config that no config file would pass (its checksum made to hold)
// is refused before a model is built from it, not a division by zero.
TEST(CheckpointFormat, AStoredModelConfigOutOfRangeIsRefused) {
  const Scratch scratch("stored_config");
  const std::string fixture = resolve_checkpoint(std::string(VLM_SOURCE_DIR) + "/tests/fixtures/checkpoint-v5/ckpt", "latest");
  const std::string step = scratch.path() + "/" + fs::path(fixture).filename().string();
  fs::copy(fixture, step);
  Manifest m = CheckpointReader(step).manifest();
  m.mutable_config()->mutable_model()->set_heads(0);
  write_bytes(step + "/manifest.pb", encode_manifest(m, m.format_version()));
  try {
    load_trained_model(step, "");
    FAIL() << "built a model with 0 heads";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find(step + " (its stored config):"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("model.heads = 0 is out of range"), std::string::npos) << e.what();
  }
}

// A shape that does not fit its bytes (negative, or overflowing) is named
// with its tensor when the checkpoint is opened; an empty manifest says so.
TEST(CheckpointFormat, ShapesThatDoNotFitTheirBytesAndEmptyManifestsAreNamed) {
  const Scratch scratch("bad_shapes");
  const std::string fixture = resolve_checkpoint(std::string(VLM_SOURCE_DIR) + "/tests/fixtures/checkpoint-v5/ckpt", "latest");
  const std::string step = scratch.path() + "/" + fs::path(fixture).filename().string();
  fs::copy(fixture, step);
  const Manifest good = CheckpointReader(step).manifest();
  for (const int64_t dim : {int64_t{-1}, int64_t{1} << 40}) {
    Manifest m = good;
    m.mutable_tensors(0)->set_shape(0, dim);
    write_bytes(step + "/manifest.pb", encode_manifest(m, m.format_version()));
    try {
      CheckpointReader reader(step);
      FAIL() << "opened a manifest with dimension " << dim;
    } catch (const CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find("tensor '" + good.tensors(0).name() + "': shape [" + std::to_string(dim)),
                std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("does not fit its"), std::string::npos) << e.what();
    }
  }
  write_bytes(step + "/manifest.pb", "");
  try {
    CheckpointReader reader(step);
    FAIL() << "opened an empty manifest";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("manifest.pb: empty (0 bytes)"), std::string::npos) << e.what();
  }
}

// Format 3 (before the data identity): loads, and passes the data check.
TEST(CheckpointFormat, Version3FixtureStillLoads) {
  const std::string fixture = std::string(VLM_SOURCE_DIR) + "/tests/fixtures/checkpoint-v3";
  const CheckpointReader reader(resolve_checkpoint(fixture + "/ckpt", "latest"));
  EXPECT_EQ(reader.manifest().format_version(), 3);
  EXPECT_FALSE(reader.manifest().has_data());
  EXPECT_GT(reader.verify_all(), 0);
  const TrainConfig config = load_config(fixture + "/config.pbtxt");
  const auto data = load_training_data(config.data());
  EXPECT_NO_THROW(check_same_data(reader, data_identity(*data, config.data())));
  torch::manual_seed(99);
  VlmModel model(model_spec_for(config, *data));
  std::vector<AdamState> adam = AdamW(unique_parameters(*model), config.optim()).state();
  EXPECT_EQ(restore_checkpoint(reader, config, 0, unique_parameters(*model), &adam), 2);
  EXPECT_EQ(adam.front().step, 2);
}

// Format 4 (one optimizer record per whole parameter, in its shape) loads
// into states cut anywhere, as ZeRO-1 shards of any DP size cut them: each
// piece holds exactly the record's values at its elements.
TEST(CheckpointFormat, Version4FixtureLoadsIntoShardedOptimizerState) {
  const std::string fixture = std::string(VLM_SOURCE_DIR) + "/tests/fixtures/checkpoint-v4";
  const CheckpointReader reader(resolve_checkpoint(fixture + "/ckpt", "latest"));
  EXPECT_EQ(reader.manifest().format_version(), 4);
  const TrainConfig config = load_config(fixture + "/config.pbtxt");
  const auto data = load_training_data(config.data());
  VlmModel model(model_spec_for(config, *data));
  std::vector<AdamState> pieces;  // every parameter in three uneven pieces (fewer when small)
  for (const auto& p : unique_parameters(*model)) {
    const int64_t n = p.tensor.numel(), cuts[] = {0, n / 3, n / 3 + n / 2, n};
    for (int i = 0; i < 3; ++i) {
      if (cuts[i + 1] > cuts[i]) {
        pieces.push_back({p.name, cuts[i], 0, torch::zeros({cuts[i + 1] - cuts[i]}), torch::zeros({cuts[i + 1] - cuts[i]})});
      }
    }
  }
  EXPECT_EQ(restore_checkpoint(reader, config, 0, unique_parameters(*model), &pieces), 2);
  std::map<std::string, const OptimizerRecord*> records;
  for (const auto& o : reader.manifest().optimizer()) records[o.parameter()] = &o;
  for (const AdamState& a : pieces) {
    const OptimizerRecord& o = *records.at(a.parameter);
    EXPECT_EQ(a.step, 2) << a.parameter;
    const std::vector<int64_t> shape(o.exp_avg().shape().begin(), o.exp_avg().shape().end());
    torch::Tensor whole = torch::empty(shape), whole_sq = torch::empty(shape);
    reader.read(o.exp_avg(), whole), reader.read(o.exp_avg_sq(), whole_sq);
    const int64_t n = a.exp_avg.numel();
    EXPECT_TRUE(torch::equal(a.exp_avg, whole.reshape({-1}).narrow(0, a.start, n))) << a.parameter << "@" << a.start;
    EXPECT_TRUE(torch::equal(a.exp_avg_sq, whole_sq.reshape({-1}).narrow(0, a.start, n))) << a.parameter << "@" << a.start;
  }
}

// Format 5 (before head counts in the KV-cache layout): loads and resumes.
TEST(CheckpointFormat, Version5FixtureStillLoads) {
  const std::string fixture = std::string(VLM_SOURCE_DIR) + "/tests/fixtures/checkpoint-v5";
  const CheckpointReader reader(resolve_checkpoint(fixture + "/ckpt", "latest"));
  EXPECT_EQ(reader.manifest().format_version(), 5);
  EXPECT_GT(reader.verify_all(), 0);
  const TrainConfig config = load_config(fixture + "/config.pbtxt");
  const auto data = load_training_data(config.data());
  EXPECT_NO_THROW(check_same_data(reader, data_identity(*data, config.data())));
  VlmModel model(model_spec_for(config, *data));
  std::vector<AdamState> adam = AdamW(unique_parameters(*model), config.optim()).state();
  EXPECT_EQ(restore_checkpoint(reader, config, 0, unique_parameters(*model), &adam), 2);
  EXPECT_EQ(adam.front().step, 2);
}

// Format 4 records the data: a resume on other data is refused, naming why.
TEST(CheckpointFormat, OtherDataIsRefusedOnResume) {
  Manifest m = fixture_manifest();
  m.set_format_version(kCheckpointFormatVersion);
  m.mutable_data()->set_samples(256);
  m.mutable_data()->set_vocab_size(39);
  Scratch scratch("data_identity");
  const std::string step = scratch.path() + "/step-00000002";
  fs::copy(kFixtureStep, step);
  write_bytes(step + "/manifest.pb", encode_manifest(m, m.format_version()));
  const CheckpointReader reader(step);
  DataIdentity now = m.data();
  EXPECT_NO_THROW(check_same_data(reader, now));
  now.set_samples(300);
  try {
    check_same_data(reader, now);
    ADD_FAILURE() << "other samples accepted";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("trained on 256 samples, the data now has 300"), std::string::npos) << e.what();
  }
  now = m.data();
  now.set_tokenizer_crc32c(12345);
  EXPECT_THROW(check_same_data(reader, now), CheckpointError);
  // The same count drawn with another seed or from another task: another order.
  m.mutable_data()->set_seed(1);
  m.mutable_data()->set_source("MIXED");
  write_bytes(step + "/manifest.pb", encode_manifest(m, m.format_version()));
  const CheckpointReader recorded(step);
  now = m.data();
  EXPECT_NO_THROW(check_same_data(recorded, now));
  for (const auto& [seed, source] : std::vector<std::pair<int64_t, std::string>>{{2, "MIXED"}, {1, "PAIR"}}) {
    now.set_seed(seed);
    now.set_source(source);
    try {
      check_same_data(recorded, now);
      ADD_FAILURE() << "seed " << seed << " from " << source << " accepted";
    } catch (const CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find("drew its samples with data.seed 1 from MIXED"), std::string::npos) << e.what();
    }
  }
}

TEST(DurableFile, AFailedWriteLeavesNeitherTheFileNorItsTemporary) {
  Scratch scratch("durable");
  const std::string path = scratch.path() + "/file";
  write_file_durably(path, "first");
  {
    DurableFile file(path);
    file.append("second, never committed", 23);
  }  // an error would unwind here
  EXPECT_EQ(read_bytes(path), "first");
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  try {
    write_file_durably(scratch.path() + "/no/such/dir/file", "x");
    FAIL() << "wrote into a missing directory";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("no/such/dir/file.tmp: open failed: No such file or directory"),
              std::string::npos)
        << e.what();
  }
}

// Complete checkpoint folders with only a manifest: enough for pruning.
void fake_checkpoint(const std::string& root, int64_t step, uint64_t lineage) {
  const std::string dir = root + "/" + step_directory_name(step);
  fs::create_directories(dir);
  Manifest m;
  m.set_format_version(kCheckpointFormatVersion);
  m.set_step(step);
  m.set_lineage_id(lineage);
  write_file_durably(dir + "/manifest.pb", encode_manifest(m));
}

TEST(CheckpointPruning, KeepsThisLineageNeverTheNewestAndNeverAnotherRuns) {
  Scratch scratch("prune");
  const std::string& root = scratch.path();
  for (int64_t step : {1, 2}) fake_checkpoint(root, step, /*lineage=*/1);  // another run's, older
  fake_checkpoint(root, 9, /*lineage=*/1);                                 // and newer
  fs::create_directories(root + "/step-00000000");                          // an unfinished save
  for (int64_t step : {3, 4, 5, 6}) {
    fake_checkpoint(root, step, /*lineage=*/2);
    write_file_durably(root + "/latest", encode_latest(step_directory_name(step)));
    EXPECT_EQ(prune_checkpoints(root, /*keep=*/2, step_directory_name(step), 2), "");
    EXPECT_EQ(read_latest(root), step_directory_name(step));
    EXPECT_TRUE(fs::exists(root + "/" + step_directory_name(step) + "/manifest.pb")) << "the one just written";
  }
  EXPECT_TRUE(fs::exists(root + "/step-00000005")) << "keep=2 of its lineage";
  for (int64_t step : {3, 4}) EXPECT_FALSE(fs::exists(root + "/" + step_directory_name(step))) << step;
  for (int64_t step : {1, 2, 9}) EXPECT_TRUE(fs::exists(root + "/" + step_directory_name(step))) << "another lineage's";
  EXPECT_FALSE(fs::exists(root + "/step-00000000")) << "unfinished and older";

  // What `latest` names is never deleted, even when pruning would take it
  // (here it points back at step 5 while step 7 is written).
  write_file_durably(root + "/latest", encode_latest("step-00000005"));
  fake_checkpoint(root, 7, 2);
  EXPECT_EQ(prune_checkpoints(root, /*keep=*/1, "step-00000007", 2), "");
  EXPECT_TRUE(fs::exists(root + "/step-00000005")) << "named by latest";
  EXPECT_FALSE(fs::exists(root + "/step-00000006")) << "beyond keep=1 of its lineage";
  // A `latest` that cannot be read: nothing is deleted, and the problem is returned.
  write_bytes(root + "/latest", "garbage");
  fake_checkpoint(root, 8, 2);
  EXPECT_NE(prune_checkpoints(root, 1, "step-00000008", 2), "");
  EXPECT_TRUE(fs::exists(root + "/step-00000007"));
}

TEST(CheckpointDirectory, ASecondJobIsRefused) {
  Scratch scratch("lock");
  CheckpointDirectoryLock first(scratch.path());
  try {
    CheckpointDirectoryLock second(scratch.path());
    FAIL() << "two jobs hold one checkpoint folder";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("is in use by another job (pid " + std::to_string(getpid())), std::string::npos)
        << e.what();
  }
}

TEST(CheckpointDirectory, AFreshRunIntoUsedFolderIsRefusedUnlessToldToOverwrite) {
  Scratch scratch("fresh");
  const std::string& root = scratch.path();
  for (int64_t step : {3, 6}) fake_checkpoint(root, step, 1);
  write_file_durably(root + "/latest", encode_latest("step-00000006"));
  EXPECT_NO_THROW(check_checkpoint_root(root, 6, false));  // resuming the newest: nothing in the way
  try {
    check_checkpoint_root(root, -1, false);
    FAIL() << "a fresh run would mix with another run's checkpoints";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("holds step-00000003, step-00000006, but this run starts fresh"),
              std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("checkpoint.overwrite=true"), std::string::npos);
  }
  try {
    check_checkpoint_root(root, 3, false);
    FAIL() << "resuming step 3 would collide with step 6";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("holds step-00000006, later than the step 3"), std::string::npos) << e.what();
  }
  fs::create_directories(root + "/step-00000009");  // an unfinished save: never in the way
  EXPECT_NO_THROW(check_checkpoint_root(root, 3, /*overwrite=*/true));
  EXPECT_TRUE(fs::exists(root + "/step-00000006")) << "the check deletes nothing: the clear, after start-up, does";
  clear_checkpoint_root(root, 3);
  EXPECT_EQ(read_latest(root), "step-00000003");
  EXPECT_FALSE(fs::exists(root + "/step-00000006"));
  EXPECT_FALSE(fs::exists(root + "/step-00000009"));
  clear_checkpoint_root(root, -1);
  EXPECT_EQ(read_latest(root), "");
  EXPECT_FALSE(fs::exists(root + "/step-00000003"));
}

// A kill between a save's manifest and its `latest` leaves a complete
// checkpoint that `latest` does not name: a resume through `latest` takes the
// newest of that lineage, never another run's.
TEST(CheckpointDirectory, ASaveCutShortBeforeLatestIsRecovered) {
  Scratch scratch("recover");
  const std::string& root = scratch.path();
  EXPECT_EQ(recover_latest(root), "") << "no latest: nothing to recover";
  for (int64_t step : {2, 4, 6}) fake_checkpoint(root, step, /*lineage=*/1);
  fake_checkpoint(root, 8, /*lineage=*/2);           // another run's
  fs::create_directories(root + "/step-00000010");  // unfinished
  write_file_durably(root + "/latest", encode_latest("step-00000006"));
  EXPECT_EQ(recover_latest(root), "") << "latest names the newest of its lineage";
  EXPECT_EQ(read_latest(root), "step-00000006");
  write_file_durably(root + "/latest", encode_latest("step-00000002"));  // the saves of 4 and 6 were cut short
  EXPECT_EQ(recover_latest(root), "step-00000006");
  EXPECT_EQ(read_latest(root), "step-00000006");
  EXPECT_THROW(check_checkpoint_root(root, 6, false), CheckpointError) << "another run's step-00000008 is still in the way";
  // The first save cut short: no latest. One run's checkpoints are recovered, a mix of runs' never.
  fs::remove(root + "/latest");
  EXPECT_EQ(recover_latest(root), "") << "two lineages: whose?";
  fs::remove_all(root + "/step-00000008");
  EXPECT_EQ(recover_latest(root), "step-00000006");
  EXPECT_EQ(read_latest(root), "step-00000006");
}

TEST(CheckpointDirectory, AnUnwritableFolderIsNamed) {
  Scratch scratch("unwritable");
  const std::string file = scratch.path() + "/a-file";
  write_bytes(file, "not a folder");
  try {
    check_writable(file + "/checkpoints");
    FAIL();
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find(file + "/checkpoints: cannot create the directory"), std::string::npos)
        << e.what();
  }
}

TEST(CheckpointFormat, LatestResolvesFromTheFileItself) {
  Scratch scratch("resolve");
  fake_checkpoint(scratch.path(), 7, 1);
  write_file_durably(scratch.path() + "/latest", encode_latest("step-00000007"));
  const std::string step = scratch.path() + "/step-00000007";
  EXPECT_EQ(resolve_checkpoint("", scratch.path() + "/latest"), step);  // vlm-ckpt verify DIR/latest
  EXPECT_EQ(resolve_checkpoint("", scratch.path()), step);
  EXPECT_EQ(resolve_checkpoint(scratch.path(), "latest"), step);
  EXPECT_EQ(resolve_checkpoint("", step), step);
}

// ROOT/best: resolved like latest, never pruned, and removed with the
// checkpoint it names when a run overwrites it.
TEST(CheckpointFormat, BestIsResolvedKeptAndRemovedWithItsCheckpoint) {
  Scratch scratch("best");
  const std::string& root = scratch.path();
  for (int64_t step : {1, 2, 3}) fake_checkpoint(root, step, 2);
  write_file_durably(root + "/best", encode_latest("step-00000001"));
  write_file_durably(root + "/latest", encode_latest("step-00000003"));
  EXPECT_EQ(resolve_checkpoint(root, "best"), root + "/step-00000001");
  EXPECT_EQ(resolve_checkpoint("", root + "/best"), root + "/step-00000001");
  EXPECT_EQ(prune_checkpoints(root, /*keep=*/1, "step-00000003", 2), "");
  EXPECT_TRUE(fs::exists(root + "/step-00000001")) << "named by best";
  EXPECT_FALSE(fs::exists(root + "/step-00000002"));
  clear_checkpoint_root(root, 3);  // resuming the newest: best stays
  EXPECT_EQ(read_pointer(root, "best"), "step-00000001");
  write_file_durably(root + "/best", encode_latest("step-00000003"));
  clear_checkpoint_root(root, 1);  // step 3 goes, and best with it
  EXPECT_FALSE(fs::exists(root + "/best"));
  EXPECT_EQ(read_latest(root), "step-00000001");
  EXPECT_THROW(resolve_checkpoint(root, "best"), CheckpointError);
  // A damaged best protects nothing, and pruning goes on, saying so.
  fake_checkpoint(root, 4, 2);
  fake_checkpoint(root, 5, 2);
  write_file_durably(root + "/latest", encode_latest("step-00000005"));
  write_bytes(root + "/best", "garbage");
  EXPECT_NE(prune_checkpoints(root, /*keep=*/1, "step-00000005", 2), "");
  EXPECT_FALSE(fs::exists(root + "/step-00000004"));
}

// safetensors (checkpoint/safetensors.h): the header read as JSON by
// protobuf's parser, and every tensor's bytes equal to the checkpoint's.
TEST(Safetensors, HoldsEveryTensorOfTheCheckpointBitForBit) {
  Scratch scratch("safetensors");
  const std::string fixture = std::string(VLM_SOURCE_DIR) + "/tests/fixtures/checkpoint-v3";
  const CheckpointReader reader(resolve_checkpoint(fixture + "/ckpt", "latest"));
  const std::string out = scratch.path() + "/model.safetensors";
  export_safetensors(reader.directory(), out);
  const std::string bytes = read_bytes(out);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  ASSERT_EQ(n % 8, 0u);
  google::protobuf::Struct header;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(bytes.substr(8, n), &header).ok());
  const auto& fields = header.fields();
  EXPECT_EQ(fields.at("__metadata__").struct_value().fields().at("format").string_value(), "pt");
  int64_t covered = 0;
  for (const TensorRecord& r : reader.manifest().tensors()) {
    ASSERT_TRUE(fields.count(r.name())) << r.name();
    const auto& entry = fields.at(r.name()).struct_value().fields();
    EXPECT_EQ(entry.at("dtype").string_value(), "F32");
    const auto& offsets = entry.at("data_offsets").list_value().values();
    const auto begin = static_cast<size_t>(offsets[0].number_value()), end = static_cast<size_t>(offsets[1].number_value());
    torch::Tensor stored = torch::empty(std::vector<int64_t>(r.shape().begin(), r.shape().end()));
    reader.read(r, stored);
    ASSERT_EQ(end - begin, stored.nbytes()) << r.name();
    EXPECT_EQ(std::memcmp(bytes.data() + 8 + n + begin, stored.data_ptr(), stored.nbytes()), 0) << r.name();
    covered += static_cast<int64_t>(end - begin);
  }
  EXPECT_EQ(fields.size(), static_cast<size_t>(reader.manifest().tensors_size()) + 1);  // and __metadata__
  EXPECT_EQ(static_cast<int64_t>(bytes.size() - 8 - n), covered) << "nothing but the tensors after the header";
}

}  // namespace
}  // namespace vlm
