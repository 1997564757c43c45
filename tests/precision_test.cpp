// device.precision BF16 on the CPU (Note [bf16 autocast]): the same 50 steps
// as FP32 from the same seed, losses within a stated tolerance, and the
// master weights and optimizer state still float32. Run under mpirun -np 1.

#include <gtest/gtest.h>

#include <cmath>

#include "comm/process_groups.h"
#include "comm/threads.h"
#include "comm/topology.h"
#include "proto/config_loader.h"
#include "trainer/trainer.h"

namespace vlm {
namespace {

// Tolerances. Measured on a 2-vCPU AMD EPYC (AVX512-BF16): first step 5e-5,
// worst step 0.037, mean over 50 steps 0.001 (relative). bf16 keeps 8 bits of
// mantissa: the first loss moves by a few parts in 10^4, then the two runs'
// weights drift apart and single steps differ by a few percent while the
// curves agree. The margins cover other processors' kernels.
constexpr double kFirstLossRelativeTolerance = 0.005;
constexpr double kLossRelativeTolerance = 0.08;      // any one step
constexpr double kMeanLossRelativeTolerance = 0.01;  // the mean over the 50 steps

struct TrainingRun {
  std::vector<double> losses;
  std::vector<torch::ScalarType> state_types;  // parameters, then optimizer moments
};

TrainingRun train(const std::string& precision) {
  const Topology topology = make_topology(detect_process(), 1, 0);
  apply_thread_count(threads_per_rank(0, topology.process.cpus, topology.process.cpu_sharers));
  const TrainConfig config = load_config(std::string(VLM_SOURCE_DIR) + "/configs/tiny_test.pbtxt",
                                         {"loop.steps=50", "eval.enabled=false", "device.precision=" + precision});
  const auto data = load_training_data(config.data());
  ProcessGroups groups(topology);
  Trainer trainer(config, topology, groups, *data);
  TrainingRun run;
  for (int step = 0; step < config.loop().steps(); ++step) run.losses.push_back(trainer.train_step().loss);
  for (const auto& p : trainer.stage()->parameters()) run.state_types.push_back(p.scalar_type());
  for (const auto& o : trainer.snapshot().optimizer) {
    run.state_types.push_back(o.exp_avg.scalar_type());
    run.state_types.push_back(o.exp_avg_sq.scalar_type());
  }
  return run;
}

TEST(Precision, Bf16TrainsLikeFp32OnTheCpu) {
  const std::vector<double> fp32 = train("FP32").losses;
  const TrainingRun bf16_run = train("BF16");
  const std::vector<double>& bf16 = bf16_run.losses;
  double fp32_sum = 0, bf16_sum = 0, worst = 0;
  for (size_t i = 0; i < fp32.size(); ++i) {
    ASSERT_TRUE(std::isfinite(bf16[i])) << "step " << i + 1;
    worst = std::max(worst, std::abs(bf16[i] - fp32[i]) / fp32[i]);
    fp32_sum += fp32[i];
    bf16_sum += bf16[i];
  }
  std::printf("bf16 vs fp32 over %zu steps: worst step %.4f relative, mean loss %.4f vs %.4f; "
              "first %.4f vs %.4f, last %.4f vs %.4f\n",
              fp32.size(), worst, bf16_sum / fp32.size(), fp32_sum / fp32.size(), bf16.front(), fp32.front(),
              bf16.back(), fp32.back());
  EXPECT_LT(std::abs(bf16.front() - fp32.front()) / fp32.front(), kFirstLossRelativeTolerance);
  EXPECT_LT(worst, kLossRelativeTolerance);
  EXPECT_LT(std::abs(bf16_sum - fp32_sum) / fp32_sum, kMeanLossRelativeTolerance);
  EXPECT_LT(bf16.back(), 0.8 * bf16.front()) << "bf16 training did not learn";
  for (torch::ScalarType t : bf16_run.state_types) EXPECT_EQ(t, torch::kFloat) << "master weights and moments stay float32";
}

}  // namespace
}  // namespace vlm
