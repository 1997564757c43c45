// GPU tests, run by scripts/gpu-check.sh where a GPU is lent (one process, any
// number of GPUs; it uses GPU 0): NCCL collectives against closed forms, a
// send to itself inside one group, the blocking wait, the first training
// steps against the CPU's, and a checkpoint saved on the GPU that loads on the
// CPU and back with bit-exact parameters. Without a GPU each test skips and
// says why. With one rank, NCCL's closed forms are those of a group of one:
// several ranks' grouped point-to-point, asynchronous errors and the start-up
// timeout cannot be exercised on one GPU (docs/devices.md).

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

#include "checkpoint/format.h"
#include "comm/device.h"
#include "comm/mpi_check.h"
#include "comm/process_groups.h"
#include "comm/topology.h"
#include "proto/config_loader.h"
#include "tests/mpi_test_support.h"
#include "trainer/trainer.h"

namespace vlm {
namespace {

#define VLM_REQUIRE_GPU()                                                                          \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU visible to LibTorch: " << visible_gpus().why_none

const torch::Device kGpu(torch::kCUDA, 0);

torch::TensorOptions on_gpu(torch::ScalarType type) { return torch::TensorOptions(kGpu).dtype(type); }

TEST(GpuNccl, CollectivesOfAGroupOfOne) {
  VLM_REQUIRE_GPU();
  for (bool blocking : {false, true}) {
    auto nccl = make_backend({BackendKind::kNccl, kGpu, Millis(60000), blocking}, MPI_COMM_SELF, "self");
    ASSERT_EQ(nccl->name(), "nccl");
    const int64_t n = 1 << 20;
    torch::Tensor sum = torch::arange(n, on_gpu(torch::kFloat)), avg = sum.clone(), max = sum.clone();
    torch::Tensor half = torch::full({n}, 1.5, on_gpu(torch::kBFloat16));
    std::vector<WorkPtr> work = {nccl->allreduce(sum), nccl->allreduce(avg, {ReduceOp::kAvg}),
                                 nccl->allreduce(max, {ReduceOp::kMax}), nccl->allreduce(half)};
    torch::Tensor root = torch::full({7}, 3.0, on_gpu(torch::kDouble));
    work.push_back(nccl->broadcast(root, {0}));
    torch::Tensor gathered = torch::empty({n}, on_gpu(torch::kFloat)), scattered = torch::empty({n}, on_gpu(torch::kFloat));
    work.push_back(nccl->allgather(sum, gathered));
    work.push_back(nccl->reduce_scatter(sum, scattered));
    // A send to itself and its receive, in one group: unbatched, the send would wait forever.
    torch::Tensor sent = torch::arange(n, on_gpu(torch::kFloat)) * 2, received = torch::zeros({n}, on_gpu(torch::kFloat));
    work.push_back(nccl->send_recv_batch({{true, sent, 0, 0}, {false, received, 0, 0}}, Millis(60000)));
    work.push_back(nccl->barrier());
    for (auto& w : work) w->wait();
    if (blocking) {
      for (auto& w : work) EXPECT_TRUE(w->is_completed()) << "a blocking wait returned before the GPU finished";
    }
    const torch::Tensor expected = torch::arange(n, on_gpu(torch::kFloat));
    EXPECT_TRUE(torch::equal(sum, expected));  // the sum, mean and max over one rank
    EXPECT_TRUE(torch::equal(avg, expected));
    EXPECT_TRUE(torch::equal(max, expected));
    EXPECT_TRUE(half.eq(1.5).all().item<bool>());
    EXPECT_TRUE(root.eq(3.0).all().item<bool>());
    EXPECT_TRUE(torch::equal(gathered, expected));
    EXPECT_TRUE(torch::equal(scattered, expected));
    EXPECT_TRUE(torch::equal(received, expected * 2));
  }
}

TEST(GpuNccl, CpuTensorsAreAClearError) {
  VLM_REQUIRE_GPU();
  auto nccl = make_backend({BackendKind::kNccl, kGpu}, MPI_COMM_SELF, "self");
  try {
    nccl->allreduce(torch::ones({4}));
    FAIL() << "a CPU tensor reached NCCL";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("needs CUDA tensors"), std::string::npos) << e.what();
  }
}

// VLM_TEST_FASHION_MNIST: the dataset's folder where the Debian package is
// not installed (scripts/gpu-check.sh points it at its slice).
// Every step logged: the tests read every step's loss.
TrainConfig tiny_config(const std::string& device, const std::string& log_every = "1") {
  std::vector<std::string> overrides = {"loop.steps=3", "eval.enabled=false", "device.kind=" + device,
                                        "loop.log_every=" + log_every};
  if (const char* dir = std::getenv("VLM_TEST_FASHION_MNIST")) overrides.push_back(std::string("data.fashion_mnist_dir=") + dir);
  return load_config(std::string(VLM_SOURCE_DIR) + "/configs/tiny_test.pbtxt", overrides);
}

const TrainingData& gpu_test_data() {
  static const auto data = load_training_data(tiny_config("CPU").data());
  return *data;
}

BackendOptions options_for(const torch::Device& device) { return {BackendKind::kAuto, device}; }

// Same seed, same batches: the GPU's first losses are the CPU's up to
// float32 rounding in other kernels (cuBLAS, not OpenBLAS/oneDNN).
TEST(GpuTraining, FirstStepsMatchTheCpu) {
  VLM_REQUIRE_GPU();
  const Topology topology = make_topology(ProcessInfo{}, 1, 1);
  ProcessGroups cpu_groups(topology, options_for(torch::kCPU), MPI_COMM_SELF);
  ProcessGroups gpu_groups(topology, options_for(kGpu), MPI_COMM_SELF);
  Trainer cpu(tiny_config("CPU"), topology, cpu_groups, gpu_test_data());
  Trainer gpu(tiny_config("CUDA"), topology, gpu_groups, gpu_test_data());
  for (int step = 0; step < 3; ++step) {
    const double expected = cpu.train_step().loss, got = gpu.train_step().loss;
    std::printf("step %d: loss CPU %.6f GPU %.6f\n", step + 1, expected, got);
    EXPECT_NEAR(got, expected, 1e-3 * expected) << "step " << step + 1;
  }
}

// Note [A step's outcome, a step late]: no host read at a step not logged.
TEST(GpuTraining, OnlyLoggedStepsReadTheirValues) {
  VLM_REQUIRE_GPU();
  const Topology topology = make_topology(ProcessInfo{}, 1, 1);
  ProcessGroups gpu_groups(topology, options_for(kGpu), MPI_COMM_SELF);
  Trainer gpu(tiny_config("CUDA", "0"), topology, gpu_groups, gpu_test_data());  // only the last step is logged
  EXPECT_FALSE(gpu.train_step().has_values);
  EXPECT_FALSE(gpu.train_step().has_values);
  const StepStats last = gpu.train_step();
  EXPECT_TRUE(last.has_values);
  EXPECT_TRUE(std::isfinite(last.loss));
  EXPECT_EQ(last.skipped_steps, 0);
}

TEST(GpuCheckpoint, SavedOnTheGpuLoadsOnTheCpuAndBackBitExactly) {
  VLM_REQUIRE_GPU();
  const SharedDirectory scratch("gpu_checkpoint");
  const Topology topology = make_topology(ProcessInfo{}, 1, 1);
  ProcessGroups cpu_groups(topology, options_for(torch::kCPU), MPI_COMM_SELF);
  ProcessGroups gpu_groups(topology, options_for(kGpu), MPI_COMM_SELF);
  Trainer gpu(tiny_config("CUDA"), topology, gpu_groups, gpu_test_data());
  for (int step = 0; step < 3; ++step) gpu.train_step();
  gpu.save_checkpoint(scratch.path() + "/from-gpu", 1);

  Trainer cpu(tiny_config("CPU"), topology, cpu_groups, gpu_test_data());
  cpu.load_checkpoint(resolve_checkpoint(scratch.path() + "/from-gpu", "latest"));
  EXPECT_EQ(cpu.steps_done(), 3);
  EXPECT_TRUE(parameter_bytes(*cpu.stage()) == parameter_bytes(*gpu.stage())) << "GPU -> CPU changed a parameter";
  cpu.save_checkpoint(scratch.path() + "/from-cpu", 1);

  Trainer back(tiny_config("CUDA"), topology, gpu_groups, gpu_test_data());
  back.load_checkpoint(resolve_checkpoint(scratch.path() + "/from-cpu", "latest"));
  EXPECT_TRUE(parameter_bytes(*back.stage()) == parameter_bytes(*gpu.stage())) << "CPU -> GPU changed a parameter";
  for (const auto& p : back.stage()->parameters()) EXPECT_TRUE(p.device().is_cuda());
  const double loss = back.train_step().loss;  // optimizer state on the GPU too
  EXPECT_TRUE(std::isfinite(loss));
}

}  // namespace
}  // namespace vlm
