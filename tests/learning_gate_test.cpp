// The learning gate: with a fixed seed and a fixed number of steps on the PAIR
// task, held-out image->text R@1 over 100 distinct captions must reach 0.5
// (chance: 0.01). Asserts a result, not a time. Run under mpirun -np 2.

#include <gtest/gtest.h>

#include <thread>

#include "comm/process_groups.h"
#include "comm/threads.h"
#include "comm/topology.h"
#include "proto/config_loader.h"
#include "trainer/evaluate.h"
#include "trainer/trainer.h"

namespace vlm {
namespace {

TEST(LearningGate, PairRetrievalReachesHalf) {
  const Topology topology = make_topology(detect_process(), 1, 0);
  apply_thread_count(threads_per_rank(0, topology.process.cpus, topology.process.cpu_sharers));
  const TrainConfig config = load_config(std::string(VLM_SOURCE_DIR) + "/configs/tiny_test.pbtxt",
                                         {"data.task=PAIR", "data.train_samples=60000", "model.d_model=64",
                                          "model.heads=4", "model.embed_dim=64", "loop.steps=900",
                                          "loop.global_batch_size=128", "optim.warmup_steps=50", "optim.lr=2e-3"});
  const auto data = load_training_data(config.data());
  ProcessGroups groups(topology);
  Trainer trainer(config, topology, groups, *data);
  for (int step = 0; step < config.loop().steps(); ++step) trainer.train_step();

  VlmModel whole = trainer.whole_model();
  const auto [i2t, t2i] = pair_retrieval_r1(whole, *data, 7);
  if (topology.is_root()) std::printf("learning gate: image->text R@1 %.3f, text->image R@1 %.3f\n", i2t, t2i);
  EXPECT_GE(i2t, 0.5);
}

}  // namespace
}  // namespace vlm
