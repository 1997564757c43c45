#include <gtest/gtest.h>

#include <sys/resource.h>

#include <cstdlib>
#include <map>
#include <vector>

#include "comm/host_allocator.h"
#include "comm/threads.h"
#include "comm/topology.h"

namespace vlm {
namespace {

std::string error_of(int world, int pp, int dp) {
  try {
    make_topology(ProcessInfo{0, world, 0, 1}, pp, dp);
  } catch (const TopologyError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Topology, RankMappingPutsDataParallelInnermost) {
  // pp is fixed to 1 until pipeline parallelism lands; the mapping is checked for dp.
  for (int r = 0; r < 4; ++r) {
    const Topology t = make_topology(ProcessInfo{r, 4, r, 4}, 1, 0);
    EXPECT_EQ(t.data_parallel, 4);
    EXPECT_EQ(t.stage(), 0);
    EXPECT_EQ(t.dp_rank(), r);
  }
}

TEST(Topology, ErrorsShowTheArithmetic) {
  EXPECT_NE(error_of(6, 1, 4).find("world_size(6) != parallel.pipeline_stages(1) x parallel.data_parallel(4) = 4"),
            std::string::npos);
  EXPECT_NE(error_of(6, 4, 0).find("world_size(6) is not divisible by parallel.pipeline_stages(4)"), std::string::npos);
  EXPECT_EQ(make_topology(ProcessInfo{5, 6, 1, 2}, 3, 0).stage(), 2);  // rank 5 of pp 3 x dp 2
  EXPECT_EQ(make_topology(ProcessInfo{5, 6, 1, 2}, 3, 0).dp_rank(), 1);
}

TEST(Topology, SingletonsStartedAsSeveralRanksAreCaught) {
  static std::map<std::string, std::string> env;
  auto getenv_fn = [](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  env = {{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}};
  EXPECT_NO_THROW(check_launcher_environment(ProcessInfo{1, 2, 1, 2}, getenv_fn));
  // mpirun inside an sbatch allocation: every rank inherits the batch step's SLURM_PROCID=0.
  env = {{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}};
  EXPECT_NO_THROW(check_launcher_environment(ProcessInfo{1, 2, 1, 2}, getenv_fn));
  env = {{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}};
  EXPECT_NO_THROW(check_launcher_environment(ProcessInfo{3, 4, 1, 2}, getenv_fn));
  // srun without --mpi: separate one-process MPI worlds.
  env = {{"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "4"}};
  try {
    check_launcher_environment(ProcessInfo{0, 1, 0, 1}, getenv_fn);
    FAIL();
  } catch (const TopologyError& e) {
    EXPECT_NE(std::string(e.what()).find("SLURM_PROCID=3 SLURM_NTASKS=4 but MPI reports rank 0 of 1"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("srun --mpi=pmix"), std::string::npos);
  }
  env = {{"RANK", "0"}, {"WORLD_SIZE", "8"}};
  EXPECT_THROW(check_launcher_environment(ProcessInfo{0, 1, 0, 1}, getenv_fn), TopologyError);
  env = {{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}};
  EXPECT_NO_THROW(check_launcher_environment(ProcessInfo{0, 1, 0, 1}, getenv_fn));
}

TEST(Threads, AllowedCpusAreSplitBetweenRanksSharingThem) {
  EXPECT_EQ(threads_per_rank(0, 2, 2), 1);  // 2 unbound ranks on 2 CPUs
  EXPECT_EQ(threads_per_rank(0, 8, 1), 8);  // alone, or bound to 8 CPUs of its own
  EXPECT_EQ(threads_per_rank(0, 8, 3), 2);
  EXPECT_EQ(threads_per_rank(0, 2, 4), 1);  // oversubscribed: never 0
  EXPECT_EQ(threads_per_rank(3, 2, 4), 3);  // explicit wins
}

// Writes one byte per page, through volatile so the compiler cannot drop it.
void touch_pages(char* block, size_t bytes) {
  volatile char* pages = block;
  for (size_t i = 0; i < bytes; i += 4096) pages[i] = 1;
}

long minor_page_faults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

// Note [Host allocator]: a step's activations (here 8 blocks of 16 MiB),
// freed together and asked for again as the next step does, come back without
// the kernel zeroing pages. Under glibc's defaults they fault back in whatever
// its adaptive thresholds have learnt before (128 MiB exceeds its largest trim
// threshold): ~32,768 faults.
TEST(HostAllocator, AStepsFreedActivationsAreReusedWithoutPageFaults) {
  keep_freed_memory_for_reuse();
  const size_t bytes = 16 << 20;  // 4,096 pages
  std::vector<char*> blocks(8);
  const auto allocate_and_touch = [&] {
    for (char*& block : blocks) {
      block = static_cast<char*>(std::malloc(bytes));
      touch_pages(block, bytes);
    }
  };
  const auto free_all = [&] {
    for (char* block : blocks) std::free(block);
  };
  allocate_and_touch();
  free_all();
  const long before = minor_page_faults();
  allocate_and_touch();
  const long faults = minor_page_faults() - before;
  free_all();
  EXPECT_LT(faults, 64);
}

}  // namespace
}  // namespace vlm
