// Data-parallel training with real MPI ranks (run under mpirun -np 2).

#include <gtest/gtest.h>
#include <mpi.h>

#include "comm/process_groups.h"
#include "comm/topology.h"
#include "model/parameters.h"
#include "proto/config_loader.h"
#include "tests/mpi_test_support.h"
#include "trainer/trainer.h"

namespace vlm {
namespace {

TEST(DataParallel, LossDecreasesAndReplicasStayBitIdentical) {
  const Topology topology = make_topology(detect_process(), 1, 0);
  ASSERT_GE(topology.world_size(), 2) << "run under mpirun -np 2 or more";
  // Different init seeds per rank: the initial broadcast must make replicas equal anyway.
  TrainConfig config = load_config(std::string(VLM_SOURCE_DIR) + "/configs/tiny_test.pbtxt",
                                   {"loop.seed=" + std::to_string(100 + topology.rank()),
                                    "loop.global_batch_size=" + std::to_string(16 * topology.world_size())});
  ProcessGroups groups(topology);
  Trainer trainer(config, topology, groups, tiny_data());

  std::vector<double> losses;
  for (int step = 0; step < config.loop().steps(); ++step) {
    losses.push_back(trainer.train_step().loss);
    // Replicas compared after every step, byte for byte, against rank 0.
    std::vector<uint8_t> mine = parameter_bytes(*trainer.stage()), root = mine;
    MPI_Bcast(root.data(), static_cast<int>(root.size()), MPI_BYTE, 0, MPI_COMM_WORLD);
    ASSERT_TRUE(mine == root) << "rank " << topology.rank() << " diverged from rank 0 at step " << step;
  }
  const double first = (losses[0] + losses[1] + losses[2]) / 3;
  const double last = (losses.end()[-1] + losses.end()[-2] + losses.end()[-3]) / 3;
  EXPECT_LT(last, 0.8 * first) << "loss went from " << first << " to " << last;
}

}  // namespace
}  // namespace vlm
